//! A thin, version-agnostic wrapper over rumqttc's MQTT 3.1.1 (`v4`) and MQTT 5 (`v5`) async
//! clients, so every scenario can be written once and run against either protocol version.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, v5};

/// MQTT protocol version spoken by the benchmark clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// Everything needed to open one client connection.
#[derive(Clone, Debug)]
pub struct ConnOpts {
    pub host: String,
    pub port: u16,
    pub version: Version,
    pub client_id: String,
    pub keep_alive: Duration,
    /// `clean_session` (v4) / `clean_start` (v5).
    pub clean: bool,
    /// MQTT 5 session expiry interval in seconds (ignored for v4).
    pub session_expiry: Option<u32>,
    /// Outgoing in-flight window (QoS > 0 publishes awaiting acknowledgement).
    pub inflight: u16,
    /// Capacity of the request channel between `Client` and `EventLoop`.
    pub channel_cap: usize,
    /// TCP connect + CONNACK timeout in seconds.
    pub connect_timeout: u64,
    /// MQTT user name and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

impl ConnOpts {
    pub fn new(host: &str, port: u16, version: Version, client_id: String) -> Self {
        ConnOpts {
            host: host.to_string(),
            port,
            version,
            client_id,
            keep_alive: Duration::from_secs(60),
            clean: true,
            session_expiry: None,
            inflight: 100,
            channel_cap: 10,
            connect_timeout: 10,
            credentials: None,
        }
    }
}

/// Handle used to send requests (publish, subscribe, disconnect).
#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The connection driver; must be polled continuously for the connection to make progress.
pub enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// Normalised subset of events the scenarios care about.
#[derive(Debug)]
pub enum Ev {
    ConnAck {
        session_present: bool,
    },
    Publish {
        payload: Bytes,
    },
    SubAck {
        ok: bool,
    },
    /// PUBACK / PUBCOMP; `ok` is false when an MQTT 5 broker refused the publish.
    PubAck {
        ok: bool,
    },
    OutgoingDisconnect,
    Other,
}

fn qos4(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> v5::mqttbytes::QoS {
    match qos {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Creates a client and its (not yet connected) event loop.
pub fn new_client(o: &ConnOpts) -> (Client, EventLoop) {
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(o.connect_timeout);
    match o.version {
        Version::V4 => {
            let mut mo = rumqttc::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
            mo.set_keep_alive(o.keep_alive)
                .set_clean_session(o.clean)
                .set_inflight(o.inflight.max(1))
                .set_max_packet_size(1 << 20, 1 << 20);
            if let Some((user, pass)) = &o.credentials {
                mo.set_credentials(user.clone(), pass.clone());
            }
            let (c, mut el) = rumqttc::AsyncClient::new(mo, o.channel_cap);
            el.set_network_options(net);
            (Client::V4(c), EventLoop::V4(Box::new(el)))
        }
        Version::V5 => {
            let mut mo = v5::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
            mo.set_keep_alive(o.keep_alive)
                .set_clean_start(o.clean)
                .set_connection_timeout(o.connect_timeout)
                .set_outgoing_inflight_upper_limit(o.inflight.max(1))
                .set_max_packet_size(Some(1 << 20));
            if let Some((user, pass)) = &o.credentials {
                mo.set_credentials(user.clone(), pass.clone());
            }
            if o.session_expiry.is_some() {
                mo.set_session_expiry_interval(o.session_expiry);
            }
            mo.set_network_options(net);
            let (c, el) = v5::AsyncClient::new(mo, o.channel_cap);
            (Client::V5(c), EventLoop::V5(Box::new(el)))
        }
    }
}

/// Creates a client and drives its event loop until CONNACK (or error / timeout).
/// Returns the client, the event loop and the CONNACK's `session_present` flag.
pub async fn connect(o: &ConnOpts) -> Result<(Client, EventLoop, bool)> {
    let (client, mut el) = new_client(o);
    let deadline = Duration::from_secs(o.connect_timeout + 1);
    let session_present = tokio::time::timeout(deadline, async {
        loop {
            if let Ev::ConnAck { session_present } = el.poll().await? {
                return Ok::<bool, anyhow::Error>(session_present);
            }
        }
    })
    .await
    .map_err(|_| anyhow!("timed out connecting {}", o.client_id))?
    .with_context(|| format!("connecting {} to {}:{}", o.client_id, o.host, o.port))?;
    Ok((client, el, session_present))
}

impl Client {
    pub async fn publish(&self, topic: &str, qos: u8, payload: Bytes) -> Result<()> {
        match self {
            Client::V4(c) => c.publish_bytes(topic, qos4(qos), false, payload).await?,
            Client::V5(c) => c.publish_bytes(topic, qos5(qos), false, payload).await?,
        }
        Ok(())
    }

    pub async fn subscribe(&self, topic: &str, qos: u8) -> Result<()> {
        match self {
            Client::V4(c) => c.subscribe(topic, qos4(qos)).await?,
            Client::V5(c) => c.subscribe(topic, qos5(qos)).await?,
        }
        Ok(())
    }

    pub async fn disconnect(&self) -> Result<()> {
        match self {
            Client::V4(c) => c.disconnect().await?,
            Client::V5(c) => c.disconnect().await?,
        }
        Ok(())
    }
}

impl EventLoop {
    /// Polls the connection once. Errors are connection-level failures; the caller decides
    /// whether to stop (the benchmark never silently reconnects mid-measurement).
    pub async fn poll(&mut self) -> Result<Ev> {
        match self {
            EventLoop::V4(el) => {
                use rumqttc::{Event, Packet};
                Ok(match el.poll().await? {
                    Event::Incoming(Packet::ConnAck(a)) => {
                        Ev::ConnAck { session_present: a.session_present }
                    }
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish { payload: p.payload },
                    Event::Incoming(Packet::SubAck(s)) => Ev::SubAck {
                        ok: s
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                    },
                    Event::Incoming(Packet::PubAck(_)) | Event::Incoming(Packet::PubComp(_)) => {
                        Ev::PubAck { ok: true }
                    }
                    Event::Outgoing(Outgoing::Disconnect) => Ev::OutgoingDisconnect,
                    _ => Ev::Other,
                })
            }
            EventLoop::V5(el) => {
                use v5::Event;
                Ok(match el.poll().await? {
                    Event::Incoming(p5::Packet::ConnAck(a)) => {
                        Ev::ConnAck { session_present: a.session_present }
                    }
                    Event::Incoming(p5::Packet::Publish(p)) => Ev::Publish { payload: p.payload },
                    Event::Incoming(p5::Packet::SubAck(s)) => Ev::SubAck {
                        ok: s
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, p5::SubscribeReasonCode::Success(_))),
                    },
                    Event::Incoming(p5::Packet::PubAck(a)) => {
                        Ev::PubAck { ok: a.reason == p5::PubAckReason::Success }
                    }
                    Event::Incoming(p5::Packet::PubComp(c)) => {
                        Ev::PubAck { ok: c.reason == p5::PubCompReason::Success }
                    }
                    Event::Incoming(p5::Packet::Disconnect(d)) => {
                        bail!("broker sent DISCONNECT: {:?}", d.reason_code)
                    }
                    Event::Outgoing(Outgoing::Disconnect) => Ev::OutgoingDisconnect,
                    _ => Ev::Other,
                })
            }
        }
    }
}

/// Subscribes and waits for the SUBACK (failing if the broker refused the subscription).
pub async fn subscribe_and_wait(
    client: &Client,
    el: &mut EventLoop,
    topic: &str,
    qos: u8,
) -> Result<()> {
    client.subscribe(topic, qos).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await? {
                Ev::SubAck { ok: true } => return Ok(()),
                Ev::SubAck { ok: false } => bail!("broker refused subscription to {topic}"),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow!("timed out waiting for SUBACK on {topic}"))?
}

/// Sends DISCONNECT and polls until it has been written (bounded by `timeout`).
pub async fn disconnect_and_wait(client: &Client, el: &mut EventLoop, timeout: Duration) {
    if client.disconnect().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(timeout, async {
        loop {
            match el.poll().await {
                Ok(Ev::OutgoingDisconnect) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Waits for connection tasks that each return their index with a connected client; the
/// clients in index order, or the first error (the other tasks are then aborted).
pub async fn join_in_order(
    mut set: tokio::task::JoinSet<Result<(usize, Client, EventLoop)>>,
) -> Result<Vec<(usize, Client, EventLoop)>> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.context("connect task panicked")? {
            Ok(c) => out.push(c),
            Err(e) => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    out.sort_by_key(|(i, ..)| *i);
    Ok(out)
}
