//! Seqs after a power cut.
//!
//! The chat delivers an inbox entry once it is applied, before its fsync (`durable.rs`). A
//! power cut in between loses the entry, and a device may already hold it under its seq.
//! Were that seq handed out again, to another entry, the device would take the new entry
//! for one it has (clients dedupe by seq) and never show it. So after a power cut every
//! inbox continues above a *floor* that is higher than any seq a device can have seen:
//! the highest seq stored plus the most entries that can be applied and unsynced at once.
//!
//! A power cut is told apart from a crash of the process by the kernel's boot id: after a
//! crash the kernel still holds (and writes) every page the process wrote, so only a new
//! boot can have lost any. The floor is raised at the first open of a new boot and stored
//! with that boot id, so a later open of the same boot keeps it. A clean reboot raises it
//! too (nothing tells it from a power cut), which costs nothing but larger numbers. Where
//! there is no boot id (not Linux), every open counts as a new boot.

use rusqlite::{Connection, OptionalExtension, params};
use seed_chat_core::StoreError;

use crate::{backend, durable, int};

/// How far seqs jump when the store does not fsync: the kernel may hold 30 s of writes
/// (`dirty_expire_centisecs`), far fewer entries than this at the writer's best.
const UNSYNCED_WITHOUT_FSYNC: u64 = 1 << 24;

/// This boot of the machine (from Linux's boot id), or 0 when unknown.
fn boot() -> i64 {
    let Ok(id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else { return 0 };
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).take(15).collect();
    i64::from_str_radix(&hex, 16).unwrap_or(0)
}

/// The lowest seq an inbox may take from now on, raised if this is the first open since a
/// (possible) power cut. `waiting_seq` is the highest seq still in the journal only
/// (`unflushed.rs`). Stored before it is returned.
pub fn seq_floor(conn: &Connection, waiting_seq: u64, fsync: bool) -> Result<u64, StoreError> {
    seq_floor_at(conn, waiting_seq, fsync, boot())
}

fn seq_floor_at(
    conn: &Connection,
    waiting_seq: u64,
    fsync: bool,
    boot: i64,
) -> Result<u64, StoreError> {
    let state = |key: &str| {
        conn.query_row("SELECT value FROM store_state WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
        .map_err(backend)
    };
    let floor = state("seq_floor")?.map_or(0, |v| v.max(0) as u64);
    let mut raised = floor;
    match state("boot")? {
        Some(last) if last == boot && boot != 0 => return Ok(floor),
        // The store was last opened by a build that synced every entry before delivering
        // it (or never): no device holds a seq the store lost.
        None => {}
        Some(_) => {
            let stored: i64 = conn
                .query_row("SELECT coalesce(max(last_seq), 0) FROM inbox_heads", [], |r| r.get(0))
                .map_err(backend)?;
            let unsynced = if fsync { durable::UNSYNCED_ENTRIES } else { UNSYNCED_WITHOUT_FSYNC };
            raised = (stored.max(0) as u64).max(waiting_seq).max(floor) + unsynced + 1;
            tracing::info!(
                floor = raised,
                "chat store: first open since a reboot; inbox seqs continue above the floor"
            );
        }
    }
    let tx = conn.unchecked_transaction().map_err(backend)?;
    tx.execute(
        "INSERT OR REPLACE INTO store_state (key, value) VALUES ('boot', ?1), ('seq_floor', ?2)",
        params![boot, int(raised)],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::schema::open_writer(&dir.path().join("chat.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn the_floor_rises_once_per_boot() {
        let (_dir, conn) = open();
        // First open ever: nothing was delivered unsynced before.
        assert_eq!(seq_floor_at(&conn, 0, true, 7).unwrap(), 0);
        conn.execute("INSERT INTO inbox_heads VALUES ('bob', 40), ('carol', 9)", []).unwrap();
        // Same boot (the process crashed or stopped): the kernel kept every write.
        assert_eq!(seq_floor_at(&conn, 0, true, 7).unwrap(), 0);
        // A new boot: above the highest stored seq, or one still in the journal.
        let gap = durable::UNSYNCED_ENTRIES + 1;
        assert_eq!(seq_floor_at(&conn, 0, true, 8).unwrap(), 40 + gap);
        assert_eq!(seq_floor_at(&conn, 0, true, 8).unwrap(), 40 + gap, "kept within a boot");
        // Another new boot with nothing appended since: above the last floor, not below.
        assert_eq!(seq_floor_at(&conn, 0, true, 9).unwrap(), 40 + 2 * gap);
        assert_eq!(seq_floor_at(&conn, 10 * gap, true, 10).unwrap(), 11 * gap);
        // Without fsync the kernel may have held far more.
        assert_eq!(
            seq_floor_at(&conn, 0, false, 11).unwrap(),
            11 * gap + UNSYNCED_WITHOUT_FSYNC + 1
        );
        // No boot id: every open is a new boot.
        let floor = seq_floor_at(&conn, 0, true, 0).unwrap();
        assert_eq!(seq_floor_at(&conn, 0, true, 0).unwrap(), floor + gap);
    }
}
