//! Appends that are durable in the journal (`journal.rs`, `segments.rs`) but not yet in
//! their own tables.
//!
//! They wait here, grouped by where they will go — an inbox, a chat, a device's cursor —
//! and once a group's oldest item is [`MAX_AGE_MS`] old the writer writes it out, a slice
//! at a time, in transactions of their own while no call waits: an inbox's entries of a
//! second become a few chunk rows, a chat's messages land on the same few pages. When too
//! many items wait, whole groups go out with the calls' own transactions instead. A journal
//! segment is removed once none of its records' items wait any more.
//!
//! Reads see both: the readers (`reads.rs`) copy what waits here first and then read the
//! tables, so an item written out meanwhile is found in the tables (and merged once). The
//! writer thread is the only one that changes this state, after its transaction commits.

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashSet};

use bytes::Bytes;
use rusqlite::{Connection, params};
use seed_chat_core::{InboxEntry, StoreError, StoredMessage};

use crate::journal::{self, Item};
use crate::{backend, chunk, int, reads};

/// How long an item waits at most before its group is written out.
const MAX_AGE_MS: u64 = 1_000;
/// Items waiting beyond which the oldest groups are written out early.
const MAX_ITEMS: usize = 100_000;
/// Items one transaction writes out at least when more than [`MAX_ITEMS`] wait: with twice
/// what the transaction appends, writing out keeps pace, and groups that came due together
/// are spread over several transactions instead of stalling one (at least one group is
/// always written).
const MIN_FLUSH: usize = 256;
/// Items written out per transaction between calls. `seed-bench chat`, 5,000 msg/s: a whole
/// second of a chat (300+ messages, their idempotency keys scattered over the key table)
/// took 1.4–2.3 ms, and as every group came due in the same second, calls queued behind
/// them for 50–100 ms.
const IDLE_SLICE: usize = 64;

/// The waiting appends, shared by the writer (the only one to change them) and the readers.
pub type Waiting = std::sync::RwLock<Unflushed>;

pub fn read(waiting: &Waiting) -> std::sync::RwLockReadGuard<'_, Unflushed> {
    waiting.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn write(waiting: &Waiting) -> std::sync::RwLockWriteGuard<'_, Unflushed> {
    waiting.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where an item goes when it is written out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    Inbox(String),
    Chat(String),
    Cursor(String, String),
}

/// What the writer does between calls ([`Unflushed::idle`]).
pub enum Idle {
    WriteOut(Slice),
    /// Nothing is old enough yet; the oldest group is after this long.
    Until(std::time::Duration),
    /// Nothing waits.
    Nothing,
}

/// The oldest `items` of a group, written out in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub group: Group,
    pub items: usize,
}

struct Entry {
    seq: u64,
    envelope: Bytes,
    skip_device: Option<String>,
    created_at: u64,
    record: u64,
}

struct Message {
    sender: String,
    body: Bytes,
    key: Option<String>,
    record: u64,
}

struct Cursor {
    seq: u64,
    record: u64,
}

#[derive(Default)]
pub struct Unflushed {
    inboxes: HashMap<String, VecDeque<Entry>>,
    chats: HashMap<String, BTreeMap<u64, Message>>,
    /// (sender, client_msg_id) → message id, for the messages in `chats`.
    keys: HashMap<(String, String), u64>,
    cursors: HashMap<(String, String), Cursor>,
    /// Every group with items, in the order it got its oldest one, with that item's time.
    queue: VecDeque<(Group, u64)>,
    /// Journal record → how many of its items wait here.
    live: BTreeMap<u64, usize>,
    /// The newest journal record added.
    last_record: u64,
    items: usize,
    /// The highest message id written to the `messages` table.
    max_stored_id: u64,
    /// The lowest seq an inbox may take (`floor.rs`).
    seq_floor: u64,
}

impl Unflushed {
    /// The appends of journal record `record`, written at `now` (unix ms).
    pub fn add(&mut self, items: Vec<Item>, record: u64, now: u64) {
        self.last_record = record;
        for item in items {
            match item {
                Item::Entry { user, seq, envelope, skip_device, created_at } => {
                    let inbox = match self.inboxes.get_mut(&user) {
                        Some(inbox) => inbox,
                        None => {
                            self.queue.push_back((Group::Inbox(user.clone()), now));
                            self.inboxes.entry(user).or_default()
                        }
                    };
                    inbox.push_back(Entry { seq, envelope, skip_device, created_at, record });
                }
                Item::Message { chat, id, sender, body, key } => {
                    let messages = match self.chats.get_mut(&chat) {
                        Some(messages) => messages,
                        None => {
                            self.queue.push_back((Group::Chat(chat.clone()), now));
                            self.chats.entry(chat).or_default()
                        }
                    };
                    if let Some(key) = &key {
                        self.keys.insert((sender.clone(), key.clone()), id);
                    }
                    if let Some(replaced) =
                        messages.insert(id, Message { sender, body, key, record })
                    {
                        // Only a recovery reads the same message twice; keep the count right.
                        self.items -= 1;
                        release(&mut self.live, replaced.record);
                    }
                }
                Item::Cursor { user, device, seq } => {
                    match self.cursors.get_mut(&(user.clone(), device.clone())) {
                        Some(cursor) if cursor.seq >= seq => continue,
                        Some(cursor) => {
                            release(&mut self.live, cursor.record);
                            self.items -= 1;
                            *cursor = Cursor { seq, record };
                        }
                        None => {
                            self.queue
                                .push_back((Group::Cursor(user.clone(), device.clone()), now));
                            self.cursors.insert((user, device), Cursor { seq, record });
                        }
                    }
                }
            }
            self.items += 1;
            *self.live.entry(record).or_default() += 1;
        }
    }

    /// Journal records below this one hold nothing that waits here.
    pub fn first_live_record(&self) -> u64 {
        self.live.first_key_value().map_or(self.last_record + 1, |(&record, _)| record)
    }

    /// What a transaction that appends `incoming` items must write out besides, leaving out
    /// the groups in `done`: only when more than [`MAX_ITEMS`] wait, whole groups, oldest
    /// first. What is merely old is written out between calls ([`Unflushed::idle`]).
    pub fn forced(&self, incoming: usize, done: &[Slice]) -> Vec<Slice> {
        let budget = MIN_FLUSH.max(2 * incoming);
        let mut waiting = self.items;
        let mut due = Vec::new();
        let mut flushing = 0;
        for (group, _) in &self.queue {
            if waiting <= MAX_ITEMS || (flushing >= budget && !due.is_empty()) {
                break;
            }
            if done.iter().any(|slice| slice.group == *group) {
                continue;
            }
            let items = self.count(group);
            waiting -= items;
            flushing += items;
            due.push(Slice { group: group.clone(), items });
        }
        due
    }

    /// What the writer does while no call waits: write out the oldest [`IDLE_SLICE`] items
    /// of the oldest group once that group is [`MAX_AGE_MS`] old, or wait until it is. A
    /// call that comes meanwhile waits for one small transaction, not for a second's worth
    /// of a chat.
    pub fn idle(&self, now: u64) -> Idle {
        let Some((group, since)) = self.queue.front() else { return Idle::Nothing };
        match since.saturating_add(MAX_AGE_MS).checked_sub(now) {
            Some(wait) if wait > 0 => Idle::Until(std::time::Duration::from_millis(wait)),
            _ => Idle::WriteOut(Slice {
                group: group.clone(),
                items: self.count(group).min(IDLE_SLICE),
            }),
        }
    }

    /// Every inbox, whole (expiry writes them all out before deleting old entries).
    pub fn inbox_groups(&self) -> Vec<Slice> {
        let inboxes = self.inboxes.iter();
        inboxes
            .map(|(user, e)| Slice { group: Group::Inbox(user.clone()), items: e.len() })
            .collect()
    }

    fn count(&self, group: &Group) -> usize {
        match group {
            Group::Inbox(user) => self.inboxes.get(user).map_or(0, VecDeque::len),
            Group::Chat(chat) => self.chats.get(chat).map_or(0, BTreeMap::len),
            Group::Cursor(..) => 1,
        }
    }

    /// Writes `slices` to their tables, in the caller's transaction.
    pub fn write(&self, conn: &Connection, slices: &[Slice]) -> Result<(), StoreError> {
        for Slice { group, items } in slices {
            match group {
                Group::Inbox(user) => {
                    if let Some(entries) = self.inboxes.get(user) {
                        write_entries(conn, user, entries.iter().take(*items))?;
                    }
                }
                Group::Chat(chat) => {
                    if let Some(messages) = self.chats.get(chat) {
                        write_messages(conn, chat, messages.iter().take(*items))?;
                    }
                }
                Group::Cursor(user, device) => {
                    if let Some(cursor) = self.cursors.get(&(user.clone(), device.clone())) {
                        conn.prepare_cached(
                            "INSERT INTO cursors (user_id, device_id, seq) VALUES (?1, ?2, ?3)
                             ON CONFLICT (user_id, device_id) DO UPDATE SET seq = excluded.seq
                             WHERE excluded.seq > cursors.seq",
                        )
                        .and_then(|mut s| s.execute(params![user, device, int(cursor.seq)]))
                        .map_err(backend)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `slices` were written out and committed: they no longer wait here.
    pub fn forget(&mut self, slices: &[Slice]) {
        let mut emptied = HashSet::default();
        for Slice { group, items } in slices {
            let (records, empty): (Vec<u64>, bool) = match group {
                Group::Inbox(user) => {
                    let Some(entries) = self.inboxes.get_mut(user) else { continue };
                    let n = (*items).min(entries.len());
                    (entries.drain(..n).map(|e| e.record).collect(), entries.is_empty())
                }
                Group::Chat(chat) => {
                    let Some(messages) = self.chats.get_mut(chat) else { continue };
                    let mut records = Vec::with_capacity(*items);
                    for _ in 0..*items {
                        let Some((id, message)) = messages.pop_first() else { break };
                        self.max_stored_id = self.max_stored_id.max(id);
                        if let Some(key) = message.key {
                            self.keys.remove(&(message.sender, key));
                        }
                        records.push(message.record);
                    }
                    (records, messages.is_empty())
                }
                Group::Cursor(user, device) => {
                    let Some(cursor) = self.cursors.remove(&(user.clone(), device.clone())) else {
                        continue;
                    };
                    (vec![cursor.record], true)
                }
            };
            if empty {
                match group {
                    Group::Inbox(user) => drop(self.inboxes.remove(user)),
                    Group::Chat(chat) => drop(self.chats.remove(chat)),
                    Group::Cursor(..) => {}
                }
                emptied.insert(group);
            }
            self.items -= records.len();
            for record in records {
                release(&mut self.live, record);
            }
        }
        if !emptied.is_empty() {
            self.queue.retain(|(group, _)| !emptied.contains(group));
        }
    }

    /// The lowest seq an inbox may take from now on (`floor.rs`).
    pub fn seq_floor(&self) -> u64 {
        self.seq_floor
    }

    pub fn set_seq_floor(&mut self, floor: u64) {
        self.seq_floor = floor;
    }

    /// The highest seq waiting for any inbox.
    pub fn highest_seq(&self) -> u64 {
        self.inboxes.values().filter_map(|inbox| inbox.back()).map(|e| e.seq).max().unwrap_or(0)
    }

    /// The highest seq waiting for `user`'s inbox.
    pub fn head(&self, user: &str) -> Option<u64> {
        self.inboxes.get(user)?.back().map(|e| e.seq)
    }

    /// `user`'s waiting entries with seq > `after`, at most `limit`.
    pub fn inbox(&self, user: &str, after: u64, limit: usize) -> Vec<InboxEntry> {
        let Some(entries) = self.inboxes.get(user) else { return Vec::new() };
        let start = entries.partition_point(|e| e.seq <= after);
        let entries = entries.range(start..).take(limit);
        entries
            .map(|e| InboxEntry {
                seq: e.seq,
                envelope: e.envelope.clone(),
                skip_device: e.skip_device.clone(),
                created_at: e.created_at,
            })
            .collect()
    }

    pub fn cursor(&self, user: &str, device: &str) -> Option<u64> {
        self.cursors.get(&(user.to_owned(), device.to_owned())).map(|c| c.seq)
    }

    /// The message a sender's idempotency key names, if it waits here.
    pub fn key(&self, sender: &str, key: &str) -> Option<u64> {
        self.keys.get(&(sender.to_owned(), key.to_owned())).copied()
    }

    pub fn has_message(&self, chat: &str, id: u64) -> bool {
        self.chats.get(chat).is_some_and(|messages| messages.contains_key(&id))
    }

    /// Whether a message with this id may be in the `messages` table (ids above every
    /// stored one are not: the store checks for reuse without a lookup).
    pub fn may_be_stored(&self, id: u64) -> bool {
        id <= self.max_stored_id
    }

    /// A chat's waiting messages with id < `before`, newest first, at most `limit`.
    pub fn history(&self, chat: &str, before: u64, limit: usize) -> Vec<StoredMessage> {
        let Some(messages) = self.chats.get(chat) else { return Vec::new() };
        let newest_first = messages.range(..before).rev().take(limit);
        newest_first
            .map(|(&id, m)| StoredMessage { id, sender: m.sender.clone(), body: m.body.clone() })
            .collect()
    }

    /// Reads the journal back after a restart: the rows of the `journal` table, where
    /// builds before the journal file kept it, then the journal file's `records`
    /// (`segments.rs`), numbered here from 1 in that order. Entries already written out
    /// (at or below their inbox's stored head) are left out; the other items are
    /// idempotent.
    pub fn recover(
        conn: &Connection,
        records: Vec<Bytes>,
        now: u64,
    ) -> Result<Unflushed, StoreError> {
        let max_stored_id = conn
            .query_row("SELECT value FROM store_state WHERE key = 'max_message_id'", [], |r| {
                crate::uint(r, 0)
            })
            .map_err(backend)?;
        let mut unflushed = Unflushed { max_stored_id, ..Unflushed::default() };
        let rows = conn
            .prepare("SELECT id, items FROM journal ORDER BY id")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(backend)?;
        let rows = rows.into_iter().map(|(id, blob)| (format!("journal row {id}"), blob.into()));
        let records = records.into_iter().zip(1..).map(|(b, n)| (format!("journal record {n}"), b));
        let mut heads: HashMap<String, u64> = HashMap::default();
        for ((what, blob), number) in rows.chain(records).zip(1..) {
            let items =
                journal::decode(blob).map_err(|e| StoreError::Backend(format!("{what}: {e}")))?;
            let mut waiting = Vec::with_capacity(items.len());
            for item in items {
                if let Item::Entry { user, seq, .. } = &item {
                    let head = match heads.get(user) {
                        Some(&head) => head,
                        None => {
                            let head = reads::last_seq(conn, user).map_err(backend)?;
                            *heads.entry(user.clone()).or_default() = head;
                            head
                        }
                    };
                    if *seq <= head {
                        continue;
                    }
                }
                waiting.push(item);
            }
            unflushed.add(waiting, number, now);
        }
        Ok(unflushed)
    }

    /// Writes every waiting item to its table and empties the `journal` table, in one
    /// transaction. Then nothing waits, and journal records are numbered from 1 again.
    pub fn write_out_all(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let all: Vec<Slice> = self
            .queue
            .iter()
            .map(|(group, _)| Slice { group: group.clone(), items: self.count(group) })
            .collect();
        let sql = |sql: &str| conn.execute_batch(sql).map_err(backend);
        sql("BEGIN IMMEDIATE")?;
        let written = self.write(conn, &all).and_then(|()| sql("DELETE FROM journal; COMMIT"));
        if written.is_err() {
            let _ = sql("ROLLBACK");
        }
        written?;
        self.forget(&all);
        self.last_record = 0;
        Ok(())
    }
}

fn release(live: &mut BTreeMap<u64, usize>, record: u64) {
    if let Some(count) = live.get_mut(&record) {
        *count -= 1;
        if *count == 0 {
            live.remove(&record);
        }
    }
}

/// An inbox's waiting entries as chunk rows (one per run of consecutive seqs, which is all
/// of them but after damage) and its new stored head.
fn write_entries<'a>(
    conn: &Connection,
    user: &str,
    entries: impl Iterator<Item = &'a Entry>,
) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO inbox_chunks (user_id, last_seq, first_seq, created_at, entries)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(backend)?;
    let mut run: Vec<&Entry> = Vec::new();
    let mut flush_run = |run: &mut Vec<&Entry>| -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else { return Ok(()) };
        let mut blob = Vec::new();
        for entry in run.iter() {
            chunk::push(&mut blob, &entry.envelope, entry.skip_device.as_deref());
        }
        // A chunk expires when its newest entry does.
        let created_at = run.iter().map(|e| e.created_at).max().unwrap_or_default();
        insert
            .execute(params![user, int(last.seq), int(first.seq), int(created_at), blob])
            .map_err(backend)?;
        run.clear();
        Ok(())
    };
    let mut head = None;
    for entry in entries {
        if run.last().is_some_and(|last| last.seq + 1 != entry.seq) {
            flush_run(&mut run)?;
        }
        head = Some(entry.seq);
        run.push(entry);
    }
    flush_run(&mut run)?;
    if let Some(last) = head {
        conn.prepare_cached(
            "INSERT INTO inbox_heads (user_id, last_seq) VALUES (?1, ?2)
             ON CONFLICT (user_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )
        .and_then(|mut s| s.execute(params![user, int(last)]))
        .map_err(backend)?;
    }
    Ok(())
}

fn write_messages<'a>(
    conn: &Connection,
    chat: &str,
    messages: impl Iterator<Item = (&'a u64, &'a Message)>,
) -> Result<(), StoreError> {
    let messages: Vec<(u64, &Message)> = messages.map(|(&id, m)| (id, m)).collect();
    let outgoing: Vec<crate::messages::Outgoing> =
        messages.iter().map(|&(id, m)| (id, m.sender.as_str(), &m.body[..])).collect();
    crate::messages::write(conn, chat, &outgoing)?;
    let mut key = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO sent_keys (sender, client_msg_id, id) VALUES (?1, ?2, ?3)",
        )
        .map_err(backend)?;
    for &(id, message) in &messages {
        if let Some(client_msg_id) = &message.key {
            key.execute(params![message.sender, client_msg_id, int(id)]).map_err(backend)?;
        }
    }
    if let Some(&(newest, _)) = messages.last() {
        conn.prepare_cached(
            "UPDATE store_state SET value = max(value, ?1) WHERE key = 'max_message_id'",
        )
        .and_then(|mut s| s.execute([int(newest)]))
        .map_err(backend)?;
    }
    Ok(())
}
