//! Keep alive and PINGREQ/PINGRESP (MQTT 3.1.1 §3.1.2.10 and §3.12, MQTT 5.0 likewise).

use std::time::Duration;

use seed_broker::codec::{Packet, QoS, ReasonCode};

use crate::client::{Client, TestServer, publish, v5, v311};

/// [MQTT-3.1.2-24] If the Keep Alive value is non-zero and the Server does not receive a
/// Control Packet from the Client within one and a half times the Keep Alive time period, it
/// MUST disconnect the Network Connection to the Client as if the network had failed.
#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_timeout_closes() {
    let server = TestServer::start().await;
    let mut connect = v311("ka-timeout");
    connect.keep_alive = 1;
    let (mut client, _) = server.connect(connect).await;
    let start = tokio::time::Instant::now();
    assert!(client.expect_closed_within(Duration::from_secs(3)).await.is_none());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1400), "closed too early: {waited:?}");
}

/// [MQTT-3.1.2-22] (5.0): a keep-alive timeout is reported to a 5.0 client with DISCONNECT
/// 0x8D (Keep Alive timeout).
#[tokio::test]
async fn mqtt_3_1_2_22_v5_keep_alive_timeout_reason() {
    let server = TestServer::start().await;
    let mut connect = v5("ka-timeout-5");
    connect.keep_alive = 1;
    let (mut client, _) = server.connect(connect).await;
    let disconnect = client.expect_closed_within(Duration::from_secs(3)).await;
    assert_eq!(disconnect.map(|d| d.reason), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
}

/// [MQTT-3.12.4-1] The Server MUST send a PINGRESP Packet in response to a PINGREQ Packet.
#[tokio::test]
async fn mqtt_3_12_4_1_pingreq_gets_pingresp() {
    let server = TestServer::start().await;
    let mut client = server.v311("ping").await;
    for _ in 0..3 {
        client.send(Packet::PingReq).await;
        assert_eq!(client.expect().await, Packet::PingResp);
    }
}

/// [MQTT-3.1.2-23] (3.1.1 §3.1.2.10) The Client can send PINGREQ at any time; any Control
/// Packet resets the keep-alive timer, so a client sending PINGREQs (or PUBLISHes) within
/// the keep-alive period stays connected.
#[tokio::test]
async fn mqtt_3_1_2_23_any_packet_keeps_the_connection_alive() {
    let server = TestServer::start().await;
    let mut connect = v311("ka-alive");
    connect.keep_alive = 1;
    let (mut client, _) = server.connect(connect).await;
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        if i % 2 == 0 {
            client.send(Packet::PingReq).await;
            assert_eq!(client.expect().await, Packet::PingResp);
        } else {
            client.publish(publish("ka/alive", b"x", QoS::AtMostOnce, 0)).await;
        }
    }
    client.sync().await;
}

/// [MQTT-3.1.2-10] (3.1.1 §3.1.2.10) A Keep Alive value of zero has the effect of turning off
/// the keep alive mechanism: the Server does not close an idle connection.
#[tokio::test]
async fn mqtt_3_1_2_10_keep_alive_zero_disables() {
    let server = TestServer::start().await;
    let mut connect = v311("ka-zero");
    connect.keep_alive = 0;
    let (mut client, _) = Client::connect(server.addr, connect).await;
    client.expect_nothing(2000).await;
    client.sync().await;
}

/// [MQTT-3.2.2-21] (5.0) If the Server sends a Server Keep Alive on the CONNACK packet, the
/// Client MUST use this value instead of the Keep Alive value the Client sent on CONNECT;
/// the server then enforces that value.
#[tokio::test]
async fn mqtt_3_2_2_21_v5_server_keep_alive() {
    let server = TestServer::with(|b| b.max_keep_alive = 1).await;
    let mut connect = v5("server-ka");
    connect.keep_alive = 0;
    let (mut client, connack) = server.connect(connect).await;
    assert_eq!(connack.properties.server_keep_alive, Some(1));
    let disconnect = client.expect_closed_within(Duration::from_secs(3)).await;
    assert_eq!(disconnect.map(|d| d.reason), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    let mut connect = v5("server-ka-2");
    connect.keep_alive = 600;
    let (_client, connack) = server.connect(connect).await;
    assert_eq!(connack.properties.server_keep_alive, Some(1));
}
