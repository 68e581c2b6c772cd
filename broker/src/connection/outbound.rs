//! What a connection writes: deliveries from its session, and the acknowledgements it owes.
//!
//! Acknowledgements wait in `pending_acks` in arrival order: a PUBACK may only leave once its
//! message is durable, and PUBACKs must keep the order of their PUBLISHes ([MQTT-4.6.0-2]),
//! so one waiting for the store holds back the ones behind it. The store commits in order,
//! so in practice the queue drains as one batch per group commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Close, Connection};
use crate::broker::Durable;
use crate::codec::{self, LastWill, Packet, Publish, QoS, ReasonCode};
use crate::message::{Message, now_millis};
use crate::metrics::DropReason;
use crate::session::OutPublish;
use crate::store::StoreError;
use crate::transport::Transport;

/// Topic aliases towards a 5.0 client that accepts them (its Topic Alias Maximum): the first
/// PUBLISH on a topic carries the topic and an alias, later ones only the alias. A chat
/// device receives everything on one topic (its inbox), so this saves the topic on every
/// message but the first. Aliases are handed out until the client's maximum and then kept;
/// topics beyond that travel in full.
#[derive(Default)]
pub(super) struct OutAliases {
    assigned: HashMap<Arc<str>, u16>,
}

impl OutAliases {
    /// `max` is the client's Topic Alias Maximum.
    fn apply(&mut self, max: u16, topic: &Arc<str>, publish: &mut Publish) {
        if let Some(&alias) = self.assigned.get(topic) {
            publish.topic.clear();
            publish.properties.topic_alias = Some(alias);
        } else if self.assigned.len() < usize::from(max) {
            let alias = self.assigned.len() as u16 + 1;
            self.assigned.insert(topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }
}

pub(super) struct PendingAck {
    packet: Packet,
    wait: Option<Durable>,
}

impl PendingAck {
    pub(super) fn ready(packet: Packet) -> PendingAck {
        PendingAck { packet, wait: None }
    }

    pub(super) fn after(packet: Packet, wait: Option<Durable>) -> PendingAck {
        PendingAck { packet, wait }
    }

    /// The commit this acknowledgement waits for, if any.
    pub(super) fn wait_mut(&mut self) -> Option<&mut Durable> {
        self.wait.as_mut()
    }
}

type CommitResult = Result<(), StoreError>;

impl<T: Transport> Connection<T> {
    pub(super) fn write_packet(&mut self, packet: &Packet) {
        let before = self.wbuf.len();
        match codec::encode(packet, self.protocol, &mut self.wbuf) {
            Ok(()) => {
                let kind = super::packet_type(packet);
                self.broker.metrics.packet_out(kind, self.wbuf.len() - before);
            }
            Err(e) => {
                self.wbuf.truncate(before);
                tracing::error!(
                    client_id = %self.client.client_id,
                    user = self.client.user(),
                    error = %e,
                    kind = packet.kind(),
                    "cannot encode packet"
                );
            }
        }
    }

    /// Queues an acknowledgement; it leaves at once unless an earlier one is still waiting.
    pub(super) fn queue_ack(&mut self, ack: PendingAck) {
        if self.pending_acks.is_empty() && ack.wait.is_none() {
            self.write_packet(&ack.packet);
        } else {
            self.pending_acks.push_back(ack);
        }
    }

    /// The first pending commit finished: send every acknowledgement that is now due.
    pub(super) fn acks_ready(&mut self, first: CommitResult) -> Result<(), Close> {
        let mut result = Some(first);
        while let Some(front) = self.pending_acks.front_mut() {
            let outcome = match (result.take(), front.wait.as_mut()) {
                (Some(r), _) => r,
                (None, None) => Ok(()),
                (None, Some(wait)) => match wait.try_recv() {
                    Ok(r) => r,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return Ok(()),
                    Err(_) => Err(StoreError::Closed),
                },
            };
            let Some(ack) = self.pending_acks.pop_front() else { break };
            let mut packet = ack.packet;
            if let Err(e) = outcome {
                tracing::error!(
                    client_id = %self.client.client_id,
                    user = self.client.user(),
                    error = %e,
                    "publish not stored"
                );
                if !self.protocol.is_v5() {
                    // 3.x cannot say "not stored": close, and the client sends it again.
                    return Err(Close::Gone);
                }
                if let Packet::PubAck(a) | Packet::PubRec(a) = &mut packet {
                    a.reason = ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR;
                }
            }
            self.write_packet(&packet);
        }
        Ok(())
    }

    /// Writes everything the session's outbox holds; a close request ends the connection.
    pub(super) fn drain_outbox(&mut self) -> Result<(), Close> {
        let (outbox, closing) = self.session.state.lock().take_outbox();
        if let Some(code) = closing {
            return Err(Close::Server(code));
        }
        for out in outbox {
            self.write_publish(out);
        }
        Ok(())
    }

    /// Encodes one delivery for this client's protocol, or drops it if it exceeds the
    /// client's Maximum Packet Size ([MQTT-3.1.2-25]).
    pub(super) fn write_publish(&mut self, out: OutPublish) {
        let mut properties = codec::Properties::default();
        if self.protocol.is_v5() {
            properties = out.message.properties.clone();
            properties.message_expiry_interval = out.message.remaining_expiry(now_millis());
            properties.subscription_identifiers = out.sub_ids;
        }
        let packet = Packet::Publish(Publish {
            dup: out.dup,
            qos: out.qos,
            retain: out.retain,
            topic: out.message.topic.to_string(),
            packet_id: out.packet_id,
            properties,
            payload: out.message.payload.clone(),
        });
        let mut packet = packet;
        if self.client_max_packet != u32::MAX
            && codec::encoded_size(&packet, self.protocol) > self.client_max_packet as usize
        {
            self.broker.metrics.dropped(DropReason::PacketTooLarge);
            if out.qos != QoS::AtMostOnce {
                let mut writes = Vec::new();
                self.session.state.lock().abandon(out.packet_id, &mut writes);
                self.broker.store.submit(writes);
            }
            return;
        }
        // Only once the packet is sure to go out may it teach the client an alias.
        if self.out_alias_max > 0
            && let Packet::Publish(publish) = &mut packet
        {
            let aliases = self.aliases.get_or_insert_default();
            aliases.outgoing.apply(self.out_alias_max, &out.message.topic, publish);
        }
        self.write_packet(&packet);
    }

    /// Room freed in the window: what already waits in the outbox goes first (it is older),
    /// then queued messages move in.
    pub(super) fn refill(&mut self) {
        let mut writes = Vec::new();
        let (outbox, closing, fresh) = {
            let mut state = self.session.state.lock();
            let (outbox, closing) = state.take_outbox();
            let fresh = state.fill_window(now_millis(), &self.broker.metrics, &mut writes);
            (outbox, closing, fresh)
        };
        self.broker.store.submit(writes);
        self.closing = self.closing.or(closing);
        // The outbox holds older deliveries than what the window just let in.
        for out in outbox.into_iter().chain(fresh) {
            self.write_publish(out);
        }
    }

    /// Publishes the will now, or after its delay unless the client comes back first
    /// ([MQTT-3.1.3-9]); never later than the session's end.
    pub(super) fn publish_will(&self, will: Box<LastWill>) {
        let will = *will;
        let (expiry, epoch) = {
            let state = self.session.state.lock();
            (state.expiry, state.epoch)
        };
        let delay = will.properties.will_delay_interval.unwrap_or(0).min(expiry);
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: 0,
            properties: will.properties,
            payload: will.payload,
        };
        let message = Arc::new(Message::from_publish(publish, Some(self.client.client_id.clone())));
        let broker = self.broker.clone();
        if delay == 0 {
            broker.publish(message);
            return;
        }
        let session = self.session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let returned = session.state.lock().epoch != epoch || session.is_online();
            if !returned {
                broker.publish(message);
            }
        });
    }
}
