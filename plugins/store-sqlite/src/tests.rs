//! Tests of the SQLite store: the shared conformance suite, plus what only this backend
//! promises (durability across reopen, group commit under load, per-call rollback inside a
//! batch, the plugin's configuration).

use std::sync::Arc;
use std::time::Instant;

use seed_broker::hooks::PluginContext;
use seed_broker::toml;
use seed_chat_core::conformance::{self, message};
use seed_chat_core::{Appended, ChatStore, StoreError, dm_chat};

use crate::{Config, SqliteChatStore, factory, journal, segments};

fn open(dir: &tempfile::TempDir, fsync: bool) -> Arc<SqliteChatStore> {
    Arc::new(SqliteChatStore::open(&dir.path().join("chat.db"), fsync).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    // Each store gets its own directory, kept until the end of the run.
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    conformance::run_all(|| {
        let dirs = dirs.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir, false);
            dirs.lock().unwrap().push(dir);
            store as Arc<dyn ChatStore>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_with_fsync() {
    // The write path with its fsync thread (`durable.rs`); one property per fresh store.
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    conformance::append_assigns_seqs(open(&dirs[0], true)).await;
    conformance::idempotency(open(&dirs[1], true)).await;
    conformance::applied_then_durable(open(&dirs[2], true)).await;
    conformance::watermark_and_receipts(open(&dirs[3], true)).await;
}

/// The first open on a new boot moves every inbox past the seqs a power cut may have lost
/// after a device saw them (`floor.rs`); a reopen on the same boot does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seqs_jump_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    store.append_message(message(1, "alice", "bob", None)).await.unwrap();
    drop(store);
    // Another boot id, as after a power cut.
    let conn = rusqlite::Connection::open(dir.path().join("chat.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.execute("UPDATE store_state SET value = value + 1 WHERE key = 'boot'", []).unwrap();
    drop(conn);
    let store = open(&dir, true);
    let floor = 1 + crate::durable::UNSYNCED_ENTRIES + 1;
    let next = store.append_message(message(2, "alice", "bob", None)).await.unwrap();
    assert_eq!(next, Appended::New { seqs: vec![floor, floor] });
    // Entries of the new boot count on from there, across a reopen of the same boot.
    let other = store.append_entries(vec![conformance::entry("carol", b"x")]).await.unwrap();
    assert_eq!(other, vec![floor], "an inbox new since the reboot starts at the floor too");
    drop(store);
    let store = open(&dir, true);
    let next = store.append_message(message(3, "alice", "bob", None)).await.unwrap();
    assert_eq!(next, Appended::New { seqs: vec![floor + 1, floor + 1] });
    let listed: Vec<u64> = store.inbox("bob", 0, 10).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(listed, vec![1, floor, floor + 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    store.create_user("alice", "h").await.unwrap();
    store.append_message(message(1, "alice", "bob", Some("k"))).await.unwrap();
    store.set_cursor("bob", "phone", 1).await.unwrap();
    drop(store);

    let store = open(&dir, true);
    assert!(store.user("alice").await.unwrap().is_some());
    assert_eq!(store.last_seq("bob").await.unwrap(), 1);
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 1);
    let retry = store.append_message(message(2, "alice", "bob", Some("k"))).await.unwrap();
    assert_eq!(retry, Appended::Duplicate { id: 1 }, "idempotency must survive a restart");
    let next = store.append_message(message(3, "alice", "bob", None)).await.unwrap();
    assert_eq!(next, Appended::New { seqs: vec![2, 2] });
}

/// A failing call (here: a message id already used in its chat) is undone alone: its
/// batch-mates commit, and it burns no seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_call_spares_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, false);
    store.append_message(message(1, "carol", "bob", None)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for id in [1, 2, 1, 3, 1, 4] {
        let store = store.clone();
        tasks.spawn(
            async move { (id, store.append_message(message(id, "carol", "bob", None)).await) },
        );
    }
    let mut stored = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (1, result) => assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "a reused message id must be a Conflict, got {result:?}"
            ),
            (_, result) => {
                assert!(matches!(result, Ok(Appended::New { .. })), "{result:?}");
                stored += 1;
            }
        }
    }
    assert_eq!(stored, 3);
    let seqs: Vec<u64> = store.inbox("bob", 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "a failed call must not leave a gap");
    assert_eq!(store.last_seq("carol").await.unwrap(), 4);
    let huge = store.append_message(message(u64::MAX, "carol", "bob", None)).await;
    assert!(matches!(huge, Err(StoreError::Backend(_))), "{huge:?}");
    assert_eq!(store.last_seq("bob").await.unwrap(), 4);
}

/// A watermark moves with its receipts or not at all: when the receipts cannot be
/// appended (here the table of inbox heads is gone under the store), the watermark stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_whose_receipts_fail_stays_put() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, false);
    let chat = seed_chat_core::dm_chat("bob", "dave");
    let delivered = seed_chat_core::Watermark::Delivered;
    assert!(store.advance_watermark(delivered, "bob", &chat, 5).await.unwrap());
    let other = rusqlite::Connection::open(dir.path().join("chat.db")).unwrap();
    other.execute_batch("DROP TABLE inbox_heads").unwrap();

    let receipt = vec![conformance::entry("dave", b"delivered 9")];
    let moved = store.advance_watermark_and_append(delivered, "bob", &chat, 9, receipt).await;
    assert!(moved.is_err(), "the receipt's inbox head cannot be read: {moved:?}");
    assert_eq!(store.watermark(delivered, "bob", &chat).await.unwrap(), 5, "moved alone");
}

/// 10,000 messages from 100 concurrent tasks: gapless seqs, and quick even in debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    let (rate, elapsed) = append_load(store.clone(), 100, 100).await;
    println!("10,000 appends (fsync on): {elapsed:?}, {rate:.0}/s");
    assert!(elapsed.as_secs() < 10, "10,000 appends took {elapsed:?}");
    let mut total = 0;
    for user in USERS {
        let seqs: Vec<u64> =
            store.inbox(user, 0, 100_000).await.unwrap().iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "{user}'s inbox is not gapless");
        total += seqs.len();
    }
    assert_eq!(total, 20_000);
}

/// Throughput: `cargo test --release -p seed-plugin-store-sqlite -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn append_throughput() {
    for fsync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (rate, elapsed) = append_load(open(&dir, fsync), 200, 500).await;
        println!("100,000 appends, 200 tasks, fsync {fsync}: {elapsed:?}, {rate:.0}/s");
    }
}

const USERS: [&str; 10] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];

/// `tasks` tasks each append `each` direct messages (two entries each, with a key);
/// returns appends per second and the time taken.
async fn append_load(
    store: Arc<SqliteChatStore>,
    tasks: u64,
    each: u64,
) -> (f64, std::time::Duration) {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let store = store.clone();
        set.spawn(async move {
            for i in 0..each {
                let id = task * each + i + 1;
                let from = USERS[(id % 10) as usize];
                let to = USERS[((id / 10) % 10) as usize];
                let key = format!("k{id}");
                store.append_message(message(id, from, to, Some(&key))).await.unwrap();
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    let elapsed = start.elapsed();
    ((tasks * each) as f64 / elapsed.as_secs_f64(), elapsed)
}

#[tokio::test]
async fn factory_provides_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut context = PluginContext::new(dir.path().to_path_buf());
    let plugin = factory(toml::Table::new(), &mut context).unwrap();
    assert_eq!(plugin.name(), "store-sqlite");
    assert!(plugin.hooks().is_empty());
    let store: Arc<dyn ChatStore> = context.require("a chat store").unwrap();
    store.create_user("alice", "h").await.unwrap();
    assert!(dir.path().join("chat.db").exists());
    assert!(store.history(&dm_chat("a", "b"), None, 1).await.unwrap().is_empty());

    let table: toml::Table = "fsync = false\npath = \"db/other.db\"".parse().unwrap();
    factory(table, &mut context).unwrap();
    assert!(dir.path().join("db/other.db").exists(), "a relative path is under data_dir");
}

#[test]
fn config_defaults_and_refuses_unknown_keys() {
    let config = Config::from_table(toml::Table::new()).unwrap();
    assert!(config.fsync, "fsync defaults to on");
    assert_eq!(config.path, None);
    let table: toml::Table = "fsnyc = false".parse().unwrap();
    assert!(Config::from_table(table).is_err(), "a misspelt key must be refused");
}

/// Appends are journaled first and written to their tables a second later: a reopen finds
/// each exactly once, whether it was written out, still waiting, or half of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_and_tables_agree_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, false);
    store.append_message(message(1, "alice", "bob", Some("k1"))).await.unwrap();
    store.set_cursor("bob", "phone", 1).await.unwrap();
    // Past the wait: the next commit writes the first message out.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    store.append_message(message(2, "alice", "bob", Some("k2"))).await.unwrap();
    store.append_message(message(3, "carol", "bob", None)).await.unwrap();
    let journal = segments::dir_of(store.path());
    assert_eq!(segments::read_all(&journal).unwrap().len(), 4, "a record per call");
    drop(store);

    for _ in 0..2 {
        let store = open(&dir, false);
        assert!(segments::read_all(&journal).unwrap().is_empty(), "all written out at open");
        let seqs: Vec<u64> =
            store.inbox("bob", 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(store.inbox("bob", 1, 1).await.unwrap()[0].seq, 2);
        assert_eq!(store.last_seq("bob").await.unwrap(), 3);
        assert_eq!(store.cursor("bob", "phone").await.unwrap(), 1);
        let ids: Vec<u64> = store
            .history(&dm_chat("alice", "bob"), None, 10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![2, 1]);
        for (id, key) in [(1, "k1"), (2, "k2")] {
            let again = store.append_message(message(9, "alice", "bob", Some(key))).await;
            assert_eq!(again.unwrap(), Appended::Duplicate { id });
            // A stored id is not used again, whether it waits in memory or not.
            let reused = store.append_message(message(id, "alice", "bob", None)).await;
            assert!(matches!(reused, Err(StoreError::Conflict(_))), "{reused:?}");
        }
        drop(store);
    }
}

/// A cursor written out to its table still refuses to move back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_never_moves_back_across_a_write_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, false);
    store.set_cursor("bob", "phone", 5).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // This commit writes the cursor out; the next one must still compare against it.
    store.set_cursor("bob", "laptop", 1).await.unwrap();
    store.set_cursor("bob", "phone", 3).await.unwrap();
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 5);
    store.set_cursor("bob", "phone", 6).await.unwrap();
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 6);
}

/// A store written by a build that kept the journal in a table (schema 2) opens with
/// what waited there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_the_journal_table_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir, false));
    let items = vec![
        journal::Item::Message {
            chat: dm_chat("alice", "bob"),
            id: 7,
            sender: "alice".into(),
            body: bytes::Bytes::from_static(b"hi"),
            key: Some("k7".into()),
        },
        journal::Item::Entry {
            user: "bob".into(),
            seq: 1,
            envelope: bytes::Bytes::from_static(b"e1"),
            skip_device: None,
            created_at: seed_chat_core::now_millis(),
        },
    ];
    let conn = rusqlite::Connection::open(dir.path().join("chat.db")).unwrap();
    conn.execute("INSERT INTO journal (items) VALUES (?1)", [journal::encode(&items)]).unwrap();
    drop(conn);

    let store = open(&dir, false);
    let inbox = store.inbox("bob", 0, 10).await.unwrap();
    assert_eq!((inbox.len(), inbox[0].envelope.as_ref()), (1, &b"e1"[..]));
    assert_eq!(store.history(&dm_chat("alice", "bob"), None, 10).await.unwrap()[0].id, 7);
    let again = store.append_message(message(9, "alice", "bob", Some("k7"))).await.unwrap();
    assert_eq!(again, Appended::Duplicate { id: 7 });
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "the table is emptied once its items are written out");
}

/// History pages through messages written out as chunks (before a reopen) and messages
/// still waiting in memory (after it) as one list; ids and keys stay checked against the
/// chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_across_chunks_and_waiting_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, false);
    for id in 1..=150 {
        let key = format!("k{id}");
        store.append_message(message(id, "alice", "bob", Some(&key))).await.unwrap();
    }
    drop(store);
    // Opening writes out what the journal holds: the first 150 are now in chunks.
    let store = open(&dir, false);
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let chunks: i64 =
        conn.query_row("SELECT COUNT(*) FROM message_chunks", [], |r| r.get(0)).unwrap();
    assert_eq!(chunks, 3, "64 + 64 + 22");
    for id in 151..=160 {
        store.append_message(message(id, "bob", "alice", None)).await.unwrap();
    }
    let chat = dm_chat("alice", "bob");
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.history(&chat, before, 50).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(page.iter().map(|m| (m.id, m.sender.clone(), m.body.clone())));
    }
    let expected: Vec<_> = (1..=160)
        .rev()
        .map(|id| {
            let sender = if id > 150 { "bob" } else { "alice" };
            (id, sender.to_owned(), bytes::Bytes::from(format!("body {id}")))
        })
        .collect();
    assert_eq!(seen, expected);

    let again = store.append_message(message(161, "alice", "bob", Some("k5"))).await.unwrap();
    assert_eq!(again, Appended::Duplicate { id: 5 });
    let reused = store.append_message(message(100, "alice", "bob", None)).await;
    assert!(matches!(reused, Err(StoreError::Conflict(_))), "{reused:?}");
}
