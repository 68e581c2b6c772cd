//! Will messages (MQTT 3.1.1 §3.1.2.5–3.1.2.7, MQTT 5.0 §3.1.2.5 and §3.1.3.2).

use std::time::Duration;

use seed_broker::codec::{Disconnect, Packet, QoS, ReasonCode};

use crate::client::{Client, TestServer, v5, v5_persistent, v311, will};

/// [MQTT-3.1.2-8] If the Will Flag is set to 1 this indicates that, if the Connect request is
/// accepted, a Will Message MUST be stored on the Server and associated with the Network
/// Connection. The Will Message MUST be published when the Network Connection is
/// subsequently closed unless the Will Message has been deleted by the Server on receipt of
/// a DISCONNECT Packet.
#[tokio::test]
async fn mqtt_3_1_2_8_will_published_on_abnormal_close() {
    let server = TestServer::start().await;
    let mut watcher = server.v311("will-watch").await;
    watcher.subscribe("w/abnormal", QoS::AtLeastOnce).await;
    let mut connect = v311("will-abnormal");
    connect.will = Some(will("w/abnormal", "gone", QoS::AtLeastOnce, false));
    let (client, _) = server.connect(connect).await;
    client.drop_abruptly();
    let p = watcher.expect_publish().await;
    assert_eq!((p.topic.as_str(), p.payload.as_ref()), ("w/abnormal", &b"gone"[..]));
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

/// [MQTT-3.1.2-10] The Will Message MUST be removed from the stored Session state in the
/// Server once it has been published or the Server has received a DISCONNECT packet from
/// the Client.
#[tokio::test]
async fn mqtt_3_1_2_10_no_will_after_disconnect() {
    let server = TestServer::start().await;
    let mut watcher = server.v311("will-nd-watch").await;
    watcher.subscribe("w/normal", QoS::AtMostOnce).await;
    let mut connect = v311("will-normal");
    connect.will = Some(will("w/normal", "gone", QoS::AtMostOnce, false));
    let (client, _) = server.connect(connect).await;
    client.disconnect().await;
    watcher.expect_nothing(500).await;
}

/// [MQTT-3.1.2-8] The will is published when the server closes the connection because of a
/// protocol violation (here: a second CONNECT).
#[tokio::test]
async fn mqtt_3_1_2_8_will_published_on_protocol_violation() {
    let server = TestServer::start().await;
    let mut watcher = server.v311("will-pv-watch").await;
    watcher.subscribe("w/violation", QoS::AtMostOnce).await;
    let mut connect = v311("will-violation");
    connect.will = Some(will("w/violation", "broken", QoS::AtMostOnce, false));
    let (mut client, _) = server.connect(connect).await;
    client.send(Packet::Connect(Box::new(v311("will-violation")))).await;
    client.expect_closed().await;
    assert_eq!(watcher.expect_publish().await.payload.as_ref(), b"broken");
}

/// [MQTT-3.1.2-17] If the Will Flag is set to 1 and Will Retain is set to 1, the Server MUST
/// publish the Will Message as a retained message.
#[tokio::test]
async fn mqtt_3_1_2_17_will_retain() {
    let server = TestServer::start().await;
    let mut connect = v311("will-retain");
    connect.will = Some(will("w/retain", "last words", QoS::AtMostOnce, true));
    let (client, _) = server.connect(connect).await;
    client.drop_abruptly();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = server.v311("will-retain-late").await;
    late.subscribe("w/retain", QoS::AtMostOnce).await;
    let p = late.expect_publish().await;
    assert!(p.retain);
    assert_eq!(p.payload.as_ref(), b"last words");
}

/// [MQTT-3.1.2-16] If the Will Flag is set to 1 and If Will Retain is set to 0, the Server
/// MUST publish the Will Message as a non-retained message.
#[tokio::test]
async fn mqtt_3_1_2_16_will_not_retained() {
    let server = TestServer::start().await;
    let mut connect = v311("will-noretain");
    connect.will = Some(will("w/noretain", "x", QoS::AtMostOnce, false));
    let (client, _) = server.connect(connect).await;
    client.drop_abruptly();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = server.v311("will-noretain-late").await;
    late.subscribe("w/noretain", QoS::AtMostOnce).await;
    late.expect_nothing(300).await;
}

/// [MQTT-3.14.4-3] (5.0) On receipt of DISCONNECT with a Reason Code of 0x00 (Success) the
/// Server MUST discard any Will Message associated with the current Connection without
/// publishing it; with 0x04 (Disconnect with Will Message) the Will Message is published.
#[tokio::test]
async fn mqtt_3_14_4_3_v5_disconnect_with_will_publishes_it() {
    let server = TestServer::start().await;
    let mut watcher = server.v5("will-04-watch").await;
    watcher.subscribe("w/04", QoS::AtMostOnce).await;
    let mut connect = v5("will-04");
    connect.will = Some(will("w/04", "on purpose", QoS::AtMostOnce, false));
    let (mut client, _) = server.connect(connect).await;
    let disconnect = Disconnect { reason: ReasonCode::DISCONNECT_WITH_WILL, ..Default::default() };
    client.send(Packet::Disconnect(disconnect)).await;
    client.expect_closed().await;
    assert_eq!(watcher.expect_publish().await.payload.as_ref(), b"on purpose");

    let mut connect = v5("will-00");
    connect.will = Some(will("w/04", "discarded", QoS::AtMostOnce, false));
    let (client, _) = server.connect(connect).await;
    client.disconnect().await;
    watcher.expect_nothing(400).await;
}

/// [MQTT-3.1.3-9] (5.0) If a new Network Connection to this Session is made before the Will
/// Delay Interval has passed, the Server MUST NOT send the Will Message.
#[tokio::test]
async fn mqtt_3_1_3_9_v5_will_delay_cancelled_by_reconnect() {
    let server = TestServer::start().await;
    let mut watcher = server.v5("will-delay-watch").await;
    watcher.subscribe("w/delay", QoS::AtMostOnce).await;
    let mut connect = v5_persistent("will-delay", 60);
    let mut last_will = will("w/delay", "late", QoS::AtMostOnce, false);
    last_will.properties.will_delay_interval = Some(1);
    connect.will = Some(last_will);
    let (client, _) = server.connect(connect).await;
    client.drop_abruptly();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut back, connack) = server.connect(v5_persistent("will-delay", 60)).await;
    assert!(connack.session_present);
    watcher.expect_nothing(1500).await;
    back.sync().await;
}

/// [MQTT-3.1.2-8] (5.0 §3.1.3.2.2) The Server delays publishing the Client's Will Message
/// until the Will Delay Interval has passed: the will arrives after the delay, not before.
#[tokio::test]
async fn mqtt_3_1_3_2_v5_will_published_after_delay() {
    let server = TestServer::start().await;
    let mut watcher = server.v5("will-after-watch").await;
    watcher.subscribe("w/after", QoS::AtMostOnce).await;
    let mut connect = v5_persistent("will-after", 60);
    let mut last_will = will("w/after", "delayed", QoS::AtMostOnce, false);
    last_will.properties.will_delay_interval = Some(1);
    connect.will = Some(last_will);
    let (client, _) = server.connect(connect).await;
    client.drop_abruptly();
    watcher.expect_nothing(600).await;
    let p = watcher.expect_publish().await;
    assert_eq!(p.payload.as_ref(), b"delayed");
    assert!(p.properties.will_delay_interval.is_none(), "will delay is not a PUBLISH property");
}

/// [MQTT-3.1.2-8] The will is also published when the server closes the connection for a
/// keep-alive timeout.
#[tokio::test]
async fn mqtt_3_1_2_8_will_published_on_keep_alive_timeout() {
    let server = TestServer::start().await;
    let mut watcher = server.v311("will-ka-watch").await;
    watcher.subscribe("w/ka", QoS::AtMostOnce).await;
    let mut connect = v311("will-ka");
    connect.keep_alive = 1;
    connect.will = Some(will("w/ka", "timed out", QoS::AtMostOnce, false));
    let (mut client, _) = Client::connect(server.addr, connect).await;
    client.expect_closed_within(Duration::from_secs(3)).await;
    assert_eq!(watcher.expect_publish().await.payload.as_ref(), b"timed out");
}
