//! End to end: a real broker in process, the chat plugin over the in-memory store, and real
//! MQTT clients (`rumqttc`) as devices `{user}:{device}`. Without auth-jwt the broker takes
//! the CONNECT user name as the user, which is what auth-jwt would vouch for.

#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use seed_broker::hooks::{HookSettings, Plugin};
use seed_broker::{Config, Server};
use seed_plugin_chat::ChatPlugin;
use seed_proto::v1::{self, envelope::Body, outbound, receipt::Kind};
use tokio::sync::mpsc;
use tokio::time::timeout;

use support::{MemStore, StaticTokens};

const WAIT: Duration = Duration::from_secs(5);

async fn start(store: &Arc<MemStore>, data: &tempfile::TempDir) -> Server {
    let mut config = Config::default();
    config.listeners.mqtt = Some(([127, 0, 0, 1], 0).into());
    config.listeners.ws = None;
    config.listeners.http = None;
    config.store.data_dir = data.path().to_path_buf();
    config.store.fsync = false;
    let chat = ChatPlugin::new(Default::default(), store.clone(), StaticTokens::new()).unwrap();
    let plugin: Arc<dyn Plugin> = Arc::new(chat);
    Server::start(config, vec![(plugin, HookSettings::default())], axum::Router::new())
        .await
        .unwrap()
}

/// A connected device with its inbox subscribed.
struct Device {
    client: AsyncClient,
    inbox: mpsc::UnboundedReceiver<v1::Envelope>,
    acks: mpsc::UnboundedReceiver<()>,
}

impl Device {
    async fn connect(addr: SocketAddr, user: &str, device: &str) -> Device {
        let mut options = MqttOptions::new(format!("{user}:{device}"), "127.0.0.1", addr.port());
        options.set_credentials(user, "secret").set_clean_session(true);
        let (client, mut events) = AsyncClient::new(options, 64);
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (subacked_tx, mut subacked) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let envelope = v1::Envelope::decode(p.payload.as_ref()).unwrap();
                        let _ = inbox_tx.send(envelope);
                    }
                    Event::Incoming(Packet::PubAck(_)) => {
                        let _ = acks_tx.send(());
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = subacked_tx.send(());
                    }
                    _ => {}
                }
            }
        });
        client.subscribe(format!("inbox/{user}"), QoS::AtLeastOnce).await.unwrap();
        timeout(WAIT, subacked.recv()).await.unwrap().unwrap();
        Device { client, inbox, acks }
    }

    async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        timeout(WAIT, self.acks.recv()).await.expect("PUBACK").unwrap();
    }

    async fn next(&mut self) -> v1::Envelope {
        timeout(WAIT, self.inbox.recv()).await.expect("an inbox delivery").unwrap()
    }

    async fn nothing_more(&mut self) {
        let extra = timeout(Duration::from_millis(300), self.inbox.recv()).await;
        assert!(extra.is_err(), "unexpected delivery: {extra:?}");
    }
}

fn message(text: &str, client_msg_id: &str) -> Vec<u8> {
    let message = v1::Message {
        text: text.into(),
        client_msg_id: client_msg_id.into(),
        ..Default::default()
    };
    v1::Outbound { body: Some(outbound::Body::Message(message)) }.encode_to_vec()
}

fn read(up_to: u64) -> Vec<u8> {
    v1::Outbound { body: Some(outbound::Body::Read(v1::Read { up_to })) }.encode_to_vec()
}

fn as_message(envelope: &v1::Envelope) -> &v1::Message {
    match &envelope.body {
        Some(Body::Message(m)) => m,
        other => panic!("not a message: {other:?}"),
    }
}

fn as_receipt(envelope: &v1::Envelope) -> &v1::Receipt {
    match &envelope.body {
        Some(Body::Receipt(r)) => r,
        other => panic!("not a receipt: {other:?}"),
    }
}

/// Waits (bounded) for a condition on the store.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let result = timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_receipts_and_replay() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let data = tempfile::tempdir().unwrap();
    let server = start(&store, &data).await;
    let addr = server.bound.mqtt.unwrap();

    let mut alice_phone = Device::connect(addr, "alice", "phone").await;
    let mut alice_tablet = Device::connect(addr, "alice", "tablet").await;
    let mut bob = Device::connect(addr, "bob", "phone").await;

    // alice → bob. PUBACK means stored.
    alice_phone.publish("dm/bob", message("hi bob", "c1")).await;
    assert_eq!(store.entries("bob").len(), 1);

    let got = bob.next().await;
    assert_eq!(got.seq, 1);
    let sent = as_message(&got);
    assert_eq!((sent.from.as_str(), sent.text.as_str()), ("alice", "hi bob"));
    assert!(sent.client_msg_id.is_empty());
    let id = sent.id;

    // alice's other device gets her copy, naming the chat and her key.
    let copy = alice_tablet.next().await;
    assert_eq!(copy.seq, 1);
    let mine = as_message(&copy);
    assert_eq!((mine.id, mine.chat.as_str(), mine.client_msg_id.as_str()), (id, "bob", "c1"));

    // bob's PUBACK is the second tick: a DELIVERED receipt reaches both of alice's devices;
    // the sending device never saw its own message.
    for device in [&mut alice_phone, &mut alice_tablet] {
        let got = device.next().await;
        assert_eq!(got.seq, 2);
        let receipt = as_receipt(&got);
        assert_eq!(
            (receipt.kind, receipt.by.as_str(), receipt.up_to),
            (Kind::Delivered as i32, "bob", id)
        );
    }
    eventually("bob's cursor", || store.cursor_of("bob", "phone") == 1).await;

    // A resend with the same key is acknowledged and not delivered again.
    alice_phone.publish("dm/bob", message("hi bob", "c1")).await;
    bob.nothing_more().await;

    // bob reads: blue ticks.
    bob.publish("dm/alice", read(id)).await;
    for device in [&mut alice_phone, &mut alice_tablet] {
        let receipt = device.next().await;
        let receipt = as_receipt(&receipt);
        assert_eq!(
            (receipt.kind, receipt.by.as_str(), receipt.up_to),
            (Kind::Read as i32, "bob", id)
        );
    }
    // bob goes offline; alice writes three more; bob comes back to them in order.
    bob.client.disconnect().await.unwrap();
    drop(bob);
    // bob's own READ copy was skipped on the phone that read; its cursor, stored as the
    // phone goes, passes it.
    eventually("bob's cursor past his read copy", || store.cursor_of("bob", "phone") == 2).await;
    for text in ["one", "two", "three"] {
        alice_phone.publish("dm/bob/text", text.as_bytes().to_vec()).await;
    }
    let mut bob = Device::connect(addr, "bob", "phone").await;
    let mut seqs = Vec::new();
    for text in ["one", "two", "three"] {
        let got = bob.next().await;
        assert_eq!(as_message(&got).text, text);
        seqs.push(got.seq);
    }
    assert_eq!(seqs, [3, 4, 5]);
    bob.nothing_more().await;
    eventually("bob's cursor after replay", || store.cursor_of("bob", "phone") == 5).await;

    // A sync replays on demand, from the given seq.
    bob.publish("sync/bob", v1::Sync { since_seq: 3 }.encode_to_vec()).await;
    let again: Vec<u64> = vec![bob.next().await.seq, bob.next().await.seq];
    assert_eq!(again, [4, 5]);

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_survives_a_server_restart_and_typing_is_live_only() {
    let store = MemStore::with_users(&["alice", "bob"]);
    let data = tempfile::tempdir().unwrap();
    let server = start(&store, &data).await;
    let addr = server.bound.mqtt.unwrap();
    let mut alice = Device::connect(addr, "alice", "phone").await;
    for text in ["a", "b"] {
        alice.publish("dm/bob/text", text.as_bytes().to_vec()).await;
    }
    server.shutdown().await;

    // The inbox is in the store, not in the broker's memory.
    let server = start(&store, &data).await;
    let addr = server.bound.mqtt.unwrap();
    let mut bob = Device::connect(addr, "bob", "phone").await;
    assert_eq!(as_message(&bob.next().await).text, "a");
    assert_eq!(as_message(&bob.next().await).text, "b");

    let mut alice = Device::connect(addr, "alice", "phone").await;
    let typing = v1::Outbound {
        body: Some(outbound::Body::Typing(v1::Typing { active: true, ..Default::default() })),
    };
    alice.publish("dm/bob", typing.encode_to_vec()).await;
    let got = bob.next().await;
    assert_eq!(got.seq, 0);
    match got.body {
        Some(Body::Typing(t)) => assert_eq!((t.from.as_str(), t.active), ("alice", true)),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}
