//! Per-user send rate limits: a token bucket per sender.
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`; each message takes one.
//! Buckets are created on first use and pruned when full again (an idle user costs nothing),
//! all behind one short lock: the work per message is a few arithmetic operations.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    settings: Mutex<RateSettings>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> RateLimiter {
        RateLimiter { settings: Mutex::new(settings), buckets: Mutex::default() }
    }

    /// New limits (reload); buckets keep their tokens, capped at the new burst.
    pub fn set(&self, settings: RateSettings) {
        *self.settings.lock() = settings;
    }

    /// Takes a token from `user`'s bucket; false when it is empty.
    pub fn try_take(&self, user: &str) -> bool {
        self.try_take_at(user, Instant::now())
    }

    pub fn try_take_at(&self, user: &str, now: Instant) -> bool {
        let settings = *self.settings.lock();
        let burst = f64::from(settings.burst);
        let mut buckets = self.buckets.lock();
        let bucket = match buckets.get_mut(user) {
            Some(bucket) => bucket,
            None => {
                buckets.entry(user.to_owned()).or_insert(Bucket { tokens: burst, updated: now })
            }
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * settings.per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have refilled completely (they equal a fresh one).
    pub fn prune(&self, now: Instant) {
        let settings = *self.settings.lock();
        let burst = f64::from(settings.burst);
        self.buckets.lock().retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * settings.per_second < burst
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(RateSettings { per_second: 10.0, burst: 3 });
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.try_take_at("alice", t0)));
        assert!(!limiter.try_take_at("alice", t0));
        // Another user has a bucket of their own.
        assert!(limiter.try_take_at("bob", t0));
        // 100 ms at 10/s is one token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.try_take_at("alice", t1));
        assert!(!limiter.try_take_at("alice", t1));
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert!((0..3).all(|_| limiter.try_take_at("alice", t2)));
        assert!(!limiter.try_take_at("alice", t2));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = RateLimiter::new(RateSettings { per_second: 1.0, burst: 2 });
        let t0 = Instant::now();
        assert!(limiter.try_take_at("alice", t0));
        limiter.prune(t0);
        assert_eq!(limiter.len(), 1);
        limiter.prune(t0 + Duration::from_secs(5));
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn new_settings_apply() {
        let limiter = RateLimiter::new(RateSettings { per_second: 1.0, burst: 1 });
        let t0 = Instant::now();
        assert!(limiter.try_take_at("alice", t0));
        assert!(!limiter.try_take_at("alice", t0));
        limiter.set(RateSettings { per_second: 1000.0, burst: 5 });
        assert!(limiter.try_take_at("alice", t0 + Duration::from_millis(10)));
    }
}
