//! Durability with the real `seed` binary: retained messages and QoS 1 messages queued for
//! offline persistent sessions (5.0 clean_start=false with session expiry, and 3.1.1
//! clean_session=false) survive a SIGKILL and restart on the same data directory; the sessions
//! come back with session_present=1 and get every queued message exactly once, in order. A
//! second test kills the server while a publisher is mid-stream: every message whose PUBACK the
//! publisher saw must be delivered after the restart.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Seed, WAIT, raw, unique, v4, v5};
use tokio::io::AsyncWriteExt;

const QUEUED: usize = 150;

/// Collects payloads until `expected` have arrived, then keeps listening for `quiet` to catch
/// duplicates or extras.
async fn drain_v5(c: &mut v5::Client, expected: usize, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected {
        assert!(Instant::now() < deadline, "only {} of {expected} arrived", got.len());
        let p = c.next_publish().await;
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    while let Some(p) = c.publish_within(quiet).await {
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    got
}

async fn drain_v4(c: &mut v4::Client, expected: usize, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected {
        assert!(Instant::now() < deadline, "only {} of {expected} arrived", got.len());
        let p = c.next_publish().await;
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    while let Some(p) = c.publish_within(quiet).await {
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_and_queued_messages_survive_sigkill() {
    let mut seed = Seed::broker();
    let base = unique("durable");
    let queue_topic = format!("{base}/q");

    // Two persistent sessions subscribe and go offline.
    let id5 = unique("p5");
    let (mut s5, ack) = v5::connect(v5::persistent(&id5, seed.mqtt, 3600)).await;
    assert!(!ack.session_present);
    s5.subscribe(&queue_topic, v5::QoS::AtLeastOnce).await;
    s5.disconnect().await;
    let id4 = unique("p4");
    let mut opts4 = v4::options(&id4, seed.mqtt);
    opts4.set_clean_session(false);
    let (mut s4, _) = v4::connect(opts4.clone()).await;
    s4.subscribe(&queue_topic, v4::QoS::AtLeastOnce).await;
    s4.disconnect().await;

    // Retained messages and a stream of QoS 1 messages, every one acknowledged.
    let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
    for i in 0..5 {
        let payload = format!("retained-{i}");
        publ.publish(&format!("{base}/r/{i}"), v5::QoS::AtLeastOnce, true, payload.as_bytes())
            .await;
    }
    let expected: Vec<String> = (0..QUEUED).map(|i| format!("m{i:04}")).collect();
    for payload in &expected {
        publ.client
            .publish(&queue_topic, v5::QoS::AtLeastOnce, false, payload.clone().into_bytes())
            .await
            .unwrap();
    }
    for _ in 0..QUEUED {
        publ.expect("PUBACK", |e| {
            matches!(e, v5::Event::Incoming(v5::Packet::PubAck(_))).then_some(())
        })
        .await;
    }
    publ.abort().await;

    seed.kill9();
    seed.restart();

    // Retained messages are back.
    let (mut fresh, _) = v5::connect(v5::options(&unique("fresh"), seed.mqtt)).await;
    fresh.subscribe(&format!("{base}/r/#"), v5::QoS::AtLeastOnce).await;
    let mut retained = Vec::new();
    for _ in 0..5 {
        let p = fresh.next_publish().await;
        assert!(p.retain, "retained message without the retain flag after restart");
        retained.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    retained.sort();
    assert_eq!(retained, (0..5).map(|i| format!("retained-{i}")).collect::<Vec<_>>());

    // Both sessions resume with everything queued, once, in order.
    let (mut s5, ack) = v5::connect(v5::persistent(&id5, seed.mqtt, 3600)).await;
    assert!(ack.session_present, "5.0 session lost across restart");
    let got5 = drain_v5(&mut s5, QUEUED, Duration::from_millis(700)).await;
    assert_eq!(got5, expected, "5.0 session: queued messages not delivered exactly once in order");

    let (mut s4, ack) = v4::connect(opts4).await;
    assert!(ack.session_present, "3.1.1 session lost across restart");
    let got4 = drain_v4(&mut s4, QUEUED, Duration::from_millis(700)).await;
    assert_eq!(got4, expected, "3.1.1 session: queued messages not delivered exactly once");
    s5.disconnect().await;
    s4.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_kill_mid_stream() {
    let mut seed = Seed::broker();
    let topic = unique("midstream");
    let id = unique("offline");
    let (mut sub, _) = v5::connect(v5::persistent(&id, seed.mqtt, 3600)).await;
    sub.subscribe(&topic, v5::QoS::AtLeastOnce).await;
    sub.disconnect().await;

    // A 3.1.1 publisher with up to 64 QoS 1 messages in flight; the payload is the packet id.
    let total: u16 = 20_000;
    let stream = raw::connected(seed.mqtt, raw::V311, &unique("pub")).await;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let window = Arc::new(tokio::sync::Semaphore::new(64));
    let acked = Arc::new(Mutex::new(Vec::<u16>::new()));
    let writer = {
        let window = window.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for id in 1..=total {
                window.acquire().await.unwrap().forget();
                let packet = raw::publish(raw::V311, &topic, 1, id, format!("{id}").as_bytes());
                if wr.write_all(&packet).await.is_err() {
                    return;
                }
            }
        })
    };
    let reader = {
        let acked = acked.clone();
        let window = window.clone();
        tokio::spawn(async move {
            while let Ok(Some((first, body))) = raw::read_packet(&mut rd).await {
                if first == 0x40 {
                    acked.lock().unwrap().push(u16::from_be_bytes([body[0], body[1]]));
                    window.add_permits(1);
                }
            }
        })
    };
    common::poll_until(Duration::from_secs(30), "300 PUBACKs", || {
        (acked.lock().unwrap().len() >= 300).then_some(())
    });
    seed.kill9();
    tokio::time::timeout(WAIT, reader).await.expect("reader did not see the close").unwrap();
    writer.abort();
    let acked: Vec<u16> = acked.lock().unwrap().clone();
    assert!((acked.len() as u16) < total, "the kill came too late to be mid-stream");

    seed.restart();
    let (mut sub, ack) = v5::connect(v5::persistent(&id, seed.mqtt, 3600)).await;
    assert!(ack.session_present, "session lost across restart");
    let got = drain_v5(&mut sub, acked.len(), Duration::from_millis(700)).await;
    let got: Vec<u16> = got.iter().map(|s| s.parse().unwrap()).collect();
    eprintln!(
        "killed after {} PUBACKs; {} messages delivered after restart",
        acked.len(),
        got.len()
    );
    let received: HashSet<u16> = got.iter().copied().collect();
    let missing: Vec<u16> = acked.iter().copied().filter(|id| !received.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost (of {} acked, {} delivered), first: {:?}",
        missing.len(),
        acked.len(),
        got.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order or duplicated after restart");
    sub.disconnect().await;
}
