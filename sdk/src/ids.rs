//! `client_msg_id`s: 128 random-looking bits in hex, unique per message. Built from the clock,
//! a process counter and std's per-process random hash keys, so no RNG crate is needed; the
//! server only needs them unique per sender.

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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let (a, b) = keys();
    let half = |k: &RandomState| k.hash_one((n, nanos, std::process::id()));
    format!("{:016x}{:016x}", half(a), half(b))
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
    }
}
