//! Test doubles for the chat plugin's services: the in-memory `ChatStore` of `chat-core`
//! and an `AccessTokens` that knows a fixed set of tokens. Shared by the unit tests
//! (`src/tests.rs`) and the end-to-end tests (`tests/`).

use std::sync::Arc;

use async_trait::async_trait;
use seed_chat_core::{AccessTokens, AuthError, Identity};

pub use seed_chat_core::memory::MemoryStore as MemStore;

/// Access tokens that are the string `token-{user}-{device}`.
pub struct StaticTokens;

impl StaticTokens {
    pub fn new() -> Arc<StaticTokens> {
        Arc::new(StaticTokens)
    }

    pub fn token(user: &str, device: &str) -> String {
        format!("token-{user}-{device}")
    }
}

#[async_trait]
impl AccessTokens for StaticTokens {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let rest = token.strip_prefix("token-").ok_or(AuthError::Invalid)?;
        let (user, device) = rest.split_once('-').ok_or(AuthError::Invalid)?;
        Ok(Identity { user_id: user.to_owned(), device_id: device.to_owned() })
    }
}
