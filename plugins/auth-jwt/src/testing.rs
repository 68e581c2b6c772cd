//! Test helpers: the in-memory store of `chat-core` and a ready-made token service.

use std::sync::Arc;

pub use seed_chat_core::memory::MemoryStore;

use crate::tokens::{Lifetimes, TokenService};

pub const SECRET: &[u8] = &[42u8; 32];
pub const LIFETIMES: Lifetimes = Lifetimes { access_ttl_secs: 900, refresh_ttl_days: 30 };

/// A token service over a fresh store, with the default lifetimes.
pub fn service() -> (Arc<TokenService>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    let tokens = TokenService::new(SECRET, "seed", LIFETIMES, store.clone());
    (Arc::new(tokens), store)
}
