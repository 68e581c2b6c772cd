//! `on_publish` for the chat topics: what a device sends, checked, stamped and stored before
//! its PUBACK.
//!
//! | topic | payload | effect |
//! |---|---|---|
//! | `dm/{peer}` | `Outbound{message}` | stored with a server id, `from` = the sender, in both inboxes |
//! | `dm/{peer}` | `Outbound{read}` | READ receipt to the peer and the sender's other devices |
//! | `dm/{peer}` | `Outbound{typing}` | QoS 0 to the peer's connected devices, not stored |
//! | `dm/{peer}/text` | UTF-8 | a text message |
//! | `sync/{me}` | `Sync{since_seq}` | this device's delivery restarts after `since_seq` |
//! | `inbox/...` | — | refused: server only |
//! | `g/...` | — | refused (groups are not served yet) |
//!
//! Success is `Decision::Handled` (the broker acknowledges and does not route); a refusal is
//! a reason code, which MQTT 5 clients see in their PUBACK. The sender is the authenticated
//! user name, whatever the payload claims. Topics outside the scheme are left to the broker.

use std::sync::Arc;

use prost::Message as _;
use seed_broker::codec::{QoS, ReasonCode};
use seed_broker::hooks::{ClientInfo, Decision, Outcome};
use seed_broker::message::Message;
use seed_chat_core::{Appended, NewEntry, NewMessage, StoreError, dm_chat};
use seed_proto::topics::{self, Topic};
use seed_proto::v1::{self, envelope::Body, outbound};

use crate::envelope;
use crate::receipts;
use crate::{Chat, ids};

/// How far ahead of this node's clock a read watermark may point (other nodes' clocks).
const CLOCK_SKEW_MS: u64 = 60_000;

fn deny(code: ReasonCode) -> Outcome {
    Outcome::Stop(Decision::Deny(code))
}

const HANDLED: Outcome = Outcome::Stop(Decision::Handled);

/// A store failure, as a PUBACK reason: the client should retry later.
fn store_failed(error: &StoreError, user: &str, device: &str) -> Outcome {
    tracing::warn!(%error, user, device, "chat store failed");
    match error {
        StoreError::Backend(_) => deny(ReasonCode::SERVER_BUSY),
        _ => deny(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR),
    }
}

pub(crate) async fn on_publish(
    chat: &Arc<Chat>,
    client: &ClientInfo,
    message: &Message,
) -> Outcome {
    let Some(topic) = topics::parse(&message.topic) else { return Outcome::Continue };
    let (sender, device) = match topic {
        // Presence is another plugin's business.
        Topic::Presence { .. } => return Outcome::Continue,
        Topic::Inbox { .. } => return deny(ReasonCode::NOT_AUTHORIZED),
        Topic::Group { .. } => return deny(ReasonCode::TOPIC_NAME_INVALID),
        _ => match sender_of(client) {
            Some(who) => who,
            None => return deny(ReasonCode::NOT_AUTHORIZED),
        },
    };
    let span = tracing::debug_span!("chat_publish", client_id = %client.client_id, user = sender);
    let _entered = span.enter();
    match topic {
        Topic::Dm { peer, text: true } => {
            let Ok(text) = std::str::from_utf8(&message.payload) else {
                return deny(ReasonCode::PAYLOAD_FORMAT_INVALID);
            };
            let body = v1::Message { text: text.to_owned(), ..Default::default() };
            send(chat, sender, device, peer, body).await
        }
        Topic::Dm { peer, text: false } => {
            let Ok(outbound) = v1::Outbound::decode(message.payload.as_ref()) else {
                return deny(ReasonCode::PAYLOAD_FORMAT_INVALID);
            };
            match outbound.body {
                Some(outbound::Body::Message(body)) => send(chat, sender, device, peer, body).await,
                Some(outbound::Body::Read(read)) => {
                    mark_read(chat, sender, device, peer, read.up_to).await
                }
                Some(outbound::Body::Typing(typing)) => {
                    self::typing(chat, sender, device, peer, typing.active).await
                }
                None => deny(ReasonCode::PAYLOAD_FORMAT_INVALID),
            }
        }
        Topic::Sync { user } => {
            if user != sender {
                return deny(ReasonCode::NOT_AUTHORIZED);
            }
            let Ok(sync) = v1::Sync::decode(message.payload.as_ref()) else {
                return deny(ReasonCode::PAYLOAD_FORMAT_INVALID);
            };
            // Without an inbox subscription there is nothing to replay into: a no-op.
            if !chat.inboxes.restart(sender, device, sync.since_seq) {
                tracing::debug!("sync from a device not subscribed to its inbox");
            }
            HANDLED
        }
        Topic::Inbox { .. } | Topic::Group { .. } | Topic::Presence { .. } => Outcome::Continue,
    }
}

/// The authenticated user and the device part of a `{user}:{device}` client id.
fn sender_of(client: &ClientInfo) -> Option<(&str, &str)> {
    let user = client.username.as_deref()?;
    let (id_user, device) = topics::parse_client_id(&client.client_id)?;
    (id_user == user).then_some((user, device))
}

async fn send(
    chat: &Arc<Chat>,
    sender: &str,
    device: &str,
    peer: &str,
    body: v1::Message,
) -> Outcome {
    match chat.directory.user_exists(&*chat.store, peer).await {
        Ok(true) => {}
        Ok(false) => return deny(ReasonCode::TOPIC_NAME_INVALID),
        Err(error) => return store_failed(&error, sender, device),
    }
    match chat.directory.is_blocked(&*chat.store, sender, peer).await {
        Ok(false) => {}
        Ok(true) => return deny(ReasonCode::NOT_AUTHORIZED),
        Err(error) => return store_failed(&error, sender, device),
    }
    if !chat.rate.try_take(sender) {
        return deny(ReasonCode::QUOTA_EXCEEDED);
    }
    let client_msg_id = body.client_msg_id;
    let stored = v1::Message {
        id: chat.ids.next_id(),
        from: sender.to_owned(),
        client_msg_id: String::new(),
        text: body.text,
        media: body.media,
        reply_to: body.reply_to,
        chat: String::new(),
    };
    let mine = envelope::for_sender(&stored, &client_msg_id, peer);
    let mut entries = Vec::with_capacity(2);
    if peer != sender {
        entries.push(NewEntry {
            user_id: peer.to_owned(),
            envelope: envelope::stored(Body::Message(stored.clone())),
            skip_device: None,
        });
    }
    entries.push(NewEntry {
        user_id: sender.to_owned(),
        envelope: envelope::stored(Body::Message(mine)),
        skip_device: Some(device.to_owned()),
    });
    let new = NewMessage {
        id: stored.id,
        chat: dm_chat(sender, peer),
        sender: sender.to_owned(),
        client_msg_id: (!client_msg_id.is_empty()).then_some(client_msg_id),
        body: stored.encode_to_vec().into(),
        entries,
    };
    let entries = new.entries.clone();
    // Delivery starts once the message is applied; the PUBACK waits until it is durable.
    let durable = match chat.store.append_message_applied(new).await {
        Ok((Appended::New { seqs }, durable)) => {
            for (entry, seq) in entries.into_iter().zip(seqs) {
                chat.inboxes.appended(entry, seq);
            }
            durable
        }
        Ok((Appended::Duplicate { id }, durable)) => {
            tracing::debug!(id, "duplicate client_msg_id: already stored");
            durable
        }
        Err(error) => return store_failed(&error, sender, device),
    };
    match durable.wait().await {
        Ok(()) => HANDLED,
        Err(error) => store_failed(&error, sender, device),
    }
}

async fn mark_read(
    chat: &Arc<Chat>,
    reader: &str,
    device: &str,
    peer: &str,
    up_to: u64,
) -> Outcome {
    if up_to == 0 || up_to > ids::ceiling(seed_chat_core::now_millis() + CLOCK_SKEW_MS) {
        return deny(ReasonCode::PAYLOAD_FORMAT_INVALID);
    }
    match chat.directory.user_exists(&*chat.store, peer).await {
        Ok(true) => {}
        Ok(false) => return deny(ReasonCode::TOPIC_NAME_INVALID),
        Err(error) => return store_failed(&error, reader, device),
    }
    match receipts::read(chat, reader, device, peer, up_to).await {
        Ok(()) => HANDLED,
        Err(error) => store_failed(&error, reader, device),
    }
}

/// Typing is not stored: it goes now, at QoS 0, to the peer's connected devices, or nowhere.
async fn typing(chat: &Arc<Chat>, sender: &str, device: &str, peer: &str, active: bool) -> Outcome {
    let devices = chat.inboxes.devices(peer);
    if devices.is_empty() || peer == sender {
        return HANDLED;
    }
    match chat.directory.is_blocked(&*chat.store, sender, peer).await {
        Ok(false) => {}
        Ok(true) => return HANDLED,
        Err(error) => return store_failed(&error, sender, device),
    }
    let Some(broker) = chat.broker() else { return HANDLED };
    let message = envelope::inbox_publish(peer, envelope::typing(sender, active), QoS::AtMostOnce);
    for client_id in devices {
        let _ = broker.deliver_to(&client_id, message.clone(), QoS::AtMostOnce);
    }
    HANDLED
}
