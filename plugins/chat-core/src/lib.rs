//! What the chat plugins share, so none depends on another's internals:
//!
//! * [`ChatStore`] (`store.rs`): everything the chat keeps — accounts, refresh tokens,
//!   blocks, messages, per-user inboxes, device cursors, receipt watermarks — behind one
//!   trait, implemented by `store-sqlite` (embedded) and future backends (Cassandra). Its
//!   behaviour is pinned by `conformance`, a suite every backend runs.
//! * [`AccessTokens`] (`auth.rs`): verification of bearer tokens, provided by `auth-jwt` and
//!   used by every HTTP API that needs a signed-in user.
//! * [`ApiError`] (`api.rs`): the JSON error body every HTTP call answers with.
//!
//! Plugins find each other's services through the broker's `PluginContext`: the store plugin
//! provides an `Arc<dyn ChatStore>`, `auth-jwt` an `Arc<dyn AccessTokens>`.

mod api;
mod auth;
pub mod conformance;
pub mod memory;
mod store;

pub use api::{ApiError, Bearer};
pub use auth::{AccessTokens, AuthError, Identity};
pub use store::*;

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
