//! `chat`: direct messages on MQTT with durable inboxes (DESIGN.md, "The chat protocol on
//! MQTT").
//!
//! A message's way through this crate, in files:
//!
//! * `publish.rs` — `on_publish` for `dm/{peer}`, `dm/{peer}/text` and `sync/{me}`: checks the
//!   sender, stamps a server id (`ids.rs`) and `from`, rate-limits (`rate.rs`) and stores the
//!   message with its inbox entries *before* the sender's PUBACK (PUBACK = stored).
//! * `delivery.rs` — one pump per connected device subscribed to `inbox/{me}`: reads the
//!   inbox from the device's cursor and hands each entry to the broker as a QoS 1 PUBLISH
//!   (`envelope.rs` builds the bytes). The inbox is the truth; MQTT sessions are transport.
//! * `receipts.rs` — a device's PUBACK moves its cursor and sends the sender a DELIVERED
//!   receipt; a `read` sends a READ receipt.
//! * `api.rs` — HTTP: history and blocks.
//!
//! Groups (`g/...`) are not served yet: publishes there are refused with "topic name
//! invalid".
//!
//! Configured under `[plugins.chat]`; needs the `ChatStore` (a store plugin) and the
//! `AccessTokens` (`auth-jwt`) from plugins built before it.

mod api;
mod delivery;
mod directory;
mod envelope;
pub mod ids;
mod publish;
pub mod rate;
mod receipts;

#[cfg(test)]
#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::Deserialize;

use seed_broker::broker::Broker;
use seed_broker::hooks::{ClientInfo, Event, Hook, Outcome, Plugin, PluginContext, PluginError};
use seed_broker::message::Message;
use seed_broker::toml;
use seed_chat_core::{AccessTokens, ChatStore};

use delivery::Inboxes;
use directory::Directory;
use ids::Snowflake;
use rate::{RateLimiter, RateSettings};

/// The name this plugin is configured under (`[plugins.chat]`).
pub const NAME: &str = "chat";

/// Ticks (one a second) between two sweeps of expired inbox entries.
const EXPIRY_EVERY_TICKS: u64 = 3600;
/// Ticks between two prunings of idle rate-limit buckets.
const PRUNE_EVERY_TICKS: u64 = 60;

/// `[plugins.chat]`, without the common hook settings. Everything but `node_id` can be
/// changed by a reload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's part of every message id, 0..=1023; unique per node of a cluster.
    pub node_id: u16,
    /// Inbox entries older than this are deleted, delivered or not.
    pub inbox_ttl_days: u32,
    /// Messages a user may send per second, sustained.
    pub rate_per_second: f64,
    /// Messages a user may send at once after being idle.
    pub rate_burst: u32,
    /// The largest `limit` of a history page.
    pub history_max_limit: usize,
    /// Inbox entries read from the store at once when replaying to a device.
    pub replay_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 0,
            inbox_ttl_days: 30,
            rate_per_second: 20.0,
            rate_burst: 100,
            history_max_limit: 100,
            replay_batch: 256,
        }
    }
}

impl Config {
    pub fn from_table(table: toml::Table) -> Result<Config, PluginError> {
        let config: Config = table.try_into().map_err(PluginError::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), PluginError> {
        let fail = |what: &str| Err(PluginError::new(what));
        if self.node_id > ids::MAX_NODE_ID {
            return fail("node_id must be 0..=1023");
        }
        if self.inbox_ttl_days == 0 {
            return fail("inbox_ttl_days must be at least 1");
        }
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) {
            return fail("rate_per_second must be a positive number");
        }
        if self.rate_burst == 0 {
            return fail("rate_burst must be at least 1");
        }
        if self.history_max_limit == 0 {
            return fail("history_max_limit must be at least 1");
        }
        if self.replay_batch == 0 {
            return fail("replay_batch must be at least 1");
        }
        Ok(())
    }

    fn rate(&self) -> RateSettings {
        RateSettings { per_second: self.rate_per_second, burst: self.rate_burst }
    }
}

/// The chat's shared state: what every hook, pump and HTTP handler works with.
pub(crate) struct Chat {
    store: Arc<dyn ChatStore>,
    tokens: Arc<dyn AccessTokens>,
    config: RwLock<Config>,
    ids: Snowflake,
    rate: RateLimiter,
    broker: OnceLock<Weak<Broker>>,
    inboxes: Inboxes,
    directory: Directory,
    ticks: AtomicU64,
}

impl Chat {
    fn new(
        config: Config,
        store: Arc<dyn ChatStore>,
        tokens: Arc<dyn AccessTokens>,
    ) -> Result<Chat, PluginError> {
        let ids = Snowflake::new(config.node_id)
            .ok_or_else(|| PluginError::new("node_id must be 0..=1023"))?;
        Ok(Chat {
            store,
            tokens,
            rate: RateLimiter::new(config.rate()),
            config: RwLock::new(config),
            ids,
            broker: OnceLock::new(),
            directory: Directory::default(),
            inboxes: Inboxes::default(),
            ticks: AtomicU64::new(0),
        })
    }

    fn config(&self) -> Config {
        self.config.read().clone()
    }

    /// The running broker (None before `attach` or after shutdown).
    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.get().and_then(Weak::upgrade)
    }

    fn tick(self: &Arc<Self>) {
        let ticks = self.ticks.fetch_add(1, Relaxed) + 1;
        if ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
            self.rate.prune(std::time::Instant::now());
        }
        if ticks.is_multiple_of(EXPIRY_EVERY_TICKS) {
            let chat = self.clone();
            tokio::spawn(async move { chat.expire().await });
        }
    }

    async fn expire(&self) {
        let ttl_ms = u64::from(self.config().inbox_ttl_days) * 24 * 3600 * 1000;
        let before = seed_chat_core::now_millis().saturating_sub(ttl_ms);
        match self.store.expire_entries(before).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired old inbox entries"),
            Err(error) => tracing::warn!(%error, "expiring inbox entries failed"),
        }
    }
}

/// The `chat` plugin.
pub struct ChatPlugin {
    chat: Arc<Chat>,
}

impl ChatPlugin {
    pub fn new(
        config: Config,
        store: Arc<dyn ChatStore>,
        tokens: Arc<dyn AccessTokens>,
    ) -> Result<ChatPlugin, PluginError> {
        config.validate()?;
        Ok(ChatPlugin { chat: Arc::new(Chat::new(config, store, tokens)?) })
    }
}

/// Builds the plugin from `[plugins.chat]` (registered by the `seed` binary).
pub fn factory(
    table: toml::Table,
    context: &mut PluginContext,
) -> Result<Arc<dyn Plugin>, PluginError> {
    let config = Config::from_table(table)?;
    let store = context.require::<Arc<dyn ChatStore>>("a chat store (e.g. store-sqlite)")?;
    let tokens = context.require::<Arc<dyn AccessTokens>>("access tokens (auth-jwt)")?;
    Ok(Arc::new(ChatPlugin::new(config, store, tokens)?))
}

#[async_trait]
impl Plugin for ChatPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::OnPublish, Hook::Inline]
    }

    fn reload(&self, table: toml::Table) -> Result<(), PluginError> {
        let config = Config::from_table(table)?;
        let mut current = self.chat.config.write();
        if config.node_id != current.node_id {
            return Err(PluginError::new("node_id cannot change without a restart"));
        }
        self.chat.rate.set(config.rate());
        *current = config;
        Ok(())
    }

    fn attach(&self, broker: &Arc<Broker>) {
        let _ = self.chat.broker.set(Arc::downgrade(broker));
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(api::routes(self.chat.clone()))
    }

    async fn on_publish(
        &self,
        client: &ClientInfo,
        message: &mut Message,
    ) -> Result<Outcome, PluginError> {
        Ok(publish::on_publish(&self.chat, client, message).await)
    }

    /// Inline: a lost acknowledgement would leave a device's pump waiting for it, and a
    /// lost subscription a device without delivery. Every branch only hands work on.
    fn on_event_inline(&self, event: &Event) {
        match event {
            Event::Subscribed { client, filter } => {
                delivery::subscribed(&self.chat, client, filter);
            }
            Event::Disconnected { client, .. } => self.chat.inboxes.disconnected(client),
            Event::Delivered { client_id, message } => {
                delivery::delivered(&self.chat, client_id, message);
            }
            Event::Tick => self.chat.tick(),
            _ => {}
        }
    }
}
