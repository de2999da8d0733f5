//! Persistence and retransmission (section 1.2): inbound messages numbered
//! per transport so that retransmissions are recognised, the `authenticate`
//! exchange that says what to resend, and the peer's acknowledges.

use super::journal::Input;
use super::*;
#[allow(unused_imports)]
use crate::prelude::*;

impl Channel {
    /// A message from the peer, with the `acknowledge` value of its transport
    /// header (ruling D8).
    ///
    /// The peer's `authenticate` goes to
    /// [`handle_authenticate`](Self::handle_authenticate). A message the peer
    /// retransmits after a reconnection that this channel had already
    /// processed is recognised by its number and skipped (R1.2-b, R1.2-d).
    pub fn handle_message(&mut self, message: Message, acknowledge: u64) {
        self.receive(message, acknowledge, None);
    }

    /// A message from the peer as it came off the wire, with the
    /// `acknowledge` value of its transport header: [`crate::wire::decode`]
    /// then [`handle_message`](Self::handle_message), or
    /// [`handle_malformed`](Self::handle_malformed) if it does not decode.
    /// The journal keeps `bytes` as they came, where `handle_message` has to
    /// encode the message again.
    pub fn handle_wire(&mut self, bytes: &[u8], acknowledge: u64) {
        match crate::wire::decode(bytes) {
            Ok(message) => self.receive(message, acknowledge, Some(bytes)),
            Err(e) => self.handle_malformed(&e),
        }
    }

    /// [`handle_message`](Self::handle_message), with the message's wire
    /// encoding when the caller has it.
    fn receive(&mut self, message: Message, acknowledge: u64, bytes: Option<&[u8]>) {
        // `authenticate` belongs to the transport and is not counted (R1.2-b).
        if let Message::Authenticate(_) = message {
            self.handle_authenticate(acknowledge);
            return;
        }
        if self.is_terminal() {
            if let Message::UpdateFulfillHtlc(m) = message {
                let _ = self.step(Input::LateFulfill(m));
            }
            return;
        }
        match self.link {
            Link::Up => {}
            // No transport since a restore: the caller has not called
            // `new_transport`. The message cannot be numbered; the peer
            // resends it on the next transport.
            Link::Down => return,
            // The peer's first message on a transport is its authenticate,
            // which says what we must resend: anything before it cannot be
            // numbered.
            Link::AwaitingAuth => {
                let _ = self.step(Input::BeforeAuth(message));
                return;
            }
        }
        self.in_no += 1;
        if self.in_no <= self.processed {
            // R1.2-d: a retransmission of a message we processed before the
            // reconnection (our authenticate could only acknowledge what was
            // durable). Its effects are already in the state.
            return;
        }
        let input = Input::Message { message, ack: acknowledge };
        let _ = match bytes {
            Some(bytes) => self.step_encoded(input, |_, w| Input::encode_message(w, acknowledge, bytes)),
            None => self.step(input),
        };
    }

    /// A numbered peer message, live or replayed.
    pub(super) fn apply_message(&mut self, message: Message, acknowledge: u64) {
        self.processed += 1;
        self.dirty = true;
        // R1.2-c: the acknowledges of the peer's messages never decrease, nor
        // exceed what we sent. Retransmissions keep their first header, so
        // the floor is the last processed message's, not the authenticate's.
        if acknowledge < self.last_in_ack || acknowledge > self.sent {
            let problem = format!("acknowledge {acknowledge} outside {}..={}", self.last_in_ack, self.sent);
            self.fail_with(FailOrigin::PeerViolation, Some(Rule::R1_2_c), problem);
            return;
        }
        self.last_in_ack = acknowledge;
        self.trim_unacked(acknowledge);
        if let Err(v) = self.dispatch(message, acknowledge) {
            self.fail_with(FailOrigin::PeerViolation, v.rule, v.problem);
        }
        self.progress();
    }

    /// A new transport replaces the old one (R1.2-a): call it once the
    /// transport is up, before reading anything from it, and send the
    /// peer an `authenticate` whose header carries the returned
    /// acknowledge: the messages we have durably processed (R1.2-b). A
    /// restored channel starts without a transport and needs this call too.
    ///
    /// Messages queued for the old transport and not yet drained are
    /// dropped, and nothing is sent until the peer's `authenticate` arrives
    /// ([`handle_authenticate`](Self::handle_authenticate)), since only it
    /// says where the retransmission starts.
    pub fn new_transport(&mut self) -> u64 {
        self.gated.drop_messages();
        self.link = Link::AwaitingAuth;
        // The peer resends everything after what we acknowledge now.
        self.in_no = self.durable_processed;
        self.durable_processed
    }

    /// The peer's `authenticate`, with the acknowledge of its header: every
    /// message of ours it does not cover is sent again, with its original
    /// header, so the bytes are identical (R1.2-d, R1.2-e); then new messages
    /// flow. An acknowledge below one the peer sent before, or above what we
    /// sent, fails the connection (R1.2-c). Outside a reconnection (no
    /// [`new_transport`](Self::new_transport) before it) it is ignored.
    pub fn handle_authenticate(&mut self, acknowledge: u64) {
        // A failed channel still resends its unacknowledged messages: the
        // peer should learn why (R6.3-c).
        if self.link != Link::AwaitingAuth {
            return;
        }
        self.link = Link::Up;
        let (version, refused) = (self.version, acknowledge < self.peer_ack || acknowledge > self.sent);
        let _ = self.step(Input::Authenticate(acknowledge));
        if refused {
            return;
        }
        // The step only trimmed what the peer has: it released nothing, so
        // the resends keep their place.
        for (_, ack, bytes) in &self.unacked {
            let message = crate::wire::decode(bytes).expect("checked to decode when stored or restored");
            self.gated.push_back((version, Output::Send { message, acknowledge: *ack, bytes: bytes.clone() }));
        }
    }

    /// The peer's `authenticate`, live or replayed: what it acknowledges
    /// needs no resending.
    pub(super) fn apply_authenticate(&mut self, acknowledge: u64) {
        if acknowledge < self.peer_ack || acknowledge > self.sent {
            let problem = format!("authenticate acknowledges {acknowledge}, outside {}..={}", self.peer_ack, self.sent);
            self.fail_with(FailOrigin::PeerViolation, Some(Rule::R1_2_c), problem);
            return;
        }
        self.trim_unacked(acknowledge);
    }

    /// The peer has processed our messages up to `acknowledge`: they need
    /// no retransmission.
    pub(super) fn trim_unacked(&mut self, acknowledge: u64) {
        if acknowledge > self.peer_ack {
            self.peer_ack = acknowledge.min(self.sent);
            while self.unacked.front().is_some_and(|(n, _, _)| *n <= self.peer_ack) {
                self.unacked.pop_front();
            }
            self.unacked.trim();
            self.dirty = true;
        }
    }
}
