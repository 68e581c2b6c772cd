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
//! Not every commit is waited for. A cursor, a watermark or a receipt answers nobody, and a
//! power cut that loses it only delivers entries again or sends a tick late; such a commit
//! starts no sync of its own, and goes with the next commit that is waited for, or after
//! [`LAZY_SYNC`].
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

/// How long a commit that no caller waits for (cursors, watermarks, receipts) may stay
/// unsynced: it starts no sync of its own before then, and rides along with the next
/// commit a caller does wait for. At 200 chat messages a second each message took 4.2
/// fsyncs — its own, two cursors, a watermark and its receipt — where one is needed. A
/// power cut loses at most this much of them, which delivers entries again or leaves a
/// tick unsent; no message is lost.
pub const LAZY_SYNC: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    /// The newest commit written.
    written: u64,
    /// The newest commit on disk.
    synced: u64,
    /// The newest commit a caller waits for.
    needed: u64,
    /// When the oldest commit not yet synced was written.
    unsynced_since: Option<Instant>,
    /// The files the commits since the last sync wrote to.
    dirty: Dirty,
    /// The writer has stopped: sync what is written and end.
    closing: bool,
}

/// The files a commit wrote to, which its sync must flush.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dirty {
    pub wal: bool,
    pub journal: bool,
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

    /// The writer committed `commit`, which wrote to the `dirty` files; `waited_for` if a
    /// caller waits for it to be on disk. The next sync includes it.
    pub fn written(&self, commit: u64, dirty: Dirty, waited_for: bool) {
        let mut state = self.lock();
        let first_unsynced = state.written == state.synced;
        if first_unsynced {
            state.unsynced_since = Some(Instant::now());
        }
        state.written = commit;
        state.dirty.wal |= dirty.wal;
        state.dirty.journal |= dirty.journal;
        drop(state);
        if waited_for {
            self.need(commit);
        } else if first_unsynced {
            // The thread may be asleep with nothing to sync: it starts the clock.
            self.changed.notify_all();
        }
    }

    /// Someone waits for `commit`: sync it now.
    fn need(&self, commit: u64) {
        let mut state = self.lock();
        if state.needed < commit {
            state.needed = commit;
            drop(state);
            self.changed.notify_all();
        }
    }

    /// The error every write gets once a sync has failed.
    pub fn failed(&self) -> Option<&StoreError> {
        self.failed.get()
    }

    /// Blocks the writer until `commit` is on disk (or syncing failed).
    pub fn block_until(&self, commit: u64) {
        self.need(commit);
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
        self.need(commit);
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

    /// The thread: fsyncs the journal's current segment and `wal`, each when a commit wrote
    /// to it, as soon as a commit past the last sync is waited for (or [`LAZY_SYNC`] after
    /// one that is not), until closed. (The writer syncs a segment itself before it moves
    /// on to the next.)
    pub fn run(&self, wal: &File, journal: &Current) {
        let mut last = Instant::now();
        loop {
            if let Some(early) = SYNC_EVERY.checked_sub(last.elapsed()) {
                std::thread::sleep(early);
            }
            let (target, dirty) = {
                let mut state = self.lock();
                loop {
                    let unsynced = state.written > state.synced;
                    if state.needed > state.synced || (unsynced && state.closing) {
                        break;
                    }
                    if state.closing {
                        return;
                    }
                    if !unsynced {
                        state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                    // Only commits no caller waits for: they go with the next one that is,
                    // or once they are due.
                    let since = state.unsynced_since.unwrap_or_else(Instant::now);
                    match (since + LAZY_SYNC).checked_duration_since(Instant::now()) {
                        Some(wait) if !wait.is_zero() => {
                            let waited = self.changed.wait_timeout(state, wait);
                            state = waited.unwrap_or_else(PoisonError::into_inner).0;
                        }
                        _ => break,
                    }
                }
                (state.written, std::mem::take(&mut state.dirty))
            };
            last = Instant::now();
            let sync = |file: &File, dirty| if dirty { file.sync_data() } else { Ok(()) };
            let segment = journal.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let synced = sync(&segment, dirty.journal).and_then(|()| sync(wal, dirty.wal));
            if let Err(e) = synced {
                tracing::error!(error = %e, "chat store: fsync failed; writes are refused until a restart");
                let _ = self.failed.set(StoreError::Backend(format!(
                    "the chat store could not sync its file ({e}); it takes no writes until restarted"
                )));
                self.changed.notify_all();
                self.synced.send_modify(|_| {});
                return;
            }
            let mut state = self.lock();
            state.synced = target;
            state.unsynced_since = (state.written > target).then(Instant::now);
            drop(state);
            self.changed.notify_all();
            self.synced.send_replace(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    /// Waits (at most `limit`) until `commit` is synced; how long that took.
    fn synced_within(syncer: &Syncer, commit: u64, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if syncer.synced() >= commit {
                return Some(started.elapsed());
            }
            thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// A commit nobody waits for is synced within `LAZY_SYNC`, not at once; one that a
    /// caller waits for is synced at once, and so is a lazy one as soon as someone waits.
    #[test]
    fn commits_nobody_waits_for_are_synced_late_but_synced() {
        let dir = tempfile::tempdir().unwrap();
        let wal = File::create(dir.path().join("wal")).unwrap();
        let journal: Current = Mutex::new(Arc::new(File::create(dir.path().join("j")).unwrap()));
        let syncer = Arc::new(Syncer::new());
        let thread = {
            let syncer = syncer.clone();
            thread::spawn(move || syncer.run(&wal, &journal))
        };
        let both = Dirty { wal: true, journal: true };

        let waited_for = |commit| {
            syncer.written(commit, both, true);
            let prompt = synced_within(&syncer, commit, LAZY_SYNC / 2);
            assert!(prompt.is_some(), "a commit a caller waits for is synced at once");
        };
        // A lazy commit, also when the thread sleeps with nothing to sync.
        let lazy = |commit| {
            syncer.written(commit, both, false);
            thread::sleep(LAZY_SYNC / 5);
            assert_eq!(syncer.synced(), commit - 1, "a lazy commit waits for company");
            let late = synced_within(&syncer, commit, LAZY_SYNC * 4).expect("synced in the end");
            assert!(late >= LAZY_SYNC / 2, "synced after {late:?}");
        };
        lazy(1);
        waited_for(2);
        thread::sleep(LAZY_SYNC / 10);
        lazy(3);

        syncer.written(4, both, false);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = Instant::now();
        runtime.block_on(syncer.wait(4)).unwrap();
        assert!(started.elapsed() < LAZY_SYNC / 2, "waiting made it urgent");

        syncer.written(5, both, false);
        syncer.close();
        thread.join().unwrap();
        assert_eq!(syncer.synced(), 5, "closing syncs what is left");
    }
}
