//! The database file: how its connections are opened and how its schema evolves.
//!
//! The schema is a list of migration steps; `PRAGMA user_version` records how many have been
//! applied. Opening applies the missing ones in order, each in its own transaction with its
//! version bump, so a crash between steps leaves a database a later open finishes. A file
//! written by a newer build (more steps than this build knows) is refused rather than
//! guessed at. A new step is appended to [`MIGRATIONS`]; existing steps are never edited.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use seed_chat_core::StoreError;

use crate::backend;

/// The migration steps, in order; step `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, blocks, messages, inboxes, cursors, watermarks.
    "
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE refresh_tokens (
        token_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
    CREATE TABLE revoked_devices (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        revoked_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, device_id)
    ) WITHOUT ROWID;
    CREATE TABLE blocks (
        user_id TEXT NOT NULL,
        blocked TEXT NOT NULL,
        PRIMARY KEY (user_id, blocked)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat TEXT NOT NULL,
        sender TEXT NOT NULL,
        client_msg_id TEXT,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender, client_msg_id)
        WHERE client_msg_id IS NOT NULL;
    CREATE INDEX messages_chat ON messages (chat, id);
    -- The last seq handed out per inbox: kept apart from `inbox` so that expiring
    -- entries never lets a seq be handed out twice.
    CREATE TABLE inbox_heads (
        user_id TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        skip_device TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX inbox_created ON inbox (created_at);
    CREATE TABLE cursors (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (user_id, device_id)
    ) WITHOUT ROWID;
    -- kind: 0 delivered, 1 read.
    CREATE TABLE watermarks (
        reader TEXT NOT NULL,
        chat TEXT NOT NULL,
        kind INTEGER NOT NULL,
        up_to INTEGER NOT NULL,
        PRIMARY KEY (reader, chat, kind)
    ) WITHOUT ROWID;
    ",
    // 2: fewer pages written per message. Inbox entries move into chunks, many entries of
    // an inbox in one row (`chunk.rs`); messages are keyed by (chat, id), the history
    // order, and the idempotency keys get a table of their own; appends are journaled
    // first and written to those tables grouped (`journal.rs`).
    "
    CREATE TABLE inbox_chunks (
        user_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        entries BLOB NOT NULL,
        PRIMARY KEY (user_id, last_seq)
    ) WITHOUT ROWID;
    INSERT INTO inbox_chunks (user_id, last_seq, first_seq, created_at, entries)
        SELECT user_id, seq, seq, created_at, CAST(
            unhex(printf('%08X', length(envelope))) || envelope ||
            CASE WHEN skip_device IS NULL THEN zeroblob(4)
                 ELSE unhex(printf('%08X', length(CAST(skip_device AS BLOB)) + 1))
                      || CAST(skip_device AS BLOB)
            END AS BLOB)
        FROM inbox;
    DROP TABLE inbox;
    CREATE INDEX inbox_chunks_created ON inbox_chunks (created_at);

    CREATE TABLE chat_messages (
        chat TEXT NOT NULL,
        id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (chat, id)
    ) WITHOUT ROWID;
    INSERT INTO chat_messages (chat, id, sender, body) SELECT chat, id, sender, body FROM messages;
    CREATE TABLE sent_keys (
        sender TEXT NOT NULL,
        client_msg_id TEXT NOT NULL,
        id INTEGER NOT NULL,
        PRIMARY KEY (sender, client_msg_id)
    ) WITHOUT ROWID;
    INSERT INTO sent_keys (sender, client_msg_id, id)
        SELECT sender, client_msg_id, id FROM messages WHERE client_msg_id IS NOT NULL;
    DROP TABLE messages;
    ALTER TABLE chat_messages RENAME TO messages;
    -- What each commit appended, until written to the tables above (`journal.rs`).
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        items BLOB NOT NULL
    );
    -- The highest message id in `messages`: a newer id needs no lookup to be known unused.
    CREATE TABLE store_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO store_state (key, value)
        VALUES ('max_message_id', coalesce((SELECT max(id) FROM messages), 0));
    ",
    // 3: inbox chunks in a rowid table. In a WITHOUT ROWID table the whole row is the key,
    // and a key that overflows its page (a chunk's entries rarely fit in one) is read in
    // full at every comparison of a lookup: each chunk insert read its neighbours' entries.
    "
    CREATE TABLE inbox_chunks_by_rowid (
        user_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        entries BLOB NOT NULL
    );
    INSERT INTO inbox_chunks_by_rowid (user_id, last_seq, first_seq, created_at, entries)
        SELECT user_id, last_seq, first_seq, created_at, entries FROM inbox_chunks;
    DROP TABLE inbox_chunks;
    ALTER TABLE inbox_chunks_by_rowid RENAME TO inbox_chunks;
    CREATE UNIQUE INDEX inbox_chunks_key ON inbox_chunks (user_id, last_seq);
    CREATE INDEX inbox_chunks_created ON inbox_chunks (created_at);
    ",
    // 4: messages in a rowid table too, for the same reason: a body longer than about 450
    // bytes overflowed its page and was read in full at every comparison of an insert.
    // (`seed-bench chat`, 1 KiB messages: 14.0–14.5k → 15.2–15.6k msg/s; 64-byte ones the
    // same.) The rowid follows arrival, so the table is appended to; the index keeps (chat,
    // id) unique and ordered for history.
    "
    CREATE TABLE messages_by_rowid (
        chat TEXT NOT NULL,
        id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        body BLOB NOT NULL
    );
    INSERT INTO messages_by_rowid (chat, id, sender, body)
        SELECT chat, id, sender, body FROM messages ORDER BY id;
    DROP TABLE messages;
    ALTER TABLE messages_by_rowid RENAME TO messages;
    CREATE UNIQUE INDEX messages_key ON messages (chat, id);
    ",
    // 5: messages in chunks (`messages.rs`), like inbox entries: a write-out of a chat's
    // messages costs two B-tree inserts per chunk instead of per message. Each stored
    // message becomes a chunk of its own.
    "
    CREATE TABLE message_chunks (
        chat TEXT NOT NULL,
        last_id INTEGER NOT NULL,
        first_id INTEGER NOT NULL,
        messages BLOB NOT NULL
    );
    INSERT INTO message_chunks (chat, last_id, first_id, messages)
        SELECT chat, id, id, CAST(
            unhex(printf('%016X', id))
            || unhex(printf('%08X', length(CAST(sender AS BLOB)))) || CAST(sender AS BLOB)
            || unhex(printf('%08X', length(CAST(body AS BLOB)))) || CAST(body AS BLOB) AS BLOB)
        FROM messages ORDER BY id;
    DROP TABLE messages;
    CREATE UNIQUE INDEX message_chunks_key ON message_chunks (chat, last_id);
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// WAL frames after which a commit checkpoints itself: only a backstop for the checkpoint
/// thread (`writer.rs`), above the point where the WAL is made to start over.
const WAL_BACKSTOP_PAGES: i64 = 49_152;

/// Zeros written into the WAL file before first use when commits are fsynced (see
/// [`open_wal`]); the WAL is made to start over once half of it is used.
pub const WAL_PREALLOCATED: u64 = 64 * 1024 * 1024;

/// WAL frames after which the writer finishes a checkpoint so the WAL starts over.
pub const WAL_RESTART_FRAMES: i64 = (WAL_PREALLOCATED / 2 / (PAGE_SIZE as u64 + 24)) as i64;

const PAGE_SIZE: i64 = 2048;

/// How long a connection waits for a lock (a checkpoint, another process) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the WAL file for `durable.rs` to fsync, and with `preallocate` gives it zeroed
/// blocks to write its frames into: a commit whose frames land past the end of the file
/// grows it, and the fsync then commits file-system metadata too (~4 ms against ~0.1 ms
/// for blocks the file already has, on this project's test machines). SQLite reads frames
/// only up to the last valid one, so zeros past them are never read. Called while no
/// transaction is open, so nothing writes to the WAL meanwhile. The file and its directory
/// entry are on disk when this returns, with whatever was committed before.
pub fn open_wal(path: &Path, preallocate: bool) -> Result<File, StoreError> {
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let failed = |e: std::io::Error| StoreError::Backend(format!("opening the WAL: {e}"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&wal_path)
        .map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    if preallocate {
        write_zeros(&file, size, WAL_PREALLOCATED).map_err(failed)?;
    }
    file.sync_all().map_err(failed)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
    }
    Ok(file)
}

/// Writes zeros into `file` from byte `from` up to byte `to` (nothing if `from >= to`): the
/// blocks a file is given before use, so that an fsync of what is later written over them
/// commits data only (the WAL here, journal segments in `segments.rs`).
pub fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = zeros.len().min((to - at) as usize);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Opens (creating it if needed) the writer's connection and brings the schema up to date.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
    }
    let mut conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    // Small pages: a commit writes every page it touched in full, and a batch of messages
    // touches a page or two per inbox, so most of a 4 KiB page is rewritten for nothing. In
    // `seed-bench chat`, 2 KiB pages gave about 1.6x the messages a second of 4 KiB pages
    // (1 KiB about the same as 2, 512 B worse: too many splits). Set when the file is created.
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
    // NORMAL: a commit writes its WAL frames and returns; it survives a crash of the
    // process, and with `fsync` on, `durable.rs` puts it on disk before it is answered.
    // (FULL would fsync inside the commit, on the writer thread.) Checkpoints still sync.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Checkpoints run on their own thread (`writer.rs`); SQLite's own, which stalls the
    // commit that triggers it, is only a backstop.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES).map_err(backend)?;
    conn.pragma_update(None, "journal_size_limit", 2 * WAL_PREALLOCATED as i64).map_err(backend)?;
    // Recent appends wait in memory (`unflushed.rs`), so the cache mostly serves the
    // idempotency-key and head lookups; 64 MiB made each commit's walk of it longer, 8 MiB
    // sent those lookups to the file as the tables grew.
    conn.pragma_update(None, "cache_size", -24 * 1024).map_err(backend)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a read-only connection to a database [`open_writer`] has set up.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Applies the steps up to `target`.
fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(backend)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "chat database schema version {version} is newer than this build's \
             ({SCHEMA_VERSION}); refusing to open it"
        )));
    }
    let steps = MIGRATIONS.iter().enumerate().take(target.max(0) as usize);
    for (done, step) in steps.skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(step).map_err(backend)?;
        tx.pragma_update(None, "user_version", done as i64 + 1).map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version = done + 1, "chat database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("chat.db");
        let conn = open_writer(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute("INSERT INTO users VALUES ('a', 'h', 1)", []).unwrap();
        drop(conn);

        // Reopening applies nothing again and keeps the data.
        let conn = open_writer(&path).unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);

        let err = open_writer(&path).unwrap_err();
        assert!(matches!(&err, StoreError::Backend(m) if m.contains("newer")), "{err:?}");
    }

    /// A database file brought up to schema `version` only, for the steps after it.
    fn database_at(version: i64) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate_to(&mut conn, version).unwrap();
        (dir, path, conn)
    }

    /// Step 2 turns one row per inbox entry into chunks, and splits messages from their
    /// idempotency keys, keeping everything readable.
    #[test]
    fn entries_and_messages_survive_the_move_to_chunks() {
        let (_dir, path, conn) = database_at(1);
        conn.execute_batch(
            "INSERT INTO inbox_heads VALUES ('bob', 2);
             INSERT INTO inbox VALUES ('bob', 1, x'0a0b', NULL, 100);
             INSERT INTO inbox VALUES ('bob', 2, x'', 'phone', 200);
             INSERT INTO messages VALUES (7, 'dm:alice:bob', 'alice', 'k', x'01', 100);
             INSERT INTO messages VALUES (8, 'dm:alice:bob', 'alice', NULL, x'02', 200);",
        )
        .unwrap();
        drop(conn);

        let conn = open_writer(&path).unwrap();
        let entries = crate::reads::inbox(&conn, "bob", 0, 10).unwrap();
        let seen: Vec<_> = entries
            .iter()
            .map(|e| (e.seq, &e.envelope[..], e.skip_device.as_deref(), e.created_at))
            .collect();
        assert_eq!(seen, vec![(1, &[0x0a, 0x0b][..], None, 100), (2, &[][..], Some("phone"), 200)]);
        let history = crate::messages::history(&conn, "dm:alice:bob", None, 10).unwrap();
        let ids: Vec<u64> = history.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![8, 7]);
        let key: i64 = conn
            .query_row(
                "SELECT id FROM sent_keys WHERE sender = 'alice' AND client_msg_id = 'k'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key, 7);
    }

    /// Steps 3 and 4 move inbox chunks and messages to rowid tables: both stay readable,
    /// and their keys — a chunk's (user, last seq), a message's (chat, id) — stay unique.
    #[test]
    fn chunks_and_messages_survive_the_move_to_rowid_tables() {
        let (_dir, _path, mut conn) = database_at(2);
        let mut chunk = Vec::new();
        crate::chunk::push(&mut chunk, &[0x0a; 900], None);
        crate::chunk::push(&mut chunk, &[0x0b; 900], Some("phone"));
        let mut small = Vec::new();
        crate::chunk::push(&mut small, &[0x01], None);
        conn.execute(
            "INSERT INTO inbox_chunks VALUES ('bob', 2, 1, 100, ?1), ('carol', 5, 5, 200, ?2)",
            [&chunk, &small],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO messages VALUES ('dm:alice:bob', 9, 'bob', ?1), ('dm:alice:bob', 7, 'alice', x'01'),
                                         ('dm:alice:carol', 8, 'carol', x'02')",
            [&[0x0c; 1500]],
        )
        .unwrap();
        migrate_to(&mut conn, 4).unwrap();

        for name in ["inbox_chunks", "messages"] {
            let table: String = conn
                .query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [name], |r| r.get(0))
                .unwrap();
            assert!(!table.contains("WITHOUT ROWID"), "{table}");
        }
        let entries = crate::reads::inbox(&conn, "bob", 0, 10).unwrap();
        let seen: Vec<_> =
            entries.iter().map(|e| (e.seq, e.envelope.len(), e.skip_device.as_deref())).collect();
        assert_eq!(seen, vec![(1, 900, None), (2, 900, Some("phone"))]);
        assert_eq!(crate::reads::inbox(&conn, "carol", 4, 10).unwrap().len(), 1);
        let again =
            conn.execute("INSERT OR IGNORE INTO inbox_chunks VALUES ('bob', 2, 2, 300, x'')", []);
        assert_eq!(again.unwrap(), 0, "(user, last seq) must stay unique");

        let seen: Vec<(i64, String, i64)> = conn
            .prepare(
                "SELECT id, sender, length(body) FROM messages
                 WHERE chat = 'dm:alice:bob' ORDER BY id DESC",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(seen, vec![(9, "bob".into(), 1500), (7, "alice".into(), 1)]);
        let again = conn
            .execute("INSERT OR IGNORE INTO messages VALUES ('dm:alice:bob', 7, 'bob', x'')", []);
        assert_eq!(again.unwrap(), 0, "(chat, id) must stay unique");
        let other = conn.execute("INSERT INTO messages VALUES ('dm:bob:carol', 7, 'bob', x'')", []);
        assert_eq!(other.unwrap(), 1, "an id is unique per chat only");
    }

    /// Step 5 makes each stored message a chunk of its own, byte for byte.
    #[test]
    fn messages_survive_the_move_to_chunks() {
        let (_dir, path, conn) = database_at(4);
        conn.execute(
            "INSERT INTO messages VALUES ('dm:alice:bob', 9, 'zoë', ?1), ('dm:alice:bob', 7, 'alice', x''),
                                         ('dm:alice:carol', 8, 'carol', x'02')",
            [&[0x0c; 1500]],
        )
        .unwrap();
        drop(conn);

        let conn = open_writer(&path).unwrap();
        let gone: bool = conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'messages')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(gone);
        let history = crate::messages::history(&conn, "dm:alice:bob", None, 10).unwrap();
        let seen: Vec<_> =
            history.iter().map(|m| (m.id, m.sender.as_str(), m.body.len())).collect();
        assert_eq!(seen, vec![(9, "zoë", 1500), (7, "alice", 0)]);
        assert!(history[0].body.iter().all(|&b| b == 0x0c));
        let carol = crate::messages::history(&conn, "dm:alice:carol", None, 10).unwrap();
        assert_eq!((carol[0].id, &carol[0].body[..]), (8, &[2][..]));

        // Writing after the move: a new id between two stored ones, and one stored already.
        crate::messages::write(&conn, "dm:alice:bob", &[(7, "alice", b""), (8, "bob", b"new")])
            .unwrap();
        let ids: Vec<u64> = crate::messages::history(&conn, "dm:alice:bob", None, 10)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![9, 8, 7]);
        assert!(crate::messages::exists(&conn, "dm:alice:bob", 8).unwrap());
    }
}
