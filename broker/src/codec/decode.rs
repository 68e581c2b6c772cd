//! Bytes to [`Packet`]s: the fixed header, then one function per packet type.
//!
//! The fixed header is checked first, before the body has arrived, so a bad type, bad flags
//! or an oversized remaining length fail at once instead of making the connection buffer a
//! body it will reject. The body is then split off the read buffer and frozen, so payloads
//! and binary fields are `Bytes` slices of it, never copies. Each rule that the specs put
//! on the wire format is enforced here, with the reason code the 5.0 spec gives it.

use std::fmt;

use bytes::{Buf, BytesMut};

use super::props_codec::{self, PropCtx};
use super::wire::{Reader, parse_varint};
use super::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Protocol, PubAck, Publish,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, TopicSubscription,
    UnsubAck, Unsubscribe,
};

/// Why a packet could not be decoded: the reason code to answer with (5.0) and a short
/// description for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: ReasonCode,
    pub detail: &'static str,
}

impl DecodeError {
    pub(super) const fn malformed(detail: &'static str) -> DecodeError {
        DecodeError { reason: ReasonCode::MALFORMED_PACKET, detail }
    }

    pub(super) const fn protocol_error(detail: &'static str) -> DecodeError {
        DecodeError { reason: ReasonCode::PROTOCOL_ERROR, detail }
    }

    const fn new(reason: ReasonCode, detail: &'static str) -> DecodeError {
        DecodeError { reason, detail }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one packet from the front of `buf`. `Ok(None)` means not enough bytes yet and
/// leaves `buf` untouched; on `Ok(Some(_))` the packet's bytes are consumed from `buf`.
///
/// `protocol` is the connection's negotiated version; a CONNECT is decoded per the version
/// it announces itself. `max_packet_size` bounds the whole packet, fixed header included.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let kind = first >> 4;
    let flags = first & 0x0F;
    check_flags(kind, flags, protocol)?;
    let Some((remaining, len_bytes)) = parse_varint(&buf[1..])? else { return Ok(None) };
    let header = 1 + len_bytes;
    let total = header + remaining as usize;
    if total > max_packet_size {
        return Err(DecodeError::new(ReasonCode::PACKET_TOO_LARGE, "packet too large"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut body = buf.split_to(total).freeze();
    body.advance(header);
    let mut r = Reader::new(body);
    let v5 = protocol.is_v5();
    let packet = match kind {
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => Packet::ConnAck(connack(&mut r, protocol)?),
        3 => Packet::Publish(publish(&mut r, flags, protocol)?),
        4 => Packet::PubAck(puback(&mut r, v5)?),
        5 => Packet::PubRec(puback(&mut r, v5)?),
        6 => Packet::PubRel(puback(&mut r, v5)?),
        7 => Packet::PubComp(puback(&mut r, v5)?),
        8 => Packet::Subscribe(subscribe(&mut r, v5)?),
        9 => Packet::SubAck(suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => {
            let (reason, properties) = reason_and_properties(&mut r, v5, props_codec::DISCONNECT)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        // check_flags has let type 15 through only for 5.0.
        _ => {
            let (reason, properties) = reason_and_properties(&mut r, v5, props_codec::AUTH)?;
            Packet::Auth(Auth { reason, properties })
        }
    };
    r.finish()?;
    Ok(Some(packet))
}

/// Checks the packet type and the fixed-header flags the spec reserves (§2.1.3).
fn check_flags(kind: u8, flags: u8, protocol: Protocol) -> Result<(), DecodeError> {
    let expected = match kind {
        0 => return Err(DecodeError::malformed("reserved packet type 0")),
        // PUBLISH flags are DUP, QoS and RETAIN, checked with the rest of the packet.
        3 => return Ok(()),
        6 | 8 | 10 => 0b0010,
        15 if !protocol.is_v5() => {
            return Err(DecodeError::malformed("AUTH packet in MQTT 3.x"));
        }
        _ => 0,
    };
    // MQTT 3.1 clients may set DUP on a retried PUBREL, SUBSCRIBE or UNSUBSCRIBE.
    let ignored = if protocol == Protocol::V3_1 && expected != 0 { 0b1000 } else { 0 };
    if flags & !ignored == expected {
        Ok(())
    } else {
        Err(DecodeError::malformed("invalid fixed header flags"))
    }
}

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::protocol_error("packet identifier is 0")),
        id => Ok(id),
    }
}

fn read_properties(r: &mut Reader, v5: bool, ctx: PropCtx) -> Result<Properties, DecodeError> {
    if v5 { props_codec::read(r, ctx) } else { Ok(Properties::default()) }
}

/// A topic name (as opposed to a filter) must not contain wildcards (§4.7.1).
fn has_wildcard(topic: &str) -> bool {
    topic.bytes().any(|b| b == b'+' || b == b'#')
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQIsdp", 3) => Protocol::V3_1,
        (b"MQTT", 4) => Protocol::V3_1_1,
        (b"MQTT", 5) => Protocol::V5,
        _ => {
            return Err(DecodeError::new(
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                "unsupported protocol name or level",
            ));
        }
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::malformed("will QoS or retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::malformed("will QoS 3"))?;
    // 5.0 allows a password without a user name; 3.x does not.
    if has_password && !has_username && !v5 {
        return Err(DecodeError::malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = read_properties(r, v5, props_codec::CONNECT)?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = read_properties(r, v5, props_codec::WILL)?;
        let topic = r.string()?;
        if topic.is_empty() || has_wildcard(&topic) {
            return Err(DecodeError::new(ReasonCode::TOPIC_NAME_INVALID, "invalid will topic"));
        }
        let payload = r.binary()?;
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if has_username { Some(r.string()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader, protocol: Protocol) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    // 3.1 has no session-present flag: the whole byte is unused there.
    let session_present = match protocol {
        Protocol::V3_1 => false,
        _ if flags & 0xFE != 0 => return Err(DecodeError::malformed("reserved CONNACK flags")),
        _ => flags & 0x01 != 0,
    };
    let code = r.u8()?;
    if !protocol.is_v5() {
        let code = ReasonCode::from_v3_connack_code(code)
            .ok_or(DecodeError::malformed("unknown CONNACK return code"))?;
        return Ok(ConnAck { session_present, code, properties: Properties::default() });
    }
    let properties = props_codec::read(r, props_codec::CONNACK)?;
    Ok(ConnAck { session_present, code: ReasonCode(code), properties })
}

fn publish(r: &mut Reader, flags: u8, protocol: Protocol) -> Result<Publish, DecodeError> {
    let v5 = protocol.is_v5();
    let retain = flags & 0x01 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::malformed("PUBLISH QoS 3"))?;
    let mut dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        // [MQTT-3.3.1-2] from 3.1.1 on; 3.1 did not forbid it, so it is just dropped there.
        if protocol != Protocol::V3_1 {
            return Err(DecodeError::malformed("DUP set on a QoS 0 PUBLISH"));
        }
        dup = false;
    }
    let topic = r.string()?;
    if has_wildcard(&topic) {
        return Err(DecodeError::new(ReasonCode::TOPIC_NAME_INVALID, "wildcard in topic name"));
    }
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { packet_id(r)? };
    let properties = read_properties(r, v5, props_codec::PUBLISH)?;
    if topic.is_empty() {
        if !v5 {
            return Err(DecodeError::new(ReasonCode::TOPIC_NAME_INVALID, "empty topic name"));
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::protocol_error("empty topic name without a topic alias"));
        }
    }
    let payload = r.rest();
    Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and the properties may each be
/// left off the end (§3.4.2.1), meaning Success and none.
fn puback(r: &mut Reader, v5: bool) -> Result<PubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 || r.is_empty() {
        return Ok(PubAck::new(packet_id, ReasonCode::SUCCESS));
    }
    let reason = ReasonCode(r.u8()?);
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        props_codec::read(r, props_codec::PUBACK)?
    };
    Ok(PubAck { packet_id, reason, properties })
}

/// DISCONNECT and AUTH: 3.x DISCONNECT is empty; in 5.0 a missing reason means Success /
/// Normal disconnection and missing properties mean none (§3.14.2.1, §3.15.2.1).
fn reason_and_properties(
    r: &mut Reader,
    v5: bool,
    ctx: PropCtx,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let reason = ReasonCode(r.u8()?);
    let properties = if r.is_empty() { Properties::default() } else { props_codec::read(r, ctx)? };
    Ok((reason, properties))
}

fn filter(r: &mut Reader) -> Result<String, DecodeError> {
    let filter = r.string()?;
    if filter.is_empty() {
        // [MQTT-4.7.3-1]: topic filters are at least one character long.
        return Err(DecodeError::malformed("empty topic filter"));
    }
    Ok(filter)
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, props_codec::SUBSCRIBE)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = filter(r)?;
        let byte = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::malformed("reserved subscription option bits set"));
        }
        let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::malformed("subscription QoS 3"))?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::protocol_error("retain handling 3")),
        };
        let options = SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        };
        filters.push(TopicSubscription { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::protocol_error("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, filters, properties })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, props_codec::SUBACK)?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::protocol_error("SUBACK without return codes"));
    }
    if !v5 && codes.iter().any(|&c| !matches!(c, 0 | 1 | 2 | 0x80)) {
        return Err(DecodeError::malformed("invalid SUBACK return code"));
    }
    let reasons = codes.iter().map(|&c| ReasonCode(c)).collect();
    Ok(SubAck { packet_id, reasons, properties })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, props_codec::UNSUBSCRIBE)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(r)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::protocol_error("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { packet_id, filters, properties })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 {
        return Ok(UnsubAck { packet_id, ..UnsubAck::default() });
    }
    let properties = props_codec::read(r, props_codec::UNSUBACK)?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::protocol_error("UNSUBACK without reason codes"));
    }
    let reasons = codes.iter().map(|&c| ReasonCode(c)).collect();
    Ok(UnsubAck { packet_id, reasons, properties })
}
