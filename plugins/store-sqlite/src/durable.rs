//! Durability apart from the commit: the writer commits without waiting for the disk, and
//! a thread of its own fsyncs the journal file and the WAL behind it.
//!
//! A commit writes its appends as a journal record (`segments.rs`) and anything else in a
//! SQLite transaction, which with `synchronous = NORMAL` writes its WAL frames into the
//! page cache and returns: from then on a crash of the process cannot lose it (the kernel
//! holds the pages), and every read sees it. One `fdatasync` of the journal's current
//! segment (and of the WAL, if the commit wrote to it) then puts every commit written
//! before it on the disk. So the writer numbers its commits, tells this thread the newest,
//! and goes on with the next batch while the disk works; callers that must not answer
//! before the disk has their commit wait for its number ([`Syncer::wait`]). One sync
//! covers every commit written meanwhile: group commit for the fsync, pipelined with the
//! transactions.
//!
//! That is what lets the chat deliver a message while its fsync is under way (the sender's
//! PUBACK still waits for it): the fsync's tail, not its median, set the delivery latency's
//! p99, since this machine's disk stalls a sync for 10 ms or more a few times a second. A
//! power cut can lose a commit that was applied but not synced, so the writer caps how
//! many such inbox entries there are ([`UNSYNCED_ENTRIES`]); `floor.rs` makes sure their
//! seqs are not handed out again.
//!
//! A failed fsync leaves the file's state unknown (the kernel may have dropped the pages
//! it could not write), so it is final: every waiter and every later write gets an error
//! until the store is opened again.

use std::fs::File;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use seed_chat_core::StoreError;
use tokio::sync::watch;

use crate::segments::Current;

/// Inbox entries that may be applied and not yet on disk at once. A commit that would pass
/// it is answered only after the sync that brings it back under. A power cut loses at
/// most this many entries that a device may have seen, so it is also how far seqs jump
/// after one (`floor.rs`).
pub const UNSYNCED_ENTRIES: u64 = 65_536;

/// The shortest time from one fsync to the next. Every commit written meanwhile shares the
/// next one. Back to back, at 5,000 chat messages a second, this machine's virtual disk
/// took about 1,000 fsyncs a second and the VM lost 10% of its CPU time (steal) handling
/// them; one a millisecond at most cut that to 3%, for at most a millisecond more before
/// a PUBACK (delivery does not wait for it).
const SYNC_EVERY: Duration = Duration::from_millis(1);

#[derive(Default)]
struct State {
    /// The newest commit written.
    written: u64,
    /// The newest commit on disk.
    synced: u64,
    /// A commit since the last sync wrote to the WAL, not only to the journal.
    wal: bool,
    /// The writer has stopped: sync what is written and end.
    closing: bool,
}

/// The WAL's fsync thread and what waits for it. Commits are numbered from 1.
pub struct Syncer {
    state: Mutex<State>,
    changed: Condvar,
    /// `state.synced`, for async waiters.
    synced: watch::Sender<u64>,
    failed: OnceLock<StoreError>,
}

impl Syncer {
    pub fn new() -> Syncer {
        Syncer {
            state: Mutex::default(),
            changed: Condvar::new(),
            synced: watch::Sender::new(0),
            failed: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer committed `commit`, with `wal` if it wrote to the WAL: the next sync
    /// includes it.
    pub fn written(&self, commit: u64, wal: bool) {
        let mut state = self.lock();
        state.written = commit;
        state.wal |= wal;
        drop(state);
        self.changed.notify_all();
    }

    /// The error every write gets once a sync has failed.
    pub fn failed(&self) -> Option<&StoreError> {
        self.failed.get()
    }

    /// Blocks the writer until `commit` is on disk (or syncing failed).
    pub fn block_until(&self, commit: u64) {
        let mut state = self.lock();
        while state.synced < commit && self.failed.get().is_none() {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The newest commit on disk.
    pub fn synced(&self) -> u64 {
        *self.synced.borrow()
    }

    /// Waits until `commit` is on disk.
    pub async fn wait(&self, commit: u64) -> Result<(), StoreError> {
        let mut synced = self.synced.subscribe();
        // The sender lives in `self`, so the wait only ends by its condition.
        let _ = synced.wait_for(|&synced| synced >= commit || self.failed.get().is_some()).await;
        match self.failed.get() {
            Some(error) if *synced.borrow() < commit => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// The writer has stopped: the thread syncs what is left and ends.
    pub fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    /// The thread: fsyncs the journal's current segment, and `wal` when a commit wrote
    /// to it, whenever a commit is written past the last sync, until closed. (The writer
    /// syncs a segment itself before it moves on to the next.)
    pub fn run(&self, wal: &File, journal: &Current) {
        let mut last = Instant::now();
        loop {
            if let Some(early) = SYNC_EVERY.checked_sub(last.elapsed()) {
                std::thread::sleep(early);
            }
            let (target, wal_written) = {
                let mut state = self.lock();
                while state.written == state.synced && !state.closing {
                    state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                if state.written == state.synced {
                    return;
                }
                (state.written, std::mem::take(&mut state.wal))
            };
            last = Instant::now();
            let segment = journal.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let synced = segment.sync_data().and_then(|()| match wal_written {
                true => wal.sync_data(),
                false => Ok(()),
            });
            if let Err(e) = synced {
                tracing::error!(error = %e, "chat store: fsync failed; writes are refused until a restart");
                let _ = self.failed.set(StoreError::Backend(format!(
                    "the chat store could not sync its file ({e}); it takes no writes until restarted"
                )));
                self.changed.notify_all();
                self.synced.send_modify(|_| {});
                return;
            }
            self.lock().synced = target;
            self.changed.notify_all();
            self.synced.send_replace(target);
        }
    }
}
