//! Seed's MQTT broker: MQTT 3.1, 3.1.1 and 5.0 over TCP, TLS and WebSocket, with sessions,
//! retained messages and wills kept in an embedded SQLite store, and a hook API through which
//! plugins authenticate, authorize, rewrite and observe.
//!
//! A message's path, in files: a listener (`listener.rs`) accepts a socket and hands it to a
//! connection task (`connection/`), which decodes packets (`codec/`), asks the plugins
//! (`hooks/`), and publishes through the broker (`broker.rs`): the router (`router.rs`) finds
//! the subscribed sessions (`session.rs`), durable state goes to the store (`store.rs`), and
//! each session's connection writes the message out. `server.rs` assembles it all.

pub mod broker;
pub mod codec;
pub mod config;
mod connection;
pub mod hooks;
pub mod http;
mod keepalive;
mod listener;
pub mod message;
pub mod metrics;
pub mod router;
pub mod sched;
pub mod server;
pub mod session;
pub mod store;
pub mod topic;
mod transport;

pub use config::Config;
pub use server::{Bound, Server, ServerError};
pub use toml;
