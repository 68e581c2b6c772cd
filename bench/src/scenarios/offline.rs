//! `offline`: a persistent-session subscriber (clean_session=false, or clean_start=false with a
//! session expiry on MQTT 5) subscribes at QoS 1 and disconnects; a publisher then sends
//! `--messages` QoS 1 messages; the subscriber reconnects and we time the replay of the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::Args;
use crate::mqtt::{self, ConnOpts, Ev};
use crate::stats::{self, Clock, Summary, Tracker};

const TOPIC: &str = "bench/offline";
const SUB_ID: &str = "bench-offline-sub";
const PUB_ID: &str = "bench-offline-pub";
/// Hard cap on the replay phase regardless of progress.
const REPLAY_CAP: Duration = Duration::from_secs(300);

fn sub_opts(args: &Args, clean: bool) -> ConnOpts {
    let mut o = ConnOpts::new(&args.host, args.port, args.version(), SUB_ID.to_string());
    o.clean = clean;
    o.session_expiry = Some(3600);
    o.inflight = args.inflight;
    o
}

pub async fn run(args: &Args) -> Result<Summary> {
    let clock = Clock::new();
    let total = if args.messages == 0 { 20_000 } else { args.messages };
    let wait = Duration::from_secs(2);

    // 1. Wipe any earlier session, then create a persistent one with a QoS 1 subscription.
    let (c, mut el, _) = mqtt::connect(&sub_opts(args, true)).await.context("subscriber")?;
    mqtt::disconnect_and_wait(&c, &mut el, wait).await;
    drop((c, el));
    let (c, mut el, _) = mqtt::connect(&sub_opts(args, false)).await.context("subscriber")?;
    mqtt::subscribe_and_wait(&c, &mut el, TOPIC, 1).await?;
    mqtt::disconnect_and_wait(&c, &mut el, wait).await;
    drop((c, el));

    // 2. Publish everything at QoS 1 and wait for every PUBACK.
    let mut o = ConnOpts::new(&args.host, args.port, args.version(), PUB_ID.to_string());
    o.inflight = args.inflight;
    let (pc, mut pel, _) = mqtt::connect(&o).await.context("publisher")?;
    let acked = Arc::new(AtomicU64::new(0));
    let acked2 = acked.clone();
    let driver = tokio::spawn(async move {
        let deadline = Instant::now() + REPLAY_CAP;
        while acked2.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, pel.poll()).await {
                Ok(Ok(Ev::PubAck { .. })) => {
                    acked2.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        Ok(pel)
    });
    let pub_start = Instant::now();
    let mut sent = 0u64;
    for seq in 0..total {
        if pc.publish(TOPIC, 1, stats::encode(seq, clock.now_ns(), args.payload)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let mut pel = driver.await.context("publisher driver panicked")?.context("publisher")?;
    let acks = acked.load(Ordering::Relaxed);
    mqtt::disconnect_and_wait(&pc, &mut pel, wait).await;
    eprintln!(
        "offline: published {sent} ({acks} acked) in {:.2}s, reconnecting subscriber",
        pub_start.elapsed().as_secs_f64()
    );
    if acks < sent {
        bail!("only {acks}/{sent} QoS 1 publishes were acknowledged");
    }

    // 3. Reconnect the subscriber and time the replay.
    let t0 = clock.now_ns();
    let (c, mut el, session_present) =
        mqtt::connect(&sub_opts(args, false)).await.context("subscriber reconnect")?;
    if !session_present {
        eprintln!("offline: broker reported no session present on reconnect");
    }
    let mut tracker = Tracker::new(false);
    let idle = Duration::from_secs_f64(args.drain_timeout);
    let cap = Instant::now() + REPLAY_CAP;
    let mut errors = 0u64;
    while tracker.unique < sent {
        let until = (Instant::now() + idle).min(cap);
        match tokio::time::timeout_at(until, el.poll()).await {
            Ok(Ok(Ev::Publish { payload })) => {
                tracker.record(&payload, clock.now_ns());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                eprintln!("offline: subscriber connection failed: {e:#}");
                errors += 1;
                break;
            }
            Err(_) => {
                eprintln!("offline: replay stalled at {}/{sent}", tracker.unique);
                break;
            }
        }
    }
    // Catch duplicates that arrive right behind the last new message.
    let linger = Instant::now() + Duration::from_millis(200);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(linger, el.poll()).await {
        if let Ev::Publish { payload } = ev {
            tracker.record(&payload, clock.now_ns());
        }
    }
    if errors == 0 {
        // Leave no persistent session behind.
        mqtt::disconnect_and_wait(&c, &mut el, wait).await;
        drop((c, el));
        if let Ok((c, mut el, _)) = mqtt::connect(&sub_opts(args, true)).await {
            mqtt::disconnect_and_wait(&c, &mut el, wait).await;
        }
    }

    let elapsed = tracker.last_recv_ns.saturating_sub(t0) as f64 / 1e9;
    let mut s = Summary { scenario: "offline", qos: Some(1), ..Summary::default() };
    s.sent = Some(sent);
    s.received = Some(tracker.unique);
    s.msg_per_s = Some(if elapsed > 0.0 { tracker.unique as f64 / elapsed } else { 0.0 });
    s.lost = Some(sent.saturating_sub(tracker.unique));
    s.duplicated = Some(tracker.duplicated);
    s.invalid = Some(tracker.invalid);
    s.errors = Some(errors);
    s.elapsed_s = Some(elapsed);
    Ok(s)
}
