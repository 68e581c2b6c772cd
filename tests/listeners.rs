//! Listeners and the HTTP port: MQTT over TLS with a self-signed certificate (rcgen) and a
//! tokio-rustls client; silent sockets (TCP and WebSocket) neither delay real clients nor
//! outlive `handshake_timeout_ms`; `max_connections` answers the next client with a CONNACK
//! refusal (3.1.1 code 3, 5.0 reason 0x97) instead of a reset; the WebSocket listener answers
//! 404 off `/mqtt`; `/metrics` and `/healthz`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{InProcess, Seed, WAIT, free_addr, http_get, raw, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tls_listener_with_self_signed_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let tls_addr = free_addr();
    let seed = Seed::broker_with_config(|dir| {
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
        format!(
            "[listeners.tls]\naddr = \"{tls_addr}\"\ncert = {:?}\nkey = {:?}\n",
            dir.join("cert.pem").display().to_string(),
            dir.join("key.pem").display().to_string()
        )
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake failed");

    for version in [raw::V311] {
        let (present, code) = raw::handshake(&mut tls, version, &unique("tls"), None, None).await;
        assert_eq!((present, code), (false, 0), "CONNACK over TLS");
    }
    let topic = unique("tls/t");
    assert_eq!(raw::subscribe_code(&mut tls, raw::V311, 1, &topic, 0).await, 0);
    // A plain TCP client publishes; the TLS client receives.
    let mut plain = raw::connected(seed.mqtt, raw::V5, &unique("plain")).await;
    plain.write_all(&raw::publish(raw::V5, &topic, 0, 0, b"over tls")).await.unwrap();
    let (first, body) = raw::expect_packet(&mut tls).await;
    assert_eq!(first & 0xf0, 0x30, "expected PUBLISH");
    let (t, _, payload) = raw::parse_publish(raw::V311, first, &body);
    assert_eq!((t, payload), (topic, b"over tls".to_vec()));

    // A client that does not trust the certificate is refused by the handshake.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.unwrap().is_err());
}

/// Opens sockets that never say anything.
async fn silent(addrs: &[std::net::SocketAddr]) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for addr in addrs {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

#[tokio::test]
async fn silent_sockets_do_not_delay_real_clients() {
    let seed = Seed::broker(); // default handshake timeout: 10 s
    let mut addrs = vec![seed.mqtt; 5];
    addrs.push(seed.ws);
    let _silent = silent(&addrs).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(seed.mqtt).await.unwrap();
    let (_, code) = raw::handshake(&mut s, raw::V5, &unique("real"), None, None).await;
    assert_eq!(code, 0);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "CONNACK took {elapsed:?} behind silent sockets");
    let mut s = TcpStream::connect(seed.mqtt).await.unwrap();
    let (_, code) = raw::handshake(&mut s, raw::V311, &unique("real"), None, None).await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn handshake_timeout_closes_silent_sockets() {
    let seed = Seed::broker_with_config(|_| "[broker]\nhandshake_timeout_ms = 500\n".to_owned());
    let mut addrs = vec![seed.mqtt; 5];
    addrs.push(seed.ws);
    let started = Instant::now();
    let sockets = silent(&addrs).await;
    for (i, mut s) in sockets.into_iter().enumerate() {
        let mut buf = [0u8; 64];
        let result = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        let elapsed = started.elapsed();
        match result {
            Err(_) => panic!("silent socket {i} ({}) still open after 3 s", addrs[i]),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("silent socket {i} got {n} bytes: {:?}", &buf[..n]),
        }
        assert!(elapsed < Duration::from_millis(1500), "socket {i} closed only after {elapsed:?}");
        assert!(elapsed >= Duration::from_millis(400), "socket {i} closed early: {elapsed:?}");
    }
    // The server is still fine.
    let _ok = raw::connected(seed.mqtt, raw::V311, &unique("after")).await;
}

/// Reads until the peer closes; true for a clean close (FIN), false for a reset.
async fn closed_cleanly(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("socket not closed") {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("read error: {e}");
                return false;
            }
        }
    }
}

#[tokio::test]
async fn connection_limit_refuses_with_connack() {
    let server = InProcess::start("[broker]\nmax_connections = 2\n").await;
    let addr = server.mqtt();
    let first = raw::connected(addr, raw::V311, &unique("one")).await;
    let _second = raw::connected(addr, raw::V5, &unique("two")).await;

    let mut third = TcpStream::connect(addr).await.unwrap();
    let (present, code) = raw::handshake(&mut third, raw::V311, &unique("three"), None, None).await;
    assert_eq!((present, code), (false, 3), "3.1.1: expected CONNACK 3 (server unavailable)");
    assert!(closed_cleanly(&mut third).await, "3.1.1 refusal ended in a reset");

    let mut third = TcpStream::connect(addr).await.unwrap();
    let (present, code) = raw::handshake(&mut third, raw::V5, &unique("three5"), None, None).await;
    assert_eq!((present, code), (false, 0x97), "5.0: expected CONNACK 0x97 (quota exceeded)");
    assert!(closed_cleanly(&mut third).await, "5.0 refusal ended in a reset");

    // A freed slot can be used again.
    let mut first = first;
    first.write_all(&raw::disconnect()).await.unwrap();
    assert!(closed_cleanly(&mut first).await);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (_, code) = raw::handshake(&mut s, raw::V311, &unique("again"), None, None).await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed (code {code})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_path_and_upgrade() {
    let server = InProcess::start("").await;
    for (path, status) in [("/nope", "404"), ("/", "404"), ("/mqtt", "101")] {
        let mut s = TcpStream::connect(server.ws()).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        let line = head.lines().next().unwrap_or_default().to_owned();
        assert!(line.starts_with(&format!("http/1.1 {status}")), "{path}: {line}");
        if status == "101" {
            assert!(head.contains("sec-websocket-protocol: mqtt"), "no subprotocol: {head}");
        }
    }
    server.shutdown().await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_and_healthz() {
    let seed = Seed::broker();
    let topic = unique("metrics");
    let mut a = raw::connected(seed.mqtt, raw::V311, &unique("m")).await;
    assert_eq!(raw::subscribe_code(&mut a, raw::V311, 1, &topic, 1).await, 1);
    a.write_all(&raw::publish(raw::V311, &topic, 1, 2, b"x")).await.unwrap();
    // Wait for the PUBACK and our own copy, so the counters have moved.
    let mut seen = 0;
    while seen < 2 {
        let (first, _) = raw::expect_packet(&mut a).await;
        if first == 0x40 || first & 0xf0 == 0x30 {
            seen += 1;
        }
    }

    let (status, head, body) = http_get(seed.http, "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    assert_eq!(metric(&body, "seed_connections"), 1);
    assert!(metric(&body, "seed_connections_total") >= 1);
    assert!(metric(&body, "seed_subscriptions") >= 1);
    assert!(metric(&body, "seed_packets_received_total{type=\"connect\"}") >= 1);
    // A CONNECT is at least 12 bytes (fixed header, protocol name and level, flags, keep-alive).
    assert!(metric(&body, "seed_bytes_received_total{type=\"connect\"}") >= 12);
    assert!(metric(&body, "seed_packets_received_total{type=\"publish\"}") >= 1);
    assert!(metric(&body, "seed_packets_received_total{type=\"subscribe\"}") >= 1);
    assert!(metric(&body, "seed_packets_sent_total{type=\"connack\"}") >= 1);
    assert!(metric(&body, "seed_packets_sent_total{type=\"publish\"}") >= 1);

    let (status, head, body) = http_get(seed.http, "/healthz").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let body = body.trim();
    assert!(body.starts_with('{') && body.ends_with('}') && body.contains("\"status\""), "{body}");

    let (status, _, _) = http_get(seed.http, "/no-such-page").await;
    assert_eq!(status, 404);
}
