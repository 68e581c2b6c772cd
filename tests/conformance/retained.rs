//! Retained messages (MQTT 3.1.1 §3.3.1.3, MQTT 5.0 §3.3.1.3).

use seed_broker::codec::{Packet, QoS};

use crate::client::{TestServer, ack, publish};

/// [MQTT-3.3.1-5] If the RETAIN flag is set to 1, in a PUBLISH Packet sent by a Client to a
/// Server, the Server MUST store the Application Message and its QoS, so that it can be
/// delivered to future subscribers whose subscriptions match its topic name.
/// [MQTT-3.3.1-6] When a new subscription is established, the last retained message, if any,
/// on each matching topic name MUST be sent to the subscriber.
#[tokio::test]
async fn mqtt_3_3_1_6_retained_message_sent_to_new_subscriber() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("ret-pub").await;
    publisher.publish_retained("r/a", b"first", 1).await;
    publisher.publish_retained("r/a", b"last", 2).await;
    publisher.publish_retained("r/b", b"other", 3).await;
    let mut sub = server.v311("ret-sub").await;
    sub.subscribe("r/a", QoS::AtLeastOnce).await;
    let p = sub.expect_publish().await;
    assert_eq!((p.payload.as_ref(), p.qos), (&b"last"[..], QoS::AtLeastOnce));
    sub.send(Packet::PubAck(ack(p.packet_id))).await;
    sub.expect_nothing(200).await;
}

/// [MQTT-3.3.1-8] When sending a PUBLISH Packet to a Client the Server MUST set the RETAIN
/// flag to 1 if a message is sent as a result of a new subscription being made by a Client.
#[tokio::test]
async fn mqtt_3_3_1_8_retained_on_subscribe_has_retain_1() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("ret-flag-pub").await;
    publisher.publish_retained("r/flag/1", b"a", 1).await;
    publisher.publish_retained("r/flag/2", b"b", 2).await;
    let mut sub = server.v311("ret-flag-sub").await;
    sub.subscribe("r/flag/#", QoS::AtMostOnce).await;
    let mut got = [sub.expect_publish().await, sub.expect_publish().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert!(got.iter().all(|p| p.retain));
    assert_eq!(got[0].topic, "r/flag/1");
    assert_eq!(got[1].topic, "r/flag/2");
}

/// [MQTT-3.3.1-9] It MUST set the RETAIN flag to 0 when a PUBLISH Packet is sent to a Client
/// because it matches an established subscription regardless of how the flag was set in the
/// message it received.
#[tokio::test]
async fn mqtt_3_3_1_9_live_delivery_has_retain_0() {
    let server = TestServer::start().await;
    let mut sub = server.v311("ret-live-sub").await;
    sub.subscribe("r/live", QoS::AtLeastOnce).await;
    let mut publisher = server.v311("ret-live-pub").await;
    publisher.publish_retained("r/live", b"x", 1).await;
    assert!(!sub.expect_publish().await.retain);
}

/// [MQTT-3.3.1-10] A PUBLISH Packet with a RETAIN flag set to 1 and a payload containing
/// zero bytes will be processed as normal by the Server and sent to Clients with a
/// subscription matching the topic name. Additionally any existing retained message with
/// the same topic name MUST be removed. [MQTT-3.3.1-11] A zero byte retained message MUST NOT
/// be stored as a retained message on the Server.
#[tokio::test]
async fn mqtt_3_3_1_10_zero_byte_retained_clears() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("ret-clear-pub").await;
    publisher.publish_retained("r/clear", b"old", 1).await;
    let mut live = server.v311("ret-clear-live").await;
    live.subscribe("r/clear", QoS::AtMostOnce).await;
    assert!(live.expect_publish().await.retain);
    publisher.publish_retained("r/clear", b"", 2).await;
    let p = live.expect_publish().await;
    assert!(p.payload.is_empty(), "the empty message is delivered as normal");
    let mut late = server.v311("ret-clear-late").await;
    late.subscribe("r/clear", QoS::AtMostOnce).await;
    late.expect_nothing(300).await;
}

/// [MQTT-3.3.1-7] If the Server receives a QoS 0 message with the RETAIN flag set to 1 it
/// MUST discard any message previously retained for that topic. It SHOULD store the new QoS
/// 0 message as the new retained message for that topic.
#[tokio::test]
async fn mqtt_3_3_1_7_qos0_retained_replaces() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("ret-q0-pub").await;
    publisher.publish_retained("r/q0", b"qos1", 1).await;
    let mut p = publish("r/q0", b"qos0", QoS::AtMostOnce, 0);
    p.retain = true;
    publisher.publish(p).await;
    publisher.sync().await;
    let mut sub = server.v311("ret-q0-sub").await;
    sub.subscribe("r/q0", QoS::AtLeastOnce).await;
    let got = sub.expect_publish().await;
    assert_eq!((got.payload.as_ref(), got.qos), (&b"qos0"[..], QoS::AtMostOnce));
    sub.expect_nothing(200).await;
}

/// [MQTT-3.3.1-12] If the RETAIN flag is 0, in a PUBLISH Packet sent by a Client to a
/// Server, the Server MUST NOT store the message and MUST NOT remove or replace any existing
/// retained message.
#[tokio::test]
async fn mqtt_3_3_1_12_non_retained_publish_leaves_retained_alone() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("ret-keep-pub").await;
    publisher.publish_retained("r/keep", b"kept", 1).await;
    publisher.publish_qos1("r/keep", b"not retained", 2).await;
    publisher.publish_qos1("r/keep", b"", 3).await;
    let mut sub = server.v311("ret-keep-sub").await;
    sub.subscribe("r/keep", QoS::AtMostOnce).await;
    assert_eq!(sub.expect_publish().await.payload.as_ref(), b"kept");
    sub.expect_nothing(200).await;
}

/// [MQTT-3.1.2-7] Retained messages do not form part of the Session state in the Server,
/// they MUST NOT be deleted when the Session ends.
#[tokio::test]
async fn mqtt_3_1_2_7_retained_outlive_the_session() {
    let server = TestServer::start().await;
    let publisher = server.v311("ret-session-pub").await;
    let mut publisher = publisher;
    publisher.publish_retained("r/session", b"stays", 1).await;
    publisher.disconnect().await;
    let mut sub = server.v311("ret-session-sub").await;
    sub.subscribe("r/session", QoS::AtMostOnce).await;
    assert_eq!(sub.expect_publish().await.payload.as_ref(), b"stays");
}
