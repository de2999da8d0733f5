//! Channel establishment (section 2): `open_channel` both ways, the anchor
//! from the funder's wallet, `open_anchor`, `open_commit_sig`, the anchor's
//! depth and `open_complete`.

use super::*;
#[allow(unused_imports)]
use crate::prelude::*;

impl Channel {
    /// Funder: the wallet's anchor transaction (signed, not broadcast,
    /// R2.2-a), paying the anchor at output `vout`.
    pub fn provide_anchor(&mut self, tx: Transaction, vout: u32) -> Result<(), ChannelError> {
        self.step(Input::ProvideAnchor { tx, vout })
    }

    pub(super) fn apply_provide_anchor(&mut self, tx: Transaction, vout: u32) -> Result<(), ChannelError> {
        if self.phase != Phase::AwaitAnchorTx {
            return Err(self.wrong_phase("provide_anchor"));
        }
        let remote = self.remote.expect("known after open_channel");
        let ours = self.signer.public_key(KeyRole::Commit);
        let funding =
            validate_funding(&tx, vout, &ours, &remote.commit_key, self.capacity).map_err(ChannelError::BadAnchor)?;
        let Some(theirs) = self.build_theirs_with(&funding, &self.their_view, self.their_hash, 0) else {
            // Its fees were checked on open_channel: only a damaged state
            // gets here.
            let problem = "the peer's initial commitment cannot be built";
            self.fail_with(FailOrigin::Local, Some(Rule::R2_2_b), problem.to_string());
            return Err(ChannelError::Failed(problem));
        };
        let commit_sig = theirs.sign(&funding, &self.signing())?;
        self.send(Message::OpenAnchor(Box::new(OpenAnchor {
            txid: funding.outpoint().txid,
            output_index: funding.outpoint().vout,
            amount: funding.value(),
            commit_sig,
        })));
        self.set_funding(funding);
        self.anchor_tx = Some(tx);
        self.phase = Phase::AwaitCommitSig;
        Ok(())
    }

    /// The anchor transaction `anchor` is `depth` blocks deep (1 = in the
    /// tip). The first report checks that its output really is the 2-of-2
    /// holding the amount `open_anchor` claimed: a funder that lied fails the
    /// channel before it opens. A transaction with another txid is not the
    /// anchor and is ignored.
    pub fn handle_anchor_depth(&mut self, anchor: &Transaction, depth: u32) {
        // Journaled only if it changes something (the common report of a
        // deeper anchor after the channel opened is cheap to refuse here).
        if self.is_terminal() || depth <= self.anchor_depth {
            return;
        }
        let _ = self.step(Input::AnchorDepth { anchor: anchor.clone(), depth });
    }

    pub(super) fn apply_anchor_depth(&mut self, anchor: &Transaction, depth: u32) {
        if self.is_terminal() || depth <= self.anchor_depth {
            return;
        }
        let Some(funding) = self.funding.clone() else { return };
        if anchor.compute_txid() != funding.outpoint().txid {
            return;
        }
        if !self.anchor_checked {
            let out = anchor.output.get(funding.outpoint().vout as usize);
            if out.is_none_or(|o| o.script_pubkey != funding.script_pubkey() || o.value != funding.value()) {
                // Every signature we hold commits to the described output, so
                // no transaction of ours could spend the real one.
                let problem = "the anchor on chain is not the output open_anchor described".to_string();
                self.fail_inner(FailOrigin::Chain, Some(Rule::R2_2_d), problem, Some(FailBroadcast::Nothing));
                return;
            }
            self.anchor_checked = true;
        }
        self.anchor_depth = depth;
        self.dirty = true;
        self.progress();
    }

    pub(super) fn on_open_channel(&mut self, o: OpenChannel) -> Result<(), Violation> {
        // R2.1-a
        let expected = match self.role {
            Role::Funder => AnchorOffer::WontCreate,
            Role::Fundee => AnchorOffer::WillCreate,
        };
        if o.anch != expected {
            return Err(violation(Rule::R2_1_a, format!("peer's anch is {:?}, expected {expected:?}", o.anch)));
        }
        // R2.1-b
        let too_long = match o.delay {
            Delay::Blocks(b) => b > self.config.max_delay_blocks,
            Delay::Seconds(s) => s > self.config.max_delay_seconds,
        };
        if too_long {
            return Err(violation(Rule::R2_1_b, format!("delay {} is unreasonably large", o.delay)));
        }
        // R2.1-c
        if o.min_depth > self.config.max_min_depth {
            return Err(violation(Rule::R2_1_c, format!("min_depth {} is unreasonably large", o.min_depth)));
        }
        // R2.1-d
        if o.initial_fee_rate < self.config.min_fee_rate || o.initial_fee_rate > self.max_peer_fee_rate() {
            return Err(violation(
                Rule::R2_1_d,
                format!(
                    "initial_fee_rate {} outside {}..={}",
                    o.initial_fee_rate,
                    self.config.min_fee_rate,
                    self.max_peer_fee_rate()
                ),
            ));
        }
        self.remote = Some(RemoteParams::new(
            o.commit_key,
            o.final_key,
            o.delay,
            o.min_depth,
            &self.signer.public_key(KeyRole::Commit),
            self.role,
        ));
        self.their_hash = o.revocation_hash;
        self.their_next_hash = Some(o.next_revocation_hash);
        self.their_view = View::new(Side::Remote, MilliSats::ZERO, MilliSats::ZERO, o.initial_fee_rate);
        self.staged_theirs = self.their_view.clone();
        match self.role {
            Role::Funder => {
                // R2.2-b: our anchor must cover both initial commitments'
                // fees at the rates both chose; if the peer's acceptable rate
                // makes ours too small, the channel cannot open, and it is
                // not the peer's fault.
                if let Err(v) = self.check_initial_fees(self.capacity) {
                    self.fail_with(FailOrigin::Local, v.rule, v.problem);
                    return Ok(());
                }
                self.set_initial_views(self.capacity);
                let ours = self.signer.public_key(KeyRole::Commit);
                let script = crate::tx::funding::anchor_witness_script(&ours, &o.commit_key);
                self.emit(Output::FundAnchor {
                    amount: self.capacity,
                    script_pubkey: ScriptBuf::new_p2wsh(&script.wscript_hash()),
                });
                self.phase = Phase::AwaitAnchorTx;
            }
            Role::Fundee => self.phase = Phase::AwaitOpenAnchor,
        }
        Ok(())
    }

    /// The highest fee rate we accept for the peer's commitments: the
    /// configured maximum, and ten times the caller's latest estimate as the
    /// text suggests (section 3.4), since we pay half of that fee, or all of
    /// it when the peer cannot (R3.6-c).
    pub(super) fn max_peer_fee_rate(&self) -> u32 {
        match self.fee_estimate {
            Some(estimate) => self.config.max_fee_rate.min(estimate.saturating_mul(10)),
            None => self.config.max_fee_rate,
        }
    }

    /// R2.2-b: the anchor pays both initial commitments' fees and leaves a
    /// non-dust output.
    pub(super) fn check_initial_fees(&self, amount: Amount) -> Result<(), Violation> {
        let needed =
            commitment_fee(self.config.fee_rate, 0).max(commitment_fee(self.their_view.fee_rate, 0)) + DUST_LIMIT;
        if amount < needed || amount < self.config.min_anchor {
            return Err(violation(
                Rule::R2_2_b,
                format!("anchor of {amount} does not cover the initial commitment fees (needs {needed})"),
            ));
        }
        Ok(())
    }

    pub(super) fn set_initial_views(&mut self, capacity: Amount) {
        let all = MilliSats::from_sat(capacity).expect("capacity is at most 4294967 sat");
        let (to_local, to_remote) = match self.role {
            Role::Funder => (all, MilliSats::ZERO),
            Role::Fundee => (MilliSats::ZERO, all),
        };
        let their_rate = self.their_view.fee_rate;
        self.our_view = View::new(Side::Local, to_local, to_remote, self.config.fee_rate);
        self.their_view = View::new(Side::Remote, to_local, to_remote, their_rate);
        self.staged_ours = self.our_view.clone();
        self.staged_theirs = self.their_view.clone();
    }

    pub(super) fn on_open_anchor(&mut self, a: OpenAnchor) -> Result<(), Violation> {
        // R2.2-c
        if a.amount > MAX_ANCHOR {
            return Err(violation(Rule::R2_2_c, format!("anchor amount {} is above 4294967 sat", a.amount)));
        }
        self.check_initial_fees(a.amount)?;
        let remote = self.remote.expect("known after open_channel");
        let funding = FundingOutput::new(
            OutPoint { txid: a.txid, vout: a.output_index },
            a.amount,
            &self.signer.public_key(KeyRole::Commit),
            &remote.commit_key,
        );
        self.capacity = a.amount;
        self.set_initial_views(a.amount);
        let ours = self
            .build_ours_with(&funding, &self.our_view, 0)
            .ok_or_else(|| violation(Rule::R2_2_b, "our initial commitment cannot be built"))?;
        // R2.2-d
        if ours.verify(&funding, &remote.commit_key, &a.commit_sig).is_err() {
            return Err(violation(Rule::R2_2_d, "open_anchor.commit_sig does not sign our initial commitment"));
        }
        let theirs = self
            .build_theirs_with(&funding, &self.their_view, self.their_hash, 0)
            .ok_or_else(|| violation(Rule::R2_2_b, "the peer's initial commitment cannot be built"))?;
        let sig =
            theirs.sign(&funding, &self.signing()).map_err(|e| Violation { rule: None, problem: e.to_string() })?;
        self.our_sig = Some(a.commit_sig);
        self.monitor_setup(&funding, ours.txid(), theirs.txid());
        self.send(Message::OpenCommitSig(OpenCommitSig { sig }));
        self.watch_anchor(&funding);
        self.set_funding(funding);
        // The funder may broadcast from now on (R2.3-b).
        self.anchor_broadcast = true;
        self.phase = Phase::AwaitDepth;
        Ok(())
    }

    pub(super) fn on_open_commit_sig(&mut self, s: OpenCommitSig) -> Result<(), Violation> {
        let funding = self.funding.clone().expect("set with the anchor");
        let remote = self.remote.expect("known after open_channel");
        let ours = self
            .build_ours_with(&funding, &self.our_view, 0)
            .ok_or_else(|| violation(Rule::R2_2_b, "our initial commitment cannot be built"))?;
        // R2.3-a
        if ours.verify(&funding, &remote.commit_key, &s.sig).is_err() {
            return Err(violation(Rule::R2_3_a, "open_commit_sig.sig does not sign our initial commitment"));
        }
        self.our_sig = Some(s.sig);
        let theirs = self
            .build_theirs_with(&funding, &self.their_view, self.their_hash, 0)
            .ok_or_else(|| violation(Rule::R2_2_b, "the peer's initial commitment cannot be built"))?;
        self.monitor_setup(&funding, ours.txid(), theirs.txid());
        // R2.3-b: broadcast the anchor now, and watch it (R6.1-a).
        let anchor = self.anchor_tx.take().expect("kept until open_commit_sig");
        self.emit(Output::Broadcast(anchor));
        self.watch_anchor(&funding);
        self.anchor_broadcast = true;
        self.phase = Phase::AwaitDepth;
        Ok(())
    }

    pub(super) fn watch_anchor(&mut self, funding: &FundingOutput) {
        self.emit(Output::Watch(Watch::AnchorDepth {
            txid: funding.outpoint().txid,
            script_pubkey: funding.script_pubkey(),
        }));
        self.emit(Output::Watch(Watch::AnchorSpend(funding.outpoint())));
    }
}
