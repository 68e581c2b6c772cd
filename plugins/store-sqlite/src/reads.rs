//! Reads: a small pool of read-only connections, used on tokio's blocking threads.
//!
//! In WAL mode readers do not wait for the writer, nor it for them, so reads never queue
//! behind a group commit. Each read takes an idle connection (opening one if none is idle),
//! runs on a blocking thread, and gives the connection back; a few are kept idle, each with
//! its own cache of prepared statements. A read starts its own transaction, so it sees every
//! write that was answered before it began.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rusqlite::Error::FromSqlConversionFailure;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};
use seed_chat_core::{InboxEntry, StoreError, UserRecord, Watermark};

use crate::{backend, chunk, int, schema, uint, watermark_kind};

/// How many idle read connections are kept.
const IDLE_READERS: usize = 2;

/// The read-only connections of one database.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Arc<Readers> {
        Arc::new(Readers { path, idle: Mutex::new(Vec::new()) })
    }

    /// Runs `read` on a pooled connection, on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = read(&conn).map_err(backend);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    fn take(&self) -> Result<Connection, StoreError> {
        // Nothing panics while the lock is held; a poisoned pool still holds good connections.
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => schema::open_reader(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

pub fn user(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<UserRecord>> {
    conn.prepare_cached("SELECT password_hash, created_at FROM users WHERE user_id = ?1")?
        .query_row([user_id], |r| {
            Ok(UserRecord {
                user_id: user_id.into(),
                password_hash: r.get(0)?,
                created_at: uint(r, 1)?,
            })
        })
        .optional()
}

pub fn device_revoked_at(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT revoked_at FROM revoked_devices WHERE user_id = ?1 AND device_id = ?2",
    )?
    .query_row([user_id, device_id], |r| uint(r, 0))
    .optional()
}

pub fn is_blocked(conn: &Connection, user: &str, by: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked = ?2)")?
        .query_row([by, user], |r| r.get(0))
}

pub fn blocked_by(conn: &Connection, user: &str) -> rusqlite::Result<Vec<String>> {
    // Sorted by the primary key's (binary) collation, the order `str` sorts in.
    conn.prepare_cached("SELECT blocked FROM blocks WHERE user_id = ?1 ORDER BY blocked")?
        .query_map([user], |r| r.get(0))?
        .collect()
}

pub fn inbox(
    conn: &Connection,
    user_id: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<InboxEntry>> {
    let mut statement = conn.prepare_cached(
        "SELECT first_seq, created_at, entries FROM inbox_chunks
         WHERE user_id = ?1 AND last_seq > ?2 ORDER BY last_seq",
    )?;
    let mut rows = statement.query(params![user_id, int(after)])?;
    let mut entries = Vec::new();
    while entries.len() < limit
        && let Some(row) = rows.next()?
    {
        let chunk = Bytes::from(row.get::<_, Vec<u8>>(2)?);
        chunk::read(chunk, uint(row, 0)?, uint(row, 1)?, after, limit, &mut entries)
            .map_err(|e| FromSqlConversionFailure(2, Type::Blob, Box::new(e)))?;
    }
    Ok(entries)
}

pub fn last_seq(conn: &Connection, user_id: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT last_seq FROM inbox_heads WHERE user_id = ?1")?
        .query_row([user_id], |r| uint(r, 0))
        .optional()
        .map(Option::unwrap_or_default)
}

pub fn cursor(conn: &Connection, user_id: &str, device_id: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT seq FROM cursors WHERE user_id = ?1 AND device_id = ?2")?
        .query_row([user_id, device_id], |r| uint(r, 0))
        .optional()
        .map(Option::unwrap_or_default)
}

pub fn watermark(
    conn: &Connection,
    kind: Watermark,
    reader: &str,
    chat: &str,
) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT up_to FROM watermarks WHERE reader = ?1 AND chat = ?2 AND kind = ?3",
    )?
    .query_row(params![reader, chat, watermark_kind(kind)], |r| uint(r, 0))
    .optional()
    .map(Option::unwrap_or_default)
}
