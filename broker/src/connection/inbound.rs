//! The client's packets after CONNECT: publishes (with their QoS 1/2 flows), the client's
//! acknowledgements of our deliveries, subscriptions, pings and DISCONNECT.

use std::sync::Arc;

use std::task::Poll;

use super::outbound::PendingAck;
use super::{Close, Connection};
use super::{Intercept, Intercepted};
use crate::codec::{
    Packet, Protocol, PubAck, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    UnsubAck, Unsubscribe,
};
use crate::hooks::{Action, ClientInfo, Decision, Event, Hooks};
use crate::message::Message;
use crate::metrics::DropReason;
use crate::session::Ack;
use crate::topic;
use crate::transport::Transport;

impl<T: Transport> Connection<T> {
    pub(super) async fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::PubAck(ack) => {
                self.on_ack(ack.packet_id, Ack::PubAck);
                Ok(())
            }
            Packet::PubRec(ack) => {
                self.on_pubrec(ack);
                Ok(())
            }
            Packet::PubRel(ack) => {
                self.on_pubrel(ack);
                Ok(())
            }
            Packet::PubComp(ack) => {
                self.on_ack(ack.packet_id, Ack::PubComp);
                Ok(())
            }
            // Boxed, like every rare path with a large future (see `intercept`).
            Packet::Subscribe(subscribe) => Box::pin(self.on_subscribe(subscribe)).await,
            Packet::Unsubscribe(unsubscribe) => Box::pin(self.on_unsubscribe(unsubscribe)).await,
            Packet::PingReq => {
                self.write_packet(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.properties.session_expiry_interval {
                    let mut state = self.session.state.lock();
                    // [MQTT-3.14.2-2]: a session that was to end cannot be made to last.
                    if state.expiry == 0 && expiry != 0 {
                        return Err(Close::Protocol(ReasonCode::PROTOCOL_ERROR));
                    }
                    state.expiry = expiry.min(self.broker.config.max_session_expiry);
                }
                Err(Close::Client { will: disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL })
            }
            // A second CONNECT, server-to-client packets, or AUTH without enhanced auth.
            _ => Err(Close::Protocol(ReasonCode::PROTOCOL_ERROR)),
        }
    }

    async fn on_publish(&mut self, mut publish: Publish) -> Result<(), Close> {
        if let Some(alias) = publish.properties.topic_alias.take() {
            if alias == 0 || alias > self.broker.config.topic_alias_maximum {
                return Err(Close::Protocol(ReasonCode::TOPIC_ALIAS_INVALID));
            }
            if publish.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.incoming.get(&alias)) {
                    Some(topic) => publish.topic.clone_from(topic),
                    None => return Err(Close::Protocol(ReasonCode::PROTOCOL_ERROR)),
                }
            } else {
                let aliases = self.aliases.get_or_insert_default();
                aliases.incoming.insert(alias, publish.topic.clone());
            }
        }
        if !topic::valid_topic_name(&publish.topic) {
            return Err(Close::Protocol(ReasonCode::TOPIC_NAME_INVALID));
        }
        if publish.retain && !self.broker.config.retain_available {
            return Err(Close::Protocol(ReasonCode::RETAIN_NOT_SUPPORTED));
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        if qos != QoS::AtMostOnce {
            let unacked = self.pending_acks.len()
                + self.intercepts.len()
                + self.session.state.lock().incoming_qos2.len();
            if unacked >= usize::from(self.broker.config.receive_maximum) {
                return Err(Close::Protocol(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
            }
        }
        if qos == QoS::ExactlyOnce && !self.session.state.lock().incoming_qos2.insert(packet_id) {
            // A resent QoS 2 publish we already have: acknowledge again, deliver once.
            self.queue_ack(PendingAck::ready(Packet::PubRec(PubAck::new(
                packet_id,
                ReasonCode::SUCCESS,
            ))));
            return Ok(());
        }

        let format_invalid = publish.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&publish.payload).is_err();
        let message = Message::from_publish(publish, Some(self.client.client_id.clone()));
        let decided = if format_invalid {
            (Decision::Deny(ReasonCode::PAYLOAD_FORMAT_INVALID), message)
        } else if self.broker.hooks.intercepts_publish() {
            let hooks = self.broker.hooks.clone();
            let client = self.client.clone();
            let mut run: Intercept = Box::pin(async move {
                let mut message = message;
                let verdict = intercept(&hooks, &client, &mut message).await;
                (verdict, message)
            });
            // Started here, in arrival order, so what a hook does before its first wait (a
            // store plugin queueing its write) happens in the order the publishes came.
            let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(decided) => decided,
                Poll::Pending => {
                    let pending = Intercepted { run, decided: None, qos, packet_id };
                    self.intercepts.push_back(pending);
                    return Ok(());
                }
            }
        } else {
            (Decision::Allow, message)
        };
        if self.intercepts.is_empty() {
            self.finish_publish(decided.0, decided.1, qos, packet_id);
        } else {
            // Behind publishes whose hooks are still at work: it waits its turn.
            let run: Intercept = Box::pin(std::future::pending());
            let decided = Some(decided);
            self.intercepts.push_back(Intercepted { run, decided, qos, packet_id });
        }
        Ok(())
    }

    /// Publishes whose hooks are done, from the front: routed and acknowledged in order.
    pub(super) fn finish_intercepted(&mut self) {
        while self.intercepts.front().is_some_and(|i| i.decided.is_some()) {
            let Some(done) = self.intercepts.pop_front() else { break };
            if let Some((verdict, message)) = done.decided {
                self.finish_publish(verdict, message, done.qos, done.packet_id);
            }
        }
    }

    /// Acts on a publish's verdict: route it (or not) and queue its acknowledgement.
    fn finish_publish(&mut self, verdict: Decision, message: Message, qos: QoS, packet_id: u16) {
        let durable = match verdict {
            Decision::Allow => self.broker.publish(Arc::new(message)),
            // The plugin stored and delivered it before answering.
            Decision::Handled => None,
            Decision::Deny(code) => {
                tracing::info!(
                    client_id = %self.client.client_id,
                    user = self.client.user(),
                    topic = %message.topic,
                    reason = %code,
                    "publish refused"
                );
                self.broker.metrics.dropped(DropReason::Denied);
                // 3.x has no negative acknowledgement: the message is acknowledged and
                // dropped, as Mosquitto does; 5.0 clients get the reason code.
                let code = if self.protocol == Protocol::V5 { code } else { ReasonCode::SUCCESS };
                match qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => self
                        .queue_ack(PendingAck::ready(Packet::PubAck(PubAck::new(packet_id, code)))),
                    QoS::ExactlyOnce => {
                        if code.is_error() {
                            // The flow ends with this PUBREC: no PUBREL will come.
                            self.session.state.lock().incoming_qos2.remove(&packet_id);
                        }
                        self.queue_ack(PendingAck::ready(Packet::PubRec(PubAck::new(
                            packet_id, code,
                        ))))
                    }
                }
                return;
            }
        };
        let ack = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => Packet::PubAck(PubAck::new(packet_id, ReasonCode::SUCCESS)),
            QoS::ExactlyOnce => Packet::PubRec(PubAck::new(packet_id, ReasonCode::SUCCESS)),
        };
        self.queue_ack(PendingAck::after(ack, durable));
    }

    fn on_pubrel(&mut self, ack: PubAck) {
        let known = self.session.state.lock().incoming_qos2.remove(&ack.packet_id);
        let code = if known || !self.protocol.is_v5() {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.write_packet(&Packet::PubComp(PubAck::new(ack.packet_id, code)));
    }

    /// The client acknowledged a delivery (PUBACK for QoS 1, PUBCOMP for QoS 2).
    fn on_ack(&mut self, packet_id: u16, ack: Ack) {
        let mut writes = Vec::new();
        let done = self.session.state.lock().acknowledge(packet_id, ack, &mut writes);
        self.broker.store.submit(writes);
        match done {
            Some(message) => {
                if self.broker.hooks.has_observers() {
                    self.broker.hooks.notify(Event::Delivered {
                        client_id: self.client.client_id.clone(),
                        message,
                    });
                }
                self.refill();
            }
            None => tracing::debug!(packet_id, ?ack, "acknowledgement for no message in flight"),
        }
    }

    fn on_pubrec(&mut self, ack: PubAck) {
        let mut writes = Vec::new();
        if ack.reason.is_error() {
            // The subscriber refused it: the flow ends here, no PUBREL ([MQTT-4.3.3-?]).
            self.session.state.lock().abandon(ack.packet_id, &mut writes);
            self.broker.store.submit(writes);
            self.refill();
            return;
        }
        let known = self.session.state.lock().acknowledge(ack.packet_id, Ack::PubRec, &mut writes);
        self.broker.store.submit(writes);
        let code = if known.is_some() || !self.protocol.is_v5() {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.write_packet(&Packet::PubRel(PubAck::new(ack.packet_id, code)));
    }

    async fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let v5 = self.protocol.is_v5();
        let id = subscribe.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut writes = Vec::new();
        let mut retained = Vec::new();
        for request in &subscribe.filters {
            let failure = if v5 { ReasonCode::TOPIC_FILTER_INVALID } else { ReasonCode(0x80) };
            let (group, inner) = match topic::parse_shared(&request.filter) {
                Ok(Some((group, inner))) => (Some(group), inner),
                Ok(None) if topic::valid_topic_filter(&request.filter) => {
                    (None, request.filter.as_str())
                }
                _ => {
                    reasons.push(failure);
                    continue;
                }
            };
            if group.is_some() && request.options.no_local {
                // [MQTT-3.8.3-4]
                return Err(Close::Protocol(ReasonCode::PROTOCOL_ERROR));
            }
            let action = Action::Subscribe { filter: inner, qos: request.options.qos };
            if let Decision::Deny(code) = self.broker.hooks.authorize(&self.client, &action).await {
                tracing::info!(
                    client_id = %self.client.client_id,
                    user = self.client.user(),
                    filter = %request.filter,
                    reason = %code,
                    "subscribe refused"
                );
                reasons.push(if v5 { code } else { ReasonCode(0x80) });
                continue;
            }
            let (existed, w) =
                self.broker.subscribe(&self.session, &request.filter, request.options, id);
            writes.extend(w);
            reasons.push(ReasonCode(request.options.qos as u8));
            let send_retained = match request.options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
            // Retained messages are not sent for shared subscriptions ([MQTT-4.8.2-?]).
            if send_retained && group.is_none() {
                for message in self.broker.retained_for(inner) {
                    retained.push((message, request.options.qos));
                }
            }
        }
        if !writes.is_empty() {
            // The subscription is durable before the client hears it exists.
            if !matches!(self.broker.store.commit(writes).await, Ok(Ok(()))) {
                return Err(Close::Protocol(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR));
            }
        }
        let granted: Vec<String> = subscribe
            .filters
            .iter()
            .zip(&reasons)
            .filter(|(_, code)| !code.is_error())
            .map(|(request, _)| request.filter.clone())
            .collect();
        let suback = SubAck { packet_id: subscribe.packet_id, reasons, ..Default::default() };
        self.write_packet(&Packet::SubAck(suback));
        if self.broker.hooks.has_observers() {
            for filter in granted {
                let client = self.client.clone();
                self.broker.hooks.notify(Event::Subscribed { client, filter });
            }
        }
        let mut writes = Vec::new();
        for (message, granted) in retained {
            let qos = message.qos.min(granted);
            let sub_ids = id.into_iter().collect();
            // Retained messages go out with RETAIN set ([MQTT-3.3.1-9]).
            let result =
                self.session.state.lock().deliver(&message, qos, true, sub_ids, 0, &mut writes);
            if let crate::session::Delivered::Dropped(reason) = result {
                self.broker.metrics.dropped(reason);
            }
        }
        Ok(())
    }

    async fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let mut writes = Vec::new();
        for filter in &unsubscribe.filters {
            let (existed, w) = self.broker.unsubscribe(&self.session, filter);
            writes.extend(w);
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !writes.is_empty() && !matches!(self.broker.store.commit(writes).await, Ok(Ok(()))) {
            return Err(Close::Protocol(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR));
        }
        let unsuback = UnsubAck { packet_id: unsubscribe.packet_id, reasons, ..Default::default() };
        self.write_packet(&Packet::UnsubAck(unsuback));
        Ok(())
    }
}

/// The `authorize` and `on_publish` hooks for a publish.
async fn intercept(hooks: &Hooks, client: &ClientInfo, message: &mut Message) -> Decision {
    let action =
        Action::Publish { topic: &message.topic, qos: message.qos, retain: message.retain };
    let verdict = hooks.authorize(client, &action).await;
    if verdict != Decision::Allow || !hooks.has_on_publish() {
        return verdict;
    }
    hooks.on_publish(client, message).await
}
