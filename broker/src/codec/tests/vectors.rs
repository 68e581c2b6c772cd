//! Hand-written wire vectors for every packet type in every version, each checked both
//! ways: the bytes decode to the packet and the packet encodes to the bytes. The bytes are
//! written out from the specs, not produced by the encoder, so they pin the format itself.

use bytes::Bytes;

use super::super::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Protocol, PubAck, Publish,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, TopicSubscription,
    UnsubAck, Unsubscribe,
};
use super::{both_ways, decode_all};
use Protocol::{V3_1, V3_1_1, V5};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[test]
fn connect_v3_1_with_will_and_credentials() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x20,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        0xEE, // user, password, will retain, will QoS 1, will, clean
        0x00, 0x3C,
        0x00, 0x02, b'c', b'1',
        0x00, 0x03, b'w', b'/', b't',
        0x00, 0x03, b'b', b'y', b'e',
        0x00, 0x01, b'u',
        0x00, 0x01, b'p',
    ];
    let connect = Connect {
        protocol: V3_1,
        clean_start: true,
        keep_alive: 60,
        client_id: "c1".into(),
        will: Some(LastWill {
            topic: "w/t".into(),
            payload: b("bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some("u".into()),
        password: Some(b("p")),
        properties: Properties::default(),
    };
    // The connection's version does not matter: CONNECT names its own.
    both_ways(&bytes, Packet::Connect(Box::new(connect.clone())), V5);
    both_ways(&bytes, Packet::Connect(Box::new(connect)), V3_1_1);
}

#[test]
fn connect_v3_1_1_with_will_and_empty_client_id() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x11,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04,
        0x16, // will QoS 2, will, clean session
        0x00, 0x0A,
        0x00, 0x00,
        0x00, 0x01, b'a',
        0x00, 0x00,
    ];
    let connect = Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 10,
        client_id: String::new(),
        will: Some(LastWill {
            topic: "a".into(),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: None,
        password: None,
        properties: Properties::default(),
    };
    both_ways(&bytes, Packet::Connect(Box::new(connect)), V3_1_1);
}

#[test]
fn connect_v5_with_properties_and_will_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x38,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
        0x86, // user name, will, clean start
        0x00, 0x1E,
        0x0F, // properties
        0x11, 0x00, 0x00, 0x00, 0x78,
        0x21, 0x00, 0x0A,
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x00, 0x02, b'i', b'd',
        0x0E, // will properties
        0x01, 0x01,
        0x03, 0x00, 0x04, b't', b'e', b'x', b't',
        0x18, 0x00, 0x00, 0x00, 0x05,
        0x00, 0x01, b't',
        0x00, 0x02, b'h', b'i',
        0x00, 0x02, b'm', b'e',
    ];
    let connect = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "id".into(),
        will: Some(LastWill {
            topic: "t".into(),
            payload: b("hi"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(1),
                content_type: Some("text".into()),
                ..Properties::default()
            },
        }),
        username: Some("me".into()),
        password: None,
        properties: Properties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(10),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        },
    };
    both_ways(&bytes, Packet::Connect(Box::new(connect)), V3_1);
}

#[test]
fn connect_v5_password_without_user_name() {
    let bytes =
        [0x10, 0x11, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x40, 0, 0, 0, 0, 1, b'c', 0, 1, b'p'];
    let Ok(Packet::Connect(c)) = decode_all(&bytes, V5) else { panic!("not a CONNECT") };
    assert_eq!((c.username, c.password), (None, Some(b("p"))));
}

#[test]
fn connack_all_versions() {
    let present = ConnAck { session_present: true, ..ConnAck::default() };
    both_ways(&[0x20, 0x02, 0x01, 0x00], Packet::ConnAck(present.clone()), V3_1_1);
    // 3.1 has no session-present flag.
    both_ways(&[0x20, 0x02, 0x00, 0x00], Packet::ConnAck(ConnAck::default()), V3_1);
    let refused = ConnAck { code: ReasonCode::NOT_AUTHORIZED, ..ConnAck::default() };
    both_ways(&[0x20, 0x02, 0x00, 0x05], Packet::ConnAck(refused), V3_1_1);
    // 5.0 codes without a 3.x equivalent become "server unavailable".
    let busy = Packet::ConnAck(ConnAck { code: ReasonCode::SERVER_BUSY, ..ConnAck::default() });
    assert_eq!(super::encode_vec(&busy, V3_1_1), [0x20, 0x02, 0x00, 0x03]);
    let v5 = ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Properties {
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            ..Properties::default()
        },
    };
    let bytes = [0x20, 0x08, 0x00, 0x00, 0x05, 0x22, 0x00, 0x0A, 0x24, 0x01];
    both_ways(&bytes, Packet::ConnAck(v5), V5);
    both_ways(&[0x20, 0x03, 0x01, 0x00, 0x00], Packet::ConnAck(present), V5);
}

fn publish(qos: QoS, topic: &str, packet_id: u16, payload: &'static str) -> Publish {
    Publish { qos, topic: topic.into(), packet_id, payload: b(payload), ..Publish::default() }
}

#[test]
fn publish_v3() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    for protocol in [V3_1, V3_1_1] {
        both_ways(&bytes, Packet::Publish(publish(QoS::AtMostOnce, "a/b", 0, "hi")), protocol);
    }
    let retained = Publish { retain: true, dup: true, ..publish(QoS::AtLeastOnce, "a", 7, "") };
    both_ways(&[0x3B, 0x05, 0x00, 0x01, b'a', 0x00, 0x07], Packet::Publish(retained), V3_1_1);
}

#[test]
fn publish_v5_qos1_with_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x32, 0x18,
        0x00, 0x01, b't',
        0x00, 0x0A,
        0x11,
        0x01, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x3C,
        0x23, 0x00, 0x05,
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b',
        b'x',
    ];
    let properties = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: Some(5),
        user_properties: vec![("a".into(), "b".into())],
        ..Properties::default()
    };
    let p = Publish { properties, ..publish(QoS::AtLeastOnce, "t", 10, "x") };
    both_ways(&bytes, Packet::Publish(p), V5);
}

#[test]
fn publish_v5_qos2_dup_retain_with_subscription_identifiers() {
    let bytes = [0x3D, 0x0B, 0x00, 0x01, b't', 0x12, 0x34, 0x05, 0x0B, 0x81, 0x01, 0x0B, 0x02];
    let properties = Properties { subscription_identifiers: vec![129, 2], ..Properties::default() };
    let p = Publish {
        dup: true,
        retain: true,
        properties,
        ..publish(QoS::ExactlyOnce, "t", 0x1234, "")
    };
    both_ways(&bytes, Packet::Publish(p), V5);
}

#[test]
fn publish_v5_qos0_and_topic_alias_only() {
    let bytes = [0x30, 0x05, 0x00, 0x01, b't', 0x00, b'x'];
    both_ways(&bytes, Packet::Publish(publish(QoS::AtMostOnce, "t", 0, "x")), V5);
    let aliased = Publish {
        properties: Properties { topic_alias: Some(1), ..Properties::default() },
        ..publish(QoS::AtMostOnce, "", 0, "")
    };
    both_ways(&[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01], Packet::Publish(aliased), V5);
}

#[test]
fn publish_acknowledgements_v3() {
    for protocol in [V3_1, V3_1_1] {
        both_ways(
            &[0x40, 0x02, 0x00, 0x01],
            Packet::PubAck(PubAck::new(1, ReasonCode(0))),
            protocol,
        );
        both_ways(
            &[0x50, 0x02, 0x00, 0x02],
            Packet::PubRec(PubAck::new(2, ReasonCode(0))),
            protocol,
        );
        both_ways(
            &[0x62, 0x02, 0x00, 0x03],
            Packet::PubRel(PubAck::new(3, ReasonCode(0))),
            protocol,
        );
        both_ways(
            &[0x70, 0x02, 0x00, 0x04],
            Packet::PubComp(PubAck::new(4, ReasonCode(0))),
            protocol,
        );
    }
}

#[test]
fn publish_acknowledgements_v5_short_and_long_forms() {
    both_ways(&[0x40, 0x02, 0x00, 0x01], Packet::PubAck(PubAck::new(1, ReasonCode::SUCCESS)), V5);
    let no_match = PubAck::new(2, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    both_ways(&[0x50, 0x03, 0x00, 0x02, 0x10], Packet::PubRec(no_match), V5);
    let not_found = PubAck::new(3, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    both_ways(&[0x62, 0x03, 0x00, 0x03, 0x92], Packet::PubRel(not_found), V5);
    let with_reason = PubAck {
        packet_id: 1,
        reason: ReasonCode::UNSPECIFIED_ERROR,
        properties: Properties { reason_string: Some("bad".into()), ..Properties::default() },
    };
    let bytes = [0x70, 0x0A, 0x00, 0x01, 0x80, 0x06, 0x1F, 0x00, 0x03, b'b', b'a', b'd'];
    both_ways(&bytes, Packet::PubComp(with_reason), V5);
    // A long form saying only "success" decodes to the same value as the short form.
    let long = decode_all(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], V5);
    assert_eq!(long, Ok(Packet::PubAck(PubAck::new(1, ReasonCode::SUCCESS))));
}

fn sub(filter: &str, options: SubscriptionOptions) -> TopicSubscription {
    TopicSubscription { filter: filter.into(), options }
}

#[test]
fn subscribe_v5_options() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x0F,
        0x00, 0x0A,
        0x02, 0x0B, 0x05,
        0x00, 0x03, b'a', b'/', b'+', 0x2D,
        0x00, 0x01, b'#', 0x12,
    ];
    let first = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::Never,
    };
    let second = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        retain_handling: RetainHandling::OnNewSubscribe,
        ..SubscriptionOptions::default()
    };
    let subscribe = Subscribe {
        packet_id: 10,
        filters: vec![sub("a/+", first), sub("#", second)],
        properties: Properties { subscription_identifiers: vec![5], ..Properties::default() },
    };
    both_ways(&bytes, Packet::Subscribe(subscribe), V5);
}

#[test]
fn subscribe_v3() {
    let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
    let subscribe = Subscribe {
        packet_id: 1,
        filters: vec![sub("#", options)],
        properties: Properties::default(),
    };
    for protocol in [V3_1, V3_1_1] {
        let bytes = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x01];
        both_ways(&bytes, Packet::Subscribe(subscribe.clone()), protocol);
    }
}

#[test]
fn suback_all_versions() {
    let codes = vec![ReasonCode::GRANTED_QOS_0, ReasonCode::GRANTED_QOS_2, ReasonCode(0x80)];
    let v3 = SubAck { packet_id: 1, reasons: codes, properties: Properties::default() };
    both_ways(&[0x90, 0x05, 0x00, 0x01, 0x00, 0x02, 0x80], Packet::SubAck(v3.clone()), V3_1_1);
    // Any 5.0 failure code is 0x80 in 3.x.
    let denied = SubAck { reasons: vec![ReasonCode::NOT_AUTHORIZED], ..v3 };
    assert_eq!(super::encode_vec(&Packet::SubAck(denied.clone()), V3_1), [0x90, 3, 0, 1, 0x80]);
    both_ways(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x87], Packet::SubAck(denied), V5);
}

#[test]
fn unsubscribe_and_unsuback_all_versions() {
    let unsubscribe =
        Unsubscribe { packet_id: 2, filters: vec!["a".into()], properties: Properties::default() };
    let packet = Packet::Unsubscribe(unsubscribe);
    both_ways(&[0xA2, 0x05, 0x00, 0x02, 0x00, 0x01, b'a'], packet.clone(), V3_1_1);
    both_ways(&[0xA2, 0x06, 0x00, 0x02, 0x00, 0x00, 0x01, b'a'], packet, V5);
    let v3 = UnsubAck { packet_id: 2, ..UnsubAck::default() };
    both_ways(&[0xB0, 0x02, 0x00, 0x02], Packet::UnsubAck(v3), V3_1);
    let v5 = UnsubAck {
        packet_id: 2,
        reasons: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        ..UnsubAck::default()
    };
    both_ways(&[0xB0, 0x04, 0x00, 0x02, 0x00, 0x11], Packet::UnsubAck(v5), V5);
}

#[test]
fn ping_all_versions() {
    for protocol in [V3_1, V3_1_1, V5] {
        both_ways(&[0xC0, 0x00], Packet::PingReq, protocol);
        both_ways(&[0xD0, 0x00], Packet::PingResp, protocol);
    }
}

#[test]
fn disconnect_all_forms() {
    let normal = Packet::Disconnect(Disconnect::default());
    for protocol in [V3_1, V3_1_1, V5] {
        both_ways(&[0xE0, 0x00], normal.clone(), protocol);
    }
    let with_will =
        Disconnect { reason: ReasonCode::DISCONNECT_WITH_WILL, properties: Properties::default() };
    both_ways(&[0xE0, 0x01, 0x04], Packet::Disconnect(with_will), V5);
    let expiry = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: Properties { session_expiry_interval: Some(0), ..Properties::default() },
    };
    let bytes = [0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00];
    both_ways(&bytes, Packet::Disconnect(expiry), V5);
    // 3.x has no reason codes: a 5.0 reason is simply left out.
    let taken_over = Disconnect { reason: ReasonCode::SESSION_TAKEN_OVER, ..Disconnect::default() };
    assert_eq!(super::encode_vec(&Packet::Disconnect(taken_over), V3_1_1), [0xE0, 0x00]);
}

#[test]
fn auth_v5() {
    both_ways(&[0xF0, 0x00], Packet::Auth(Auth::default()), V5);
    let auth = Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: Properties { authentication_method: Some("x".into()), ..Properties::default() },
    };
    both_ways(&[0xF0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, b'x'], Packet::Auth(auth), V5);
    let bare = Auth { reason: ReasonCode::RE_AUTHENTICATE, ..Auth::default() };
    both_ways(&[0xF0, 0x02, 0x19, 0x00], Packet::Auth(bare.clone()), V5);
    assert_eq!(decode_all(&[0xF0, 0x01, 0x19], V5), Ok(Packet::Auth(bare.clone())));
    let mut buf = bytes::BytesMut::new();
    assert!(super::super::encode(&Packet::Auth(bare.clone()), V3_1_1, &mut buf).is_err());
    assert!(buf.is_empty());
    assert_eq!(super::super::encoded_size(&Packet::Auth(bare), V3_1_1), usize::MAX);
}

#[test]
fn long_remaining_length() {
    let payload = Bytes::from(vec![7u8; 200]);
    let p = Publish { payload, ..publish(QoS::AtMostOnce, "t", 0, "") };
    let bytes = super::encode_vec(&Packet::Publish(p.clone()), V3_1_1);
    // 3 + 200 = 203 = 0xCB 0x01 as a variable byte integer.
    assert_eq!(&bytes[..5], [0x30, 0xCB, 0x01, 0x00, 0x01]);
    assert_eq!(decode_all(&bytes, V3_1_1), Ok(Packet::Publish(p)));
}
