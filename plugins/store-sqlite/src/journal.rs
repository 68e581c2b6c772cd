//! The journal: what each commit appended, as one record (written by `segments.rs`).
//!
//! An append (message, inbox entry, cursor) is made durable by its commit's journal record
//! alone: one record at the end of the journal, however many inboxes and chats the batch
//! touched. The same items wait in memory (`unflushed.rs`) and go to their own tables
//! later, grouped — many entries of an inbox in one chunk row, many messages of a chat on
//! the same pages. Written straight to those tables instead, each commit rewrote a page or
//! two for every inbox and chat it touched: about ten 2 KiB pages per message at 5,000
//! messages a second, which was the WAL's bandwidth, its fsync time and most of the
//! writer's CPU.
//!
//! On open, the records still in the journal (and the rows of the `journal` table that
//! builds before the journal file used) are read back into memory (`Unflushed::recover`).

use bytes::Bytes;

use crate::frame::{self, Damaged, Reader};

/// One appended thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An inbox entry under its seq.
    Entry { user: String, seq: u64, envelope: Bytes, skip_device: Option<String>, created_at: u64 },
    /// A chat message, with its sender's idempotency key if it had one.
    Message { chat: String, id: u64, sender: String, body: Bytes, key: Option<String> },
    /// A device's cursor moved (forward) to `seq`.
    Cursor { user: String, device: String, seq: u64 },
}

const ENTRY: u8 = 1;
const MESSAGE: u8 = 2;
const CURSOR: u8 = 3;

/// A journal record's bytes.
pub fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(encoded_len).sum());
    for item in items {
        match item {
            Item::Entry { user, seq, envelope, skip_device, created_at } => {
                out.push(ENTRY);
                frame::put_bytes(&mut out, user.as_bytes());
                frame::put_u64(&mut out, *seq);
                frame::put_bytes(&mut out, envelope);
                frame::put_optional(&mut out, skip_device.as_deref());
                frame::put_u64(&mut out, *created_at);
            }
            Item::Message { chat, id, sender, body, key } => {
                out.push(MESSAGE);
                frame::put_bytes(&mut out, chat.as_bytes());
                frame::put_u64(&mut out, *id);
                frame::put_bytes(&mut out, sender.as_bytes());
                frame::put_bytes(&mut out, body);
                frame::put_optional(&mut out, key.as_deref());
            }
            Item::Cursor { user, device, seq } => {
                out.push(CURSOR);
                frame::put_bytes(&mut out, user.as_bytes());
                frame::put_bytes(&mut out, device.as_bytes());
                frame::put_u64(&mut out, *seq);
            }
        }
    }
    out
}

/// The bytes [`encode`] writes for `item`.
fn encoded_len(item: &Item) -> usize {
    let optional = |text: &Option<String>| 4 + text.as_ref().map_or(0, String::len);
    1 + match item {
        Item::Entry { user, envelope, skip_device, .. } => {
            4 + user.len() + 8 + 4 + envelope.len() + optional(skip_device) + 8
        }
        Item::Message { chat, sender, body, key, .. } => {
            4 + chat.len() + 8 + 4 + sender.len() + 4 + body.len() + optional(key)
        }
        Item::Cursor { user, device, .. } => 4 + user.len() + 4 + device.len() + 8,
    }
}

/// The items of a journal record.
pub fn decode(record: Bytes) -> Result<Vec<Item>, Damaged> {
    let mut reader = Reader::new(record);
    let mut items = Vec::new();
    while !reader.is_empty() {
        let at = items.len() as u64;
        items.push(item(&mut reader).ok_or(Damaged { what: "journal record, item", at })?);
    }
    Ok(items)
}

fn item(reader: &mut Reader) -> Option<Item> {
    Some(match reader.u8()? {
        ENTRY => Item::Entry {
            user: reader.string()?,
            seq: reader.u64()?,
            envelope: reader.bytes()?,
            skip_device: reader.optional()?,
            created_at: reader.u64()?,
        },
        MESSAGE => Item::Message {
            chat: reader.string()?,
            id: reader.u64()?,
            sender: reader.string()?,
            body: reader.bytes()?,
            key: reader.optional()?,
        },
        CURSOR => {
            Item::Cursor { user: reader.string()?, device: reader.string()?, seq: reader.u64()? }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let items = vec![
            Item::Entry {
                user: "bob".into(),
                seq: 9,
                envelope: Bytes::from_static(b"\x0a\x01"),
                skip_device: Some("phone".into()),
                created_at: 1_700_000_000_000,
            },
            Item::Message {
                chat: "dm:alice:bob".into(),
                id: 1 << 40,
                sender: "alice".into(),
                body: Bytes::new(),
                key: None,
            },
            Item::Cursor { user: "bob".into(), device: "laptop".into(), seq: 3 },
        ];
        let row = encode(&items);
        assert_eq!(row.len(), items.iter().map(encoded_len).sum::<usize>());
        let row = Bytes::from(row);
        assert_eq!(decode(row.clone()).unwrap(), items);
        // A cut row is damaged, unless it is cut between items: then it is those items.
        for cut in 1..row.len() {
            if let Ok(decoded) = decode(row.slice(..cut)) {
                assert_eq!(decoded, items[..decoded.len()], "cut at {cut}");
            }
        }
        assert!(decode(Bytes::from_static(&[9])).is_err(), "unknown kind");
    }
}
