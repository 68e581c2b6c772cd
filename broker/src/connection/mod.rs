//! One client connection, from its CONNECT to its close, as a single task.
//!
//! The task waits on five things at once: bytes from the client, deliveries from the broker
//! (the session's outbox), the store committing a publish it must acknowledge, a publish's
//! hooks deciding, and the keep-alive sweeper (`keepalive.rs`) calling time. Whatever it has
//! to say goes into one write buffer that is flushed before it waits again, so a burst of
//! deliveries or acknowledgements leaves in one write.
//!
//! Most connections spend their life waiting, so the wait is one hand-written poll over
//! those sources (`poll_event`) rather than a `select!`, whose future would keep a slot for
//! every branch's future: a waiting connection holds little more than its own fields.
//!
//! `connect.rs` turns a CONNECT into a running connection (or a refusal), `inbound.rs`
//! handles the client's packets, `outbound.rs` writes deliveries and acknowledgements.

mod connect;
mod inbound;
mod outbound;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::broker::Broker;
use crate::codec::{Disconnect, LastWill, Packet, Protocol, QoS, ReasonCode};
use crate::hooks::{ClientInfo, Decision, Event};
use crate::message::Message;
use crate::metrics::SocketGuard;
use crate::session::{SessionRef, Wakeup};
use crate::store::StoreError;
use crate::transport::Transport;
use outbound::PendingAck;

/// A publish's hooks at work: they yield the verdict and the (possibly rewritten) message.
type Intercept = Pin<Box<dyn Future<Output = (Decision, Message)> + Send>>;

struct Intercepted {
    run: Intercept,
    decided: Option<(Decision, Message)>,
    qos: QoS,
    packet_id: u16,
}

/// Drives every publish's hooks; ready when the oldest one has its verdict.
fn poll_front_decided(intercepts: &mut VecDeque<Intercepted>, cx: &mut Context<'_>) -> Poll<()> {
    for intercepted in intercepts.iter_mut() {
        if intercepted.decided.is_none()
            && let Poll::Ready(decided) = intercepted.run.as_mut().poll(cx)
        {
            intercepted.decided = Some(decided);
        }
    }
    if intercepts.front().is_some_and(|i| i.decided.is_some()) {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// What ended a connection's wait, in the order they are served when several are ready.
enum Woken {
    /// The oldest waiting acknowledgement's commit is done.
    Committed(Result<(), StoreError>),
    /// The oldest publish's hooks have decided.
    Decided,
    /// The session rang: deliveries in the outbox, or a close request.
    Outbox,
    Read(std::io::Result<usize>),
    KeepAlive,
}

/// A 5.0 client's topic aliases, both ways. Boxed in the connection: most clients never
/// use them, and two maps would nearly double a waiting connection's size.
#[derive(Default)]
struct Aliases {
    incoming: HashMap<u16, String>,
    outgoing: outbound::OutAliases,
}

/// A write buffer grown past this by a burst is given back once flushed.
const MAX_IDLE_BUFFER: usize = 64 * 1024;

/// Why a connection ends, which decides what is sent last and whether the will goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The client sent DISCONNECT; `will` for 5.0's "disconnect with will message".
    Client {
        will: bool,
    },
    /// The socket closed or failed.
    Gone,
    /// The client broke the protocol; a 5.0 client is told why.
    Protocol(ReasonCode),
    KeepAlive,
    /// Session taken over, or the server shutting down.
    Server(ReasonCode),
}

/// Serves one accepted socket: waits (bounded) for its CONNECT, then runs the session.
pub async fn serve<T: Transport>(
    broker: Arc<Broker>,
    transport: T,
    peer: SocketAddr,
    listener: &'static str,
    socket: SocketGuard,
) {
    // Boxed so the handshake's large, short-lived state is freed once it is done.
    let accepted = Box::pin(connect::accept(broker, transport, peer, listener, socket)).await;
    if let Some(mut connection) = accepted {
        // A span costs a few hundred bytes per connection in the log subscriber, so it
        // exists only when debug lines are wanted; the connection's lines at info and
        // above name the client themselves.
        let span = tracing::debug_span!(
            "client",
            client_id = %connection.client.client_id,
            user = connection.client.user(),
        );
        // A task of its own: what stays for a connection's lifetime is its run loop alone,
        // not the accept task's state around it. The task uses the connection where it was
        // captured; an `async fn` taking it by value would hold it twice (as its argument
        // and as its local).
        let task = async move { connection.run().await };
        if span.is_disabled() {
            tokio::spawn(task);
        } else {
            tokio::spawn(task.instrument(span));
        }
    }
}

struct Connection<T> {
    broker: Arc<Broker>,
    transport: T,
    client: Arc<ClientInfo>,
    protocol: Protocol,
    session: SessionRef,
    link_id: u64,
    /// Rung when the session's outbox has deliveries (or a close request).
    wake: Arc<Wakeup>,
    /// Dropped last, when this connection is done: a take-over waits for that.
    _done: oneshot::Sender<()>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Topic aliases (5.0), made on first use.
    aliases: Option<Box<Aliases>>,
    /// How many topic aliases the client accepts from us (5.0 Topic Alias Maximum).
    out_alias_max: u16,
    /// Largest packet the client accepts (5.0 Maximum Packet Size); `u32::MAX` for no limit.
    client_max_packet: u32,
    /// PUBACK/PUBREC owed to the client, in the order the publishes came in.
    pending_acks: VecDeque<PendingAck>,
    /// Publishes whose hooks are still at work, in arrival order. They run concurrently (a
    /// plugin waiting for its store does not stop this client's next publish) and are
    /// finished — routed, acknowledged — strictly in order.
    intercepts: VecDeque<Intercepted>,
    /// Boxed: a will is rare and its properties are large, and this struct lives as long
    /// as the connection.
    will: Option<Box<LastWill>>,
    /// A close command taken from the channel while draining it; acted on next turn.
    closing: Option<ReasonCode>,
    /// Counts this connection's socket until the connection is dropped.
    _socket: SocketGuard,
}

impl<T: Transport> Connection<T> {
    async fn run(&mut self) {
        tracing::debug!(protocol = ?self.protocol, peer = %self.client.peer, "connected");
        let close = self.event_loop().await;
        tracing::debug!(?close, "connection closing");
        // The keep-alive sweeper forgets a connection whose limit is 0.
        self.wake.set_keep_alive(0, 0);
        let code = match close {
            Close::Protocol(code) | Close::Server(code) => Some(code),
            Close::KeepAlive => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Close::Client { .. } | Close::Gone => None,
        };
        if let Some(code) = code
            && self.protocol.is_v5()
        {
            let packet = Packet::Disconnect(Disconnect { reason: code, ..Default::default() });
            self.write_packet(&packet);
        }
        if !self.wbuf.is_empty() {
            // Boxed: a timer and a write, once per connection, are not worth a place in
            // every waiting one.
            let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), self.flush())).await;
        }
        self.transport.close().await;

        let will = match close {
            Close::Client { will } => will,
            Close::Server(ReasonCode::SERVER_SHUTTING_DOWN) => false,
            _ => true,
        };
        self.broker.connection_closed(&self.session, self.link_id);
        if let Some(last_will) = self.will.take()
            && will
        {
            self.publish_will(last_will);
        }
        self.broker.metrics.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if self.broker.hooks.has_observers() {
            let reason = code.unwrap_or(ReasonCode::NORMAL_DISCONNECTION);
            self.broker.hooks.notify(Event::Disconnected { client: self.client.clone(), reason });
        }
        // The task drops the connection when this returns: `_done` going with it tells a
        // waiting take-over that this connection is done.
    }

    async fn event_loop(&mut self) -> Close {
        // Shutdown reaches a running connection through its session link (see
        // `Broker::shut_down`); this catches one that attached just after.
        if self.broker.is_shutting_down() {
            return Close::Server(ReasonCode::SERVER_SHUTTING_DOWN);
        }
        loop {
            if let Some(code) = self.closing {
                return Close::Server(code);
            }
            if !self.wbuf.is_empty()
                && let Err(e) = self.flush().await
            {
                tracing::debug!(error = %e, "write failed");
                return Close::Gone;
            }
            let event = std::future::poll_fn(|cx| self.poll_event(cx)).await;
            match event {
                Woken::Committed(result) => {
                    if let Err(close) = self.acks_ready(result) {
                        return close;
                    }
                }
                Woken::Decided => self.finish_intercepted(),
                Woken::Outbox => {
                    if let Err(close) = self.drain_outbox() {
                        return close;
                    }
                }
                Woken::Read(Ok(0)) => return Close::Gone,
                Woken::Read(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return Close::Gone;
                }
                Woken::Read(Ok(_)) => {
                    self.wake.touch(self.broker.keep_alive.now_ms());
                    // Boxed: decoding and handling need far more state than waiting does,
                    // and a waiting connection should be small.
                    if let Err(close) = Box::pin(self.process_input()).await {
                        return close;
                    }
                    if self.rbuf.is_empty() {
                        // Many idle devices: hold no read buffer between packets.
                        self.rbuf = BytesMut::new();
                    }
                }
                Woken::KeepAlive => {
                    // The sweeper may have looked just before a read: check again.
                    if self.wake.is_silent(self.broker.keep_alive.now_ms()) {
                        return Close::KeepAlive;
                    }
                }
            }
        }
    }

    /// One poll of everything the connection waits on, in a fixed order: acknowledgements
    /// and verdicts first (they free the client's window), then deliveries, then the
    /// client's bytes, then the keep-alive sweeper's verdict.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Woken> {
        if let Some(wait) = self.pending_acks.front_mut().and_then(PendingAck::wait_mut)
            && let Poll::Ready(committed) = Pin::new(wait).poll(cx)
        {
            return Poll::Ready(Woken::Committed(committed.unwrap_or(Err(StoreError::Closed))));
        }
        if !self.intercepts.is_empty() && poll_front_decided(&mut self.intercepts, cx).is_ready() {
            return Poll::Ready(Woken::Decided);
        }
        if self.wake.poll(cx).is_ready() {
            return Poll::Ready(Woken::Outbox);
        }
        if let Poll::Ready(read) = self.transport.poll_read_into(cx, &mut self.rbuf) {
            return Poll::Ready(Woken::Read(read));
        }
        // After `wake.poll`, which registered the task for the sweeper's call too.
        if self.wake.take_expired() {
            return Poll::Ready(Woken::KeepAlive);
        }
        Poll::Pending
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn process_input(&mut self) -> Result<(), Close> {
        let max = self.broker.config.max_packet_size as usize;
        loop {
            let before = self.rbuf.len();
            let packet = match crate::codec::decode(&mut self.rbuf, self.protocol, max) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::info!(
                        client_id = %self.client.client_id,
                        user = self.client.user(),
                        reason = %e.reason,
                        detail = e.detail,
                        "bad packet"
                    );
                    return Err(Close::Protocol(e.reason));
                }
            };
            let size = before - self.rbuf.len();
            self.broker.metrics.packet_in(packet_type(&packet), size);
            self.handle(packet).await?;
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let result = self.transport.write_all(&self.wbuf).await;
        if self.wbuf.capacity() > MAX_IDLE_BUFFER {
            self.wbuf = BytesMut::new();
        } else {
            self.wbuf.clear();
        }
        result
    }
}

/// The MQTT control packet type number, for per-type metrics.
fn packet_type(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 1,
        Packet::ConnAck(_) => 2,
        Packet::Publish(_) => 3,
        Packet::PubAck(_) => 4,
        Packet::PubRec(_) => 5,
        Packet::PubRel(_) => 6,
        Packet::PubComp(_) => 7,
        Packet::Subscribe(_) => 8,
        Packet::SubAck(_) => 9,
        Packet::Unsubscribe(_) => 10,
        Packet::UnsubAck(_) => 11,
        Packet::PingReq => 12,
        Packet::PingResp => 13,
        Packet::Disconnect(_) => 14,
        Packet::Auth(_) => 15,
    }
}
