//! `idle`: opens N idle connections (keep-alive 60 s) with bounded connect concurrency, waits
//! until all are CONNACKed, and reports the broker's RSS growth per connection, read from
//! `/proc/<broker-pid>/status` before and after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::Args;
use crate::mqtt::{self, ConnOpts};
use crate::procfs;
use crate::stats::Summary;

pub async fn run(args: &Args) -> Result<Summary> {
    let n = args.connections;
    let before = args.broker_pid.map(procfs::rss_bytes).transpose()?;
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        let mut o = ConnOpts::new(&args.host, args.port, args.version(), format!("bench-idle-{i}"));
        o.keep_alive = Duration::from_secs(60);
        o.inflight = 1;
        o.channel_cap = 2;
        let (sem, mut stop) = (sem.clone(), stop_rx.clone());
        let (connected, failed, dropped) = (connected.clone(), failed.clone(), dropped.clone());
        set.spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else { return };
            match mqtt::connect(&o).await {
                Ok((_client, mut el, _)) => {
                    drop(permit);
                    connected.fetch_add(1, Ordering::Relaxed);
                    loop {
                        tokio::select! {
                            ev = el.poll() => if ev.is_err() {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                return;
                            },
                            _ = stop.changed() => return,
                        }
                    }
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("idle: first connect failure: {e:#}");
                    }
                }
            }
        });
    }

    // Wait (bounded) until every connection attempt has finished.
    let limit = Duration::from_secs(60 + n / 100);
    loop {
        let done = connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if done >= n || start.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = start.elapsed().as_secs_f64();
    let ok = connected.load(Ordering::Relaxed);
    eprintln!("idle: {ok}/{n} connected in {connect_s:.2}s, settling");
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = args.broker_pid.map(procfs::rss_bytes).transpose()?;
    let still_up = ok.saturating_sub(dropped.load(Ordering::Relaxed));

    let _ = stop_tx.send(true);
    set.shutdown().await;

    let mut s = Summary { scenario: "idle", connections: Some(ok), ..Summary::default() };
    s.elapsed_s = Some(connect_s);
    s.errors = Some(failed.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed));
    if let (Some(b), Some(a)) = (before, after)
        && ok > 0
    {
        s.bytes_per_conn = Some((a as f64 - b as f64) / ok as f64);
        eprintln!("idle: broker RSS {} KiB -> {} KiB", b / 1024, a / 1024);
    }
    if ok < n || still_up < ok {
        s.failure = Some(format!("only {ok}/{n} connected, {still_up} still up at measurement"));
    }
    Ok(s)
}
