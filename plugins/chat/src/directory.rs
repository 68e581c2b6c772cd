//! What the publish path asks about users on every message — does the peer exist, has the
//! peer blocked the sender — answered from memory.
//!
//! Users are never deleted, so a user once seen exists for good; a miss asks the store. Each
//! user's block list is loaded from the store once and then kept in step by the blocks API
//! (`api.rs`), which is the only writer of blocks. (With several nodes sharing a store, block
//! changes would need to reach the other nodes' caches; the embedded store has one node.)

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use seed_chat_core::{ChatStore, StoreError};

#[derive(Default)]
pub(crate) struct Directory {
    users: RwLock<HashSet<String>>,
    /// Who each user has blocked, for users whose list was loaded.
    blocks: RwLock<HashMap<String, Arc<HashSet<String>>>>,
}

impl Directory {
    pub async fn user_exists(&self, store: &dyn ChatStore, user: &str) -> Result<bool, StoreError> {
        if self.users.read().contains(user) {
            return Ok(true);
        }
        let exists = store.user(user).await?.is_some();
        if exists {
            self.users.write().insert(user.to_owned());
        }
        Ok(exists)
    }

    /// Whether `by` has blocked `user`.
    pub async fn is_blocked(
        &self,
        store: &dyn ChatStore,
        user: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        if let Some(list) = self.blocks.read().get(by) {
            return Ok(list.contains(user));
        }
        let list: HashSet<String> = store.blocked_by(by).await?.into_iter().collect();
        let blocked = list.contains(user);
        // A concurrent change through the API may have loaded the list meanwhile: keep it.
        self.blocks.write().entry(by.to_owned()).or_insert_with(|| Arc::new(list));
        Ok(blocked)
    }

    /// `by` blocked (`on`) or unblocked `user`; call after the store has it.
    pub fn set_blocked(&self, by: &str, user: &str, on: bool) {
        let mut blocks = self.blocks.write();
        // Only lists already loaded are updated; others load fresh from the store.
        if let Some(list) = blocks.get_mut(by) {
            let list = Arc::make_mut(list);
            if on {
                list.insert(user.to_owned());
            } else {
                list.remove(user);
            }
        }
    }
}
