//! Every rejection rule of the decoder, each with the reason code it must produce, plus the
//! "not enough bytes yet" cases that must not be errors at all.

use bytes::BytesMut;

use super::super::{Packet, Protocol, ReasonCode, decode};
use super::{decode_all, packet_bytes, rejects};
use Protocol::{V3_1, V3_1_1, V5};

const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
const PROTOCOL: ReasonCode = ReasonCode::PROTOCOL_ERROR;
const ALL: [Protocol; 3] = [V3_1, V3_1_1, V5];
const MQTT: &[u8] = &[0, 4, b'M', b'Q', b'T', b'T'];

#[test]
fn incomplete_input_is_not_an_error() {
    for bytes in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 0xFF, 0xFF, 0xFF], &[0x30, 0x03, 0x00]] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, V5, usize::MAX), Ok(None), "{bytes:02x?}");
        assert_eq!(&buf[..], bytes, "buffer must be left untouched");
    }
}

#[test]
fn fixed_header() {
    for protocol in ALL {
        rejects(&[0x00, 0x00], protocol, MALFORMED);
        rejects(&[0x41, 0x02, 0x00, 0x01], protocol, MALFORMED);
        rejects(&[0x60, 0x02, 0x00, 0x01], protocol, MALFORMED);
        rejects(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00], protocol, MALFORMED);
        rejects(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'#'], protocol, MALFORMED);
        rejects(&[0xC1, 0x00], protocol, MALFORMED);
        rejects(&[0x11, 0x00], protocol, MALFORMED);
        // Remaining length longer than four bytes.
        rejects(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], protocol, MALFORMED);
        // PUBLISH QoS 3.
        rejects(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], protocol, MALFORMED);
    }
    // DUP on a QoS 0 PUBLISH: forbidden from 3.1.1 on, ignored in 3.1.
    rejects(&[0x38, 0x03, 0x00, 0x01, b'a'], V3_1_1, MALFORMED);
    rejects(&[0x38, 0x03, 0x00, 0x01, b'a'], V5, MALFORMED);
    let Ok(Packet::Publish(p)) = decode_all(&[0x38, 0x03, 0x00, 0x01, b'a'], V3_1) else {
        panic!("3.1 accepts DUP at QoS 0")
    };
    assert!(!p.dup);
    // 3.1 clients may set DUP on a retried PUBREL; later versions may not.
    assert!(decode_all(&[0x6A, 0x02, 0x00, 0x01], V3_1).is_ok());
    rejects(&[0x6A, 0x02, 0x00, 0x01], V3_1_1, MALFORMED);
    // AUTH exists only in 5.0.
    rejects(&[0xF0, 0x00], V3_1, MALFORMED);
    rejects(&[0xF0, 0x00], V3_1_1, MALFORMED);
}

#[test]
fn remaining_length_must_match_the_packet() {
    for protocol in ALL {
        rejects(&[0xC0, 0x01, 0x00], protocol, MALFORMED);
        rejects(&[0xD0, 0x01, 0x00], protocol, MALFORMED);
        rejects(&[0x40, 0x01, 0x00], protocol, MALFORMED);
        rejects(&[0xB0, 0x01, 0x00], protocol, MALFORMED);
        // Topic length pointing past the end of the packet.
        rejects(&[0x30, 0x03, 0x00, 0x05, b'a'], protocol, MALFORMED);
    }
    for protocol in [V3_1, V3_1_1] {
        rejects(&[0x40, 0x03, 0x00, 0x01, 0x00], protocol, MALFORMED);
        rejects(&[0xE0, 0x01, 0x00], protocol, MALFORMED);
        rejects(&[0xB0, 0x03, 0x00, 0x01, 0x00], protocol, MALFORMED);
    }
    // Trailing bytes after a CONNECT.
    let connect = packet_bytes(0x10, &[MQTT, &[4, 0x02, 0, 0], &[0, 1, b'c'], &[0xFF]]);
    rejects(&connect, V3_1_1, MALFORMED);
}

#[test]
fn packet_too_large_is_detected_from_the_header() {
    // Only the fixed header has arrived; the remaining length alone exceeds the limit.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
    let err = decode(&mut buf, V5, 1000).expect_err("too large");
    assert_eq!(err.reason, ReasonCode::PACKET_TOO_LARGE);
    // The limit counts the fixed header: a 2 + 3 byte packet fits 5, not 4.
    let bytes = [0x30, 0x03, 0x00, 0x01, b'a'];
    assert!(decode(&mut BytesMut::from(&bytes[..]), V3_1_1, 5).is_ok());
    let err = decode(&mut BytesMut::from(&bytes[..]), V3_1_1, 4).expect_err("too large");
    assert_eq!(err.reason, ReasonCode::PACKET_TOO_LARGE);
}

#[test]
fn strings() {
    for protocol in ALL {
        rejects(&[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28], protocol, MALFORMED);
        rejects(&[0x30, 0x04, 0x00, 0x02, b'a', 0x00], protocol, MALFORMED);
        // An encoded surrogate (U+D800) is not UTF-8.
        rejects(&[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], protocol, MALFORMED);
    }
}

fn connect(level: u8, flags: u8, rest: &[&[u8]]) -> Vec<u8> {
    let name: &[u8] = if level == 3 { &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p'] } else { MQTT };
    let props: &[u8] = if level == 5 { &[0] } else { &[] };
    packet_bytes(0x10, &[name, &[level, flags, 0, 0], props, &[0, 1, b'c'], &rest.concat()])
}

#[test]
fn connect_rules() {
    let unsupported = ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
    rejects(&packet_bytes(0x10, &[MQTT, &[3, 0, 0, 0, 0, 0]]), V5, unsupported);
    rejects(&packet_bytes(0x10, &[MQTT, &[6, 0, 0, 0, 0, 0]]), V5, unsupported);
    rejects(&packet_bytes(0x10, &[b"\0\x06MQIsdp", &[4, 0, 0, 0, 0, 0]]), V5, unsupported);
    rejects(&packet_bytes(0x10, &[b"\0\x03XYZ", &[4, 0, 0, 0, 0, 0]]), V5, unsupported);
    let will: &[u8] = &[0, 1, b't', 0, 0];
    for level in [3, 4, 5] {
        let will_props: &[u8] = if level == 5 { &[0] } else { &[] };
        assert!(decode_all(&connect(level, 0x02, &[]), V3_1).is_ok());
        assert!(decode_all(&connect(level, 0x04, &[will_props, will]), V3_1).is_ok());
        rejects(&connect(level, 0x03, &[]), V5, MALFORMED);
        rejects(&connect(level, 0x08, &[]), V5, MALFORMED);
        rejects(&connect(level, 0x20, &[]), V5, MALFORMED);
        rejects(&connect(level, 0x1C, &[will_props, will]), V5, MALFORMED);
        // Flags promising fields the packet does not have.
        rejects(&connect(level, 0x80, &[]), V5, MALFORMED);
        rejects(&connect(level, 0x04, &[]), V5, MALFORMED);
        // A will topic is a topic name: not empty, no wildcards.
        let bad_topic: &[u8] = &[0, 1, b'#', 0, 0];
        rejects(
            &connect(level, 0x04, &[will_props, bad_topic]),
            V5,
            ReasonCode::TOPIC_NAME_INVALID,
        );
    }
    // Password without user name: malformed in 3.x, allowed in 5.0.
    let password: &[u8] = &[0, 1, b'p'];
    rejects(&connect(3, 0x40, &[password]), V5, MALFORMED);
    rejects(&connect(4, 0x40, &[password]), V5, MALFORMED);
    assert!(decode_all(&connect(5, 0x40, &[password]), V5).is_ok());
    // Will properties are limited to the will's own set.
    let session_expiry: &[u8] = &[5, 0x11, 0, 0, 0, 1];
    rejects(&connect(5, 0x04, &[session_expiry, will]), V5, PROTOCOL);
}

#[test]
fn connack_rules() {
    rejects(&[0x20, 0x02, 0x00, 0x06], V3_1_1, MALFORMED);
    rejects(&[0x20, 0x02, 0x02, 0x00], V3_1_1, MALFORMED);
    rejects(&[0x20, 0x03, 0x02, 0x00, 0x00], V5, MALFORMED);
    // 5.0 CONNACK always has a property length.
    rejects(&[0x20, 0x02, 0x00, 0x00], V5, MALFORMED);
}

#[test]
fn publish_rules() {
    let invalid = ReasonCode::TOPIC_NAME_INVALID;
    for protocol in ALL {
        let props: &[u8] = if protocol == V5 { &[0] } else { &[] };
        rejects(&packet_bytes(0x30, &[&[0, 3, b'a', b'/', b'+'], props]), protocol, invalid);
        rejects(&packet_bytes(0x30, &[&[0, 1, b'#'], props]), protocol, invalid);
        rejects(&packet_bytes(0x32, &[&[0, 1, b'a', 0, 0], props]), protocol, PROTOCOL);
        rejects(&packet_bytes(0x34, &[&[0, 1, b'a', 0, 0], props]), protocol, PROTOCOL);
        // QoS 1 without room for the packet identifier.
        rejects(&[0x32, 0x04, 0, 1, b'a', 0], protocol, MALFORMED);
    }
    rejects(&[0x30, 0x02, 0x00, 0x00], V3_1, invalid);
    rejects(&[0x30, 0x02, 0x00, 0x00], V3_1_1, invalid);
    rejects(&[0x30, 0x03, 0x00, 0x00, 0x00], V5, PROTOCOL);
}

#[test]
fn acknowledgement_rules() {
    for protocol in ALL {
        rejects(&[0x40, 0x02, 0x00, 0x00], protocol, PROTOCOL);
        rejects(&[0x90, 0x03, 0x00, 0x00, 0x00], protocol, PROTOCOL);
    }
    rejects(&[0x90, 0x03, 0x00, 0x01, 0x03], V3_1_1, MALFORMED);
    rejects(&[0x90, 0x02, 0x00, 0x01], V3_1_1, PROTOCOL);
    rejects(&[0xB0, 0x03, 0x00, 0x01, 0x00], V5, PROTOCOL);
    // Property length running past the end of the packet.
    rejects(&[0x40, 0x05, 0x00, 0x01, 0x80, 0x05, 0x1F], V5, MALFORMED);
}

#[test]
fn subscribe_rules() {
    for protocol in ALL {
        let props: &[u8] = if protocol == V5 { &[0] } else { &[] };
        let sub = |options: &[u8]| packet_bytes(0x82, &[&[0, 1], props, &[0, 1, b'#'], options]);
        rejects(&packet_bytes(0x82, &[&[0, 1], props]), protocol, PROTOCOL);
        rejects(&packet_bytes(0x82, &[&[0, 0], props, &[0, 1, b'#', 0]]), protocol, PROTOCOL);
        rejects(&packet_bytes(0x82, &[&[0, 1], props, &[0, 0, 0]]), protocol, MALFORMED);
        rejects(&sub(&[0x03]), protocol, MALFORMED);
        rejects(&sub(&[0x40]), protocol, MALFORMED);
        rejects(&sub(&[]), protocol, MALFORMED);
        rejects(&packet_bytes(0xA2, &[&[0, 1], props]), protocol, PROTOCOL);
        rejects(&packet_bytes(0xA2, &[&[0, 1], props, &[0, 0]]), protocol, MALFORMED);
    }
    // 3.x has only the QoS bits; 5.0 defines the next four.
    let v3 = packet_bytes(0x82, &[&[0, 1], &[0, 1, b'#'], &[0x04]]);
    rejects(&v3, V3_1_1, MALFORMED);
    rejects(&v3, V3_1, MALFORMED);
    let v5 = |options: u8| packet_bytes(0x82, &[&[0, 1, 0], &[0, 1, b'#'], &[options]]);
    assert!(decode_all(&v5(0x2C), V5).is_ok());
    rejects(&v5(0x30), V5, PROTOCOL);
    rejects(&v5(0x80), V5, MALFORMED);
}

/// A v5 PUBLISH to "t" with the given property bytes.
fn publish_with(props: &[u8]) -> Vec<u8> {
    let len = u8::try_from(props.len()).expect("short");
    packet_bytes(0x30, &[&[0, 1, b't', len], props])
}

#[test]
fn property_rules() {
    // Allowed once, given twice.
    rejects(&publish_with(&[0x01, 0x00, 0x01, 0x01]), V5, PROTOCOL);
    // Not allowed in PUBLISH.
    rejects(&publish_with(&[0x11, 0, 0, 0, 1]), V5, PROTOCOL);
    rejects(&publish_with(&[0x18, 0, 0, 0, 1]), V5, PROTOCOL);
    // Repeatable in PUBLISH.
    let users = [0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0];
    assert!(decode_all(&publish_with(&users), V5).is_ok());
    assert!(decode_all(&publish_with(&[0x0B, 1, 0x0B, 2]), V5).is_ok());
    // Bad values.
    rejects(&publish_with(&[0x01, 0x02]), V5, PROTOCOL);
    rejects(&publish_with(&[0x0B, 0x00]), V5, PROTOCOL);
    rejects(&publish_with(&[0x23, 0x00, 0x00]), V5, PROTOCOL);
    // Unknown identifier, truncated value, overlong identifier.
    rejects(&publish_with(&[0x05, 0x00]), V5, MALFORMED);
    rejects(&publish_with(&[0x02, 0x00]), V5, MALFORMED);
    rejects(&publish_with(&[0x80, 0x80, 0x80, 0x80, 0x01]), V5, MALFORMED);
    rejects(&publish_with(&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF]), V5, MALFORMED);

    // SUBSCRIBE: at most one subscription identifier.
    let subscribe = |props: &[u8]| {
        let len = u8::try_from(props.len()).expect("short");
        packet_bytes(0x82, &[&[0, 1, len], props, &[0, 1, b'#', 0]])
    };
    assert!(decode_all(&subscribe(&[0x0B, 1]), V5).is_ok());
    rejects(&subscribe(&[0x0B, 1, 0x0B, 2]), V5, PROTOCOL);
    rejects(&subscribe(&[0x1F, 0, 0]), V5, PROTOCOL);

    let connect_with = |props: &[u8]| {
        let len = u8::try_from(props.len()).expect("short");
        packet_bytes(0x10, &[MQTT, &[5, 0x02, 0, 0, len], props, &[0, 1, b'c']])
    };
    assert!(
        decode_all(&connect_with(&[0x21, 0, 1, 0x27, 0, 0, 0, 1, 0x17, 1, 0x19, 0]), V5).is_ok()
    );
    rejects(&connect_with(&[0x21, 0, 0]), V5, PROTOCOL);
    rejects(&connect_with(&[0x27, 0, 0, 0, 0]), V5, PROTOCOL);
    rejects(&connect_with(&[0x17, 2]), V5, PROTOCOL);
    rejects(&connect_with(&[0x19, 2]), V5, PROTOCOL);
    rejects(&connect_with(&[0x24, 0]), V5, PROTOCOL);

    let connack_with = |props: &[u8]| {
        let len = u8::try_from(props.len()).expect("short");
        packet_bytes(0x20, &[&[0, 0, len], props])
    };
    assert!(decode_all(&connack_with(&[0x24, 1, 0x25, 0, 0x28, 1, 0x29, 0, 0x2A, 1]), V5).is_ok());
    for property in [0x24, 0x25, 0x28, 0x29, 0x2A] {
        rejects(&connack_with(&[property, 2]), V5, PROTOCOL);
    }
    rejects(&connack_with(&[0x17, 1]), V5, PROTOCOL);
    // Properties only exist in 5.0: in 3.x the same bytes are a short payload or garbage.
    rejects(&[0xE0, 0x02, 0x00, 0x00], V3_1_1, MALFORMED);
    rejects(&[0xE0, 0x03, 0x00, 0x01, 0x11], V5, MALFORMED);
    rejects(&[0xE0, 0x04, 0x00, 0x02, 0x17, 0x01], V5, PROTOCOL);
}
