//! Seed's Rust client SDK. [`Account`] speaks the HTTP API (register, login, refresh,
//! logout, history, blocks); [`ChatClient`] is one device's MQTT connection (rumqttc v5):
//! inbox events in, chat verbs out, each send resolving at the server's PUBACK, resent with
//! the same `client_msg_id` across reconnects and de-duplicated by inbox seq.
//!
//! ```no_run
//! # async fn demo() -> seed_sdk::Result<()> {
//! use seed_sdk::{Account, ChatClient, Event};
//! let account = Account::new("http://127.0.0.1:8080")?;
//! let session = account.login("alice", "secret", "phone").await?;
//! let mut chat = ChatClient::connect("127.0.0.1:1883", &session).await?;
//! chat.send_text("bob", "hi").await?;
//! while let Some(event) = chat.next_event().await {
//!     if let Event::Message { message, .. } = event {
//!         println!("{}: {}", message.from, message.text);
//!     }
//! }
//! # Ok(()) }
//! ```

mod account;
mod client;
mod driver;
mod error;
mod event;
mod http;
mod ids;

pub use account::{Account, History, HistoryMessage, Session};
pub use client::{ChatClient, ChatHandle, Sent};
pub use error::{Error, Result};
pub use event::Event;
pub use ids::client_msg_id;
pub use seed_proto::v1;
