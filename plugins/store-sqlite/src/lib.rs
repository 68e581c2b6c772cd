//! `store-sqlite`: the embedded chat store, for Seed on one machine.
//!
//! Implements [`seed_chat_core::ChatStore`] on one SQLite file (WAL) and offers it to the
//! plugins built after it (the chat plugin) as an `Arc<dyn ChatStore>`. Configured under
//! `[plugins.store-sqlite]` in `seed.toml`:
//!
//! ```toml
//! [plugins.store-sqlite]
//! fsync = true          # answer a write only once it is on disk (default true)
//! path = "chat.db"      # relative to the data directory (default {data_dir}/chat.db)
//! ```
//!
//! Shaped like the broker's own store: one writer thread with group commit (`writer.rs`),
//! the fsync of its commits on a thread of its own (`durable.rs`; seqs after a power cut
//! in `floor.rs`), concurrent readers on read-only connections (`reads.rs`), a versioned
//! schema (`schema.rs`), and [`SqliteChatStore`] (`store.rs`) tying them to the trait.
//! Appends are written as one journal record per commit (`appends.rs`, `journal.rs`) to a
//! file of their own beside the database (`segments.rs`), and wait in memory
//! (`unflushed.rs`) until they are written to their tables grouped, as chunks: an inbox's
//! entries (`chunk.rs`), a chat's messages (`messages.rs`); `frame.rs` is the byte format
//! of those blobs.
//! The contract itself is checked by `seed_chat_core::conformance`, which the tests here
//! run.

mod appends;
mod chunk;
mod durable;
mod floor;
mod frame;
mod journal;
mod messages;
mod reads;
mod schema;
mod segments;
mod store;
mod unflushed;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use seed_broker::hooks::{Hook, HookSettings, Plugin, PluginContext, PluginError};
use seed_broker::toml;
use seed_chat_core::{ChatStore, StoreError, Watermark};
use serde::Deserialize;

pub use schema::SCHEMA_VERSION;
pub use store::SqliteChatStore;

/// The name this plugin is configured under (`[plugins.store-sqlite]`).
pub const NAME: &str = "store-sqlite";

/// The plugin's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Wait for the disk before answering a write (an fsync of the WAL per group of
    /// commits). Off, a power cut may lose the last acknowledged messages; a crash of the
    /// process still loses nothing.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// The database file; a relative path is taken from the data directory. Default
    /// `{data_dir}/chat.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Config {
        Config { fsync: true, path: None }
    }
}

impl Config {
    /// Parses the plugin's table. Common hook settings (`priority`, ...) are ignored if
    /// present, so both the factory's and a full `[plugins.store-sqlite]` table work.
    pub fn from_table(table: toml::Table) -> Result<Config, PluginError> {
        let (_, own) = HookSettings::split(table)?;
        own.try_into().map_err(|e| PluginError(format!("{NAME}: {e}")))
    }
}

/// The plugin: it has no hooks; its work is providing the store.
#[derive(Debug)]
pub struct StoreSqlitePlugin {
    store: Arc<SqliteChatStore>,
}

impl StoreSqlitePlugin {
    pub fn store(&self) -> &Arc<SqliteChatStore> {
        &self.store
    }
}

impl Plugin for StoreSqlitePlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(&self) -> &'static [Hook] {
        &[]
    }
}

/// The [`seed_broker::hooks::PluginFactory`] for `[plugins.store-sqlite]`: opens the store
/// and provides it as an `Arc<dyn ChatStore>`.
pub fn factory(
    table: toml::Table,
    context: &mut PluginContext,
) -> Result<Arc<dyn Plugin>, PluginError> {
    let config = Config::from_table(table)?;
    let path = context.data_dir.join(config.path.as_deref().unwrap_or("chat.db".as_ref()));
    let store = Arc::new(
        SqliteChatStore::open(&path, config.fsync)
            .map_err(|e| PluginError(format!("{NAME}: {}: {e}", path.display())))?,
    );
    context.provide::<Arc<dyn ChatStore>>(store.clone());
    tracing::info!(path = %path.display(), fsync = config.fsync, "chat store open");
    Ok(Arc::new(StoreSqlitePlugin { store }))
}

/// A SQLite failure: the call it happened in committed nothing.
fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// SQLite integers are signed; the contract's u64s (seqs, unix ms, bounds) stay below
/// 2^63, and a larger bound means the same as the largest.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn watermark_kind(kind: Watermark) -> i64 {
    match kind {
        Watermark::Delivered => 0,
        Watermark::Read => 1,
    }
}

/// Reads a column the store wrote from a u64; a negative value means a damaged file.
fn uint(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Integer,
            Box::new(e),
        )
    })
}
