//! The SDK's one error type: what the accounts API answered, what the MQTT server refused, and
//! transport failures, each kept apart so an app can react (re-login on `Refused`, show the
//! server's message on `Api`).

/// Everything a call of the SDK can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP API answered with an error body `{"error": {"code", "message"}}`.
    #[error("HTTP {status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// The HTTP exchange failed or its answer was not what the contract says.
    #[error("HTTP: {0}")]
    Http(String),
    /// A URL or argument the caller gave is not usable.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The MQTT server refused the connection (CONNACK reason, e.g. not authorized).
    #[error("connection refused: {0}")]
    Refused(String),
    /// The server refused a publish: the PUBACK's reason code (e.g. 0x87 not authorized).
    #[error("publish refused with reason {0:#04x}")]
    Publish(u8),
    /// The server refused the inbox subscription: the SUBACK's reason code.
    #[error("subscription refused: {0}")]
    Subscribe(String),
    /// The connection could not be made or was lost before the call completed.
    #[error("connection: {0}")]
    Connection(String),
    /// The client was disconnected (by `disconnect()` or a terminal failure).
    #[error("client closed")]
    Closed,
    #[error("timed out: {0}")]
    Timeout(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
