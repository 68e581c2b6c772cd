//! Inbox chunks: the entries one commit appends to one inbox, kept as one row.
//!
//! A busy inbox gets many entries per group commit. One row per entry cost a B-tree insert,
//! an index insert and a head update each; one row per (inbox, commit) costs that once per
//! commit however many entries it holds. The seqs of a chunk are contiguous (the writer
//! assigns an inbox's seqs in order within a transaction), so a row stores only its first
//! and last seq and the entries themselves, each framed as:
//!
//! ```text
//! u32 BE  envelope length | envelope | u32 BE  skip_device length + 1, or 0 for none | skip_device
//! ```
//!
//! (`frame.rs`), which the migration from one row per entry writes from SQL.

use bytes::Bytes;
use seed_chat_core::InboxEntry;

use crate::frame::{self, Damaged, Reader};

/// Appends one entry's frame to a chunk being built.
pub fn push(chunk: &mut Vec<u8>, envelope: &[u8], skip_device: Option<&str>) {
    frame::put_bytes(chunk, envelope);
    frame::put_optional(chunk, skip_device);
}

/// The entries of a chunk whose first entry has `first_seq`, skipping those at or below
/// `after`, at most `limit` (appended to `out`).
pub fn read(
    chunk: Bytes,
    first_seq: u64,
    created_at: u64,
    after: u64,
    limit: usize,
    out: &mut Vec<InboxEntry>,
) -> Result<(), Damaged> {
    let mut reader = Reader::new(chunk);
    let mut seq = first_seq;
    while !reader.is_empty() && out.len() < limit {
        let damaged = || Damaged { what: "inbox chunk, seq", at: seq };
        let envelope = reader.bytes().ok_or_else(damaged)?;
        let skip_device = reader.optional().ok_or_else(damaged)?;
        if seq > after {
            out.push(InboxEntry { seq, envelope, skip_device, created_at });
        }
        seq += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_paging() {
        let mut chunk = Vec::new();
        push(&mut chunk, b"one", None);
        push(&mut chunk, b"", Some("phone"));
        push(&mut chunk, b"three", Some(""));
        let chunk = Bytes::from(chunk);

        let mut all = Vec::new();
        read(chunk.clone(), 10, 7, 0, 100, &mut all).unwrap();
        let seen: Vec<_> =
            all.iter().map(|e| (e.seq, &e.envelope[..], e.skip_device.as_deref())).collect();
        assert_eq!(
            seen,
            vec![(10, &b"one"[..], None), (11, &b""[..], Some("phone")), (12, b"three", Some(""))]
        );
        assert!(all.iter().all(|e| e.created_at == 7));

        let mut page = Vec::new();
        read(chunk, 10, 7, 10, 1, &mut page).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 11);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut chunk = Vec::new();
        push(&mut chunk, b"envelope", Some("device"));
        for cut in 0..chunk.len() {
            let mut out = Vec::new();
            let result = read(Bytes::copy_from_slice(&chunk[..cut]), 1, 0, 0, 10, &mut out);
            assert_eq!(result.is_err(), cut > 0, "cut at {cut}");
        }
        let mut out = Vec::new();
        let huge = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(read(huge, 1, 0, 0, 10, &mut out).is_err());
    }
}
