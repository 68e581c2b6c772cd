//! A raw MQTT test client and an in-process test server, for the conformance tests.
//!
//! The client speaks through the broker's own codec but does nothing on its own: no automatic
//! acknowledgements, no keep-alive pings, no retries. Every byte the tests want on the wire is
//! sent explicitly, and every packet the server sends is read and checked explicitly.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use seed_broker::codec::{
    ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Protocol, PubAck, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionOptions, TopicSubscription, UnsubAck, Unsubscribe,
    decode, encode,
};
use seed_broker::config::BrokerConfig;
use seed_broker::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `expect` waits for a packet before failing the test.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// An in-process broker on an ephemeral port with its own data directory.
pub struct TestServer {
    _server: Server,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    /// Starts a server after letting the test adjust the broker settings.
    pub async fn with(adjust: impl FnOnce(&mut BrokerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.listeners.mqtt = Some(([127, 0, 0, 1], 0).into());
        config.listeners.ws = None;
        config.listeners.http = None;
        config.listeners.tls = None;
        config.store.data_dir = dir.path().to_path_buf();
        config.store.fsync = false;
        adjust(&mut config.broker);
        let server = Server::start(config, vec![], seed_broker::http::Router::new())
            .await
            .expect("server starts");
        let addr = server.bound.mqtt.expect("mqtt listener bound");
        TestServer { _server: server, addr, _dir: dir }
    }

    /// Shuts the server down gracefully and starts a new one on the same data directory
    /// (default broker settings, new port).
    pub async fn restart(self) -> TestServer {
        let TestServer { _server: server, _dir: dir, .. } = self;
        server.shutdown().await;
        let mut config = Config::default();
        config.listeners.mqtt = Some(([127, 0, 0, 1], 0).into());
        config.listeners.ws = None;
        config.listeners.http = None;
        config.listeners.tls = None;
        config.store.data_dir = dir.path().to_path_buf();
        config.store.fsync = false;
        let server = Server::start(config, vec![], seed_broker::http::Router::new())
            .await
            .expect("server restarts");
        let addr = server.bound.mqtt.expect("mqtt listener bound");
        TestServer { _server: server, addr, _dir: dir }
    }

    /// Connects a client and asserts the CONNACK is a success.
    pub async fn connect(&self, connect: Connect) -> (Client, ConnAck) {
        let (client, connack) = Client::connect(self.addr, connect).await;
        assert_eq!(connack.code, ReasonCode::SUCCESS, "CONNACK refused: {connack:?}");
        (client, connack)
    }

    /// Connects a 3.1.1 client with a clean session and returns it.
    pub async fn v311(&self, id: &str) -> Client {
        self.connect(v311(id)).await.0
    }

    /// Connects a 5.0 client with a clean start and returns it.
    pub async fn v5(&self, id: &str) -> Client {
        self.connect(v5(id)).await.0
    }
}

/// A 3.1.1 CONNECT with a clean session and a 30 s keep-alive.
pub fn v311(id: &str) -> Connect {
    Connect {
        protocol: Protocol::V3_1_1,
        clean_start: true,
        keep_alive: 30,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A 5.0 CONNECT with a clean start, no session expiry and a 30 s keep-alive.
pub fn v5(id: &str) -> Connect {
    Connect { protocol: Protocol::V5, ..v311(id) }
}

/// A 3.1.1 persistent-session CONNECT (clean session 0).
pub fn v311_persistent(id: &str) -> Connect {
    Connect { clean_start: false, ..v311(id) }
}

/// A 5.0 CONNECT that resumes (clean start 0) a session lasting `expiry` seconds.
pub fn v5_persistent(id: &str, expiry: u32) -> Connect {
    let mut connect = Connect { clean_start: false, ..v5(id) };
    connect.properties.session_expiry_interval = Some(expiry);
    connect
}

pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: Properties::default(),
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions { qos, ..SubscriptionOptions::default() }
}

pub fn ack(packet_id: u16) -> PubAck {
    PubAck::new(packet_id, ReasonCode::SUCCESS)
}

/// A raw MQTT client: one TCP connection and a read buffer.
pub struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    pub protocol: Protocol,
}

impl Client {
    /// Opens the TCP connection only; nothing is sent.
    pub async fn tcp(addr: SocketAddr, protocol: Protocol) -> Client {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, rbuf: BytesMut::new(), protocol }
    }

    /// Sends `connect` and returns the client with the CONNACK, whatever its code.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (Client, ConnAck) {
        let mut client = Client::tcp(addr, connect.protocol).await;
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.expect().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        encode(&packet, self.protocol, &mut buf).expect("encodable packet");
        self.send_raw(&buf).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // A write may fail if the server already closed; the test checks the outcome.
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn publish(&mut self, publish: Publish) {
        self.send(Packet::Publish(publish)).await;
    }

    /// The next packet; `Ok(None)` on EOF or reset, `Err(())` on timeout.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match decode(&mut self.rbuf, self.protocol, usize::MAX) {
                Ok(Some(packet)) => return Ok(Some(packet)),
                Ok(None) => {}
                Err(e) => panic!("server sent an undecodable packet: {e}"),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf));
            match read.await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next packet, which must arrive within [`TIMEOUT`].
    pub async fn expect(&mut self) -> Packet {
        match self.recv(TIMEOUT).await {
            Ok(Some(packet)) => packet,
            Ok(None) => panic!("connection closed while a packet was expected"),
            Err(()) => panic!("no packet within {TIMEOUT:?}"),
        }
    }

    pub async fn expect_publish(&mut self) -> Publish {
        match self.expect().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn expect_puback(&mut self) -> PubAck {
        match self.expect().await {
            Packet::PubAck(a) => a,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    pub async fn expect_pubrec(&mut self) -> PubAck {
        match self.expect().await {
            Packet::PubRec(a) => a,
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }

    pub async fn expect_pubrel(&mut self) -> PubAck {
        match self.expect().await {
            Packet::PubRel(a) => a,
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }

    pub async fn expect_pubcomp(&mut self) -> PubAck {
        match self.expect().await {
            Packet::PubComp(a) => a,
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    }

    pub async fn expect_suback(&mut self) -> SubAck {
        match self.expect().await {
            Packet::SubAck(a) => a,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn expect_unsuback(&mut self) -> UnsubAck {
        match self.expect().await {
            Packet::UnsubAck(a) => a,
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Asserts no packet arrives (and the connection stays open) for `ms` milliseconds.
    pub async fn expect_nothing(&mut self, ms: u64) {
        match self.recv(Duration::from_millis(ms)).await {
            Err(()) => {}
            Ok(Some(packet)) => panic!("expected nothing, got {packet:?}"),
            Ok(None) => panic!("expected nothing, but the connection closed"),
        }
    }

    /// Asserts the server closes the connection within `timeout`, possibly after a 5.0
    /// DISCONNECT, which is returned. Any other packet fails the test.
    pub async fn expect_closed_within(&mut self, timeout: Duration) -> Option<Disconnect> {
        let mut disconnect = None;
        loop {
            match self.recv(timeout).await {
                Ok(None) => return disconnect,
                Ok(Some(Packet::Disconnect(d))) if disconnect.is_none() => disconnect = Some(d),
                Ok(Some(packet)) => panic!("expected the connection to close, got {packet:?}"),
                Err(()) => panic!("connection still open after {timeout:?}"),
            }
        }
    }

    pub async fn expect_closed(&mut self) -> Option<Disconnect> {
        self.expect_closed_within(TIMEOUT).await
    }

    /// Asserts the server sends a 5.0 DISCONNECT with `reason` and closes.
    pub async fn expect_disconnect(&mut self, reason: ReasonCode) {
        let disconnect = self.expect_closed().await;
        let got = disconnect.map(|d| d.reason);
        assert_eq!(got, Some(reason), "expected DISCONNECT {reason:?} before the close");
    }

    /// Subscribes to one filter and returns the SUBACK (checked for the packet id).
    pub async fn subscribe_with(
        &mut self,
        packet_id: u16,
        filter: &str,
        options: SubscriptionOptions,
        properties: Properties,
    ) -> SubAck {
        let filters = vec![TopicSubscription { filter: filter.into(), options }];
        self.send(Packet::Subscribe(Subscribe { packet_id, filters, properties })).await;
        let suback = self.expect_suback().await;
        assert_eq!(suback.packet_id, packet_id);
        suback
    }

    /// Subscribes to one filter at `qos` and asserts it was granted.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let suback = self.subscribe_with(1, filter, opts(qos), Properties::default()).await;
        assert_eq!(suback.reasons, vec![ReasonCode(qos as u8)], "subscription refused");
    }

    pub async fn unsubscribe(&mut self, packet_id: u16, filters: &[&str]) -> UnsubAck {
        let filters = filters.iter().map(|f| f.to_string()).collect();
        let properties = Properties::default();
        self.send(Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })).await;
        self.expect_unsuback().await
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish_qos1(&mut self, topic: &str, payload: &[u8], packet_id: u16) {
        self.publish(publish(topic, payload, QoS::AtLeastOnce, packet_id)).await;
        let ack = self.expect_puback().await;
        assert_eq!(ack.packet_id, packet_id);
    }

    /// A retained QoS 1 publish, waiting for its PUBACK.
    pub async fn publish_retained(&mut self, topic: &str, payload: &[u8], packet_id: u16) {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, packet_id);
        p.retain = true;
        self.publish(p).await;
        assert_eq!(self.expect_puback().await.packet_id, packet_id);
    }

    /// Sends a normal DISCONNECT and waits for the server to close.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect::default())).await;
        let _ = self.recv(TIMEOUT).await;
    }

    /// Drops the socket without DISCONNECT (an abnormal close).
    pub fn drop_abruptly(self) {
        drop(self);
    }

    /// Round trip through PINGREQ/PINGRESP: everything sent before has been processed.
    pub async fn sync(&mut self) {
        self.send(Packet::PingReq).await;
        match self.expect().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}
