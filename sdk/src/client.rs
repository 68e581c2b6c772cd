//! [`ChatClient`]: one device's MQTT connection to Seed (DESIGN.md, "The chat protocol on
//! MQTT"). It connects as `{user}:{device}` with the access token, subscribes to the inbox,
//! and offers the chat verbs (send, mark read, typing, sync) as calls that resolve when the
//! server acknowledged them. The bookkeeping lives in `driver.rs`.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use seed_proto::ProstMessage;
use seed_proto::topics;
use seed_proto::v1::{self, outbound::Body};
use tokio::sync::{mpsc, oneshot};

use crate::account::Session;
use crate::driver::{self, Command, Pending};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ids;

/// How long `connect` waits for the CONNACK and the inbox SUBACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A message the server stored (one tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The idempotency key it was sent with; resending with it is safe.
    pub client_msg_id: String,
}

/// A connected device: the [`Event`] stream plus a [`ChatHandle`] (through `Deref`) for
/// sending. Dropping it disconnects.
pub struct ChatClient {
    handle: ChatHandle,
    events: mpsc::UnboundedReceiver<Event>,
}

/// The sending half of a [`ChatClient`]; cheap to clone into other tasks.
#[derive(Clone)]
pub struct ChatHandle {
    user: String,
    device: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl ChatClient {
    /// Connects to `mqtt_addr` (`host:port`) as the session's device and subscribes to its
    /// inbox; returns once both were accepted. The server then replays what this device has
    /// not acknowledged, in seq order, as [`Event`]s.
    pub async fn connect(mqtt_addr: &str, session: &Session) -> Result<ChatClient> {
        let (host, port) = mqtt_addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Invalid(format!("MQTT address is not host:port: {mqtt_addr}")))?;
        let client_id = topics::client_id(&session.user, &session.device);
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_credentials(session.user.clone(), session.access_token.clone())
            .set_clean_start(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_connection_timeout(5)
            .set_max_packet_size(Some(1 << 20));
        let (client, eventloop) = AsyncClient::new(options, driver::CHANNEL);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        driver::spawn(
            client,
            eventloop,
            topics::inbox(&session.user),
            commands,
            events_tx,
            ready_tx,
        );
        let handle = ChatHandle {
            user: session.user.clone(),
            device: session.device.clone(),
            commands: commands_tx,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, ready).await {
            Err(_) => Err(Error::Timeout("CONNACK and inbox SUBACK".into())),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(()))) => Ok(ChatClient { handle, events }),
        }
    }

    /// The next event; None once the client is finished and every event was taken.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event within `timeout`, if any.
    pub async fn next_event_within(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten()
    }

    /// An event already received, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// A sending handle for another task.
    pub fn handle(&self) -> ChatHandle {
        self.handle.clone()
    }

    /// Splits into the sending handle and the event receiver.
    pub fn split(self) -> (ChatHandle, mpsc::UnboundedReceiver<Event>) {
        (self.handle, self.events)
    }
}

impl std::ops::Deref for ChatClient {
    type Target = ChatHandle;

    fn deref(&self) -> &ChatHandle {
        &self.handle
    }
}

impl ChatHandle {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Sends a text message to `peer`; resolves at the PUBACK (stored durably).
    pub async fn send_text(&self, peer: &str, text: &str) -> Result<Sent> {
        let message = v1::Message { text: text.to_owned(), ..Default::default() };
        self.send_message(peer, message).await
    }

    /// Sends a message (a fresh `client_msg_id` is set unless it has one; reuse one to resend).
    pub async fn send_message(&self, peer: &str, mut message: v1::Message) -> Result<Sent> {
        if message.client_msg_id.is_empty() {
            message.client_msg_id = ids::client_msg_id();
        }
        let client_msg_id = message.client_msg_id.clone();
        self.send(peer, v1::Outbound { body: Some(Body::Message(message)) }).await?;
        Ok(Sent { client_msg_id })
    }

    /// Publishes any `Outbound` to `dm/{peer}`: QoS 0 for typing, QoS 1 otherwise.
    pub async fn send(&self, peer: &str, outbound: v1::Outbound) -> Result<()> {
        let qos = match outbound.body {
            Some(Body::Typing(_)) => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        };
        self.publish(peer_topic(peer, topics::dm)?, qos, outbound.encode_to_vec().into()).await
    }

    /// Plain UTF-8 on `dm/{peer}/text`, the way the simplest devices send.
    pub async fn send_plain_text(&self, peer: &str, text: &str) -> Result<()> {
        let topic = peer_topic(peer, topics::dm_text)?;
        self.publish(topic, QoS::AtLeastOnce, Bytes::copy_from_slice(text.as_bytes())).await
    }

    /// Marks the chat with `peer` read up to message `up_to` (blue ticks for the peer).
    pub async fn mark_read(&self, peer: &str, up_to: u64) -> Result<()> {
        self.send(peer, v1::Outbound { body: Some(Body::Read(v1::Read { up_to })) }).await
    }

    /// Tells `peer` whether I am typing (QoS 0: resolves when written, never stored).
    pub async fn typing(&self, peer: &str, active: bool) -> Result<()> {
        let typing = v1::Typing { active, ..Default::default() };
        self.send(peer, v1::Outbound { body: Some(Body::Typing(typing)) }).await
    }

    /// Asks the server to replay my inbox after `since` (exclusive); those entries are
    /// surfaced again even if seen before.
    pub async fn sync(&self, since: u64) -> Result<()> {
        let payload = v1::Sync { since_seq: since }.encode_to_vec().into();
        let (pending, result) = Pending::new(topics::sync(&self.user), QoS::AtLeastOnce, payload);
        self.commands.send(Command::Sync(since, pending)).map_err(|_| Error::Closed)?;
        result.await.map_err(|_| Error::Closed)?
    }

    /// A normal DISCONNECT; everything not yet acknowledged fails with [`Error::Closed`].
    pub async fn disconnect(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Disconnect(tx)).map_err(|_| Error::Closed)?;
        let _ = rx.await;
        Ok(())
    }

    async fn publish(&self, topic: String, qos: QoS, payload: Bytes) -> Result<()> {
        let (pending, result) = Pending::new(topic, qos, payload);
        self.commands.send(Command::Publish(pending)).map_err(|_| Error::Closed)?;
        result.await.map_err(|_| Error::Closed)?
    }
}

fn peer_topic(peer: &str, topic: fn(&str) -> String) -> Result<String> {
    if topics::valid_user_id(peer) {
        Ok(topic(peer))
    } else {
        Err(Error::Invalid(format!("not a user id: {peer:?}")))
    }
}
