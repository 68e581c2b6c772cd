//! Real third-party clients against the real `seed` binary: rumqttc (MQTT 3.1.1 and 5.0),
//! Debian's mosquitto_pub/mosquitto_sub, and Python paho-mqtt (3.1.1 and 5.0, over TCP and
//! WebSocket). Covers QoS 0/1/2 round trips, payload integrity, wildcards, retained messages
//! (and clearing them), persistent sessions, wills, and the 5.0 features: subscription ids,
//! no-local, retain-as-published, retain handling, topic aliases, shared subscriptions,
//! forwarded properties and message expiry. The mosquitto and paho tests fail (not skip) when
//! the tools are missing: `scripts/install-test-deps.sh` installs them.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Seed, WAIT, run_with_timeout, unique};

const QUIET: Duration = Duration::from_millis(700);

// ---------------------------------------------------------------------------------------------
// rumqttc, MQTT 3.1.1
// ---------------------------------------------------------------------------------------------

mod v311 {
    use super::*;
    use common::v4::{self, QoS, SubscribeReasonCode};

    #[tokio::test]
    async fn qos_0_1_2_round_trips_keep_payloads_intact() {
        let seed = Seed::broker();
        let topic = unique("v4/rt");
        let (mut sub, _) = v4::connect(v4::options(&unique("sub"), seed.mqtt)).await;
        let codes = sub.subscribe(&topic, QoS::ExactlyOnce).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]);
        let (mut publ, _) = v4::connect(v4::options(&unique("pub"), seed.mqtt)).await;

        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for (qos, payload) in [
            (QoS::AtMostOnce, b"zero".to_vec()),
            (QoS::AtLeastOnce, b"one".to_vec()),
            (QoS::ExactlyOnce, b"two".to_vec()),
            (QoS::AtLeastOnce, big.clone()),
            (QoS::ExactlyOnce, vec![0u8, 255, 0, 1, 2]),
            (QoS::AtLeastOnce, Vec::new()),
        ] {
            publ.publish(&topic, qos, false, &payload).await;
            let got = sub.next_publish().await;
            assert_eq!(got.topic, topic);
            assert_eq!(got.qos, qos);
            assert!(!got.retain);
            assert_eq!(got.payload.len(), payload.len());
            assert!(got.payload[..] == payload[..], "payload changed at {qos:?}");
        }
        publ.disconnect().await;
        sub.disconnect().await;
    }

    #[tokio::test]
    async fn wildcard_subscriptions() {
        let seed = Seed::broker();
        let base = unique("v4/wild");
        let (mut sub, _) = v4::connect(v4::options(&unique("sub"), seed.mqtt)).await;
        sub.subscribe(&format!("{base}/+/temp"), QoS::AtLeastOnce).await;
        sub.subscribe(&format!("{base}/logs/#"), QoS::AtLeastOnce).await;
        let (mut publ, _) = v4::connect(v4::options(&unique("pub"), seed.mqtt)).await;
        for (topic, delivered) in [
            ("kitchen/temp", true),
            ("kitchen/humidity", false),
            ("a/b/temp", false),
            ("logs", true), // `#` also matches the parent level
            ("logs/x/y/z", true),
            ("cellar/temp", true),
        ] {
            publ.publish(&format!("{base}/{topic}"), QoS::AtLeastOnce, false, topic.as_bytes())
                .await;
            if delivered {
                let got = sub.next_publish().await;
                assert_eq!(got.topic, format!("{base}/{topic}"));
            }
        }
        assert!(sub.publish_within(QUIET).await.is_none(), "a non-matching topic was delivered");
    }

    #[tokio::test]
    async fn retained_message_delivered_with_retain_flag_and_cleared_by_empty_payload() {
        let seed = Seed::broker();
        let topic = unique("v4/retained");
        let (mut publ, _) = v4::connect(v4::options(&unique("pub"), seed.mqtt)).await;
        publ.publish(&topic, QoS::AtLeastOnce, true, b"first").await;
        publ.publish(&topic, QoS::AtLeastOnce, true, b"kept").await;

        let (mut sub, _) = v4::connect(v4::options(&unique("sub"), seed.mqtt)).await;
        sub.subscribe(&topic, QoS::AtLeastOnce).await;
        let got = sub.next_publish().await;
        assert!(got.retain, "retained message must carry the retain flag");
        assert_eq!(&got.payload[..], b"kept");
        // A live publish to an existing subscriber has retain = 0 in 3.1.1.
        publ.publish(&topic, QoS::AtLeastOnce, true, b"live").await;
        let got = sub.next_publish().await;
        assert_eq!(&got.payload[..], b"live");
        assert!(!got.retain, "[MQTT-3.3.1-9] live delivery must have retain = 0");

        // Clearing: an empty retained payload removes it.
        publ.publish(&topic, QoS::AtLeastOnce, true, b"").await;
        let _ = sub.next_publish().await; // the (empty) live message itself
        let (mut late, _) = v4::connect(v4::options(&unique("late"), seed.mqtt)).await;
        late.subscribe(&topic, QoS::AtLeastOnce).await;
        assert!(late.publish_within(QUIET).await.is_none(), "cleared retained message delivered");
    }

    #[tokio::test]
    async fn persistent_session_gets_messages_published_while_offline() {
        let seed = Seed::broker();
        let topic = unique("v4/offline");
        let id = unique("persist");
        let mut opts = v4::options(&id, seed.mqtt);
        opts.set_clean_session(false);
        let (mut sub, ack) = v4::connect(opts.clone()).await;
        assert!(!ack.session_present);
        sub.subscribe(&topic, QoS::AtLeastOnce).await;
        sub.disconnect().await;

        let (mut publ, _) = v4::connect(v4::options(&unique("pub"), seed.mqtt)).await;
        for i in 0..10 {
            publ.publish(&topic, QoS::AtLeastOnce, false, format!("m{i}").as_bytes()).await;
        }
        publ.publish(&topic, QoS::AtMostOnce, false, b"qos0-offline").await;

        let (mut sub, ack) = v4::connect(opts).await;
        assert!(ack.session_present, "session_present must be 1 for a resumed session");
        for i in 0..10 {
            let got = sub.next_publish().await;
            assert_eq!(got.payload, Bytes::from(format!("m{i}")));
            assert_eq!(got.qos, QoS::AtLeastOnce);
        }
        sub.disconnect().await;
    }

    #[tokio::test]
    async fn will_sent_when_socket_drops_but_not_after_disconnect() {
        let seed = Seed::broker();
        let will_topic = unique("v4/will");
        let (mut watcher, _) = v4::connect(v4::options(&unique("watch"), seed.mqtt)).await;
        watcher.subscribe(&will_topic, QoS::AtLeastOnce).await;

        // A normal DISCONNECT discards the will.
        let mut opts = v4::options(&unique("polite"), seed.mqtt);
        opts.set_last_will(v4::LastWill::new(&will_topic, "polite-will", QoS::AtLeastOnce, false));
        let (polite, _) = v4::connect(opts).await;
        polite.disconnect().await;
        assert!(
            watcher.publish_within(QUIET).await.is_none(),
            "[MQTT-3.1.2-10] will published after a normal DISCONNECT"
        );

        // A dropped socket publishes it.
        let mut opts = v4::options(&unique("rude"), seed.mqtt);
        opts.set_last_will(v4::LastWill::new(&will_topic, "rude-will", QoS::AtLeastOnce, false));
        let (rude, _) = v4::connect(opts).await;
        rude.abort().await;
        let got = watcher.next_publish().await;
        assert_eq!(&got.payload[..], b"rude-will");
        assert_eq!(got.topic, will_topic);
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc, MQTT 5.0
// ---------------------------------------------------------------------------------------------

mod v500 {
    use super::*;
    use common::v5::{
        self, Filter, PublishProperties, QoS, RetainForwardRule, SubscribeProperties,
        SubscribeReasonCode, topic,
    };

    #[tokio::test]
    async fn qos_0_1_2_round_trips() {
        let seed = Seed::broker();
        let t = unique("v5/rt");
        let (mut sub, _) = v5::connect(v5::options(&unique("sub"), seed.mqtt)).await;
        let codes = sub.subscribe(&t, QoS::ExactlyOnce).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]);
        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        let big: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 251) as u8).collect();
        for (qos, payload) in [
            (QoS::AtMostOnce, b"zero".to_vec()),
            (QoS::AtLeastOnce, b"one".to_vec()),
            (QoS::ExactlyOnce, b"two".to_vec()),
            (QoS::ExactlyOnce, big),
        ] {
            publ.publish(&t, qos, false, &payload).await;
            let got = sub.next_publish().await;
            assert_eq!(topic(&got), t);
            assert_eq!(got.qos, qos);
            assert!(got.payload[..] == payload[..], "payload changed at {qos:?}");
        }
    }

    #[tokio::test]
    async fn subscription_identifier_comes_back() {
        let seed = Seed::broker();
        let t = unique("v5/subid");
        let (mut sub, _) = v5::connect(v5::options(&unique("sub"), seed.mqtt)).await;
        let props = SubscribeProperties { id: Some(42), user_properties: vec![] };
        sub.subscribe_filter(Filter::new(&t, QoS::AtLeastOnce), Some(props)).await;
        let props = SubscribeProperties { id: Some(7), user_properties: vec![] };
        sub.subscribe_filter(Filter::new(format!("{t}/#"), QoS::AtLeastOnce), Some(props)).await;
        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        publ.publish(&t, QoS::AtLeastOnce, false, b"x").await;
        let got = sub.next_publish().await;
        let mut ids = got.properties.expect("properties").subscription_identifiers;
        ids.sort();
        // Both subscriptions match `t` (`t/#` matches its parent): one copy with both ids, or
        // two copies each with its own.
        if ids.len() == 1 {
            let second = sub.next_publish().await;
            ids.extend(second.properties.expect("properties").subscription_identifiers);
            ids.sort();
        }
        assert_eq!(ids, vec![7, 42]);
    }

    #[tokio::test]
    async fn no_local_suppresses_own_messages() {
        let seed = Seed::broker();
        let t = unique("v5/nolocal");
        let (mut me, _) = v5::connect(v5::options(&unique("me"), seed.mqtt)).await;
        let mut filter = Filter::new(&t, QoS::AtLeastOnce);
        filter.nolocal = true;
        me.subscribe_filter(filter, None).await;
        me.publish(&t, QoS::AtLeastOnce, false, b"mine").await;
        let (mut other, _) = v5::connect(v5::options(&unique("other"), seed.mqtt)).await;
        other.publish(&t, QoS::AtLeastOnce, false, b"theirs").await;
        let got = me.next_publish().await;
        assert_eq!(&got.payload[..], b"theirs", "[MQTT-3.8.3-3] own message delivered");
    }

    #[tokio::test]
    async fn retain_as_published_keeps_the_flag() {
        let seed = Seed::broker();
        let t = unique("v5/rap");
        let (mut rap, _) = v5::connect(v5::options(&unique("rap"), seed.mqtt)).await;
        let mut filter = Filter::new(&t, QoS::AtLeastOnce);
        filter.preserve_retain = true;
        rap.subscribe_filter(filter, None).await;
        let (mut plain, _) = v5::connect(v5::options(&unique("plain"), seed.mqtt)).await;
        plain.subscribe(&t, QoS::AtLeastOnce).await;

        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        publ.publish(&t, QoS::AtLeastOnce, true, b"r").await;
        assert!(rap.next_publish().await.retain, "retain-as-published must keep retain = 1");
        assert!(!plain.next_publish().await.retain, "without RAP a live message has retain = 0");
        publ.publish(&t, QoS::AtLeastOnce, true, b"").await; // clean up
    }

    #[tokio::test]
    async fn retain_handling_never_sends_no_retained_messages() {
        let seed = Seed::broker();
        let t = unique("v5/rh2");
        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        publ.publish(&t, QoS::AtLeastOnce, true, b"retained").await;

        let (mut sub, _) = v5::connect(v5::options(&unique("sub"), seed.mqtt)).await;
        let mut filter = Filter::new(&t, QoS::AtLeastOnce);
        filter.retain_forward_rule = RetainForwardRule::Never;
        sub.subscribe_filter(filter, None).await;
        publ.publish(&t, QoS::AtLeastOnce, false, b"live").await;
        let got = sub.next_publish().await;
        assert_eq!(&got.payload[..], b"live", "retain handling 2 still sent the retained message");

        // Retain handling 1 (only on a new subscription): a resubscribe gets nothing.
        let (mut once, _) = v5::connect(v5::options(&unique("once"), seed.mqtt)).await;
        let mut filter = Filter::new(&t, QoS::AtLeastOnce);
        filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
        once.subscribe_filter(filter.clone(), None).await;
        assert_eq!(&once.next_publish().await.payload[..], b"retained");
        once.subscribe_filter(filter, None).await;
        assert!(once.publish_within(QUIET).await.is_none(), "retain handling 1 resent on resub");
    }

    #[tokio::test]
    async fn topic_alias_from_the_client() {
        let seed = Seed::broker();
        let t = unique("v5/alias");
        let (mut sub, _) = v5::connect(v5::options(&unique("sub"), seed.mqtt)).await;
        sub.subscribe(&t, QoS::AtLeastOnce).await;
        let (mut publ, ack) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        let max = ack.properties.and_then(|p| p.topic_alias_max).unwrap_or(0);
        assert!(max >= 1, "broker advertises no topic aliases");
        let alias = PublishProperties { topic_alias: Some(1), ..Default::default() };
        publ.publish_props(&t, QoS::AtLeastOnce, false, b"set", Some(alias.clone())).await;
        publ.publish_props("", QoS::AtLeastOnce, false, b"use", Some(alias)).await;
        let first = sub.next_publish().await;
        let second = sub.next_publish().await;
        assert_eq!((topic(&first), &first.payload[..]), (t.clone(), &b"set"[..]));
        assert_eq!((topic(&second), &second.payload[..]), (t, &b"use"[..]));
    }

    #[tokio::test]
    async fn shared_subscription_spreads_messages() {
        let seed = Seed::broker();
        let t = unique("v5/shared");
        let filter = format!("$share/g/{t}");
        let (mut a, _) = v5::connect(v5::options(&unique("a"), seed.mqtt)).await;
        let (mut b, _) = v5::connect(v5::options(&unique("b"), seed.mqtt)).await;
        a.subscribe(&filter, QoS::AtLeastOnce).await;
        b.subscribe(&filter, QoS::AtLeastOnce).await;
        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        let n = 20;
        for i in 0..n {
            publ.publish(&t, QoS::AtLeastOnce, false, format!("{i}").as_bytes()).await;
        }
        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got_a.len() + got_b.len() < n && Instant::now() < deadline {
            tokio::select! {
                p = a.next_publish() => got_a.push(p.payload),
                p = b.next_publish() => got_b.push(p.payload),
            }
        }
        assert!(a.publish_within(Duration::from_millis(300)).await.is_none(), "extra copy to a");
        assert!(b.publish_within(Duration::from_millis(300)).await.is_none(), "extra copy to b");
        assert_eq!(got_a.len() + got_b.len(), n, "a {got_a:?} b {got_b:?}");
        assert!(!got_a.is_empty() && !got_b.is_empty(), "one member got everything");
        let all: HashSet<_> = got_a.iter().chain(&got_b).collect();
        assert_eq!(all.len(), n, "a message went to both members");
    }

    #[tokio::test]
    async fn properties_are_forwarded() {
        let seed = Seed::broker();
        let t = unique("v5/props");
        let (mut sub, _) = v5::connect(v5::options(&unique("sub"), seed.mqtt)).await;
        sub.subscribe(&t, QoS::AtLeastOnce).await;
        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        let user = vec![("k".to_owned(), "v1".to_owned()), ("k".to_owned(), "v2".to_owned())];
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            content_type: Some("application/json".into()),
            response_topic: Some(format!("{t}/reply")),
            correlation_data: Some(Bytes::from_static(&[1, 2, 3, 0xff])),
            user_properties: user.clone(),
            message_expiry_interval: Some(3600),
            ..Default::default()
        };
        publ.publish_props(&t, QoS::AtLeastOnce, false, b"{}", Some(props)).await;
        let got = sub.next_publish().await.properties.expect("properties");
        assert_eq!(got.user_properties, user, "user properties in order");
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        assert_eq!(got.response_topic, Some(format!("{t}/reply")));
        assert_eq!(got.correlation_data.as_deref(), Some(&[1u8, 2, 3, 0xff][..]));
        assert_eq!(got.payload_format_indicator, Some(1));
        let expiry = got.message_expiry_interval.expect("message expiry forwarded");
        assert!((3590..=3600).contains(&expiry), "expiry {expiry}");
    }

    #[tokio::test]
    async fn persistent_session_and_message_expiry_while_offline() {
        let seed = Seed::broker();
        let t = unique("v5/expiry");
        let id = unique("persist5");
        let (mut sub, ack) = v5::connect(v5::persistent(&id, seed.mqtt, 3600)).await;
        assert!(!ack.session_present);
        sub.subscribe(&t, QoS::AtLeastOnce).await;
        sub.disconnect().await;

        let (mut publ, _) = v5::connect(v5::options(&unique("pub"), seed.mqtt)).await;
        let short = PublishProperties { message_expiry_interval: Some(1), ..Default::default() };
        let long = PublishProperties { message_expiry_interval: Some(600), ..Default::default() };
        publ.publish_props(&t, QoS::AtLeastOnce, false, b"expires", Some(short)).await;
        publ.publish_props(&t, QoS::AtLeastOnce, false, b"stays", Some(long)).await;
        publ.publish(&t, QoS::AtLeastOnce, false, b"forever").await;
        // The expiry interval must run out: there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(2200)).await;

        let (mut sub, ack) = v5::connect(v5::persistent(&id, seed.mqtt, 3600)).await;
        assert!(ack.session_present, "session_present must be 1");
        let first = sub.next_publish().await;
        assert_eq!(&first.payload[..], b"stays", "[MQTT-3.3.2-5] expired message delivered");
        let left = first.properties.and_then(|p| p.message_expiry_interval).unwrap_or(0);
        assert!((590..=599).contains(&left), "expiry must count down while queued: {left}");
        assert_eq!(&sub.next_publish().await.payload[..], b"forever");
        sub.disconnect().await;
    }

    #[tokio::test]
    async fn will_sent_when_socket_drops_but_not_after_disconnect() {
        let seed = Seed::broker();
        let will_topic = unique("v5/will");
        let (mut watcher, _) = v5::connect(v5::options(&unique("watch"), seed.mqtt)).await;
        watcher.subscribe(&will_topic, QoS::AtLeastOnce).await;

        let mut opts = v5::options(&unique("polite"), seed.mqtt);
        opts.set_last_will(v5::LastWill::new(&will_topic, "polite", QoS::AtLeastOnce, false, None));
        let (polite, _) = v5::connect(opts).await;
        polite.disconnect().await;
        assert!(watcher.publish_within(QUIET).await.is_none(), "will after normal DISCONNECT");

        let mut opts = v5::options(&unique("rude"), seed.mqtt);
        opts.set_last_will(v5::LastWill::new(&will_topic, "rude", QoS::AtLeastOnce, false, None));
        let (rude, _) = v5::connect(opts).await;
        rude.abort().await;
        assert_eq!(&watcher.next_publish().await.payload[..], b"rude");
    }
}

// ---------------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub
// ---------------------------------------------------------------------------------------------

mod mosquitto {
    use super::*;

    fn version_flag(v: &str) -> [&str; 2] {
        ["-V", v]
    }

    /// Starts mosquitto_sub with `-d` and returns once it has its SUBACK, with a thread that
    /// collects its `MSG ...` lines.
    fn subscribe(
        seed: &Seed,
        version: &str,
        topic: &str,
        count: usize,
    ) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        // stdbuf: mosquitto_sub's stdout is block-buffered on a pipe, and the SUBACK line is
        // needed as it happens.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &seed.mqtt.port().to_string()])
            .args(version_flag(version))
            .args(["-i", &unique("msub"), "-t", topic, "-q", "1", "-d"])
            .args(["-C", &count.to_string(), "-W", "10", "-F", "MSG %q %r %t %p"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub missing: run scripts/install-test-deps.sh");
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("received SUBACK") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("mosquitto_sub got no SUBACK");
                }
            }
        }
        (child, rx)
    }

    fn publish(seed: &Seed, version: &str, topic: &str, payload: &str, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &seed.mqtt.port().to_string()])
            .args(version_flag(version))
            .args(["-i", &unique("mpub"), "-t", topic, "-q", "1", "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        let out = run_with_timeout(&mut cmd, WAIT);
        assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits for the subscriber to exit (it does after `-C` messages) and returns its messages.
    fn finish(
        mut child: std::process::Child,
        rx: std::sync::mpsc::Receiver<String>,
    ) -> Vec<String> {
        let status =
            common::poll_until(WAIT, "mosquitto_sub to exit", || child.try_wait().unwrap());
        let mut err = String::new();
        use std::io::Read;
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        // The reader thread may not have passed on the last lines yet: read until it has
        // reached the end of the output (the pipe closes with the process), bounded.
        let deadline = Instant::now() + WAIT;
        let mut msgs = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.starts_with("MSG ") {
                msgs.push(line);
            }
        }
        assert!(status.success(), "mosquitto_sub failed ({status}): {err} {msgs:?}");
        msgs
    }

    fn round_trip(version: &str) {
        let seed = Seed::broker();
        let topic = unique("mosq/rt");
        let (child, rx) = subscribe(&seed, version, &topic, 2);
        publish(&seed, version, &topic, "hello", false);
        publish(&seed, version, &topic, "world", false);
        let msgs = finish(child, rx);
        assert_eq!(msgs, vec![format!("MSG 1 0 {topic} hello"), format!("MSG 1 0 {topic} world")]);
    }

    fn retained(version: &str) {
        let seed = Seed::broker();
        let topic = unique("mosq/ret");
        publish(&seed, version, &topic, "sticky", true);
        let out = run_with_timeout(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &seed.mqtt.port().to_string()])
                .args(version_flag(version))
                .args(["-i", &unique("msub"), "-t", &topic, "-q", "1"])
                .args(["-C", "1", "-W", "5", "-F", "%q %r %p"]),
            WAIT,
        );
        assert!(out.status.success(), "mosquitto_sub: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 1 sticky");
    }

    #[test]
    fn v311_qos1_round_trip() {
        round_trip("mqttv311");
    }

    #[test]
    fn v5_qos1_round_trip() {
        round_trip("mqttv5");
    }

    #[test]
    fn v311_retained() {
        retained("mqttv311");
    }

    #[test]
    fn v5_retained() {
        retained("5");
    }

    #[test]
    fn sub_wait_timeout_expires_without_messages() {
        let seed = Seed::broker();
        let started = Instant::now();
        let out = run_with_timeout(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &seed.mqtt.port().to_string()])
                .args(["-V", "mqttv5", "-t", &unique("mosq/none"), "-C", "1", "-W", "1"]),
            WAIT,
        );
        assert!(!out.status.success(), "mosquitto_sub -W 1 should time out");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(out.stdout.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Python paho-mqtt
// ---------------------------------------------------------------------------------------------

mod paho {
    use super::*;

    fn run(transport: &str, version: &str) {
        let seed = Seed::broker();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/paho_roundtrip.py");
        let port = if transport == "websockets" { seed.ws.port() } else { seed.mqtt.port() };
        let out = run_with_timeout(
            Command::new("python3").args([
                script,
                "127.0.0.1",
                &port.to_string(),
                transport,
                version,
                &unique("paho"),
            ]),
            Duration::from_secs(30),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "paho {transport} {version} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        assert!(stdout.contains("OK"), "{stdout}");
    }

    #[test]
    fn paho_v311_tcp() {
        run("tcp", "3.1.1");
    }

    #[test]
    fn paho_v5_tcp() {
        run("tcp", "5");
    }

    #[test]
    fn paho_v311_websocket() {
        run("websockets", "3.1.1");
    }

    #[test]
    fn paho_v5_websocket() {
        run("websockets", "5");
    }
}
