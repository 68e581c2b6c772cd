//! `client_msg_id`s: 128 bits in hex, unique per message and ordered by time, like a ULID:
//! 48 bits of milliseconds, then 80 bits from a process counter and std's per-process random
//! hash keys (no RNG crate needed). The server only needs them unique per sender; ordered by
//! time, a sender's keys land next to each other in the store's idempotency index instead of
//! on a random page each.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn keys() -> &'static (RandomState, RandomState) {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    KEYS.get_or_init(|| (RandomState::new(), RandomState::new()))
}

/// A fresh idempotency key, 32 hex digits.
pub fn client_msg_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let millis = now.as_millis() as u64 & 0xffff_ffff_ffff;
    let (a, b) = keys();
    let random = |k: &RandomState| k.hash_one((n, now.as_nanos(), std::process::id()));
    // 12 hex digits of time, 4 of counter, 16 random: sortable, unique within a process.
    format!("{millis:012x}{:04x}{:016x}", n & 0xffff, random(a) ^ random(b).rotate_left(17))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_and_hex() {
        let a = super::client_msg_id();
        let b = super::client_msg_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a[..12] <= b[..12], "time comes first");
    }
}
