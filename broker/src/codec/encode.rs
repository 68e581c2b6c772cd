//! [`Packet`]s to bytes, per protocol version.
//!
//! Each packet body is written by one generic function over [`Sink`]: run into a
//! [`Counter`] it sizes the packet (and checks every length limit), run into the output
//! buffer it writes it. `encode` sizes first, so it fails before writing anything and
//! reserves the exact space once; `encoded_size` is the sizing pass alone, so it always
//! agrees with what `encode` writes. 3.x packets leave out what 3.x lacks (properties,
//! reason codes) and 5.0 acknowledgements use their short forms where the spec allows.

use bytes::{BufMut, BytesMut};

use super::props_codec::{self, PropCtx};
use super::wire::{Counter, MAX_VARINT, Sink, varint_len};
use super::{Connect, Packet, Properties, Protocol, PubAck, QoS, ReasonCode, SubscriptionOptions};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("string of {0} bytes is longer than the 65535 bytes MQTT allows")]
    StringTooLong(usize),
    #[error("binary data of {0} bytes is longer than the 65535 bytes MQTT allows")]
    BinaryTooLong(usize),
    #[error("{0} bytes do not fit in a remaining length (at most 268435455)")]
    PacketTooLarge(usize),
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    #[error("{0} packets do not exist in MQTT 3.x")]
    NotInProtocol(&'static str),
}

/// Appends the packet's wire form for `protocol` to `buf`. A CONNECT is written in the
/// version it names itself (`Connect::protocol`). On error nothing is written.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let remaining = remaining_length(packet, protocol)?;
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(first_byte(packet));
    buf.varint(remaining);
    body(buf, packet, protocol)
}

/// Exact number of bytes `encode` would write, fixed header included. A packet `encode`
/// would refuse (a string over 64 KiB, AUTH in 3.x...) reports `usize::MAX`: it fits no
/// Maximum Packet Size.
pub fn encoded_size(packet: &Packet, protocol: Protocol) -> usize {
    match remaining_length(packet, protocol) {
        Ok(remaining) => 1 + varint_len(remaining) + remaining,
        Err(_) => usize::MAX,
    }
}

fn remaining_length(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    body(&mut counter, packet, protocol)?;
    if counter.0 > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge(counter.0));
    }
    Ok(counter.0)
}

/// Packet type in the high nibble, the flags the spec fixes (or PUBLISH's) in the low one.
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            // [MQTT-3.3.1-2]: DUP is always 0 at QoS 0.
            let dup = p.dup && p.qos != QoS::AtMostOnce;
            0x30 | (u8::from(dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn body<S: Sink>(s: &mut S, packet: &Packet, protocol: Protocol) -> Result<(), EncodeError> {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Connect(c) => connect(s, c)?,
        Packet::ConnAck(c) => {
            // 3.1 has no session-present flag; its first CONNACK byte is unused.
            s.u8(u8::from(c.session_present && protocol != Protocol::V3_1));
            if v5 {
                s.u8(c.code.0);
                props_codec::write(s, &c.properties, props_codec::CONNACK)?;
            } else {
                s.u8(c.code.v3_connack_code());
            }
        }
        Packet::Publish(p) => {
            s.string(&p.topic)?;
            if p.qos != QoS::AtMostOnce {
                s.u16(p.packet_id);
            }
            if v5 {
                props_codec::write(s, &p.properties, props_codec::PUBLISH)?;
            }
            s.put(&p.payload);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            puback(s, a, v5)?
        }
        Packet::Subscribe(sub) => {
            s.u16(sub.packet_id);
            if v5 {
                props_codec::write(s, &sub.properties, props_codec::SUBSCRIBE)?;
            }
            for t in &sub.filters {
                s.string(&t.filter)?;
                s.u8(options_byte(t.options, v5));
            }
        }
        Packet::SubAck(ack) => {
            s.u16(ack.packet_id);
            if v5 {
                props_codec::write(s, &ack.properties, props_codec::SUBACK)?;
            }
            for &code in &ack.reasons {
                // 3.x knows only the granted QoS or 0x80 for any failure.
                let code = if v5 || code.0 <= 2 { code.0 } else { 0x80 };
                s.u8(code);
            }
        }
        Packet::Unsubscribe(unsub) => {
            s.u16(unsub.packet_id);
            if v5 {
                props_codec::write(s, &unsub.properties, props_codec::UNSUBSCRIBE)?;
            }
            for filter in &unsub.filters {
                s.string(filter)?;
            }
        }
        Packet::UnsubAck(ack) => {
            s.u16(ack.packet_id);
            if v5 {
                props_codec::write(s, &ack.properties, props_codec::UNSUBACK)?;
                for &code in &ack.reasons {
                    s.u8(code.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_properties(s, d.reason, &d.properties, props_codec::DISCONNECT, true)?;
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInProtocol("AUTH"));
            }
            reason_and_properties(s, a.reason, &a.properties, props_codec::AUTH, false)?;
        }
    }
    Ok(())
}

fn connect<S: Sink>(s: &mut S, c: &Connect) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    s.string(if c.protocol == Protocol::V3_1 { "MQIsdp" } else { "MQTT" })?;
    s.u8(c.protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    s.u8(flags);
    s.u16(c.keep_alive);
    if v5 {
        props_codec::write(s, &c.properties, props_codec::CONNECT)?;
    }
    s.string(&c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            props_codec::write(s, &will.properties, props_codec::WILL)?;
        }
        s.string(&will.topic)?;
        s.binary(&will.payload)?;
    }
    if let Some(username) = &c.username {
        s.string(username)?;
    }
    if let Some(password) = &c.password {
        s.binary(password)?;
    }
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: 5.0 drops the properties when there are none and the
/// reason code too when it is Success (§3.4.2.1).
fn puback<S: Sink>(s: &mut S, a: &PubAck, v5: bool) -> Result<(), EncodeError> {
    s.u16(a.packet_id);
    if !v5 {
        return Ok(());
    }
    let props = props_codec::content_len(&a.properties, props_codec::PUBACK)?;
    if props == 0 && a.reason == ReasonCode::SUCCESS {
        return Ok(());
    }
    s.u8(a.reason.0);
    if props != 0 {
        props_codec::write(s, &a.properties, props_codec::PUBACK)?;
    }
    Ok(())
}

/// 5.0 DISCONNECT and AUTH: an empty body stands for Success with no properties.
/// DISCONNECT may also stop after the reason code (§3.14.2.2.1); AUTH always keeps its
/// property length, which the spec only lets go together with the reason code.
fn reason_and_properties<S: Sink>(
    s: &mut S,
    reason: ReasonCode,
    properties: &Properties,
    ctx: PropCtx,
    reason_alone: bool,
) -> Result<(), EncodeError> {
    let props = props_codec::content_len(properties, ctx)?;
    if props == 0 && reason == ReasonCode::SUCCESS {
        return Ok(());
    }
    s.u8(reason.0);
    if props != 0 || !reason_alone {
        props_codec::write(s, properties, ctx)?;
    }
    Ok(())
}

/// The SUBSCRIBE options byte; 3.x has only the QoS bits.
fn options_byte(o: SubscriptionOptions, v5: bool) -> u8 {
    let qos = o.qos as u8;
    if !v5 {
        return qos;
    }
    qos | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}
