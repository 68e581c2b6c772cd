//! Shared engine for the `pairs` and `fanout` scenarios: G groups, each one publisher on its own
//! topic with M subscribers. Publishers either run flat out (bounded by the client in-flight
//! window) or follow an open-loop schedule driven by a pacer thread; subscribers track latency
//! (from the scheduled / actual send time), loss and duplicates per stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::Args;
use crate::mqtt::{self, Client, ConnOpts, Ev, EventLoop};
use crate::procfs::CpuMeter;
use crate::stats::{self, Clock, Summary, Tracker};

/// How a scenario maps groups and members to topics and client ids.
pub struct Layout {
    pub scenario: &'static str,
    pub groups: usize,
    pub members: usize,
    pub topic: fn(usize) -> String,
    pub pub_id: fn(usize) -> String,
    pub sub_id: fn(usize, usize) -> String,
}

struct SubResult {
    group: usize,
    tracker: Tracker,
    failed: bool,
}

/// Runs the scenario described by `layout` and summarises it.
pub async fn run(args: &Args, layout: &Layout) -> Result<Summary> {
    let clock = Clock::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));

    // Phase 1: connect and subscribe every subscriber.
    let mut subs = Vec::with_capacity(layout.groups * layout.members);
    for g in 0..layout.groups {
        for m in 0..layout.members {
            subs.push((g, (layout.sub_id)(g, m), (layout.topic)(g)));
        }
    }
    let subs = connect_all(args, subs, true).await.context("connecting subscribers")?;
    eprintln!("{}: {} subscribers ready", layout.scenario, subs.len());
    let mut sub_tasks = JoinSet::new();
    for (g, client, el) in subs {
        let tracker = Tracker::new(true);
        let (delivered, stop) = (delivered.clone(), stop_rx.clone());
        sub_tasks.spawn(receive(g, client, el, tracker, clock, delivered, stop));
    }

    // Phase 2: connect publishers and start their event loops.
    let pubs: Vec<_> = (0..layout.groups).map(|g| (g, (layout.pub_id)(g), String::new())).collect();
    let pubs = connect_all(args, pubs, false).await.context("connecting publishers")?;
    let pub_errors = Arc::new(AtomicU64::new(0));
    let mut drivers = JoinSet::new();
    let mut pub_clients = Vec::with_capacity(pubs.len());
    for (g, client, el) in pubs {
        pub_clients.push((g, client.clone()));
        drivers.spawn(drive(client, el, pub_errors.clone(), stop_rx.clone()));
    }

    // Phase 3: publish.
    let cpu = CpuMeter::start(args.broker_pid).context("reading the broker's CPU time")?;
    let start_ns = clock.now_ns();
    let duration_ns = (args.duration * 1e9) as u64;
    let limit = if args.messages == 0 { u64::MAX } else { args.messages };
    let mut senders = JoinSet::new();
    let mut pacer_txs = Vec::new();
    for (g, client) in pub_clients {
        let topic = (layout.topic)(g);
        let (qos, len) = (args.qos, args.payload);
        if args.rate > 0.0 {
            let (tx, rx) = mpsc::unbounded_channel();
            pacer_txs.push(tx);
            senders.spawn(async move { (g, paced_sender(&client, &topic, qos, len, rx).await) });
        } else {
            let per_pub = split(limit, layout.groups, g);
            let deadline_ns = start_ns.saturating_add(duration_ns);
            senders.spawn(async move {
                (g, max_sender(&client, &topic, qos, len, clock, deadline_ns, per_pub).await)
            });
        }
    }
    let pacer = if args.rate > 0.0 {
        let rate = args.rate;
        Some(tokio::task::spawn_blocking(move || {
            pace(clock, start_ns, duration_ns, rate, limit, pacer_txs)
        }))
    } else {
        None
    };
    let mut sent = vec![0u64; layout.groups];
    while let Some(r) = senders.join_next().await {
        let (g, n) = r.context("publisher task panicked")?;
        if let Some(s) = sent.get_mut(g) {
            *s = n;
        }
    }
    if let Some(p) = pacer {
        p.await.context("pacer panicked")?;
    }
    let sent_total: u64 = sent.iter().sum();
    eprintln!(
        "{}: published {sent_total} in {:.2}s, draining",
        layout.scenario,
        (clock.now_ns() - start_ns) as f64 / 1e9
    );

    // Phase 4: drain until every subscriber has everything or progress stops.
    let expected = sent_total * layout.members as u64;
    let idle_limit = if args.qos == 0 {
        Duration::from_secs_f64(args.drain_timeout.min(1.0))
    } else {
        Duration::from_secs_f64(args.drain_timeout)
    };
    let hard_deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(args.drain_timeout * 10.0);
    let mut last = delivered.load(Ordering::Relaxed);
    let mut last_change = tokio::time::Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && !sub_tasks.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = tokio::time::Instant::now();
        let d = delivered.load(Ordering::Relaxed);
        if d != last {
            last = d;
            last_change = now;
        }
        if now - last_change > idle_limit || now > hard_deadline {
            eprintln!("{}: drain timeout ({d}/{expected} delivered)", layout.scenario);
            break;
        }
    }
    let _ = stop_tx.send(true);
    let cpu_us_per_msg = cpu.per_message_us(delivered.load(Ordering::Relaxed));
    let steal_pct = cpu.steal_pct();

    // Phase 5: collect.
    let mut summary =
        Summary { scenario: layout.scenario, cpu_us_per_msg, steal_pct, ..Summary::default() };
    let (mut received, mut lost, mut dup, mut invalid, mut failed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let mut latency_log = stats::LatencyLog::new(args.latency_log.as_deref());
    let mut last_recv_ns = start_ns;
    while let Some(r) = sub_tasks.join_next().await {
        let r = r.context("subscriber task panicked")?;
        let t = r.tracker;
        let expected_here = sent.get(r.group).copied().unwrap_or(0);
        received += t.unique;
        lost += expected_here.saturating_sub(t.unique);
        dup += t.duplicated;
        invalid += t.invalid;
        failed += u64::from(r.failed);
        last_recv_ns = last_recv_ns.max(t.last_recv_ns);
        latencies.extend_from_slice(&t.latencies_ns);
        latency_log.add(&t);
    }
    while drivers.join_next().await.is_some() {}
    latency_log.write(&clock)?;
    let elapsed = (last_recv_ns - start_ns) as f64 / 1e9;
    summary.sent = Some(sent_total);
    summary.received = Some(received);
    summary.msg_per_s = Some(if elapsed > 0.0 { received as f64 / elapsed } else { 0.0 });
    summary.latency = stats::percentiles(&mut latencies);
    summary.lost = Some(lost);
    summary.duplicated = Some(dup);
    summary.invalid = Some(invalid);
    summary.errors = Some(failed + pub_errors.load(Ordering::Relaxed));
    summary.elapsed_s = Some(elapsed);
    summary.qos = Some(args.qos);
    Ok(summary)
}

/// Share of `total` for publisher `i` of `n` (remainder spread over the first ones).
pub(super) fn split(total: u64, n: usize, i: usize) -> u64 {
    if total == u64::MAX {
        return u64::MAX;
    }
    let n = n.max(1) as u64;
    total / n + u64::from((i as u64) < total % n)
}

/// Connects (and for subscribers, subscribes) clients with bounded concurrency.
async fn connect_all(
    args: &Args,
    specs: Vec<(usize, String, String)>,
    subscribe: bool,
) -> Result<Vec<(usize, Client, EventLoop)>> {
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    for (g, id, topic) in specs {
        let mut o = ConnOpts::new(&args.host, args.port, args.version(), id);
        o.inflight = args.inflight;
        let (sem, qos) = (sem.clone(), args.qos);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let (client, mut el, _) = mqtt::connect(&o).await?;
            if subscribe {
                mqtt::subscribe_and_wait(&client, &mut el, &topic, qos).await?;
            }
            Ok::<_, anyhow::Error>((g, client, el))
        });
    }
    mqtt::join_in_order(set).await
}

/// Subscriber task: records every PUBLISH until told to stop or the connection fails.
async fn receive(
    group: usize,
    client: Client,
    mut el: EventLoop,
    mut tracker: Tracker,
    clock: Clock,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut failed = false;
    loop {
        tokio::select! {
            ev = el.poll() => match ev {
                Ok(Ev::Publish { payload }) => {
                    if tracker.record(&payload, clock.now_ns()) {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber of group {group}: {e:#}");
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
    SubResult { group, tracker, failed }
}

/// Publisher event-loop driver: keeps the connection moving until told to stop.
async fn drive(
    client: Client,
    mut el: EventLoop,
    errors: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            ev = el.poll() => if let Err(e) = ev {
                eprintln!("publisher: {e:#}");
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            },
            _ = stop.changed() => break,
        }
    }
    mqtt::disconnect_and_wait(&client, &mut el, Duration::from_secs(1)).await;
}

/// Publishes as fast as the in-flight window allows until the deadline or `limit` messages.
async fn max_sender(
    client: &Client,
    topic: &str,
    qos: u8,
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
        if client.publish(topic, qos, stats::encode(seq, now, len)).await.is_err() {
            break;
        }
        seq += 1;
    }
    seq
}

/// Publishes each (seq, scheduled time) tick from the pacer, stamping the scheduled time so
/// latency includes any queueing behind a slow broker.
async fn paced_sender(
    client: &Client,
    topic: &str,
    qos: u8,
    len: usize,
    mut rx: mpsc::UnboundedReceiver<(u64, u64)>,
) -> u64 {
    let mut sent = 0u64;
    while let Some((seq, sched_ns)) = rx.recv().await {
        if client.publish(topic, qos, stats::encode(seq, sched_ns, len)).await.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

/// Open-loop schedule: message k is due at start + k/rate and goes to publisher k mod G.
/// Runs on a blocking thread so wake-ups are not limited by tokio's 1 ms timer wheel.
pub(super) fn pace(
    clock: Clock,
    start_ns: u64,
    duration_ns: u64,
    rate: f64,
    limit: u64,
    txs: Vec<mpsc::UnboundedSender<(u64, u64)>>,
) {
    let n = txs.len().max(1) as u64;
    let interval = 1e9 / rate;
    let mut k = 0u64;
    let end_ns = start_ns.saturating_add(duration_ns);
    while k < limit {
        let due = start_ns + (k as f64 * interval) as u64;
        if due >= end_ns {
            break;
        }
        let now = clock.now_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
            continue;
        }
        let idx = usize::try_from(k % n).unwrap_or(0);
        if let Some(tx) = txs.get(idx) {
            // A closed channel means that publisher's connection failed; it is counted as an
            // error elsewhere and its share of the schedule is simply not sent.
            let _ = tx.send((k / n, due));
        }
        k += 1;
    }
}
