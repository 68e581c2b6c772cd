//! Message ids: 64-bit snowflakes, `[42 bits ms since 2024-01-01 UTC][10 bits node][12 bits
//! sequence]`.
//!
//! Ids are assigned by the server, unique across nodes (each node has its own `node_id`) and
//! sortable by time, so a message needs no timestamp on the wire: `sent_at` is read back from
//! its id. A node never hands out an id lower than one it handed out before, even if the wall
//! clock steps back: it keeps counting on its last millisecond, and when those 4096 ids are
//! used up it waits for the next millisecond (or, with the clock behind, moves its own
//! millisecond on by one rather than stall until the clock catches up).

use parking_lot::Mutex;

/// 2024-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_704_067_200_000;

const NODE_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
const TIME_SHIFT: u32 = NODE_BITS + SEQUENCE_BITS;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;
/// The highest node id.
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;

/// A generator of message ids for one node.
#[derive(Debug)]
pub struct Snowflake {
    node: u64,
    /// (last millisecond used, last sequence used in it).
    state: Mutex<(u64, u64)>,
}

impl Snowflake {
    /// None when `node_id` does not fit in 10 bits.
    pub fn new(node_id: u16) -> Option<Snowflake> {
        (node_id <= MAX_NODE_ID)
            .then(|| Snowflake { node: u64::from(node_id), state: Mutex::new((0, MAX_SEQUENCE)) })
    }

    /// The next id, from the wall clock.
    pub fn next_id(&self) -> u64 {
        self.next_with(seed_chat_core::now_millis)
    }

    /// The next id with `clock` giving Unix milliseconds (tests drive it by hand).
    pub fn next_with(&self, clock: impl Fn() -> u64) -> u64 {
        loop {
            let now = clock().saturating_sub(EPOCH_MS);
            let mut state = self.state.lock();
            let (last, sequence) = *state;
            if now > last {
                *state = (now, 0);
                return self.compose(now, 0);
            }
            if sequence < MAX_SEQUENCE {
                *state = (last, sequence + 1);
                return self.compose(last, sequence + 1);
            }
            if now + 1 < last {
                // The clock is well behind us (it stepped back): move on without it.
                *state = (last + 1, 0);
                return self.compose(last + 1, 0);
            }
            drop(state);
            // 4096 ids in this millisecond: wait for the next (well under a millisecond).
            std::thread::yield_now();
        }
    }

    fn compose(&self, ms: u64, sequence: u64) -> u64 {
        (ms << TIME_SHIFT) | (self.node << SEQUENCE_BITS) | sequence
    }
}

/// When an id was made, in Unix milliseconds.
pub fn sent_at(id: u64) -> u64 {
    (id >> TIME_SHIFT) + EPOCH_MS
}

/// The node that made an id.
pub fn node_of(id: u64) -> u16 {
    ((id >> SEQUENCE_BITS) & u64::from(MAX_NODE_ID)) as u16
}

/// The highest id any node can have made by `unix_ms`: anything above it comes from the
/// future and is not a message id.
pub fn ceiling(unix_ms: u64) -> u64 {
    let ms = unix_ms.saturating_sub(EPOCH_MS);
    ((ms + 1) << TIME_SHIFT) - 1
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn node_ids_are_bounded() {
        assert!(Snowflake::new(1023).is_some());
        assert!(Snowflake::new(1024).is_none());
    }

    #[test]
    fn fields_read_back() {
        let ids = Snowflake::new(517).unwrap();
        let at = EPOCH_MS + 123_456_789;
        let id = ids.next_with(|| at);
        assert_eq!(sent_at(id), at);
        assert_eq!(node_of(id), 517);
        assert_eq!(id & MAX_SEQUENCE, 0);
        assert!(id <= ceiling(at));
        assert!(ceiling(at) < ids.next_with(|| at + 1));
    }

    #[test]
    fn real_ids_carry_the_current_time() {
        let ids = Snowflake::new(3).unwrap();
        let before = seed_chat_core::now_millis();
        let id = ids.next_id();
        let after = seed_chat_core::now_millis();
        assert!((before..=after).contains(&sent_at(id)));
    }

    #[test]
    fn monotonic_within_a_millisecond_and_when_the_clock_steps_back() {
        let ids = Snowflake::new(1).unwrap();
        let reads = AtomicU64::new(0);
        // A clock that ticks every 100 reads, and jumps back 8 s after 20 000 reads.
        let clock = || {
            let n = reads.fetch_add(1, Ordering::Relaxed);
            let ms = EPOCH_MS + 10_000 + n / 100;
            if n >= 20_000 { ms - 8_000 } else { ms }
        };
        let mut last = 0;
        for step in 0..50_000u64 {
            let id = ids.next_with(clock);
            assert!(id > last, "step {step}");
            last = id;
        }
        // While the clock was behind, ids kept counting past its last millisecond.
        assert!(sent_at(last) >= EPOCH_MS + 10_000 + 200);
    }

    #[test]
    fn waits_for_the_next_millisecond_when_the_sequence_runs_out() {
        let ids = Snowflake::new(0).unwrap();
        let calls = AtomicU64::new(0);
        // The clock advances only after 5000 reads.
        let clock = || EPOCH_MS + 1 + calls.fetch_add(1, Ordering::Relaxed) / 5000;
        let first: Vec<u64> = (0..4097).map(|_| ids.next_with(clock)).collect();
        assert_eq!(sent_at(first[4095]), EPOCH_MS + 1);
        assert_eq!(sent_at(first[4096]), EPOCH_MS + 2);
        assert!(first.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unique_under_concurrency() {
        let ids = Arc::new(Snowflake::new(9).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..20_000).map(|_| ids.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for thread in threads {
            let mine = thread.join().unwrap();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
            all.extend(mine);
        }
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn nodes_never_collide() {
        let a = Snowflake::new(1).unwrap();
        let b = Snowflake::new(2).unwrap();
        let at = EPOCH_MS + 77;
        let from_a: HashSet<u64> = (0..100).map(|_| a.next_with(|| at)).collect();
        assert!((0..100).all(|_| !from_a.contains(&b.next_with(|| at))));
    }
}
