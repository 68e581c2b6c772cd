//! MQTT 5.0 features carried by properties and subscription options: topic aliases, flow
//! control, packet size limits, message expiry, subscription identifiers, no-local, retain
//! handling, retain-as-published, shared subscriptions and reason codes (MQTT 5.0 §3 and §4).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use seed_broker::codec::{
    Disconnect, Packet, Properties, PubAck, Publish, QoS, ReasonCode, RetainHandling,
    SubscriptionOptions,
};

use crate::client::{Client, TestServer, ack, opts, publish, v5, v5_persistent};

fn aliased(topic: &str, alias: u16, payload: &[u8]) -> Publish {
    let mut p = publish(topic, payload, QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(alias);
    p
}

fn with_sub_id(id: u32) -> Properties {
    Properties { subscription_identifiers: vec![id], ..Properties::default() }
}

/// (5.0 §3.2.2.3) The CONNACK tells the client the server's limits: Receive
/// Maximum, Maximum Packet Size and Topic Alias Maximum as configured.
#[tokio::test]
async fn mqtt_3_2_2_v5_connack_announces_server_limits() {
    let server = TestServer::with(|b| {
        b.receive_maximum = 10;
        b.max_packet_size = 4096;
        b.topic_alias_maximum = 5;
    })
    .await;
    let (_client, connack) = server.connect(v5("limits")).await;
    assert_eq!(connack.properties.receive_maximum, Some(10));
    assert_eq!(connack.properties.maximum_packet_size, Some(4096));
    assert_eq!(connack.properties.topic_alias_maximum, Some(5));
}

/// [MQTT-3.3.2-12] (5.0) A receiver that gets a PUBLISH with a Topic Alias and a non-empty
/// Topic Name sets the mapping; a later PUBLISH with a zero-length Topic Name and that alias
/// uses the mapped topic.
#[tokio::test]
async fn mqtt_3_3_2_12_topic_alias_mapping() {
    let server = TestServer::start().await;
    let mut sub = server.v5("alias-sub").await;
    sub.subscribe("alias/#", QoS::AtMostOnce).await;
    let mut client = server.v5("alias-pub").await;
    client.publish(aliased("alias/one", 1, b"a")).await;
    client.publish(aliased("", 1, b"b")).await;
    client.publish(aliased("alias/two", 1, b"c")).await;
    client.publish(aliased("", 1, b"d")).await;
    for (topic, payload) in
        [("alias/one", b"a"), ("alias/one", b"b"), ("alias/two", b"c"), ("alias/two", b"d")]
    {
        let p = sub.expect_publish().await;
        assert_eq!((p.topic.as_str(), p.payload.as_ref()), (topic, &payload[..]));
        assert_eq!(
            p.properties.topic_alias, None,
            "the server sends no alias it was not asked for"
        );
    }
}

/// [MQTT-3.3.2-11] (5.0) A sender MUST NOT send a Topic Alias greater than the receiver's
/// Topic Alias Maximum. The server uses aliases towards a client that accepts them: the
/// first PUBLISH on a topic carries topic and alias, later ones the alias alone, and no
/// alias exceeds the client's maximum.
#[tokio::test]
async fn mqtt_3_3_2_11_server_aliases_within_client_maximum() {
    let server = TestServer::start().await;
    let mut connect = v5("alias-out-sub");
    connect.properties.topic_alias_maximum = Some(1);
    let (mut sub, _) = server.connect(connect).await;
    sub.subscribe("out/#", QoS::AtMostOnce).await;
    let mut client = server.v5("alias-out-pub").await;
    for (topic, payload) in [("out/a", b"1"), ("out/a", b"2"), ("out/b", b"3"), ("out/a", b"4")] {
        client.publish(publish(topic, payload, QoS::AtMostOnce, 0)).await;
    }
    let expected = [("out/a", Some(1)), ("", Some(1)), ("out/b", None), ("", Some(1))];
    for (i, (topic, alias)) in expected.into_iter().enumerate() {
        let p = sub.expect_publish().await;
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), (topic, alias), "publish {i}");
    }
}

/// [MQTT-3.3.2-8] (5.0) A sender MUST NOT send a PUBLISH packet containing a Topic Alias
/// which has the value 0; the receiver treats it as 0x94 (Topic Alias invalid).
#[tokio::test]
async fn mqtt_3_3_2_8_topic_alias_0_is_invalid() {
    let server = TestServer::start().await;
    let mut client = server.v5("alias-zero").await;
    client.publish(aliased("t", 0, b"x")).await;
    let disconnect = client.expect_closed().await.map(|d| d.reason);
    assert!(
        matches!(disconnect, Some(ReasonCode::TOPIC_ALIAS_INVALID | ReasonCode::PROTOCOL_ERROR)),
        "got {disconnect:?}"
    );
}

/// [MQTT-3.3.2-10] (5.0) A Client MUST NOT send a PUBLISH packet with a Topic Alias greater
/// than the Topic Alias Maximum value returned by the Server in the CONNACK; the Server
/// closes with 0x94 (Topic Alias invalid).
#[tokio::test]
async fn mqtt_3_3_2_10_topic_alias_above_maximum_is_invalid() {
    let server = TestServer::with(|b| b.topic_alias_maximum = 3).await;
    let mut client = server.v5("alias-max").await;
    client.publish(aliased("t", 3, b"ok")).await;
    client.sync().await;
    client.publish(aliased("t", 4, b"too big")).await;
    client.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

/// (5.0 §3.3.2.3.4) A PUBLISH with an empty Topic Name and an alias that has
/// no mapping is a Protocol Error.
#[tokio::test]
async fn mqtt_3_3_2_v5_unknown_topic_alias_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut client = server.v5("alias-unknown").await;
    client.publish(aliased("", 2, b"x")).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// [MQTT-3.3.4-7] (5.0) The Client MUST NOT send more than Receive Maximum QoS 1 and QoS 2
/// PUBLISH packets for which it has not received PUBACK, PUBCOMP, or PUBREC with a Reason
/// Code of 128 or greater; the Server closes with 0x93 (Receive Maximum exceeded) when it
/// does (§4.9).
#[tokio::test]
async fn mqtt_3_3_4_7_receive_maximum_exceeded() {
    let server = TestServer::with(|b| b.receive_maximum = 2).await;
    let mut client = server.v5("recv-max").await;
    for id in 1..=2 {
        client.publish(publish("rm/t", b"x", QoS::ExactlyOnce, id)).await;
        assert_eq!(client.expect_pubrec().await.packet_id, id);
    }
    client.publish(publish("rm/t", b"x", QoS::ExactlyOnce, 3)).await;
    client.expect_disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED).await;
}

/// [MQTT-3.3.4-9] (5.0) The Server MUST NOT send more than Receive Maximum QoS 1 and QoS 2
/// PUBLISH packets for which it has not received PUBACK, PUBCOMP, or PUBREC with a Reason
/// Code of 128 or greater from the Client.
#[tokio::test]
async fn mqtt_3_3_4_9_server_respects_client_receive_maximum() {
    let server = TestServer::start().await;
    let mut connect = v5("client-recv-max");
    connect.properties.receive_maximum = Some(2);
    let (mut sub, _) = server.connect(connect).await;
    sub.subscribe("crm/t", QoS::AtLeastOnce).await;
    let mut publisher = server.v5("client-recv-max-pub").await;
    for i in 1..=4u16 {
        publisher.publish_qos1("crm/t", &[i as u8], i).await;
    }
    let a = sub.expect_publish().await;
    let b = sub.expect_publish().await;
    sub.expect_nothing(300).await;
    sub.send(Packet::PubAck(ack(a.packet_id))).await;
    let c = sub.expect_publish().await;
    sub.expect_nothing(200).await;
    sub.send(Packet::PubAck(ack(b.packet_id))).await;
    sub.send(Packet::PubAck(ack(c.packet_id))).await;
    assert_eq!(sub.expect_publish().await.payload.as_ref(), &[4]);
}

/// (5.0 §3.1.2.11.4, §4.13) A packet larger than the Server's Maximum Packet
/// Size is a "Packet too large" error: the Server sends DISCONNECT 0x95 and closes.
#[tokio::test]
async fn mqtt_4_13_v5_publish_over_server_maximum_packet_size() {
    let server = TestServer::with(|b| b.max_packet_size = 1024).await;
    let mut client = server.v5("too-large").await;
    client.publish(publish("big", &[0u8; 900], QoS::AtMostOnce, 0)).await;
    client.sync().await;
    client.publish(publish("big", &[0u8; 2000], QoS::AtMostOnce, 0)).await;
    client.expect_disconnect(ReasonCode::PACKET_TOO_LARGE).await;
}

/// [MQTT-3.1.2-24] (5.0) The Server MUST NOT send packets exceeding Maximum Packet Size to
/// the Client. [MQTT-3.1.2-25] Where a Packet is too large to send, the Server MUST discard
/// it without sending it and then behave as if it had completed sending that Application
/// Message.
#[tokio::test]
async fn mqtt_3_1_2_25_server_drops_packets_over_client_maximum() {
    let server = TestServer::start().await;
    let mut connect = v5("small-client");
    connect.properties.maximum_packet_size = Some(128);
    let (mut sub, _) = server.connect(connect).await;
    sub.subscribe("mps/t", QoS::AtLeastOnce).await;
    let mut publisher = server.v5("small-client-pub").await;
    publisher.publish_qos1("mps/t", &[1u8; 500], 1).await;
    publisher.publish(publish("mps/t", &[2u8; 500], QoS::AtMostOnce, 0)).await;
    publisher.publish_qos1("mps/t", b"small", 2).await;
    let p = sub.expect_publish().await;
    assert_eq!(p.payload.as_ref(), b"small");
    sub.send(Packet::PubAck(ack(p.packet_id))).await;
    sub.expect_nothing(300).await;
}

/// [MQTT-3.3.2-5] (5.0) If the Message Expiry Interval has passed and the Server has not
/// managed to start onward delivery to a matching subscriber, then it MUST delete the copy
/// of the message for that subscriber.
#[tokio::test]
async fn mqtt_3_3_2_5_expired_message_not_delivered() {
    let server = TestServer::start().await;
    server.connect(v5_persistent("expiring", 60)).await.0.disconnect().await;
    let mut sub = server.connect(v5_persistent("expiring", 60)).await.0;
    sub.subscribe("exp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = server.v5("expiring-pub").await;
    let mut p = publish("exp/t", b"short-lived", QoS::AtLeastOnce, 1);
    p.properties.message_expiry_interval = Some(1);
    publisher.publish(p).await;
    publisher.expect_puback().await;
    publisher.publish_qos1("exp/t", b"durable", 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut sub, _) = server.connect(v5_persistent("expiring", 60)).await;
    let got = sub.expect_publish().await;
    assert_eq!(got.payload.as_ref(), b"durable");
    assert_eq!(got.properties.message_expiry_interval, None);
}

/// [MQTT-3.3.2-6] (5.0) The PUBLISH packet sent to a Client by the Server MUST contain a
/// Message Expiry Interval set to the received value minus the time that the Application
/// Message has been waiting in the Server.
#[tokio::test]
async fn mqtt_3_3_2_6_expiry_interval_is_decremented() {
    let server = TestServer::start().await;
    let mut sub = server.connect(v5_persistent("decrement", 60)).await.0;
    sub.subscribe("dec/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = server.v5("decrement-pub").await;
    let mut p = publish("dec/t", b"x", QoS::AtLeastOnce, 1);
    p.properties.message_expiry_interval = Some(10);
    publisher.publish(p).await;
    publisher.expect_puback().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut sub, _) = server.connect(v5_persistent("decrement", 60)).await;
    let got = sub.expect_publish().await;
    let left = got.properties.message_expiry_interval.expect("expiry interval forwarded");
    assert!((8..10).contains(&left), "left {left}");
}

/// [MQTT-3.3.2-5] (5.0) applied to retained messages: an expired retained message is not
/// sent to a new subscriber.
#[tokio::test]
async fn mqtt_3_3_2_5_expired_retained_message_not_sent() {
    let server = TestServer::start().await;
    let mut publisher = server.v5("ret-expiry-pub").await;
    let mut p = publish("exp/ret", b"gone soon", QoS::AtLeastOnce, 1);
    p.retain = true;
    p.properties.message_expiry_interval = Some(1);
    publisher.publish(p).await;
    publisher.expect_puback().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut sub = server.v5("ret-expiry-sub").await;
    sub.subscribe("exp/ret", QoS::AtLeastOnce).await;
    sub.expect_nothing(300).await;
}

/// [MQTT-3.3.4-3] (5.0) If the Client specified a Subscription Identifier for any of the
/// overlapping subscriptions the Server MUST send those Subscription Identifiers in the
/// message which is published as the result of the subscriptions. [MQTT-3.3.4-4] If the
/// Server sends a single copy of the message it MUST include in the PUBLISH packet the
/// Subscription Identifiers for all matching subscriptions which have a Subscription
/// Identifiers.
#[tokio::test]
async fn mqtt_3_3_4_4_all_subscription_identifiers() {
    let server = TestServer::start().await;
    let mut sub = server.v5("sub-ids").await;
    sub.subscribe_with(1, "sid/+", opts(QoS::AtMostOnce), with_sub_id(11)).await;
    sub.subscribe_with(2, "sid/#", opts(QoS::AtMostOnce), with_sub_id(22)).await;
    sub.subscribe_with(3, "sid/x", opts(QoS::AtMostOnce), Properties::default()).await;
    let mut publisher = server.v5("sub-ids-pub").await;
    publisher.publish(publish("sid/x", b"m", QoS::AtMostOnce, 0)).await;
    let mut ids = BTreeSet::new();
    while let Ok(Some(packet)) = sub.recv(Duration::from_millis(300)).await {
        match packet {
            Packet::Publish(p) => ids.extend(p.properties.subscription_identifiers),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, BTreeSet::from([11, 22]));
}

/// [MQTT-3.3.4-5] (5.0) If the Server sends multiple copies ... it MUST include the
/// Subscription Identifier of the matching subscription; a message for a single
/// subscription carries exactly its identifier, and retained messages sent on subscribe
/// carry it too.
#[tokio::test]
async fn mqtt_3_3_4_5_subscription_identifier_on_retained_and_live() {
    let server = TestServer::start().await;
    let mut publisher = server.v5("sid-ret-pub").await;
    publisher.publish_retained("sidr/t", b"r", 1).await;
    let mut sub = server.v5("sid-ret").await;
    sub.subscribe_with(1, "sidr/t", opts(QoS::AtMostOnce), with_sub_id(7)).await;
    let retained = sub.expect_publish().await;
    assert_eq!(retained.properties.subscription_identifiers, vec![7]);
    publisher.publish(publish("sidr/t", b"l", QoS::AtMostOnce, 0)).await;
    assert_eq!(sub.expect_publish().await.properties.subscription_identifiers, vec![7]);
}

/// [MQTT-3.8.3-3] (5.0) Bit 2 of the Subscription Options represents the No Local option.
/// If the value is 1, Application Messages MUST NOT be forwarded to a connection with a
/// ClientID equal to the ClientID of the publishing connection.
#[tokio::test]
async fn mqtt_3_8_3_3_no_local() {
    let server = TestServer::start().await;
    let mut client = server.v5("no-local").await;
    let options = SubscriptionOptions { no_local: true, ..opts(QoS::AtMostOnce) };
    client.subscribe_with(1, "nl/t", options, Properties::default()).await;
    let mut other = server.v5("no-local-other").await;
    other.subscribe("nl/t", QoS::AtMostOnce).await;
    client.publish(publish("nl/t", b"mine", QoS::AtMostOnce, 0)).await;
    assert_eq!(other.expect_publish().await.payload.as_ref(), b"mine");
    client.expect_nothing(300).await;
    other.publish(publish("nl/t", b"theirs", QoS::AtMostOnce, 0)).await;
    assert_eq!(client.expect_publish().await.payload.as_ref(), b"theirs");
}

/// [MQTT-3.8.3-4] (5.0) It is a Protocol Error to set the No Local bit to 1 on a Shared
/// Subscription.
#[tokio::test]
async fn mqtt_3_8_3_4_no_local_on_shared_subscription_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut client = server.v5("no-local-shared").await;
    let options = SubscriptionOptions { no_local: true, ..opts(QoS::AtMostOnce) };
    let filters =
        vec![seed_broker::codec::TopicSubscription { filter: "$share/g/nl".into(), options }];
    let subscribe = seed_broker::codec::Subscribe { packet_id: 1, filters, ..Default::default() };
    client.send(Packet::Subscribe(subscribe)).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

async fn retain_handling_count(server: &TestServer, id: &str, handling: RetainHandling) -> usize {
    let mut sub = server.v5(id).await;
    let options = SubscriptionOptions { retain_handling: handling, ..opts(QoS::AtMostOnce) };
    let mut count = 0;
    for packet_id in 1..=2 {
        sub.subscribe_with(packet_id, "rh/t", options, Properties::default()).await;
        while let Ok(Some(packet)) = sub.recv(Duration::from_millis(250)).await {
            assert!(matches!(packet, Packet::Publish(ref p) if p.retain), "{packet:?}");
            count += 1;
        }
    }
    count
}

/// [MQTT-3.3.1-9] (5.0) If Retain Handling is set to 0 the Server MUST send the retained
/// messages matching the Topic Filter of the subscription to the Client. [MQTT-3.3.1-10] If
/// Retain Handling is set to 1 then if the subscription did not already exist, the Server
/// MUST send all retained message matching the Topic Filter of the subscription to the
/// Client, and if the subscription did exist the Server MUST NOT send the retained messages.
/// [MQTT-3.3.1-11] If Retain Handling is set to 2, the Server MUST NOT send the retained
/// messages.
#[tokio::test]
async fn mqtt_3_3_1_10_retain_handling() {
    let server = TestServer::start().await;
    let mut publisher = server.v5("rh-pub").await;
    publisher.publish_retained("rh/t", b"r", 1).await;
    assert_eq!(retain_handling_count(&server, "rh-0", RetainHandling::OnSubscribe).await, 2);
    assert_eq!(retain_handling_count(&server, "rh-1", RetainHandling::OnNewSubscribe).await, 1);
    assert_eq!(retain_handling_count(&server, "rh-2", RetainHandling::Never).await, 0);
}

/// [MQTT-3.3.1-12] (5.0) If the value of Retain As Published subscription option is set to
/// 0, the Server MUST set the RETAIN flag to 0 when forwarding an Application Message
/// regardless of how the RETAIN flag was set in the received PUBLISH packet.
/// [MQTT-3.3.1-13] If the value of Retain As Published subscription option is set to 1, the
/// Server MUST set the RETAIN flag equal to the RETAIN flag in the received PUBLISH packet.
#[tokio::test]
async fn mqtt_3_3_1_13_retain_as_published() {
    let server = TestServer::start().await;
    let mut rap = server.v5("rap-1").await;
    let options = SubscriptionOptions { retain_as_published: true, ..opts(QoS::AtMostOnce) };
    rap.subscribe_with(1, "rap/t", options, Properties::default()).await;
    let mut plain = server.v5("rap-0").await;
    plain.subscribe("rap/t", QoS::AtMostOnce).await;
    let mut publisher = server.v5("rap-pub").await;
    publisher.publish_retained("rap/t", b"r", 1).await;
    publisher.publish_qos1("rap/t", b"n", 2).await;
    assert!(rap.expect_publish().await.retain);
    assert!(!rap.expect_publish().await.retain);
    assert!(!plain.expect_publish().await.retain);
    assert!(!plain.expect_publish().await.retain);
}

/// (5.0 §4.8.2) A shared subscription's messages are distributed among its
/// members: each message goes to exactly one member of the group, and the Server (here,
/// round-robin) spreads them over the members; non-shared subscribers still get every one.
#[tokio::test]
async fn mqtt_4_8_2_shared_subscription_distribution() {
    let server = TestServer::start().await;
    let mut a = server.v5("share-a").await;
    a.subscribe("$share/g/sh/t", QoS::AtMostOnce).await;
    let mut b = server.v5("share-b").await;
    b.subscribe("$share/g/sh/t", QoS::AtMostOnce).await;
    let mut plain = server.v5("share-plain").await;
    plain.subscribe("sh/t", QoS::AtMostOnce).await;
    let mut publisher = server.v5("share-pub").await;
    for i in 0..6u8 {
        publisher.publish(publish("sh/t", &[i], QoS::AtMostOnce, 0)).await;
    }
    let mut got = Vec::new();
    for sub in [&mut a, &mut b] {
        let mut n = 0;
        while let Ok(Some(Packet::Publish(p))) = sub.recv(Duration::from_millis(300)).await {
            got.push(p.payload[0]);
            n += 1;
        }
        assert_eq!(n, 3, "round-robin gives each member half");
    }
    got.sort_unstable();
    assert_eq!(got, (0..6).collect::<Vec<u8>>(), "each message to exactly one member");
    for i in 0..6u8 {
        assert_eq!(plain.expect_publish().await.payload.as_ref(), &[i]);
    }
}

/// [MQTT-3.3.2-4] (5.0) A Server MUST send the Payload Format Indicator unaltered to all
/// subscribers; [MQTT-3.3.2-20] Content Type, [MQTT-3.3.2-15] Response Topic,
/// [MQTT-3.3.2-16] Correlation Data and [MQTT-3.3.2-17] User Properties likewise.
#[tokio::test]
async fn mqtt_3_3_2_4_properties_forwarded_unaltered() {
    let server = TestServer::start().await;
    let mut sub = server.v5("fwd-sub").await;
    sub.subscribe("fwd/t", QoS::AtMostOnce).await;
    let mut publisher = server.v5("fwd-pub").await;
    let mut p = publish("fwd/t", b"{}", QoS::AtMostOnce, 0);
    p.properties.payload_format_indicator = Some(1);
    p.properties.content_type = Some("application/json".into());
    p.properties.response_topic = Some("fwd/reply".into());
    p.properties.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
    p.properties.user_properties = vec![("k".into(), "v1".into()), ("k".into(), "v2".into())];
    let sent = p.properties.clone();
    publisher.publish(p).await;
    let got = sub.expect_publish().await;
    assert_eq!(got.properties, sent);
}

/// (5.0 §3.3.2.3.2) A receiver that validates the payload of a PUBLISH with
/// Payload Format Indicator 1 and finds it is not valid UTF-8 answers with reason code 0x99
/// (Payload format invalid) in the PUBACK, and does not forward the message.
#[tokio::test]
async fn mqtt_3_3_2_v5_payload_format_invalid() {
    let server = TestServer::start().await;
    let mut sub = server.v5("pfi-sub").await;
    sub.subscribe("pfi/t", QoS::AtMostOnce).await;
    let mut client = server.v5("pfi").await;
    let mut p = publish("pfi/t", &[0xC3, 0x28], QoS::AtLeastOnce, 5);
    p.properties.payload_format_indicator = Some(1);
    client.publish(p).await;
    let puback = client.expect_puback().await;
    assert_eq!((puback.packet_id, puback.reason), (5, ReasonCode::PAYLOAD_FORMAT_INVALID));
    sub.expect_nothing(300).await;
}

/// [MQTT-3.14.2-2] (5.0) The Session Expiry Interval MUST NOT be sent on a DISCONNECT by the
/// Server; a client that connected with Session Expiry Interval 0 and sends a non-zero one
/// on DISCONNECT commits a Protocol Error (§3.14.2.2.2).
#[tokio::test]
async fn mqtt_3_14_2_2_v5_disconnect_cannot_extend_zero_session_expiry() {
    let server = TestServer::start().await;
    let mut client = server.v5("disc-expiry").await;
    let mut disconnect = Disconnect::default();
    disconnect.properties.session_expiry_interval = Some(60);
    client.send(Packet::Disconnect(disconnect)).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// (5.0 §3.14.2.2.2) A DISCONNECT may set a new Session Expiry Interval for a
/// persistent session; setting it to 0 ends the session with the connection.
#[tokio::test]
async fn mqtt_3_14_2_2_v5_disconnect_session_expiry_zero_ends_session() {
    let server = TestServer::start().await;
    let mut client = server.connect(v5_persistent("disc-zero", 60)).await.0;
    let mut disconnect = Disconnect::default();
    disconnect.properties.session_expiry_interval = Some(0);
    client.send(Packet::Disconnect(disconnect)).await;
    client.expect_closed().await;
    let (_client, connack) = server.connect(v5_persistent("disc-zero", 60)).await;
    assert!(!connack.session_present);
}

/// (5.0 §3.7.2.1) A PUBREL for a Packet Identifier the Server does not know
/// is answered with PUBCOMP reason code 0x92 (Packet Identifier not found).
#[tokio::test]
async fn mqtt_3_7_2_1_v5_pubrel_unknown_id_gets_0x92() {
    let server = TestServer::start().await;
    let mut client = server.v5("pubrel-unknown").await;
    client.send(Packet::PubRel(ack(99))).await;
    let pubcomp = client.expect_pubcomp().await;
    assert_eq!(
        pubcomp,
        PubAck { packet_id: 99, reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, ..ack(99) }
    );
}

/// (5.0) Take-over keeps the session when the new connection uses Clean
/// Start 0: the CONNACK has Session Present 1 and the subscriptions still deliver.
#[tokio::test]
async fn mqtt_3_1_4_4_v5_take_over_resumes_session() {
    let server = TestServer::start().await;
    let mut old = server.connect(v5_persistent("take-resume", 60)).await.0;
    old.subscribe("tr/t", QoS::AtLeastOnce).await;
    let (mut new, connack) = Client::connect(server.addr, v5_persistent("take-resume", 60)).await;
    assert!(connack.session_present);
    old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER).await;
    let mut publisher = server.v5("take-resume-pub").await;
    publisher.publish_qos1("tr/t", b"x", 1).await;
    assert_eq!(new.expect_publish().await.payload.as_ref(), b"x");
}

/// [MQTT-3.3.2-7] (5.0) A receiver MUST NOT carry forward any Topic Alias mappings from one
/// Network Connection to another: after a reconnect, an alias set before is unknown.
#[tokio::test]
async fn mqtt_3_3_2_7_topic_aliases_do_not_survive_reconnect() {
    let server = TestServer::start().await;
    let mut client = server.connect(v5_persistent("alias-reconnect", 60)).await.0;
    client.publish(aliased("ar/t", 1, b"a")).await;
    client.sync().await;
    client.disconnect().await;
    let mut client = server.connect(v5_persistent("alias-reconnect", 60)).await.0;
    client.publish(aliased("", 1, b"b")).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// (5.0) Payload Format Indicator 1 with invalid UTF-8 in a QoS 2 PUBLISH is
/// answered with PUBREC 0x99; the flow ends there and the message is not forwarded.
#[tokio::test]
async fn mqtt_3_3_2_v5_payload_format_invalid_qos2() {
    let server = TestServer::start().await;
    let mut sub = server.v5("pfi2-sub").await;
    sub.subscribe("pfi2/t", QoS::AtMostOnce).await;
    let mut client = server.v5("pfi2").await;
    let mut p = publish("pfi2/t", &[0xFF], QoS::ExactlyOnce, 6);
    p.properties.payload_format_indicator = Some(1);
    client.publish(p).await;
    let pubrec = client.expect_pubrec().await;
    assert_eq!((pubrec.packet_id, pubrec.reason), (6, ReasonCode::PAYLOAD_FORMAT_INVALID));
    sub.expect_nothing(300).await;
}

/// (5.0 §3.8.2.1.2) It is a Protocol Error if the Subscription Identifier has
/// a value of 0.
#[tokio::test]
async fn mqtt_3_8_2_v5_subscription_identifier_0_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut client = server.v5("sid-zero").await;
    // SUBSCRIBE id 1, properties: length 2, subscription identifier (0x0B) = 0; filter "t".
    client.send_raw(&[0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b't', 0x00]).await;
    let disconnect = client.expect_closed().await.map(|d| d.reason);
    assert!(
        matches!(disconnect, Some(ReasonCode::PROTOCOL_ERROR | ReasonCode::MALFORMED_PACKET)),
        "{disconnect:?}"
    );
}

/// (5.0 §3.1.3.2.2) The Will Delay Interval never outlasts the session: with
/// a Session Expiry Interval shorter than the will delay, the will is published when the
/// session ends.
#[tokio::test]
async fn mqtt_3_1_3_2_v5_will_published_at_session_end() {
    let server = TestServer::start().await;
    let mut watcher = server.v5("will-end-watch").await;
    watcher.subscribe("wend/t", QoS::AtMostOnce).await;
    let mut connect = v5_persistent("will-end", 1);
    let mut will = crate::client::will("wend/t", "ended", QoS::AtMostOnce, false);
    will.properties.will_delay_interval = Some(3600);
    connect.will = Some(will);
    let (client, _) = server.connect(connect).await;
    client.drop_abruptly();
    let p = match watcher.recv(Duration::from_secs(3)).await {
        Ok(Some(Packet::Publish(p))) => p,
        other => panic!("expected the will, got {other:?}"),
    };
    assert_eq!(p.payload.as_ref(), b"ended");
}

/// (5.0 §3.2.2.3.8) With a Topic Alias Maximum of 0 the Server accepts no
/// Topic Aliases: any alias is 0x94 (Topic Alias invalid).
#[tokio::test]
async fn mqtt_3_3_2_10_topic_alias_maximum_0() {
    let server = TestServer::with(|b| b.topic_alias_maximum = 0).await;
    let (mut client, connack) = server.connect(v5("alias-none")).await;
    assert!(matches!(connack.properties.topic_alias_maximum, None | Some(0)));
    client.publish(aliased("t", 1, b"x")).await;
    client.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

/// (5.0 §4.8.2) A shared subscription's message goes to a connected member
/// when another member's (persistent) session is offline.
#[tokio::test]
async fn mqtt_4_8_2_shared_prefers_connected_members() {
    let server = TestServer::start().await;
    let mut away = server.connect(v5_persistent("share-away", 60)).await.0;
    away.subscribe("$share/g/sa/t", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let mut here = server.v5("share-here").await;
    here.subscribe("$share/g/sa/t", QoS::AtLeastOnce).await;
    let mut publisher = server.v5("share-away-pub").await;
    for i in 1..=4u16 {
        publisher.publish_qos1("sa/t", &[i as u8], i).await;
    }
    for i in 1..=4u8 {
        let p = here.expect_publish().await;
        assert_eq!(p.payload.as_ref(), &[i]);
        here.send(Packet::PubAck(ack(p.packet_id))).await;
    }
}

/// [MQTT-3.3.1-13] (5.0) Retain As Published also applies to messages queued for an offline
/// persistent session: the RETAIN flag is the one of the received PUBLISH.
#[tokio::test]
async fn mqtt_3_3_1_13_retain_as_published_for_queued_messages() {
    let server = TestServer::start().await;
    let mut sub = server.connect(v5_persistent("rap-queued", 60)).await.0;
    let options = SubscriptionOptions { retain_as_published: true, ..opts(QoS::AtLeastOnce) };
    sub.subscribe_with(1, "rapq/t", options, Properties::default()).await;
    sub.disconnect().await;
    let mut publisher = server.v5("rap-queued-pub").await;
    publisher.publish_retained("rapq/t", b"r", 1).await;
    let (mut sub, _) = server.connect(v5_persistent("rap-queued", 60)).await;
    assert!(sub.expect_publish().await.retain);
}
