//! Unit tests of the plugin's decisions (`on_publish`) and its HTTP handlers, over the
//! in-memory store; delivery through a real broker is in `tests/e2e.rs`.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use prost::Message as _;
use seed_broker::codec::{Protocol, QoS, ReasonCode};
use seed_broker::hooks::{ClientInfo, Decision, Outcome, Plugin, PluginContext};
use seed_broker::message::Message;
use seed_broker::toml;
use seed_chat_core::{
    AccessTokens, Appended, ChatStore, Durable, InboxEntry, NewEntry, NewMessage, RefreshToken,
    StoreError, StoredMessage, Watermark, dm_chat,
};
use seed_proto::v1::{self, envelope::Body, outbound, receipt::Kind};
use tower::ServiceExt;

use crate::support::{MemStore, StaticTokens};
use crate::{ChatPlugin, Config, ids};

fn plugin(store: &Arc<MemStore>, config: Config) -> ChatPlugin {
    ChatPlugin::new(config, store.clone(), StaticTokens::new()).unwrap()
}

fn client(user: &str, device: &str) -> ClientInfo {
    ClientInfo {
        client_id: format!("{user}:{device}").into(),
        username: Some(user.into()),
        protocol: Protocol::V5,
        peer: ([127, 0, 0, 1], 5000).into(),
        listener: "tcp",
    }
}

fn publish(topic: &str, payload: impl Into<Bytes>) -> Message {
    Message {
        topic: topic.into(),
        payload: payload.into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
        publisher: None,
    }
}

fn outbound_message(text: &str, client_msg_id: &str) -> Vec<u8> {
    let message = v1::Message {
        id: 999,
        from: "mallory".into(),
        client_msg_id: client_msg_id.into(),
        text: text.into(),
        reply_to: 5,
        ..Default::default()
    };
    v1::Outbound { body: Some(outbound::Body::Message(message)) }.encode_to_vec()
}

async fn send(plugin: &ChatPlugin, from: (&str, &str), topic: &str, payload: Vec<u8>) -> Outcome {
    let mut message = publish(topic, payload);
    plugin.on_publish(&client(from.0, from.1), &mut message).await.unwrap()
}

const HANDLED: Outcome = Outcome::Stop(Decision::Handled);

fn deny(code: ReasonCode) -> Outcome {
    Outcome::Stop(Decision::Deny(code))
}

fn envelope(bytes: &[u8]) -> v1::Envelope {
    v1::Envelope::decode(bytes).unwrap()
}

fn message_of(bytes: &[u8]) -> v1::Message {
    match envelope(bytes).body {
        Some(Body::Message(m)) => m,
        other => panic!("not a message: {other:?}"),
    }
}

#[tokio::test]
async fn a_message_is_stamped_and_lands_in_both_inboxes() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let plugin = plugin(&store, Config::default());
    let before = seed_chat_core::now_millis();
    let outcome = send(&plugin, ("alice", "phone"), "dm/bob", outbound_message("hi", "c1")).await;
    assert_eq!(outcome, HANDLED);

    let stored = store.messages(&dm_chat("alice", "bob"));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sender, "alice");
    let body = v1::Message::decode(stored[0].body.as_ref()).unwrap();
    assert_eq!(body.from, "alice", "the payload's claimed sender is ignored");
    assert_eq!(body.id, stored[0].id);
    assert_ne!(body.id, 999);
    assert!(ids::sent_at(body.id) >= before);
    assert_eq!((body.text.as_str(), body.reply_to), ("hi", 5));
    assert!(body.client_msg_id.is_empty());

    let bobs = store.entries("bob");
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].skip_device, None);
    let theirs = message_of(&bobs[0].envelope);
    assert_eq!(envelope(&bobs[0].envelope).seq, 0, "stored without seq");
    assert_eq!((theirs.from.as_str(), theirs.id), ("alice", body.id));
    assert!(theirs.client_msg_id.is_empty() && theirs.chat.is_empty());

    let alices = store.entries("alice");
    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0].skip_device.as_deref(), Some("phone"));
    let mine = message_of(&alices[0].envelope);
    assert_eq!((mine.client_msg_id.as_str(), mine.chat.as_str()), ("c1", "bob"));
}

#[tokio::test]
async fn a_resent_client_msg_id_is_stored_once() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let plugin = plugin(&store, Config::default());
    for _ in 0..3 {
        let outcome =
            send(&plugin, ("alice", "phone"), "dm/bob", outbound_message("hi", "c1")).await;
        assert_eq!(outcome, HANDLED);
    }
    assert_eq!(store.messages(&dm_chat("alice", "bob")).len(), 1);
    assert_eq!(store.entries("bob").len(), 1);
    // Without a key every publish is a new message.
    send(&plugin, ("alice", "phone"), "dm/bob", outbound_message("a", "")).await;
    send(&plugin, ("alice", "phone"), "dm/bob", outbound_message("a", "")).await;
    assert_eq!(store.entries("bob").len(), 3);
}

#[tokio::test]
async fn refusals() {
    let store = MemStore::with_users(&["alice", "bob", "carol"]);
    let plugin = plugin(&store, Config::default());
    let hi = || outbound_message("hi", "");
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/nobody", hi()).await,
        deny(ReasonCode::TOPIC_NAME_INVALID)
    );
    store.set_blocked("bob", "alice", true).await.unwrap();
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/bob", hi()).await,
        deny(ReasonCode::NOT_AUTHORIZED)
    );
    // Blocking is one-way: bob can still write to alice.
    assert_eq!(send(&plugin, ("bob", "phone"), "dm/alice", hi()).await, HANDLED);
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/carol", b"\xff\x01garbage".to_vec()).await,
        deny(ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/carol", v1::Outbound { body: None }.encode_to_vec())
            .await,
        deny(ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/carol/text", b"\xff\xfe".to_vec()).await,
        deny(ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
    assert_eq!(
        send(&plugin, ("alice", "phone"), "inbox/carol", hi()).await,
        deny(ReasonCode::NOT_AUTHORIZED)
    );
    assert_eq!(
        send(&plugin, ("alice", "phone"), "g/team", hi()).await,
        deny(ReasonCode::TOPIC_NAME_INVALID)
    );
    assert_eq!(
        send(&plugin, ("alice", "phone"), "sync/bob", v1::Sync { since_seq: 0 }.encode_to_vec())
            .await,
        deny(ReasonCode::NOT_AUTHORIZED)
    );
    // A client id that is not the user's own device.
    let mut message = publish("dm/carol", hi());
    let outcome = plugin.on_publish(&client("bob", "phone"), &mut message).await.unwrap();
    assert_eq!(outcome, HANDLED);
    let mut impostor = client("bob", "phone");
    impostor.username = Some("alice".into());
    let outcome = plugin.on_publish(&impostor, &mut message).await.unwrap();
    assert_eq!(outcome, deny(ReasonCode::NOT_AUTHORIZED));
    // Other topics are the broker's.
    assert_eq!(send(&plugin, ("alice", "phone"), "sensors/1", hi()).await, Outcome::Continue);
    assert_eq!(send(&plugin, ("alice", "phone"), "presence/alice", hi()).await, Outcome::Continue);
    // An unavailable store: try again later.
    store.fail(true);
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/carol", hi()).await,
        deny(ReasonCode::SERVER_BUSY)
    );
}

#[tokio::test]
async fn the_text_topic_takes_plain_utf8() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let plugin = plugin(&store, Config::default());
    let outcome = send(&plugin, ("alice", "esp32"), "dm/bob/text", "héllo".into()).await;
    assert_eq!(outcome, HANDLED);
    let theirs = message_of(&store.entries("bob")[0].envelope);
    assert_eq!((theirs.text.as_str(), theirs.from.as_str()), ("héllo", "alice"));
}

#[tokio::test]
async fn a_message_to_yourself_is_one_entry() {
    let store = MemStore::with_users(&["alice"]);
    let plugin = plugin(&store, Config::default());
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/alice", outbound_message("note", "n1")).await,
        HANDLED
    );
    let entries = store.entries("alice");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].skip_device.as_deref(), Some("phone"));
}

#[tokio::test]
async fn senders_are_rate_limited() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let config = Config { rate_burst: 3, rate_per_second: 0.001, ..Config::default() };
    let plugin = plugin(&store, config);
    for _ in 0..3 {
        assert_eq!(send(&plugin, ("alice", "phone"), "dm/bob/text", "x".into()).await, HANDLED);
    }
    assert_eq!(
        send(&plugin, ("alice", "phone"), "dm/bob/text", "x".into()).await,
        deny(ReasonCode::QUOTA_EXCEEDED)
    );
    assert_eq!(send(&plugin, ("bob", "phone"), "dm/alice/text", "x".into()).await, HANDLED);
}

#[tokio::test]
async fn a_read_moves_the_watermark_once_and_tells_both_sides() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let plugin = plugin(&store, Config::default());
    send(&plugin, ("alice", "phone"), "dm/bob/text", "hi".into()).await;
    let id = store.messages(&dm_chat("alice", "bob"))[0].id;
    let read = v1::Outbound { body: Some(outbound::Body::Read(v1::Read { up_to: id })) };
    for _ in 0..2 {
        assert_eq!(
            send(&plugin, ("bob", "tablet"), "dm/alice", read.encode_to_vec()).await,
            HANDLED
        );
    }
    let alices = store.entries("alice");
    assert_eq!(alices.len(), 2, "the sent copy and one READ receipt");
    let receipt = match envelope(&alices[1].envelope).body {
        Some(Body::Receipt(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((receipt.kind, receipt.by.as_str(), receipt.up_to), (Kind::Read as i32, "bob", id));
    assert!(receipt.chat.is_empty());
    let bobs = store.entries("bob");
    assert_eq!(bobs.len(), 2);
    assert_eq!(bobs[1].skip_device.as_deref(), Some("tablet"));
    match envelope(&bobs[1].envelope).body {
        Some(Body::Receipt(r)) => assert_eq!(r.chat, "alice"),
        other => panic!("{other:?}"),
    }
    // A watermark from the future is not a message id.
    let bogus = v1::Outbound { body: Some(outbound::Body::Read(v1::Read { up_to: u64::MAX })) };
    assert_eq!(
        send(&plugin, ("bob", "tablet"), "dm/alice", bogus.encode_to_vec()).await,
        deny(ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
}

#[tokio::test]
async fn typing_is_never_stored() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let plugin = plugin(&store, Config::default());
    let typing = v1::Outbound {
        body: Some(outbound::Body::Typing(v1::Typing { active: true, ..Default::default() })),
    };
    assert_eq!(send(&plugin, ("alice", "phone"), "dm/bob", typing.encode_to_vec()).await, HANDLED);
    assert!(store.entries("bob").is_empty());
}

#[test]
fn config_is_checked() {
    let table = |text: &str| text.parse::<toml::Table>().unwrap();
    assert_eq!(Config::from_table(toml::Table::new()).unwrap(), Config::default());
    assert!(Config::from_table(table("node_id = 1024")).is_err());
    assert!(Config::from_table(table("rate_per_second = 0.0")).is_err());
    assert!(Config::from_table(table("replay_batch = 0")).is_err());
    assert!(Config::from_table(table("typo = 1")).is_err());
    let store = MemStore::new();
    let plugin = plugin(&store, Config::default());
    assert!(plugin.reload(table("rate_burst = 5\nhistory_max_limit = 10")).is_ok());
    assert_eq!(plugin.chat.config().history_max_limit, 10);
    assert!(plugin.reload(table("node_id = 7")).is_err());
}

#[test]
fn the_factory_needs_its_services() {
    let mut context = PluginContext::default();
    assert!(crate::factory(toml::Table::new(), &mut context).is_err());
    context.provide::<Arc<dyn ChatStore>>(MemStore::new());
    context.provide::<Arc<dyn AccessTokens>>(StaticTokens::new());
    let plugin = crate::factory(toml::Table::new(), &mut context).unwrap();
    assert_eq!(plugin.name(), "chat");
}

// HTTP.

async fn call(
    plugin: &ChatPlugin,
    method: &str,
    uri: &str,
    as_user: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(user) = as_user {
        request =
            request.header("authorization", format!("Bearer {}", StaticTokens::token(user, "web")));
    }
    let router = plugin.routes().unwrap();
    let response = router.oneshot(request.body(HttpBody::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

fn stored(id: u64, sender: &str, text: &str) -> StoredMessage {
    let body = v1::Message { id, from: sender.into(), text: text.into(), ..Default::default() };
    StoredMessage { id, sender: sender.into(), body: body.encode_to_vec().into() }
}

#[tokio::test]
async fn history_pages_newest_first() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let plugin = plugin(&store, Config::default());
    let ids = ids::Snowflake::new(0).unwrap();
    let chat = dm_chat("alice", "bob");
    let made: Vec<u64> = (0..5).map(|_| ids.next_id()).collect();
    for (i, id) in made.iter().enumerate() {
        store.put_message(
            &chat,
            stored(*id, if i % 2 == 0 { "alice" } else { "bob" }, &format!("m{i}")),
        );
    }
    let media = v1::Message {
        id: made[4],
        from: "bob".into(),
        media: Some(v1::MediaRef {
            id: "f1".into(),
            mime: "image/png".into(),
            size: 10,
            name: "a.png".into(),
            thumbnail: vec![1, 2],
        }),
        reply_to: made[0],
        ..Default::default()
    };
    store.put_message(
        &chat,
        StoredMessage { id: made[4], sender: "bob".into(), body: media.encode_to_vec().into() },
    );

    let (status, page) =
        call(&plugin, "GET", "/v1/chats/bob/messages?limit=2", Some("alice")).await;
    assert_eq!(status, StatusCode::OK);
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], made[4].to_string());
    assert_eq!(messages[0]["from"], "bob");
    assert_eq!(
        messages[0]["media"],
        serde_json::json!({"id": "f1", "mime": "image/png", "size": 10, "name": "a.png"})
    );
    assert_eq!(messages[0]["reply_to"], made[0].to_string());
    assert_eq!(messages[0]["sent_at"], ids::sent_at(made[4]));
    assert_eq!(messages[1]["text"], "m3");
    assert_eq!(messages[1]["media"], serde_json::Value::Null);
    assert_eq!(messages[1]["reply_to"], serde_json::Value::Null);
    assert_eq!(page["next_before"], made[3].to_string());

    // The other side sees the same chat.
    let uri = format!("/v1/chats/alice/messages?limit=2&before={}", made[3]);
    let (_, page) = call(&plugin, "GET", &uri, Some("bob")).await;
    let texts: Vec<_> =
        page["messages"].as_array().unwrap().iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, ["m2", "m1"]);
    let uri = format!("/v1/chats/alice/messages?before={}", made[1]);
    let (_, page) = call(&plugin, "GET", &uri, Some("bob")).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_before"], serde_json::Value::Null);

    for (uri, code) in [
        ("/v1/chats/BOB/messages", "invalid_chat"),
        ("/v1/chats/bob/messages?limit=0", "invalid_limit"),
        ("/v1/chats/bob/messages?limit=101", "invalid_limit"),
        ("/v1/chats/bob/messages?limit=x", "invalid_limit"),
        ("/v1/chats/bob/messages?before=-1", "invalid_before"),
    ] {
        let (status, body) = call(&plugin, "GET", uri, Some("alice")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri}"
        );
    }
    let (status, body) = call(&plugin, "GET", "/v1/chats/bob/messages", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
}

#[tokio::test]
async fn blocks() {
    let store = MemStore::with_users(&["alice", "bob", "carol"]);
    let plugin = plugin(&store, Config::default());
    assert_eq!(
        call(&plugin, "PUT", "/v1/blocks/carol", Some("alice")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&plugin, "PUT", "/v1/blocks/bob", Some("alice")).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = call(&plugin, "GET", "/v1/blocks", Some("alice")).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"blocked": ["bob", "carol"]})));
    assert!(store.is_blocked("bob", "alice").await.unwrap());

    assert_eq!(
        call(&plugin, "DELETE", "/v1/blocks/bob", Some("alice")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&plugin, "DELETE", "/v1/blocks/bob", Some("alice")).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, body) = call(&plugin, "GET", "/v1/blocks", Some("alice")).await;
    assert_eq!(body, serde_json::json!({"blocked": ["carol"]}));

    let (status, body) = call(&plugin, "PUT", "/v1/blocks/nobody", Some("alice")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );
    let (status, body) = call(&plugin, "PUT", "/v1/blocks/alice", Some("alice")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_user"))
    );
    assert_eq!(call(&plugin, "GET", "/v1/blocks", None).await.0, StatusCode::UNAUTHORIZED);
}

/// The memory store, but a message's append becomes durable only when the test says so
/// (or fails to).
struct SlowDisk {
    inner: Arc<MemStore>,
    synced: tokio::sync::watch::Receiver<Option<bool>>,
}

#[async_trait::async_trait]
impl ChatStore for SlowDisk {
    async fn create_user(&self, user: &str, hash: &str) -> Result<(), StoreError> {
        self.inner.create_user(user, hash).await
    }
    async fn user(&self, user: &str) -> Result<Option<seed_chat_core::UserRecord>, StoreError> {
        self.inner.user(user).await
    }
    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        self.inner.put_refresh_token(token).await
    }
    async fn take_refresh_token(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<RefreshToken>, StoreError> {
        self.inner.take_refresh_token(hash).await
    }
    async fn revoke_device(&self, user: &str, device: &str, at: u64) -> Result<(), StoreError> {
        self.inner.revoke_device(user, device, at).await
    }
    async fn device_revoked_at(&self, user: &str, device: &str) -> Result<Option<u64>, StoreError> {
        self.inner.device_revoked_at(user, device).await
    }
    async fn set_blocked(&self, user: &str, blocked: &str, on: bool) -> Result<(), StoreError> {
        self.inner.set_blocked(user, blocked, on).await
    }
    async fn is_blocked(&self, user: &str, by: &str) -> Result<bool, StoreError> {
        self.inner.is_blocked(user, by).await
    }
    async fn blocked_by(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.inner.blocked_by(user).await
    }
    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let (appended, durable) = self.append_message_applied(message).await?;
        durable.wait().await.map(|()| appended)
    }
    async fn append_message_applied(
        &self,
        message: NewMessage,
    ) -> Result<(Appended, Durable), StoreError> {
        let appended = self.inner.append_message(message).await?;
        let mut synced = self.synced.clone();
        let durable = Durable::later(async move {
            match synced.wait_for(Option::is_some).await.map(|s| *s) {
                Ok(Some(true)) => Ok(()),
                _ => Err(StoreError::Backend("fsync failed".into())),
            }
        });
        Ok((appended, durable))
    }
    async fn append_entries(&self, entries: Vec<NewEntry>) -> Result<Vec<u64>, StoreError> {
        self.inner.append_entries(entries).await
    }
    async fn inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        self.inner.inbox(user, after, limit).await
    }
    async fn last_seq(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(user).await
    }
    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        self.inner.cursor(user, device).await
    }
    async fn set_cursor(&self, user: &str, device: &str, seq: u64) -> Result<(), StoreError> {
        self.inner.set_cursor(user, device, seq).await
    }
    async fn history(
        &self,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.history(chat, before, limit).await
    }
    async fn advance_watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
        up_to: u64,
    ) -> Result<bool, StoreError> {
        self.inner.advance_watermark(kind, reader, chat, up_to).await
    }
    async fn watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
    ) -> Result<u64, StoreError> {
        self.inner.watermark(kind, reader, chat).await
    }
    async fn expire_entries(&self, before: u64) -> Result<u64, StoreError> {
        self.inner.expire_entries(before).await
    }
}

/// A message is in the recipient's inbox (and so on its way to their devices) as soon as it
/// is applied, but its sender's PUBACK waits until it is durable; a failed sync is a
/// refusal the client retries.
#[tokio::test]
async fn the_puback_waits_for_the_disk_and_delivery_does_not() {
    for synced_ok in [true, false] {
        let inner = MemStore::with_users(&["alice", "bob"]);
        let (sync, synced) = tokio::sync::watch::channel(None);
        let store: Arc<dyn ChatStore> = Arc::new(SlowDisk { inner: inner.clone(), synced });
        let plugin = ChatPlugin::new(Config::default(), store, StaticTokens::new()).unwrap();
        let payload = outbound_message("hi", "c1");
        let sending = send(&plugin, ("alice", "phone"), "dm/bob", payload);
        tokio::pin!(sending);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut sending).await;
        assert!(waited.is_err(), "acknowledged before the message was durable");
        assert_eq!(inner.entries("bob").len(), 1, "not applied before the sync");
        sync.send_replace(Some(synced_ok));
        let expected = if synced_ok { HANDLED } else { deny(ReasonCode::SERVER_BUSY) };
        assert_eq!(sending.await, expected);
    }
}
