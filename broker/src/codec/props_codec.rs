//! Reading and writing the MQTT 5.0 property list (spec §2.2.2) of each packet.
//!
//! Which properties a packet may carry (spec table 2-4) is a 64-bit mask indexed by property
//! id, one per packet kind ([`PropCtx`]). The decoder rejects anything outside the mask; the
//! encoder writes only what is inside it, so a `Properties` value reused across packet kinds
//! (say, a PUBLISH's properties in a will) can never produce a packet the peer must reject.

use super::properties::{Properties, id};
use super::wire::{Counter, MAX_VARINT, Reader, Sink};
use super::{DecodeError, EncodeError};

/// The properties one packet kind may carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct PropCtx {
    allowed: u64,
    /// Only PUBLISH may repeat the subscription identifier; SUBSCRIBE carries at most one.
    multi_sub_ids: bool,
}

const fn mask(ids: &[u8]) -> u64 {
    let mut bits = 0u64;
    let mut i = 0;
    while i < ids.len() {
        bits |= 1 << ids[i];
        i += 1;
    }
    bits
}

const fn ctx(ids: &[u8]) -> PropCtx {
    PropCtx { allowed: mask(ids), multi_sub_ids: false }
}

use id::*;

/// Every property id the spec defines; any other id is a malformed packet.
const KNOWN: u64 = mask(&[
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    SUBSCRIPTION_IDENTIFIER,
    SESSION_EXPIRY_INTERVAL,
    ASSIGNED_CLIENT_IDENTIFIER,
    SERVER_KEEP_ALIVE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REQUEST_PROBLEM_INFORMATION,
    WILL_DELAY_INTERVAL,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    TOPIC_ALIAS,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    USER_PROPERTY,
    MAXIMUM_PACKET_SIZE,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
]);

pub(super) const CONNECT: PropCtx = ctx(&[
    SESSION_EXPIRY_INTERVAL,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REQUEST_PROBLEM_INFORMATION,
    REQUEST_RESPONSE_INFORMATION,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    USER_PROPERTY,
    MAXIMUM_PACKET_SIZE,
]);
pub(super) const WILL: PropCtx = ctx(&[
    WILL_DELAY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
]);
pub(super) const CONNACK: PropCtx = ctx(&[
    SESSION_EXPIRY_INTERVAL,
    ASSIGNED_CLIENT_IDENTIFIER,
    SERVER_KEEP_ALIVE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    USER_PROPERTY,
    MAXIMUM_PACKET_SIZE,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
]);
pub(super) const PUBLISH: PropCtx = PropCtx {
    allowed: mask(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_IDENTIFIER,
        TOPIC_ALIAS,
        USER_PROPERTY,
    ]),
    multi_sub_ids: true,
};
/// PUBACK, PUBREC, PUBREL and PUBCOMP.
pub(super) const PUBACK: PropCtx = ctx(&[REASON_STRING, USER_PROPERTY]);
pub(super) const SUBSCRIBE: PropCtx = ctx(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
pub(super) const SUBACK: PropCtx = ctx(&[REASON_STRING, USER_PROPERTY]);
pub(super) const UNSUBSCRIBE: PropCtx = ctx(&[USER_PROPERTY]);
pub(super) const UNSUBACK: PropCtx = ctx(&[REASON_STRING, USER_PROPERTY]);
pub(super) const DISCONNECT: PropCtx =
    ctx(&[SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE, REASON_STRING, USER_PROPERTY]);
pub(super) const AUTH: PropCtx =
    ctx(&[AUTHENTICATION_METHOD, AUTHENTICATION_DATA, REASON_STRING, USER_PROPERTY]);

impl PropCtx {
    fn allows(self, property: u8) -> bool {
        self.allowed & (1 << property) != 0
    }
}

/// A byte property whose only legal values are 0 and 1.
fn read_bool(r: &mut Reader, detail: &'static str) -> Result<u8, DecodeError> {
    match r.u8()? {
        value @ (0 | 1) => Ok(value),
        _ => Err(DecodeError::protocol_error(detail)),
    }
}

fn read_nonzero_u16(r: &mut Reader, detail: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::protocol_error(detail)),
        value => Ok(value),
    }
}

/// Reads a property length and the properties it covers.
pub(super) fn read(r: &mut Reader, ctx: PropCtx) -> Result<Properties, DecodeError> {
    let len = r.varint()? as usize;
    let mut r = r.take(len)?;
    let mut p = Properties::default();
    let mut seen = 0u64;
    while !r.is_empty() {
        // The identifier is a variable byte integer, though every defined one fits in a byte.
        let property = r.varint()?;
        let bit = 1u64.checked_shl(property).unwrap_or(0);
        if KNOWN & bit == 0 {
            return Err(DecodeError::malformed("unknown property identifier"));
        }
        let property = property as u8;
        if !ctx.allows(property) {
            return Err(DecodeError::protocol_error("property not allowed in this packet"));
        }
        let repeatable =
            property == USER_PROPERTY || (property == SUBSCRIPTION_IDENTIFIER && ctx.multi_sub_ids);
        if seen & bit != 0 && !repeatable {
            return Err(DecodeError::protocol_error("property included more than once"));
        }
        seen |= bit;
        match property {
            PAYLOAD_FORMAT_INDICATOR => {
                p.payload_format_indicator = Some(read_bool(&mut r, "invalid payload format")?)
            }
            MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            CONTENT_TYPE => p.content_type = Some(r.string()?),
            RESPONSE_TOPIC => p.response_topic = Some(r.string()?),
            CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
            SUBSCRIPTION_IDENTIFIER => match r.varint()? {
                0 => return Err(DecodeError::protocol_error("subscription identifier is 0")),
                value => p.subscription_identifiers.push(value),
            },
            SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
            SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
            AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
            REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information =
                    Some(read_bool(&mut r, "invalid request problem information")?)
            }
            WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information =
                    Some(read_bool(&mut r, "invalid request response information")?)
            }
            RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
            SERVER_REFERENCE => p.server_reference = Some(r.string()?),
            REASON_STRING => p.reason_string = Some(r.string()?),
            RECEIVE_MAXIMUM => {
                p.receive_maximum = Some(read_nonzero_u16(&mut r, "receive maximum is 0")?)
            }
            TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            TOPIC_ALIAS => p.topic_alias = Some(read_nonzero_u16(&mut r, "topic alias is 0")?),
            MAXIMUM_QOS => p.maximum_qos = Some(read_bool(&mut r, "invalid maximum QoS")?),
            RETAIN_AVAILABLE => {
                p.retain_available = Some(read_bool(&mut r, "invalid retain available")?)
            }
            USER_PROPERTY => {
                let key = r.string()?;
                p.user_properties.push((key, r.string()?));
            }
            MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => return Err(DecodeError::protocol_error("maximum packet size is 0")),
                value => p.maximum_packet_size = Some(value),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available =
                    Some(read_bool(&mut r, "invalid wildcard subscription available")?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available =
                    Some(read_bool(&mut r, "invalid subscription identifier available")?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                p.shared_subscription_available =
                    Some(read_bool(&mut r, "invalid shared subscription available")?)
            }
            // KNOWN lists exactly the ids matched above.
            _ => return Err(DecodeError::malformed("unknown property identifier")),
        }
    }
    Ok(p)
}

/// Writes the property length and then the properties `ctx` allows.
pub(super) fn write<S: Sink>(s: &mut S, p: &Properties, ctx: PropCtx) -> Result<(), EncodeError> {
    let len = content_len(p, ctx)?;
    s.varint(len);
    write_items(s, p, ctx)
}

/// Bytes the properties take without their length prefix (0 = no properties to write).
pub(super) fn content_len(p: &Properties, ctx: PropCtx) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    write_items(&mut counter, p, ctx)?;
    if counter.0 > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge(counter.0));
    }
    Ok(counter.0)
}

/// `p` reduced to what `write` puts on the wire for `ctx`: what a round trip gives back.
#[cfg(test)]
pub(super) fn restrict(p: &Properties, ctx: PropCtx) -> Properties {
    let mut p = p.clone();
    macro_rules! keep {
        ($($field:ident: $id:expr,)*) => {
            $(if !ctx.allows($id) { p.$field = Default::default(); })*
        };
    }
    keep! {
        payload_format_indicator: PAYLOAD_FORMAT_INDICATOR,
        message_expiry_interval: MESSAGE_EXPIRY_INTERVAL,
        content_type: CONTENT_TYPE,
        response_topic: RESPONSE_TOPIC,
        correlation_data: CORRELATION_DATA,
        subscription_identifiers: SUBSCRIPTION_IDENTIFIER,
        session_expiry_interval: SESSION_EXPIRY_INTERVAL,
        assigned_client_identifier: ASSIGNED_CLIENT_IDENTIFIER,
        server_keep_alive: SERVER_KEEP_ALIVE,
        authentication_method: AUTHENTICATION_METHOD,
        authentication_data: AUTHENTICATION_DATA,
        request_problem_information: REQUEST_PROBLEM_INFORMATION,
        will_delay_interval: WILL_DELAY_INTERVAL,
        request_response_information: REQUEST_RESPONSE_INFORMATION,
        response_information: RESPONSE_INFORMATION,
        server_reference: SERVER_REFERENCE,
        reason_string: REASON_STRING,
        receive_maximum: RECEIVE_MAXIMUM,
        topic_alias_maximum: TOPIC_ALIAS_MAXIMUM,
        topic_alias: TOPIC_ALIAS,
        maximum_qos: MAXIMUM_QOS,
        retain_available: RETAIN_AVAILABLE,
        user_properties: USER_PROPERTY,
        maximum_packet_size: MAXIMUM_PACKET_SIZE,
        wildcard_subscription_available: WILDCARD_SUBSCRIPTION_AVAILABLE,
        subscription_identifier_available: SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        shared_subscription_available: SHARED_SUBSCRIPTION_AVAILABLE,
    }
    if !ctx.multi_sub_ids {
        p.subscription_identifiers.truncate(1);
    }
    p
}

fn write_items<S: Sink>(s: &mut S, p: &Properties, ctx: PropCtx) -> Result<(), EncodeError> {
    // Properties come out in identifier order; each is written only if set and allowed.
    let byte = |s: &mut S, property: u8, value: Option<u8>| {
        if let Some(v) = value.filter(|_| ctx.allows(property)) {
            s.u8(property);
            s.u8(v);
        }
    };
    let two = |s: &mut S, property: u8, value: Option<u16>| {
        if let Some(v) = value.filter(|_| ctx.allows(property)) {
            s.u8(property);
            s.u16(v);
        }
    };
    let four = |s: &mut S, property: u8, value: Option<u32>| {
        if let Some(v) = value.filter(|_| ctx.allows(property)) {
            s.u8(property);
            s.u32(v);
        }
    };
    let text = |s: &mut S, property: u8, value: &Option<String>| match value
        .as_deref()
        .filter(|_| ctx.allows(property))
    {
        Some(v) => {
            s.u8(property);
            s.string(v)
        }
        None => Ok(()),
    };
    let data = |s: &mut S, property: u8, value: &Option<bytes::Bytes>| match value
        .as_deref()
        .filter(|_| ctx.allows(property))
    {
        Some(v) => {
            s.u8(property);
            s.binary(v)
        }
        None => Ok(()),
    };

    byte(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    four(s, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    text(s, CONTENT_TYPE, &p.content_type)?;
    text(s, RESPONSE_TOPIC, &p.response_topic)?;
    data(s, CORRELATION_DATA, &p.correlation_data)?;
    if ctx.allows(SUBSCRIPTION_IDENTIFIER) {
        let ids = &p.subscription_identifiers;
        let ids = if ctx.multi_sub_ids { &ids[..] } else { &ids[..ids.len().min(1)] };
        for &value in ids {
            if value == 0 || value as usize > MAX_VARINT {
                return Err(EncodeError::OutOfRange("subscription identifier"));
            }
            s.u8(SUBSCRIPTION_IDENTIFIER);
            s.varint(value as usize);
        }
    }
    four(s, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    text(s, ASSIGNED_CLIENT_IDENTIFIER, &p.assigned_client_identifier)?;
    two(s, SERVER_KEEP_ALIVE, p.server_keep_alive);
    text(s, AUTHENTICATION_METHOD, &p.authentication_method)?;
    data(s, AUTHENTICATION_DATA, &p.authentication_data)?;
    byte(s, REQUEST_PROBLEM_INFORMATION, p.request_problem_information);
    four(s, WILL_DELAY_INTERVAL, p.will_delay_interval);
    byte(s, REQUEST_RESPONSE_INFORMATION, p.request_response_information);
    text(s, RESPONSE_INFORMATION, &p.response_information)?;
    text(s, SERVER_REFERENCE, &p.server_reference)?;
    text(s, REASON_STRING, &p.reason_string)?;
    two(s, RECEIVE_MAXIMUM, p.receive_maximum);
    two(s, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    two(s, TOPIC_ALIAS, p.topic_alias);
    byte(s, MAXIMUM_QOS, p.maximum_qos);
    byte(s, RETAIN_AVAILABLE, p.retain_available);
    if ctx.allows(USER_PROPERTY) {
        for (key, value) in &p.user_properties {
            s.u8(USER_PROPERTY);
            s.string(key)?;
            s.string(value)?;
        }
    }
    four(s, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(s, WILDCARD_SUBSCRIPTION_AVAILABLE, p.wildcard_subscription_available);
    byte(s, SUBSCRIPTION_IDENTIFIER_AVAILABLE, p.subscription_identifier_available);
    byte(s, SHARED_SUBSCRIPTION_AVAILABLE, p.shared_subscription_available);
    Ok(())
}
