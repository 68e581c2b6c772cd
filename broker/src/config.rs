//! `seed.toml`: the broker's settings, with defaults that run a complete server on one machine.
//!
//! Every field has a default, so an empty file (or none) is a valid configuration; unknown
//! keys are errors, so a typo is caught at start-up instead of silently ignored. The `seed`
//! binary applies its command-line flags and `SEED_*` environment variables on top.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listeners: Listeners,
    pub broker: BrokerConfig,
    pub store: StoreConfig,
    /// `[plugins.<name>]` tables, handed to the plugin registry. The table names exactly the
    /// plugins that run: without one, the chat server's set runs ([`DEFAULT_PLUGINS`]); an
    /// empty `[plugins]` makes a plain MQTT broker.
    pub plugins: toml::Table,
}

/// What `seed serve` runs with no configuration: the full chat server.
pub const DEFAULT_PLUGINS: [&str; 3] = ["store-sqlite", "auth-jwt", "chat"];

impl Default for Config {
    fn default() -> Self {
        let plugins = DEFAULT_PLUGINS
            .iter()
            .map(|name| (name.to_string(), toml::Value::Table(toml::Table::new())))
            .collect();
        Config {
            listeners: Listeners::default(),
            broker: BrokerConfig::default(),
            store: StoreConfig::default(),
            plugins,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// Plain MQTT over TCP; `None` turns it off.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over WebSocket at `/mqtt`.
    pub ws: Option<SocketAddr>,
    /// HTTP: metrics, health and the API.
    pub http: Option<SocketAddr>,
    /// MQTT over TLS; off unless configured.
    pub tls: Option<TlsListener>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mqtt: Some(([127, 0, 0, 1], 1883).into()),
            ws: Some(([127, 0, 0, 1], 8083).into()),
            http: Some(([127, 0, 0, 1], 8080).into()),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub addr: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Connected clients at most; the next gets CONNACK "server unavailable" (3.x) or
    /// "quota exceeded" (5.0).
    pub max_connections: usize,
    /// Time a new socket has for its TLS and WebSocket handshakes and its CONNECT.
    pub handshake_timeout_ms: u64,
    /// Largest keep-alive a 5.0 client gets (sent as Server Keep Alive); 0 = no cap.
    pub max_keep_alive: u16,
    /// Largest packet accepted from a client, in bytes.
    pub max_packet_size: u32,
    /// QoS 1/2 publishes a client may have unacknowledged towards us (our Receive Maximum).
    pub receive_maximum: u16,
    /// QoS 1/2 messages in flight towards a client at most (also bounded by its Receive
    /// Maximum).
    pub max_inflight: u16,
    /// Messages queued per session beyond the in-flight window; QoS 0 messages beyond this
    /// are dropped for a slow client, QoS 1/2 messages too once a session holds this many.
    pub max_queued_messages: usize,
    /// Upper bound on any session's expiry interval, in seconds (also applied to 3.x
    /// persistent sessions, which never expire by the spec).
    pub max_session_expiry: u32,
    /// Topic aliases a 5.0 client may use towards us.
    pub topic_alias_maximum: u16,
    /// Longest client id accepted.
    pub max_client_id_len: usize,
    pub retain_available: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_connections: 100_000,
            handshake_timeout_ms: 10_000,
            max_keep_alive: 0,
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 512,
            max_queued_messages: 100_000,
            max_session_expiry: 30 * 24 * 3600,
            topic_alias_maximum: 1024,
            max_client_id_len: 256,
            retain_available: true,
        }
    }
}

impl BrokerConfig {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the embedded store lives.
    pub data_dir: PathBuf,
    /// Wait for the disk (fsync) before acknowledging durable writes. Off, a process crash
    /// still loses nothing (WAL in the OS cache), but a power cut may.
    pub fsync: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { data_dir: PathBuf::from("data"), fsync: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.listeners.mqtt, Some("127.0.0.1:1883".parse().unwrap()));
        assert_eq!(config.broker.max_packet_size, 1024 * 1024);
        assert!(config.store.fsync);
    }

    #[test]
    fn the_chat_plugins_run_unless_the_file_names_its_own() {
        let default = Config::from_toml("[broker]\nmax_connections = 5").unwrap();
        assert_eq!(
            default.plugins.keys().collect::<Vec<_>>(),
            ["auth-jwt", "chat", "store-sqlite"]
        );
        assert!(Config::from_toml("[plugins]\n").unwrap().plugins.is_empty());
    }

    #[test]
    fn typos_are_errors() {
        assert!(Config::from_toml("[broker]\nmax_conections = 5").is_err());
    }

    #[test]
    fn plugins_are_free_form() {
        let config =
            Config::from_toml("[plugins.acl]\ndefault = \"deny\"\npriority = 5\n").unwrap();
        assert!(config.plugins["acl"].as_table().unwrap().contains_key("default"));
    }
}
