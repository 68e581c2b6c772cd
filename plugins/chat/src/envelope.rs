//! What goes into an inbox and onto `inbox/{me}`: `seed.v1.Envelope`s, built here.
//!
//! The store keeps an envelope *without* its seq (the seq is only known once stored). A
//! delivery prepends the seq field — tag `0x08`, then the seq as a varint — to the stored
//! bytes: protobuf merges concatenated encodings, so the result decodes as the full
//! envelope, and the hot path neither decodes nor re-encodes.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use seed_broker::codec::{Properties, QoS};
use seed_broker::message::Message;
use seed_proto::topics;
use seed_proto::v1::{self, envelope::Body, receipt::Kind};

/// The envelope a device receives for an inbox entry: `seq` in front of the stored bytes.
pub fn framed(seq: u64, stored: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(11 + stored.len());
    out.put_u8(0x08);
    prost::encoding::encode_varint(seq, &mut out);
    out.extend_from_slice(stored);
    out.freeze()
}

/// An envelope without seq, encoded for the store.
pub fn stored(body: Body) -> Bytes {
    Bytes::from(v1::Envelope { seq: 0, body: Some(body) }.encode_to_vec())
}

/// The copy of a message for the sender's own other devices: with the sender's
/// `client_msg_id` and the chat it belongs to.
pub fn for_sender(message: &v1::Message, client_msg_id: &str, chat: &str) -> v1::Message {
    v1::Message {
        client_msg_id: client_msg_id.to_owned(),
        chat: chat.to_owned(),
        ..message.clone()
    }
}

pub fn receipt(kind: Kind, by: &str, up_to: u64, chat: &str) -> Bytes {
    stored(Body::Receipt(v1::Receipt {
        kind: kind as i32,
        by: by.to_owned(),
        up_to,
        chat: chat.to_owned(),
    }))
}

/// A typing notice: not stored, so seq 0 (omitted on the wire).
pub fn typing(from: &str, active: bool) -> Bytes {
    stored(Body::Typing(v1::Typing { from: from.to_owned(), active, chat: String::new() }))
}

/// The broker message that carries `payload` to a device's `inbox/{user}`.
pub fn inbox_publish(user: &str, payload: Bytes, qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: topics::inbox(user).into(),
        payload,
        qos,
        retain: false,
        properties: Properties::default(),
        expires_at: None,
        publisher: None,
    })
}

/// What a device acknowledged, read back from the delivered payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub seq: u64,
    /// For a chat message: its sender and id (what a delivery receipt needs).
    pub message: Option<(String, u64)>,
}

pub fn parse_acked(payload: &[u8]) -> Option<Acked> {
    let envelope = v1::Envelope::decode(payload).ok()?;
    if envelope.seq == 0 {
        return None;
    }
    let message = match envelope.body {
        Some(Body::Message(m)) if m.id != 0 => Some((m.from, m.id)),
        _ => None,
    };
    Some(Acked { seq: envelope.seq, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_prefix_decodes_as_the_envelope() {
        let message =
            v1::Message { id: 42, from: "alice".into(), text: "hi".into(), ..Default::default() };
        let body = stored(Body::Message(message.clone()));
        for seq in [1, 127, 128, 300, 1 << 35, u64::MAX] {
            let wire = framed(seq, &body);
            let envelope = v1::Envelope::decode(wire.as_ref()).unwrap();
            assert_eq!(envelope.seq, seq);
            assert_eq!(envelope.body, Some(Body::Message(message.clone())));
            assert_eq!(
                wire,
                v1::Envelope { seq, body: Some(Body::Message(message.clone())) }.encode_to_vec()
            );
            assert_eq!(
                parse_acked(&wire),
                Some(Acked { seq, message: Some(("alice".into(), 42)) })
            );
        }
    }

    #[test]
    fn acked_receipts_carry_no_message() {
        let wire = framed(7, &receipt(Kind::Read, "bob", 9, ""));
        assert_eq!(parse_acked(&wire), Some(Acked { seq: 7, message: None }));
        assert_eq!(parse_acked(&typing("bob", true)), None);
        assert_eq!(parse_acked(b"\xff\xff"), None);
    }

    #[test]
    fn the_senders_copy_names_the_chat() {
        let message =
            v1::Message { id: 1, from: "alice".into(), text: "hi".into(), ..Default::default() };
        let mine = for_sender(&message, "c1", "bob");
        assert_eq!((mine.client_msg_id.as_str(), mine.chat.as_str()), ("c1", "bob"));
    }
}
