//! Session state: clean session / clean start, persistent sessions, redelivery (MQTT 3.1.1
//! §3.1.2.4 and §4.4, MQTT 5.0 §3.1.2.4, §3.1.2.11.2 and §4.4).

use std::time::Duration;

use seed_broker::codec::{Packet, QoS};

use crate::client::{Client, TestServer, ack, publish, v5_persistent, v311, v311_persistent};

/// [MQTT-3.1.2-6] If CleanSession is set to 1, the Client and Server MUST discard any
/// previous Session and start a new one. This Session lasts as long as the Network
/// Connection.
#[tokio::test]
async fn mqtt_3_1_2_6_clean_session_discards_state() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("clean-discard")).await.0;
    client.subscribe("s/discard", QoS::AtLeastOnce).await;
    client.disconnect().await;
    let (mut client, connack) = server.connect(v311("clean-discard")).await;
    assert!(!connack.session_present);
    let mut publisher = server.v311("clean-discard-pub").await;
    publisher.publish_qos1("s/discard", b"x", 1).await;
    client.expect_nothing(300).await;
    client.disconnect().await;
    // And the clean session did not outlive its connection.
    let (_client, connack) = server.connect(v311_persistent("clean-discard")).await;
    assert!(!connack.session_present);
}

/// [MQTT-3.1.2-4] If CleanSession is set to 0, the Server MUST resume communications with the
/// Client based on state from the current Session. [MQTT-3.1.2-5] After the disconnection of
/// a Session that had CleanSession set to 0, the Server MUST store further QoS 1 and QoS 2
/// messages that match any subscriptions that the client had at the time of disconnection
/// as part of the Session state.
#[tokio::test]
async fn mqtt_3_1_2_5_persistent_session_queues_qos1_and_qos2() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("persist")).await.0;
    client.subscribe("s/persist", QoS::ExactlyOnce).await;
    client.disconnect().await;
    let mut publisher = server.v311("persist-pub").await;
    publisher.publish_qos1("s/persist", b"one", 1).await;
    publisher.publish(publish("s/persist", b"two", QoS::ExactlyOnce, 2)).await;
    publisher.expect_pubrec().await;
    publisher.send(Packet::PubRel(ack(2))).await;
    publisher.expect_pubcomp().await;
    let (mut client, connack) = server.connect(v311_persistent("persist")).await;
    assert!(connack.session_present);
    let first = client.expect_publish().await;
    assert_eq!((first.payload.as_ref(), first.qos), (&b"one"[..], QoS::AtLeastOnce));
    client.send(Packet::PubAck(ack(first.packet_id))).await;
    let second = client.expect_publish().await;
    assert_eq!((second.payload.as_ref(), second.qos), (&b"two"[..], QoS::ExactlyOnce));
    // The subscription itself survived too.
    publisher.publish_qos1("s/persist", b"three", 3).await;
    assert_eq!(client.expect_publish().await.payload.as_ref(), b"three");
}

/// [MQTT-4.4.0-1] When a Client reconnects with CleanSession set to 0, both the Client and
/// Server MUST re-send any unacknowledged PUBLISH Packets (where QoS > 0) and PUBREL Packets
/// using their original Packet Identifiers. [MQTT-3.3.1-1] The DUP flag MUST be set to 1 by
/// the Client or Server when it attempts to re-deliver a PUBLISH Packet.
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_publish_resent_with_dup() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("resend")).await.0;
    client.subscribe("s/resend", QoS::AtLeastOnce).await;
    let mut publisher = server.v311("resend-pub").await;
    publisher.publish_qos1("s/resend", b"unacked", 1).await;
    let first = client.expect_publish().await;
    assert!(!first.dup);
    client.drop_abruptly();
    let (mut client, connack) = Client::connect(server.addr, v311_persistent("resend")).await;
    assert!(connack.session_present);
    let again = client.expect_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload.as_ref(), b"unacked");
    client.send(Packet::PubAck(ack(again.packet_id))).await;
    client.drop_abruptly();
    // Acknowledged: not sent a third time.
    let (mut client, _) = Client::connect(server.addr, v311_persistent("resend")).await;
    client.expect_nothing(300).await;
}

/// [MQTT-4.4.0-1] ... and PUBREL Packets using their original Packet Identifiers: a QoS 2
/// delivery that got PUBREC but no PUBCOMP is resumed with PUBREL, not PUBLISH.
#[tokio::test]
async fn mqtt_4_4_0_1_pubrel_resent_on_reconnect() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("rerel")).await.0;
    client.subscribe("s/rerel", QoS::ExactlyOnce).await;
    let mut publisher = server.v311("rerel-pub").await;
    publisher.publish(publish("s/rerel", b"q2", QoS::ExactlyOnce, 1)).await;
    publisher.expect_pubrec().await;
    publisher.send(Packet::PubRel(ack(1))).await;
    publisher.expect_pubcomp().await;
    let p = client.expect_publish().await;
    client.send(Packet::PubRec(ack(p.packet_id))).await;
    assert_eq!(client.expect_pubrel().await.packet_id, p.packet_id);
    client.drop_abruptly();
    let (mut client, _) = Client::connect(server.addr, v311_persistent("rerel")).await;
    assert_eq!(client.expect_pubrel().await.packet_id, p.packet_id);
    client.send(Packet::PubComp(ack(p.packet_id))).await;
    client.expect_nothing(300).await;
}

/// [MQTT-4.3.3-2] / [MQTT-4.4.0-1] The server, as QoS 2 receiver, keeps the packet id of an
/// unreleased PUBLISH in the session: after reconnecting, the client's resent PUBREL gets
/// PUBCOMP and the message is delivered exactly once.
#[tokio::test]
async fn mqtt_4_4_0_1_client_pubrel_after_reconnect() {
    let server = TestServer::start().await;
    let mut sub = server.v311("qos2-resume-sub").await;
    sub.subscribe("s/q2resume", QoS::AtMostOnce).await;
    let mut client = server.connect(v311_persistent("qos2-resume")).await.0;
    client.publish(publish("s/q2resume", b"once", QoS::ExactlyOnce, 8)).await;
    client.expect_pubrec().await;
    client.drop_abruptly();
    let (mut client, _) = Client::connect(server.addr, v311_persistent("qos2-resume")).await;
    let mut dup = publish("s/q2resume", b"once", QoS::ExactlyOnce, 8);
    dup.dup = true;
    client.publish(dup).await;
    assert_eq!(client.expect_pubrec().await.packet_id, 8);
    client.send(Packet::PubRel(ack(8))).await;
    assert_eq!(client.expect_pubcomp().await.packet_id, 8);
    assert_eq!(sub.expect_publish().await.payload.as_ref(), b"once");
    sub.expect_nothing(300).await;
}

/// [MQTT-3.1.2-23] (5.0) The Client and Server MUST store the Session State after the
/// Network Connection is closed if the Session Expiry Interval is greater than 0; the
/// session ends once the interval has passed.
#[tokio::test]
async fn mqtt_3_1_2_23_v5_session_expiry_interval() {
    let server = TestServer::start().await;
    let client = server.connect(v5_persistent("expiry", 1)).await.0;
    client.disconnect().await;
    let (client, connack) = server.connect(v5_persistent("expiry", 1)).await;
    assert!(connack.session_present, "resumed within the interval");
    client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_client, connack) = server.connect(v5_persistent("expiry", 1)).await;
    assert!(!connack.session_present, "expired after the interval");
}

/// [MQTT-3.1.2-4] (5.0) If a CONNECT packet is received with Clean Start set to 1, the
/// Client and Server MUST discard any existing Session and start a new Session; a 5.0 client
/// without a Session Expiry Interval keeps no session after the connection.
#[tokio::test]
async fn mqtt_3_1_2_4_v5_no_session_expiry_means_no_session() {
    let server = TestServer::start().await;
    let mut connect = v5_persistent("no-expiry", 0);
    connect.properties.session_expiry_interval = None;
    let client = server.connect(connect.clone()).await.0;
    client.disconnect().await;
    let (_client, connack) = server.connect(connect).await;
    assert!(!connack.session_present);
}

/// [MQTT-3.1.2-4] / [MQTT-3.1.2-5] The Session state (subscriptions and queued QoS 1/2
/// messages) and retained messages survive a server restart: the server stores them, it
/// does not just keep them in memory.
#[tokio::test]
async fn mqtt_3_1_2_5_session_state_survives_restart() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("restart")).await.0;
    client.subscribe("s/restart", QoS::AtLeastOnce).await;
    client.disconnect().await;
    let mut publisher = server.v311("restart-pub").await;
    publisher.publish_qos1("s/restart", b"queued", 1).await;
    publisher.publish_retained("s/restart-ret", b"retained", 2).await;
    publisher.disconnect().await;
    let server = server.restart().await;
    let (mut client, connack) = server.connect(v311_persistent("restart")).await;
    assert!(connack.session_present);
    let p = client.expect_publish().await;
    assert_eq!((p.payload.as_ref(), p.qos), (&b"queued"[..], QoS::AtLeastOnce));
    client.send(Packet::PubAck(ack(p.packet_id))).await;
    let mut publisher = server.v311("restart-pub").await;
    publisher.publish_qos1("s/restart", b"live", 1).await;
    assert_eq!(client.expect_publish().await.payload.as_ref(), b"live");
    let mut late = server.v311("restart-late").await;
    late.subscribe("s/restart-ret", QoS::AtMostOnce).await;
    assert_eq!(late.expect_publish().await.payload.as_ref(), b"retained");
}

/// [MQTT-4.4.0-1] An unacknowledged delivery survives a restart too, and is re-sent with DUP
/// set and its original Packet Identifier.
#[tokio::test]
async fn mqtt_4_4_0_1_inflight_resent_after_restart() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("restart-inflight")).await.0;
    client.subscribe("s/rinflight", QoS::AtLeastOnce).await;
    let mut publisher = server.v311("restart-inflight-pub").await;
    publisher.publish_qos1("s/rinflight", b"unacked", 1).await;
    let first = client.expect_publish().await;
    client.drop_abruptly();
    publisher.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = server.restart().await;
    let (mut client, _) = Client::connect(server.addr, v311_persistent("restart-inflight")).await;
    let again = client.expect_publish().await;
    assert_eq!(again.payload.as_ref(), b"unacked");
    assert_eq!(again.packet_id, first.packet_id);
    assert!(again.dup);
}

/// [MQTT-3.1.2-4] (5.0) Clean Start 1 discards an existing persistent session even if its
/// expiry has not passed.
#[tokio::test]
async fn mqtt_3_1_2_4_v5_clean_start_discards_persistent_session() {
    let server = TestServer::start().await;
    let mut client = server.connect(v5_persistent("v5-clean", 60)).await.0;
    client.subscribe("s/v5clean", QoS::AtLeastOnce).await;
    client.disconnect().await;
    let mut connect = v5_persistent("v5-clean", 60);
    connect.clean_start = true;
    let (mut client, connack) = server.connect(connect).await;
    assert!(!connack.session_present);
    let mut publisher = server.v5("v5-clean-pub").await;
    publisher.publish_qos1("s/v5clean", b"x", 1).await;
    client.expect_nothing(300).await;
}

/// [MQTT-3.10.4-2] In a persistent session an UNSUBSCRIBE is part of the session state:
/// after reconnecting no messages arrive for the removed subscription.
#[tokio::test]
async fn mqtt_3_10_4_2_unsubscribe_persists_in_session() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("unsub-persist")).await.0;
    client.subscribe("s/unsub", QoS::AtLeastOnce).await;
    client.unsubscribe(2, &["s/unsub"]).await;
    client.disconnect().await;
    let mut publisher = server.v311("unsub-persist-pub").await;
    publisher.publish_qos1("s/unsub", b"x", 1).await;
    let server = server.restart().await;
    let (mut client, connack) = server.connect(v311_persistent("unsub-persist")).await;
    assert!(connack.session_present);
    client.expect_nothing(300).await;
}

/// (5.0 §3.2.2.3.2) If the Server uses a Session Expiry Interval different
/// from the one the Client asked for, it sends it in the CONNACK.
#[tokio::test]
async fn mqtt_3_2_2_v5_connack_session_expiry_when_capped() {
    let server = TestServer::with(|b| b.max_session_expiry = 10).await;
    let (_client, connack) = server.connect(v5_persistent("capped", 100)).await;
    assert_eq!(connack.properties.session_expiry_interval, Some(10));
    let (_client, connack) = server.connect(v5_persistent("uncapped", 5)).await;
    assert_eq!(connack.properties.session_expiry_interval, None);
}

/// [MQTT-4.4.0-1] / [MQTT-3.3.1-1] A QoS 2 delivery without PUBREC is re-sent as PUBLISH
/// with DUP set and the original Packet Identifier when the session resumes, also when the
/// resuming connection takes over the old one.
#[tokio::test]
async fn mqtt_4_4_0_1_qos2_publish_resent_on_take_over() {
    let server = TestServer::start().await;
    let mut old = server.connect(v311_persistent("resend-q2")).await.0;
    old.subscribe("s/resendq2", QoS::ExactlyOnce).await;
    let mut publisher = server.v311("resend-q2-pub").await;
    publisher.publish(publish("s/resendq2", b"q2", QoS::ExactlyOnce, 1)).await;
    publisher.expect_pubrec().await;
    publisher.send(Packet::PubRel(ack(1))).await;
    publisher.expect_pubcomp().await;
    let first = old.expect_publish().await;
    assert!(!first.dup);
    let (mut new, connack) = Client::connect(server.addr, v311_persistent("resend-q2")).await;
    assert!(connack.session_present);
    old.expect_closed().await;
    let again = new.expect_publish().await;
    assert_eq!((again.dup, again.packet_id, again.qos), (true, first.packet_id, QoS::ExactlyOnce));
    new.send(Packet::PubRec(ack(again.packet_id))).await;
    assert_eq!(new.expect_pubrel().await.packet_id, again.packet_id);
    new.send(Packet::PubComp(ack(again.packet_id))).await;
    new.expect_nothing(300).await;
}

/// [MQTT-3.1.2-6] Take-over by a connection with CleanSession 1 discards the old persistent
/// session: Session Present 0 and no message for the old subscription.
#[tokio::test]
async fn mqtt_3_1_2_6_clean_take_over_discards_session() {
    let server = TestServer::start().await;
    let mut old = server.connect(v311_persistent("clean-take")).await.0;
    old.subscribe("s/cleantake", QoS::AtLeastOnce).await;
    let (mut new, connack) = Client::connect(server.addr, v311("clean-take")).await;
    assert!(!connack.session_present);
    old.expect_closed().await;
    let mut publisher = server.v311("clean-take-pub").await;
    publisher.publish_qos1("s/cleantake", b"x", 1).await;
    new.expect_nothing(300).await;
}

/// [MQTT-4.6.0-1] When it re-sends any PUBLISH packets, it MUST re-send them in the order
/// in which the original PUBLISH packets were sent: on reconnect the unacknowledged messages
/// come first, then the ones queued while the client was away, in the original order.
#[tokio::test]
async fn mqtt_4_6_0_1_redelivery_order_after_reconnect() {
    let server = TestServer::start().await;
    let mut client = server.connect(v311_persistent("redeliver-order")).await.0;
    client.subscribe("s/rorder", QoS::AtLeastOnce).await;
    let mut publisher = server.v311("redeliver-order-pub").await;
    publisher.publish_qos1("s/rorder", b"1", 1).await;
    publisher.publish_qos1("s/rorder", b"2", 2).await;
    client.expect_publish().await;
    client.expect_publish().await;
    client.drop_abruptly();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publisher.publish_qos1("s/rorder", b"3", 3).await;
    publisher.publish_qos1("s/rorder", b"4", 4).await;
    let (mut client, _) = Client::connect(server.addr, v311_persistent("redeliver-order")).await;
    for (payload, dup) in [(b"1", true), (b"2", true), (b"3", false), (b"4", false)] {
        let p = client.expect_publish().await;
        assert_eq!((p.payload.as_ref(), p.dup), (&payload[..], dup));
        client.send(Packet::PubAck(ack(p.packet_id))).await;
    }
}
