//! An application message as the broker holds it between a publisher and its subscribers.
//!
//! One `Arc<Message>` is shared by every subscriber it is routed to; what differs per
//! subscriber (packet id, QoS, DUP, retain flag, subscription ids, topic alias) is added only
//! when it is written to that subscriber's connection.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::codec::{Properties, Publish, QoS};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The 5.0 properties that travel with the message to subscribers: payload format,
    /// content type, response topic, correlation data and user properties. Message expiry is
    /// kept in `expires_at` instead, and recomputed for each delivery.
    pub properties: Properties,
    /// Unix time in milliseconds after which the message is no longer delivered.
    pub expires_at: Option<u64>,
    /// The client id of the publisher (for no-local); None for messages the server made.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// The message carried by a client's PUBLISH (topic alias already resolved).
    pub fn from_publish(publish: Publish, publisher: Option<Arc<str>>) -> Message {
        let Publish { qos, retain, topic, properties, payload, .. } = publish;
        let expires_at =
            properties.message_expiry_interval.map(|secs| now_millis() + u64::from(secs) * 1000);
        Message {
            topic: topic.into(),
            payload,
            qos,
            retain,
            properties: forwarded(properties),
            expires_at,
            publisher,
        }
    }

    pub fn is_expired(&self, now_millis: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_millis)
    }

    /// Seconds left before expiry, as sent in the forwarded Message Expiry Interval.
    pub fn remaining_expiry(&self, now_millis: u64) -> Option<u32> {
        self.expires_at.map(|at| {
            u32::try_from(at.saturating_sub(now_millis).div_ceil(1000)).unwrap_or(u32::MAX)
        })
    }
}

/// The properties a server forwards unaltered ([MQTT-3.3.2-4], [MQTT-3.3.2-17..20]).
fn forwarded(p: Properties) -> Properties {
    Properties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        ..Properties::default()
    }
}

pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
