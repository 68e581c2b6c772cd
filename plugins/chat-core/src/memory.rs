//! An in-memory [`ChatStore`]: a complete, simple implementation of the contract (one lock
//! over plain maps), for the plugins' tests. It passes the conformance suite like any
//! backend, so tests that use it test against the real contract; `fail(true)` makes every
//! call a backend error, for tests of failure paths. Not for production: nothing is durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{
    Appended, ChatStore, InboxEntry, NewEntry, NewMessage, RefreshToken, StoreError, StoredMessage,
    UserRecord, Watermark, now_millis,
};

#[derive(Default)]
struct State {
    users: HashMap<String, UserRecord>,
    refresh: HashMap<[u8; 32], RefreshToken>,
    revoked: HashMap<(String, String), u64>,
    /// (user, blocked)
    blocks: BTreeSet<(String, String)>,
    /// chat → id → message
    messages: HashMap<String, BTreeMap<u64, StoredMessage>>,
    /// (sender, client_msg_id) → id
    client_ids: HashMap<(String, String), u64>,
    inboxes: HashMap<String, BTreeMap<u64, InboxEntry>>,
    last_seq: HashMap<String, u64>,
    cursors: HashMap<(String, String), u64>,
    watermarks: HashMap<(Watermark, String, String), u64>,
}

impl State {
    fn push(&mut self, entry: NewEntry, now: u64) -> u64 {
        let seq = self.last_seq.entry(entry.user_id.clone()).or_default();
        *seq += 1;
        let seq = *seq;
        let stored = InboxEntry {
            seq,
            envelope: entry.envelope,
            skip_device: entry.skip_device,
            created_at: now,
        };
        self.inboxes.entry(entry.user_id).or_default().insert(seq, stored);
        seq
    }
}

/// An in-memory [`ChatStore`]; `fail(true)` makes every call a backend error.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    failing: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    /// A store with these users (password hash "x").
    pub fn with_users(users: &[&str]) -> Arc<MemoryStore> {
        let store = MemoryStore::new();
        {
            let mut state = store.state.lock();
            for user in users {
                state.users.insert(
                    (*user).to_owned(),
                    UserRecord {
                        user_id: (*user).to_owned(),
                        password_hash: "x".to_owned(),
                        created_at: 0,
                    },
                );
            }
        }
        store
    }

    pub fn fail(&self, on: bool) {
        self.failing.store(on, Relaxed);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Relaxed) {
            Err(StoreError::Backend("failing on purpose".into()))
        } else {
            Ok(())
        }
    }

    /// Every entry of a user's inbox, in seq order.
    pub fn entries(&self, user: &str) -> Vec<InboxEntry> {
        self.state.lock().inboxes.get(user).map_or_else(Vec::new, |i| i.values().cloned().collect())
    }

    /// Every message of a chat, oldest first.
    pub fn messages(&self, chat: &str) -> Vec<StoredMessage> {
        self.state
            .lock()
            .messages
            .get(chat)
            .map_or_else(Vec::new, |m| m.values().cloned().collect())
    }

    pub fn cursor_of(&self, user: &str, device: &str) -> u64 {
        self.state.lock().cursors.get(&(user.to_owned(), device.to_owned())).copied().unwrap_or(0)
    }

    /// Adds a message as if an earlier run stored it (for history tests).
    pub fn put_message(&self, chat: &str, message: StoredMessage) {
        self.state.lock().messages.entry(chat.to_owned()).or_default().insert(message.id, message);
    }
}

#[async_trait]
impl ChatStore for MemoryStore {
    async fn create_user(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        if state.users.contains_key(user_id) {
            return Err(StoreError::Conflict(user_id.to_owned()));
        }
        let record = UserRecord {
            user_id: user_id.to_owned(),
            password_hash: password_hash.to_owned(),
            created_at: now_millis(),
        };
        state.users.insert(user_id.to_owned(), record);
        Ok(())
    }

    async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.check()?;
        Ok(self.state.lock().users.get(user_id).cloned())
    }

    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        self.check()?;
        self.state.lock().refresh.insert(token.token_hash, token);
        Ok(())
    }

    async fn take_refresh_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshToken>, StoreError> {
        self.check()?;
        Ok(self.state.lock().refresh.remove(token_hash))
    }

    async fn revoke_device(
        &self,
        user_id: &str,
        device_id: &str,
        at: u64,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        state.refresh.retain(|_, t| !(t.user_id == user_id && t.device_id == device_id));
        state.revoked.insert((user_id.to_owned(), device_id.to_owned()), at);
        Ok(())
    }

    async fn device_revoked_at(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.check()?;
        Ok(self.state.lock().revoked.get(&(user_id.to_owned(), device_id.to_owned())).copied())
    }

    async fn set_blocked(&self, user: &str, blocked: &str, on: bool) -> Result<(), StoreError> {
        self.check()?;
        let key = (user.to_owned(), blocked.to_owned());
        let mut state = self.state.lock();
        if on {
            state.blocks.insert(key);
        } else {
            state.blocks.remove(&key);
        }
        Ok(())
    }

    async fn is_blocked(&self, user: &str, by: &str) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self.state.lock().blocks.contains(&(by.to_owned(), user.to_owned())))
    }

    async fn blocked_by(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let state = self.state.lock();
        Ok(state.blocks.iter().filter(|(u, _)| u == user).map(|(_, b)| b.clone()).collect())
    }

    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        if let Some(key) = &message.client_msg_id {
            let key = (message.sender.clone(), key.clone());
            if let Some(id) = state.client_ids.get(&key) {
                return Ok(Appended::Duplicate { id: *id });
            }
            state.client_ids.insert(key, message.id);
        }
        let stored =
            StoredMessage { id: message.id, sender: message.sender.clone(), body: message.body };
        state.messages.entry(message.chat).or_default().insert(message.id, stored);
        let now = now_millis();
        let seqs = message.entries.into_iter().map(|e| state.push(e, now)).collect();
        Ok(Appended::New { seqs })
    }

    async fn append_entries(&self, entries: Vec<NewEntry>) -> Result<Vec<u64>, StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        let now = now_millis();
        Ok(entries.into_iter().map(|e| state.push(e, now)).collect())
    }

    async fn inbox(
        &self,
        user_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        self.check()?;
        let state = self.state.lock();
        Ok(state.inboxes.get(user_id).map_or_else(Vec::new, |inbox| {
            inbox.range(after.saturating_add(1)..).take(limit).map(|(_, e)| e.clone()).collect()
        }))
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.state.lock().last_seq.get(user_id).copied().unwrap_or(0))
    }

    async fn cursor(&self, user_id: &str, device_id: &str) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.cursor_of(user_id, device_id))
    }

    async fn set_cursor(&self, user_id: &str, device_id: &str, seq: u64) -> Result<(), StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        let cursor = state.cursors.entry((user_id.to_owned(), device_id.to_owned())).or_default();
        *cursor = (*cursor).max(seq);
        Ok(())
    }

    async fn history(
        &self,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.check()?;
        let state = self.state.lock();
        Ok(state.messages.get(chat).map_or_else(Vec::new, |messages| {
            messages
                .range(..before.unwrap_or(u64::MAX))
                .rev()
                .take(limit)
                .map(|(_, m)| m.clone())
                .collect()
        }))
    }

    async fn advance_watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
        up_to: u64,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        let mark = state.watermarks.entry((kind, reader.to_owned(), chat.to_owned())).or_default();
        let moved = up_to > *mark;
        *mark = (*mark).max(up_to);
        Ok(moved)
    }

    async fn watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
    ) -> Result<u64, StoreError> {
        self.check()?;
        let state = self.state.lock();
        Ok(state.watermarks.get(&(kind, reader.to_owned(), chat.to_owned())).copied().unwrap_or(0))
    }

    async fn expire_entries(&self, before: u64) -> Result<u64, StoreError> {
        self.check()?;
        let mut state = self.state.lock();
        let mut expired = 0;
        for inbox in state.inboxes.values_mut() {
            let old = inbox.len();
            inbox.retain(|_, e| e.created_at >= before);
            expired += (old - inbox.len()) as u64;
        }
        Ok(expired)
    }
}

impl MemoryStore {
    pub fn has_refresh_hash(&self, hash: &[u8; 32]) -> bool {
        self.state.lock().refresh.contains_key(hash)
    }

    pub fn refresh_tokens_of(&self, user: &str, device: &str) -> usize {
        self.state
            .lock()
            .refresh
            .values()
            .filter(|t| t.user_id == user && t.device_id == device)
            .count()
    }

    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.state.lock().users.get(user).map(|u| u.password_hash.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(|| async { MemoryStore::new() as Arc<dyn ChatStore> }).await;
    }
}
