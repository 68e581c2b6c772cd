//! The [`ChatStore`] conformance suite: the contract's behaviour as executable checks, so
//! every backend (the embedded SQLite store today, Cassandra tomorrow) is held to the same
//! semantics and the chat plugin can rely on them without knowing which backend it runs on.
//!
//! Each property is one `pub async fn` taking a fresh, empty store and panicking with a
//! message that names the broken rule. [`run_all`] runs them all, each on its own store. The
//! suite lives in the library (not under `#[cfg(test)]`) so other crates' tests can call it.
//!
//! A backend runs it from one of its own tests, with a factory that makes an empty store
//! each time it is called:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn conformance() {
//!     seed_chat_core::conformance::run_all(|| async {
//!         // Cassandra: a fresh keyspace per call (e.g. `seed_test_<random>`), created
//!         // with the backend's own schema set-up, so runs do not see each other's rows.
//!         let store = CassandraChatStore::connect(&uri, &fresh_keyspace()).await.unwrap();
//!         Arc::new(store) as Arc<dyn ChatStore>
//!     })
//!     .await;
//! }
//! ```
//!
//! A multi-threaded runtime is recommended: [`concurrent_appends`] spawns tasks, and only
//! real parallelism exercises a backend's seq assignment under contention. A backend with
//! a documented limit may also call the properties one by one and skip what it cannot do,
//! saying why.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::{
    Appended, ChatStore, NewEntry, NewMessage, RefreshToken, StoredMessage, Watermark, dm_chat,
    group_chat, now_millis,
};

/// Runs every property of the suite, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ChatStore>>,
{
    users(make().await).await;
    refresh_tokens(make().await).await;
    revocation(make().await).await;
    blocks(make().await).await;
    append_assigns_seqs(make().await).await;
    append_keeps_entries(make().await).await;
    idempotency(make().await).await;
    applied_then_durable(make().await).await;
    concurrent_appends(make().await).await;
    inbox_paging(make().await).await;
    cursors(make().await).await;
    history(make().await).await;
    watermarks(make().await).await;
    watermark_and_receipts(make().await).await;
    expiry(make().await).await;
}

/// An entry for `user` with a recognisable envelope.
pub fn entry(user: &str, envelope: &[u8]) -> NewEntry {
    NewEntry { user_id: user.into(), envelope: Bytes::copy_from_slice(envelope), skip_device: None }
}

/// A direct message from `from` to `to`, delivered to both inboxes.
pub fn message(id: u64, from: &str, to: &str, client_msg_id: Option<&str>) -> NewMessage {
    NewMessage {
        id,
        chat: dm_chat(from, to),
        sender: from.into(),
        client_msg_id: client_msg_id.map(Into::into),
        body: Bytes::from(format!("body {id}")),
        entries: vec![entry(to, format!("to {id}").as_bytes()), entry(from, b"own copy")],
    }
}

fn seqs_of(appended: Appended, what: &str) -> Vec<u64> {
    match appended {
        Appended::New { seqs } => seqs,
        Appended::Duplicate { id } => panic!("{what}: stored as new, got Duplicate {{ id: {id} }}"),
    }
}

/// `create_user` stores a user once; a second registration of the id is a `Conflict`.
pub async fn users(store: Arc<dyn ChatStore>) {
    assert_eq!(store.user("alice").await.unwrap(), None, "users: unknown user must be None");
    let before = now_millis();
    store.create_user("alice", "$argon2id$hash-a").await.unwrap();
    let after = now_millis();
    let alice = store.user("alice").await.unwrap().expect("users: created user not found");
    assert_eq!(alice.user_id, "alice");
    assert_eq!(alice.password_hash, "$argon2id$hash-a", "users: password hash not kept");
    assert!(
        (before..=after).contains(&alice.created_at),
        "users: created_at {} not the creation time ({before}..={after})",
        alice.created_at
    );
    let again = store.create_user("alice", "$argon2id$other").await;
    assert!(
        matches!(again, Err(crate::StoreError::Conflict(_))),
        "users: duplicate user must be Conflict, got {again:?}"
    );
    assert_eq!(
        store.user("alice").await.unwrap().map(|u| u.password_hash).as_deref(),
        Some("$argon2id$hash-a"),
        "users: a refused registration must not change the existing user"
    );
    store.create_user("bob", "$argon2id$hash-b").await.unwrap();
    assert_eq!(store.user("bob").await.unwrap().map(|u| u.user_id).as_deref(), Some("bob"));
    assert_eq!(store.user("Alice").await.unwrap(), None, "users: ids are case-sensitive");
}

fn token(byte: u8, user: &str, device: &str, expires_at: u64) -> RefreshToken {
    RefreshToken {
        token_hash: [byte; 32],
        user_id: user.into(),
        device_id: device.into(),
        expires_at,
    }
}

/// A refresh token is taken exactly once, with every field as stored.
pub async fn refresh_tokens(store: Arc<dyn ChatStore>) {
    let t1 = token(1, "alice", "phone", 1_700_000_000_123);
    let t2 = token(2, "alice", "laptop", 42);
    store.put_refresh_token(t1.clone()).await.unwrap();
    store.put_refresh_token(t2.clone()).await.unwrap();
    assert_eq!(
        store.take_refresh_token(&[1; 32]).await.unwrap(),
        Some(t1),
        "refresh tokens: take must return the stored token, expiry included"
    );
    assert_eq!(
        store.take_refresh_token(&[1; 32]).await.unwrap(),
        None,
        "refresh tokens: a token must be usable only once"
    );
    assert_eq!(store.take_refresh_token(&[9; 32]).await.unwrap(), None);
    assert_eq!(
        store.take_refresh_token(&[2; 32]).await.unwrap(),
        Some(t2),
        "refresh tokens: taking one token must not affect another"
    );
}

/// `revoke_device` deletes exactly that device's tokens and records when.
pub async fn revocation(store: Arc<dyn ChatStore>) {
    assert_eq!(store.device_revoked_at("alice", "phone").await.unwrap(), None);
    store.put_refresh_token(token(1, "alice", "phone", 10)).await.unwrap();
    store.put_refresh_token(token(2, "alice", "phone", 20)).await.unwrap();
    store.put_refresh_token(token(3, "alice", "laptop", 30)).await.unwrap();
    store.put_refresh_token(token(4, "bob", "phone", 40)).await.unwrap();
    store.revoke_device("alice", "phone", 1_000).await.unwrap();
    assert_eq!(
        store.device_revoked_at("alice", "phone").await.unwrap(),
        Some(1_000),
        "revocation: revoked_at not recorded"
    );
    assert_eq!(store.device_revoked_at("alice", "laptop").await.unwrap(), None);
    assert_eq!(store.device_revoked_at("bob", "phone").await.unwrap(), None);
    for hash in [[1; 32], [2; 32]] {
        assert_eq!(
            store.take_refresh_token(&hash).await.unwrap(),
            None,
            "revocation: the device's refresh tokens must be deleted"
        );
    }
    assert!(
        store.take_refresh_token(&[3; 32]).await.unwrap().is_some(),
        "revocation: another device's token must survive"
    );
    assert!(
        store.take_refresh_token(&[4; 32]).await.unwrap().is_some(),
        "revocation: another user's device of the same name must survive"
    );
    store.revoke_device("alice", "phone", 2_000).await.unwrap();
    assert_eq!(
        store.device_revoked_at("alice", "phone").await.unwrap(),
        Some(2_000),
        "revocation: a later logout must move revoked_at"
    );
}

/// Blocks are directed, settable and unsettable, and listed sorted.
pub async fn blocks(store: Arc<dyn ChatStore>) {
    assert!(!store.is_blocked("bob", "alice").await.unwrap());
    store.set_blocked("alice", "carol", true).await.unwrap();
    store.set_blocked("alice", "bob", true).await.unwrap();
    store.set_blocked("alice", "bob", true).await.unwrap();
    assert!(
        store.is_blocked("bob", "alice").await.unwrap(),
        "blocks: is_blocked(user, by) must be true once `by` blocked `user`"
    );
    assert!(!store.is_blocked("alice", "bob").await.unwrap(), "blocks: a block goes one way only");
    assert_eq!(
        store.blocked_by("alice").await.unwrap(),
        vec!["bob".to_string(), "carol".to_string()],
        "blocks: blocked_by must list each blocked user once, sorted"
    );
    assert!(store.blocked_by("bob").await.unwrap().is_empty());
    store.set_blocked("alice", "bob", false).await.unwrap();
    store.set_blocked("alice", "dave", false).await.unwrap();
    assert!(!store.is_blocked("bob", "alice").await.unwrap(), "blocks: unblock must stick");
    assert_eq!(store.blocked_by("alice").await.unwrap(), vec!["carol".to_string()]);
}

/// Seqs start at 1 per user and have no gaps, across messages and other entries alike.
pub async fn append_assigns_seqs(store: Arc<dyn ChatStore>) {
    assert_eq!(store.last_seq("alice").await.unwrap(), 0, "seqs: empty inbox last_seq is 0");
    let seqs = seqs_of(store.append_message(message(1, "alice", "bob", None)).await.unwrap(), "m1");
    assert_eq!(seqs, vec![1, 1], "seqs: the first entry of each inbox must get seq 1");
    let seqs = seqs_of(store.append_message(message(2, "bob", "alice", None)).await.unwrap(), "m2");
    assert_eq!(seqs, vec![2, 2], "seqs: (alice, bob) must each get seq 2");
    let seqs = store
        .append_entries(vec![
            entry("alice", b"receipt"),
            entry("carol", b"x"),
            entry("alice", b"y"),
        ])
        .await
        .unwrap();
    assert_eq!(seqs, vec![3, 1, 4], "seqs: append_entries must continue each inbox in order");
    assert!(store.append_entries(Vec::new()).await.unwrap().is_empty());
    let mut to_self = message(3, "alice", "alice", None);
    to_self.chat = group_chat("solo");
    let seqs = seqs_of(store.append_message(to_self).await.unwrap(), "m3");
    assert_eq!(seqs, vec![5, 6], "seqs: two entries for one user in one message");
    assert_eq!(store.last_seq("alice").await.unwrap(), 6);
    assert_eq!(store.last_seq("bob").await.unwrap(), 2);
    assert_eq!(store.last_seq("carol").await.unwrap(), 1);
    let listed: Vec<u64> =
        store.inbox("alice", 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(listed, vec![1, 2, 3, 4, 5, 6], "seqs: inbox must hold every seq in order");
}

/// Envelopes come back byte for byte, with their skip_device and creation time.
pub async fn append_keeps_entries(store: Arc<dyn ChatStore>) {
    // Bytes a text column would mangle: NUL, invalid UTF-8, a high bit.
    let envelope = Bytes::from_static(&[0x12, 0x00, 0xff, 0xfe, 0x80, 0x08, 0x01, 0x00]);
    let before = now_millis();
    let appended = store
        .append_message(NewMessage {
            id: 10,
            chat: dm_chat("alice", "bob"),
            sender: "alice".into(),
            client_msg_id: Some("c-1".into()),
            body: Bytes::from_static(&[0x0a, 0x00, 0xff]),
            entries: vec![
                NewEntry { user_id: "bob".into(), envelope: envelope.clone(), skip_device: None },
                NewEntry {
                    user_id: "alice".into(),
                    envelope: Bytes::new(),
                    skip_device: Some("phone".into()),
                },
            ],
        })
        .await
        .unwrap();
    let after = now_millis();
    assert_eq!(seqs_of(appended, "append"), vec![1, 1]);
    let bob = store.inbox("bob", 0, 10).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].envelope, envelope, "entries: envelope bytes must be kept exactly");
    assert_eq!(bob[0].skip_device, None);
    assert!(
        (before..=after).contains(&bob[0].created_at),
        "entries: created_at {} not the append time ({before}..={after})",
        bob[0].created_at
    );
    let alice = store.inbox("alice", 0, 10).await.unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].envelope, Bytes::new(), "entries: an empty envelope stays empty");
    assert_eq!(alice[0].skip_device.as_deref(), Some("phone"), "entries: skip_device lost");
    let history = store.history(&dm_chat("alice", "bob"), None, 10).await.unwrap();
    assert_eq!(
        history,
        vec![StoredMessage {
            id: 10,
            sender: "alice".into(),
            body: Bytes::from_static(&[0x0a, 0x00, 0xff])
        }],
        "entries: the message body must be kept exactly"
    );
    let seqs = store
        .append_entries(vec![NewEntry {
            user_id: "bob".into(),
            envelope: envelope.clone(),
            skip_device: Some("tablet".into()),
        }])
        .await
        .unwrap();
    assert_eq!(seqs, vec![2]);
    let bob = store.inbox("bob", 1, 10).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!((bob[0].seq, &bob[0].envelope), (2, &envelope));
    assert_eq!(bob[0].skip_device.as_deref(), Some("tablet"));
}

/// (sender, client_msg_id) makes an append idempotent; nothing else does.
pub async fn idempotency(store: Arc<dyn ChatStore>) {
    let first = store.append_message(message(1, "alice", "bob", Some("k"))).await.unwrap();
    assert_eq!(seqs_of(first, "first"), vec![1, 1]);
    let retry = store.append_message(message(2, "alice", "bob", Some("k"))).await.unwrap();
    assert_eq!(
        retry,
        Appended::Duplicate { id: 1 },
        "idempotency: a resent client_msg_id must be a Duplicate of the first message"
    );
    assert_eq!(store.last_seq("bob").await.unwrap(), 1, "idempotency: a duplicate stored entries");
    assert_eq!(store.last_seq("alice").await.unwrap(), 1);
    let history = store.history(&dm_chat("alice", "bob"), None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "idempotency: a duplicate stored a message");

    // The same key from someone else is their own message.
    let other = store.append_message(message(3, "bob", "alice", Some("k"))).await.unwrap();
    assert_eq!(
        seqs_of(other, "same key, other sender"),
        vec![2, 2],
        "idempotency: keys are per sender"
    );
    // No key: never a duplicate.
    for id in [4, 5] {
        let appended = store.append_message(message(id, "alice", "bob", None)).await.unwrap();
        assert!(
            matches!(appended, Appended::New { .. }),
            "idempotency: a message without client_msg_id is never a duplicate"
        );
    }
    // A duplicate sent concurrently with its original still yields one message.
    let (a, b) = tokio::join!(
        store.append_message(message(6, "carol", "bob", Some("race"))),
        store.append_message(message(7, "carol", "bob", Some("race"))),
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Appended::Duplicate { .. }));
    match &outcomes {
        [Appended::New { .. }, Appended::Duplicate { id }] => assert!(
            *id == 6 || *id == 7,
            "idempotency: concurrent duplicate names id {id}, neither message"
        ),
        other => panic!("idempotency: concurrent same-key appends gave {other:?}"),
    }
    assert_eq!(store.last_seq("bob").await.unwrap(), 5, "idempotency: race stored twice");
}

/// `append_message_applied`: what it applied is read back at once and becomes durable; a
/// resend applied while its first copy is still unsynced is a duplicate; one applied
/// message is never stored twice however the two steps interleave with other calls.
pub async fn applied_then_durable(store: Arc<dyn ChatStore>) {
    let (appended, durable) =
        store.append_message_applied(message(1, "alice", "bob", Some("k"))).await.unwrap();
    assert_eq!(seqs_of(appended, "applied"), vec![1, 1]);
    // Applied, maybe not durable yet: readable already.
    let bob = store.inbox("bob", 0, 10).await.unwrap();
    assert_eq!(bob.len(), 1, "applied: the entry must be readable before it is durable");
    assert_eq!(store.last_seq("alice").await.unwrap(), 1);
    let (resent, resent_durable) =
        store.append_message_applied(message(2, "alice", "bob", Some("k"))).await.unwrap();
    assert_eq!(
        resent,
        Appended::Duplicate { id: 1 },
        "applied: a resend before the first copy is durable must be its Duplicate"
    );
    resent_durable.wait().await.expect("applied: a duplicate's Durable failed");
    durable.wait().await.expect("applied: Durable failed");
    // Many in flight at once, each waited for after the next was applied.
    let mut pending = Vec::new();
    for id in 3..23 {
        let (appended, durable) =
            store.append_message_applied(message(id, "carol", "bob", None)).await.unwrap();
        pending.push((seqs_of(appended, "applied in flight")[0], durable));
    }
    for (expected, (seq, durable)) in (2..).zip(pending) {
        assert_eq!(seq, expected, "applied: seqs out of order while not yet durable");
        durable.wait().await.expect("applied: Durable failed");
    }
    let seqs: Vec<u64> = store.inbox("bob", 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>(), "applied: inbox after the durables");
    assert_eq!(store.history(&dm_chat("alice", "bob"), None, 10).await.unwrap().len(), 1);
}

/// Many concurrent appends: every inbox's seqs are unique and gapless.
pub async fn concurrent_appends(store: Arc<dyn ChatStore>) {
    const TASKS: u64 = 50;
    const EACH: u64 = 20;
    let users = ["u0", "u1", "u2", "u3", "u4"];
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let id = task * EACH + i + 1;
                let from = users[(id % 5) as usize];
                let to = users[((id / 5) % 5) as usize];
                let message = message(id, from, to, Some(&format!("k{id}")));
                let seqs = seqs_of(store.append_message(message).await.unwrap(), "concurrent");
                got.push((to.to_string(), seqs[0]));
                got.push((from.to_string(), seqs[1]));
            }
            got
        });
    }
    let mut per_user: HashMap<String, Vec<u64>> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        for (user, seq) in done.expect("concurrent: task panicked") {
            per_user.entry(user).or_default().push(seq);
        }
    }
    let mut total = 0;
    for (user, mut seqs) in per_user {
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "concurrent: {user}'s seqs are not unique and gapless");
        assert_eq!(store.last_seq(&user).await.unwrap(), seqs.len() as u64);
        total += seqs.len();
    }
    assert_eq!(total as u64, TASKS * EACH * 2);
}

/// `inbox` pages by seq: strictly after `after`, in order, at most `limit`.
pub async fn inbox_paging(store: Arc<dyn ChatStore>) {
    let entries: Vec<NewEntry> = (1..=10).map(|i| entry("alice", &[i])).collect();
    store.append_entries(entries).await.unwrap();
    store.append_entries(vec![entry("bob", b"b")]).await.unwrap();
    let page = store.inbox("alice", 0, 4).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(page[2].envelope, Bytes::from_static(&[3]));
    let page = store.inbox("alice", 4, 4).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7, 8],
        "inbox: `after` is exclusive"
    );
    let page = store.inbox("alice", 8, 100).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![9, 10]);
    assert!(store.inbox("alice", 10, 100).await.unwrap().is_empty());
    assert!(store.inbox("alice", 0, 0).await.unwrap().is_empty(), "inbox: limit 0 is empty");
    assert!(store.inbox("nobody", 0, 10).await.unwrap().is_empty());
    let bob = store.inbox("bob", 0, 10).await.unwrap();
    assert_eq!(bob.len(), 1, "inbox: users' inboxes must be separate");
    assert_eq!(store.last_seq("alice").await.unwrap(), 10);
}

/// A device's cursor starts at 0 and only moves forward.
pub async fn cursors(store: Arc<dyn ChatStore>) {
    assert_eq!(store.cursor("alice", "phone").await.unwrap(), 0);
    store.set_cursor("alice", "phone", 5).await.unwrap();
    assert_eq!(store.cursor("alice", "phone").await.unwrap(), 5);
    store.set_cursor("alice", "phone", 3).await.unwrap();
    assert_eq!(store.cursor("alice", "phone").await.unwrap(), 5, "cursors: moved backwards");
    store.set_cursor("alice", "phone", 5).await.unwrap();
    store.set_cursor("alice", "phone", 9).await.unwrap();
    assert_eq!(store.cursor("alice", "phone").await.unwrap(), 9);
    assert_eq!(
        store.cursor("alice", "laptop").await.unwrap(),
        0,
        "cursors: devices must be separate"
    );
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 0, "cursors: users must be separate");
}

/// History is per chat, newest first, `before` exclusive, at most `limit`.
pub async fn history(store: Arc<dyn ChatStore>) {
    let chat = dm_chat("alice", "bob");
    for id in [100, 200, 300, 400, 500] {
        let from = if id % 200 == 0 { "bob" } else { "alice" };
        store
            .append_message(message(id, from, if from == "bob" { "alice" } else { "bob" }, None))
            .await
            .unwrap();
    }
    store.append_message(message(250, "alice", "carol", None)).await.unwrap();
    let ids = |messages: Vec<StoredMessage>| messages.iter().map(|m| m.id).collect::<Vec<_>>();
    let all = store.history(&chat, None, 100).await.unwrap();
    assert_eq!(ids(all.clone()), vec![500, 400, 300, 200, 100], "history: newest first, one chat");
    assert_eq!(all[1].sender, "bob");
    assert_eq!(all[1].body, Bytes::from_static(b"body 400"));
    assert_eq!(ids(store.history(&chat, None, 2).await.unwrap()), vec![500, 400]);
    assert_eq!(
        ids(store.history(&chat, Some(400), 2).await.unwrap()),
        vec![300, 200],
        "history: `before` is exclusive"
    );
    assert_eq!(ids(store.history(&chat, Some(100), 10).await.unwrap()), Vec::<u64>::new());
    assert_eq!(ids(store.history(&chat, Some(u64::MAX), 1).await.unwrap()), vec![500]);
    assert!(store.history(&chat, None, 0).await.unwrap().is_empty());
    assert_eq!(
        ids(store.history(&dm_chat("carol", "alice"), None, 10).await.unwrap()),
        vec![250],
        "history: chats must be separate"
    );
    assert!(store.history(&group_chat("none"), None, 10).await.unwrap().is_empty());
}

/// Watermarks start at 0, only move forward, say whether they moved, and are kept per
/// (kind, reader, chat).
pub async fn watermarks(store: Arc<dyn ChatStore>) {
    let chat = group_chat("team");
    let (read, delivered) = (Watermark::Read, Watermark::Delivered);
    assert_eq!(store.watermark(read, "alice", &chat).await.unwrap(), 0);
    assert!(store.advance_watermark(read, "alice", &chat, 10).await.unwrap(), "moved from 0");
    assert!(
        !store.advance_watermark(read, "alice", &chat, 10).await.unwrap(),
        "watermarks: the same value is not a move"
    );
    assert!(
        !store.advance_watermark(read, "alice", &chat, 5).await.unwrap(),
        "watermarks: a lower value is not a move"
    );
    assert_eq!(store.watermark(read, "alice", &chat).await.unwrap(), 10, "moved backwards");
    assert!(store.advance_watermark(read, "alice", &chat, 11).await.unwrap());
    assert_eq!(store.watermark(read, "alice", &chat).await.unwrap(), 11);
    assert_eq!(
        store.watermark(delivered, "alice", &chat).await.unwrap(),
        0,
        "watermarks: kinds must be separate"
    );
    assert!(store.advance_watermark(delivered, "alice", &chat, 3).await.unwrap());
    assert_eq!(store.watermark(read, "bob", &chat).await.unwrap(), 0, "readers must be separate");
    assert_eq!(
        store.watermark(read, "alice", &group_chat("other")).await.unwrap(),
        0,
        "watermarks: chats must be separate"
    );
    assert!(
        !store.advance_watermark(read, "carol", &chat, 0).await.unwrap(),
        "watermarks: 0 is where every watermark starts"
    );
}

/// `advance_watermark_and_append`: the entries are appended exactly when the watermark
/// moves, with the inbox's next seqs.
pub async fn watermark_and_receipts(store: Arc<dyn ChatStore>) {
    let chat = dm_chat("alice", "bob");
    let delivered = Watermark::Delivered;
    store.append_message(message(7, "alice", "bob", None)).await.unwrap();
    let receipt = || vec![entry("alice", b"delivered 7")];
    let moved = store.advance_watermark_and_append(delivered, "bob", &chat, 7, receipt());
    assert_eq!(moved.await.unwrap(), Some(vec![2]), "watermark and receipts: moved");
    assert_eq!(store.watermark(delivered, "bob", &chat).await.unwrap(), 7);
    let alice = store.inbox("alice", 1, 10).await.unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(&alice[0].envelope[..], b"delivered 7", "watermark and receipts: the receipt");
    for up_to in [7, 3, 0] {
        let again = store.advance_watermark_and_append(delivered, "bob", &chat, up_to, receipt());
        assert_eq!(again.await.unwrap(), None, "watermark and receipts: {up_to} is no move");
    }
    assert_eq!(store.last_seq("alice").await.unwrap(), 2, "a receipt without a move stored");
    let empty = store.advance_watermark_and_append(delivered, "bob", &chat, 8, Vec::new());
    assert_eq!(empty.await.unwrap(), Some(Vec::new()), "watermark and receipts: no entries");
    assert_eq!(store.watermark(delivered, "bob", &chat).await.unwrap(), 8);
}

/// Expiry deletes old entries only; seqs, cursors and messages are untouched.
pub async fn expiry(store: Arc<dyn ChatStore>) {
    store.append_message(message(1, "alice", "bob", None)).await.unwrap();
    store.append_entries(vec![entry("bob", b"r")]).await.unwrap();
    store.set_cursor("bob", "phone", 1).await.unwrap();
    let start = store.inbox("bob", 0, 10).await.unwrap()[0].created_at;
    assert_eq!(
        store.expire_entries(start).await.unwrap(),
        0,
        "expiry: an entry created at `before` is not older than it"
    );
    assert_eq!(store.inbox("bob", 0, 10).await.unwrap().len(), 2);
    let later = now_millis() + 60_000;
    assert_eq!(store.expire_entries(later).await.unwrap(), 3, "expiry: count of deleted entries");
    assert!(store.inbox("bob", 0, 10).await.unwrap().is_empty(), "expiry: entries not deleted");
    assert!(store.inbox("alice", 0, 10).await.unwrap().is_empty());
    assert_eq!(
        store.last_seq("bob").await.unwrap(),
        2,
        "expiry: last_seq must not go back when entries expire"
    );
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 1, "expiry: cursor changed");
    let seqs = store.append_entries(vec![entry("bob", b"new")]).await.unwrap();
    assert_eq!(seqs, vec![3], "expiry: seqs must continue, never restart");
    let kept: HashSet<u64> = store
        .history(&dm_chat("alice", "bob"), None, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(kept, HashSet::from([1]), "expiry: history is not inbox expiry's business");
    assert_eq!(store.expire_entries(0).await.unwrap(), 0);
}
