//! The crash test of the chat path: several senders push ≥10,000 QoS 1 messages (each with its
//! own `client_msg_id` and counter) while the server is SIGKILLed at random moments and
//! restarted on the same data directory and ports. The SDK reconnects and resends what was
//! not acknowledged, with the same `client_msg_id`. Afterwards every PUBACKed message has
//! reached its recipient, and no message was stored twice (one id per client_msg_id, one seq
//! per id). QoS 1 may redeliver an inbox entry after a reconnect; the SDK drops those by seq.
//!
//! `SEED_KILL_MESSAGES` sets the total (default 10000); `SEED_KILL_SEED` replays a run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Seed;
use common::chat::{self, Event, v1};

const PAIRS: usize = 4;
/// Concurrent sends per sender.
const WORKERS: usize = 64;

/// A tiny seeded PRNG (xorshift64*), so a failing run can be replayed from its printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one receiver saw: (seq, id, text) per surfaced message.
type Seen = Arc<Mutex<Vec<(u64, u64, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill_and_are_stored_once() {
    let total: usize =
        std::env::var("SEED_KILL_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let rng_seed: u64 =
        std::env::var("SEED_KILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 | 1
        });
    println!("chat_kill: SEED_KILL_SEED={rng_seed} SEED_KILL_MESSAGES={total}");
    let mut rng = XorShift(rng_seed);
    let kills = 3 + rng.below(3) as usize;
    // Kill moments as fractions of the acknowledged total, spread over the run.
    let mut thresholds: Vec<usize> =
        (0..kills).map(|_| total * (5 + rng.below(85) as usize) / 100).collect();
    thresholds.sort_unstable();
    println!("chat_kill: {kills} kills at acked counts {thresholds:?}");

    let started = Instant::now();
    let mut seed = Seed::start();
    let per_pair = total.div_ceil(PAIRS);
    let acked = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for pair in 0..PAIRS {
        let from = chat::register(&seed, &format!("s{pair}")).await;
        let to = chat::register(&seed, &format!("r{pair}")).await;
        let (_, sender) = chat::device(&seed, &from, "phone").await;
        let (_, receiver) = chat::device(&seed, &to, "phone").await;

        // The receiver collects every message it is shown, across reconnects.
        let seen: Seen = Arc::default();
        let (receiver_handle, mut events) = receiver.split();
        let log = seen.clone();
        let collector = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Message { seq, message } => {
                        log.lock().unwrap().push((seq, message.id, message.text))
                    }
                    Event::Disconnected { reconnecting: false, reason } => {
                        panic!("receiver gave up: {reason}")
                    }
                    _ => {}
                }
            }
        });
        // Kept: dropping every handle of a client disconnects it.
        receivers.push((to.clone(), seen, collector, receiver_handle));

        // The sender: WORKERS tasks draw counters; each send is retried with the same
        // client_msg_id until it is acknowledged (the SDK itself resends across reconnects).
        let (handle, mut sender_events) = sender.split();
        tokio::spawn(async move { while sender_events.recv().await.is_some() {} });
        let next = Arc::new(AtomicUsize::new(0));
        let acked_texts: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (handle, next, to, acked, acked_texts) =
                (handle.clone(), next.clone(), to.clone(), acked.clone(), acked_texts.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= per_pair {
                        return;
                    }
                    let text = format!("p{pair}:{k}");
                    let message = v1::Message {
                        client_msg_id: format!("kill-{pair}-{k}"),
                        text: text.clone(),
                        ..Default::default()
                    };
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match handle.send_message(&to, message.clone()).await {
                            Ok(_) => break,
                            Err(e) => {
                                assert!(Instant::now() < deadline, "{text} never acked: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    acked_texts.lock().unwrap().push(text);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        senders.push((workers, acked_texts));
    }

    // The killer: SIGKILL and restart whenever the acked count passes the next threshold.
    let total_sent = per_pair * PAIRS;
    let mut next_kill = 0;
    let send_deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < total_sent {
        assert!(
            Instant::now() < send_deadline,
            "only {} of {total_sent} acked",
            acked.load(Ordering::Relaxed)
        );
        if next_kill < thresholds.len() && acked.load(Ordering::Relaxed) >= thresholds[next_kill] {
            let at = acked.load(Ordering::Relaxed);
            tokio::task::block_in_place(|| seed.restart());
            println!("chat_kill: kill {} at {at} acked ({:?})", next_kill + 1, started.elapsed());
            next_kill += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A sender outran a late threshold: kill anyway, so every run kills `kills` times.
    while next_kill < thresholds.len() {
        tokio::task::block_in_place(|| seed.restart());
        next_kill += 1;
    }
    for (workers, _) in &mut senders {
        for w in workers.drain(..) {
            w.await.unwrap();
        }
    }
    println!("chat_kill: all {total_sent} acked after {:?}", started.elapsed());

    // Every acked message reaches its recipient.
    let deliver_deadline = Instant::now() + Duration::from_secs(60);
    for ((to, seen, ..), (_, acked_texts)) in receivers.iter().zip(&senders) {
        let want: HashSet<String> = acked_texts.lock().unwrap().iter().cloned().collect();
        loop {
            let got: HashSet<String> = seen.lock().unwrap().iter().map(|s| s.2.clone()).collect();
            let missing = want.difference(&got).count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deliver_deadline,
                "{to}: {missing} acked messages never delivered, e.g. {:?}",
                want.difference(&got).take(5).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Anything still on its way would be a duplicate: give it a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (to, seen, ..) in &receivers {
        let seen = seen.lock().unwrap();
        let mut seqs_of_id: HashMap<u64, HashSet<u64>> = HashMap::new();
        let mut ids_of_text: HashMap<&str, HashSet<u64>> = HashMap::new();
        let mut seqs = HashSet::new();
        for (seq, id, text) in seen.iter() {
            assert!(seqs.insert(*seq), "{to}: seq {seq} surfaced twice by the SDK");
            seqs_of_id.entry(*id).or_default().insert(*seq);
            ids_of_text.entry(text.as_str()).or_default().insert(*id);
        }
        let twice: Vec<_> = seqs_of_id.iter().filter(|(_, s)| s.len() > 1).take(5).collect();
        assert!(twice.is_empty(), "{to}: message ids stored at two seqs: {twice:?}");
        let twice: Vec<_> = ids_of_text.iter().filter(|(_, i)| i.len() > 1).take(5).collect();
        assert!(twice.is_empty(), "{to}: one client_msg_id stored as two messages: {twice:?}");
        println!("chat_kill: {to} received {} messages", seen.len());
    }
    println!("chat_kill: done in {:?}", started.elapsed());
}
