//! A chat's messages, many to a row.
//!
//! One row per message cost two B-tree inserts (the table and its (chat, id) index) for
//! every message written out: at the maximum rate (`seed-bench chat`), 7% of the server's
//! CPU time, the largest single step of the writer; as chunks, 0.7%. A write-out takes a
//! chat's waiting messages in id order, so they go out as chunks of up to [`MAX_MESSAGES`]
//! consecutive messages (fewer when they are large): a row holds the chunk's first and
//! last id and its messages, each framed as
//!
//! ```text
//! u64 BE  id | u32 BE  sender length | sender | u32 BE  body length | body
//! ```
//!
//! (`frame.rs`), which the migration from one row per message writes from SQL.
//!
//! The chunks of a chat never overlap, so the one with the smallest last id at or above an
//! id is the only one that can hold it, and a history page walks the (chat, last id) index
//! backwards from there. Writing messages whose ids fall inside stored chunks — a journal
//! read again after a crash, or an id below a stored one — rewrites those chunks merged
//! with them, each id once.

use std::collections::BTreeMap;

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::{Connection, Error::FromSqlConversionFailure, params};
use seed_chat_core::{StoreError, StoredMessage};

use crate::frame::{self, Damaged, Reader};
use crate::{backend, int, uint};

/// The most messages in one chunk: a history page (50 by default) reads one or two.
const MAX_MESSAGES: usize = 64;
/// A chunk takes no further message once it is this large.
const MAX_BYTES: usize = 16 * 1024;

/// A message being written: its id, sender and body.
pub type Outgoing<'a> = (u64, &'a str, &'a [u8]);

/// Writes `messages` (in ascending id order) to `chat`'s chunks, in the caller's
/// transaction.
pub fn write(conn: &Connection, chat: &str, messages: &[Outgoing<'_>]) -> Result<(), StoreError> {
    let (Some(&(low, ..)), Some(&(high, ..))) = (messages.first(), messages.last()) else {
        return Ok(());
    };
    let touched = overlapping(conn, chat, low, high).map_err(backend)?;
    if touched.is_empty() {
        return insert(conn, chat, messages.iter().copied());
    }
    let mut delete =
        conn.prepare_cached("DELETE FROM message_chunks WHERE rowid = ?1").map_err(backend)?;
    let mut merged = BTreeMap::new();
    for (rowid, stored) in &touched {
        delete.execute([rowid]).map_err(backend)?;
        merged.extend(stored.iter().map(|m| (m.id, (m.sender.as_str(), &m.body[..]))));
    }
    for &(id, sender, body) in messages {
        merged.entry(id).or_insert((sender, body));
    }
    insert(conn, chat, merged.into_iter().map(|(id, (sender, body))| (id, sender, body)))
}

/// The stored chunks of `chat` holding ids in `low..=high`, with their rowids.
fn overlapping(
    conn: &Connection,
    chat: &str,
    low: u64,
    high: u64,
) -> rusqlite::Result<Vec<(i64, Vec<StoredMessage>)>> {
    let mut statement = conn.prepare_cached(
        "SELECT rowid, first_id, messages FROM message_chunks
         WHERE chat = ?1 AND last_id >= ?2 ORDER BY last_id",
    )?;
    let mut rows = statement.query(params![chat, int(low)])?;
    let mut touched = Vec::new();
    while let Some(row) = rows.next()?
        && uint(row, 1)? <= high
    {
        touched.push((row.get(0)?, decode_column(row, 2)?));
    }
    Ok(touched)
}

fn insert<'a>(
    conn: &Connection,
    chat: &str,
    messages: impl Iterator<Item = Outgoing<'a>>,
) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO message_chunks (chat, last_id, first_id, messages) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    let mut flush = |chunk: &mut Vec<u8>, first: u64, last: u64| {
        insert.execute(params![chat, int(last), int(first), &chunk[..]]).map_err(backend)?;
        chunk.clear();
        Ok::<_, StoreError>(())
    };
    let mut chunk = Vec::new();
    let (mut first, mut last, mut count) = (0, 0, 0);
    for (id, sender, body) in messages {
        if count == MAX_MESSAGES || chunk.len() >= MAX_BYTES {
            flush(&mut chunk, first, last)?;
            count = 0;
        }
        if count == 0 {
            first = id;
        }
        frame::put_u64(&mut chunk, id);
        frame::put_bytes(&mut chunk, sender.as_bytes());
        frame::put_bytes(&mut chunk, body);
        last = id;
        count += 1;
    }
    if count > 0 {
        flush(&mut chunk, first, last)?;
    }
    Ok(())
}

/// `chat`'s stored messages with id < `before`, newest first, at most `limit`.
pub fn history(
    conn: &Connection,
    chat: &str,
    before: Option<u64>,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMessage>> {
    // Message ids are below 2^63, so i64::MAX stands in for "no bound".
    let before = before.map_or(i64::MAX, int);
    let mut page = Vec::new();
    // The one chunk that may hold ids on both sides of `before`.
    let straddling = conn
        .prepare_cached(
            "SELECT first_id, messages FROM message_chunks
             WHERE chat = ?1 AND last_id >= ?2 ORDER BY last_id LIMIT 1",
        )?
        .query_map(params![chat, before], |row| {
            Ok((row.get::<_, i64>(0)?, decode_column(row, 1)?))
        })?
        .next()
        .transpose()?;
    if let Some((first, messages)) = straddling
        && first < before
    {
        page.extend(messages.into_iter().rev().filter(|m| int(m.id) < before));
    }
    let mut statement = conn.prepare_cached(
        "SELECT messages FROM message_chunks
         WHERE chat = ?1 AND last_id < ?2 ORDER BY last_id DESC",
    )?;
    let mut rows = statement.query(params![chat, before])?;
    while page.len() < limit
        && let Some(row) = rows.next()?
    {
        page.extend(decode_column(row, 0)?.into_iter().rev());
    }
    page.truncate(limit);
    Ok(page)
}

/// Whether `chat` has a stored message `id`.
pub fn exists(conn: &Connection, chat: &str, id: u64) -> rusqlite::Result<bool> {
    let chunk = conn
        .prepare_cached(
            "SELECT first_id, messages FROM message_chunks
             WHERE chat = ?1 AND last_id >= ?2 ORDER BY last_id LIMIT 1",
        )?
        .query_map(params![chat, int(id)], |row| Ok((uint(row, 0)?, decode_column(row, 1)?)))?
        .next()
        .transpose()?;
    Ok(chunk.is_some_and(|(first, messages)| first <= id && messages.iter().any(|m| m.id == id)))
}

fn decode_column(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Vec<StoredMessage>> {
    let blob = Bytes::from(row.get::<_, Vec<u8>>(column)?);
    decode(blob).map_err(|e| FromSqlConversionFailure(column, Type::Blob, Box::new(e)))
}

/// A chunk's messages, in id order.
fn decode(chunk: Bytes) -> Result<Vec<StoredMessage>, Damaged> {
    let mut reader = Reader::new(chunk);
    let mut messages = Vec::new();
    while !reader.is_empty() {
        let at = messages.last().map_or(0, |m: &StoredMessage| m.id);
        let damaged = || Damaged { what: "message chunk, after id", at };
        let id = reader.u64().ok_or_else(damaged)?;
        let sender = reader.string().ok_or_else(damaged)?;
        let body = reader.bytes().ok_or_else(damaged)?;
        messages.push(StoredMessage { id, sender, body });
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::schema::open_writer(&dir.path().join("chat.db")).unwrap();
        (dir, conn)
    }

    fn ids(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    /// Each chat's (first, last) ids per chunk, in order.
    fn ranges(conn: &Connection, chat: &str) -> Vec<(u64, u64)> {
        conn.prepare(
            "SELECT first_id, last_id FROM message_chunks WHERE chat = ?1 ORDER BY last_id",
        )
        .unwrap()
        .query_map([chat], |r| Ok((uint(r, 0)?, uint(r, 1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    #[test]
    fn chunks_are_bounded_and_pages_cross_them() {
        let (_dir, conn) = store();
        let bodies: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 10]).collect();
        let messages: Vec<Outgoing> =
            (1..=200).map(|id| (id, "alice", &bodies[id as usize - 1][..])).collect();
        write(&conn, "c", &messages).unwrap();
        let big = vec![7; MAX_BYTES];
        write(&conn, "c", &[(300, "bob", &big), (301, "bob", b"x"), (302, "bob", b"y")]).unwrap();
        assert_eq!(
            ranges(&conn, "c"),
            vec![(1, 64), (65, 128), (129, 192), (193, 200), (300, 300), (301, 302)]
        );

        let newest = history(&conn, "c", None, 3).unwrap();
        assert_eq!(ids(&newest), vec![302, 301, 300]);
        assert_eq!((newest[2].sender.as_str(), newest[2].body.len()), ("bob", MAX_BYTES));
        // A page that starts inside one chunk and runs into the next ones.
        let page = history(&conn, "c", Some(70), 10).unwrap();
        assert_eq!(ids(&page), (60..70).rev().collect::<Vec<_>>());
        assert_eq!(&page[0].body[..], &[68; 10]);
        assert_eq!(ids(&history(&conn, "c", Some(2), 10).unwrap()), vec![1]);
        assert!(history(&conn, "c", Some(1), 10).unwrap().is_empty());
        assert!(history(&conn, "other", None, 10).unwrap().is_empty());

        assert!(exists(&conn, "c", 64).unwrap());
        assert!(exists(&conn, "c", 301).unwrap());
        assert!(!exists(&conn, "c", 250).unwrap());
        assert!(!exists(&conn, "c", 303).unwrap());
        assert!(!exists(&conn, "other", 64).unwrap());
    }

    /// A replayed journal writes stored messages again; an id may land inside a chunk.
    #[test]
    fn overlapping_writes_merge_into_disjoint_chunks() {
        let (_dir, conn) = store();
        write(&conn, "c", &[(10, "a", b"10"), (20, "a", b"20"), (30, "a", b"30")]).unwrap();
        write(&conn, "c", &[(40, "a", b"40")]).unwrap();
        write(&conn, "c", &[(20, "a", b"again"), (25, "b", b"25"), (35, "b", b"35")]).unwrap();
        write(&conn, "c", &[(5, "b", b"5")]).unwrap();
        assert_eq!(ranges(&conn, "c"), vec![(5, 5), (10, 35), (40, 40)]);
        let all = history(&conn, "c", None, 10).unwrap();
        assert_eq!(ids(&all), vec![40, 35, 30, 25, 20, 10, 5]);
        // The stored copy stays.
        assert_eq!(&all[4].body[..], b"20");
        assert!(exists(&conn, "c", 25).unwrap());
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut chunk = Vec::new();
        frame::put_u64(&mut chunk, 9);
        frame::put_bytes(&mut chunk, b"alice");
        frame::put_bytes(&mut chunk, b"body");
        for cut in 0..chunk.len() {
            let result = decode(Bytes::copy_from_slice(&chunk[..cut]));
            assert_eq!(result.is_err(), cut > 0, "cut at {cut}");
        }
        let whole = decode(Bytes::from(chunk)).unwrap();
        assert_eq!(
            (whole[0].id, whole[0].sender.as_str(), &whole[0].body[..]),
            (9, "alice", &b"body"[..])
        );
    }
}
