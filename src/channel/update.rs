//! Normal operation (section 3): HTLCs added and removed on the
//! staged/committed log, fee changes, `update_commit` and
//! `update_revocation`, and the deadlines the chain's clock imposes.

use super::*;
#[allow(unused_imports)]
use crate::prelude::*;

impl Channel {
    /// Offers an HTLC of `amount` for `r_hash`, expiring at `expiry`, with
    /// opaque `route`; returns its id. Checks R3.1-b, R3.2-a..e and R4.1-a.
    pub fn offer_htlc(
        &mut self,
        amount: MilliSats,
        r_hash: sha256::Hash,
        expiry: absolute::LockTime,
        route: Vec<u8>,
    ) -> Result<u64, ChannelError> {
        let id = self.next_htlc_id;
        self.step(Input::Offer { amount, r_hash, expiry, route }).map(|()| id)
    }

    pub(super) fn apply_offer(
        &mut self,
        amount: MilliSats,
        r_hash: sha256::Hash,
        expiry: absolute::LockTime,
        route: Vec<u8>,
    ) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("offer_htlc"));
        }
        // R4.1-a: no new HTLC after close_clearing either way.
        if self.close.sent_clearing || self.close.received_clearing {
            return Err(ChannelError::Closing);
        }
        // R3.2-b
        let wire_amount =
            HtlcMsat::try_from(amount).ok().filter(|a| a.to_u32() > 0).ok_or(ChannelError::BadAmount(amount))?;
        // R3.2-d, R3.1-b: the expiry is at least the peer's delay away, so
        // the deadline is still ahead.
        let earliest = self.earliest_expiry(expiry);
        if !earliest.is_implied_by(expiry) {
            return Err(ChannelError::ExpiryTooSoon { expiry, earliest });
        }
        if route.len() > MAX_BLOB {
            return Err(ChannelError::TooLarge(route.len()));
        }
        let htlc = Htlc { offerer: Side::Local, id: self.next_htlc_id, amount: wire_amount, r_hash, expiry };
        let update = Update::Add(htlc);
        self.check_both(Side::Local, &update, true).map_err(Refusal::caller)?;
        self.next_htlc_id += 1;
        // R3.1-a
        self.deadlines.insert(htlc.id, self.deadline(expiry));
        self.ever_had_htlc = true;
        self.send(Message::UpdateAddHtlc(UpdateAddHtlc {
            id: htlc.id,
            amount: wire_amount,
            r_hash,
            expiry,
            route: route.clone(),
        }));
        self.log_update(Side::Local, update, route, None);
        Ok(())
    }

    /// Fulfills the incoming HTLC `id` with its preimage `r` (R3.3-a).
    pub fn fulfill_htlc(&mut self, id: u64, r: Preimage) -> Result<(), ChannelError> {
        self.step(Input::Fulfill { id, r })
    }

    /// Fails the incoming HTLC `id`; `reason` is sent as is (copy it
    /// unchanged from the outgoing HTLC's failure when relaying, R3.3-e).
    pub fn fail_htlc(&mut self, id: u64, reason: Vec<u8>) -> Result<(), ChannelError> {
        self.step(Input::FailHtlc { id, reason })
    }

    pub(super) fn remove_htlc(
        &mut self,
        command: &'static str,
        update: Update,
        reason: Vec<u8>,
    ) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase(command));
        }
        if reason.len() > MAX_BLOB {
            return Err(ChannelError::TooLarge(reason.len()));
        }
        // R3.3-a: only the peer's HTLCs, as staged (not already removed).
        self.check_both(Side::Local, &update, true).map_err(Refusal::caller)?;
        // R3.3-c: the HTLC must be in a current commitment, as the peer will
        // check; and R is revealed only once no commitment the peer can
        // still broadcast lacks the HTLC.
        let ready = match update {
            Update::Fulfill { id, .. } => self.locked_in(Side::Remote, id),
            Update::Fail { id } => self.in_a_commitment(Side::Remote, id),
            _ => true,
        };
        if !ready {
            let (Update::Fulfill { id, .. } | Update::Fail { id }) = update else { unreachable!("removals only") };
            return Err(ChannelError::NotCommitted(id));
        }
        let removed = self.staged_htlc_of(Side::Local, &update);
        let message = match &update {
            Update::Fulfill { id, r } => Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id: *id, r: *r }),
            Update::Fail { id } => Message::UpdateFailHtlc(UpdateFailHtlc { id: *id, reason: reason.clone() }),
            _ => unreachable!("removals only"),
        };
        if let Update::Fulfill { r, .. } = &update {
            // The monitor must be able to claim the HTLC on chain with R
            // before R leaves (R6.2-c).
            self.monitor(MonitorUpdate::Preimage(*r));
        }
        self.send(message);
        self.log_update(Side::Local, update, reason, removed);
        Ok(())
    }

    /// Changes the fee rate of our commitments (R3.4-a); it applies once the
    /// peer acknowledges it (ruling D7).
    ///
    /// Fees are frozen once `close_clearing` has been sent or received (see
    /// `docs/adr/0004-fees-freeze-at-clearing.md`): a fee change that crossed
    /// the peer's `close_signature` would leave the two sides disagreeing on
    /// whether clearing is complete (R4.2-a).
    pub fn update_fee(&mut self, fee_rate: u32) -> Result<(), ChannelError> {
        self.step(Input::UpdateFee(fee_rate))
    }

    pub(super) fn apply_update_fee(&mut self, fee_rate: u32) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("update_fee"));
        }
        if self.close.sent_clearing || self.close.received_clearing {
            return Err(ChannelError::WrongPhase { command: "update_fee", phase: "clearing for a close" });
        }
        let mut staged = self.staged_ours.clone();
        staged.fee_rate = fee_rate;
        if fee_rate < self.config.min_fee_rate || !staged.has_output() {
            return Err(ChannelError::BadFeeRate);
        }
        self.send(Message::UpdateFee(UpdateFee { fee_rate }));
        self.log_update(Side::Local, Update::Fee(fee_rate), Vec::new(), None);
        Ok(())
    }

    /// A fee estimate from the caller (satoshi per 1000 bytes for timely
    /// inclusion): if our commitments' rate is below it, raise it to twice
    /// the estimate, as the text suggests (R3.4-c), but never above our
    /// `max_fee_rate`, the most a peer configured like us accepts (R3.4-b).
    /// Returns whether an `update_fee` was sent.
    pub fn handle_fee_estimate(&mut self, estimate: u32) -> Result<bool, ChannelError> {
        let sent = self.sent;
        self.step(Input::FeeEstimate(estimate))?;
        // The only message this step can send is `update_fee`.
        Ok(self.sent > sent)
    }

    pub(super) fn apply_fee_estimate(&mut self, estimate: u32) -> Result<(), ChannelError> {
        if self.fee_estimate != Some(estimate) {
            self.fee_estimate = Some(estimate);
            self.dirty = true;
        }
        let clearing = self.close.sent_clearing || self.close.received_clearing;
        let target = estimate.saturating_mul(2).min(self.config.max_fee_rate).max(self.config.min_fee_rate);
        let current = self.staged_ours.fee_rate;
        if self.phase != Phase::Normal || clearing || current >= estimate || current >= target {
            return Ok(());
        }
        self.apply_update_fee(target)
    }

    /// Signs the peer's next commitment with every staged change and sends
    /// `update_commit` (R3.5-a, R3.5-b).
    pub fn commit(&mut self) -> Result<(), ChannelError> {
        self.step(Input::Commit)
    }

    pub(super) fn apply_commit(&mut self) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("commit"));
        }
        if self.their_prev.is_some() {
            return Err(ChannelError::AwaitingRevocation);
        }
        // R3.5-a: never without a staged update.
        if !self.log.iter().any(|e| !e.in_theirs) {
            return Err(ChannelError::NothingToCommit);
        }
        let next_hash = self.their_next_hash.expect("known while no revocation is awaited");
        let view = self.staged_theirs.clone();
        let Some(built) = self.id_theirs(&view, next_hash, self.their_num + 1) else {
            // Only a channel so small that fees leave every output dust gets
            // here (R3.6-d leaves a transaction with no output): it cannot go
            // on, so it fails like any broken channel.
            let problem = "the peer's next commitment would have no output: every output is dust";
            self.fail_with(FailOrigin::Local, Some(Rule::R3_6_d), problem.to_string());
            return Err(ChannelError::Failed(problem));
        };
        let sig = built.sign(self.funding.as_ref().expect("normal operation has an anchor"), &self.signing())?;
        // C1-i: the monitor learns the commitment before the peer can hold
        // it.
        let number = self.their_num + 1;
        self.monitor_deltas(Side::Remote, number, |e| !e.in_theirs);
        self.monitor(MonitorUpdate::Commitment {
            side: Side::Remote,
            number,
            txid: built.txid,
            revocation_hash: next_hash,
            to_local: view.to_local,
        });
        self.send(Message::UpdateCommit(UpdateCommit { sig }));
        let prev = core::mem::replace(&mut self.their_view, view);
        self.their_prev = Some((prev, self.their_hash));
        self.their_prev_txid = self.their_txid.replace(built.txid);
        self.their_hash = next_hash;
        self.their_next_hash = None;
        self.their_num += 1;
        for e in &mut self.log {
            e.in_theirs = true;
        }
        // The HTLCs just committed may be failed now (R3.3-c).
        self.send_decided_fails();
        Ok(())
    }

    pub(super) fn on_add(&mut self, m: UpdateAddHtlc, ack: u64) -> Result<(), Violation> {
        // R4.1-a: the peer may not add after its own close_clearing, nor
        // after processing ours.
        if self.close.received_clearing {
            return Err(violation(Rule::R4_1_a, "update_add_htlc after the peer's close_clearing"));
        }
        if self.close.clearing_committed {
            return Err(violation(
                Rule::R4_1_a,
                "update_add_htlc after an update_commit acknowledging our close_clearing",
            ));
        }
        // R3.2-b
        if m.amount.to_u32() == 0 {
            return Err(violation(Rule::R3_2_b, format!("HTLC {} has amount 0", m.id)));
        }
        let htlc = Htlc { offerer: Side::Remote, id: m.id, amount: m.amount, r_hash: m.r_hash, expiry: m.expiry };
        let update = Update::Add(htlc);
        // Structurally valid in both staged commitments (R3.2-e, R3.2-c)...
        self.check_both(Side::Remote, &update, false).map_err(Refusal::peer)?;
        // ...and affordable (R3.2-a) in both commitments as the peer knew
        // them: our updates it had not yet processed (a fee change, an add
        // raising the fee) are its bad luck, not its fault (section 3.6).
        let known = self.peer_known(ack);
        for view in known {
            view.check(Side::Remote, &update, self.config.max_htlcs, true).map_err(Refusal::peer)?;
        }
        self.ever_had_htlc = true;
        self.log_update(Side::Remote, update, m.route, None);
        // R4.1-c: an HTLC that crossed our close_clearing is failed at once.
        // So is one expiring too soon for us to claim it from our own
        // commitment, where R only takes it after the peer's delay (ruling
        // D6; the offerer's R3.2-d is a SHOULD, so not a violation).
        // Both are failed as soon as the HTLC is in a commitment (R3.3-c).
        let too_soon = self.reached(self.incoming_deadline(htlc.expiry));
        if self.close.sent_clearing || too_soon {
            let reason = if too_soon { b"expiry too soon".to_vec() } else { b"closing".to_vec() };
            self.must_fail.insert(m.id, reason);
        }
        Ok(())
    }

    pub(super) fn on_remove(&mut self, update: Update, reason: Vec<u8>) -> Result<(), Violation> {
        // R3.3-c, R3.3-d (and R3.3-a: the id is in our id space).
        self.check_both(Side::Remote, &update, true).map_err(Refusal::peer)?;
        // R3.3-c: in a current commitment, not only staged. The peer's
        // commitment counts as well as ours: it may remove an HTLC as soon as
        // its own commitment holds it.
        if let Update::Fulfill { id, .. } | Update::Fail { id } = update {
            if !self.in_a_commitment(Side::Local, id) {
                return Err(violation(Rule::R3_3_c, format!("HTLC {id} is in no current commitment, only staged")));
            }
        }
        let removed = self.staged_htlc_of(Side::Remote, &update);
        if let (Update::Fulfill { r, .. }, Some(h)) = (&update, removed) {
            // The preimage is usable upstream at once (R6.2-a's off-chain twin).
            self.event(Event::HtlcFulfilled {
                direction: Direction::Outgoing,
                id: h.id,
                amount: h.amount.msat(),
                preimage: *r,
            });
        }
        self.log_update(Side::Remote, update, reason, removed);
        Ok(())
    }

    pub(super) fn on_fee(&mut self, rate: u32) -> Result<(), Violation> {
        // Fees freeze at clearing (ADR 0004): this crate sends none once
        // clearing has begun. A peer's change during clearing is taken (the
        // text allows it, R3.4-a) until the negotiation begins: after our
        // close_signature, or after the peer's, it could no longer be
        // committed before the close (R4.2-a).
        if self.close.our_fee.is_some() || self.close.their.is_some() {
            return Err(violation(Rule::R4_2_a, "update_fee during the close negotiation"));
        }
        // R3.4-b
        if rate > self.max_peer_fee_rate() || rate == 0 {
            return Err(violation(
                Rule::R3_4_b,
                format!("update_fee of {rate} is outside 1..={}", self.max_peer_fee_rate()),
            ));
        }
        // R3.4-b: a rate that would leave the peer's commitment without any
        // output is too high for this channel.
        let mut staged = self.staged_theirs.clone();
        staged.fee_rate = rate;
        if !staged.has_output() {
            return Err(violation(
                Rule::R3_4_b,
                format!("update_fee of {rate} leaves every output of the commitment dust"),
            ));
        }
        self.log_update(Side::Remote, Update::Fee(rate), Vec::new(), None);
        Ok(())
    }

    pub(super) fn on_commit(&mut self, sig: Signature, ack: u64) -> Result<(), Violation> {
        // R3.5-b: our new commitment has every change of the peer and ours
        // up to the message its header acknowledges.
        let included = |e: &Entry| !e.in_ours && (e.from == Side::Remote || e.msg_no <= ack);
        if !self.log.iter().any(included) {
            // R3.5-a
            return Err(violation(Rule::R3_5_a, "update_commit without any update"));
        }
        // Our staged commitment is our current one with every update not in
        // it applied, in log order: when the peer's commitment includes all
        // of them (the usual case), it is that.
        let view = if self.log.iter().filter(|e| !e.in_ours).all(included) {
            let view = self.staged_ours.clone();
            debug_assert_eq!(Ok(&view), self.our_view_with(included).as_ref());
            view
        } else {
            self.our_view_with(included).map_err(Refusal::peer)?
        };
        let num = self.our_num + 1;
        let built = self.id_ours(&view, num).ok_or_else(|| violation(Rule::R3_2_a, "commitment cannot be built"))?;
        let funding = self.funding.as_ref().expect("normal operation has an anchor");
        if built.verify(funding, &self.remote.expect("open").commit_key, &sig).is_err() {
            return Err(violation(Rule::R3_5_b, format!("update_commit signature does not sign our commitment {num}")));
        }
        self.monitor_deltas(Side::Local, num, included);
        self.monitor(MonitorUpdate::Commitment {
            side: Side::Local,
            number: num,
            txid: built.txid,
            revocation_hash: self.our_hash(num),
            to_local: view.to_local,
        });
        for e in self.log.iter_mut().filter(|e| included(e)) {
            e.in_ours = true;
        }
        if self.close.sent_clearing && ack >= self.close.clearing_msg_no {
            self.close.clearing_committed = true;
        }
        self.our_view = view;
        self.our_sig = Some(sig);
        self.our_num = num;
        // R3.5-c: revoke the previous commitment, give the next hash.
        self.send(Message::UpdateRevocation(UpdateRevocation {
            revocation_preimage: self.our_preimage(num - 1),
            next_revocation_hash: self.our_hash(num + 1),
        }));
        self.lock_in();
        Ok(())
    }

    /// Our current commitment's view with the log entries `included`
    /// applied, in order.
    fn our_view_with(&self, included: impl Fn(&Entry) -> bool) -> Result<View, crate::channel::view::Refusal> {
        let mut view = self.our_view.clone();
        for e in self.log.iter().filter(|e| included(e)) {
            view.apply(e.from, &e.update)?;
        }
        Ok(view)
    }

    pub(super) fn on_revocation(&mut self, m: UpdateRevocation) -> Result<(), Violation> {
        let Some((prev_view, prev_hash)) = self.their_prev.take() else {
            return Err(violation(Rule::R3_5_d, "update_revocation without a commitment to revoke"));
        };
        // R3.5-d
        if m.revocation_preimage.hash() != prev_hash {
            self.their_prev = Some((prev_view, prev_hash));
            return Err(violation(Rule::R3_5_d, "revocation preimage does not match the previous commitment"));
        }
        let prev_num = self.their_num - 1;
        // R5-d: consistent with every preimage revealed before.
        if let Err(e) = self.their_secrets.insert(RevocationSecrets::index(prev_num), m.revocation_preimage.0) {
            self.their_prev = Some((prev_view, prev_hash));
            return Err(violation(Rule::R5_d, e.to_string()));
        }
        // W1-a: the revoked commitment, for a watchtower's package.
        if self.config.export_revoked {
            if let Some(commitment) = self.build_theirs(&prev_view, prev_hash, prev_num) {
                let revoked = crate::tower::RevokedCommitment {
                    number: prev_num,
                    commitment,
                    preimage: m.revocation_preimage,
                    view: prev_view.clone(),
                };
                self.emit(Output::Revoked(Box::new(revoked)));
            }
        }
        self.their_next_hash = Some(m.next_revocation_hash);
        // R3-a: what is needed to punish this commitment if it is ever
        // broadcast goes to the monitor: the preimage (D11).
        self.monitor(MonitorUpdate::Revoked { number: prev_num, preimage: m.revocation_preimage });
        for e in self.log.iter_mut().filter(|e| e.in_theirs) {
            e.theirs_locked = true;
        }
        self.lock_in();
        Ok(())
    }

    /// The HTLC changes of the log entries selected by `include`, as they
    /// enter `side`'s commitment `number` (ruling D11).
    pub(super) fn monitor_deltas(&mut self, side: Side, number: u64, include: impl Fn(&Entry) -> bool) {
        // One update for the commitment, however many HTLCs it changes.
        let changes: Vec<HtlcChange> = self
            .log
            .iter()
            .filter(|e| include(e))
            .filter_map(|e| match &e.update {
                Update::Add(htlc) => Some(HtlcChange::Added(*htlc)),
                Update::Fulfill { id, .. } | Update::Fail { id } => {
                    Some(HtlcChange::Removed { offerer: e.from.other(), id: *id })
                }
                Update::Fee(_) => None,
            })
            .collect();
        if !changes.is_empty() {
            self.monitor(MonitorUpdate::Htlcs { side, number, changes });
        }
    }

    /// R3.2-a, R3.6-e: an update must be valid in both staged commitments
    /// (`afford`: including the offerer's fee share).
    pub(super) fn check_both(&self, from: Side, update: &Update, afford: bool) -> Result<(), Refusal> {
        if let Update::Fulfill { id, r } = update {
            // R is hashed once for both views.
            let hash = r.hash();
            self.staged_theirs.check_fulfill(from, *id, &hash)?;
            return self.staged_ours.check_fulfill(from, *id, &hash);
        }
        self.staged_theirs.check(from, update, self.config.max_htlcs, afford)?;
        self.staged_ours.check(from, update, self.config.max_htlcs, afford)
    }

    /// The totals of both commitments as the peer knew them when it sent a
    /// message acknowledging `ack` of ours: every update of its own and ours
    /// up to `ack`. Our current commitment holds only such updates, so it is the
    /// base; the peer's commitment differs only in its fee rate, which only
    /// the peer changes (ruling D7).
    pub(super) fn peer_known(&self, ack: u64) -> [View; 2] {
        // Only the totals matter here (balances, counts, the fee rate; R3.2-e
        // is checked against the staged views): no HTLC set is copied.
        let replay = || {
            let mut ours = self.our_view.totals();
            for e in self.log.iter().filter(|e| !e.in_ours && (e.from == Side::Remote || e.msg_no <= ack)) {
                ours.apply_to_totals(e.from, &e.update, e.removed.as_ref());
            }
            ours
        };
        // The peer has processed every message we sent, so every entry not
        // in our commitment counts: that is our staged commitment, and a
        // peer adding many HTLCs in a row does not cost a walk of the log
        // for each.
        let ours = if ack >= self.sent {
            let staged = self.staged_ours.totals();
            debug_assert_eq!(staged, replay(), "the staged commitment is the current one with the log applied");
            staged
        } else {
            replay()
        };
        let mut theirs = ours.clone();
        theirs.owner = Side::Remote;
        theirs.fee_rate = self.staged_theirs.fee_rate;
        [ours, theirs]
    }

    /// The HTLC a removal by `from` removes.
    pub(super) fn staged_htlc_of(&self, from: Side, update: &Update) -> Option<Htlc> {
        match update {
            Update::Fulfill { id, .. } | Update::Fail { id } => self.staged_ours.htlc(from.other(), *id).copied(),
            _ => None,
        }
    }

    pub(super) fn log_update(&mut self, from: Side, update: Update, blob: Vec<u8>, removed: Option<Htlc>) {
        if let Update::Add(h) = &update {
            self.hash160s.insert((from, h.id), (h.r_hash, crate::tx::commitment::ripemd_of(&h.r_hash)));
        }
        self.staged_theirs.apply(from, &update).expect("checked against this view");
        self.staged_ours.apply(from, &update).expect("checked against this view");
        let msg_no = if from == Side::Local { self.sent } else { 0 };
        self.log.push(Entry {
            from,
            msg_no,
            update,
            blob,
            removed,
            in_ours: false,
            in_theirs: false,
            theirs_locked: false,
        });
        self.dirty = true;
    }

    /// Updates committed in both current commitments leave the log and are
    /// reported.
    pub(super) fn lock_in(&mut self) {
        // The log keeps its place: only the entries after the first one
        // locked in move, each once, over those that leave.
        let mut log = core::mem::take(&mut self.log);
        log.retain_mut(|e| {
            if !(e.in_ours && e.theirs_locked) {
                return true;
            }
            self.report_locked_in(e);
            false
        });
        self.log = log;
        self.log.trim();
    }

    /// Reports an update that has left the log (taking its route or
    /// reason).
    fn report_locked_in(&mut self, e: &mut Entry) {
        // A removal locked in has left every view: so has its hash, unless
        // the peer reused the id for a new HTLC since (R3.2-e).
        if let (Update::Fulfill { id, .. } | Update::Fail { id }, Some(removed)) = (&e.update, &e.removed) {
            let key = (e.from.other(), *id);
            if self.hash160s.get(&key).is_some_and(|(r_hash, _)| *r_hash == removed.r_hash) {
                self.hash160s.remove(&key);
            }
        }
        let event = match (&e.update, e.from) {
            (Update::Add(h), _) => Some(Event::HtlcAdded {
                direction: Direction::of(h.offerer),
                id: h.id,
                amount: h.amount.msat(),
                r_hash: h.r_hash,
                expiry: h.expiry,
                route: core::mem::take(&mut e.blob),
            }),
            (Update::Fulfill { id, r }, Side::Local) => Some(Event::HtlcFulfilled {
                direction: Direction::Incoming,
                id: *id,
                amount: e.removed.map_or(MilliSats::ZERO, |h| h.amount.msat()),
                preimage: *r,
            }),
            // Outgoing fulfills were reported when R arrived.
            (Update::Fulfill { id, .. }, Side::Remote) => {
                self.deadlines.remove(id);
                None
            }
            (Update::Fail { id }, from) => {
                if from == Side::Remote {
                    self.deadlines.remove(id);
                }
                Some(Event::HtlcFailed {
                    direction: Direction::of(from.other()),
                    id: *id,
                    amount: e.removed.map_or(MilliSats::ZERO, |h| h.amount.msat()),
                    reason: core::mem::take(&mut e.blob),
                })
            }
            (Update::Fee(rate), from) => Some(Event::FeeChanged { side: from, fee_rate: *rate }),
        };
        if let Some(event) = event {
            self.event(event);
        }
    }

    /// Sends the fails decided earlier (R3.3-b, R4.1-c, an expiry too soon)
    /// for HTLCs that have reached a commitment since (R3.3-c); forgets those
    /// the application removed itself.
    pub(super) fn send_decided_fails(&mut self) {
        if self.must_fail.is_empty() {
            return;
        }
        let ready: Vec<u64> =
            self.must_fail.keys().copied().filter(|id| self.in_a_commitment(Side::Remote, *id)).collect();
        for id in ready {
            let reason = self.must_fail.remove(&id).expect("listed just now");
            let update = Update::Fail { id };
            if self.check_both(Side::Local, &update, true).is_err() {
                continue;
            }
            let removed = self.staged_htlc_of(Side::Local, &update);
            self.send(Message::UpdateFailHtlc(UpdateFailHtlc { id, reason: reason.clone() }));
            self.log_update(Side::Local, update, reason, removed);
        }
        let staged = &self.staged_ours;
        self.must_fail.retain(|id, _| staged.htlc(Side::Remote, *id).is_some());
    }

    /// R3.3-c: the HTLC `id` offered by `offerer` is in a current commitment
    /// of either side.
    pub(super) fn in_a_commitment(&self, offerer: Side, id: u64) -> bool {
        self.our_view.htlc(offerer, id).is_some() || self.their_view.htlc(offerer, id).is_some()
    }

    /// The HTLC is in our current commitment and in every commitment of the
    /// peer's that it has not revoked: no broadcast can leave it out.
    pub(super) fn locked_in(&self, offerer: Side, id: u64) -> bool {
        self.our_view.htlc(offerer, id).is_some()
            && self.their_view.htlc(offerer, id).is_some()
            && self.their_prev.as_ref().is_none_or(|(v, _)| v.htlc(offerer, id).is_some())
    }

    /// Deadlines and timeouts that depend on the chain's clock.
    pub(super) fn check_clock(&mut self) -> Result<(), Violation> {
        // R2.4-c: the peer's open_complete is late.
        if let (Phase::AwaitDepth, Some(at), false) = (self.phase, self.sent_complete_at, self.received_complete) {
            if self.height >= at.saturating_add(self.config.open_complete_timeout_blocks) {
                return Err(violation(Rule::R2_4_c, "open_complete did not arrive in time"));
            }
        }
        if self.phase != Phase::Normal {
            return Ok(());
        }
        // R3.1-c: an HTLC we offered is in a current commitment past its
        // deadline.
        for (id, deadline) in &self.deadlines {
            // The peer's previous commitment counts until it is revoked.
            let prev = self.their_prev.as_ref().is_some_and(|(v, _)| v.htlc(Side::Local, *id).is_some());
            let present = prev
                || self.our_view.htlc(Side::Local, *id).is_some()
                || self.their_view.htlc(Side::Local, *id).is_some();
            if present && self.reached(*deadline) {
                return Err(violation(
                    Rule::R3_1_c,
                    format!("offered HTLC {id} is past its redemption deadline {deadline}"),
                ));
            }
        }
        // R6.2-c: an incoming HTLC we fulfilled must be claimable on-chain
        // if the peer stalls: once the fulfill is still not committed by the
        // time only the peer's delay is left, go on-chain while our success
        // path can still beat its timeout.
        let fulfilled = self.log.iter().filter_map(|e| match (&e.update, e.from) {
            (Update::Fulfill { id, .. }, Side::Local) if !(e.in_ours && e.theirs_locked) => e.removed.map(|h| (*id, h)),
            _ => None,
        });
        for (id, h) in fulfilled {
            if self.reached(self.incoming_deadline(h.expiry)) {
                return Err(violation(
                    Rule::R6_2_c,
                    format!("incoming HTLC {id} is fulfilled but not committed before its deadline"),
                ));
            }
        }
        // R3.3-b: fail incoming HTLCs that have timed out, as soon as
        // possible.
        let expired: Vec<u64> = self
            .staged_ours
            .htlcs()
            .filter(|h| h.offerer == Side::Remote && self.reached(h.expiry) && !self.must_fail.contains_key(&h.id))
            .map(|h| h.id)
            .collect();
        for id in expired {
            self.must_fail.insert(id, b"expired".to_vec());
            self.dirty = true;
        }
        Ok(())
    }

    pub(super) fn reached(&self, lock: absolute::LockTime) -> bool {
        match lock {
            absolute::LockTime::Blocks(h) => self.height >= h.to_consensus_u32(),
            absolute::LockTime::Seconds(t) => self.time >= t.to_consensus_u32(),
        }
    }

    /// The peer's delay in blocks and in seconds.
    pub(super) fn their_delay(&self) -> (u32, u32) {
        match self.remote.map(|r| r.delay) {
            Some(Delay::Blocks(b)) => (u32::from(b), u32::from(b) * SECONDS_PER_BLOCK),
            Some(Delay::Seconds(s)) => (s.div_ceil(SECONDS_PER_BLOCK), s),
            None => (0, 0),
        }
    }

    /// R3.2-d: the earliest expiry of an HTLC offered now, in `like`'s unit.
    pub(super) fn earliest_expiry(&self, like: absolute::LockTime) -> absolute::LockTime {
        let (blocks, seconds) = self.their_delay();
        match like {
            absolute::LockTime::Blocks(_) => absolute::LockTime::from_height(self.height.saturating_add(blocks))
                .unwrap_or(absolute::LockTime::from_height(499_999_999).expect("a height")),
            absolute::LockTime::Seconds(_) => {
                absolute::LockTime::from_time(self.time.saturating_add(seconds).max(500_000_000)).expect("a time")
            }
        }
    }

    /// The last moment to go on-chain for an incoming HTLC whose R we know:
    /// our success path waits the peer's delay (ruling D6), so `expiry` less
    /// that delay, less our safety margin.
    pub(super) fn incoming_deadline(&self, expiry: absolute::LockTime) -> absolute::LockTime {
        let (blocks, seconds) = self.their_delay();
        let margin = self.config.deadline_margin_blocks;
        match expiry {
            absolute::LockTime::Blocks(h) => {
                absolute::LockTime::from_height(h.to_consensus_u32().saturating_sub(blocks.saturating_add(margin)))
                    .expect("below the height limit")
            }
            absolute::LockTime::Seconds(t) => {
                let back = seconds.saturating_add(margin.saturating_mul(SECONDS_PER_BLOCK));
                absolute::LockTime::from_time(t.to_consensus_u32().saturating_sub(back).max(500_000_000))
                    .expect("a time")
            }
        }
    }

    /// R3.1-a: the later of `expiry` and now + the peer's delay, plus our
    /// safety margin.
    pub(super) fn deadline(&self, expiry: absolute::LockTime) -> absolute::LockTime {
        let (blocks, seconds) = self.their_delay();
        let margin = self.config.deadline_margin_blocks;
        match expiry {
            absolute::LockTime::Blocks(h) => {
                let at = h.to_consensus_u32().max(self.height.saturating_add(blocks)).saturating_add(margin);
                absolute::LockTime::from_height(at.min(499_999_999)).expect("a height")
            }
            absolute::LockTime::Seconds(t) => {
                let at = t.to_consensus_u32().max(self.time.saturating_add(seconds));
                absolute::LockTime::from_time(at.saturating_add(margin.saturating_mul(SECONDS_PER_BLOCK)))
                    .expect("a time")
            }
        }
    }
}
