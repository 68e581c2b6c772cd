//! The hook API: how plugins take part in the broker's work without the broker knowing them.
//!
//! Learned from Mosquitto's plugin events, EMQX hookpoints and HiveMQ interceptors. A plugin
//! implements [`Plugin`] and names the hooks it serves in [`Plugin::hooks`]; the broker calls
//! only those. There are two kinds of hook:
//!
//! * **Interceptors** sit on the message path and decide: [`Plugin::authenticate`],
//!   [`Plugin::authorize`] and [`Plugin::on_publish`] (which may rewrite the message, and
//!   which completes before the publisher gets its PUBACK). Each call runs under the plugin's
//!   deadline; a timeout, an error or a panic yields the plugin's configured fallback, which
//!   is deny unless the operator says otherwise: the message path fails closed.
//! * **Observers** ([`Plugin::on_event`]) are told what happened, off the path, through a
//!   bounded queue per plugin; when a plugin falls behind, events are dropped and counted
//!   rather than slowing clients down.
//! * **Inline observers** ([`Plugin::on_event_inline`]) are told at once, on the task where
//!   it happened, and never miss an event: for bookkeeping that must not be lost (the chat's
//!   acknowledgements and inbox subscriptions) and that never waits — a handler hands
//!   anything slow to a task of its own.
//!
//! Plugins run in priority order (lowest first). Each answers [`Outcome::Continue`] (fine by
//! me, ask the next), [`Outcome::Stop`] (final answer, skip the rest) or [`Outcome::Defer`]
//! (no opinion). `chain.rs` runs the chains; `registry.rs` builds plugins from `seed.toml`.

mod chain;
mod registry;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::broker::Broker;
use crate::codec::{Protocol, QoS, ReasonCode};
use crate::message::Message;

pub use chain::{Fallback, HookSettings, Hooks};

/// A built plugin and the common settings it runs under.
pub type BuiltPlugin = (Arc<dyn Plugin>, HookSettings);
pub use registry::{PluginFactory, PluginRegistry};

/// The hook points a plugin can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Authenticate,
    Authorize,
    OnPublish,
    Observe,
    Inline,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Authenticate => "authenticate",
            Hook::Authorize => "authorize",
            Hook::OnPublish => "on_publish",
            Hook::Observe => "on_event",
            Hook::Inline => "on_event_inline",
        }
    }
}

/// What an interceptor decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refuse with this reason code (CONNACK, SUBACK, PUBACK/PUBREC or DISCONNECT).
    Deny(ReasonCode),
    /// `on_publish` only: the plugin took the message over (stored and delivered it its own
    /// way); the publisher is acknowledged and the broker does not route it.
    Handled,
}

/// A hook's answer: how the chain goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by this plugin; the next one in the chain is asked.
    Continue,
    /// Final: the rest of the chain is skipped.
    Stop(Decision),
    /// No opinion; the next one is asked, and if all defer the broker's default applies.
    Defer,
}

/// Who is on the other end of a connection, as known after CONNECT.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: Arc<str>,
    /// The MQTT user name once authenticated (None for anonymous clients).
    pub username: Option<Arc<str>>,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    /// `tcp`, `tls` or `ws`.
    pub listener: &'static str,
}

impl ClientInfo {
    /// The user name for log lines: `-` for an anonymous client.
    pub fn user(&self) -> &str {
        self.username.as_deref().unwrap_or("-")
    }
}

/// The credentials of a CONNECT, for [`Plugin::authenticate`].
#[derive(Debug)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// MQTT 5 enhanced authentication method, if the client named one.
    pub authentication_method: Option<&'a str>,
}

/// What a client asks to do, for [`Plugin::authorize`].
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    Publish {
        topic: &'a str,
        qos: QoS,
        retain: bool,
    },
    /// `filter` is the subscription without any `$share/{group}/` prefix.
    Subscribe {
        filter: &'a str,
        qos: QoS,
    },
    /// The will message of a CONNECT, checked when the client connects.
    Will {
        topic: &'a str,
        qos: QoS,
        retain: bool,
    },
}

/// Something that happened, for observers.
#[derive(Debug, Clone)]
pub enum Event {
    Connected {
        client: Arc<ClientInfo>,
        session_present: bool,
    },
    Disconnected {
        client: Arc<ClientInfo>,
        reason: ReasonCode,
    },
    /// A client was granted a subscription (after its SUBACK was queued).
    Subscribed {
        client: Arc<ClientInfo>,
        filter: String,
    },
    /// A subscriber acknowledged a QoS 1/2 message (PUBACK or PUBCOMP).
    Delivered {
        client_id: Arc<str>,
        message: Arc<Message>,
    },
    /// A message was queued for a persistent session whose client is not connected.
    Offline {
        client_id: Arc<str>,
        message: Arc<Message>,
    },
    SessionCreated {
        client_id: Arc<str>,
    },
    SessionExpired {
        client_id: Arc<str>,
    },
    /// Once a second, for plugins that do periodic work.
    Tick,
}

/// A plugin's failure, at build time, on reload, or inside a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginError {}

impl PluginError {
    pub fn new(message: impl fmt::Display) -> PluginError {
        PluginError(message.to_string())
    }
}

/// What plugins are built with: where data lives, and the services plugins built earlier
/// provide to later ones (a store plugin provides the store that the chat plugin uses). The
/// binary registers providers before their users.
#[derive(Default)]
pub struct PluginContext {
    pub data_dir: PathBuf,
    services: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl PluginContext {
    pub fn new(data_dir: PathBuf) -> PluginContext {
        PluginContext { data_dir, services: HashMap::new() }
    }

    /// Offers a service (typically an `Arc<dyn Trait>`) to the plugins built after this one.
    pub fn provide<T: Any + Send + Sync + Clone>(&mut self, service: T) {
        self.services.insert(TypeId::of::<T>(), Box::new(service));
    }

    pub fn get<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        self.services.get(&TypeId::of::<T>()).and_then(|s| s.downcast_ref::<T>()).cloned()
    }

    /// Like [`PluginContext::get`], with an error naming what is missing.
    pub fn require<T: Any + Send + Sync + Clone>(&self, what: &str) -> Result<T, PluginError> {
        self.get().ok_or_else(|| {
            PluginError(format!("needs {what}, which no plugin built before it provides"))
        })
    }
}

/// A plugin: a named set of hooks. Every method has a neutral default, so a plugin writes
/// only the hooks it lists in [`Plugin::hooks`].
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The name it is configured under (`[plugins.<name>]`).
    fn name(&self) -> &'static str;

    /// The hooks this plugin serves; the broker calls no other.
    fn hooks(&self) -> &'static [Hook];

    /// New tunables from a reloaded `seed.toml` (SIGHUP): the plugin's own table, the
    /// common hook settings already taken out (as for its factory). An error keeps the old
    /// settings.
    fn reload(&self, _config: toml::Table) -> Result<(), PluginError> {
        Ok(())
    }

    /// Called once the broker runs, for plugins that deliver messages or look at sessions
    /// themselves.
    fn attach(&self, _broker: &Arc<Broker>) {}

    /// HTTP routes this plugin serves on the HTTP port (`/v1/...`).
    fn routes(&self) -> Option<axum::Router> {
        None
    }

    async fn authenticate(
        &self,
        _client: &ClientInfo,
        _credentials: &Credentials<'_>,
    ) -> Result<Outcome, PluginError> {
        Ok(Outcome::Defer)
    }

    async fn authorize(
        &self,
        _client: &ClientInfo,
        _action: &Action<'_>,
    ) -> Result<Outcome, PluginError> {
        Ok(Outcome::Defer)
    }

    /// Validate, rewrite, stamp or persist an accepted PUBLISH before it is routed and
    /// acknowledged.
    async fn on_publish(
        &self,
        _client: &ClientInfo,
        _message: &mut Message,
    ) -> Result<Outcome, PluginError> {
        Ok(Outcome::Continue)
    }

    async fn on_event(&self, _event: &Event) {}

    /// [`Hook::Inline`]: called synchronously where the event happens (a client's task),
    /// every time. Must not block or wait; a panic is caught and counted.
    fn on_event_inline(&self, _event: &Event) {}
}
