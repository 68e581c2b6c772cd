//! Listeners: accept sockets on TCP, TLS and WebSocket, and give each its own task.
//!
//! Every handshake (TLS, the WebSocket upgrade, then CONNECT) runs inside the socket's own
//! task under the handshake timeout, so a silent or slow socket holds up no one else. Past
//! the connection limit plus a margin for handshakes in progress, sockets are closed at once;
//! below it, a client over the limit is told so in its CONNACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use crate::broker::Broker;
use crate::connection;
use crate::metrics::SocketGuard;
use crate::transport::{ByteStream, WsTransport};

/// How a listener's sockets are spoken to.
#[derive(Clone)]
pub enum Kind {
    Tcp,
    Tls(TlsAcceptor),
    WebSocket,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls(_) => "tls",
            Kind::WebSocket => "ws",
        }
    }
}

/// Sockets accepted beyond `max_connections` while their CONNECT is awaited.
const HANDSHAKE_MARGIN: i64 = 1024;

/// Accepts until shutdown.
pub async fn run(listener: TcpListener, kind: Kind, broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %e, listener = kind.name(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let limit = broker.config.max_connections as i64 + HANDSHAKE_MARGIN;
        if broker.metrics.sockets.load(Relaxed) >= limit {
            broker.metrics.connections_refused.fetch_add(1, Relaxed);
            continue; // dropped: closes the socket
        }
        let _ = socket.set_nodelay(true);
        let broker = broker.clone();
        let kind = kind.clone();
        let guard = SocketGuard::new(&broker.metrics);
        tokio::spawn(handle(socket, peer, kind, broker, guard));
    }
}

async fn handle(
    socket: TcpStream,
    peer: SocketAddr,
    kind: Kind,
    broker: Arc<Broker>,
    guard: SocketGuard,
) {
    // TLS and WebSocket state is large: boxed, it costs memory only on those listeners.
    match kind {
        Kind::Tcp => connection::serve(broker, socket, peer, "tcp", guard).await,
        Kind::Tls(acceptor) => Box::pin(serve_tls(socket, peer, acceptor, broker, guard)).await,
        Kind::WebSocket => Box::pin(serve_ws(socket, peer, broker, guard)).await,
    }
}

async fn serve_tls(
    socket: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    broker: Arc<Broker>,
    guard: SocketGuard,
) {
    let timeout = broker.config.handshake_timeout();
    match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(tls)) => connection::serve(broker, ByteStream(tls), peer, "tls", guard).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_ws(socket: TcpStream, peer: SocketAddr, broker: Arc<Broker>, guard: SocketGuard) {
    let timeout = broker.config.handshake_timeout();
    let upgrade = tokio_tungstenite::accept_hdr_async(socket, select_mqtt_subprotocol);
    match tokio::time::timeout(timeout, upgrade).await {
        Ok(Ok(ws)) => connection::serve(broker, WsTransport(ws), peer, "ws", guard).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "WebSocket handshake failed"),
        Err(_) => tracing::debug!(%peer, "WebSocket handshake timed out"),
    }
}

/// The upgrade is served at `/mqtt`; it answers with the `mqtt` subprotocol (or the 3.1-era
/// `mqttv3.1`) when the client offers it, as MQTT over WebSocket requires ([MQTT-6.0.0-3]).
#[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
fn select_mqtt_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != "/mqtt" {
        let mut refusal = ErrorResponse::new(Some("MQTT is served at /mqtt".into()));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| *p == "mqtt" || *p == "mqttv3.1");
    if let Some(protocol) = offered {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(if protocol == "mqtt" { "mqtt" } else { "mqttv3.1" }),
        );
    }
    Ok(response)
}

/// A TLS acceptor from PEM files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
