//! PUBLISH and its QoS 1 and QoS 2 flows (MQTT 3.1.1 §3.3–3.7 and §4.3, MQTT 5.0 likewise).

use seed_broker::codec::{Packet, Protocol, QoS, ReasonCode};

use crate::client::{Client, TestServer, ack, publish};

/// [MQTT-2.3.1-1] SUBSCRIBE, UNSUBSCRIBE, and PUBLISH (in cases where QoS > 0) Control
/// Packets MUST contain a non-zero 16-bit Packet Identifier.
#[tokio::test]
async fn mqtt_2_3_1_1_qos1_publish_with_packet_id_0_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.v311("pid-zero").await;
    // PUBLISH QoS 1, topic "t", packet id 0.
    client.send_raw(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-2.3.1-6] A PUBACK, PUBREC or PUBREL Packet MUST contain the same Packet Identifier
/// as the PUBLISH Packet that was originally sent. [MQTT-3.3.4-1] The receiver of a PUBLISH
/// Packet MUST respond according to Table 3.4 (QoS 1: PUBACK).
#[tokio::test]
async fn mqtt_2_3_1_6_puback_has_the_publish_packet_id() {
    let server = TestServer::start().await;
    let mut client = server.v311("puback-id").await;
    for id in [1, 7, 65535] {
        client.publish(publish("t/puback", b"x", QoS::AtLeastOnce, id)).await;
        assert_eq!(client.expect_puback().await.packet_id, id);
    }
}

/// [MQTT-3.3.4-1] QoS 2 PUBLISH is answered by PUBREC; [MQTT-4.3.3-2] the receiver MUST
/// respond with a PUBREC containing the Packet Identifier from the incoming PUBLISH, and
/// respond to a PUBREL by sending a PUBCOMP containing the same Packet Identifier.
#[tokio::test]
async fn mqtt_4_3_3_2_qos2_receiver_pubrec_then_pubcomp() {
    let server = TestServer::start().await;
    let mut sub = server.v311("qos2-recv-sub").await;
    sub.subscribe("t/qos2", QoS::ExactlyOnce).await;
    let mut client = server.v311("qos2-recv").await;
    client.publish(publish("t/qos2", b"once", QoS::ExactlyOnce, 42)).await;
    assert_eq!(client.expect_pubrec().await.packet_id, 42);
    client.send(Packet::PubRel(ack(42))).await;
    assert_eq!(client.expect_pubcomp().await.packet_id, 42);
    let p = sub.expect_publish().await;
    assert_eq!(p.payload.as_ref(), b"once");
    assert_eq!(p.qos, QoS::ExactlyOnce);
}

/// [MQTT-4.3.3-2] Until it has received the corresponding PUBREL packet, the Receiver MUST
/// acknowledge any subsequent PUBLISH packet with the same Packet Identifier by sending a
/// PUBREC. It MUST NOT cause duplicate messages to be delivered to any onward recipients.
#[tokio::test]
async fn mqtt_4_3_3_2_qos2_duplicate_is_not_delivered_twice() {
    let server = TestServer::start().await;
    let mut sub = server.v311("qos2-dup-sub").await;
    sub.subscribe("t/qos2dup", QoS::AtLeastOnce).await;
    let mut client = server.v311("qos2-dup").await;
    let mut p = publish("t/qos2dup", b"only once", QoS::ExactlyOnce, 9);
    client.publish(p.clone()).await;
    assert_eq!(client.expect_pubrec().await.packet_id, 9);
    p.dup = true;
    client.publish(p).await;
    assert_eq!(client.expect_pubrec().await.packet_id, 9);
    client.send(Packet::PubRel(ack(9))).await;
    assert_eq!(client.expect_pubcomp().await.packet_id, 9);
    let got = sub.expect_publish().await;
    sub.send(Packet::PubAck(ack(got.packet_id))).await;
    sub.expect_nothing(300).await;
}

/// [MQTT-4.3.3-1] In the QoS 2 delivery protocol, the Sender MUST send a PUBLISH packet with
/// QoS=2, DUP=0; treat it as unacknowledged until it has received the corresponding PUBREC;
/// send a PUBREL packet when it receives a PUBREC packet, with the same Packet Identifier.
#[tokio::test]
async fn mqtt_4_3_3_1_qos2_sender_flow_towards_subscriber() {
    let server = TestServer::start().await;
    let mut sub = server.v311("qos2-send-sub").await;
    sub.subscribe("t/qos2send", QoS::ExactlyOnce).await;
    let mut client = server.v311("qos2-send").await;
    client.publish(publish("t/qos2send", b"m", QoS::ExactlyOnce, 3)).await;
    client.expect_pubrec().await;
    client.send(Packet::PubRel(ack(3))).await;
    client.expect_pubcomp().await;
    let p = sub.expect_publish().await;
    assert_eq!((p.qos, p.dup), (QoS::ExactlyOnce, false));
    assert_ne!(p.packet_id, 0);
    sub.send(Packet::PubRec(ack(p.packet_id))).await;
    assert_eq!(sub.expect_pubrel().await.packet_id, p.packet_id);
    sub.send(Packet::PubComp(ack(p.packet_id))).await;
    sub.expect_nothing(300).await;
}

/// [MQTT-4.3.2-1] In the QoS 1 delivery protocol, the Sender MUST assign an unused Packet
/// Identifier each time it has a new Application Message to publish, and send a PUBLISH
/// Packet containing this Packet Identifier with QoS=1, DUP=0.
#[tokio::test]
async fn mqtt_4_3_2_1_qos1_deliveries_use_unused_packet_ids() {
    let server = TestServer::start().await;
    let mut sub = server.v311("qos1-ids-sub").await;
    sub.subscribe("t/qos1ids", QoS::AtLeastOnce).await;
    let mut client = server.v311("qos1-ids").await;
    for i in 1..=3u16 {
        client.publish_qos1("t/qos1ids", &[i as u8], i).await;
    }
    let mut ids = Vec::new();
    for i in 1..=3u8 {
        let p = sub.expect_publish().await;
        assert_eq!((p.qos, p.dup, p.payload.as_ref()), (QoS::AtLeastOnce, false, &[i][..]));
        assert_ne!(p.packet_id, 0);
        ids.push(p.packet_id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "unacknowledged messages have distinct packet ids");
}

/// [MQTT-3.3.1-2] The DUP flag MUST be set to 0 for all QoS 0 messages.
#[tokio::test]
async fn mqtt_3_3_1_2_dup_with_qos0_is_malformed() {
    let server = TestServer::start().await;
    let mut client = server.v311("dup-qos0").await;
    client.send_raw(&[0x38, 0x03, 0x00, 0x01, b't']).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.3.1-4] A PUBLISH Packet MUST NOT have both QoS bits set to 1. If a Server
/// receives a PUBLISH Packet with both QoS bits set to 1 it MUST close the Network
/// Connection.
#[tokio::test]
async fn mqtt_3_3_1_4_qos3_closes_the_connection() {
    let server = TestServer::start().await;
    let mut client = server.v311("qos3").await;
    client.send_raw(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.3.2-2] The Topic Name in the PUBLISH Packet MUST NOT contain wildcard characters.
#[tokio::test]
async fn mqtt_3_3_2_2_wildcard_in_topic_name_closes_the_connection() {
    let server = TestServer::start().await;
    let mut sub = server.v311("wild-pub-sub").await;
    sub.subscribe("#", QoS::AtMostOnce).await;
    for topic in [&b"a/+"[..], b"a/#"] {
        let mut client = server.v311("wild-pub").await;
        let mut packet = vec![0x30, 2 + topic.len() as u8, 0, topic.len() as u8];
        packet.extend_from_slice(topic);
        client.send_raw(&packet).await;
        assert!(client.expect_closed().await.is_none());
    }
    sub.expect_nothing(200).await;
}

/// [MQTT-3.3.2-2] (5.0): a wildcard Topic Name gets DISCONNECT 0x90 (Topic Name invalid).
#[tokio::test]
async fn mqtt_3_3_2_2_v5_wildcard_in_topic_name_is_topic_name_invalid() {
    let server = TestServer::start().await;
    let mut client = server.v5("wild-pub-5").await;
    // PUBLISH QoS 0, topic "a/+", empty properties.
    client.send_raw(&[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00]).await;
    client.expect_disconnect(ReasonCode::TOPIC_NAME_INVALID).await;
}

/// [MQTT-3.3.5-1] (3.1.1 §3.8.4, [MQTT-3.8.4-6]) The QoS of Payload Messages sent in response
/// to a Subscription MUST be the minimum of the QoS of the originally published message and
/// the maximum QoS granted by the Server.
#[tokio::test]
async fn mqtt_3_8_4_6_delivery_qos_is_the_minimum() {
    let server = TestServer::start().await;
    let mut sub0 = server.v311("minqos-0").await;
    sub0.subscribe("t/minqos", QoS::AtMostOnce).await;
    let mut sub1 = server.v311("minqos-1").await;
    sub1.subscribe("t/minqos", QoS::AtLeastOnce).await;
    let mut sub2 = server.v311("minqos-2").await;
    sub2.subscribe("t/minqos", QoS::ExactlyOnce).await;
    let mut client = server.v311("minqos-pub").await;
    client.publish(publish("t/minqos", b"q2", QoS::ExactlyOnce, 5)).await;
    client.expect_pubrec().await;
    client.send(Packet::PubRel(ack(5))).await;
    client.expect_pubcomp().await;
    assert_eq!(sub0.expect_publish().await.qos, QoS::AtMostOnce);
    assert_eq!(sub1.expect_publish().await.qos, QoS::AtLeastOnce);
    assert_eq!(sub2.expect_publish().await.qos, QoS::ExactlyOnce);
    client.publish(publish("t/minqos", b"q1", QoS::AtLeastOnce, 6)).await;
    client.expect_puback().await;
    assert_eq!(sub0.expect_publish().await.qos, QoS::AtMostOnce);
    assert_eq!(sub1.expect_publish().await.qos, QoS::AtLeastOnce);
    assert_eq!(sub2.expect_publish().await.qos, QoS::AtLeastOnce);
}

/// [MQTT-4.6.0-2] The Server MUST send PUBACK packets in the order in which the
/// corresponding PUBLISH packets were received (QoS 1 messages).
#[tokio::test]
async fn mqtt_4_6_0_2_pubacks_in_order() {
    let server = TestServer::start().await;
    let mut sub = server.connect(crate::client::v311_persistent("order-sub")).await.0;
    sub.subscribe("t/order", QoS::AtLeastOnce).await;
    let mut client = server.v311("order-pub").await;
    let ids: Vec<u16> = (1..=50).map(|i| i * 7).collect();
    for &id in &ids {
        client.publish(publish("t/order", &id.to_be_bytes(), QoS::AtLeastOnce, id)).await;
    }
    for &id in &ids {
        assert_eq!(client.expect_puback().await.packet_id, id);
    }
}

/// [MQTT-4.6.0-6] A Server MUST by default treat each Topic as an "Ordered Topic". It MAY
/// provide an administrative or other mechanism to allow one or more Topics to not be treated
/// as an "Ordered Topic"; messages from one client on one topic arrive in order.
#[tokio::test]
async fn mqtt_4_6_0_6_ordered_topic() {
    let server = TestServer::start().await;
    let mut sub = server.v311("ordered-sub").await;
    sub.subscribe("t/ordered", QoS::AtLeastOnce).await;
    let mut client = server.v311("ordered-pub").await;
    for i in 0..20u8 {
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        client.publish(publish("t/ordered", &[i], qos, u16::from(i) + 1)).await;
    }
    for i in 0..20u8 {
        let p = sub.expect_publish().await;
        assert_eq!(p.payload.as_ref(), &[i]);
        if p.qos == QoS::AtLeastOnce {
            sub.send(Packet::PubAck(ack(p.packet_id))).await;
        }
    }
}

/// [MQTT-3.6.1-1] Bits 3,2,1 and 0 of the fixed header in the PUBREL Control Packet are
/// reserved and MUST be set to 0,0,1 and 0 respectively. The Server MUST treat any other
/// value as malformed and close the Network Connection.
#[tokio::test]
async fn mqtt_3_6_1_1_pubrel_reserved_flags() {
    let server = TestServer::start().await;
    let mut client = server.v311("pubrel-flags").await;
    client.publish(publish("t/pubrel", b"x", QoS::ExactlyOnce, 1)).await;
    client.expect_pubrec().await;
    client.send_raw(&[0x60, 0x02, 0x00, 0x01]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-4.3.1-1] In the QoS 0 delivery protocol, the Sender MUST send a PUBLISH packet with
/// QoS=0, DUP=0 (and no acknowledgement is sent back).
#[tokio::test]
async fn mqtt_4_3_1_1_qos0_delivery() {
    let server = TestServer::start().await;
    let mut sub = server.v311("qos0-sub").await;
    sub.subscribe("t/qos0", QoS::ExactlyOnce).await;
    let mut client = server.v311("qos0-pub").await;
    client.publish(publish("t/qos0", b"fire", QoS::AtMostOnce, 0)).await;
    let p = sub.expect_publish().await;
    assert_eq!((p.qos, p.dup, p.packet_id), (QoS::AtMostOnce, false, 0));
    client.expect_nothing(200).await;
}

/// [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a wildcard character
/// (# or +) with Topic Names beginning with a $ character.
#[tokio::test]
async fn mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics() {
    let server = TestServer::start().await;
    let mut sub = server.v311("dollar-sub").await;
    sub.subscribe("#", QoS::AtMostOnce).await;
    let mut sub2 = server.v311("dollar-sub-2").await;
    sub2.subscribe("+/x", QoS::AtMostOnce).await;
    let mut exact = server.v311("dollar-exact").await;
    exact.subscribe("$app/x", QoS::AtMostOnce).await;
    let mut client = server.v311("dollar-pub").await;
    client.publish(publish("$app/x", b"d", QoS::AtMostOnce, 0)).await;
    assert_eq!(exact.expect_publish().await.topic, "$app/x");
    sub.expect_nothing(200).await;
    sub2.expect_nothing(10).await;
}

/// [MQTT-4.7.1-2] The multi-level wildcard matches the parent and any number of child
/// levels; [MQTT-4.7.1-3] the single-level wildcard matches exactly one level.
#[tokio::test]
async fn mqtt_4_7_1_2_wildcard_matching() {
    let server = TestServer::start().await;
    let mut hash = server.v311("wild-hash").await;
    hash.subscribe("sport/#", QoS::AtMostOnce).await;
    let mut plus = server.v311("wild-plus").await;
    plus.subscribe("sport/+", QoS::AtMostOnce).await;
    let mut client = server.v311("wild-match-pub").await;
    for topic in ["sport", "sport/tennis", "sport/tennis/player1", "sports"] {
        client.publish(publish(topic, topic.as_bytes(), QoS::AtMostOnce, 0)).await;
    }
    for topic in ["sport", "sport/tennis", "sport/tennis/player1"] {
        assert_eq!(hash.expect_publish().await.topic, topic);
    }
    hash.expect_nothing(200).await;
    assert_eq!(plus.expect_publish().await.topic, "sport/tennis");
    plus.expect_nothing(10).await;
}

/// [MQTT-3.3.1-3] (5.0: [MQTT-3.3.1-3]) The DUP flag in the outgoing PUBLISH packet is set
/// independently to the incoming PUBLISH packet: a DUP=1 publish from a client reaches a
/// new subscriber with DUP=0.
#[tokio::test]
async fn mqtt_3_3_1_3_outgoing_dup_is_independent() {
    let server = TestServer::start().await;
    let mut sub = server.v311("dup-indep-sub").await;
    sub.subscribe("t/dupin", QoS::AtLeastOnce).await;
    let mut client = Client::connect(server.addr, crate::client::v311("dup-indep")).await.0;
    let mut p = publish("t/dupin", b"x", QoS::AtLeastOnce, 4);
    p.dup = true;
    client.publish(p).await;
    client.expect_puback().await;
    assert!(!sub.expect_publish().await.dup);
    assert_eq!(client.protocol, Protocol::V3_1_1);
}

/// [MQTT-1.5.3-1] The character data in a UTF-8 encoded string MUST be well-formed UTF-8. If
/// a Server receives a Control Packet containing ill-formed UTF-8 it MUST close the Network
/// Connection. [MQTT-1.5.3-2] A UTF-8 encoded string MUST NOT include an encoding of the null
/// character U+0000.
#[tokio::test]
async fn mqtt_1_5_3_1_ill_formed_utf8_topic_closes() {
    let server = TestServer::start().await;
    let mut sub = server.v311("utf8-sub").await;
    sub.subscribe("#", QoS::AtMostOnce).await;
    for topic in [&[0xC3u8, 0x28][..], &[b'a', 0x00, b'b'], &[0xED, 0xA0, 0x80]] {
        let mut client = server.v311("utf8-bad").await;
        let mut packet = vec![0x30, 2 + topic.len() as u8, 0, topic.len() as u8];
        packet.extend_from_slice(topic);
        client.send_raw(&packet).await;
        assert!(client.expect_closed().await.is_none(), "topic {topic:?}");
    }
    sub.expect_nothing(200).await;
}

/// [MQTT-4.7.3-1] All Topic Names MUST be at least one character long: an empty Topic Name
/// in a 3.1.1 PUBLISH closes the connection.
#[tokio::test]
async fn mqtt_4_7_3_1_empty_topic_name_closes() {
    let server = TestServer::start().await;
    let mut client = server.v311("empty-topic").await;
    client.send_raw(&[0x30, 0x02, 0x00, 0x00]).await;
    assert!(client.expect_closed().await.is_none());
}

/// (5.0 §3.3.1.3) If the Server does not support retained messages
/// (Retain Available 0 in CONNACK) a PUBLISH with RETAIN 1 is answered with DISCONNECT 0x9A.
#[tokio::test]
async fn mqtt_3_2_2_v5_retain_not_available() {
    let server = TestServer::with(|b| b.retain_available = false).await;
    let (mut client, connack) = server.connect(crate::client::v5("no-retain")).await;
    assert_eq!(connack.properties.retain_available, Some(0));
    let mut p = publish("nr/t", b"x", QoS::AtMostOnce, 0);
    p.retain = true;
    client.publish(p).await;
    client.expect_disconnect(ReasonCode::RETAIN_NOT_SUPPORTED).await;
}

/// MQTT 3.1 (protocol name "MQIsdp", level 3) is accepted, and its CONNACK carries no session
/// present flag; a zero-length client id is always rejected there (return code 0x02).
#[tokio::test]
async fn mqtt_3_1_mqisdp_connect() {
    let server = TestServer::start().await;
    let mut connect = crate::client::v311("legacy-31");
    connect.protocol = Protocol::V3_1;
    let (mut client, _) = server.connect(connect.clone()).await;
    client.subscribe("legacy/t", QoS::AtLeastOnce).await;
    client.publish_qos1("legacy/t", b"x", 1).await;
    assert_eq!(client.expect_publish().await.payload.as_ref(), b"x");
    connect.client_id.clear();
    let (_client, connack) = Client::connect(server.addr, connect).await;
    assert_eq!(connack.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
}
