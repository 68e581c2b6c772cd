//! The writer thread: the only connection that writes, committing in groups.
//!
//! Every write call becomes a [`Write`] sent to this thread with a oneshot for its answer.
//! The thread takes whatever has queued up, applies it all in one transaction and commits
//! once (group commit): the commit, and with `fsync` on its fsync, is paid once per batch
//! rather than once per call, which is what lets a single SQLite file take tens of
//! thousands of messages a second. Answers go out only after the commit returns, so an
//! answered write is durable.
//!
//! Each call runs inside its own SAVEPOINT: a call that fails is rolled back alone and gets
//! its error, while the rest of its batch still commits. Seqs are assigned here, inside the
//! transaction (`inbox_heads`), so a rolled-back call never burns a seq and concurrent
//! callers can never get the same one.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use seed_chat_core::{Appended, NewEntry, NewMessage, RefreshToken, StoreError, now_millis};
use tokio::sync::oneshot;

use crate::{backend, int, uint, watermark_kind};

/// The most calls one transaction takes; more wait for the next one, so a burst cannot
/// hold every answer back behind one huge commit.
const MAX_BATCH: usize = 4096;

/// One write call.
#[derive(Debug)]
pub enum Write {
    CreateUser { user_id: String, password_hash: String },
    PutRefreshToken(RefreshToken),
    TakeRefreshToken([u8; 32]),
    RevokeDevice { user_id: String, device_id: String, at: u64 },
    SetBlocked { user: String, blocked: String, on: bool },
    AppendMessage(NewMessage),
    AppendEntries(Vec<NewEntry>),
    SetCursor { user_id: String, device_id: String, seq: u64 },
    AdvanceWatermark { kind: seed_chat_core::Watermark, reader: String, chat: String, up_to: u64 },
    ExpireEntries { before: u64 },
}

impl Write {
    /// Whether the write is a single SQL statement (which SQLite applies all or nothing).
    fn is_one_statement(&self) -> bool {
        matches!(
            self,
            Write::CreateUser { .. }
                | Write::PutRefreshToken(_)
                | Write::TakeRefreshToken(_)
                | Write::SetBlocked { .. }
                | Write::SetCursor { .. }
                | Write::AdvanceWatermark { .. }
                | Write::ExpireEntries { .. }
        )
    }
}

/// What a write call answers.
#[derive(Debug)]
pub enum Reply {
    Done,
    Token(Option<RefreshToken>),
    Appended(Appended),
    Seqs(Vec<u64>),
    Moved(bool),
    Count(u64),
}

/// A write and where its answer goes.
pub struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// How often the checkpoint thread copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The writer's loop: runs until every sender is gone, then finishes what is queued.
pub fn run(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::new();
    let mut results = Vec::new();
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &batch, &mut results);
        for (job, result) in batch.drain(..).zip(results.drain(..)) {
            // The caller may have gone away (its future was dropped); the write stands.
            let _ = job.reply.send(result);
        }
    }
}

/// The checkpoint thread: copies committed pages from the WAL into the database file a few
/// times a second, on its own connection. In WAL mode that runs beside the writer instead of
/// inside it, so no caller waits behind a checkpoint (done by the writer, one took 100+ ms
/// and showed as the commit latency's tail). The writer's `wal_autocheckpoint` stays as a
/// backstop should this thread fall behind. Stops when the store is dropped.
pub fn checkpoints(conn: Connection, store_gone: mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = store_gone.recv_timeout(CHECKPOINT_EVERY) {
        checkpoint(&conn);
    }
}

/// Applies `batch` in one transaction, leaving one result per job in `results`.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Job],
    results: &mut Vec<Result<Reply, StoreError>>,
) {
    if let Err(e) = run_sql(conn, "BEGIN IMMEDIATE") {
        results.extend(batch.iter().map(|_| Err(e.clone())));
        return;
    }
    let now = now_millis();
    for job in batch {
        results.push(apply_in_savepoint(conn, &job.write, now));
    }
    if let Err(e) = run_sql(conn, "COMMIT") {
        tracing::error!(error = %e, calls = batch.len(), "chat store commit failed");
        // Nothing of the batch is kept: every call, even one that went well, fails.
        let _ = run_sql(conn, "ROLLBACK");
        for result in results.iter_mut() {
            *result = Err(e.clone());
        }
    }
}

/// Copies committed pages from the WAL into the database file, without waiting for readers.
fn checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    if let Err(e) = result {
        tracing::warn!(error = %e, "chat store checkpoint failed");
    }
}

fn run_sql(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(backend)
}

fn apply_in_savepoint(conn: &Connection, write: &Write, now: u64) -> Result<Reply, StoreError> {
    if write.is_one_statement() {
        // A failing statement undoes itself: no savepoint needed (two statements saved on
        // the most frequent writes, cursors and watermarks).
        return apply(conn, write, now);
    }
    run_sql(conn, "SAVEPOINT call")?;
    let result = apply(conn, write, now);
    if result.is_err() {
        run_sql(conn, "ROLLBACK TO call")?;
    }
    run_sql(conn, "RELEASE call")?;
    result
}

fn apply(conn: &Connection, write: &Write, now: u64) -> Result<Reply, StoreError> {
    match write {
        Write::CreateUser { user_id, password_hash } => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO users (user_id, password_hash, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![user_id, password_hash, int(now)]))
                .map_err(backend)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("user {user_id}")));
            }
            Ok(Reply::Done)
        }
        Write::PutRefreshToken(token) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO refresh_tokens (token_hash, user_id, device_id, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &token.token_hash[..],
                    token.user_id,
                    token.device_id,
                    int(token.expires_at)
                ])
            })
            .map_err(backend)?;
            Ok(Reply::Done)
        }
        Write::TakeRefreshToken(hash) => {
            let row = conn
                .prepare_cached(
                    "DELETE FROM refresh_tokens WHERE token_hash = ?1
                     RETURNING user_id, device_id, expires_at",
                )
                .and_then(|mut s| {
                    s.query_row([&hash[..]], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, uint(r, 2)?))
                    })
                    .optional()
                })
                .map_err(backend)?;
            Ok(Reply::Token(row.map(|(user_id, device_id, expires_at)| RefreshToken {
                token_hash: *hash,
                user_id,
                device_id,
                expires_at,
            })))
        }
        Write::RevokeDevice { user_id, device_id, at } => {
            conn.prepare_cached("DELETE FROM refresh_tokens WHERE user_id = ?1 AND device_id = ?2")
                .and_then(|mut s| s.execute(params![user_id, device_id]))
                .map_err(backend)?;
            conn.prepare_cached(
                "INSERT INTO revoked_devices (user_id, device_id, revoked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, device_id)
                 DO UPDATE SET revoked_at = max(revoked_at, excluded.revoked_at)",
            )
            .and_then(|mut s| s.execute(params![user_id, device_id, int(*at)]))
            .map_err(backend)?;
            Ok(Reply::Done)
        }
        Write::SetBlocked { user, blocked, on } => {
            let sql = if *on {
                "INSERT OR IGNORE INTO blocks (user_id, blocked) VALUES (?1, ?2)"
            } else {
                "DELETE FROM blocks WHERE user_id = ?1 AND blocked = ?2"
            };
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![user, blocked]))
                .map_err(backend)?;
            Ok(Reply::Done)
        }
        Write::AppendMessage(message) => append_message(conn, message, now).map(Reply::Appended),
        Write::AppendEntries(entries) => {
            let seqs =
                entries.iter().map(|e| append_entry(conn, e, now)).collect::<Result<_, _>>()?;
            Ok(Reply::Seqs(seqs))
        }
        Write::SetCursor { user_id, device_id, seq } => {
            conn.prepare_cached(
                "INSERT INTO cursors (user_id, device_id, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET seq = excluded.seq
                 WHERE excluded.seq > cursors.seq",
            )
            .and_then(|mut s| s.execute(params![user_id, device_id, int(*seq)]))
            .map_err(backend)?;
            Ok(Reply::Done)
        }
        Write::AdvanceWatermark { kind, reader, chat, up_to } => {
            if *up_to == 0 {
                return Ok(Reply::Moved(false));
            }
            let changed = conn
                .prepare_cached(
                    "INSERT INTO watermarks (reader, chat, kind, up_to) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (reader, chat, kind) DO UPDATE SET up_to = excluded.up_to
                     WHERE excluded.up_to > watermarks.up_to",
                )
                .and_then(|mut s| {
                    s.execute(params![reader, chat, watermark_kind(*kind), int(*up_to)])
                })
                .map_err(backend)?;
            Ok(Reply::Moved(changed > 0))
        }
        Write::ExpireEntries { before } => {
            let deleted = conn
                .prepare_cached("DELETE FROM inbox WHERE created_at < ?1")
                .and_then(|mut s| s.execute([int(*before)]))
                .map_err(backend)?;
            Ok(Reply::Count(deleted as u64))
        }
    }
}

fn append_message(
    conn: &Connection,
    message: &NewMessage,
    now: u64,
) -> Result<Appended, StoreError> {
    let id = i64::try_from(message.id)
        .map_err(|_| StoreError::Backend(format!("message id {} is above 2^63", message.id)))?;
    // Insert first and look only on a conflict: the common case is one statement.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO messages (id, chat, sender, client_msg_id, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                message.chat,
                message.sender,
                message.client_msg_id,
                &message.body[..],
                int(now)
            ])
        })
        .map_err(backend)?;
    if inserted == 0 {
        let first = match &message.client_msg_id {
            Some(key) => conn
                .prepare_cached("SELECT id FROM messages WHERE sender = ?1 AND client_msg_id = ?2")
                .and_then(|mut s| {
                    s.query_row(params![message.sender, key], |r| uint(r, 0)).optional()
                })
                .map_err(backend)?,
            None => None,
        };
        return match first {
            Some(id) => Ok(Appended::Duplicate { id }),
            None => Err(StoreError::Conflict(format!("message id {}", message.id))),
        };
    }
    let seqs =
        message.entries.iter().map(|e| append_entry(conn, e, now)).collect::<Result<_, _>>()?;
    Ok(Appended::New { seqs })
}

/// Takes the next seq of the entry's inbox and stores the entry under it.
fn append_entry(conn: &Connection, entry: &NewEntry, now: u64) -> Result<u64, StoreError> {
    let seq: u64 = conn
        .prepare_cached(
            "INSERT INTO inbox_heads (user_id, last_seq) VALUES (?1, 1)
             ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + 1
             RETURNING last_seq",
        )
        .and_then(|mut s| s.query_row([&entry.user_id], |r| uint(r, 0)))
        .map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO inbox (user_id, seq, envelope, skip_device, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            entry.user_id,
            int(seq),
            &entry.envelope[..],
            entry.skip_device,
            int(now)
        ])
    })
    .map_err(backend)?;
    Ok(seq)
}
