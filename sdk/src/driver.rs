//! The connection task behind a [`crate::ChatClient`]: it owns rumqttc's client and event loop
//! and turns them into "a publish resolves when its PUBACK arrives" and "each inbox entry is
//! surfaced once", across reconnects.
//!
//! Two tasks. The *poller* only drives rumqttc's `EventLoop::poll` (never cancelled mid-write)
//! and forwards what it yields. The *driver* owns the app's commands and all bookkeeping:
//!
//! - rumqttc takes requests from a channel in order and reports `Outgoing::Publish(pkid)` for
//!   each publish it writes, so publishes handed over (`handed`, FIFO) are matched to packet
//!   ids in order, then to the PUBACK with that id (`inflight`).
//! - Sessions are clean, so rumqttc drops whatever was unacknowledged when a connection dies.
//!   The poller reports how many never-written publishes the failure swallowed (the front of
//!   `handed`); those and everything in flight go back to `waiting` and are published again
//!   after the next CONNACK with the same payload (so the same `client_msg_id`: the server
//!   keeps them idempotent). Publishes are only handed over while connected.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, EventLoop, Request};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::event::{self, Event, Seen};

/// Publishes handed to rumqttc and not yet acknowledged, at most. Keeps rumqttc's request
/// channel (see `CHANNEL`) from ever filling.
const WINDOW: usize = 512;
/// rumqttc's request channel capacity.
pub(crate) const CHANNEL: usize = 2048;
/// How many inbox seqs are remembered for de-duplication.
const SEEN: usize = 200_000;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a graceful DISCONNECT may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A request from the app.
pub(crate) enum Command {
    Publish(Pending),
    /// Ask for a replay from `since`; entries after it are surfaced again.
    Sync(u64, Pending),
    Disconnect(oneshot::Sender<()>),
}

/// A publish and whoever waits for its outcome.
pub(crate) struct Pending {
    pub topic: String,
    pub qos: QoS,
    pub payload: Bytes,
    pub done: Option<oneshot::Sender<Result<()>>>,
    /// Order of submission, to requeue in order.
    order: u64,
}

impl Pending {
    pub(crate) fn new(topic: String, qos: QoS, payload: Bytes) -> (Pending, PendingResult) {
        let (tx, rx) = oneshot::channel();
        (Pending { topic, qos, payload, done: Some(tx), order: 0 }, rx)
    }

    fn finish(mut self, result: Result<()>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

pub(crate) type PendingResult = oneshot::Receiver<Result<()>>;

/// What the poller saw.
enum Polled {
    Event(Box<rumqttc::v5::Event>),
    Error { reason: String, refused: bool, lost_unsent: usize },
}

/// Starts both tasks; `ready` resolves after the first CONNACK and inbox SUBACK.
pub(crate) fn spawn(
    client: AsyncClient,
    eventloop: EventLoop,
    inbox: String,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    ready: oneshot::Sender<Result<()>>,
) {
    let closing = Arc::new(AtomicBool::new(false));
    let (polled_tx, polled) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_loop(eventloop, polled_tx, closing.clone()));
    let driver = Driver {
        client,
        inbox,
        commands,
        polled,
        events,
        ready: Some(ready),
        closing,
        poller,
        connected: false,
        waiting: VecDeque::new(),
        handed: VecDeque::new(),
        inflight: HashMap::new(),
        seen: Seen::new(SEEN),
        next_order: 0,
        closed: None,
        close_deadline: None,
    };
    tokio::spawn(driver.run());
}

async fn poll_loop(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Polled>,
    closing: Arc<AtomicBool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if matches!(event, rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) {
                    backoff = MIN_BACKOFF;
                }
                if tx.send(Polled::Event(Box::new(event))).is_err() {
                    return;
                }
            }
            Err(error) => {
                // What rumqttc would replay on a resumed session; sessions are clean, so the
                // driver resends instead. Publishes without a packet id were never written.
                let pending = std::mem::take(&mut eventloop.pending);
                let mut lost_unsent = pending
                    .iter()
                    .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
                    .count();
                // A publish parked on a packet-id collision was taken from the channel but
                // not written; a dead connection never frees it.
                if eventloop.state.collision.take().is_some() {
                    lost_unsent += 1;
                }
                let refused = matches!(
                    error,
                    ConnectionError::ConnectionRefused(_)
                        | ConnectionError::MqttState(rumqttc::v5::StateError::ConnFail { .. })
                );
                let done = matches!(error, ConnectionError::RequestsDone);
                let reason = error.to_string();
                if tx.send(Polled::Error { reason, refused, lost_unsent }).is_err()
                    || refused
                    || done
                    || closing.load(Ordering::Acquire)
                {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

struct Driver {
    client: AsyncClient,
    inbox: String,
    commands: mpsc::UnboundedReceiver<Command>,
    polled: mpsc::UnboundedReceiver<Polled>,
    events: mpsc::UnboundedSender<Event>,
    ready: Option<oneshot::Sender<Result<()>>>,
    closing: Arc<AtomicBool>,
    poller: JoinHandle<()>,
    connected: bool,
    /// Not handed to rumqttc yet (disconnected, or the window is full).
    waiting: VecDeque<Pending>,
    /// Handed to rumqttc, not yet written (no packet id yet).
    handed: VecDeque<Pending>,
    /// Written, waiting for the PUBACK with this packet id.
    inflight: HashMap<u16, Pending>,
    seen: Seen,
    next_order: u64,
    /// Set once `disconnect()` was asked for: who to tell when done.
    closed: Option<Option<oneshot::Sender<()>>>,
    close_deadline: Option<tokio::time::Instant>,
}

impl Driver {
    async fn run(mut self) {
        loop {
            let deadline = self.close_deadline;
            tokio::select! {
                polled = self.polled.recv() => {
                    let stop = match polled {
                        Some(p) => self.on_polled(p),
                        None => {
                            self.finish("connection task ended", false);
                            true
                        }
                    };
                    if stop {
                        return;
                    }
                }
                command = self.commands.recv(), if self.closed.is_none() => match command {
                    Some(c) => self.on_command(c),
                    None => self.begin_close(None),
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.finish("closed", false);
                    return;
                }
            }
            if self.closed.is_none() {
                self.hand_over();
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish(p) => self.enqueue(p),
            Command::Sync(since, p) => {
                self.seen.forget_after(since);
                self.enqueue(p);
            }
            Command::Disconnect(done) => self.begin_close(Some(done)),
        }
    }

    fn enqueue(&mut self, mut p: Pending) {
        p.order = self.next_order;
        self.next_order += 1;
        self.waiting.push_back(p);
    }

    fn begin_close(&mut self, done: Option<oneshot::Sender<()>>) {
        self.closing.store(true, Ordering::Release);
        self.closed = Some(done);
        if self.connected && self.client.try_disconnect().is_ok() {
            self.close_deadline = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
        } else {
            self.close_deadline = Some(tokio::time::Instant::now());
        }
    }

    /// Hands waiting publishes to rumqttc while connected and within the window.
    fn hand_over(&mut self) {
        while self.connected && self.handed.len() + self.inflight.len() < WINDOW {
            let Some(p) = self.waiting.pop_front() else { return };
            match self.client.try_publish(p.topic.clone(), p.qos, false, p.payload.clone()) {
                Ok(()) => self.handed.push_back(p),
                Err(e) => {
                    tracing::debug!(error = %e, "request channel refused a publish; retrying later");
                    self.waiting.push_front(p);
                    return;
                }
            }
        }
    }

    /// Returns true when the driver is finished.
    fn on_polled(&mut self, polled: Polled) -> bool {
        match polled {
            Polled::Event(event) => self.on_mqtt(*event),
            Polled::Error { reason, refused, lost_unsent } => {
                self.on_error(reason, refused, lost_unsent)
            }
        }
    }

    /// Returns true when the driver is finished.
    fn on_mqtt(&mut self, event: rumqttc::v5::Event) -> bool {
        use rumqttc::v5::Event as Mqtt;
        match event {
            Mqtt::Incoming(packet) => match packet {
                Packet::ConnAck(_) => {
                    self.connected = true;
                    if let Err(e) = self.client.try_subscribe(self.inbox.clone(), QoS::AtLeastOnce)
                    {
                        self.finish(&format!("subscribing: {e}"), true);
                        return true;
                    }
                }
                Packet::SubAck(ack) => match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                        self.emit(Event::Connected);
                    }
                    other => {
                        let reason = format!("{other:?}");
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Err(Error::Subscribe(reason.clone())));
                        }
                        self.finish(&format!("inbox subscription refused: {reason}"), false);
                        return true;
                    }
                },
                Packet::Publish(publish) if publish.topic.as_ref() == self.inbox.as_bytes() => {
                    let event = event::decode(&publish.payload);
                    match event::seq_of(&event) {
                        Some(seq) if !self.seen.first_time(seq) => {}
                        _ => self.emit(event),
                    }
                }
                Packet::PubAck(ack) => {
                    if let Some(p) = self.inflight.remove(&ack.pkid) {
                        let code = puback_code(&ack.reason);
                        p.finish(if code < 0x80 { Ok(()) } else { Err(Error::Publish(code)) });
                    }
                }
                _ => {}
            },
            Mqtt::Outgoing(outgoing) => match outgoing {
                Outgoing::Publish(pkid) => match self.handed.pop_front() {
                    Some(p) if p.qos == QoS::AtMostOnce => p.finish(Ok(())),
                    Some(p) => {
                        if let Some(old) = self.inflight.insert(pkid, p) {
                            // Cannot happen while rumqttc owns packet ids; never lose a waiter.
                            self.waiting.push_front(old);
                        }
                    }
                    None => tracing::warn!(pkid, "publish written that the SDK did not hand over"),
                },
                Outgoing::Disconnect if self.closed.is_some() => {
                    self.finish("disconnected", false);
                    return true;
                }
                _ => {}
            },
        }
        false
    }

    /// A lost (or refused) connection. Returns true when the driver is finished.
    fn on_error(&mut self, reason: String, refused: bool, lost_unsent: usize) -> bool {
        if self.closed.is_some() {
            self.finish("disconnected", false);
            return true;
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(if refused {
                Error::Refused(reason.clone())
            } else {
                Error::Connection(reason.clone())
            }));
            self.finish(&reason, false);
            return true;
        }
        self.connected = false;
        self.requeue(lost_unsent, &reason);
        if refused {
            self.finish(&reason, true);
            return true;
        }
        self.emit(Event::Disconnected { reason, reconnecting: true });
        false
    }

    /// After a lost connection: what was in flight and what the failure swallowed goes back to
    /// the front of `waiting`, in submission order. Typing (QoS 0) is not worth resending.
    fn requeue(&mut self, lost_unsent: usize, reason: &str) {
        let mut lost: Vec<Pending> = self.inflight.drain().map(|(_, p)| p).collect();
        let n = lost_unsent.min(self.handed.len());
        lost.extend(self.handed.drain(..n));
        lost.sort_by_key(|p| std::cmp::Reverse(p.order));
        for p in lost {
            if p.qos == QoS::AtMostOnce {
                p.finish(Err(Error::Connection(reason.to_owned())));
            } else {
                self.waiting.push_front(p);
            }
        }
    }

    fn emit(&self, event: Event) {
        // The app may have dropped its receiver; sending is then pointless, not an error.
        let _ = self.events.send(event);
    }

    /// Ends the client: every waiter learns the outcome, the poller stops.
    fn finish(&mut self, reason: &str, announce: bool) {
        self.closing.store(true, Ordering::Release);
        self.connected = false;
        let error = || {
            if reason == "disconnected" || reason == "closed" {
                Error::Closed
            } else {
                Error::Connection(reason.to_owned())
            }
        };
        for p in self.waiting.drain(..).chain(self.handed.drain(..)) {
            p.finish(Err(error()));
        }
        for (_, p) in self.inflight.drain() {
            p.finish(Err(error()));
        }
        if announce || self.closed.is_none() {
            self.emit(Event::Disconnected { reason: reason.to_owned(), reconnecting: false });
        }
        self.poller.abort();
        if let Some(Some(done)) = self.closed.take() {
            let _ = done.send(());
        }
        self.commands.close();
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Publish(p) | Command::Sync(_, p) => p.finish(Err(Error::Closed)),
                Command::Disconnect(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The MQTT 5 reason code of a PUBACK.
fn puback_code(reason: &PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}
