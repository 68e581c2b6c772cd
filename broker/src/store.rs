//! The embedded store: retained messages and persistent sessions (subscriptions and queued
//! QoS 1/2 messages) in SQLite, so they outlive the process.
//!
//! One writer thread owns the database and applies writes in arrival order. Whatever has
//! queued up while it was committing goes into the next transaction (group commit), so the
//! cost of a commit, and of its fsync, is shared by every message that waited for it. A caller
//! that must not acknowledge before the data is safe (a QoS 1 PUBACK) awaits
//! [`Store::commit`]; bookkeeping that may be replayed after a crash (an acknowledged message
//! leaving a queue) uses [`Store::submit`] and does not wait.
//!
//! A message routed to many persistent sessions is stored once (`messages`) and referenced
//! from each session's queue (`queue`); it is deleted with its last reference.

use std::path::Path;
use std::sync::Arc;
use std::thread;

use bytes::BytesMut;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, Packet, Protocol, Publish, QoS, RetainHandling, SubscriptionOptions};
use crate::message::Message;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(String),
    #[error("store: the writer has stopped")]
    Closed,
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// One change to the stored state.
#[derive(Debug, Clone)]
pub enum Write {
    PutRetained {
        message: Arc<Message>,
    },
    DeleteRetained {
        topic: Arc<str>,
    },
    PutSession {
        client_id: Arc<str>,
        expiry: u32,
    },
    /// The client went away at this time (unix ms); the expiry clock runs from here, with
    /// the expiry the client last asked for (DISCONNECT may change it).
    SessionDisconnected {
        client_id: Arc<str>,
        at: u64,
        expiry: u32,
    },
    DeleteSession {
        client_id: Arc<str>,
    },
    PutSubscription {
        client_id: Arc<str>,
        filter: String,
        options: SubscriptionOptions,
        id: Option<u32>,
    },
    DeleteSubscription {
        client_id: Arc<str>,
        filter: String,
    },
    PutMessage {
        id: u64,
        message: Arc<Message>,
    },
    Enqueue {
        client_id: Arc<str>,
        seq: u64,
        message_id: u64,
        qos: QoS,
        /// The RETAIN flag this subscriber gets (retain-as-published).
        retain: bool,
        sub_ids: Vec<u32>,
    },
    /// The QoS 2 message was PUBRECed: only its PUBREL is owed now.
    Released {
        client_id: Arc<str>,
        seq: u64,
    },
    Dequeue {
        client_id: Arc<str>,
        seq: u64,
        message_id: u64,
    },
}

/// A queued message of a stored session.
#[derive(Debug, Clone)]
pub struct StoredQueued {
    pub seq: u64,
    pub message_id: u64,
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub released: bool,
}

#[derive(Debug, Clone)]
pub struct StoredSubscription {
    pub filter: String,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct StoredSession {
    pub client_id: Arc<str>,
    pub expiry: u32,
    pub disconnected_at: Option<u64>,
    pub subscriptions: Vec<StoredSubscription>,
    pub queue: Vec<StoredQueued>,
}

/// Everything the store held at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub retained: Vec<Message>,
    pub sessions: Vec<StoredSession>,
    /// The next free id of the `messages` table.
    pub next_message_id: u64,
}

struct Batch {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    batches: mpsc::UnboundedSender<Batch>,
}

/// Schema steps, applied in order; `user_version` counts those already applied. A step is
/// never edited once released: changes are new steps.
const MIGRATIONS: &[&str] =
    &[SCHEMA_V1, "ALTER TABLE queue ADD COLUMN retain INTEGER NOT NULL DEFAULT 0;"];

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY,
    message BLOB NOT NULL,
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY,
    expiry INTEGER NOT NULL,
    disconnected_at INTEGER
);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    options INTEGER NOT NULL,
    id INTEGER,
    PRIMARY KEY (client_id, filter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    message BLOB NOT NULL,
    expires_at INTEGER,
    publisher TEXT
);
CREATE TABLE IF NOT EXISTS queue (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    sub_ids TEXT NOT NULL DEFAULT '',
    released INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_message ON queue (message_id);
";

impl Store {
    /// Opens (or creates) `broker.db` in `dir`, loads what it holds, and starts the writer.
    pub fn open(dir: &Path, fsync: bool) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Sqlite(format!("{}: {e}", dir.display())))?;
        let mut conn = Connection::open(dir.join("broker.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        migrate(&mut conn)?;
        let loaded = load(&conn)?;
        let (batches, rx) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name("seed-store".into())
            .spawn(move || {
                crate::sched::prefer_short_slices();
                writer(conn, rx)
            })
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        Ok((Store { batches }, loaded))
    }

    /// Queues writes without waiting for them.
    pub fn submit(&self, writes: Vec<Write>) {
        if !writes.is_empty() {
            let _ = self.batches.send(Batch { writes, done: None });
        }
    }

    /// Queues writes and resolves once they are committed (and on disk, with fsync on).
    pub fn commit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, rx) = oneshot::channel();
        if self.batches.send(Batch { writes, done: Some(done) }).is_err() {
            let (done, rx) = oneshot::channel();
            let _ = done.send(Err(StoreError::Closed));
            return rx;
        }
        rx
    }

    /// Resolves once everything submitted before it is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await.map_err(|_| StoreError::Closed)?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema {version} is newer than this build ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn writer(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Batch>) {
    const MAX_BATCHES: usize = 4096;
    while let Some(first) = rx.blocking_recv() {
        let mut batches = vec![first];
        while batches.len() < MAX_BATCHES {
            match rx.try_recv() {
                Ok(batch) => batches.push(batch),
                Err(_) => break,
            }
        }
        let result = apply(&mut conn, &batches);
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed");
        }
        for batch in batches {
            if let Some(done) = batch.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn apply(conn: &mut Connection, batches: &[Batch]) -> Result<(), StoreError> {
    if batches.iter().all(|b| b.writes.is_empty()) {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for write in batches.iter().flat_map(|b| &b.writes) {
        apply_one(&tx, write)?;
    }
    tx.commit()?;
    Ok(())
}

fn apply_one(tx: &rusqlite::Transaction<'_>, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::PutRetained { message } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO retained (topic, message, expires_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![&*message.topic, encode_message(message), message.expires_at.map(sql_int)])?;
        }
        Write::DeleteRetained { topic } => {
            tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?.execute([&**topic])?;
        }
        Write::PutSession { client_id, expiry } => {
            tx.prepare_cached(
                "INSERT INTO sessions (client_id, expiry, disconnected_at) VALUES (?1, ?2, NULL)
                 ON CONFLICT (client_id) DO UPDATE SET expiry = ?2, disconnected_at = NULL",
            )?
            .execute(params![&**client_id, expiry])?;
        }
        Write::SessionDisconnected { client_id, at, expiry } => {
            tx.prepare_cached(
                "UPDATE sessions SET disconnected_at = ?2, expiry = ?3 WHERE client_id = ?1",
            )?
            .execute(params![&**client_id, sql_int(*at), expiry])?;
        }
        Write::DeleteSession { client_id } => {
            for sql in [
                "DELETE FROM messages WHERE id IN (SELECT message_id FROM queue WHERE client_id = ?1)
                 AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = messages.id AND q.client_id != ?1)",
                "DELETE FROM queue WHERE client_id = ?1",
                "DELETE FROM subscriptions WHERE client_id = ?1",
                "DELETE FROM sessions WHERE client_id = ?1",
            ] {
                tx.prepare_cached(sql)?.execute([&**client_id])?;
            }
        }
        Write::PutSubscription { client_id, filter, options, id } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO subscriptions (client_id, filter, options, id) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&**client_id, filter, options_byte(options), id])?;
        }
        Write::DeleteSubscription { client_id, filter } => {
            tx.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")?
                .execute(params![&**client_id, filter])?;
        }
        Write::PutMessage { id, message } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO messages (id, message, expires_at, publisher) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                sql_int(*id),
                encode_message(message),
                message.expires_at.map(sql_int),
                message.publisher.as_deref()
            ])?;
        }
        Write::Enqueue { client_id, seq, message_id, qos, retain, sub_ids } => {
            let ids: Vec<String> = sub_ids.iter().map(u32::to_string).collect();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO queue (client_id, seq, message_id, qos, retain, sub_ids)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &**client_id,
                sql_int(*seq),
                sql_int(*message_id),
                *qos as u8,
                retain,
                ids.join(",")
            ])?;
        }
        Write::Released { client_id, seq } => {
            tx.prepare_cached("UPDATE queue SET released = 1 WHERE client_id = ?1 AND seq = ?2")?
                .execute(params![&**client_id, sql_int(*seq)])?;
        }
        Write::Dequeue { client_id, seq, message_id } => {
            tx.prepare_cached("DELETE FROM queue WHERE client_id = ?1 AND seq = ?2")?
                .execute(params![&**client_id, sql_int(*seq)])?;
            tx.prepare_cached(
                "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?1)",
            )?
            .execute([sql_int(*message_id)])?;
        }
    }
    Ok(())
}

fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    let mut stmt = conn.prepare("SELECT message, expires_at FROM retained")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Option<i64>>(1)?.map(|v| v as u64)))
    })?;
    for row in rows {
        let (blob, expires_at) = row?;
        loaded.retained.push(decode_message(&blob, expires_at, None)?);
    }

    let mut stmt = conn.prepare("SELECT client_id, expiry, disconnected_at FROM sessions")?;
    let rows = stmt.query_map([], |row| {
        Ok(StoredSession {
            client_id: row.get::<_, String>(0)?.into(),
            expiry: row.get(1)?,
            disconnected_at: row.get::<_, Option<i64>>(2)?.map(|v| v as u64),
            subscriptions: Vec::new(),
            queue: Vec::new(),
        })
    })?;
    for row in rows {
        loaded.sessions.push(row?);
    }

    let mut subs =
        conn.prepare("SELECT filter, options, id FROM subscriptions WHERE client_id = ?1")?;
    let mut queue = conn.prepare(
        "SELECT q.seq, q.message_id, q.qos, q.sub_ids, q.released, m.message, m.expires_at, m.publisher, q.retain
         FROM queue q JOIN messages m ON m.id = q.message_id WHERE q.client_id = ?1 ORDER BY q.seq",
    )?;
    for session in &mut loaded.sessions {
        let rows = subs.query_map([&*session.client_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u8>(1)?, row.get::<_, Option<u32>>(2)?))
        })?;
        for row in rows {
            let (filter, options, id) = row?;
            session.subscriptions.push(StoredSubscription {
                filter,
                options: options_of(options),
                id,
            });
        }
        let rows = queue.query_map([&*session.client_id], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, u8>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, bool>(4)?,
                row.get::<_, Vec<u8>>(5)?,
                row.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                row.get::<_, Option<String>>(7)?,
                row.get::<_, bool>(8)?,
            ))
        })?;
        for row in rows {
            let (seq, message_id, qos, sub_ids, released, blob, expires_at, publisher, retain) =
                row?;
            let message = decode_message(&blob, expires_at, publisher)?;
            session.queue.push(StoredQueued {
                seq,
                message_id,
                message: Arc::new(message),
                qos: QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce),
                retain,
                sub_ids: sub_ids.split(',').filter_map(|s| s.parse().ok()).collect(),
                released,
            });
        }
    }
    let max_id: Option<i64> =
        conn.query_row("SELECT MAX(id) FROM messages", [], |row| row.get(0)).optional()?.flatten();
    loaded.next_message_id = max_id.map_or(1, |id| id as u64 + 1);
    Ok(loaded)
}

/// SQLite integers are signed 64-bit; ours (ids, sequence numbers, unix ms) stay far below.
fn sql_int(v: u64) -> i64 {
    v as i64
}

/// A message is stored as the MQTT 5 PUBLISH that carries it: one format, already fuzzed.
fn encode_message(message: &Message) -> Vec<u8> {
    let publish = Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.to_string(),
        packet_id: if message.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties: message.properties.clone(),
        payload: message.payload.clone(),
    };
    let mut buf = BytesMut::new();
    // Topics and properties were validated on the way in, so encoding cannot fail.
    let _ = codec::encode(&Packet::Publish(publish), Protocol::V5, &mut buf);
    buf.to_vec()
}

fn decode_message(
    blob: &[u8],
    expires_at: Option<u64>,
    publisher: Option<String>,
) -> Result<Message, StoreError> {
    let mut buf = BytesMut::from(blob);
    match codec::decode(&mut buf, Protocol::V5, usize::MAX) {
        Ok(Some(Packet::Publish(publish))) => {
            let mut message = Message::from_publish(publish, publisher.map(Into::into));
            message.expires_at = expires_at;
            Ok(message)
        }
        other => Err(StoreError::Corrupt(format!("stored message does not decode: {other:?}"))),
    }
}

/// Subscription options packed as in the SUBSCRIBE options byte.
fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

fn options_of(byte: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(byte & 0b11).unwrap_or(QoS::AtMostOnce),
        no_local: byte & 0b100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling: match (byte >> 4) & 0b11 {
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => RetainHandling::OnSubscribe,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: Some("pub".into()),
        })
    }

    #[tokio::test]
    async fn sessions_and_retained_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let client: Arc<str> = "c1".into();
        {
            let (store, loaded) = Store::open(dir.path(), false).unwrap();
            assert!(loaded.sessions.is_empty());
            let m = message("a/b", b"hello");
            store
                .commit(vec![
                    Write::PutRetained { message: message("r/1", b"kept") },
                    Write::PutSession { client_id: client.clone(), expiry: 60 },
                    Write::PutSubscription {
                        client_id: client.clone(),
                        filter: "a/+".into(),
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            no_local: true,
                            ..Default::default()
                        },
                        id: Some(7),
                    },
                    Write::PutMessage { id: 1, message: m.clone() },
                    Write::Enqueue {
                        client_id: client.clone(),
                        seq: 1,
                        message_id: 1,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        sub_ids: vec![7],
                    },
                    Write::PutMessage { id: 2, message: message("a/c", b"second") },
                    Write::Enqueue {
                        client_id: client.clone(),
                        seq: 2,
                        message_id: 2,
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        sub_ids: vec![],
                    },
                ])
                .await
                .unwrap()
                .unwrap();
            store.submit(vec![Write::Dequeue { client_id: client.clone(), seq: 1, message_id: 1 }]);
            store.flush().await.unwrap();
        }
        let (_store, loaded) = Store::open(dir.path(), false).unwrap();
        assert_eq!(loaded.retained.len(), 1);
        assert_eq!(&*loaded.retained[0].topic, "r/1");
        assert_eq!(loaded.retained[0].payload, Bytes::from_static(b"kept"));
        let session = &loaded.sessions[0];
        assert_eq!(session.expiry, 60);
        assert_eq!(session.subscriptions[0].filter, "a/+");
        assert!(session.subscriptions[0].options.no_local);
        assert_eq!(session.subscriptions[0].id, Some(7));
        assert_eq!(session.queue.len(), 1, "the dequeued message is gone");
        assert_eq!(session.queue[0].seq, 2);
        assert!(session.queue[0].retain, "retain-as-published survives a restart");
        assert_eq!(session.queue[0].message.payload, Bytes::from_static(b"second"));
        assert_eq!(loaded.next_message_id, 3);
    }

    #[tokio::test]
    async fn deleting_a_session_deletes_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), true).unwrap();
        let client: Arc<str> = "c".into();
        store.submit(vec![
            Write::PutSession { client_id: client.clone(), expiry: 10 },
            Write::PutMessage { id: 1, message: message("t", b"x") },
            Write::Enqueue {
                client_id: client.clone(),
                seq: 1,
                message_id: 1,
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: vec![],
            },
            Write::DeleteSession { client_id: client },
        ]);
        store.flush().await.unwrap();
        drop(store);
        let (_, loaded) = Store::open(dir.path(), true).unwrap();
        assert!(loaded.sessions.is_empty());
        assert_eq!(loaded.next_message_id, 1);
    }

    #[test]
    fn options_round_trip() {
        for byte in 0..0b11_1111u8 {
            if byte & 0b11 == 3 || (byte >> 4) == 3 {
                continue;
            }
            assert_eq!(options_byte(&options_of(byte)), byte);
        }
    }
}
