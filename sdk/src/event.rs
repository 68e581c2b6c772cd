//! What a connected device hears: inbox envelopes decoded into [`Event`]s, plus connection
//! changes. Also the seq de-duplication: MQTT QoS 1 may deliver an inbox entry again after a
//! reconnect (the PUBACK was lost), and the app should see each entry once.

use std::collections::{HashSet, VecDeque};

use seed_proto::ProstMessage;
use seed_proto::v1::{self, envelope::Body};

/// Something the app should know about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Connected (or reconnected) and subscribed to the inbox; replay follows.
    Connected,
    /// A chat message: from a peer, or (with `chat` and `client_msg_id` set) sent by another
    /// device of mine.
    Message {
        seq: u64,
        message: v1::Message,
    },
    /// Delivered / read ticks for messages I sent.
    Receipt {
        seq: u64,
        receipt: v1::Receipt,
    },
    /// A peer is typing (never stored, seq 0).
    Typing {
        typing: v1::Typing,
    },
    GroupEvent {
        seq: u64,
        event: v1::GroupEvent,
    },
    /// The server could not accept something this user sent.
    ServerError {
        seq: u64,
        error: v1::Error,
    },
    /// An inbox payload that is not a valid envelope (kept so nothing vanishes silently).
    Undecodable {
        seq: Option<u64>,
        reason: String,
    },
    /// The connection dropped. With `reconnecting` the SDK tries again (and resends what was
    /// not acknowledged); without, the client is finished (e.g. the token was refused).
    Disconnected {
        reason: String,
        reconnecting: bool,
    },
}

/// Decodes an inbox payload.
pub(crate) fn decode(payload: &[u8]) -> Event {
    let envelope = match v1::Envelope::decode(payload) {
        Ok(e) => e,
        Err(e) => return Event::Undecodable { seq: None, reason: e.to_string() },
    };
    let seq = envelope.seq;
    match envelope.body {
        Some(Body::Message(message)) => Event::Message { seq, message },
        Some(Body::Receipt(receipt)) => Event::Receipt { seq, receipt },
        Some(Body::Typing(typing)) => Event::Typing { typing },
        Some(Body::GroupEvent(event)) => Event::GroupEvent { seq, event },
        Some(Body::Error(error)) => Event::ServerError { seq, error },
        None => Event::Undecodable { seq: Some(seq), reason: "envelope without body".into() },
    }
}

/// The inbox seq of an event, when it has one (0 means "not stored").
pub(crate) fn seq_of(event: &Event) -> Option<u64> {
    match event {
        Event::Message { seq, .. }
        | Event::Receipt { seq, .. }
        | Event::GroupEvent { seq, .. }
        | Event::ServerError { seq, .. } => Some(*seq).filter(|&s| s != 0),
        _ => None,
    }
}

/// Seqs already surfaced, bounded: the oldest are forgotten first. Replays come in seq order
/// from the device's cursor, so a window far larger than one replay batch is enough.
pub(crate) struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Seen {
    pub(crate) fn new(capacity: usize) -> Seen {
        Seen { set: HashSet::new(), order: VecDeque::new(), capacity }
    }

    /// True the first time a seq is offered.
    pub(crate) fn first_time(&mut self, seq: u64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// Forgets everything after `since`, so an explicit sync surfaces those entries again.
    pub(crate) fn forget_after(&mut self, since: u64) {
        self.set.retain(|&s| s <= since);
        self.order.retain(|&s| s <= since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_dedupes_and_forgets() {
        let mut seen = Seen::new(3);
        assert!(seen.first_time(1));
        assert!(!seen.first_time(1));
        assert!(seen.first_time(2));
        seen.forget_after(1);
        assert!(seen.first_time(2));
        assert!(seen.first_time(3));
        assert!(seen.first_time(4));
        // 1 fell out of the window.
        assert!(seen.first_time(1));
    }

    #[test]
    fn decodes_envelopes() {
        let env = v1::Envelope {
            seq: 7,
            body: Some(Body::Message(v1::Message { text: "hi".into(), ..Default::default() })),
        };
        match decode(&env.encode_to_vec()) {
            Event::Message { seq: 7, message } => assert_eq!(message.text, "hi"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&[0xff, 0xff]), Event::Undecodable { .. }));
    }
}
