//! Test doubles: an in-memory [`ChatStore`] with real accounts, refresh tokens and
//! revocations (the rest is not needed by this plugin), and ready-made services.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use seed_chat_core::{
    Appended, ChatStore, InboxEntry, NewEntry, NewMessage, RefreshToken, StoreError, StoredMessage,
    UserRecord, Watermark, now_millis,
};

use crate::tokens::{Lifetimes, TokenService};

pub const SECRET: &[u8] = &[42u8; 32];
pub const LIFETIMES: Lifetimes = Lifetimes { access_ttl_secs: 900, refresh_ttl_days: 30 };

#[derive(Default)]
struct State {
    users: HashMap<String, UserRecord>,
    refresh: HashMap<[u8; 32], RefreshToken>,
    revoked: HashMap<(String, String), u64>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn has_refresh_hash(&self, hash: &[u8; 32]) -> bool {
        self.state().refresh.contains_key(hash)
    }

    pub fn refresh_tokens_of(&self, user: &str, device: &str) -> usize {
        self.state().refresh.values().filter(|t| t.user_id == user && t.device_id == device).count()
    }

    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.state().users.get(user).map(|u| u.password_hash.clone())
    }
}

/// A token service over a fresh store, with the default lifetimes.
pub fn service() -> (Arc<TokenService>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    let tokens = TokenService::new(SECRET, "seed", LIFETIMES, store.clone());
    (Arc::new(tokens), store)
}

#[async_trait]
impl ChatStore for MemoryStore {
    async fn create_user(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.users.contains_key(user_id) {
            return Err(StoreError::Conflict(format!("user {user_id}")));
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
        Ok(self.state().users.get(user_id).cloned())
    }

    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        self.state().refresh.insert(token.token_hash, token);
        Ok(())
    }

    async fn take_refresh_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshToken>, StoreError> {
        Ok(self.state().refresh.remove(token_hash))
    }

    async fn revoke_device(
        &self,
        user_id: &str,
        device_id: &str,
        at: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        state.refresh.retain(|_, t| !(t.user_id == user_id && t.device_id == device_id));
        state.revoked.insert((user_id.to_owned(), device_id.to_owned()), at);
        Ok(())
    }

    async fn device_revoked_at(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.state().revoked.get(&(user_id.to_owned(), device_id.to_owned())).copied())
    }

    async fn set_blocked(&self, _: &str, _: &str, _: bool) -> Result<(), StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn is_blocked(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn blocked_by(&self, _: &str) -> Result<Vec<String>, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn append_message(&self, _: NewMessage) -> Result<Appended, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn append_entries(&self, _: Vec<NewEntry>) -> Result<Vec<u64>, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn inbox(&self, _: &str, _: u64, _: usize) -> Result<Vec<InboxEntry>, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn last_seq(&self, _: &str) -> Result<u64, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn cursor(&self, _: &str, _: &str) -> Result<u64, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn set_cursor(&self, _: &str, _: &str, _: u64) -> Result<(), StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn history(
        &self,
        _: &str,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn advance_watermark(
        &self,
        _: Watermark,
        _: &str,
        _: &str,
        _: u64,
    ) -> Result<bool, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn watermark(&self, _: Watermark, _: &str, _: &str) -> Result<u64, StoreError> {
        unimplemented!("not used by auth-jwt")
    }

    async fn expire_entries(&self, _: u64) -> Result<u64, StoreError> {
        unimplemented!("not used by auth-jwt")
    }
}
