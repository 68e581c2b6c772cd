//! CONNECT: from a fresh socket to a running session, or a CONNACK that says why not.
//!
//! The checks run in the order a client can act on: protocol version, connection limit,
//! client id, credentials (the `authenticate` hooks), the will (the `authorize` hooks), and
//! only then is a session opened or taken over. A refusal is answered with the reason code
//! of the client's version before the socket is closed, never with a bare reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;

use super::Connection;
use crate::broker::Broker;
use crate::codec::{self, ConnAck, Connect, DecodeError, Packet, Properties, Protocol, ReasonCode};
use crate::hooks::{Action, ClientInfo, Credentials, Decision, Event};
use crate::message::now_millis;
use crate::metrics::SocketGuard;
use crate::session::Link;
use crate::topic;
use crate::transport::Transport;

/// Room in a connection's outbox beyond its in-flight window, for QoS 0 messages; past it,
/// QoS 0 messages to a slow client are dropped.
const OUTBOX_SLACK: usize = 1024;

pub(super) async fn accept<T: Transport>(
    broker: Arc<Broker>,
    mut transport: T,
    peer: SocketAddr,
    listener: &'static str,
    socket: SocketGuard,
) -> Option<Connection<T>> {
    let mut rbuf = BytesMut::with_capacity(4096);
    let max = broker.config.max_packet_size as usize;
    let timeout = broker.config.handshake_timeout();
    let connect =
        match tokio::time::timeout(timeout, read_connect(&mut transport, &mut rbuf, max)).await {
            Ok(Ok(Some((connect, size)))) => {
                broker.metrics.packet_in(1, size);
                connect
            }
            Ok(Ok(None)) => {
                transport.close().await;
                return None;
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, reason = %e.reason, detail = e.detail, "bad CONNECT");
                if e.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
                    // [MQTT-3.1.2-2]: answer in a form any version understands, then close.
                    refuse(&mut transport, Protocol::V3_1_1, e.reason, &broker).await;
                } else {
                    transport.close().await;
                }
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "no CONNECT before the handshake timeout");
                transport.close().await;
                return None;
            }
        };
    let protocol = connect.protocol;

    if broker.metrics.connections.load(Relaxed) >= broker.config.max_connections as i64 {
        broker.metrics.connections_refused.fetch_add(1, Relaxed);
        let code = if protocol.is_v5() {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode::SERVER_UNAVAILABLE
        };
        refuse(&mut transport, protocol, code, &broker).await;
        return None;
    }
    if connect.properties.authentication_method.is_some() {
        // No plugin implements MQTT 5 enhanced authentication (AUTH exchanges) yet.
        refuse(&mut transport, protocol, ReasonCode::BAD_AUTHENTICATION_METHOD, &broker).await;
        return None;
    }

    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        // 3.1 never allows an empty id; 3.1.1 only with a clean session ([MQTT-3.1.3-8]).
        if protocol == Protocol::V3_1 || (protocol == Protocol::V3_1_1 && !connect.clean_start) {
            refuse(&mut transport, protocol, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, &broker)
                .await;
            return None;
        }
        let id = generated_client_id();
        assigned = Some(id.clone());
        id.into()
    } else if connect.client_id.len() > broker.config.max_client_id_len {
        refuse(&mut transport, protocol, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, &broker).await;
        return None;
    } else {
        connect.client_id.as_str().into()
    };

    let mut client = ClientInfo {
        client_id: client_id.clone(),
        username: connect.username.as_deref().map(Into::into),
        protocol,
        peer,
        listener,
    };
    let credentials = Credentials {
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        authentication_method: None,
    };
    if let Decision::Deny(code) = broker.hooks.authenticate(&client, &credentials).await {
        tracing::info!(%peer, client_id = %client_id, reason = %code, "authentication refused");
        refuse(&mut transport, protocol, code, &broker).await;
        return None;
    }
    if connect.username.is_none() {
        client.username = None;
    }

    if let Some(will) = &connect.will {
        let code = if !topic::valid_topic_name(&will.topic) {
            Some(ReasonCode::TOPIC_NAME_INVALID)
        } else if will.retain && !broker.config.retain_available {
            Some(ReasonCode::RETAIN_NOT_SUPPORTED)
        } else {
            let action = Action::Will { topic: &will.topic, qos: will.qos, retain: will.retain };
            match broker.hooks.authorize(&client, &action).await {
                Decision::Deny(code) => Some(code),
                Decision::Allow | Decision::Handled => None,
            }
        };
        if let Some(code) = code {
            refuse(&mut transport, protocol, code, &broker).await;
            return None;
        }
    }

    let requested_expiry = match protocol {
        Protocol::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        _ if connect.clean_start => 0,
        _ => u32::MAX,
    };
    let expiry = requested_expiry.min(broker.config.max_session_expiry);

    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    let cap = broker.config.max_keep_alive;
    if protocol.is_v5() && cap > 0 && (keep_alive == 0 || keep_alive > cap) {
        keep_alive = cap;
        server_keep_alive = Some(cap);
    }

    let (session, present) = broker.open_session(&client_id, connect.clean_start, expiry).await;
    let window = usize::from(connect.properties.receive_maximum.unwrap_or(u16::MAX))
        .min(usize::from(broker.config.max_inflight))
        .max(1);
    let link_id = broker.next_link_id();
    let (link, wake, done) = Link::new(link_id, window, window + OUTBOX_SLACK);
    if keep_alive > 0 {
        // [MQTT-3.1.2-24]: one and a half times the keep-alive.
        wake.set_keep_alive(u32::from(keep_alive) * 1500, broker.keep_alive.now_ms());
        broker.keep_alive.watch(&wake);
    }

    let connack = ConnAck {
        session_present: present,
        code: ReasonCode::SUCCESS,
        properties: if protocol.is_v5() {
            Properties {
                receive_maximum: Some(broker.config.receive_maximum),
                maximum_packet_size: Some(broker.config.max_packet_size),
                topic_alias_maximum: Some(broker.config.topic_alias_maximum),
                assigned_client_identifier: assigned,
                server_keep_alive,
                session_expiry_interval: (expiry != requested_expiry).then_some(expiry),
                retain_available: (!broker.config.retain_available).then_some(0),
                ..Properties::default()
            }
        } else {
            Properties::default()
        },
    };

    let mut connection = Connection {
        broker: broker.clone(),
        transport,
        client: Arc::new(client),
        protocol,
        session: session.clone(),
        link_id,
        wake,
        _done: done,
        // An idle connection holds no buffer: they grow when traffic comes.
        rbuf: if rbuf.is_empty() { BytesMut::new() } else { rbuf },
        wbuf: BytesMut::new(),
        aliases: None,
        out_alias_max: if protocol.is_v5() {
            connect.properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        client_max_packet: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
        pending_acks: Default::default(),
        intercepts: Default::default(),
        will: connect.will.map(Box::new),
        closing: None,
        _socket: socket,
    };
    connection.write_packet(&Packet::ConnAck(connack));

    let mut writes = Vec::new();
    let (resend, releases, fresh) = {
        let mut state = session.state.lock();
        state.link = Some(link);
        state.epoch = state.epoch.wrapping_add(1);
        state.disconnected_at = None;
        session.set_online(true);
        let (resend, releases) = state.resend();
        let fresh = state.fill_window(now_millis(), &broker.metrics, &mut writes);
        (resend, releases, fresh)
    };
    broker.store.submit(writes);
    for packet_id in releases {
        connection
            .write_packet(&Packet::PubRel(codec::PubAck::new(packet_id, ReasonCode::SUCCESS)));
    }
    for out in resend.into_iter().chain(fresh) {
        connection.write_publish(out);
    }

    broker.metrics.connections.fetch_add(1, Relaxed);
    broker.metrics.connections_total.fetch_add(1, Relaxed);
    if broker.hooks.has_observers() {
        broker.hooks.notify(Event::Connected {
            client: connection.client.clone(),
            session_present: present,
        });
    }
    Some(connection)
}

/// Reads until a whole first packet is in; it must be a CONNECT ([MQTT-3.1.0-1]). Returns it
/// with its size in bytes.
async fn read_connect<T: Transport>(
    transport: &mut T,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Box<Connect>, usize)>, DecodeError> {
    loop {
        let before = rbuf.len();
        match codec::decode(rbuf, Protocol::V3_1_1, max)? {
            Some(Packet::Connect(connect)) => return Ok(Some((connect, before - rbuf.len()))),
            Some(_) => {
                return Err(DecodeError {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: "first packet is not CONNECT",
                });
            }
            None => {}
        }
        match std::future::poll_fn(|cx| transport.poll_read_into(cx, rbuf)).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Answers a CONNECT with a failure CONNACK and closes.
async fn refuse<T: Transport>(
    transport: &mut T,
    protocol: Protocol,
    code: ReasonCode,
    broker: &Broker,
) {
    let mut buf = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    });
    if codec::encode(&connack, protocol, &mut buf).is_ok() {
        broker.metrics.packet_out(2, buf.len());
        let _ = tokio::time::timeout(Duration::from_secs(1), transport.write_all(&buf)).await;
    }
    transport.close().await;
}

/// A client id for a client that sent none: unique within this process's lifetime and
/// unlikely to collide across restarts.
fn generated_client_id() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("seed-{:x}{:04x}", nanos, n & 0xffff)
}
