//! Helpers shared by the end-to-end tests: free ports, the real `seed` binary as a child process
//! (start, SIGKILL, restart on the same data directory and ports, SIGHUP), an in-process server
//! through `seed_broker::Server::start`, rumqttc v4/v5 clients whose events arrive on a channel,
//! a minimal hand-built MQTT client for exact CONNACK/SUBACK bytes, subprocesses with timeouts
//! and a tiny HTTP GET. Every wait has a deadline; nothing sleeps a fixed time to synchronise.
#![allow(dead_code, unused_imports)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The default bound on any single wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A process-unique name, for client ids and topics.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// The `seed` binary running as a child process. Killed (SIGKILL) on drop.
pub struct Seed {
    pub dir: tempfile::TempDir,
    pub mqtt: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    config: Option<PathBuf>,
    /// How many "listening on" lines a start prints (3, plus 1 with a TLS listener).
    listeners: usize,
    child: Option<Child>,
    starts: u32,
}

impl Seed {
    /// Built-in defaults, fresh ports and data directory.
    pub fn start() -> Seed {
        Seed::with_config(|_| String::new())
    }

    /// A plain MQTT broker: no plugins (an empty `[plugins]` table turns off the chat set).
    pub fn broker() -> Seed {
        Seed::broker_with_config(|_| String::new())
    }

    /// Like [`Seed::with_config`], as a plain broker unless the TOML names its plugins.
    pub fn broker_with_config(config: impl Fn(&Path) -> String) -> Seed {
        Seed::with_config(move |dir| {
            let text = config(dir);
            if text.contains("[plugins") { text } else { format!("{text}\n[plugins]\n") }
        })
    }

    /// `config` gets the server's scratch directory and returns the TOML for `--config`
    /// (nothing is passed when it is empty). The TCP, WebSocket and HTTP addresses always come
    /// from the command line.
    pub fn with_config(config: impl Fn(&Path) -> String) -> Seed {
        let mut dir = tempfile::tempdir().unwrap();
        let text = config(dir.path());
        let listeners = 3 + usize::from(text.contains("[listeners.tls]"));
        let config = (!text.is_empty()).then(|| write_config(dir.path(), "seed.toml", &text));
        let mut last_error = String::new();
        // A port picked free can be taken by someone else before the child binds it: retry.
        for _ in 0..3 {
            let mut seed = Seed {
                mqtt: free_addr(),
                ws: free_addr(),
                http: free_addr(),
                dir,
                config: config.clone(),
                listeners,
                child: None,
                starts: 0,
            };
            match seed.spawn() {
                Ok(()) => return seed,
                Err(e) => {
                    last_error = e;
                    dir = std::mem::replace(&mut seed.dir, tempfile::tempdir().unwrap());
                }
            }
        }
        panic!("seed did not start: {last_error}");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("seed.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("seed is not running").id()
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let out = self.dir.path().join(format!("stdout-{}.log", self.starts));
        let err = self.dir.path().join(format!("stderr-{}.log", self.starts));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seed"));
        cmd.arg("--mqtt")
            .arg(self.mqtt.to_string())
            .arg("--ws")
            .arg(self.ws.to_string())
            .arg("--http")
            .arg(self.http.to_string())
            .arg("--data")
            .arg(self.data_dir())
            .arg("--log")
            .arg("info")
            .env_remove("SEED_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawning seed: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.matches("listening on").count() >= self.listeners {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&err).unwrap_or_default();
                return Err(format!("seed exited with {status} before listening:\n{log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&err).unwrap_or_default();
                return Err(format!("seed not listening after {WAIT:?}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        // The listeners are bound before the lines are printed; check the MQTT port anyway.
        poll_until(WAIT, "the MQTT port to accept", || {
            std::net::TcpStream::connect(self.mqtt).ok()
        });
        Ok(())
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
        }
    }

    /// Starts again on the same data directory, configuration and ports.
    pub fn restart(&mut self) {
        self.kill9();
        // The ports were just released by a dead process; binding them again may need a retry
        // only if someone else grabbed them, which would be a test-environment failure.
        self.spawn().unwrap_or_else(|e| panic!("restart failed: {e}"));
    }

    /// Sends a signal by name (`HUP`, `TERM`) through `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(status.unwrap().success(), "kill -{name} failed");
    }

    /// The server's log so far (stderr of every start).
    pub fn log(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("stderr-{n}.log"));
            all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        all
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        poll_until(WAIT, &format!("{needle:?} in the server log"), || {
            self.log().contains(needle).then_some(())
        });
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- seed log ({}) ----\n{}", self.dir.path().display(), self.log());
        }
        self.kill9();
    }
}

/// Runs `seed hash-password <pw>` and returns the hash.
pub fn hash_password(password: &str) -> String {
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_seed")).arg("hash-password").arg(password),
        WAIT,
    );
    assert!(out.status.success(), "hash-password failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------------------------

/// `seed_broker::Server` in this process, every listener on port 0.
pub struct InProcess {
    pub server: Option<seed_broker::Server>,
    pub dir: tempfile::TempDir,
}

impl InProcess {
    /// `extra` is TOML appended after the `[listeners]` and `[store]` tables this writes (so it
    /// may hold `[broker]` and `[plugins.*]`).
    pub async fn start(extra: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[listeners]\nmqtt = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
             [store]\ndata_dir = {:?}\nfsync = false\n{extra}",
            dir.path().join("data").display().to_string()
        );
        let text = if extra.contains("[plugins") { text } else { format!("{text}\n[plugins]\n") };
        let config = seed_broker::Config::from_toml(&text).unwrap();
        let plugins = seed_broker::hooks::PluginRegistry::new()
            .register("acl", seed_plugin_acl::factory)
            .register("auth-static", seed_plugin_auth_static::factory)
            .build(
                &config.plugins,
                &mut seed_broker::hooks::PluginContext::new(dir.path().join("data")),
            )
            .unwrap();
        let server = seed_broker::Server::start(config, plugins, seed_broker::http::Router::new())
            .await
            .unwrap();
        InProcess { server: Some(server), dir }
    }

    fn bound(&self) -> &seed_broker::Bound {
        &self.server.as_ref().unwrap().bound
    }
    pub fn mqtt(&self) -> SocketAddr {
        self.bound().mqtt.unwrap()
    }
    pub fn ws(&self) -> SocketAddr {
        self.bound().ws.unwrap()
    }
    pub fn http(&self) -> SocketAddr {
        self.bound().http.unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subprocesses and HTTP
// ---------------------------------------------------------------------------------------------

/// Runs a command to completion, killing it after `timeout` (the output then holds what it
/// printed so far and a failed status).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/install-test-deps.sh)"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            let out = rx.recv_timeout(WAIT).expect("killed subprocess did not end").unwrap();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A plain HTTP/1.1 GET; returns (status, headers, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("HTTP connect timed out")
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("HTTP read timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

// ---------------------------------------------------------------------------------------------
// rumqttc wrappers: the event loop runs in a task and forwards every event to a channel; the
// first connection error ends the task (no automatic reconnect).
// ---------------------------------------------------------------------------------------------

/// The next event of a rumqttc event stream that `f` accepts (others are skipped), or None
/// after `timeout`; panics if the connection fails or its event loop ends. Shared by the v4
/// and v5 clients, whose event types differ.
async fn next_event<E, T>(
    events: &mut mpsc::UnboundedReceiver<Result<E, String>>,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&E) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return None,
            Ok(None) => panic!("event loop ended while waiting for {what}"),
            Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e}"),
            Ok(Some(Ok(event))) => {
                if let Some(v) = f(&event) {
                    return Some(v);
                }
            }
        }
    }
}

pub mod v4 {
    use super::*;
    pub use rumqttc::{
        AsyncClient, ConnAck, ConnectReturnCode, Event, LastWill, MqttOptions, Outgoing, Packet,
        Publish, QoS, SubscribeReasonCode,
    };

    pub struct Client {
        pub client: AsyncClient,
        pub events: mpsc::UnboundedReceiver<Result<Event, String>>,
        pub task: JoinHandle<()>,
    }

    pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o
    }

    /// Connects and waits for the CONNACK; panics if refused.
    pub async fn connect(opts: MqttOptions) -> (Client, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        if tx.send(Ok(event)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut c = Client { client, events, task };
        let ack = c
            .expect("CONNACK", |e| match e {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.clone()),
                _ => None,
            })
            .await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        (c, ack)
    }

    impl Client {
        /// The next event `f` accepts (others are skipped); panics on a connection error or
        /// after [`WAIT`].
        pub async fn expect<T>(&mut self, what: &str, f: impl FnMut(&Event) -> Option<T>) -> T {
            self.expect_within(WAIT, what, f).await.unwrap_or_else(|| panic!("no {what}"))
        }

        pub async fn expect_within<T>(
            &mut self,
            timeout: Duration,
            what: &str,
            f: impl FnMut(&Event) -> Option<T>,
        ) -> Option<T> {
            super::next_event(&mut self.events, timeout, what, f).await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.client.subscribe(filter, qos).await.unwrap();
            self.expect("SUBACK", |e| match e {
                Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.expect("PUBLISH", |e| match e {
                Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        pub async fn publish_within(&mut self, timeout: Duration) -> Option<Publish> {
            self.expect_within(timeout, "PUBLISH", |e| match e {
                Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        /// Publishes and, for QoS 1/2, waits for the PUBACK/PUBCOMP.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.client.publish(topic, qos, retain, payload.to_vec()).await.unwrap();
            match qos {
                QoS::AtMostOnce => {
                    self.expect("outgoing PUBLISH", |e| {
                        matches!(e, Event::Outgoing(Outgoing::Publish(_))).then_some(())
                    })
                    .await
                }
                QoS::AtLeastOnce => {
                    self.expect("PUBACK", |e| {
                        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
                    })
                    .await
                }
                QoS::ExactlyOnce => {
                    self.expect("PUBCOMP", |e| {
                        matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(())
                    })
                    .await
                }
            }
        }

        /// A normal DISCONNECT, then waits for the event loop to end.
        pub async fn disconnect(mut self) {
            self.client.disconnect().await.unwrap();
            let _ = tokio::time::timeout(WAIT, async {
                while let Some(Ok(_)) = self.events.recv().await {}
            })
            .await;
            self.task.abort();
        }

        /// Drops the socket without DISCONNECT.
        pub async fn abort(self) {
            self.task.abort();
            let _ = self.task.await;
        }
    }
}

pub mod v5 {
    use super::*;
    pub use rumqttc::Outgoing;
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, Filter, LastWill, Packet, Publish, PublishProperties,
        RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
    };
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub events: mpsc::UnboundedReceiver<Result<Event, String>>,
        pub task: JoinHandle<()>,
    }

    pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(Some(1 << 20));
        o
    }

    /// A clean_start=false session that lives `expiry` seconds after a disconnect.
    pub fn persistent(id: &str, addr: SocketAddr, expiry: u32) -> MqttOptions {
        let mut o = options(id, addr);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry));
        o
    }

    pub async fn try_connect(opts: MqttOptions) -> (Client, Result<ConnAck, String>) {
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        if tx.send(Ok(event)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:?}")));
                        return;
                    }
                }
            }
        });
        let mut c = Client { client, events, task };
        let deadline = tokio::time::Instant::now() + WAIT;
        let ack = loop {
            match tokio::time::timeout_at(deadline, c.events.recv()).await {
                Err(_) => break Err("no CONNACK".to_owned()),
                Ok(None) => break Err("event loop ended".to_owned()),
                Ok(Some(Err(e))) => break Err(e),
                Ok(Some(Ok(Event::Incoming(Packet::ConnAck(a))))) => break Ok(a),
                Ok(Some(Ok(_))) => {}
            }
        };
        (c, ack)
    }

    /// Connects and waits for the CONNACK; panics if refused.
    pub async fn connect(opts: MqttOptions) -> (Client, ConnAck) {
        let (c, ack) = try_connect(opts).await;
        let ack = ack.unwrap_or_else(|e| panic!("connect failed: {e}"));
        assert_eq!(ack.code, ConnectReturnCode::Success);
        (c, ack)
    }

    impl Client {
        pub async fn expect<T>(&mut self, what: &str, f: impl FnMut(&Event) -> Option<T>) -> T {
            self.expect_within(WAIT, what, f).await.unwrap_or_else(|| panic!("no {what}"))
        }

        pub async fn expect_within<T>(
            &mut self,
            timeout: Duration,
            what: &str,
            f: impl FnMut(&Event) -> Option<T>,
        ) -> Option<T> {
            super::next_event(&mut self.events, timeout, what, f).await
        }

        pub async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
            self.expect("SUBACK", |e| match e {
                Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.client.subscribe(filter, qos).await.unwrap();
            self.suback().await
        }

        pub async fn subscribe_filter(
            &mut self,
            filter: Filter,
            props: Option<SubscribeProperties>,
        ) -> Vec<SubscribeReasonCode> {
            match props {
                Some(p) => self.client.subscribe_many_with_properties([filter], p).await,
                None => self.client.subscribe_many([filter]).await,
            }
            .unwrap();
            self.suback().await
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.expect("PUBLISH", |e| match e {
                Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        pub async fn publish_within(&mut self, timeout: Duration) -> Option<Publish> {
            self.expect_within(timeout, "PUBLISH", |e| match e {
                Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        /// Publishes and, for QoS 1/2, waits for the PUBACK/PUBCOMP.
        pub async fn publish_props(
            &mut self,
            topic: &str,
            qos: QoS,
            retain: bool,
            payload: &[u8],
            props: Option<PublishProperties>,
        ) {
            let payload = payload.to_vec();
            match props {
                Some(p) => {
                    self.client.publish_with_properties(topic, qos, retain, payload, p).await
                }
                None => self.client.publish(topic, qos, retain, payload).await,
            }
            .unwrap();
            match qos {
                QoS::AtMostOnce => {
                    self.expect("outgoing PUBLISH", |e| {
                        matches!(e, Event::Outgoing(Outgoing::Publish(_))).then_some(())
                    })
                    .await
                }
                QoS::AtLeastOnce => {
                    self.expect("PUBACK", |e| {
                        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
                    })
                    .await
                }
                QoS::ExactlyOnce => {
                    self.expect("PUBCOMP", |e| {
                        matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(())
                    })
                    .await
                }
            }
        }

        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.publish_props(topic, qos, retain, payload, None).await
        }

        pub async fn disconnect(mut self) {
            self.client.disconnect().await.unwrap();
            let _ = tokio::time::timeout(WAIT, async {
                while let Some(Ok(_)) = self.events.recv().await {}
            })
            .await;
            self.task.abort();
        }

        pub async fn abort(self) {
            self.task.abort();
            let _ = self.task.await;
        }
    }

    pub fn topic(p: &Publish) -> String {
        String::from_utf8(p.topic.to_vec()).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal hand-built MQTT client, for exact return codes over any byte stream (TCP or TLS).
// ---------------------------------------------------------------------------------------------

pub mod raw {
    use super::*;

    pub const V311: u8 = 4;
    pub const V5: u8 = 5;

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn varint(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                break;
            }
        }
    }

    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        varint(&mut out, body.len());
        out.extend_from_slice(body);
        out
    }

    /// CONNECT with clean start, keep-alive 60, optional user name and password.
    pub fn connect(
        version: u8,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.push(version);
        let mut flags = 0x02;
        if username.is_some() {
            flags |= 0x80;
        }
        if password.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&60u16.to_be_bytes());
        if version == V5 {
            body.push(0); // no properties
        }
        string(&mut body, client_id.as_bytes());
        if let Some(u) = username {
            string(&mut body, u.as_bytes());
        }
        if let Some(p) = password {
            string(&mut body, p.as_bytes());
        }
        packet(0x10, &body)
    }

    pub fn subscribe(version: u8, pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        if version == V5 {
            body.push(0);
        }
        string(&mut body, filter.as_bytes());
        body.push(qos);
        packet(0x82, &body)
    }

    pub fn publish(version: u8, topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        if version == V5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        packet(0x30 | (qos << 1), &body)
    }

    pub fn puback(pkid: u16) -> Vec<u8> {
        packet(0x40, &pkid.to_be_bytes())
    }

    pub fn disconnect() -> Vec<u8> {
        vec![0xe0, 0]
    }

    /// One packet: (first byte, body). `Ok(None)` when the peer closed cleanly before a packet.
    pub async fn read_packet<S: AsyncRead + Unpin>(
        s: &mut S,
    ) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        let mut first = [0u8; 1];
        if s.read(&mut first).await? == 0 {
            return Ok(None);
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = s.read_u8().await?;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await?;
        Ok(Some((first[0], body)))
    }

    /// Reads one packet within [`WAIT`]; panics on timeout, error or close.
    pub async fn expect_packet<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
        match tokio::time::timeout(WAIT, read_packet(s)).await {
            Err(_) => panic!("no packet within {WAIT:?}"),
            Ok(Err(e)) => panic!("read failed: {e}"),
            Ok(Ok(None)) => panic!("connection closed instead of a packet"),
            Ok(Ok(Some(p))) => p,
        }
    }

    /// Sends CONNECT and returns (session present, return/reason code) from the CONNACK.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        version: u8,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> (bool, u8) {
        s.write_all(&connect(version, client_id, username, password)).await.unwrap();
        let (first, body) = expect_packet(s).await;
        assert_eq!(first, 0x20, "expected CONNACK, got {first:#04x} {body:?}");
        (body[0] & 1 == 1, body[1])
    }

    /// Subscribes (one filter) and returns the SUBACK's return/reason code.
    pub async fn subscribe_code<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        version: u8,
        pkid: u16,
        filter: &str,
        qos: u8,
    ) -> u8 {
        s.write_all(&subscribe(version, pkid, filter, qos)).await.unwrap();
        loop {
            let (first, body) = expect_packet(s).await;
            if first == 0x90 {
                assert_eq!(u16::from_be_bytes([body[0], body[1]]), pkid);
                let codes = if version == V5 {
                    let (plen, n) = read_varint(&body[2..]);
                    &body[2 + n + plen..]
                } else {
                    &body[2..]
                };
                return codes[0];
            }
        }
    }

    pub fn read_varint(b: &[u8]) -> (usize, usize) {
        let mut v = 0usize;
        for (i, byte) in b.iter().enumerate() {
            v |= ((byte & 0x7f) as usize) << (7 * i);
            if byte & 0x80 == 0 {
                return (v, i + 1);
            }
        }
        panic!("bad varint");
    }

    /// Decodes a PUBLISH body: (topic, packet id, payload).
    pub fn parse_publish(version: u8, first: u8, body: &[u8]) -> (String, u16, Vec<u8>) {
        let qos = (first >> 1) & 3;
        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let mut at = 2 + tlen;
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([body[at], body[at + 1]]);
            at += 2;
        }
        if version == V5 {
            let (plen, n) = read_varint(&body[at..]);
            at += n + plen;
        }
        (topic, pkid, body[at..].to_vec())
    }

    /// A connected TCP client that got a successful CONNACK.
    pub async fn connected(addr: SocketAddr, version: u8, id: &str) -> tokio::net::TcpStream {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, code) = handshake(&mut s, version, id, None, None).await;
        assert_eq!(code, 0, "CONNACK for {id}");
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Chat: users, sessions and SDK clients against a running `seed`.
// ---------------------------------------------------------------------------------------------

pub mod chat {
    use super::*;
    pub use seed_sdk::{Account, ChatClient, Event, Session, v1};

    /// A fresh, valid user id (`[a-z0-9_.-]{3,32}`), unique per process and run.
    pub fn user(prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let mut id = format!(
            "{prefix}{}-{:x}{:x}",
            N.fetch_add(1, Ordering::Relaxed),
            std::process::id() % 4096,
            nanos % 65536
        );
        id.truncate(32);
        id
    }

    pub fn account(seed: &Seed) -> Account {
        Account::new(&format!("http://{}", seed.http)).unwrap()
    }

    pub fn password(user: &str) -> String {
        format!("pw-{user}-secret")
    }

    /// Registers a new user named after `prefix`; returns its id.
    pub async fn register(seed: &Seed, prefix: &str) -> String {
        let name = user(prefix);
        let id = account(seed).register(&name, &password(&name)).await.unwrap();
        assert_eq!(id, name);
        id
    }

    pub async fn login(seed: &Seed, user: &str, device: &str) -> Session {
        account(seed).login(user, &password(user), device).await.unwrap()
    }

    /// Logs the device in and connects it.
    pub async fn device(seed: &Seed, user: &str, device: &str) -> (Session, ChatClient) {
        let session = login(seed, user, device).await;
        let client = ChatClient::connect(&seed.mqtt.to_string(), &session).await.unwrap();
        (session, client)
    }

    /// The next event `f` accepts within [`WAIT`] (others are skipped); panics otherwise.
    pub async fn expect<T>(
        client: &mut ChatClient,
        what: &str,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, client.next_event()).await {
                Err(_) => panic!("timed out waiting for {what}"),
                Ok(None) => panic!("client ended while waiting for {what}"),
                Ok(Some(event)) => {
                    if let Some(v) = f(&event) {
                        return v;
                    }
                }
            }
        }
    }

    /// Asserts that no event `f` accepts arrives within `quiet`.
    pub async fn expect_none(
        client: &mut ChatClient,
        quiet: Duration,
        what: &str,
        mut f: impl FnMut(&Event) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, client.next_event()).await {
            assert!(!f(&event), "unexpected {what}: {event:?}");
        }
    }

    /// The next chat message (seq, message).
    pub async fn message(client: &mut ChatClient) -> (u64, v1::Message) {
        expect(client, "a message", |e| match e {
            Event::Message { seq, message } => Some((*seq, message.clone())),
            _ => None,
        })
        .await
    }

    /// Whether this `seed` binary runs the chat server (the accounts API answers).
    pub async fn chat_server_present(seed: &Seed) -> bool {
        let name = user("probe");
        account(seed).register(&name, &password(&name)).await.is_ok()
    }
}
