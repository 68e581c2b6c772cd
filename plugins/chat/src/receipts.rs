//! Ticks beyond the first: DELIVERED when a recipient's device acknowledges a message, READ
//! when a user reports a chat read up to a message.
//!
//! Both are watermarks per (reader, chat) in the store, and a receipt says "every message up
//! to this id", so a receipt is sent only when a watermark moves: many acknowledgements make
//! one receipt, and a late or repeated acknowledgement makes none. A receipt is an inbox
//! entry like a message, delivered (and replayed) the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use seed_chat_core::{NewEntry, StoreError, Watermark, dm_chat};
use seed_proto::v1::receipt::Kind;

use crate::Chat;
use crate::envelope::{self, Acked};

/// Attempts at moving a watermark and storing its receipts.
const ATTEMPTS: u32 = 5;

/// A device acknowledged inbox entries: its cursor moves to the highest (or to `cursor`, when
/// its pump passed over entries beyond), and the senders of the messages among them get a
/// DELIVERED receipt. Cursors and watermarks only move forward, so two calls for one device
/// may run at once and finish in either order.
pub(crate) async fn acknowledged(
    chat: Arc<Chat>,
    user: String,
    device: String,
    cursor: u64,
    acks: Vec<Acked>,
) {
    let highest = acks.iter().map(|a| a.seq).max().unwrap_or_default().max(cursor);
    if highest == 0 {
        return;
    }
    let mut latest: HashMap<String, u64> = HashMap::new();
    for (from, id) in acks.into_iter().filter_map(|a| a.message) {
        if from != user {
            let up_to = latest.entry(from).or_default();
            *up_to = (*up_to).max(id);
        }
    }
    let receipts = async {
        for (from, up_to) in latest {
            let chat_key = dm_chat(&user, &from);
            let receipt = envelope::receipt(Kind::Delivered, &user, up_to, "");
            let entry = NewEntry { user_id: from, envelope: receipt, skip_device: None };
            let moved = advance(&chat, Watermark::Delivered, &user, &chat_key, up_to, vec![entry]);
            if let Err(error) = moved.await {
                // The next acknowledgement that moves the watermark sends a receipt then.
                tracing::error!(%error, user, "a delivered receipt could not be stored");
            }
        }
    };
    // The cursor and the watermarks are independent writes: one commit can take both.
    let (stored, ()) = tokio::join!(chat.store.set_cursor(&user, &device, highest), receipts);
    if let Err(error) = stored {
        // Not lost for good: the next acknowledgement writes a cursor past this one.
        tracing::warn!(%error, user, device, "storing the cursor failed");
    }
}

/// `reader` (on `device`) read the direct chat with `peer` up to `up_to`: the peer gets a
/// READ receipt (unless they blocked the reader), and so do the reader's other devices, to
/// clear their unread count.
pub(crate) async fn read(
    chat: &Arc<Chat>,
    reader: &str,
    device: &str,
    peer: &str,
    up_to: u64,
) -> Result<(), StoreError> {
    let chat_key = dm_chat(reader, peer);
    let mut entries = Vec::with_capacity(2);
    if peer != reader && !chat.directory.is_blocked(&*chat.store, reader, peer).await? {
        let receipt = envelope::receipt(Kind::Read, reader, up_to, "");
        entries.push(NewEntry { user_id: peer.to_owned(), envelope: receipt, skip_device: None });
    }
    // On the reader's own devices `by` is themselves, so the chat is named.
    let receipt = envelope::receipt(Kind::Read, reader, up_to, peer);
    entries.push(NewEntry {
        user_id: reader.to_owned(),
        envelope: receipt,
        skip_device: Some(device.to_owned()),
    });
    advance(chat, Watermark::Read, reader, &chat_key, up_to, entries).await
}

/// Moves a watermark and, if it moved, stores its receipt entries in the same write and
/// wakes their users' pumps. A failure is retried a few times; the last one is returned.
/// The receipts go out once applied, without waiting for the disk: nothing is acknowledged
/// on them.
async fn advance(
    chat: &Arc<Chat>,
    kind: Watermark,
    reader: &str,
    chat_key: &str,
    up_to: u64,
    entries: Vec<NewEntry>,
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let stored =
            chat.store.advance_watermark_and_append(kind, reader, chat_key, up_to, entries.clone());
        match stored.await {
            Ok(Some(seqs)) => {
                for (entry, seq) in entries.into_iter().zip(seqs) {
                    chat.inboxes.appended(entry, seq);
                }
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(error) if attempt == ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::warn!(%error, attempt, reader, ?kind, "storing a receipt failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}
