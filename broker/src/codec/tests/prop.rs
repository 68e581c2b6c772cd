//! Property-based tests: arbitrary valid packets of each version survive encode → decode
//! unchanged with `encoded_size` exact, a valid encoding cut anywhere is "not yet" and then
//! the packet, and no input at all (random or a corrupted valid packet) makes the decoder
//! panic or produce a packet that does not survive its own round trip.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::strategy::Union;

use super::super::props_codec::{self, PropCtx, restrict};
use super::super::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Protocol, PubAck, Publish,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, TopicSubscription,
    UnsubAck, Unsubscribe, decode, encode, encoded_size,
};
use Protocol::{V3_1, V3_1_1, V5};

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..6).prop_map(|cs| cs.into_iter().filter(|&c| c != '\0').collect())
}

/// A non-empty string without U+0000 and, for topic names, without wildcards.
fn name(wildcards: bool) -> impl Strategy<Value = String> {
    text().prop_map(move |s| {
        let mut s: String = s.chars().filter(|&c| wildcards || (c != '+' && c != '#')).collect();
        if s.is_empty() {
            s.push('t');
        }
        s
    })
}

fn data() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1u16..
}

/// Every property, each with a valid value.
fn all_properties() -> impl Strategy<Value = Properties> {
    let bit = || of(0u8..=1);
    let a = (bit(), of(any::<u32>()), of(text()), of(text()), of(data()));
    let b = (vec(1u32..=268_435_455, 0..3), of(any::<u32>()), of(text()), of(any::<u16>()));
    let c = (of(text()), of(data()), bit(), of(any::<u32>()), bit(), of(text()), of(text()));
    let d = (of(text()), of(1u16..), of(any::<u16>()), of(1u16..), bit(), bit());
    let e = (vec((text(), text()), 0..3), of(1u32..), bit(), bit(), bit());
    (a, b, c, d, e).prop_map(|(a, b, c, d, e)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: b.0,
        session_expiry_interval: b.1,
        assigned_client_identifier: b.2,
        server_keep_alive: b.3,
        authentication_method: c.0,
        authentication_data: c.1,
        request_problem_information: c.2,
        will_delay_interval: c.3,
        request_response_information: c.4,
        response_information: c.5,
        server_reference: c.6,
        reason_string: d.0,
        receive_maximum: d.1,
        topic_alias_maximum: d.2,
        topic_alias: d.3,
        maximum_qos: d.4,
        retain_available: d.5,
        user_properties: e.0,
        maximum_packet_size: e.1,
        wildcard_subscription_available: e.2,
        subscription_identifier_available: e.3,
        shared_subscription_available: e.4,
    })
}

/// Properties a packet of `ctx`'s kind may carry; none at all before 5.0.
fn props(v5: bool, ctx: PropCtx) -> BoxedStrategy<Properties> {
    if !v5 {
        return Just(Properties::default()).boxed();
    }
    prop_oneof![Just(Properties::default()), all_properties().prop_map(move |p| restrict(&p, ctx))]
        .boxed()
}

fn reason(v5: bool, v3_codes: &'static [u8]) -> BoxedStrategy<ReasonCode> {
    if v5 {
        any::<u8>().prop_map(ReasonCode).boxed()
    } else {
        proptest::sample::select(v3_codes).prop_map(ReasonCode).boxed()
    }
}

fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = protocol.is_v5();
    let will = (name(false), data(), qos(), any::<bool>(), props(v5, props_codec::WILL)).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    );
    let fields = (any::<bool>(), any::<u16>(), text(), of(will), of(text()), of(data()));
    (fields, props(v5, props_codec::CONNECT)).prop_map(move |(f, properties)| {
        let (clean_start, keep_alive, client_id, will, username, password) = f;
        // 3.x has no password without a user name.
        let password = password.filter(|_| v5 || username.is_some());
        let connect = Connect {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        };
        Packet::Connect(Box::new(connect))
    })
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    let flags = (any::<bool>(), qos(), any::<bool>(), packet_id(), any::<bool>());
    (flags, name(false), props(v5, props_codec::PUBLISH), data()).prop_map(
        move |((dup, qos, retain, id, drop_topic), topic, properties, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            // A topic alias may stand in for the topic name (5.0).
            let topic =
                if drop_topic && properties.topic_alias.is_some() { String::new() } else { topic };
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { id },
                properties,
                payload,
            })
        },
    )
}

fn acknowledgement(v5: bool) -> impl Strategy<Value = Packet> {
    (0..4, packet_id(), reason(v5, &[0]), props(v5, props_codec::PUBACK)).prop_map(
        |(kind, packet_id, reason, properties)| {
            let ack = PubAck { packet_id, reason, properties };
            match kind {
                0 => Packet::PubAck(ack),
                1 => Packet::PubRec(ack),
                2 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        },
    )
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..3).prop_map(move |(qos, nl, rap, rh)| {
            let retain_handling = match rh {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscribe,
                _ => RetainHandling::Never,
            };
            if v5 {
                SubscriptionOptions { qos, no_local: nl, retain_as_published: rap, retain_handling }
            } else {
                SubscriptionOptions { qos, ..SubscriptionOptions::default() }
            }
        });
    let filters = vec((name(true), options), 1..4).prop_map(|fs| {
        fs.into_iter().map(|(filter, options)| TopicSubscription { filter, options }).collect()
    });
    (packet_id(), filters, props(v5, props_codec::SUBSCRIBE)).prop_map(
        |(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe { packet_id, filters, properties })
        },
    )
}

fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let v5 = protocol.is_v5();
    // The 5.0 codes that 3.x CONNACK return codes 0-5 stand for.
    let connack = (
        any::<bool>(),
        reason(v5, &[0x00, 0x84, 0x85, 0x86, 0x87, 0x88]),
        props(v5, props_codec::CONNACK),
    )
        .prop_map(move |(present, code, properties)| {
            // 3.1 has no session-present flag.
            let session_present = present && protocol != V3_1;
            Packet::ConnAck(ConnAck { session_present, code, properties })
        });
    let suback =
        (packet_id(), vec(reason(v5, &[0, 1, 2, 0x80]), 1..5), props(v5, props_codec::SUBACK))
            .prop_map(|(packet_id, reasons, properties)| {
                Packet::SubAck(SubAck { packet_id, reasons, properties })
            });
    let unsubscribe = (packet_id(), vec(name(true), 1..4), props(v5, props_codec::UNSUBSCRIBE))
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })
        });
    // 3.x UNSUBACK carries nothing but the packet identifier.
    let codes = if v5 { 1..4 } else { 0..1 };
    let unsuback = (packet_id(), vec(reason(v5, &[0]), codes), props(v5, props_codec::UNSUBACK))
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck { packet_id, reasons, properties })
        });
    let disconnect = (reason(v5, &[0]), props(v5, props_codec::DISCONNECT))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let mut kinds = vec![
        connect(protocol).boxed(),
        connack.boxed(),
        publish(v5).boxed(),
        acknowledgement(v5).boxed(),
        subscribe(v5).boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        let auth = (reason(v5, &[]), props(v5, props_codec::AUTH))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
        kinds.push(auth.boxed());
    }
    Union::new(kinds).boxed()
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
}

fn any_packet() -> impl Strategy<Value = (Protocol, Packet)> {
    protocol().prop_flat_map(|protocol| (Just(protocol), packet(protocol)))
}

fn packets() -> impl Strategy<Value = (Protocol, Vec<Packet>)> {
    protocol().prop_flat_map(|protocol| (Just(protocol), vec(packet(protocol), 1..5)))
}

fn encoded(packet: &Packet, protocol: Protocol) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf).expect("valid packets encode");
    buf
}

/// What the fuzz target does: decode everything, and check that whatever decodes survives
/// being encoded and decoded again.
fn decode_stream(bytes: &[u8], protocol: Protocol, max: usize) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode(&mut buf, protocol, max) {
        // A CONNECT is written in its own version; everything else in the connection's.
        let mut again = encoded(&packet, protocol);
        assert_eq!(again.len(), encoded_size(&packet, protocol));
        assert_eq!(decode(&mut again, protocol, usize::MAX), Ok(Some(packet)));
        assert!(again.is_empty());
    }
}

proptest! {
    // No regression files: they would land outside the codec's directory.
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn round_trip_v3_1(packet in packet(V3_1)) {
        round_trip(&packet, V3_1)?;
    }

    #[test]
    fn round_trip_v3_1_1(packet in packet(V3_1_1)) {
        round_trip(&packet, V3_1_1)?;
    }

    #[test]
    fn round_trip_v5(packet in packet(V5)) {
        round_trip(&packet, V5)?;
    }

    #[test]
    fn split_anywhere((protocol, packet) in any_packet()) {
        let bytes = encoded(&packet, protocol);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut buf, protocol, usize::MAX), Ok(None));
            prop_assert_eq!(buf.len(), cut);
            buf.extend_from_slice(&bytes[cut..]);
            prop_assert_eq!(decode(&mut buf, protocol, usize::MAX), Ok(Some(packet.clone())));
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn back_to_back_packets((protocol, packets) in packets()) {
        let mut buf = BytesMut::new();
        for packet in &packets {
            encode(packet, protocol, &mut buf).expect("valid packets encode");
        }
        for packet in packets {
            prop_assert_eq!(decode(&mut buf, protocol, usize::MAX), Ok(Some(packet)));
        }
        prop_assert_eq!(decode(&mut buf, protocol, usize::MAX), Ok(None));
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..96),
        protocol in protocol(),
        max in 0usize..200,
    ) {
        decode_stream(&bytes, protocol, max);
        decode_stream(&bytes, protocol, usize::MAX);
    }

    #[test]
    fn plausible_headers_never_panic(
        first in any::<u8>(),
        body in vec(any::<u8>(), 0..64),
        protocol in protocol(),
    ) {
        // A well-formed fixed header gets the random body past the first checks.
        let len = u8::try_from(body.len()).unwrap_or(0);
        let bytes = [&[first, len][..], &body].concat();
        decode_stream(&bytes, protocol, usize::MAX);
    }

    #[test]
    fn corrupted_packets_never_panic(
        (protocol, packet) in any_packet(),
        at in any::<usize>(),
        xor in 1u8..,
    ) {
        let mut bytes = encoded(&packet, protocol).to_vec();
        let at = at % bytes.len();
        bytes[at] ^= xor;
        decode_stream(&bytes, protocol, usize::MAX);
    }
}

fn round_trip(packet: &Packet, protocol: Protocol) -> Result<(), TestCaseError> {
    let mut buf = encoded(packet, protocol);
    prop_assert_eq!(buf.len(), encoded_size(packet, protocol));
    prop_assert_eq!(decode(&mut buf, protocol, usize::MAX), Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}
