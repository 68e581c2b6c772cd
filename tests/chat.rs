//! End-to-end tests of the chat protocol (DESIGN.md, "The chat protocol on MQTT" and "HTTP
//! API") against the real `seed` binary: SDK clients, `mosquitto_pub`, plain rumqttc and a
//! hand-built MQTT client for exact reason codes. Ticks, multi-device, offline replay (also
//! across SIGKILL), idempotent resends, history, blocks, typing, and every way a client could
//! try to read or write what is not its own.

mod common;

use std::time::Duration;

use common::chat::{self, ChatClient, Event, v1};
use common::{Seed, WAIT, raw, v5};
use seed_proto::{ProstMessage, topics};

const QUIET: Duration = Duration::from_millis(800);

fn is_message(e: &Event) -> bool {
    matches!(e, Event::Message { .. })
}

async fn receipt(client: &mut ChatClient, kind: v1::receipt::Kind) -> v1::Receipt {
    chat::expect(client, &format!("a {kind:?} receipt"), |e| match e {
        Event::Receipt { receipt, .. } if receipt.kind == kind as i32 => Some(receipt.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ticks_between_two_sdk_users() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, mut a) = chat::device(&seed, &alice, "phone").await;
    let (_, mut b) = chat::device(&seed, &bob, "phone").await;

    // One tick: the PUBACK.
    let sent = a.send_text(&bob, "hello bob").await.unwrap();
    let (seq, m) = chat::message(&mut b).await;
    assert!(seq > 0);
    assert_eq!((m.from.as_str(), m.text.as_str()), (alice.as_str(), "hello bob"));
    assert!(m.id > 0, "server-assigned id");
    assert!(m.client_msg_id.is_empty() || m.client_msg_id == sent.client_msg_id);

    // Two ticks: bob's device acknowledged the delivery.
    let delivered = receipt(&mut a, v1::receipt::Kind::Delivered).await;
    assert_eq!((delivered.by.as_str(), delivered.up_to), (bob.as_str(), m.id));

    // Blue ticks.
    b.mark_read(&alice, m.id).await.unwrap();
    let read = receipt(&mut a, v1::receipt::Kind::Read).await;
    assert_eq!((read.by.as_str(), read.up_to), (bob.as_str(), m.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_plain_text_reaches_an_sdk_client() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, mut a) = chat::device(&seed, &alice, "phone").await;
    let bob_cli = chat::login(&seed, &bob, "cli").await;

    let out = common::run_with_timeout(
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &seed.mqtt.port().to_string(), "-V", "mqttv5"])
            .args(["-i", &topics::client_id(&bob, "cli"), "-u", &bob, "-P"])
            .arg(&bob_cli.access_token)
            .args(["-t", &topics::dm_text(&alice), "-m", "hi", "-q", "1"]),
        WAIT,
    );
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    let (_, m) = chat::message(&mut a).await;
    assert_eq!((m.from.as_str(), m.text.as_str()), (bob.as_str(), "hi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_a_user_gets_the_chat() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, mut phone) = chat::device(&seed, &alice, "phone").await;
    let (_, mut laptop) = chat::device(&seed, &alice, "laptop").await;
    let (_, mut b) = chat::device(&seed, &bob, "phone").await;

    b.send_text(&alice, "to both").await.unwrap();
    let (_, on_phone) = chat::message(&mut phone).await;
    let (_, on_laptop) = chat::message(&mut laptop).await;
    assert_eq!(on_phone.text, "to both");
    assert_eq!(on_laptop.id, on_phone.id);

    // The sender's other device gets its own message, marked with the chat; the sender not.
    let sent = phone.send_text(&bob, "from my phone").await.unwrap();
    let (_, copy) = chat::message(&mut laptop).await;
    assert_eq!(copy.text, "from my phone");
    assert_eq!(copy.chat, bob);
    assert_eq!(copy.client_msg_id, sent.client_msg_id);
    let (_, to_bob) = chat::message(&mut b).await;
    assert_eq!(to_bob.id, copy.id);
    chat::expect_none(&mut phone, QUIET, "own message echoed to the sending device", is_message)
        .await;
}

/// Sends `n` numbered texts and returns them.
async fn send_numbered(from: &ChatClient, to: &str, tag: &str, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for i in 0..n {
        let text = format!("{tag}-{i:03}");
        from.send_text(to, &text).await.unwrap();
        texts.push(text);
    }
    texts
}

/// Takes `n` messages and checks they come in seq order with the given texts.
async fn receive_in_order(client: &mut ChatClient, texts: &[String]) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut got = Vec::new();
    for _ in texts {
        let (seq, m) = chat::message(client).await;
        seqs.push(seq);
        got.push(m.text);
    }
    assert_eq!(got, texts, "texts in sending order");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase: {seqs:?}");
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_replay_in_order() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, a) = chat::device(&seed, &alice, "phone").await;
    let bob_phone = chat::login(&seed, &bob, "phone").await;

    let texts = send_numbered(&a, &bob, "offline", 50).await;
    let mut b = ChatClient::connect(&seed.mqtt.to_string(), &bob_phone).await.unwrap();
    receive_in_order(&mut b, &texts).await;
    chat::expect_none(&mut b, QUIET, "a message beyond the 50", is_message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_survive_sigkill() {
    let mut seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, a) = chat::device(&seed, &alice, "phone").await;
    let (bob_phone, mut b) = chat::device(&seed, &bob, "phone").await;

    let first = send_numbered(&a, &bob, "before", 10).await;
    receive_in_order(&mut b, &first).await;
    b.disconnect().await.unwrap();
    drop(b);
    let second = send_numbered(&a, &bob, "after", 20).await;
    a.disconnect().await.unwrap();

    tokio::task::block_in_place(|| seed.restart());
    let mut b = ChatClient::connect(&seed.mqtt.to_string(), &bob_phone).await.unwrap();
    // The acknowledged ten are not replayed; the twenty come once, in order.
    receive_in_order(&mut b, &second).await;
    chat::expect_none(&mut b, QUIET, "a message delivered twice", is_message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_client_msg_id_is_stored_once() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, mut b) = chat::device(&seed, &bob, "phone").await;
    let session = chat::login(&seed, &alice, "raw").await;

    let mut opts = v5::options(&topics::client_id(&alice, "raw"), seed.mqtt);
    opts.set_credentials(alice.clone(), session.access_token.clone());
    let (mut raw_alice, _) = v5::connect(opts).await;
    let outbound = v1::Outbound {
        body: Some(v1::outbound::Body::Message(v1::Message {
            client_msg_id: "dup-1".into(),
            text: "only once".into(),
            ..Default::default()
        })),
    };
    let payload = outbound.encode_to_vec();
    for _ in 0..2 {
        raw_alice
            .client
            .publish(topics::dm(&bob), v5::QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        let reason = raw_alice
            .expect("PUBACK", |e| match e {
                v5::Event::Incoming(v5::Packet::PubAck(ack)) => Some(ack.reason),
                _ => None,
            })
            .await;
        assert_eq!(reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
    }
    let (_, m) = chat::message(&mut b).await;
    assert_eq!(m.text, "only once");
    chat::expect_none(&mut b, QUIET, "the duplicate", is_message).await;

    let history = chat::account(&seed).history(&session, &bob, None, None).await.unwrap();
    let ids: Vec<u64> = history.messages.iter().map(|h| h.id).collect();
    assert_eq!(ids, vec![m.id], "one stored message with the delivered id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_newest_first_and_pages() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (alice_phone, a) = chat::device(&seed, &alice, "phone").await;
    let texts = send_numbered(&a, &bob, "h", 5).await;
    let account = chat::account(&seed);

    let all = account.history(&alice_phone, &bob, None, None).await.unwrap();
    let got: Vec<&str> = all.messages.iter().map(|m| m.text.as_str()).collect();
    let want: Vec<&str> = texts.iter().rev().map(String::as_str).collect();
    assert_eq!(got, want);
    assert!(all.messages.windows(2).all(|w| w[0].id > w[1].id), "ids descend");
    assert!(all.messages.iter().all(|m| m.from == alice));

    // Bob sees the same chat from his side; pages of two walk back through it.
    let bob_phone = chat::login(&seed, &bob, "phone").await;
    let mut before = None;
    let mut paged = Vec::new();
    for _ in 0..5 {
        let page = account.history(&bob_phone, &alice, before, Some(2)).await.unwrap();
        assert!(page.messages.len() <= 2);
        paged.extend(page.messages.iter().map(|m| m.id));
        match page.next_before.or(page.messages.last().map(|m| m.id)) {
            Some(b) if !page.messages.is_empty() => before = Some(b),
            _ => break,
        }
    }
    let all_ids: Vec<u64> = all.messages.iter().map(|m| m.id).collect();
    assert_eq!(paged, all_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_refuses_the_message() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, a) = chat::device(&seed, &alice, "phone").await;
    let (bob_phone, mut b) = chat::device(&seed, &bob, "phone").await;
    let account = chat::account(&seed);

    account.block(&bob_phone, &alice).await.unwrap();
    match a.send_text(&bob, "let me in").await {
        Err(seed_sdk::Error::Publish(0x87)) => {}
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    chat::expect_none(&mut b, QUIET, "a message from a blocked user", is_message).await;

    account.unblock(&bob_phone, &alice).await.unwrap();
    a.send_text(&bob, "thanks").await.unwrap();
    assert_eq!(chat::message(&mut b).await.1.text, "thanks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_relayed_at_qos0_and_not_stored() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, a) = chat::device(&seed, &alice, "phone").await;
    let bob_raw = chat::login(&seed, &bob, "raw").await;
    let mut opts = v5::options(&topics::client_id(&bob, "raw"), seed.mqtt);
    opts.set_credentials(bob.clone(), bob_raw.access_token.clone());
    let (mut b, _) = v5::connect(opts).await;
    let codes = b.subscribe(&topics::inbox(&bob), v5::QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![v5::SubscribeReasonCode::Success(v5::QoS::AtLeastOnce)]);

    a.typing(&bob, true).await.unwrap();
    let p = b.next_publish().await;
    assert_eq!(p.qos, v5::QoS::AtMostOnce);
    let envelope = v1::Envelope::decode(p.payload.as_ref()).unwrap();
    assert_eq!(envelope.seq, 0, "typing is not an inbox entry");
    match envelope.body {
        Some(v1::envelope::Body::Typing(t)) => assert!(t.active && t.from == alice),
        other => panic!("expected typing, got {other:?}"),
    }

    // A device connecting later gets no replay of it.
    let (_, mut later) = chat::device(&seed, &bob, "later").await;
    chat::expect_none(&mut later, QUIET, "a stored typing event", |e| {
        matches!(e, Event::Typing { .. })
    })
    .await;
}

/// Connects with the hand-built client; returns the CONNACK code (v5 reason or v3 return).
async fn connack(seed: &Seed, version: u8, id: &str, user: &str, token: &str) -> u8 {
    let mut s = tokio::net::TcpStream::connect(seed.mqtt).await.unwrap();
    raw::handshake(&mut s, version, id, Some(user), Some(token)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acl_escape() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let (_, mut a) = chat::device(&seed, &alice, "phone").await;
    let bob_acl = chat::login(&seed, &bob, "acl").await;
    let id = topics::client_id(&bob, "acl");

    for (version, refused) in [(raw::V5, 0x87u8), (raw::V311, 0x80)] {
        let mut s = tokio::net::TcpStream::connect(seed.mqtt).await.unwrap();
        let (_, code) =
            raw::handshake(&mut s, version, &id, Some(&bob), Some(&bob_acl.access_token)).await;
        assert_eq!(code, 0);
        let shared = format!("$share/g/{}", topics::inbox(&alice));
        let filters = [
            "#".to_owned(),
            format!("+/{alice}"),
            "inbox/+".into(),
            "inbox/#".into(),
            topics::inbox(&alice),
            shared,
        ];
        for (i, filter) in filters.iter().enumerate() {
            let code = raw::subscribe_code(&mut s, version, 10 + i as u16, filter, 1).await;
            assert_eq!(code, refused, "v{version} SUBSCRIBE {filter}");
        }
        let own = raw::subscribe_code(&mut s, version, 99, &topics::inbox(&bob), 1).await;
        assert_eq!(own, 1, "v{version} own inbox");

        if version == raw::V5 {
            for (i, topic) in
                [topics::inbox(&alice), topics::presence(&alice), topics::sync(&alice)]
                    .iter()
                    .enumerate()
            {
                let pkid = 200 + i as u16;
                let body = v1::Sync { since_seq: 0 }.encode_to_vec();
                use tokio::io::AsyncWriteExt;
                s.write_all(&raw::publish(version, topic, 1, pkid, &body)).await.unwrap();
                let (first, ack) = raw::expect_packet(&mut s).await;
                assert_eq!(first, 0x40, "PUBACK for {topic}, got {first:#04x} {ack:?}");
                assert_eq!(u16::from_be_bytes([ack[0], ack[1]]), pkid);
                assert_eq!(ack.get(2).copied(), Some(0x87), "PUBACK reason for {topic}");
            }
        }
        // Nothing of alice's reached bob's connection.
        match tokio::time::timeout(QUIET, raw::read_packet(&mut s)).await {
            Err(_) => {}
            Ok(Ok(Some((first, body)))) => panic!("bob received {first:#04x} {body:?}"),
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }
    chat::expect_none(&mut a, QUIET, "anything from bob's attempts", |e| {
        matches!(e, Event::Message { .. } | Event::Receipt { .. })
    })
    .await;
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | val(c) as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn b64url_encode(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &x in b {
        acc = (acc << 8) | x as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_revoked_and_mismatched_tokens_are_refused() {
    let seed = Seed::start();
    let alice = chat::register(&seed, "alice").await;
    let bob = chat::register(&seed, "bob").await;
    let phone = chat::login(&seed, &alice, "phone").await;
    let token = phone.access_token.clone();
    let id = topics::client_id(&alice, "phone");
    assert_eq!(connack(&seed, raw::V5, &id, &alice, &token).await, 0, "the real token works");

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT");
    // A flipped signature byte.
    let mut sig = b64url_decode(parts[2]);
    sig[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64url_encode(&sig));
    // The payload's subject changed to bob, signature kept.
    let claims = String::from_utf8(b64url_decode(parts[1])).unwrap();
    assert!(claims.contains(&alice), "claims name the user: {claims}");
    let forged_claims = b64url_encode(claims.replace(&alice, &bob).as_bytes());
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let bob_id = topics::client_id(&bob, "phone");
    for version in [raw::V5, raw::V311] {
        let no = if version == raw::V5 { 0x87 } else { 5 };
        assert_eq!(connack(&seed, version, &id, &alice, &flipped).await, no, "flipped signature");
        assert_eq!(connack(&seed, version, &bob_id, &bob, &forged).await, no, "forged subject");
        assert_eq!(
            connack(&seed, version, &bob_id, &bob, &token).await,
            no,
            "alice's token as bob"
        );
        let laptop = topics::client_id(&alice, "laptop");
        assert_eq!(connack(&seed, version, &laptop, &alice, &token).await, no, "other device");
        assert_eq!(connack(&seed, version, "someone", &alice, &token).await, no, "bad client id");
    }
    assert!(matches!(
        ChatClient::connect(
            &seed.mqtt.to_string(),
            &seed_sdk::Session { access_token: flipped, ..phone.clone() }
        )
        .await,
        Err(seed_sdk::Error::Refused(_))
    ));

    // Logout revokes the device's tokens.
    chat::account(&seed).logout(&phone).await.unwrap();
    assert_eq!(connack(&seed, raw::V5, &id, &alice, &token).await, 0x87, "revoked token");
    assert_eq!(connack(&seed, raw::V311, &id, &alice, &token).await, 5, "revoked token (v3)");
    match chat::account(&seed).refresh(&phone).await {
        Err(seed_sdk::Error::Api { status, .. }) => assert!((400..500).contains(&status)),
        other => panic!("refresh after logout: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let seed = Seed::with_config(|_| {
        // The table names exactly the plugins that run: the default set, one setting changed.
        "[plugins.store-sqlite]\n[plugins.auth-jwt]\naccess_ttl_secs = 1\n[plugins.chat]\n".into()
    });
    let alice = chat::register(&seed, "alice").await;
    let phone = chat::login(&seed, &alice, "phone").await;
    let id = topics::client_id(&alice, "phone");
    assert_eq!(phone.expires_in, 1);
    // The server tolerates a few seconds of clock skew past `exp`: poll until it refuses.
    let issued = std::time::Instant::now();
    let deadline = issued + Duration::from_secs(15);
    loop {
        let code = connack(&seed, raw::V5, &id, &alice, &phone.access_token).await;
        if code == 0x87 {
            break;
        }
        assert_eq!(code, 0, "CONNACK while the token is valid");
        assert!(std::time::Instant::now() < deadline, "an expired token still accepted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(issued.elapsed() >= Duration::from_millis(900), "refused before it expired");
    assert_eq!(connack(&seed, raw::V311, &id, &alice, &phone.access_token).await, 5);
    // A refreshed pair works again.
    let fresh = chat::account(&seed).refresh(&phone).await.unwrap();
    assert_eq!(connack(&seed, raw::V5, &id, &alice, &fresh.access_token).await, 0);
}

/// The threads a message waits on run with short scheduler slices (`seed_broker::sched`):
/// the network threads, the chat store's writer and fsync thread, the broker's store; the
/// chat store's checkpoint thread keeps the kernel's default, so it gives way to them.
#[cfg(target_os = "linux")]
#[test]
fn threads_on_the_message_path_ask_for_short_slices() {
    let seed = Seed::start();
    let slices = |pid: u32| -> Vec<(String, Option<u64>)> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let read = |task: &std::path::Path, file: &str| {
            std::fs::read_to_string(task.join(file)).unwrap_or_default()
        };
        tasks
            .map(|task| task.unwrap().path())
            .map(|task| {
                let slice = read(&task, "sched").lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == "se.slice").then(|| value.trim().parse().ok())?
                });
                (read(&task, "comm").trim().to_owned(), slice)
            })
            .collect()
    };
    let threads = slices(seed.pid());
    let slice_of = |name: &str| {
        let found: Vec<_> = threads.iter().filter(|(comm, _)| comm == name).collect();
        assert!(!found.is_empty(), "no thread {name} in {threads:?}");
        found.iter().map(|(_, slice)| *slice).collect::<Vec<_>>()
    };
    let Some(default) = slice_of("seed-chat-check")[0] else {
        eprintln!("this kernel does not report scheduler slices; nothing to check");
        return;
    };
    let short = seed_broker::sched::SLICE.as_nanos() as u64;
    assert!(default > short, "the checkpoint thread keeps the default slice: {threads:?}");
    for name in ["tokio-rt-worker", "seed-chat-store", "seed-chat-sync", "seed-store"] {
        assert!(slice_of(name).iter().all(|&s| s == Some(short)), "{name}: {threads:?}");
    }
}
