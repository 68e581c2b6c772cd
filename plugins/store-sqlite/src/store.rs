//! [`SqliteChatStore`]: the [`ChatStore`] contract on one SQLite file.
//!
//! This file only routes calls: writes go to the writer thread (`writer.rs`) and wait for
//! its answer, which comes after their group's commit, and then for that commit's fsync
//! (`durable.rs`); reads look at the appends still in memory (`unflushed.rs`) and, when
//! those do not answer them, go to the read pool (`reads.rs`). Owned copies of the
//! arguments cross to those threads, since neither may borrow from an async caller.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::thread;

use async_trait::async_trait;
use seed_broker::sched::prefer_short_slices;
use seed_chat_core::{
    Appended, ChatStore, Durable, InboxEntry, NewEntry, NewMessage, RefreshToken, StoreError,
    StoredMessage, UserRecord, Watermark, now_millis,
};
use tokio::sync::oneshot;

use crate::durable::Syncer;
use crate::messages;
use crate::reads::{self, Readers};
use crate::segments::{self, Segments};
use crate::unflushed::{self, Unflushed, Waiting};
use crate::writer::{self, Job, Reply, Write};
use crate::{floor, schema};

/// The embedded chat store. Cheap to share behind an `Arc`; dropping the last handle lets
/// the writer finish what is queued and stop.
pub struct SqliteChatStore {
    path: PathBuf,
    writes: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    /// Appends written to the journal and not yet to their tables.
    waiting: Arc<Waiting>,
    /// With `fsync` on: the thread that puts commits on disk.
    syncer: Option<Arc<Syncer>>,
    /// Dropped with the store: tells the checkpoint thread to stop.
    _checkpointer: mpsc::Sender<()>,
}

impl std::fmt::Debug for SqliteChatStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteChatStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteChatStore {
    /// Opens (or creates) the database at `path`, migrates it, and starts its writer.
    /// With `fsync`, every answered write has reached the disk; without, a power cut may
    /// lose the last commits (a crash of the process does not).
    pub fn open(path: &Path, fsync: bool) -> Result<SqliteChatStore, StoreError> {
        let conn = schema::open_writer(path)?;
        let checkpoints = schema::open_writer(path)?;
        let journal_dir = segments::dir_of(path);
        let journal_lock = segments::lock(&journal_dir)?;
        let records = segments::read_all(&journal_dir)?;
        let mut unflushed = Unflushed::recover(&conn, records, now_millis())?;
        unflushed.set_seq_floor(floor::seq_floor(&conn, unflushed.highest_seq(), fsync)?);
        // Whatever the journal held goes to its tables now, so it starts empty.
        unflushed.write_out_all(&conn)?;
        let waiting = Arc::new(Waiting::new(unflushed));
        // No transaction is open yet: nothing writes to the WAL while it grows. This also
        // puts what the recovery, the floor and the write-out committed on disk, before the
        // journal's old segments go.
        let wal = Arc::new(schema::open_wal(path, fsync)?);
        let journal = Segments::create(&journal_dir, journal_lock, fsync)?;
        let segment = journal.current();
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(run)
                .map(drop)
                .map_err(|e| StoreError::Backend(format!("starting {name}: {e}")))
        };
        let syncer = fsync.then(|| Arc::new(Syncer::new()));
        if let Some(syncer) = syncer.clone() {
            let wal = wal.clone();
            spawn(
                "seed-chat-sync",
                Box::new(move || {
                    prefer_short_slices();
                    syncer.run(&wal, &segment)
                }),
            )?;
        }
        let (writes, jobs) = mpsc::channel();
        let finish_checkpoint = Arc::new(AtomicBool::new(false));
        let finish = finish_checkpoint.clone();
        let (writer_waiting, writer_syncer) = (waiting.clone(), syncer.clone());
        let files = writer::Files { conn, journal, wal: fsync.then_some(wal) };
        spawn(
            "seed-chat-store",
            Box::new(move || {
                prefer_short_slices();
                writer::run(files, jobs, &writer_waiting, &finish, writer_syncer.as_deref())
            }),
        )?;
        let (alive, gone) = mpsc::channel::<()>();
        spawn(
            "seed-chat-checkpoint",
            Box::new(move || {
                let dir = fsync.then_some(journal_dir.as_path());
                writer::checkpoints(checkpoints, dir, gone, &finish_checkpoint)
            }),
        )?;
        Ok(SqliteChatStore {
            path: path.into(),
            writes,
            readers: Readers::new(path.into()),
            waiting,
            syncer,
            _checkpointer: alive,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `write` to the writer; returns its reply once applied, and what completes once
    /// it is durable. With `waited_for` false, nobody is expected to wait for that, and the
    /// commit may stay unsynced for up to `durable::LAZY_SYNC` (until someone does).
    async fn apply(&self, write: Write, waited_for: bool) -> Result<(Reply, Durable), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Job { write, reply, waited_for }).map_err(|_| stopped())?;
        let (reply, commit) = answer.await.map_err(|_| stopped())??;
        let durable = match &self.syncer {
            Some(syncer) if syncer.synced() < commit => {
                let syncer = syncer.clone();
                Durable::later(async move { syncer.wait(commit).await })
            }
            _ => Durable::now(),
        };
        Ok((reply, durable))
    }

    /// Sends `write` to the writer; returns its reply once durable.
    async fn write(&self, write: Write) -> Result<Reply, StoreError> {
        let (reply, durable) = self.apply(write, true).await?;
        durable.wait().await?;
        Ok(reply)
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the chat store's writer has stopped".into())
}

/// The writer answered a call with a reply of another call's kind: a bug, reported
/// rather than panicked on.
fn mismatch(reply: Reply) -> StoreError {
    StoreError::Backend(format!("unexpected writer reply {reply:?}"))
}

#[async_trait]
impl ChatStore for SqliteChatStore {
    async fn create_user(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        let write =
            Write::CreateUser { user_id: user_id.into(), password_hash: password_hash.into() };
        self.write(write).await.map(drop)
    }

    async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let user_id = user_id.to_owned();
        self.readers.run(move |c| reads::user(c, &user_id)).await
    }

    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        self.write(Write::PutRefreshToken(token)).await.map(drop)
    }

    async fn take_refresh_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshToken>, StoreError> {
        match self.write(Write::TakeRefreshToken(*token_hash)).await? {
            Reply::Token(token) => Ok(token),
            other => Err(mismatch(other)),
        }
    }

    async fn revoke_device(
        &self,
        user_id: &str,
        device_id: &str,
        at: u64,
    ) -> Result<(), StoreError> {
        let write =
            Write::RevokeDevice { user_id: user_id.into(), device_id: device_id.into(), at };
        self.write(write).await.map(drop)
    }

    async fn device_revoked_at(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.readers.run(move |c| reads::device_revoked_at(c, &user_id, &device_id)).await
    }

    async fn set_blocked(&self, user: &str, blocked: &str, on: bool) -> Result<(), StoreError> {
        self.write(Write::SetBlocked { user: user.into(), blocked: blocked.into(), on })
            .await
            .map(drop)
    }

    async fn is_blocked(&self, user: &str, by: &str) -> Result<bool, StoreError> {
        let (user, by) = (user.to_owned(), by.to_owned());
        self.readers.run(move |c| reads::is_blocked(c, &user, &by)).await
    }

    async fn blocked_by(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let user = user.to_owned();
        self.readers.run(move |c| reads::blocked_by(c, &user)).await
    }

    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let (appended, durable) = self.append_message_applied(message).await?;
        durable.wait().await?;
        Ok(appended)
    }

    async fn append_message_applied(
        &self,
        message: NewMessage,
    ) -> Result<(Appended, Durable), StoreError> {
        match self.apply(Write::AppendMessage(message), true).await? {
            (Reply::Appended(appended), durable) => Ok((appended, durable)),
            (other, _) => Err(mismatch(other)),
        }
    }

    async fn append_entries(&self, entries: Vec<NewEntry>) -> Result<Vec<u64>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        match self.write(Write::AppendEntries(entries)).await? {
            Reply::Seqs(seqs) => Ok(seqs),
            other => Err(mismatch(other)),
        }
    }

    async fn inbox(
        &self,
        user_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Memory first: what it holds of an inbox is its newest entries, all of them.
        let recent = unflushed::read(&self.waiting).inbox(user_id, after, limit);
        if recent.first().is_some_and(|first| first.seq == after + 1) {
            return Ok(recent);
        }
        let user_id = user_id.to_owned();
        let mut entries =
            self.readers.run(move |c| reads::inbox(c, &user_id, after, limit)).await?;
        let stored_up_to = entries.last().map_or(after, |last| last.seq);
        entries.extend(recent.into_iter().filter(|e| e.seq > stored_up_to));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        if let Some(head) = unflushed::read(&self.waiting).head(user_id) {
            return Ok(head);
        }
        let user_id = user_id.to_owned();
        self.readers.run(move |c| reads::last_seq(c, &user_id)).await
    }

    async fn cursor(&self, user_id: &str, device_id: &str) -> Result<u64, StoreError> {
        // A cursor only moves forward, so one in memory is ahead of the stored one.
        if let Some(seq) = unflushed::read(&self.waiting).cursor(user_id, device_id) {
            return Ok(seq);
        }
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.readers.run(move |c| reads::cursor(c, &user_id, &device_id)).await
    }

    async fn set_cursor(&self, user_id: &str, device_id: &str, seq: u64) -> Result<(), StoreError> {
        let write = Write::SetCursor { user_id: user_id.into(), device_id: device_id.into(), seq };
        self.apply(write, false).await.map(drop)
    }

    async fn history(
        &self,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Message ids are below 2^63, so that stands in for "no bound".
        let bound = before.unwrap_or(1 << 63);
        let recent = unflushed::read(&self.waiting).history(chat, bound, limit);
        let chat = chat.to_owned();
        let mut messages =
            self.readers.run(move |c| messages::history(c, &chat, before, limit)).await?;
        messages.extend(recent);
        messages.sort_unstable_by_key(|m| std::cmp::Reverse(m.id));
        messages.dedup_by_key(|m| m.id);
        messages.truncate(limit);
        Ok(messages)
    }

    async fn advance_watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
        up_to: u64,
    ) -> Result<bool, StoreError> {
        let moved = self.advance_watermark_and_append(kind, reader, chat, up_to, Vec::new());
        moved.await.map(|moved| moved.is_some())
    }

    async fn advance_watermark_and_append(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
        up_to: u64,
        entries: Vec<NewEntry>,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let (reader, chat) = (reader.into(), chat.into());
        let write = Write::AdvanceWatermark { kind, reader, chat, up_to, entries };
        // Nobody waits for the disk: it goes with the next commit someone does wait for.
        match self.apply(write, false).await? {
            (Reply::Advanced(seqs), _) => Ok(seqs),
            (other, _) => Err(mismatch(other)),
        }
    }

    async fn watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
    ) -> Result<u64, StoreError> {
        let (reader, chat) = (reader.to_owned(), chat.to_owned());
        self.readers.run(move |c| reads::watermark(c, kind, &reader, &chat)).await
    }

    async fn expire_entries(&self, before: u64) -> Result<u64, StoreError> {
        match self.write(Write::ExpireEntries { before }).await? {
            Reply::Count(count) => Ok(count),
            other => Err(mismatch(other)),
        }
    }
}
