//! The writer thread: the only connection that writes, committing in groups.
//!
//! Every write call becomes a [`Write`] sent to this thread with a oneshot for its answer.
//! The thread takes whatever has queued up, applies it all in one transaction and commits
//! once (group commit): the commit is paid once per batch rather than once per call, which
//! is what lets a single SQLite file take tens of thousands of messages a second. Answers
//! go out after the commit returns, with the commit's number: the write is applied, and
//! with `fsync` on it is durable once `durable.rs` has synced that commit, which the
//! caller waits for (the next batch is meanwhile applied).
//!
//! Appends (messages, inbox entries, cursors) are gathered while the batch is applied and
//! written as one journal record at its end (`appends.rs`, `journal.rs`, `segments.rs`);
//! then they wait in memory (`unflushed.rs`) until a later transaction writes them to
//! their own tables. Only the other calls (accounts, blocks, watermarks, expiry) open a
//! SQLite transaction, so a batch of appends alone costs one `pwrite`. A call that fails
//! is undone alone and gets its error, while the rest of its batch still commits: appends
//! change nothing until the end, the account writes are single statements, and the one
//! write of several statements runs in a SAVEPOINT. Seqs are assigned here, so a failed
//! call never burns a seq and concurrent callers can never get the same one.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use seed_chat_core::{Appended, NewEntry, NewMessage, RefreshToken, StoreError, now_millis};
use tokio::sync::oneshot;

use crate::appends::Appends;
use crate::durable::{Dirty, Syncer, UNSYNCED_ENTRIES};
use crate::segments::{self, Segments};
use crate::unflushed::{self, Idle, Slice, Unflushed, Waiting};
use crate::{backend, int, journal, schema, uint, watermark_kind};

/// The most calls one transaction takes; more wait for the next one, so a burst cannot
/// hold every answer back behind one huge commit.
const MAX_BATCH: usize = 4096;

/// One write call.
#[derive(Debug)]
pub enum Write {
    CreateUser {
        user_id: String,
        password_hash: String,
    },
    PutRefreshToken(RefreshToken),
    TakeRefreshToken([u8; 32]),
    RevokeDevice {
        user_id: String,
        device_id: String,
        at: u64,
    },
    SetBlocked {
        user: String,
        blocked: String,
        on: bool,
    },
    AppendMessage(NewMessage),
    AppendEntries(Vec<NewEntry>),
    SetCursor {
        user_id: String,
        device_id: String,
        seq: u64,
    },
    /// A watermark, and the entries appended if it moves.
    AdvanceWatermark {
        kind: seed_chat_core::Watermark,
        reader: String,
        chat: String,
        up_to: u64,
        entries: Vec<NewEntry>,
    },
    ExpireEntries {
        before: u64,
    },
}

impl Write {
    /// Whether the write changes the database with more than one statement (and so needs a
    /// savepoint to be undone alone).
    fn needs_savepoint(&self) -> bool {
        match self {
            Write::RevokeDevice { .. } => true,
            Write::AdvanceWatermark { entries, .. } => !entries.is_empty(),
            _ => false,
        }
    }

    /// Whether the write only appends (to the journal, not to SQLite).
    fn is_append(&self) -> bool {
        matches!(self, Write::AppendMessage(_) | Write::AppendEntries(_) | Write::SetCursor { .. })
    }
}

/// What a write call answers.
#[derive(Debug)]
pub enum Reply {
    Done,
    Token(Option<RefreshToken>),
    Appended(Appended),
    Seqs(Vec<u64>),
    /// A watermark: the seqs of the entries appended if it moved, None if it did not.
    Advanced(Option<Vec<u64>>),
    Count(u64),
}

/// What a write call gets back: its reply and the number of the commit that applied it.
pub type Answer = Result<(Reply, u64), StoreError>;

/// A write and where its answer goes.
pub struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Answer>,
    /// The caller waits for the write to be on disk: its commit is synced at once, not
    /// within `durable::LAZY_SYNC`.
    pub waited_for: bool,
}

/// How often the checkpoint thread copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// What the writer writes to besides its jobs' channel.
pub struct Files {
    pub conn: Connection,
    pub journal: Segments,
    /// With `fsync` on: the WAL, synced before journal segments are removed.
    pub wal: Option<std::sync::Arc<File>>,
}

/// The writer's loop: runs until every sender is gone, then finishes what is queued.
/// `finish_checkpoint` is raised by the checkpoint thread when the writer outran it;
/// `syncer` (with `fsync` on) is told of every commit.
pub fn run(
    files: Files,
    jobs: mpsc::Receiver<Job>,
    waiting: &Waiting,
    finish_checkpoint: &AtomicBool,
    syncer: Option<&Syncer>,
) {
    let Files { mut conn, mut journal, wal } = files;
    let mut batch = Vec::new();
    let mut results = Vec::new();
    let mut commits = 0;
    let mut unsynced = Unsynced::default();
    while let Some(first) = next_job(&mut conn, &mut journal, wal.as_deref(), &jobs, waiting) {
        if finish_checkpoint.swap(false, Ordering::Relaxed) {
            checkpoint(&conn);
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Some(error) = syncer.and_then(Syncer::failed) {
            results.extend(batch.iter().map(|_| Err(error.clone())));
        } else if let Some(committed) =
            commit_batch(&mut conn, &mut journal, &batch, waiting, &mut results)
        {
            commits += 1;
            if let Some(syncer) = syncer {
                syncer.written(commits, committed.dirty, committed.waited_for);
                unsynced.add(syncer, commits, committed.entries);
            }
        }
        retire(&mut journal, waiting, wal.as_deref());
        for (job, result) in batch.drain(..).zip(results.drain(..)) {
            // The caller may have gone away (its future was dropped); the write stands.
            let _ = job.reply.send(result.map(|reply| (reply, commits)));
        }
    }
    if let Some(syncer) = syncer {
        syncer.close();
    }
}

/// The next call, or None once every sender is gone. While none waits, writes out what
/// has waited long enough in memory, a slice per transaction (`unflushed.rs`).
fn next_job(
    conn: &mut Connection,
    journal: &mut Segments,
    wal: Option<&File>,
    jobs: &mpsc::Receiver<Job>,
    waiting: &Waiting,
) -> Option<Job> {
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        let idle = unflushed::read(waiting).idle(now_millis());
        let job = match idle {
            Idle::WriteOut(slice) => {
                let started = Instant::now();
                write_out(conn, waiting, slice);
                retire(journal, waiting, wal);
                // A breather as long as the slice took: the threads that make the calls may
                // share this one's core, and a second's worth of groups comes due at once.
                jobs.recv_timeout(started.elapsed())
            }
            Idle::Until(due) => jobs.recv_timeout(due),
            Idle::Nothing => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match job {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Writes one slice of waiting items out to its table, in a transaction of its own.
fn write_out(conn: &mut Connection, waiting: &Waiting, slice: Slice) {
    let result = run_sql(conn, "BEGIN IMMEDIATE").and_then(|()| {
        unflushed::read(waiting).write(conn, std::slice::from_ref(&slice))?;
        run_sql(conn, "COMMIT")
    });
    match result {
        Ok(()) => unflushed::write(waiting).forget(&[slice]),
        Err(e) => {
            // The items stay in memory (and in the journal); the next attempt may succeed.
            tracing::warn!(error = %e, "chat store: writing out journaled items failed");
            let _ = run_sql(conn, "ROLLBACK");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Removes the journal segments whose items are all written out, once those writes are on
/// disk: with `fsync` on, the write-outs' commits are in the WAL, not yet synced (the
/// syncer syncs the WAL only for commits that wait for it), so this syncs it first. That
/// happens once per segment.
fn retire(journal: &mut Segments, waiting: &Waiting, wal: Option<&File>) {
    let below = unflushed::read(waiting).first_live_record();
    if !journal.can_retire(below) {
        return;
    }
    if let Some(Err(e)) = wal.map(File::sync_data) {
        // Kept for now; the next write-out tries again.
        tracing::warn!(error = %e, "chat store: fsync of the WAL failed");
        return;
    }
    journal.retire(below);
}

/// The inbox entries of commits not yet synced, which the writer keeps below
/// [`UNSYNCED_ENTRIES`] (see `durable.rs`).
#[derive(Default)]
struct Unsynced {
    /// (commit, its entries), oldest first.
    commits: VecDeque<(u64, u64)>,
    entries: u64,
}

impl Unsynced {
    /// `commit` applied `entries`; blocks until the sync that brings the count back under
    /// the cap, if it is over, so the commit's answers wait for it.
    fn add(&mut self, syncer: &Syncer, commit: u64, entries: u64) {
        self.commits.push_back((commit, entries));
        self.entries += entries;
        let mut synced = syncer.synced();
        while let Some(&(oldest, entries)) = self.commits.front() {
            if oldest > synced {
                if self.entries <= UNSYNCED_ENTRIES || syncer.failed().is_some() {
                    break;
                }
                syncer.block_until(oldest);
                synced = syncer.synced().max(oldest);
            }
            self.commits.pop_front();
            self.entries -= entries;
        }
    }
}

/// The checkpoint thread: copies committed pages from the WAL into the database file a few
/// times a second, on its own connection. In WAL mode that runs beside the writer instead of
/// inside it, so no caller waits behind the bulk of a checkpoint (done by the writer, one
/// took 100+ ms and showed as the commit latency's tail).
///
/// SQLite starts the WAL over from its beginning only when a write transaction begins with
/// every frame copied, and under steady load the writer has always committed more by then.
/// Without restarts the file grows with every commit, and growing a file makes each
/// commit's fsync a journaled metadata update (~4 ms here, against ~0.1 ms to overwrite
/// blocks the file already has; `schema::open_wal`). So once half the preallocated
/// WAL is used, this thread asks the writer to copy the few frames committed meanwhile,
/// between two batches; its next transaction then starts the WAL over. That stalls the
/// writer for a database fsync, every few seconds at most. (`seed-bench chat` at 5,000
/// msg/s: p50 from 7.4 to 0.8 ms.) Stops when the store is dropped.
///
/// With `fsync` on, this thread also zero-fills the journal's next segment ahead of time
/// (`journal_dir`), so the writer does not: at the maximum rate a 16 MiB segment fills in
/// about a second, before the one it would recycle is written out.
pub fn checkpoints(
    conn: Connection,
    journal_dir: Option<&std::path::Path>,
    store_gone: mpsc::Receiver<()>,
    finish: &AtomicBool,
) {
    while let Err(RecvTimeoutError::Timeout) = store_gone.recv_timeout(CHECKPOINT_EVERY) {
        if checkpoint(&conn).is_some_and(|(log, _)| log > schema::WAL_RESTART_FRAMES) {
            finish.store(true, Ordering::Relaxed);
        }
        if let Some(dir) = journal_dir {
            segments::keep_spare(dir);
        }
    }
}

/// What a batch committed: the inbox entries it appended, the files it wrote to, and
/// whether a caller waits for it to be on disk.
struct Committed {
    entries: u64,
    dirty: Dirty,
    waited_for: bool,
}

/// Applies `batch`, leaving one result per job in `results`: its appends as one journal
/// record, its other writes in one transaction, with what must leave memory (too much
/// waits). A batch of appends alone only reads (idempotency keys, inbox heads), in one
/// read transaction rather than one per statement. Returns None if nothing was committed.
fn commit_batch(
    conn: &mut Connection,
    journal: &mut Segments,
    batch: &[Job],
    waiting: &Waiting,
    results: &mut Vec<Result<Reply, StoreError>>,
) -> Option<Committed> {
    let writes = batch.iter().any(|job| !job.write.is_append());
    if let Err(e) = run_sql(conn, if writes { "BEGIN IMMEDIATE" } else { "BEGIN" }) {
        results.extend(batch.iter().map(|_| Err(e.clone())));
        return None;
    }
    let now = now_millis();
    let unflushed = unflushed::read(waiting);
    let mut appends = Appends::default();
    for job in batch {
        results.push(apply_alone(conn, &job.write, now, &unflushed, &mut appends));
    }
    let (items, mut written) = appends.into_items();
    let entries = items.iter().filter(|item| matches!(item, journal::Item::Entry { .. })).count();
    let due = unflushed.forced(items.len(), &written);
    // The read transaction becomes a write transaction at its first write, if any: the
    // writer is the only connection that writes.
    let wal = writes || !due.is_empty();
    let commit = unflushed.write(conn, &due).and_then(|()| run_sql(conn, "COMMIT"));
    if let Err(e) = commit {
        tracing::error!(error = %e, calls = batch.len(), "chat store commit failed");
        // Nothing of the batch is kept: every call, even one that went well, fails.
        let _ = run_sql(conn, "ROLLBACK");
        for result in results.iter_mut() {
            *result = Err(e.clone());
        }
        return None;
    }
    let record = match items.is_empty() {
        true => None,
        false => match journal.append(&journal::encode(&items)) {
            Ok(record) => Some(record),
            Err(e) => {
                // The transaction stands; the appends fail, and nothing of them is kept.
                tracing::error!(error = %e, calls = batch.len(), "chat store journal write failed");
                for (job, result) in batch.iter().zip(results.iter_mut()) {
                    if job.write.is_append() {
                        *result = Err(e.clone());
                    }
                }
                None
            }
        },
    };
    drop(unflushed);
    written.extend(due);
    let mut unflushed = unflushed::write(waiting);
    unflushed.forget(&written);
    let entries = match record {
        Some(record) => {
            unflushed.add(items, record, now);
            entries as u64
        }
        None => 0,
    };
    let dirty = Dirty { wal, journal: record.is_some() };
    Some(Committed { entries, dirty, waited_for: batch.iter().any(|job| job.waited_for) })
}

/// Copies committed pages from the WAL into the database file, without waiting for readers
/// or the writer; returns the frames in the WAL and how many of them are now copied.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    result.inspect_err(|e| tracing::warn!(error = %e, "chat store checkpoint failed")).ok()
}

fn run_sql(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(backend)
}

/// Applies one call so that, should it fail, nothing of it stays in the transaction.
fn apply_alone(
    conn: &Connection,
    write: &Write,
    now: u64,
    waiting: &Unflushed,
    appends: &mut Appends,
) -> Result<Reply, StoreError> {
    if !write.needs_savepoint() {
        return apply(conn, write, now, waiting, appends);
    }
    run_sql(conn, "SAVEPOINT call")?;
    let result = apply(conn, write, now, waiting, appends);
    if result.is_err() {
        run_sql(conn, "ROLLBACK TO call")?;
    }
    run_sql(conn, "RELEASE call")?;
    result
}

fn apply(
    conn: &Connection,
    write: &Write,
    now: u64,
    waiting: &Unflushed,
    appends: &mut Appends,
) -> Result<Reply, StoreError> {
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
        Write::AppendMessage(message) => {
            appends.message(conn, waiting, message, now).map(Reply::Appended)
        }
        Write::AppendEntries(entries) => {
            appends.entries(conn, waiting, entries, now).map(Reply::Seqs)
        }
        Write::SetCursor { user_id, device_id, seq } => {
            appends.cursor(conn, waiting, user_id, device_id, *seq).map(|()| Reply::Done)
        }
        Write::AdvanceWatermark { kind, reader, chat, up_to, entries } => {
            if *up_to == 0 {
                return Ok(Reply::Advanced(None));
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
            if changed == 0 {
                return Ok(Reply::Advanced(None));
            }
            // A failure here rolls the watermark back too (`needs_savepoint`).
            appends.entries(conn, waiting, entries, now).map(|seqs| Reply::Advanced(Some(seqs)))
        }
        Write::ExpireEntries { before } => {
            // Entries still in memory are written out first, so they expire like the rest.
            let inboxes = waiting.inbox_groups();
            waiting.write(conn, &inboxes)?;
            appends.written.extend(inboxes);
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM inbox_chunks WHERE created_at < ?1
                     RETURNING last_seq - first_seq + 1",
                )
                .and_then(|mut s| {
                    s.query_map([int(*before)], |r| uint(r, 0))?.sum::<rusqlite::Result<u64>>()
                })
                .map_err(backend)?;
            Ok(Reply::Count(deleted))
        }
    }
}
