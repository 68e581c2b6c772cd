//! The broker's counters and their Prometheus text rendering (`GET /metrics`).
//!
//! Plain atomics in one struct: counting is on every packet's path, so it must cost a relaxed
//! increment and nothing more. Families with a label (packet type, drop reason, hook) are
//! fixed-size arrays or registered once, so the hot path never takes a lock.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

/// The packet types, indexed by their MQTT control packet type number.
const PACKET_TYPES: [&str; 16] = [
    "reserved",
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

/// Why a message was not delivered to a subscriber (or not accepted at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber's outgoing queue was full (slow consumer).
    QueueFull,
    /// The message expiry interval passed before delivery.
    Expired,
    /// Larger than the subscriber's maximum packet size.
    PacketTooLarge,
    /// A hook denied the publish.
    Denied,
    /// Published to a topic nobody subscribes to.
    NoSubscribers,
    /// The session it was queued for expired.
    SessionExpired,
}

const DROP_REASONS: [(DropReason, &str); 6] = [
    (DropReason::QueueFull, "queue_full"),
    (DropReason::Expired, "expired"),
    (DropReason::PacketTooLarge, "packet_too_large"),
    (DropReason::Denied, "denied"),
    (DropReason::NoSubscribers, "no_subscribers"),
    (DropReason::SessionExpired, "session_expired"),
];

/// Latency buckets for hook calls, in seconds.
const LATENCY_BUCKETS: [f64; 12] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0];

#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    /// Open sockets, including those still in their handshake.
    pub sockets: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub sessions: AtomicI64,
    pub retained: AtomicI64,
    pub subscriptions: AtomicI64,
    packets_in: [AtomicU64; 16],
    packets_out: [AtomicU64; 16],
    bytes_in: [AtomicU64; 16],
    bytes_out: [AtomicU64; 16],
    dropped: [AtomicU64; DROP_REASONS.len()],
    hooks: Mutex<Vec<Arc<HookStats>>>,
    observer_drops: Mutex<Vec<(String, Arc<AtomicU64>)>>,
}

/// Counts an open socket for as long as it lives: made when the socket is accepted, dropped
/// with the connection that ends up owning it.
pub struct SocketGuard(Arc<Metrics>);

impl SocketGuard {
    pub fn new(metrics: &Arc<Metrics>) -> SocketGuard {
        metrics.sockets.fetch_add(1, Relaxed);
        SocketGuard(metrics.clone())
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Relaxed);
    }
}

/// Calls, errors, timeouts and latency of one plugin's one hook.
pub struct HookStats {
    plugin: String,
    hook: &'static str,
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_nanos: AtomicU64,
}

impl HookStats {
    pub fn observe(&self, elapsed: Duration) {
        self.calls.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(elapsed.as_nanos() as u64, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
    }
}

impl Metrics {
    pub fn packet_in(&self, packet_type: u8, bytes: usize) {
        let i = usize::from(packet_type & 0x0f);
        self.packets_in[i].fetch_add(1, Relaxed);
        self.bytes_in[i].fetch_add(bytes as u64, Relaxed);
    }

    pub fn packet_out(&self, packet_type: u8, bytes: usize) {
        let i = usize::from(packet_type & 0x0f);
        self.packets_out[i].fetch_add(1, Relaxed);
        self.bytes_out[i].fetch_add(bytes as u64, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) {
        if let Some(i) = DROP_REASONS.iter().position(|(r, _)| *r == reason) {
            self.dropped[i].fetch_add(1, Relaxed);
        }
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        DROP_REASONS
            .iter()
            .position(|(r, _)| *r == reason)
            .map_or(0, |i| self.dropped[i].load(Relaxed))
    }

    /// The stats slot for one plugin's hook, created on first use (at start-up, not per call).
    pub fn hook(&self, plugin: &str, hook: &'static str) -> Arc<HookStats> {
        let mut hooks = self.hooks.lock();
        if let Some(stats) = hooks.iter().find(|s| s.plugin == plugin && s.hook == hook) {
            return stats.clone();
        }
        let stats = Arc::new(HookStats {
            plugin: plugin.to_owned(),
            hook,
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
        });
        hooks.push(stats.clone());
        stats
    }

    /// The drop counter of one plugin's observer queue.
    pub fn observer_drops(&self, plugin: &str) -> Arc<AtomicU64> {
        let mut drops = self.observer_drops.lock();
        if let Some((_, counter)) = drops.iter().find(|(p, _)| p == plugin) {
            return counter.clone();
        }
        let counter = Arc::new(AtomicU64::new(0));
        drops.push((plugin.to_owned(), counter.clone()));
        counter
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        gauge(
            &mut out,
            "seed_connections",
            "Open client connections.",
            self.connections.load(Relaxed),
        );
        gauge(
            &mut out,
            "seed_sockets",
            "Open sockets, handshakes included.",
            self.sockets.load(Relaxed),
        );
        counter(
            &mut out,
            "seed_connections_total",
            "Connections accepted.",
            self.connections_total.load(Relaxed),
        );
        counter(
            &mut out,
            "seed_connections_refused_total",
            "Connections refused by the connection limit.",
            self.connections_refused.load(Relaxed),
        );
        gauge(
            &mut out,
            "seed_sessions",
            "Sessions held, connected or not.",
            self.sessions.load(Relaxed),
        );
        gauge(
            &mut out,
            "seed_retained_messages",
            "Retained messages.",
            self.retained.load(Relaxed),
        );
        gauge(&mut out, "seed_subscriptions", "Subscriptions.", self.subscriptions.load(Relaxed));
        by_packet(
            &mut out,
            "seed_packets_received_total",
            "Packets received by type.",
            &self.packets_in,
        );
        by_packet(&mut out, "seed_packets_sent_total", "Packets sent by type.", &self.packets_out);
        by_packet(
            &mut out,
            "seed_bytes_received_total",
            "Bytes received by packet type.",
            &self.bytes_in,
        );
        by_packet(&mut out, "seed_bytes_sent_total", "Bytes sent by packet type.", &self.bytes_out);

        let _ = writeln!(out, "# HELP seed_messages_dropped_total Messages dropped, by reason.");
        let _ = writeln!(out, "# TYPE seed_messages_dropped_total counter");
        for (i, (_, name)) in DROP_REASONS.iter().enumerate() {
            let n = self.dropped[i].load(Relaxed);
            let _ = writeln!(out, "seed_messages_dropped_total{{reason=\"{name}\"}} {n}");
        }

        let hooks = self.hooks.lock().clone();
        if !hooks.is_empty() {
            for (name, help) in [
                ("seed_hook_calls_total", "Hook calls."),
                ("seed_hook_errors_total", "Hook calls that failed or panicked."),
                ("seed_hook_timeouts_total", "Hook calls that missed their deadline."),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for s in &hooks {
                    let n = match name {
                        "seed_hook_calls_total" => s.calls.load(Relaxed),
                        "seed_hook_errors_total" => s.errors.load(Relaxed),
                        _ => s.timeouts.load(Relaxed),
                    };
                    let _ =
                        writeln!(out, "{name}{{plugin=\"{}\",hook=\"{}\"}} {n}", s.plugin, s.hook);
                }
            }
            let name = "seed_hook_duration_seconds";
            let _ = writeln!(out, "# HELP {name} Hook call latency.\n# TYPE {name} histogram");
            for s in &hooks {
                let labels = format!("plugin=\"{}\",hook=\"{}\"", s.plugin, s.hook);
                let mut cumulative = 0;
                for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                    cumulative += s.buckets[i].load(Relaxed);
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                let calls = s.calls.load(Relaxed);
                let sum = s.sum_nanos.load(Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {calls}");
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {calls}");
            }
        }

        let drops = self.observer_drops.lock().clone();
        if !drops.is_empty() {
            let name = "seed_observer_events_dropped_total";
            let _ = writeln!(out, "# HELP {name} Observer events dropped on a full queue.");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (plugin, n) in &drops {
                let _ = writeln!(out, "{name}{{plugin=\"{plugin}\"}} {}", n.load(Relaxed));
            }
        }
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

fn by_packet(out: &mut String, name: &str, help: &str, values: &[AtomicU64; 16]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (i, kind) in PACKET_TYPES.iter().enumerate().skip(1) {
        let _ = writeln!(out, "{name}{{type=\"{kind}\"}} {}", values[i].load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.packet_in(3, 100);
        m.dropped(DropReason::QueueFull);
        m.hook("acl", "authorize").observe(Duration::from_micros(70));
        let text = m.render();
        assert!(text.contains("seed_packets_received_total{type=\"publish\"} 1"));
        assert!(text.contains("seed_bytes_received_total{type=\"publish\"} 100"));
        assert!(text.contains("seed_messages_dropped_total{reason=\"queue_full\"} 1"));
        assert!(text.contains(
            "seed_hook_duration_seconds_bucket{plugin=\"acl\",hook=\"authorize\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains(
            "seed_hook_duration_seconds_bucket{plugin=\"acl\",hook=\"authorize\",le=\"0.00005\"} 0"
        ));
    }
}
