//! What one transaction appends — messages, idempotency keys, inbox entries, cursors —
//! gathered while its calls are applied and written once, at its end.
//!
//! Most of the store's traffic is appends, and a busy transaction holds hundreds. Written
//! call by call they cost a B-tree insert (and an index insert) per row, a head update per
//! entry, a savepoint per call; gathered, each inbox gets one chunk row and one head update
//! per transaction (`chunk.rs`), each device one cursor update, and nothing needs a
//! savepoint: a call only *reads* while it is applied (its checks and the inbox heads), so
//! a call that fails has changed nothing. A failure while writing the gathered rows fails
//! the whole transaction, like a failed commit.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};
use seed_chat_core::{Appended, NewEntry, NewMessage, StoreError};

use crate::{backend, chunk, int, reads, uint};

/// The appends of the transaction being built; borrows the calls it came from.
#[derive(Default)]
pub struct Appends<'a> {
    messages: Vec<&'a NewMessage>,
    /// (chat, id) of `messages`: an id is used once per chat.
    ids: HashSet<(&'a str, u64)>,
    /// (sender, client_msg_id) → message id.
    keys: HashMap<(&'a str, &'a str), u64>,
    inboxes: HashMap<&'a str, NewEntries>,
    /// (user, device) → highest acknowledged seq.
    cursors: HashMap<(&'a str, &'a str), u64>,
}

/// The entries appended to one inbox in this transaction.
struct NewEntries {
    /// The inbox's last seq before this transaction.
    head: u64,
    count: u64,
    chunk: Vec<u8>,
}

impl NewEntries {
    fn push(&mut self, entry: &NewEntry) -> u64 {
        chunk::push(&mut self.chunk, &entry.envelope, entry.skip_device.as_deref());
        self.count += 1;
        self.head + self.count
    }
}

impl<'a> Appends<'a> {
    /// `ChatStore::append_message`, in this transaction.
    pub fn message(
        &mut self,
        conn: &Connection,
        message: &'a NewMessage,
    ) -> Result<Appended, StoreError> {
        let id = i64::try_from(message.id)
            .map_err(|_| StoreError::Backend(format!("message id {} is above 2^63", message.id)))?;
        let key = message.client_msg_id.as_deref().map(|key| (message.sender.as_str(), key));
        if let Some(key) = key
            && let Some(first) = self.first_with_key(conn, key)?
        {
            return Ok(Appended::Duplicate { id: first });
        }
        let chat_id = (message.chat.as_str(), message.id);
        if self.ids.contains(&chat_id) || message_exists(conn, &message.chat, id)? {
            return Err(StoreError::Conflict(format!("message id {}", message.id)));
        }
        let seqs = self.entries(conn, &message.entries)?;
        self.ids.insert(chat_id);
        if let Some(key) = key {
            self.keys.insert(key, message.id);
        }
        self.messages.push(message);
        Ok(Appended::New { seqs })
    }

    /// `ChatStore::append_entries`, in this transaction: each entry takes the next seq of
    /// its inbox.
    pub fn entries(
        &mut self,
        conn: &Connection,
        entries: &'a [NewEntry],
    ) -> Result<Vec<u64>, StoreError> {
        // Every head is read before any entry is taken, so a failed read takes nothing.
        for entry in entries {
            if !self.inboxes.contains_key(entry.user_id.as_str()) {
                let head = reads::last_seq(conn, &entry.user_id).map_err(backend)?;
                let new = NewEntries { head, count: 0, chunk: Vec::new() };
                self.inboxes.insert(&entry.user_id, new);
            }
        }
        entries
            .iter()
            .map(|entry| match self.inboxes.get_mut(entry.user_id.as_str()) {
                Some(inbox) => Ok(inbox.push(entry)),
                None => Err(StoreError::Backend(format!("no head for {}", entry.user_id))),
            })
            .collect()
    }

    /// `ChatStore::set_cursor`, in this transaction (the highest seq wins).
    pub fn cursor(&mut self, user_id: &'a str, device_id: &'a str, seq: u64) {
        let cursor = self.cursors.entry((user_id, device_id)).or_default();
        *cursor = (*cursor).max(seq);
    }

    fn first_with_key(
        &self,
        conn: &Connection,
        key: (&str, &str),
    ) -> Result<Option<u64>, StoreError> {
        if let Some(&id) = self.keys.get(&key) {
            return Ok(Some(id));
        }
        conn.prepare_cached("SELECT id FROM sent_keys WHERE sender = ?1 AND client_msg_id = ?2")
            .and_then(|mut s| s.query_row([key.0, key.1], |r| uint(r, 0)).optional())
            .map_err(backend)
    }

    /// Writes everything gathered; `now` (unix ms) is the entries' creation time.
    pub fn write(self, conn: &Connection, now: u64) -> Result<(), StoreError> {
        let mut insert = conn
            .prepare_cached("INSERT INTO messages (chat, id, sender, body) VALUES (?1, ?2, ?3, ?4)")
            .map_err(backend)?;
        for message in &self.messages {
            let body = &message.body[..];
            insert
                .execute(params![message.chat, int(message.id), message.sender, body])
                .map_err(backend)?;
        }
        let mut insert = conn
            .prepare_cached("INSERT INTO sent_keys (sender, client_msg_id, id) VALUES (?1, ?2, ?3)")
            .map_err(backend)?;
        for ((sender, key), id) in &self.keys {
            insert.execute(params![sender, key, int(*id)]).map_err(backend)?;
        }
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO inbox_chunks (user_id, last_seq, first_seq, created_at, entries)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(backend)?;
        let mut head = conn
            .prepare_cached(
                "INSERT INTO inbox_heads (user_id, last_seq) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET last_seq = excluded.last_seq",
            )
            .map_err(backend)?;
        for (user, new) in self.inboxes.iter().filter(|(_, new)| new.count > 0) {
            let last = int(new.head + new.count);
            let first = int(new.head + 1);
            insert.execute(params![user, last, first, int(now), new.chunk]).map_err(backend)?;
            head.execute(params![user, last]).map_err(backend)?;
        }
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO cursors (user_id, device_id, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET seq = excluded.seq
                 WHERE excluded.seq > cursors.seq",
            )
            .map_err(backend)?;
        for ((user, device), seq) in &self.cursors {
            upsert.execute(params![user, device, int(*seq)]).map_err(backend)?;
        }
        Ok(())
    }
}

fn message_exists(conn: &Connection, chat: &str, id: i64) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE chat = ?1 AND id = ?2)")
        .and_then(|mut s| s.query_row(params![chat, id], |r| r.get(0)))
        .map_err(backend)
}
