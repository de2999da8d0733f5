//! Cooperative close (section 4): `close_clearing`, then the fee
//! negotiation of `close_signature` (ruling D5 and its tie-break for
//! crossed proposals, with the relay floor).

use super::*;
#[allow(unused_imports)]
use crate::prelude::*;

impl Channel {
    /// Begins a cooperative close: sends `close_clearing` (R4.1-b: once).
    pub fn close(&mut self) -> Result<(), ChannelError> {
        self.step(Input::Close)
    }

    pub(super) fn apply_close(&mut self) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("close"));
        }
        if self.close.sent_clearing {
            return Err(ChannelError::AlreadyClosing);
        }
        self.send_clearing();
        self.progress();
        Ok(())
    }

    pub(super) fn on_close_clearing(&mut self) -> Result<(), Violation> {
        // R4.1-b
        if self.close.received_clearing {
            return Err(violation(Rule::R4_1_b, "second close_clearing"));
        }
        self.close.received_clearing = true;
        if !self.close.sent_clearing {
            self.send_clearing();
        }
        Ok(())
    }

    pub(super) fn send_clearing(&mut self) {
        self.send(Message::CloseClearing);
        self.close.sent_clearing = true;
        self.close.clearing_msg_no = self.sent;
        self.event(Event::ChannelClosing);
    }

    pub(super) fn on_close_signature(&mut self, m: CloseSignature, ack: u64) -> Result<(), Violation> {
        // R4.2-a: only once clearing is complete.
        if !self.clearing_complete() {
            return Err(violation(Rule::R4_2_a, "close_signature before clearing is complete"));
        }
        // R4.2-b
        let their_max = self.their_view.fee();
        if m.close_fee.to_sat() % 2 == 1 || m.close_fee > their_max {
            return Err(violation(Rule::R4_2_b, format!("close_fee {} is odd or above {their_max}", m.close_fee)));
        }
        let close =
            self.build_close(m.close_fee).ok_or_else(|| violation(Rule::R4_2_b, "close_fee leaves no output"))?;
        let funding = self.funding.as_ref().expect("open");
        // R4.2-d
        if close.verify(funding, &self.remote.expect("open").commit_key, &m.sig).is_err() {
            return Err(violation(
                Rule::R4_2_d,
                format!("close_signature does not sign the close with fee {}", m.close_fee),
            ));
        }
        // The peer had not processed our last proposal when it sent this
        // one: the two crossed.
        let crossed = self.close.our_fee.is_some() && ack < self.close.our_msg_no;
        // R4.2-f, ruling D5: each answer must narrow the interval.
        if let (false, Some(ours), Some((prev, _))) = (crossed, self.close.our_fee, self.close.their) {
            let (lo, hi) = if prev < ours { (prev, ours) } else { (ours, prev) };
            let between = m.close_fee == ours || (m.close_fee > lo && m.close_fee < hi);
            if !between {
                return Err(violation(
                    Rule::R4_2_f,
                    format!("close_fee {} is not between {prev} and {ours}", m.close_fee),
                ));
            }
        }
        let theirs = m.close_fee;
        let floor = self.close_floor();
        self.close.their = Some((theirs, m.sig));
        if theirs >= floor {
            // R6.3-f: the close we would broadcast on failure.
            self.close.their_relayable = Some((theirs, m.sig));
        }
        // The same fee on both sides: the same transaction.
        if self.close.our_fee == Some(theirs) {
            self.finish_close(close);
            return Ok(());
        }
        // D5 tie-break for crossed proposals: both sides would answer both
        // and could end on two different closes. The funder answers the
        // fundee's proposal as if its own had not been sent; the fundee
        // waits for that answer, so one exchange goes on.
        if crossed && self.role == Role::Fundee {
            return Ok(());
        }
        // R4.2-b: we never propose more than our own final commitment's fee,
        // nor less than a fee the network relays.
        let cap = Amount::from_sat(self.our_view.fee().to_sat() & !1);
        let next = match self.close.our_fee {
            // R4.2-e: propose strictly between the two (D5: when no even
            // value within our bounds lies strictly between, accept theirs).
            Some(ours) => {
                let (lo, hi) = (ours.min(theirs), ours.max(theirs));
                let mid = (lo + Amount::from_sat(((hi - lo).to_sat() / 2) & !1)).min(cap).max(floor);
                if mid > lo && mid < hi {
                    mid
                } else {
                    theirs
                }
            }
            None => self.initial_close_fee(),
        };
        if next != theirs {
            return self.send_close_signature(next);
        }
        if theirs < floor {
            // Agreeing would leave a close no node relays (and the peer's
            // proposals leave no relayable fee to propose): the negotiation
            // cannot end on a usable transaction.
            return Err(violation(
                Rule::R4_2_f,
                format!("close_fee {theirs} is below the relay floor {floor} and no relayable fee is left to propose"),
            ));
        }
        // R4.2-e: agree: echo the fee with our signature when we may propose
        // it ourselves (R4.2-b), and broadcast.
        if theirs <= cap {
            self.send_close_signature(theirs)?;
        }
        self.finish_close(close);
        Ok(())
    }

    /// The lowest close fee we propose or accept: the close transaction's
    /// worst-case size at 1 sat/vB (ADR 0004). It is the same for every
    /// node, whatever its own relay policy, so that two nodes never narrow
    /// the negotiation onto opposite sides of it.
    pub(super) fn close_floor(&self) -> Amount {
        crate::fees::DEFAULT_MIN_CLOSE_FEE
    }

    pub(super) fn send_close_signature(&mut self, fee: Amount) -> Result<(), Violation> {
        let close = self.build_close(fee).ok_or_else(|| violation(Rule::R4_2_b, "our close fee leaves no output"))?;
        let sig = close
            .sign(self.funding.as_ref().expect("open"), &self.signing())
            .map_err(|e| Violation { rule: None, problem: e.to_string() })?;
        self.close.our_fee = Some(fee);
        self.close.signed_fees.push(fee);
        self.send(Message::CloseSignature(CloseSignature { close_fee: fee, sig }));
        self.close.our_msg_no = self.sent;
        Ok(())
    }

    pub(super) fn finish_close(&mut self, close: CloseTx) {
        let (_, sig) = self.close.their.expect("agreed on their signature");
        let funding = self.funding.clone().expect("open");
        let remote = self.remote.expect("open");
        match close.finalize(&funding, &self.signing(), &remote.commit_key, &sig) {
            Ok(tx) => {
                self.emit(Output::Broadcast(tx.clone()));
                self.event(Event::ChannelClosed { tx });
                self.phase = Phase::Closed;
            }
            Err(e) => self.fail_with(FailOrigin::Local, None, format!("cannot sign the close: {e}")),
        }
    }

    /// The opening offer: a 336-byte estimate at our close fee rate, at
    /// least the relay floor, capped at our final commitment's fee (R4.2-b),
    /// even.
    pub(super) fn initial_close_fee(&self) -> Amount {
        fee_for_bytecount(CLOSE_BYTECOUNT, self.config.close_fee_rate).max(self.close_floor()).min(self.our_view.fee())
    }

    pub(super) fn build_close(&self, fee: Amount) -> Option<CloseTx> {
        let remote = self.remote?;
        build_close(&CloseSpec {
            funding: self.funding.as_ref()?,
            local_final: self.signer.public_key(KeyRole::Final),
            remote_final: remote.final_key,
            to_local: self.our_view.to_local,
            to_remote: self.our_view.to_remote,
            close_fee: fee,
        })
        .ok()
    }

    /// R4.2-a: clearing was started by either side and no HTLC or update
    /// remains in either commitment.
    pub(super) fn clearing_complete(&self) -> bool {
        self.close.sent_clearing
            && self.close.received_clearing
            && self.log.is_empty()
            && self.their_prev.is_none()
            && self.our_view.htlcs.is_empty()
            && self.their_view.htlcs.is_empty()
    }
}
