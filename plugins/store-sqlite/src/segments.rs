//! The journal's file: each commit's appends as one record (`journal.rs`) written to the end
//! of a segment file next to the database, `{db}-appends/{first record}`.
//!
//! A row of a `journal` table did the same job until a SQLite transaction per commit proved
//! the cost: at 5,000 chat messages a second each commit carries one message, and its
//! BEGIN/COMMIT (WAL frames written a page per `pwrite`, WAL-index and file locks) took
//! 41% of the writer thread. A record is one `pwrite`. Account writes, watermarks and the
//! write-outs of waiting appends (`unflushed.rs`) still go to SQLite.
//!
//! A record is `[length u32][crc32 u32][number u64][payload]`, big-endian, the checksum
//! over the number and the payload. Records are numbered from 1 without gaps, each segment
//! named by its first; reading a segment stops at the first record that is not the next
//! one (zeros, a record torn by a crash, or one left from an earlier use of the file).
//!
//! With `fsync` on, segments are zero-filled before use, as the WAL is (`schema::open_wal`):
//! an fsync then writes data blocks only, not the file system's metadata. A segment is
//! synced before the next one takes records, so only the last one can end torn. Segments
//! whose records are all written out are removed, or kept as the next segment's blocks.
//! Opening the store writes every record out and starts again from record 1 (`store.rs`);
//! a lock on the directory keeps a second store (another process) from doing that under a
//! store that is running.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use seed_chat_core::StoreError;

use crate::schema;

/// A segment's size. With `fsync` on, the first is zero-filled when the store opens (unless
/// a spare is left from before), the next ones ahead of use by the checkpoint thread.
pub const SEGMENT_BYTES: u64 = 16 << 20;

const HEADER: usize = 16;

/// The name of the zero-filled segment waiting to be used next.
const SPARE: &str = "spare";

/// How long opening waits for another store to let go of the journal (as SQLite waits for
/// a lock, `schema.rs`).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The segment being written, shared with the thread that syncs it (`durable.rs`).
pub type Current = Mutex<Arc<File>>;

/// The journal's directory for the database at `db`.
pub fn dir_of(db: &Path) -> PathBuf {
    let mut dir = db.as_os_str().to_owned();
    dir.push("-appends");
    dir.into()
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("journal: {what} {}: {e}", path.display()))
}

/// The segment files in `dir`, by first record.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed("reading", dir, e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| failed("reading", dir, e))?;
        if let Some(first) = entry.file_name().to_str().and_then(|name| name.parse().ok()) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// The journal directory, held by one store at a time: released when dropped (or when the
/// process ends).
pub struct Lock {
    _file: File,
}

/// Takes the journal in `dir` (creating the directory), waiting for another holder to let
/// go for a few seconds.
pub fn lock(dir: &Path) -> Result<Lock, StoreError> {
    lock_within(dir, LOCK_WAIT)
}

fn lock_within(dir: &Path, wait: Duration) -> Result<Lock, StoreError> {
    fs::create_dir_all(dir).map_err(|e| failed("creating", dir, e))?;
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| failed("opening", &path, e))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(format!(
                    "journal: {} is in use by another store (another seed process?)",
                    dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(failed("locking", &path, e)),
        }
    }
}

/// Every record in `dir`, oldest first.
pub fn read_all(dir: &Path) -> Result<Vec<Bytes>, StoreError> {
    let mut records = Vec::new();
    let mut expected = None;
    for (first, path) in list(dir)? {
        if let Some(expected) = expected
            && expected != first
        {
            return Err(StoreError::Backend(format!(
                "journal: {} does not follow the segment before it, which ends at record {}",
                path.display(),
                expected - 1,
            )));
        }
        let data = Bytes::from(fs::read(&path).map_err(|e| failed("reading", &path, e))?);
        let (mut number, mut at) = (first, 0);
        while let Some((payload, next)) = record(&data, at, number) {
            records.push(payload);
            (number, at) = (number + 1, next);
        }
        expected = Some(number);
    }
    Ok(records)
}

/// The payload of record `number` at `at` in `data` and where the next record starts, or
/// None if there is no such record there.
fn record(data: &Bytes, at: usize, number: u64) -> Option<(Bytes, usize)> {
    let header = data.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..8].try_into().ok()?);
    // Zeros fail here too: records are numbered from 1.
    if header[8..] != number.to_be_bytes() {
        return None;
    }
    let end = (at + HEADER).checked_add(len)?;
    let payload = data.get(at + HEADER..end)?;
    (crc32(&[&header[8..], payload]) == crc).then(|| (data.slice(at + HEADER..end), end))
}

/// The journal being written: the writer thread's.
pub struct Segments {
    dir: PathBuf,
    size: u64,
    /// `fsync` on: segments are zero-filled and synced before the next one is used.
    durable: bool,
    file: Arc<File>,
    current: Arc<Current>,
    /// The current segment's first record, and where its next record goes.
    first: u64,
    offset: u64,
    /// The next record's number.
    next: u64,
    /// Earlier segments: first record, first record of the next segment.
    closed: VecDeque<(u64, u64)>,
    buf: Vec<u8>,
    _lock: Lock,
}

impl Segments {
    /// Starts the journal in `dir`, which `lock` holds, afresh from record 1: what was
    /// there must have been written out. The first segment is on disk when this returns.
    pub fn create(dir: &Path, lock: Lock, durable: bool) -> Result<Segments, StoreError> {
        Segments::with_size(dir, lock, durable, SEGMENT_BYTES)
    }

    fn with_size(dir: &Path, lock: Lock, durable: bool, size: u64) -> Result<Segments, StoreError> {
        for (_, path) in list(dir)? {
            fs::remove_file(&path).map_err(|e| failed("removing", &path, e))?;
        }
        // Left by a crash while a file was being zero-filled.
        for entry in fs::read_dir(dir).map_err(|e| failed("reading", dir, e))?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".new") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let file = Arc::new(new_segment(dir, 1, durable, size)?);
        Ok(Segments {
            dir: dir.into(),
            size,
            durable,
            current: Arc::new(Mutex::new(file.clone())),
            file,
            first: 1,
            offset: 0,
            next: 1,
            closed: VecDeque::new(),
            buf: Vec::new(),
            _lock: lock,
        })
    }

    /// The segment being written, for the thread that syncs it.
    pub fn current(&self) -> Arc<Current> {
        self.current.clone()
    }

    /// Writes `payload` as the next record; returns its number. A crash of the process
    /// cannot lose it once this returns; with `fsync` on, a power cut can until the
    /// current segment is synced.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, StoreError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| StoreError::Backend("journal: record above 4 GiB".into()))?;
        if self.offset > 0 && self.offset + (HEADER + payload.len()) as u64 > self.size {
            self.roll()?;
        }
        let number = self.next;
        self.buf.clear();
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&crc32(&[&number.to_be_bytes(), payload]).to_be_bytes());
        self.buf.extend_from_slice(&number.to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| failed("writing", &self.path(self.first), e))?;
        self.offset += self.buf.len() as u64;
        self.next += 1;
        Ok(number)
    }

    /// Moves to a new segment, the current one synced first.
    fn roll(&mut self) -> Result<(), StoreError> {
        if self.durable {
            self.file.sync_data().map_err(|e| failed("syncing", &self.path(self.first), e))?;
        }
        let file = Arc::new(new_segment(&self.dir, self.next, self.durable, self.size)?);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = file.clone();
        self.file = file;
        self.closed.push_back((self.first, self.next));
        (self.first, self.offset) = (self.next, 0);
        Ok(())
    }

    /// Whether a segment before the current one holds only records below `below`.
    pub fn can_retire(&self, below: u64) -> bool {
        self.closed.front().is_some_and(|&(_, end)| end <= below)
    }

    /// Removes the segments before the current one that hold only records below `below`
    /// (whose items must be in their tables, on disk). With `fsync` on, one is kept as
    /// the next segment's blocks.
    pub fn retire(&mut self, below: u64) {
        while self.can_retire(below) {
            let Some((first, _)) = self.closed.pop_front() else { break };
            let path = self.path(first);
            let spare = self.dir.join(SPARE);
            let result = if self.durable && !spare.exists() {
                fs::rename(&path, &spare)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = result {
                // Left for the next open, which writes it out again (harmlessly) and removes it.
                tracing::warn!(error = %e, path = %path.display(), "journal: removing a segment failed");
            }
        }
    }

    fn path(&self, first: u64) -> PathBuf {
        segment_path(&self.dir, first)
    }
}

/// Zero-fills the next segment in `dir` if there is none waiting (durable journals only;
/// from a thread other than the writer's, which otherwise does it when it needs one).
pub fn keep_spare(dir: &Path) {
    let spare = dir.join(SPARE);
    if !spare.exists()
        && let Err(e) = zero_filled(&spare, SEGMENT_BYTES)
    {
        tracing::warn!(error = %e, "journal: preparing the next segment failed");
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}"))
}

/// Creates the segment whose first record is `first`: with `durable`, from the spare (or
/// zero-filled now, if there is none) and with its name on disk.
fn new_segment(dir: &Path, first: u64, durable: bool, size: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, first);
    if durable {
        if fs::rename(dir.join(SPARE), &path).is_err() {
            zero_filled(&path, size)?;
        }
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failed("syncing", dir, e))?;
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!durable)
        .open(&path)
        .map_err(|e| failed("opening", &path, e))
}

/// Writes a file of `size` zeros and syncs it, under a temporary name until it is whole.
fn zero_filled(path: &Path, size: u64) -> Result<(), StoreError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".new");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial).map_err(|e| failed("creating", &partial, e))?;
    schema::write_zeros(&file, 0, size).map_err(|e| failed("filling", &partial, e))?;
    file.sync_all().map_err(|e| failed("syncing", &partial, e))?;
    fs::rename(&partial, path).map_err(|e| failed("renaming", &partial, e))
}

/// CRC-32 of the concatenated `parts` (SIMD where the CPU has it: the writer checksums
/// every byte it journals, and a table-driven CRC took 8% of it at the maximum rate).
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(dir: &Path) -> Vec<Vec<u8>> {
        read_all(dir).unwrap().iter().map(|p| p.to_vec()).collect()
    }

    fn journal(dir: &Path, durable: bool, size: u64) -> Segments {
        Segments::with_size(dir, lock(dir).unwrap(), durable, size).unwrap()
    }

    /// Appends a record of `len` bytes `i` for each `i` in `fill`.
    fn append_each(log: &mut Segments, fill: std::ops::Range<u8>, len: usize) {
        for i in fill {
            log.append(&vec![i; len]).unwrap();
        }
    }

    #[test]
    fn one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let Err(StoreError::Backend(e)) = lock_within(dir.path(), Duration::from_millis(50)) else {
            panic!("a held journal must not be taken twice");
        };
        assert!(e.contains("in use by another store"), "{e}");
        drop(held);
        lock_within(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn crc32_known_answer() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        for durable in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = journal(dir.path(), durable, 100);
            let written: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 7]).collect();
            for (i, payload) in written.iter().enumerate() {
                assert_eq!(log.append(payload).unwrap(), i as u64 + 1);
            }
            assert!(log.closed.len() > 3, "small segments roll: {:?}", log.closed);
            assert_eq!(payloads(dir.path()), written, "durable: {durable}");
        }
    }

    #[test]
    fn reading_stops_at_a_torn_or_stale_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = journal(dir.path(), true, 4096);
        append_each(&mut log, 0..3, 50);
        let path = segment_path(dir.path(), 1);
        // A torn last record: its payload half written.
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xAA; 10], 2 * 66 + HEADER as u64 + 20).unwrap();
        assert_eq!(payloads(dir.path()), vec![vec![0u8; 50], vec![1u8; 50]]);
        // A record with the right checksum but another number (an earlier use of the file).
        let mut stale = journal(&dir.path().join("other"), false, 4096);
        stale.append(&[7; 50]).unwrap();
        let old = fs::read(segment_path(&dir.path().join("other"), 1)).unwrap();
        file.write_all_at(&old[..66], 66).unwrap();
        assert_eq!(payloads(dir.path()), vec![vec![0u8; 50]]);
    }

    #[test]
    fn retired_segments_go_and_a_fresh_journal_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = journal(dir.path(), true, 200);
        append_each(&mut log, 0..10, 60);
        let first_kept = log.closed[1].0;
        assert!(!log.can_retire(log.closed[0].1 - 1));
        assert!(log.can_retire(first_kept));
        log.retire(first_kept);
        let left = payloads(dir.path());
        assert_eq!(left.first().unwrap()[0], (first_kept - 1) as u8);
        assert_eq!(left.len(), 10 - (first_kept as usize - 1));
        assert!(dir.path().join(SPARE).exists(), "a retired segment is kept as the spare");
        // The spare's old records are not read as the next segment's.
        append_each(&mut log, 10..20, 60);
        assert_eq!(payloads(dir.path()).last().unwrap()[0], 19);
        assert_eq!(payloads(dir.path()).len(), 20 - (first_kept as usize - 1));
        drop(log);
        let mut log = journal(dir.path(), true, 200);
        assert!(payloads(dir.path()).is_empty());
        assert_eq!(log.append(b"again").unwrap(), 1);
        assert_eq!(payloads(dir.path()), vec![b"again".to_vec()]);
    }

    #[test]
    fn a_gap_between_segments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = journal(dir.path(), false, 100);
        append_each(&mut log, 0..6, 60);
        fs::remove_file(segment_path(dir.path(), log.closed[1].0)).unwrap();
        assert!(read_all(dir.path()).is_err());
    }
}
