//! Measurement bookkeeping: the benchmark clock, the message payload format, per-subscriber
//! receive tracking (latency, loss, duplicates), percentiles, and the one-line / JSON summary.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the payload header: sequence number + send timestamp, both little-endian u64.
pub const HEADER_LEN: usize = 16;

/// Highest sequence number a tracker accepts (bounds the duplicate-detection bitmap).
const MAX_SEQ: u64 = 1 << 28;

/// A monotonic clock shared by publishers and subscribers of one process.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { epoch: Instant::now() }
    }

    /// Nanoseconds since the clock was created.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Builds a payload of `len` bytes (at least [`HEADER_LEN`]) carrying `seq` and `ts_ns`.
pub fn encode(seq: u64, ts_ns: u64, len: usize) -> Bytes {
    let len = len.max(HEADER_LEN);
    let mut b = BytesMut::with_capacity(len);
    b.put_u64_le(seq);
    b.put_u64_le(ts_ns);
    b.resize(len, b'x');
    b.freeze()
}

/// `--latency-log`: every receiver's (send time, latency) pairs, gathered only when a file
/// was asked for, and written once the run is over.
pub struct LatencyLog<'a> {
    path: Option<&'a std::path::Path>,
    rows: Vec<(u64, u64)>,
}

impl<'a> LatencyLog<'a> {
    pub fn new(path: Option<&'a std::path::Path>) -> LatencyLog<'a> {
        LatencyLog { path, rows: Vec::new() }
    }

    /// Takes a receiver's messages.
    pub fn add(&mut self, tracker: &Tracker) {
        if self.path.is_some() {
            let sends = tracker.sent_ns.iter().copied();
            self.rows.extend(sends.zip(tracker.latencies_ns.iter().copied()));
        }
    }

    /// Writes the file, if one was asked for ([`write_latency_log`]).
    pub fn write(self, clock: &Clock) -> anyhow::Result<()> {
        let Some(path) = self.path else { return Ok(()) };
        use anyhow::Context as _;
        write_latency_log(path, clock, self.rows)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Writes one line per delivered message, `sent_unix_us latency_us`, in the order they were
/// sent (`--latency-log`): the send times are wall-clock, to line up with the broker's logs.
pub fn write_latency_log(
    path: &std::path::Path,
    clock: &Clock,
    mut rows: Vec<(u64, u64)>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let epoch_unix_ns =
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX).saturating_sub(clock.now_ns());
    rows.sort_unstable();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (sent_ns, latency_ns) in rows {
        writeln!(out, "{} {}", (epoch_unix_ns + sent_ns) / 1_000, latency_ns / 1_000)?;
    }
    out.flush()
}

/// Parses a payload produced by [`encode`]; `None` if it is too short.
pub fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let ts = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, ts))
}

/// Receive-side accounting for one subscriber of one publisher's stream.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: Vec<u64>,
    pub unique: u64,
    pub duplicated: u64,
    pub invalid: u64,
    pub latencies_ns: Vec<u64>,
    /// When each message in `latencies_ns` was sent (clock nanoseconds), in the same order.
    pub sent_ns: Vec<u64>,
    pub last_recv_ns: u64,
    pub record_latency: bool,
}

impl Tracker {
    pub fn new(record_latency: bool) -> Self {
        Tracker { record_latency, ..Tracker::default() }
    }

    /// Records one received payload at `now_ns`. Returns true if it was a first delivery.
    pub fn record(&mut self, payload: &[u8], now_ns: u64) -> bool {
        let Some((seq, ts)) = decode(payload) else {
            self.invalid += 1;
            return false;
        };
        self.record_seq(seq, ts, now_ns)
    }

    /// Records message `seq` sent at `ts_ns` and received at `now_ns` (for payloads that
    /// carry the two some other way). Returns true if it was a first delivery.
    pub fn record_seq(&mut self, seq: u64, ts: u64, now_ns: u64) -> bool {
        if seq >= MAX_SEQ {
            self.invalid += 1;
            return false;
        }
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1 + word / 2, 0);
        }
        let Some(slot) = self.seen.get_mut(word) else {
            self.invalid += 1;
            return false;
        };
        if *slot & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        *slot |= bit;
        self.unique += 1;
        self.last_recv_ns = self.last_recv_ns.max(now_ns);
        if self.record_latency {
            self.latencies_ns.push(now_ns.saturating_sub(ts));
            self.sent_ns.push(ts);
        }
        true
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Sorts `ns` and returns p50/p99/max (nearest-rank), or `None` when empty.
pub fn percentiles(ns: &mut [u64]) -> Option<Percentiles> {
    if ns.is_empty() {
        return None;
    }
    ns.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * ns.len() as f64).ceil() as usize;
        let idx = rank.saturating_sub(1).min(ns.len() - 1);
        ns[idx] as f64 / 1000.0
    };
    Some(Percentiles { p50_us: at(50.0), p99_us: at(99.0), max_us: at(100.0) })
}

/// The result of one run; `None` fields print as `-`.
#[derive(Debug, Default)]
pub struct Summary {
    pub scenario: &'static str,
    pub label: String,
    pub qos: Option<u8>,
    pub pairs: Option<usize>,
    pub groups: Option<usize>,
    pub members: Option<usize>,
    pub connections: Option<u64>,
    pub sent: Option<u64>,
    pub received: Option<u64>,
    pub msg_per_s: Option<f64>,
    pub latency: Option<Percentiles>,
    pub lost: Option<u64>,
    pub duplicated: Option<u64>,
    pub invalid: Option<u64>,
    pub errors: Option<u64>,
    pub bytes_per_conn: Option<f64>,
    pub elapsed_s: Option<f64>,
    /// Delivery receipts (second ticks) received by senders (chat).
    pub receipts: Option<u64>,
    /// Broker bytes on the wire, both directions, per delivered message (chat).
    pub wire_bytes_per_msg: Option<f64>,
    /// Broker CPU time (user + system) per delivered message, in microseconds, from sending
    /// the first message to the end of the drain (`--broker-pid`).
    pub cpu_us_per_msg: Option<f64>,
    /// The machine's steal time over the same span, in percent of all CPU time: how much
    /// the hypervisor took from this virtual machine (see `procfs::parse_steal`).
    pub steal_pct: Option<f64>,
    /// Set when the run is incomplete in a way that must make the process exit non-zero
    /// (after the summary has still been printed).
    pub failure: Option<String>,
}

enum Val {
    Int(Option<u64>),
    Num(Option<f64>, usize),
    Str(String),
}

impl Summary {
    fn fields(&self) -> Vec<(&'static str, Val)> {
        let lat = self.latency;
        vec![
            ("scenario", Val::Str(self.scenario.to_string())),
            ("label", Val::Str(self.label.clone())),
            ("qos", Val::Int(self.qos.map(u64::from))),
            ("pairs", Val::Int(self.pairs.map(|v| v as u64))),
            ("groups", Val::Int(self.groups.map(|v| v as u64))),
            ("members", Val::Int(self.members.map(|v| v as u64))),
            ("connections", Val::Int(self.connections)),
            ("sent", Val::Int(self.sent)),
            ("received", Val::Int(self.received)),
            ("msg_per_s", Val::Num(self.msg_per_s, 0)),
            ("p50_us", Val::Num(lat.map(|l| l.p50_us), 0)),
            ("p99_us", Val::Num(lat.map(|l| l.p99_us), 0)),
            ("max_us", Val::Num(lat.map(|l| l.max_us), 0)),
            ("lost", Val::Int(self.lost)),
            ("duplicated", Val::Int(self.duplicated)),
            ("invalid", Val::Int(self.invalid)),
            ("errors", Val::Int(self.errors)),
            ("bytes_per_conn", Val::Num(self.bytes_per_conn, 0)),
            ("elapsed_s", Val::Num(self.elapsed_s, 2)),
            ("receipts", Val::Int(self.receipts)),
            ("wire_bytes_per_msg", Val::Num(self.wire_bytes_per_msg, 1)),
            ("cpu_us_per_msg", Val::Num(self.cpu_us_per_msg, 1)),
            ("steal_pct", Val::Num(self.steal_pct, 1)),
        ]
    }

    /// `key=value` pairs separated by spaces; the label is sanitised to contain no spaces.
    pub fn to_line(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.fields() {
            if !out.is_empty() {
                out.push(' ');
            }
            let v = match v {
                Val::Int(Some(i)) => i.to_string(),
                Val::Num(Some(f), prec) => format!("{f:.prec$}"),
                Val::Int(None) | Val::Num(None, _) => "-".to_string(),
                Val::Str(s) if s.is_empty() => "-".to_string(),
                Val::Str(s) => {
                    s.chars().map(|c| if c.is_whitespace() || c == '=' { '_' } else { c }).collect()
                }
            };
            let _ = write!(out, "{k}={v}");
        }
        out
    }

    /// A single-line JSON object; absent values are `null`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields().into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = match v {
                Val::Int(Some(i)) => i.to_string(),
                Val::Num(Some(f), prec) if f.is_finite() => format!("{f:.prec$}"),
                Val::Int(None) | Val::Num(..) => "null".to_string(),
                Val::Str(s) => json_string(&s),
            };
            let _ = write!(out, "\"{k}\":{v}");
        }
        out.push('}');
        out
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        let p = encode(42, 1234, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(decode(&p), Some((42, 1234)));
        assert_eq!(decode(&p[..10]), None);
    }

    #[test]
    fn tracker_counts_dupes_and_invalid() {
        let mut t = Tracker::new(true);
        assert!(t.record(&encode(0, 10, 16), 20));
        assert!(t.record(&encode(1000, 10, 16), 30));
        assert!(!t.record(&encode(0, 10, 16), 40));
        assert!(!t.record(b"short", 40));
        assert!(!t.record(&encode(u64::MAX, 0, 16), 40));
        assert_eq!((t.unique, t.duplicated, t.invalid), (2, 1, 2));
        assert_eq!(t.latencies_ns, vec![10, 20]);
        assert_eq!(t.sent_ns.len(), 2);
    }

    #[test]
    fn latency_log_is_in_send_order_with_wall_clock_times() {
        let clock = Clock::new();
        let path = std::env::temp_dir().join(format!("seed-bench-{}.log", std::process::id()));
        write_latency_log(&path, &clock, vec![(3_000_000, 250_000), (1_000_000, 2_000)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let rows: Vec<(u64, u64)> = text
            .lines()
            .map(|l| {
                let (sent, latency) = l.split_once(' ').unwrap();
                (sent.parse().unwrap(), latency.parse().unwrap())
            })
            .collect();
        let [(first, 2), (second, 250)] = rows[..] else { panic!("{text}") };
        assert_eq!(second - first, 2_000, "microseconds apart as sent");
        let now_us =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
                as u64;
        assert!(now_us.abs_diff(first) < 60_000_000, "{first} is not wall-clock time");
    }

    #[test]
    fn percentile_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = percentiles(&mut v).expect("non-empty");
        assert_eq!((p.p50_us, p.p99_us, p.max_us), (50.0, 99.0, 100.0));
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn line_and_json() {
        let s =
            Summary { scenario: "pairs", label: "a b".into(), qos: Some(1), ..Summary::default() };
        let line = s.to_line();
        assert!(line.starts_with("scenario=pairs label=a_b qos=1 pairs=-"));
        assert!(s.to_json().contains("\"label\":\"a b\""));
    }
}
