//! What one commit appends — messages, inbox entries, cursors — gathered while its
//! calls are applied, then journaled as one record at its end (`journal.rs`).
//!
//! A call only *reads* while it is applied (its checks, the inbox heads), so a call that
//! fails has changed nothing and needs no savepoint. Checks and seqs look at this batch
//! first, then at what waits in memory (`unflushed.rs`), then at the tables.

// foldhash: the writer hashes several keys per message; std's SipHash showed in profiles.
// Seeded per process, like std's.
use foldhash::{HashMap, HashSet};
use rusqlite::{Connection, OptionalExtension};
use seed_chat_core::{Appended, NewEntry, NewMessage, StoreError};

use crate::journal::Item;
use crate::unflushed::{Slice, Unflushed};
use crate::{backend, messages, reads, uint};

/// The appends of the commit being built.
#[derive(Default)]
pub struct Appends {
    items: Vec<Item>,
    /// The last seq taken per inbox in this batch.
    heads: HashMap<String, u64>,
    /// (sender, client_msg_id) → message id, for this batch's messages.
    keys: HashMap<(String, String), u64>,
    /// (chat, id) of this batch's messages: an id is used once per chat.
    ids: HashSet<(String, u64)>,
    /// (user, device) → highest acknowledged seq.
    cursors: HashMap<(String, String), u64>,
    /// Written out in this batch's transaction (expiry writes inboxes out early).
    pub written: Vec<Slice>,
}

impl Appends {
    /// `ChatStore::append_message`, in this commit.
    pub fn message(
        &mut self,
        conn: &Connection,
        waiting: &Unflushed,
        message: &NewMessage,
        now: u64,
    ) -> Result<Appended, StoreError> {
        // Stored as SQLite integers.
        i64::try_from(message.id)
            .map_err(|_| StoreError::Backend(format!("message id {} is above 2^63", message.id)))?;
        if let Some(key) = &message.client_msg_id
            && let Some(first) = self.first_with_key(conn, waiting, &message.sender, key)?
        {
            return Ok(Appended::Duplicate { id: first });
        }
        let chat_id = (message.chat.clone(), message.id);
        if self.ids.contains(&chat_id)
            || waiting.has_message(&message.chat, message.id)
            || (waiting.may_be_stored(message.id)
                && messages::exists(conn, &message.chat, message.id).map_err(backend)?)
        {
            return Err(StoreError::Conflict(format!("message id {}", message.id)));
        }
        let seqs = self.entries(conn, waiting, &message.entries, now)?;
        self.ids.insert(chat_id);
        if let Some(key) = &message.client_msg_id {
            self.keys.insert((message.sender.clone(), key.clone()), message.id);
        }
        self.items.push(Item::Message {
            chat: message.chat.clone(),
            id: message.id,
            sender: message.sender.clone(),
            body: message.body.clone(),
            key: message.client_msg_id.clone(),
        });
        Ok(Appended::New { seqs })
    }

    /// `ChatStore::append_entries`, in this commit: each entry takes the next seq of
    /// its inbox.
    pub fn entries(
        &mut self,
        conn: &Connection,
        waiting: &Unflushed,
        entries: &[NewEntry],
        now: u64,
    ) -> Result<Vec<u64>, StoreError> {
        // Every head is read before any seq is taken, so a failed read takes nothing.
        for entry in entries {
            if !self.heads.contains_key(&entry.user_id) {
                let head = match waiting.head(&entry.user_id) {
                    Some(head) => head,
                    None => reads::last_seq(conn, &entry.user_id).map_err(backend)?,
                };
                let floor = waiting.seq_floor().saturating_sub(1);
                self.heads.insert(entry.user_id.clone(), head.max(floor));
            }
        }
        let mut seqs = Vec::with_capacity(entries.len());
        for entry in entries {
            let head = self.heads.entry(entry.user_id.clone()).or_default();
            *head += 1;
            seqs.push(*head);
            self.items.push(Item::Entry {
                user: entry.user_id.clone(),
                seq: *head,
                envelope: entry.envelope.clone(),
                skip_device: entry.skip_device.clone(),
                created_at: now,
            });
        }
        Ok(seqs)
    }

    /// `ChatStore::set_cursor`, in this commit: only a seq beyond the cursor moves it.
    pub fn cursor(
        &mut self,
        conn: &Connection,
        waiting: &Unflushed,
        user_id: &str,
        device_id: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        let key = (user_id.to_owned(), device_id.to_owned());
        let current = match self.cursors.get(&key) {
            Some(&batch) => batch,
            None => match waiting.cursor(user_id, device_id) {
                Some(waiting) => waiting,
                None => reads::cursor(conn, user_id, device_id).map_err(backend)?,
            },
        };
        if seq > current {
            self.cursors.insert(key, seq);
        }
        Ok(())
    }

    fn first_with_key(
        &self,
        conn: &Connection,
        waiting: &Unflushed,
        sender: &str,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        if let Some(&id) = self.keys.get(&(sender.to_owned(), key.to_owned())) {
            return Ok(Some(id));
        }
        if let Some(id) = waiting.key(sender, key) {
            return Ok(Some(id));
        }
        conn.prepare_cached("SELECT id FROM sent_keys WHERE sender = ?1 AND client_msg_id = ?2")
            .and_then(|mut s| s.query_row([sender, key], |r| uint(r, 0)).optional())
            .map_err(backend)
    }

    /// Everything appended, for the journal.
    pub fn into_items(mut self) -> (Vec<Item>, Vec<Slice>) {
        let cursors = self.cursors.into_iter();
        self.items.extend(cursors.map(|((user, device), seq)| Item::Cursor { user, device, seq }));
        (self.items, self.written)
    }
}
