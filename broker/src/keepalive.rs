//! Keep-alive for every connection from one timer: a connection that sends nothing for one
//! and a half times its keep-alive is closed ([MQTT-3.1.2-24]).
//!
//! A timer per connection would put a `Sleep` (over a hundred bytes) in every waiting
//! connection, and most connections are idle. Instead a connection records when it last read
//! in its [`Wakeup`], and one sweeper task keeps every connection's deadline in buckets of
//! [`TICK`]. When a bucket comes due, each connection in it that is still silent is told to
//! close (it checks again itself, so a read that raced the sweeper wins); one that has read
//! since is put back under its new deadline. A connection is thus closed within one tick
//! after its deadline, and a busy connection costs the sweeper one look per keep-alive
//! period, not one per packet.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::session::Wakeup;

/// How often the sweeper looks, and so how late past its deadline a connection may close.
pub const TICK: Duration = Duration::from_millis(100);
const TICK_MS: u64 = TICK.as_millis() as u64;

/// The broker's keep-alive sweeper: deadlines by tick, earliest first.
pub struct KeepAlive {
    /// Times are milliseconds since this instant.
    epoch: Instant,
    buckets: Mutex<BTreeMap<u64, Vec<Weak<Wakeup>>>>,
}

impl Default for KeepAlive {
    fn default() -> KeepAlive {
        KeepAlive { epoch: Instant::now(), buckets: Mutex::default() }
    }
}

impl KeepAlive {
    /// Now, in the milliseconds connections record their reads in.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Starts watching a connection whose keep-alive limit (1.5 × its keep-alive) is set in
    /// its wakeup and which has just read.
    pub fn watch(&self, wake: &Arc<Wakeup>) {
        let deadline = wake.last_read_ms() + u64::from(wake.keep_alive_ms());
        self.insert(deadline, Arc::downgrade(wake));
    }

    fn insert(&self, deadline_ms: u64, wake: Weak<Wakeup>) {
        // Rounded up, so a bucket never comes due before the deadlines in it.
        let tick = deadline_ms.div_ceil(TICK_MS);
        self.buckets.lock().entry(tick).or_default().push(wake);
    }

    /// Checks every connection whose deadline has come by `now_ms`.
    fn sweep(&self, now_ms: u64) {
        let due = {
            let mut buckets = self.buckets.lock();
            let later = buckets.split_off(&(now_ms / TICK_MS + 1));
            std::mem::replace(&mut *buckets, later)
        };
        for weak in due.into_values().flatten() {
            // Gone, or finished: nothing to watch any more.
            let Some(wake) = weak.upgrade() else { continue };
            let limit = u64::from(wake.keep_alive_ms());
            if limit == 0 {
                continue;
            }
            if wake.is_silent(now_ms) {
                wake.expire();
                // Looked at again later in case a read raced this and it stays open.
                self.insert(now_ms + limit, weak);
            } else {
                self.insert(wake.last_read_ms() + limit, weak);
            }
        }
    }

    /// Sweeps every tick until the server shuts down.
    pub fn start(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let keep_alive = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let Some(keep_alive) = keep_alive.upgrade() else { return };
                keep_alive.sweep(keep_alive.now_ms());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(keep_alive: &KeepAlive, limit_ms: u32, last_read_ms: u64) -> Arc<Wakeup> {
        let wake = Arc::new(Wakeup::default());
        wake.set_keep_alive(limit_ms, last_read_ms);
        keep_alive.watch(&wake);
        wake
    }

    #[test]
    fn a_silent_connection_expires_once_its_deadline_has_passed() {
        let keep_alive = KeepAlive::default();
        let wake = watched(&keep_alive, 1500, 0);
        keep_alive.sweep(1400);
        assert!(!wake.take_expired());
        keep_alive.sweep(1500);
        assert!(wake.take_expired());
    }

    #[test]
    fn a_read_moves_the_deadline() {
        let keep_alive = KeepAlive::default();
        let wake = watched(&keep_alive, 1500, 0);
        wake.touch(1000);
        keep_alive.sweep(1600);
        assert!(!wake.take_expired(), "read 600 ms ago");
        keep_alive.sweep(2400);
        assert!(!wake.take_expired());
        keep_alive.sweep(2500);
        assert!(wake.take_expired());
    }

    #[test]
    fn finished_or_dropped_connections_are_forgotten() {
        let keep_alive = KeepAlive::default();
        let finished = watched(&keep_alive, 1000, 0);
        finished.set_keep_alive(0, 0);
        drop(watched(&keep_alive, 1000, 0));
        keep_alive.sweep(5000);
        assert!(!finished.take_expired());
        assert!(keep_alive.buckets.lock().is_empty());
    }
}
