//! Failing the connection (section 6.3) and the chain's verdicts: a peer's
//! `error`, a malformed message, an anchor spent, and what is broadcast.

use super::*;
#[allow(unused_imports)]
use crate::prelude::*;

impl Channel {
    /// Fails the channel on the application's decision: sends an `error`
    /// and broadcasts as section 6.3 says.
    pub fn fail(&mut self, problem: &str) {
        if !self.is_terminal() {
            let _ = self.step(Input::Fail(problem.to_string()));
        }
    }

    /// A message from the peer that did not decode: fails the connection
    /// with the rule it broke (R1-b, R1-d, R2.1-e).
    pub fn handle_malformed(&mut self, error: &DecodeError) {
        if !self.is_terminal() {
            let _ = self.step(Input::Malformed { rule: error.rule().and_then(Rule::from_id), text: error.to_string() });
        }
    }

    /// A transaction spending the anchor was seen (R6.1-a). A close with a
    /// fee either side proposed ends the channel as closed; anything else
    /// fails it.
    pub fn handle_anchor_spent(&mut self, tx: &Transaction) {
        if !self.is_terminal() {
            let _ = self.step(Input::AnchorSpent(tx.clone()));
        }
    }

    pub(super) fn apply_anchor_spent(&mut self, tx: &Transaction) {
        // Closed (our own close seen again) or failed: nothing more to do.
        if self.is_terminal() {
            return;
        }
        // A close with a fee we signed ends the negotiation, whoever
        // broadcast it (the peer may accept our proposal without echoing
        // it, ruling D5).
        let txid = tx.compute_txid();
        let signed = self.close.signed_fees.clone();
        if signed.into_iter().any(|fee| self.build_close(fee).is_some_and(|c| c.tx().compute_txid() == txid)) {
            self.event(Event::ChannelClosed { tx: tx.clone() });
            self.phase = Phase::Closed;
            return;
        }
        self.anchor_broadcast = true;
        self.fail_inner(
            FailOrigin::Chain,
            Some(Rule::R6_1_a),
            format!("anchor spent by {}", tx.compute_txid()),
            Some(FailBroadcast::AnchorSpent),
        );
    }

    pub(super) fn fail_with(&mut self, origin: FailOrigin, rule: Option<Rule>, problem: String) {
        self.fail_inner(origin, rule, problem, None);
    }

    pub(super) fn fail_inner(
        &mut self,
        origin: FailOrigin,
        rule: Option<Rule>,
        problem: String,
        forced: Option<FailBroadcast>,
    ) {
        if self.is_terminal() {
            return;
        }
        // R6.3-b: never answer an error with an error; R6.3-c: otherwise say
        // why.
        if origin != FailOrigin::PeerError {
            let text = crate::wire::bounded_error_text(&problem);
            self.send(Message::Error(ErrorMessage { problem: Some(text) }));
        }
        let broadcast = match forced {
            Some(b) => b,
            None => self.failure_broadcast(),
        };
        self.phase = Phase::Failed;
        self.event(Event::ChannelFailed { reason: FailReason { origin, rule, problem }, broadcast });
        self.dirty = true;
    }

    /// Chooses and emits the broadcast of section 6.3.
    pub(super) fn failure_broadcast(&mut self) -> FailBroadcast {
        // R6.3-d
        if !self.anchor_broadcast {
            return FailBroadcast::Nothing;
        }
        // R6.3-f: a valid close_signature was received: close with the last
        // one a node would relay.
        if let Some((fee, sig)) = self.close.their_relayable {
            if let Some(close) = self.build_close(fee) {
                let funding = self.funding.clone().expect("open");
                if let Ok(tx) = close.finalize(&funding, &self.signing(), &self.remote.expect("open").commit_key, &sig)
                {
                    self.emit(Output::Broadcast(tx));
                    return FailBroadcast::Close;
                }
            }
        }
        // R6.3-e, R6.3-g: sign our latest commitment only now (R3.5-f); it is
        // never a revoked one (R3.5-e).
        let (Some(sig), Some(funding)) = (self.our_sig, self.funding.clone()) else {
            return FailBroadcast::Nothing;
        };
        let Some(ours) = self.build_ours(&self.our_view, self.our_num) else {
            return FailBroadcast::Nothing;
        };
        match ours.finalize(&funding, &self.signing(), &self.remote.expect("open").commit_key, &sig) {
            Ok(tx) => {
                self.emit(Output::Broadcast(tx));
                if self.ever_had_htlc {
                    FailBroadcast::Commitment
                } else {
                    FailBroadcast::CommitmentNoHtlcs
                }
            }
            Err(_) => FailBroadcast::Nothing,
        }
    }

    /// A failed channel still takes `R` from a fulfill that arrives late
    /// for an HTLC we offered in a commitment that may yet reach the chain:
    /// the application can use it upstream at once (R6.2-a) instead of
    /// waiting to read it from the peer's on-chain claim.
    pub(super) fn late_fulfill(&mut self, m: UpdateFulfillHtlc) {
        if self.phase != Phase::Failed {
            return;
        }
        let prev = self.their_prev.as_ref().map(|(v, _)| v);
        let views = [Some(&self.our_view), Some(&self.their_view), prev];
        let Some(h) = views.into_iter().flatten().find_map(|v| v.htlc(Side::Local, m.id).copied()) else { return };
        if m.r.hash() != h.r_hash {
            return;
        }
        self.event(Event::HtlcFulfilled {
            direction: Direction::Outgoing,
            id: h.id,
            amount: h.amount.msat(),
            preimage: m.r,
        });
    }
}
