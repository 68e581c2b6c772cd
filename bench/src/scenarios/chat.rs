//! `chat`: N pairs of Seed chat users, user A of pair i sending direct messages to user B (one
//! direction, like `pairs`), over the real chat protocol: accounts registered and logged in
//! over HTTP before the timed part, `Outbound{message}` published to `dm/{B}` at QoS 1 (the
//! PUBACK means stored), `Envelope{message}` received on `inbox/{B}`, and the DELIVERED
//! receipt that B's PUBACK triggers received on `inbox/{A}`.
//!
//! The message text is `"{seq}:{send_ns}:"` padded to `--payload` bytes, so latency runs from
//! the scheduled (or actual, flat out) send time to B's receipt of the envelope. Loss and
//! duplicates are counted by the sender's seq and by the server's message id. Bytes on the
//! wire per delivered message come from the server's own counters (`/metrics`, both
//! directions, every packet type, receipts included) read before and after the timed run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use seed_proto::ProstMessage as _;
use seed_proto::topics;
use seed_proto::v1::{self, envelope, outbound, receipt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::pubsub;
use crate::Args;
use crate::http;
use crate::mqtt::{self, Client, ConnOpts, Ev, EventLoop};
use crate::procfs::CpuMeter;
use crate::stats::{self, Clock, Summary, Tracker};

/// The device id every benchmark user logs in with.
const DEVICE: &str = "bench";
/// Password of every benchmark account.
const PASSWORD: &str = "bench-password-1";

/// Counters shared by every connection task.
#[derive(Default)]
struct Shared {
    delivered: AtomicU64,
    receipts: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// Per pair: the highest message id B received, and the highest DELIVERED `up_to` A got.
struct PairMarks {
    received_id: Vec<AtomicU64>,
    receipt_up_to: Vec<AtomicU64>,
}

enum Role {
    Sender,
    Receiver,
}

struct ConnResult {
    pair: usize,
    tracker: Tracker,
    dup_ids: u64,
    invalid: u64,
}

pub async fn run(args: &Args) -> Result<Summary> {
    let http_port = args.http_port.context("chat needs --http-port (Seed's HTTP API)")?;
    let n = args.pairs;
    let tag = run_tag();
    let users: Vec<String> =
        (0..n).flat_map(|i| [format!("b{tag}a{i}"), format!("b{tag}b{i}")]).collect();
    if let Some(bad) = users.iter().find(|u| !topics::valid_user_id(u)) {
        bail!("generated an invalid user id {bad:?}");
    }

    // Phase 1: accounts (argon2 on the server: bounded concurrency, outside the timed part).
    let t0 = std::time::Instant::now();
    let tokens = accounts(args, http_port, &users).await.context("creating accounts")?;
    eprintln!(
        "chat: {} users registered and logged in in {:.1}s",
        users.len(),
        t0.elapsed().as_secs_f64()
    );

    // Phase 2: connect every user and subscribe to its inbox.
    let conns = connect_all(args, &users, &tokens).await.context("connecting users")?;
    eprintln!("chat: {} connections subscribed to their inboxes", conns.len());
    let clock = Clock::new();
    let shared = Arc::new(Shared::default());
    let marks = Arc::new(PairMarks {
        received_id: (0..n).map(|_| AtomicU64::new(0)).collect(),
        receipt_up_to: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut senders = Vec::with_capacity(n);
    for (idx, client, el) in conns {
        let (pair, role) = (idx / 2, if idx % 2 == 0 { Role::Sender } else { Role::Receiver });
        if matches!(role, Role::Sender) {
            senders.push((pair, client.clone()));
        }
        let (shared, marks, stop) = (shared.clone(), marks.clone(), stop_rx.clone());
        tasks.spawn(connection(pair, role, client, el, clock, shared, marks, stop));
    }
    senders.sort_by_key(|(p, _)| *p);

    let before = metrics(args, http_port).await.context("reading /metrics before the run")?;

    // Phase 3: send.
    let cpu = CpuMeter::start(args.broker_pid).context("reading the broker's CPU time")?;
    let start_ns = clock.now_ns();
    let duration_ns = (args.duration * 1e9) as u64;
    let limit = if args.messages == 0 { u64::MAX } else { args.messages };
    let mut jobs = JoinSet::new();
    let mut pacer_txs = Vec::new();
    for (pair, client) in senders {
        let topic = topics::dm(users.get(pair * 2 + 1).map(String::as_str).unwrap_or_default());
        let len = args.payload;
        if args.rate > 0.0 {
            let (tx, rx) = mpsc::unbounded_channel();
            pacer_txs.push(tx);
            jobs.spawn(async move { (pair, paced_sender(&client, &topic, len, rx).await) });
        } else {
            let per = pubsub::split(limit, n, pair);
            let deadline_ns = start_ns.saturating_add(duration_ns);
            jobs.spawn(async move {
                (pair, max_sender(&client, &topic, len, clock, deadline_ns, per).await)
            });
        }
    }
    let pacer = (args.rate > 0.0).then(|| {
        let rate = args.rate;
        tokio::task::spawn_blocking(move || {
            pubsub::pace(clock, start_ns, duration_ns, rate, limit, pacer_txs)
        })
    });
    let mut sent = vec![0u64; n];
    while let Some(r) = jobs.join_next().await {
        let (pair, count) = r.context("sender task panicked")?;
        if let Some(s) = sent.get_mut(pair) {
            *s = count;
        }
    }
    if let Some(p) = pacer {
        p.await.context("pacer panicked")?;
    }
    let sent_total: u64 = sent.iter().sum();
    eprintln!(
        "chat: sent {sent_total} in {:.2}s, draining",
        (clock.now_ns() - start_ns) as f64 / 1e9
    );

    // Phase 4: drain the messages, then the receipts for them.
    let idle = Duration::from_secs_f64(args.drain_timeout);
    let hard = Duration::from_secs_f64(args.drain_timeout * 10.0);
    let all_delivered = || shared.delivered.load(Ordering::Relaxed) >= sent_total;
    let progress = || shared.delivered.load(Ordering::Relaxed);
    if !drain(all_delivered, progress, idle, hard).await {
        eprintln!(
            "chat: drain timeout ({}/{sent_total} delivered)",
            shared.delivered.load(Ordering::Relaxed)
        );
    }
    let receipts_done = || {
        marks
            .received_id
            .iter()
            .zip(&marks.receipt_up_to)
            .all(|(r, u)| u.load(Ordering::Relaxed) >= r.load(Ordering::Relaxed))
    };
    let receipt_progress = || shared.receipts.load(Ordering::Relaxed);
    if !drain(receipts_done, receipt_progress, idle.min(Duration::from_secs(5)), hard).await {
        eprintln!("chat: not every sender got a DELIVERED receipt for its last message");
    }
    let cpu_us_per_msg = cpu.per_message_us(shared.delivered.load(Ordering::Relaxed));
    let steal_pct = cpu.steal_pct();
    let after = metrics(args, http_port).await.context("reading /metrics after the run");
    let _ = stop_tx.send(true);

    // Phase 5: collect.
    let (mut received, mut lost, mut dup, mut dup_ids, mut invalid) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let mut latency_log = stats::LatencyLog::new(args.latency_log.as_deref());
    let mut last_recv_ns = start_ns;
    while let Some(r) = tasks.join_next().await {
        let Some(r) = r.context("connection task panicked")? else { continue };
        let t = r.tracker;
        received += t.unique;
        lost += sent.get(r.pair).copied().unwrap_or(0).saturating_sub(t.unique);
        dup += t.duplicated;
        dup_ids += r.dup_ids;
        invalid += t.invalid + r.invalid;
        last_recv_ns = last_recv_ns.max(t.last_recv_ns);
        latencies.extend_from_slice(&t.latencies_ns);
        latency_log.add(&t);
    }
    if dup_ids != dup {
        eprintln!("chat: duplicates by sender seq {dup}, by message id {dup_ids}");
    }
    latency_log.write(&clock)?;
    let elapsed = (last_recv_ns - start_ns) as f64 / 1e9;
    let refused = shared.refused.load(Ordering::Relaxed);
    if refused > 0 {
        eprintln!("chat: {refused} publishes refused by the server (PUBACK reason code)");
    }
    let mut summary = Summary {
        scenario: "chat",
        pairs: Some(n),
        qos: Some(1),
        sent: Some(sent_total),
        received: Some(received),
        msg_per_s: Some(if elapsed > 0.0 { received as f64 / elapsed } else { 0.0 }),
        latency: stats::percentiles(&mut latencies),
        lost: Some(lost),
        duplicated: Some(dup.max(dup_ids)),
        invalid: Some(invalid),
        errors: Some(shared.errors.load(Ordering::Relaxed) + refused),
        elapsed_s: Some(elapsed),
        receipts: Some(shared.receipts.load(Ordering::Relaxed)),
        cpu_us_per_msg,
        steal_pct,
        ..Summary::default()
    };
    match after {
        Ok(after) => {
            let bytes = |page: &str| {
                http::metric_sum(page, "seed_bytes_received_total")
                    + http::metric_sum(page, "seed_bytes_sent_total")
            };
            let wire = bytes(&after) - bytes(&before);
            if received > 0 {
                summary.wire_bytes_per_msg = Some(wire / received as f64);
            }
            report_hooks(&before, &after);
        }
        Err(e) => eprintln!("chat: {e:#}"),
    }
    Ok(summary)
}

/// A short tag unique to this run, so reruns against the same data directory get new users.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut v = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    let mut s = String::new();
    for _ in 0..8 {
        let d = (v % 36) as u32;
        s.push(char::from_digit(d, 36).unwrap_or('x'));
        v /= 36;
    }
    s
}

/// Registers and logs in every user (device [`DEVICE`]); returns their access tokens.
async fn accounts(args: &Args, http_port: u16, users: &[String]) -> Result<Vec<String>> {
    let sem = Arc::new(Semaphore::new(args.http_concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let (sem, host, user) = (sem.clone(), args.host.clone(), user.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let reg = serde_json::json!({ "username": user, "password": PASSWORD }).to_string();
            let r =
                http::request(&host, http_port, "POST", "/v1/auth/register", Some(&reg)).await?;
            if r.status != 201 {
                bail!("register {user}: HTTP {} {}", r.status, r.text());
            }
            let login = serde_json::json!({
                "username": user, "password": PASSWORD, "device_id": DEVICE
            })
            .to_string();
            let r = http::request(&host, http_port, "POST", "/v1/auth/login", Some(&login)).await?;
            if r.status != 200 {
                bail!("login {user}: HTTP {} {}", r.status, r.text());
            }
            let v: serde_json::Value = serde_json::from_slice(&r.body)
                .with_context(|| format!("login {user}: answer is not JSON"))?;
            let token = v
                .get("access_token")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("login {user}: no access_token in {}", r.text()))?;
            Ok::<_, anyhow::Error>((i, token.to_string()))
        });
    }
    let mut tokens = vec![String::new(); users.len()];
    while let Some(r) = set.join_next().await {
        match r.context("account task panicked")? {
            Ok((i, t)) => {
                if let Some(slot) = tokens.get_mut(i) {
                    *slot = t;
                }
            }
            Err(e) => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    Ok(tokens)
}

/// Connects every user (client id `{user}:bench`, the token as password) and subscribes it
/// to its inbox at QoS 1. Returned in `users` order.
async fn connect_all(
    args: &Args,
    users: &[String],
    tokens: &[String],
) -> Result<Vec<(usize, Client, EventLoop)>> {
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, (user, token)) in users.iter().zip(tokens).enumerate() {
        let mut o =
            ConnOpts::new(&args.host, args.port, args.version(), topics::client_id(user, DEVICE));
        o.inflight = args.inflight;
        o.credentials = Some((user.clone(), token.clone()));
        let (sem, inbox) = (sem.clone(), topics::inbox(user));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let (client, mut el, _) = mqtt::connect(&o).await?;
            mqtt::subscribe_and_wait(&client, &mut el, &inbox, 1).await?;
            Ok::<_, anyhow::Error>((i, client, el))
        });
    }
    mqtt::join_in_order(set).await
}

/// Drives one connection until told to stop: a receiver records messages, a sender counts
/// receipts and refused publishes. `None` for senders (nothing to collect).
#[allow(clippy::too_many_arguments)]
async fn connection(
    pair: usize,
    role: Role,
    client: Client,
    mut el: EventLoop,
    clock: Clock,
    shared: Arc<Shared>,
    marks: Arc<PairMarks>,
    mut stop: watch::Receiver<bool>,
) -> Option<ConnResult> {
    let mut tracker = Tracker::new(true);
    let mut ids = HashSet::new();
    let (mut dup_ids, mut invalid) = (0u64, 0u64);
    let mut failed = false;
    loop {
        tokio::select! {
            ev = el.poll() => match ev {
                Ok(Ev::Publish { payload }) => {
                    let now = clock.now_ns();
                    match v1::Envelope::decode(payload.as_ref()).ok().and_then(|e| e.body) {
                        Some(envelope::Body::Message(m)) => {
                            let Some((seq, ts)) = parse_text(&m.text) else {
                                invalid += 1;
                                continue;
                            };
                            if !ids.insert(m.id) {
                                dup_ids += 1;
                            }
                            if tracker.record_seq(seq, ts, now) {
                                shared.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Some(mark) = marks.received_id.get(pair) {
                                mark.fetch_max(m.id, Ordering::Relaxed);
                            }
                        }
                        Some(envelope::Body::Receipt(r)) if r.kind == receipt::Kind::Delivered as i32 => {
                            shared.receipts.fetch_add(1, Ordering::Relaxed);
                            if let Some(mark) = marks.receipt_up_to.get(pair) {
                                mark.fetch_max(r.up_to, Ordering::Relaxed);
                            }
                        }
                        Some(_) => {}
                        None => invalid += 1,
                    }
                }
                Ok(Ev::PubAck { ok: false }) => {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("chat: connection of pair {pair}: {e:#}");
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    failed = true;
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    if !failed {
        mqtt::disconnect_and_wait(&client, &mut el, Duration::from_secs(1)).await;
    }
    match role {
        Role::Receiver => Some(ConnResult { pair, tracker, dup_ids, invalid }),
        Role::Sender => {
            // Anything but receipts in a sender's inbox is unexpected here.
            (tracker.unique + invalid > 0).then_some(ConnResult {
                pair: usize::MAX,
                tracker: Tracker::default(),
                dup_ids: 0,
                invalid: tracker.unique + invalid,
            })
        }
    }
}

/// Waits until `done()` or until `progress()` stands still for `idle` (or `hard` passes).
/// True when done.
async fn drain(
    done: impl Fn() -> bool,
    progress: impl Fn() -> u64,
    idle: Duration,
    hard: Duration,
) -> bool {
    let start = tokio::time::Instant::now();
    let mut last = progress();
    let mut last_change = start;
    while !done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = tokio::time::Instant::now();
        let p = progress();
        if p != last {
            last = p;
            last_change = now;
        }
        if now - last_change > idle || now - start > hard {
            return done();
        }
    }
    true
}

/// `Outbound{message{client_msg_id, text}}` with text `"{seq}:{ts_ns}:"` padded to `len`.
fn outbound(seq: u64, ts_ns: u64, len: usize) -> Bytes {
    let mut text = format!("{seq}:{ts_ns}:");
    if text.len() < len {
        text.extend(std::iter::repeat_n('x', len - text.len()));
    }
    let message = v1::Message { client_msg_id: seq.to_string(), text, ..Default::default() };
    let body = Some(outbound::Body::Message(message));
    Bytes::from(v1::Outbound { body }.encode_to_vec())
}

/// The (seq, send time) of a benchmark message text.
fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.splitn(3, ':');
    let seq = parts.next()?.parse().ok()?;
    let ts = parts.next()?.parse().ok()?;
    Some((seq, ts))
}

/// Sends as fast as the in-flight window allows until the deadline or `limit` messages.
async fn max_sender(
    client: &Client,
    topic: &str,
    len: usize,
    clock: Clock,
    deadline_ns: u64,
    limit: u64,
) -> u64 {
    let mut seq = 0u64;
    while seq < limit {
        let now = clock.now_ns();
        if now >= deadline_ns {
            break;
        }
        if client.publish(topic, 1, outbound(seq, now, len)).await.is_err() {
            break;
        }
        seq += 1;
    }
    seq
}

/// Sends each (seq, scheduled time) tick from the pacer, stamped with the scheduled time.
async fn paced_sender(
    client: &Client,
    topic: &str,
    len: usize,
    mut rx: mpsc::UnboundedReceiver<(u64, u64)>,
) -> u64 {
    let mut sent = 0u64;
    while let Some((seq, sched_ns)) = rx.recv().await {
        if client.publish(topic, 1, outbound(seq, sched_ns, len)).await.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

async fn metrics(args: &Args, http_port: u16) -> Result<String> {
    let r = http::request(&args.host, http_port, "GET", "/metrics", None).await?;
    if r.status != 200 {
        bail!("GET /metrics: HTTP {}", r.status);
    }
    Ok(r.text())
}

/// Prints, per plugin hook, the calls and mean duration during the run (stderr).
fn report_hooks(before: &str, after: &str) {
    let delta = |name: &str| -> BTreeMap<String, f64> {
        let b = http::metric_samples(before, name);
        http::metric_samples(after, name)
            .into_iter()
            .map(|(k, v)| {
                let d = v - b.get(&k).copied().unwrap_or(0.0);
                (k, d)
            })
            .collect()
    };
    let sums = delta("seed_hook_duration_seconds_sum");
    let counts = delta("seed_hook_duration_seconds_count");
    for (labels, count) in counts {
        if count <= 0.0 {
            continue;
        }
        let sum = sums.get(&labels).copied().unwrap_or(0.0);
        eprintln!(
            "chat: hook {{{labels}}} calls={count:.0} mean_us={:.1} total_s={sum:.3}",
            sum / count * 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip() {
        let b = outbound(7, 123_456, 64);
        let o = v1::Outbound::decode(b.as_ref()).unwrap();
        let Some(outbound::Body::Message(m)) = o.body else { panic!("not a message") };
        assert_eq!(m.text.len(), 64);
        assert_eq!(m.client_msg_id, "7");
        assert_eq!(parse_text(&m.text), Some((7, 123_456)));
        assert_eq!(parse_text("garbage"), None);
    }

    #[test]
    fn tags_are_valid_in_user_ids() {
        let tag = run_tag();
        assert_eq!(tag.len(), 8);
        assert!(topics::valid_user_id(&format!("b{tag}a9999")));
    }
}
