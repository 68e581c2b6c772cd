//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (MQTT 3.1.1 §3.8–3.11, MQTT 5.0 likewise).

use seed_broker::codec::{Packet, Properties, QoS, ReasonCode, Subscribe, TopicSubscription};

use crate::client::{TestServer, ack, opts, publish};

fn filters(list: &[(&str, QoS)]) -> Vec<TopicSubscription> {
    list.iter().map(|(f, q)| TopicSubscription { filter: (*f).into(), options: opts(*q) }).collect()
}

/// [MQTT-3.8.1-1] Bits 3,2,1 and 0 of the fixed header of the SUBSCRIBE Control Packet are
/// reserved and MUST be set to 0,0,1 and 0 respectively. The Server MUST treat any other
/// value as malformed and close the Network Connection.
#[tokio::test]
async fn mqtt_3_8_1_1_subscribe_reserved_flags() {
    let server = TestServer::start().await;
    let mut client = server.v311("sub-flags").await;
    client.send_raw(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.8.3-3] The payload of a SUBSCRIBE packet MUST contain at least one Topic
/// Filter / QoS pair. A SUBSCRIBE packet with no payload is a protocol violation.
#[tokio::test]
async fn mqtt_3_8_3_3_subscribe_without_filters_is_a_violation() {
    let server = TestServer::start().await;
    let mut client = server.v311("sub-empty").await;
    client.send_raw(&[0x82, 0x02, 0x00, 0x01]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.8.3-4] The Server MUST treat a SUBSCRIBE packet as malformed and close the Network
/// Connection if any of Reserved bits in the payload are non-zero, or QoS is not 0,1 or 2.
#[tokio::test]
async fn mqtt_3_8_3_4_reserved_option_bits_are_malformed() {
    let server = TestServer::start().await;
    for byte in [0x04u8, 0x03] {
        let mut client = server.v311("sub-reserved").await;
        client.send_raw(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', byte]).await;
        assert!(client.expect_closed().await.is_none(), "option byte {byte:#x}");
    }
}

/// [MQTT-2.3.1-1] SUBSCRIBE and UNSUBSCRIBE MUST contain a non-zero Packet Identifier.
#[tokio::test]
async fn mqtt_2_3_1_1_subscribe_with_packet_id_0_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.v311("sub-pid0").await;
    client.send_raw(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b't', 0x00]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.8.4-1] When the Server receives a SUBSCRIBE Packet from a Client, the Server MUST
/// respond with a SUBACK Packet. [MQTT-3.8.4-2] The SUBACK Packet MUST have the same Packet
/// Identifier as the SUBSCRIBE Packet that it is acknowledging.
#[tokio::test]
async fn mqtt_3_8_4_2_suback_has_the_subscribe_packet_id() {
    let server = TestServer::start().await;
    let mut client = server.v311("suback-id").await;
    for id in [1u16, 300, 65535] {
        let suback =
            client.subscribe_with(id, "t/subid", opts(QoS::AtLeastOnce), Default::default()).await;
        assert_eq!(suback.packet_id, id);
    }
}

/// [MQTT-3.8.4-4] If a Server receives a SUBSCRIBE packet that contains multiple Topic
/// Filters it MUST handle that packet as if it had received a sequence of multiple SUBSCRIBE
/// packets, except that it combines their responses into a single SUBACK response.
/// [MQTT-3.8.4-5] The SUBACK Packet sent by the Server to the Client MUST contain a return
/// code for each Topic Filter/QoS pair, in the same order.
#[tokio::test]
async fn mqtt_3_8_4_5_one_return_code_per_filter() {
    let server = TestServer::start().await;
    let mut client = server.v311("suback-codes").await;
    let list = [("a/0", QoS::AtMostOnce), ("a/bad#", QoS::AtLeastOnce), ("a/2", QoS::ExactlyOnce)];
    let subscribe = Subscribe { packet_id: 11, filters: filters(&list), ..Default::default() };
    client.send(Packet::Subscribe(subscribe)).await;
    let suback = client.expect_suback().await;
    assert_eq!(suback.packet_id, 11);
    assert_eq!(suback.reasons, vec![ReasonCode(0), ReasonCode(0x80), ReasonCode(2)]);
    let mut publisher = server.v311("suback-codes-pub").await;
    publisher.publish(publish("a/2", b"2", QoS::AtMostOnce, 0)).await;
    assert_eq!(client.expect_publish().await.topic, "a/2");
}

/// [MQTT-4.7.1-1] The wildcard characters can be used in Topic Filters, but MUST NOT be used
/// within a Topic Name; [MQTT-4.7.1-2] '#' MUST be the last character and follow a separator;
/// [MQTT-4.7.1-3] '+' MUST occupy an entire level. Invalid filters get 0x80 in 3.1.1.
#[tokio::test]
async fn mqtt_4_7_1_2_invalid_filters_get_failure_0x80() {
    let server = TestServer::start().await;
    let mut client = server.v311("bad-filters").await;
    for (i, filter) in ["a/#/b", "a#", "a/b+", "+a/b"].into_iter().enumerate() {
        let suback = client
            .subscribe_with(i as u16 + 1, filter, opts(QoS::AtMostOnce), Default::default())
            .await;
        assert_eq!(suback.reasons, vec![ReasonCode(0x80)], "filter {filter}");
    }
    client.sync().await;
}

/// (5.0 §3.9.3, reason 0x8F): an invalid Topic Filter is refused with reason
/// code 0x8F (Topic Filter invalid) in a 5.0 SUBACK.
#[tokio::test]
async fn mqtt_3_9_3_v5_invalid_filter_gets_0x8f() {
    let server = TestServer::start().await;
    let mut client = server.v5("bad-filter-5").await;
    let suback = client.subscribe_with(1, "a/#/b", opts(QoS::AtMostOnce), Default::default()).await;
    assert_eq!(suback.reasons, vec![ReasonCode::TOPIC_FILTER_INVALID]);
}

/// [MQTT-3.8.4-3] If a Server receives a SUBSCRIBE Packet containing a Topic Filter that is
/// identical to an existing Subscription's Topic Filter then it MUST completely replace that
/// existing Subscription with a new Subscription. The Topic Filter in the new Subscription
/// will be identical to that in the previous Subscription, although its maximum QoS value
/// could be different. Any existing retained messages matching the Topic Filter MUST be
/// re-sent, but the flow of publications MUST NOT be interrupted.
#[tokio::test]
async fn mqtt_3_8_4_3_resubscribe_replaces_and_resends_retained() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("resub-pub").await;
    publisher.publish_retained("t/resub", b"kept", 1).await;
    let mut client = server.v311("resub").await;
    client.subscribe("t/resub", QoS::AtLeastOnce).await;
    let first = client.expect_publish().await;
    assert!(first.retain);
    client.send(Packet::PubAck(ack(first.packet_id))).await;
    client.subscribe("t/resub", QoS::AtMostOnce).await;
    let again = client.expect_publish().await;
    assert!(again.retain);
    assert_eq!((again.payload.as_ref(), again.qos), (&b"kept"[..], QoS::AtMostOnce));
    // Only one subscription, now at QoS 0.
    publisher.publish_qos1("t/resub", b"live", 2).await;
    let live = client.expect_publish().await;
    assert_eq!((live.payload.as_ref(), live.qos), (&b"live"[..], QoS::AtMostOnce));
    client.expect_nothing(200).await;
}

/// [MQTT-3.3.5-1] When Clients make subscriptions with Topic Filters that include wildcards,
/// it is possible for a Client's subscriptions to overlap so that a published message might
/// match multiple filters. In this case the Server MUST deliver the message to the Client
/// respecting the maximum QoS of all the matching subscriptions.
#[tokio::test]
async fn mqtt_3_3_5_1_overlapping_subscriptions_one_copy_at_max_qos() {
    let server = TestServer::start().await;
    let mut client = server.v311("overlap").await;
    client.subscribe("o/+", QoS::AtMostOnce).await;
    client.subscribe_with(2, "o/#", opts(QoS::AtLeastOnce), Properties::default()).await;
    client.subscribe_with(3, "o/x", opts(QoS::AtMostOnce), Properties::default()).await;
    let mut publisher = server.v311("overlap-pub").await;
    publisher.publish_qos1("o/x", b"m", 1).await;
    let p = client.expect_publish().await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    client.send(Packet::PubAck(ack(p.packet_id))).await;
    client.expect_nothing(300).await;
}

/// [MQTT-3.10.1-1] Bits 3,2,1 and 0 of the fixed header of the UNSUBSCRIBE Control Packet
/// are reserved and MUST be set to 0,0,1 and 0 respectively.
#[tokio::test]
async fn mqtt_3_10_1_1_unsubscribe_reserved_flags() {
    let server = TestServer::start().await;
    let mut client = server.v311("unsub-flags").await;
    client.send_raw(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b't']).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.10.3-2] The Payload of an UNSUBSCRIBE packet MUST contain at least one Topic
/// Filter. An UNSUBSCRIBE packet with no payload is a protocol violation.
#[tokio::test]
async fn mqtt_3_10_3_2_unsubscribe_without_filters_is_a_violation() {
    let server = TestServer::start().await;
    let mut client = server.v311("unsub-empty").await;
    client.send_raw(&[0xA2, 0x02, 0x00, 0x01]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.10.4-4] The Server MUST respond to an UNSUBSCRIBE request by sending an UNSUBACK
/// packet. The UNSUBACK Packet MUST have the same Packet Identifier as the UNSUBSCRIBE
/// Packet. [MQTT-3.10.4-5] Even where no Topic Subscriptions are deleted, the Server MUST
/// respond with an UNSUBACK.
#[tokio::test]
async fn mqtt_3_10_4_5_unsuback_even_without_subscription() {
    let server = TestServer::start().await;
    let mut client = server.v311("unsub-none").await;
    assert_eq!(client.unsubscribe(77, &["never/subscribed"]).await.packet_id, 77);
    client.subscribe("yes", QoS::AtMostOnce).await;
    assert_eq!(client.unsubscribe(78, &["yes", "no"]).await.packet_id, 78);
}

/// [MQTT-3.10.4-1] The Topic Filters supplied in an UNSUBSCRIBE packet MUST be compared
/// character-by-character with the current set of Topic Filters held by the Server for the
/// Client. [MQTT-3.10.4-2] If a Server deletes a Subscription it MUST stop adding any new
/// messages for delivery to the Client.
#[tokio::test]
async fn mqtt_3_10_4_2_unsubscribe_stops_delivery() {
    let server = TestServer::start().await;
    let mut client = server.v311("unsub-stop").await;
    client.subscribe("u/+", QoS::AtMostOnce).await;
    client.subscribe_with(2, "u/x", opts(QoS::AtMostOnce), Properties::default()).await;
    let mut publisher = server.v311("unsub-stop-pub").await;
    // "u/x" does not remove "u/+".
    client.unsubscribe(3, &["u/x"]).await;
    publisher.publish(publish("u/x", b"1", QoS::AtMostOnce, 0)).await;
    assert_eq!(client.expect_publish().await.payload.as_ref(), b"1");
    client.unsubscribe(4, &["u/+"]).await;
    publisher.publish(publish("u/x", b"2", QoS::AtMostOnce, 0)).await;
    client.expect_nothing(300).await;
}

/// [MQTT-3.11.3-1] (5.0) The Payload of the UNSUBACK contains a list of Reason Codes, one
/// per Topic Filter, in order: 0x00 Success, 0x11 No subscription existed.
#[tokio::test]
async fn mqtt_3_11_3_1_v5_unsuback_reason_codes() {
    let server = TestServer::start().await;
    let mut client = server.v5("unsub-codes-5").await;
    client.subscribe("x/1", QoS::AtMostOnce).await;
    let unsuback = client.unsubscribe(5, &["x/1", "x/2"]).await;
    assert_eq!(unsuback.packet_id, 5);
    assert_eq!(unsuback.reasons, vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]);
}

/// [MQTT-4.7.3-1] All Topic Names and Topic Filters MUST be at least one character long: an
/// empty Topic Filter in SUBSCRIBE is a malformed packet.
#[tokio::test]
async fn mqtt_4_7_3_1_empty_topic_filter_closes() {
    let server = TestServer::start().await;
    let mut client = server.v311("empty-filter").await;
    client.send_raw(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-4.7.1-2] / [MQTT-4.7.1-3] Wildcards match empty levels: "+/+" and "/+" match
/// "/finance", "#" matches everything not starting with "$", "+" does not match "/finance".
#[tokio::test]
async fn mqtt_4_7_1_3_wildcards_and_empty_levels() {
    let server = TestServer::start().await;
    let mut a = server.v311("levels-a").await;
    a.subscribe("+/+", QoS::AtMostOnce).await;
    let mut b = server.v311("levels-b").await;
    b.subscribe("/+", QoS::AtMostOnce).await;
    let mut c = server.v311("levels-c").await;
    c.subscribe("+", QoS::AtMostOnce).await;
    let mut publisher = server.v311("levels-pub").await;
    publisher.publish(publish("/finance", b"f", QoS::AtMostOnce, 0)).await;
    assert_eq!(a.expect_publish().await.topic, "/finance");
    assert_eq!(b.expect_publish().await.topic, "/finance");
    c.expect_nothing(300).await;
}

/// (5.0 §4.8.2) Shared Subscription filters: "$share/{ShareName}/{filter}";
/// a ShareName containing wildcards, or a missing filter, is a malformed Topic Filter (0x8F).
#[tokio::test]
async fn mqtt_4_8_2_v5_invalid_shared_filters() {
    let server = TestServer::start().await;
    let mut client = server.v5("bad-share").await;
    for (i, filter) in ["$share/g", "$share/g+/t", "$share//t", "$share/#/t"].iter().enumerate() {
        let suback = client
            .subscribe_with(i as u16 + 1, filter, opts(QoS::AtMostOnce), Default::default())
            .await;
        assert_eq!(suback.reasons, vec![ReasonCode::TOPIC_FILTER_INVALID], "{filter}");
    }
}

/// (5.0 §4.8.2) Retained messages are not sent to the Session when it
/// establishes a new Shared Subscription; and an UNSUBSCRIBE of the shared filter stops
/// deliveries to that member.
#[tokio::test]
async fn mqtt_4_8_2_v5_shared_no_retained_and_unsubscribe() {
    let server = TestServer::start().await;
    let mut publisher = server.v5("share-ret-pub").await;
    publisher.publish_retained("shr/t", b"r", 1).await;
    let mut member = server.v5("share-ret").await;
    member.subscribe("$share/g/shr/t", QoS::AtMostOnce).await;
    member.expect_nothing(300).await;
    publisher.publish(publish("shr/t", b"live", QoS::AtMostOnce, 0)).await;
    assert_eq!(member.expect_publish().await.payload.as_ref(), b"live");
    let unsuback = member.unsubscribe(2, &["$share/g/shr/t"]).await;
    assert_eq!(unsuback.reasons, vec![ReasonCode::SUCCESS]);
    publisher.publish(publish("shr/t", b"after", QoS::AtMostOnce, 0)).await;
    member.expect_nothing(300).await;
}
