//! A session: what the broker keeps for one client id, connected or not — subscriptions, the
//! QoS 1/2 messages in flight to it, the messages queued behind them.
//!
//! The state sits behind a short-held mutex that both sides take: publishers deliver into it,
//! and the client's connection takes acknowledgements out of it. While the client is
//! connected the session holds a [`Link`] (an outbox the connection task drains) and
//! deliveries go straight down it as long as the in-flight window has room; otherwise they
//! wait in the queue, which the connection drains as acknowledgements free the window.
//!
//! Packet ids are derived from a per-session sequence number (`seq % 65535 + 1`), so a
//! message keeps its packet id across reconnects and restarts without storing it again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::codec::{QoS, ReasonCode, SubscriptionOptions};
use crate::message::Message;
use crate::metrics::{DropReason, Metrics};
use crate::store::Write;

pub type SessionRef = Arc<SessionHandle>;

/// A session as shared between the broker's map, the router and the connection.
pub struct SessionHandle {
    client_id: Arc<str>,
    online: AtomicBool,
    pub state: Mutex<Session>,
}

impl SessionHandle {
    pub fn new_ref(client_id: Arc<str>, expiry: u32) -> SessionRef {
        Arc::new(SessionHandle {
            state: Mutex::new(Session::new(client_id.clone(), expiry)),
            client_id,
            online: AtomicBool::new(false),
        })
    }

    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }
}

/// One PUBLISH to write to a subscriber.
#[derive(Debug, Clone)]
pub struct OutPublish {
    pub packet_id: u16,
    pub qos: QoS,
    pub dup: bool,
    pub retain: bool,
    pub message: Arc<Message>,
    pub sub_ids: Vec<u32>,
}

/// How a session, and the keep-alive sweeper, wake a connection task: flags and the task's
/// waker. Unlike a `Notify` or a timer, it needs nothing inside the waiting future, and an
/// idle connection is mostly waiting. It also carries what the sweeper reads: the
/// connection's keep-alive limit and its last read (see `keepalive.rs`).
#[derive(Default)]
pub struct Wakeup {
    waker: AtomicWaker,
    rung: AtomicBool,
    expired: AtomicBool,
    /// 1.5 × keep-alive in milliseconds; 0 for none, or once the connection has ended.
    keep_alive_ms: AtomicU32,
    /// When the connection last read, in the sweeper's milliseconds.
    last_read_ms: AtomicU64,
}

impl Wakeup {
    /// Wakes the connection, or has its next poll return at once: one stored ring, like
    /// `Notify::notify_one`.
    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once rung since the last time it was ready. Also registers the task for
    /// [`Wakeup::expire`].
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the check, so a ring in between is not lost.
        self.waker.register(cx.waker());
        if self.rung.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// The sweeper found the connection silent past its keep-alive.
    pub fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the sweeper called time since the last look.
    pub fn take_expired(&self) -> bool {
        self.expired.swap(false, Ordering::AcqRel)
    }

    pub fn set_keep_alive(&self, limit_ms: u32, now_ms: u64) {
        self.last_read_ms.store(now_ms, Ordering::Relaxed);
        self.keep_alive_ms.store(limit_ms, Ordering::Relaxed);
    }

    pub fn keep_alive_ms(&self) -> u32 {
        self.keep_alive_ms.load(Ordering::Relaxed)
    }

    /// The connection read something.
    pub fn touch(&self, now_ms: u64) {
        self.last_read_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_read_ms(&self) -> u64 {
        self.last_read_ms.load(Ordering::Relaxed)
    }

    /// Whether the connection has a keep-alive and has read nothing for its limit by
    /// `now_ms`.
    pub fn is_silent(&self, now_ms: u64) -> bool {
        let limit = u64::from(self.keep_alive_ms());
        limit > 0 && now_ms.saturating_sub(self.last_read_ms()) >= limit
    }
}

/// A connected client's end of the session: deliveries wait in `outbox` until the
/// connection task, woken through `wake`, takes them all at once.
///
/// A queue in the session rather than a channel per connection: an idle connection then
/// costs no channel buffer, and there is a single FIFO, so deliveries and the messages the
/// connection moves in from `queue` cannot overtake one another.
pub struct Link {
    pub id: u64,
    /// In-flight window: min(client's Receive Maximum, our max_inflight).
    pub window: u32,
    pub outbox: VecDeque<OutPublish>,
    /// Outbox length at most; past it QoS 0 messages are dropped (a slow consumer) and
    /// QoS 1/2 messages wait in the session queue.
    pub capacity: u32,
    /// Set to make the connection close, telling a 5.0 client why (session taken over).
    pub closing: Option<ReasonCode>,
    pub wake: Arc<Wakeup>,
    /// Resolves when the connection task has finished (its sender is dropped).
    pub finished: Option<oneshot::Receiver<()>>,
}

impl Link {
    /// A link and the two ends its connection task keeps: the wake-up, and the sender
    /// whose drop says the connection is done.
    pub fn new(
        id: u64,
        window: usize,
        capacity: usize,
    ) -> (Link, Arc<Wakeup>, oneshot::Sender<()>) {
        let wake = Arc::new(Wakeup::default());
        let (done, finished) = oneshot::channel();
        let link = Link {
            id,
            window: u32::try_from(window).unwrap_or(u32::MAX),
            outbox: VecDeque::new(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            closing: None,
            wake: wake.clone(),
            finished: Some(finished),
        };
        (link, wake, done)
    }

    fn push(&mut self, out: OutPublish) -> bool {
        if self.outbox.len() >= self.capacity as usize {
            return false;
        }
        if self.outbox.is_empty() {
            // One stored permit is enough: the connection takes the whole outbox per wake.
            self.wake.ring();
        }
        self.outbox.push_back(out);
        true
    }

    /// Asks the connection to close.
    pub fn close(&mut self, code: ReasonCode) {
        self.closing = Some(code);
        self.wake.ring();
    }
}

#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: u64,
    /// Row in the store's `messages` table; 0 when not stored.
    pub message_id: u64,
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: u16,
    pub item: Queued,
    /// QoS 2: PUBREC received, PUBREL sent; waiting for PUBCOMP.
    pub released: bool,
}

/// An acknowledgement from the subscriber, applied to the in-flight window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    PubAck,
    PubRec,
    PubComp,
}

pub struct Session {
    client_id: Arc<str>,
    /// Session expiry interval in seconds; 0 ends the session with the connection.
    pub expiry: u32,
    /// Subscriptions by their full filter (with any `$share/{group}/` prefix).
    pub subscriptions: HashMap<String, (SubscriptionOptions, Option<u32>)>,
    pub inflight: VecDeque<Inflight>,
    pub queue: VecDeque<Queued>,
    next_seq: u64,
    pub link: Option<Link>,
    /// Incoming QoS 2 packet ids received but not yet released by PUBREL.
    pub incoming_qos2: PacketIds,
    /// Unix ms when the client went away (None while connected).
    pub disconnected_at: Option<u64>,
    /// Bumped on every connect, so a delayed will knows whether its client came back.
    pub epoch: u32,
    /// QoS 1/2 messages at most in `queue`.
    pub max_queued: u32,
    /// The store has a row for this session (so ending it must delete that row, even if
    /// its expiry has since been set to 0).
    pub stored: bool,
    /// Highest sequence number restored from the store at start-up: those messages may
    /// have been sent before the restart, so they go out with DUP set ([MQTT-3.3.1-1]).
    restored_seq: u64,
}

/// A set of packet ids, allocated only once it holds one: most clients never publish with
/// QoS 2, and every session, connected or not, would carry an empty map's 48 bytes.
#[derive(Default)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes while empty
pub struct PacketIds(Option<Box<HashSet<u16>>>);

impl PacketIds {
    /// Adds an id; false if it was there already.
    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_default().insert(id)
    }

    /// Removes an id; false if it was not there.
    pub fn remove(&mut self, id: &u16) -> bool {
        self.0.as_mut().is_some_and(|ids| ids.remove(id))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |ids| ids.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a delivery did, for the caller's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Written to the connection's channel.
    Sent,
    /// Waiting in the session (client offline or window full).
    Queued,
    Dropped(DropReason),
}

pub fn packet_id_for(seq: u64) -> u16 {
    (seq % 65535) as u16 + 1
}

impl Session {
    pub fn new(client_id: Arc<str>, expiry: u32) -> Session {
        Session {
            client_id,
            expiry,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            next_seq: 1,
            link: None,
            incoming_qos2: PacketIds::default(),
            disconnected_at: None,
            epoch: 0,
            max_queued: 100_000,
            stored: false,
            restored_seq: 0,
        }
    }

    pub fn is_persistent(&self) -> bool {
        self.expiry > 0
    }

    /// Restores a stored queue entry (at start-up).
    pub fn restore(&mut self, item: Queued, released: bool) {
        self.next_seq = self.next_seq.max(item.seq + 1);
        self.restored_seq = self.restored_seq.max(item.seq);
        if released {
            self.inflight.push_back(Inflight {
                packet_id: packet_id_for(item.seq),
                item,
                released,
            });
        } else {
            self.queue.push_back(item);
        }
    }

    /// Delivers one message to this session. `message_id` is the stored copy (0 if none);
    /// a persistent session records a QoS 1/2 message in `writes` so it survives a restart.
    pub fn deliver(
        &mut self,
        message: &Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: Vec<u32>,
        message_id: u64,
        writes: &mut Vec<Write>,
    ) -> Delivered {
        if qos == QoS::AtMostOnce {
            let Some(link) = &mut self.link else {
                return Delivered::Dropped(DropReason::QueueFull);
            };
            let out = OutPublish {
                packet_id: 0,
                qos,
                dup: false,
                retain,
                message: message.clone(),
                sub_ids,
            };
            return if link.push(out) {
                Delivered::Sent
            } else {
                Delivered::Dropped(DropReason::QueueFull)
            };
        }
        if self.queue.len() >= self.max_queued as usize {
            return Delivered::Dropped(DropReason::QueueFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.is_persistent() && message_id != 0 {
            writes.push(Write::Enqueue {
                client_id: self.client_id.clone(),
                seq,
                message_id,
                qos,
                retain,
                sub_ids: sub_ids.clone(),
            });
        }
        let item = Queued { seq, message_id, message: message.clone(), qos, retain, sub_ids };
        let free = self.packet_id_free(seq);
        if let Some(link) = &mut self.link
            && self.queue.is_empty()
            && self.inflight.len() < link.window as usize
            && free
        {
            let out = OutPublish {
                packet_id: packet_id_for(seq),
                qos,
                dup: false,
                retain,
                message: message.clone(),
                sub_ids: item.sub_ids.clone(),
            };
            if link.push(out) {
                self.inflight.push_back(Inflight {
                    packet_id: packet_id_for(seq),
                    item,
                    released: false,
                });
                return Delivered::Sent;
            }
        }
        self.queue.push_back(item);
        Delivered::Queued
    }

    fn packet_id_free(&self, seq: u64) -> bool {
        // Ids repeat every 65535 messages; only an in-flight message that old can collide.
        match self.inflight.front() {
            Some(oldest) if seq - oldest.item.seq >= 65535 => {
                let id = packet_id_for(seq);
                !self.inflight.iter().any(|i| i.packet_id == id)
            }
            _ => true,
        }
    }

    /// Applies a subscriber's acknowledgement. Returns the message it completed (PUBACK,
    /// PUBCOMP), or None when the packet id is not in flight for that step.
    pub fn acknowledge(
        &mut self,
        packet_id: u16,
        ack: Ack,
        writes: &mut Vec<Write>,
    ) -> Option<Arc<Message>> {
        let i = self.inflight.iter().position(|f| f.packet_id == packet_id)?;
        let entry = &mut self.inflight[i];
        match (ack, entry.item.qos, entry.released) {
            (Ack::PubAck, QoS::AtLeastOnce, _) | (Ack::PubComp, QoS::ExactlyOnce, true) => {
                let done = self.inflight.remove(i)?;
                if self.is_persistent() && done.item.message_id != 0 {
                    writes.push(Write::Dequeue {
                        client_id: self.client_id.clone(),
                        seq: done.item.seq,
                        message_id: done.item.message_id,
                    });
                }
                Some(done.item.message)
            }
            (Ack::PubRec, QoS::ExactlyOnce, _) => {
                if !entry.released && self.expiry > 0 && entry.item.message_id != 0 {
                    writes.push(Write::Released {
                        client_id: self.client_id.clone(),
                        seq: entry.item.seq,
                    });
                }
                entry.released = true;
                Some(entry.item.message.clone())
            }
            _ => None,
        }
    }

    /// A PUBREC with an error code ends a QoS 2 delivery without PUBREL ([MQTT-4.3.3-?]).
    pub fn abandon(&mut self, packet_id: u16, writes: &mut Vec<Write>) {
        if let Some(i) = self.inflight.iter().position(|f| f.packet_id == packet_id)
            && let Some(done) = self.inflight.remove(i)
            && self.is_persistent()
            && done.item.message_id != 0
        {
            writes.push(Write::Dequeue {
                client_id: self.client_id.clone(),
                seq: done.item.seq,
                message_id: done.item.message_id,
            });
        }
    }

    /// Moves queued messages into the free part of the window, returning what to send.
    pub fn fill_window(
        &mut self,
        now_millis: u64,
        metrics: &Metrics,
        writes: &mut Vec<Write>,
    ) -> Vec<OutPublish> {
        let Some(window) = self.link.as_ref().map(|l| l.window as usize) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while self.inflight.len() < window {
            let Some(front) = self.queue.front() else { break };
            if !self.packet_id_free(front.seq) {
                break;
            }
            let Some(item) = self.queue.pop_front() else { break };
            if item.message.is_expired(now_millis) {
                metrics.dropped(DropReason::Expired);
                if self.is_persistent() && item.message_id != 0 {
                    writes.push(Write::Dequeue {
                        client_id: self.client_id.clone(),
                        seq: item.seq,
                        message_id: item.message_id,
                    });
                }
                continue;
            }
            let packet_id = packet_id_for(item.seq);
            out.push(OutPublish {
                packet_id,
                qos: item.qos,
                dup: item.seq <= self.restored_seq,
                retain: item.retain,
                message: item.message.clone(),
                sub_ids: item.sub_ids.clone(),
            });
            self.inflight.push_back(Inflight { packet_id, item, released: false });
        }
        out
    }

    /// On reconnect: everything in flight is sent again, PUBLISH with DUP set, or PUBREL for
    /// QoS 2 messages already received ([MQTT-4.4.0-1]).
    pub fn resend(&self) -> (Vec<OutPublish>, Vec<u16>) {
        let mut publishes = Vec::new();
        let mut releases = Vec::new();
        for f in &self.inflight {
            if f.released {
                releases.push(f.packet_id);
            } else {
                publishes.push(OutPublish {
                    packet_id: f.packet_id,
                    qos: f.item.qos,
                    dup: true,
                    retain: f.item.retain,
                    message: f.item.message.clone(),
                    sub_ids: f.item.sub_ids.clone(),
                });
            }
        }
        (publishes, releases)
    }

    /// Everything waiting in the outbox, and whether the connection was asked to close.
    pub fn take_outbox(&mut self) -> (VecDeque<OutPublish>, Option<ReasonCode>) {
        match &mut self.link {
            Some(link) => (std::mem::take(&mut link.outbox), link.closing),
            None => (VecDeque::new(), None),
        }
    }

    /// Messages held for the client: in flight plus queued.
    pub fn pending(&self) -> usize {
        self.inflight.len() + self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(n: u8) -> Arc<Message> {
        Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
        })
    }

    fn linked(window: usize, capacity: usize) -> (Session, oneshot::Sender<()>) {
        let mut s = Session::new("c".into(), 60);
        let (link, _wake, done) = Link::new(1, window, capacity);
        s.link = Some(link);
        (s, done)
    }

    #[test]
    fn window_bounds_in_flight_and_acks_refill_in_order() {
        let (mut s, _done) = linked(2, 16);
        let mut writes = Vec::new();
        for n in 0..5 {
            s.deliver(&message(n), QoS::AtLeastOnce, false, vec![], 10 + n as u64, &mut writes);
        }
        assert_eq!(writes.len(), 5, "persistent session stores every QoS 1 message");
        assert_eq!(s.inflight.len(), 2);
        assert_eq!(s.queue.len(), 3);
        let (outbox, closing) = s.take_outbox();
        assert_eq!(outbox.len(), 2);
        assert_eq!(closing, None);
        let first = outbox[0].clone();
        assert_eq!(first.packet_id, 2);
        writes.clear();
        assert!(s.acknowledge(first.packet_id, Ack::PubAck, &mut writes).is_some());
        assert!(matches!(writes[0], Write::Dequeue { seq: 1, .. }));
        let refill = s.fill_window(0, &Metrics::default(), &mut writes);
        assert_eq!(refill.len(), 1);
        assert_eq!(refill[0].message.payload[0], 2);
        assert!(s.acknowledge(999, Ack::PubAck, &mut writes).is_none());
    }

    #[test]
    fn offline_sessions_queue_and_resend_with_dup() {
        let mut s = Session::new("c".into(), 60);
        let mut writes = Vec::new();
        assert_eq!(
            s.deliver(&message(1), QoS::AtLeastOnce, false, vec![], 1, &mut writes),
            Delivered::Queued
        );
        assert_eq!(
            s.deliver(&message(2), QoS::AtMostOnce, false, vec![], 0, &mut writes),
            Delivered::Dropped(DropReason::QueueFull)
        );
        s.link = Some(Link::new(2, 10, 4).0);
        let sent = s.fill_window(0, &Metrics::default(), &mut writes);
        assert_eq!(sent.len(), 1);
        let (again, releases) = s.resend();
        assert!(again[0].dup);
        assert!(releases.is_empty());
    }

    #[test]
    fn qos2_goes_through_pubrec_then_pubcomp() {
        let (mut s, _done) = linked(4, 4);
        let mut writes = Vec::new();
        s.deliver(&message(1), QoS::ExactlyOnce, false, vec![], 7, &mut writes);
        let id = s.inflight[0].packet_id;
        assert!(s.acknowledge(id, Ack::PubAck, &mut writes).is_none(), "QoS 2 needs PUBREC");
        assert!(s.acknowledge(id, Ack::PubComp, &mut writes).is_none(), "not released yet");
        assert!(s.acknowledge(id, Ack::PubRec, &mut writes).is_some());
        assert_eq!(s.resend().1, vec![id]);
        assert!(s.acknowledge(id, Ack::PubComp, &mut writes).is_some());
        assert!(s.inflight.is_empty());
    }

    #[test]
    fn full_channel_queues_instead_of_losing() {
        let (mut s, _done) = linked(10, 1);
        let mut writes = Vec::new();
        assert_eq!(
            s.deliver(&message(1), QoS::AtLeastOnce, false, vec![], 0, &mut writes),
            Delivered::Sent
        );
        assert_eq!(
            s.deliver(&message(2), QoS::AtLeastOnce, false, vec![], 0, &mut writes),
            Delivered::Queued
        );
        assert_eq!(
            s.deliver(&message(3), QoS::AtMostOnce, false, vec![], 0, &mut writes),
            Delivered::Dropped(DropReason::QueueFull)
        );
    }

    #[test]
    fn packet_ids_wrap_and_skip_zero() {
        assert_eq!(packet_id_for(0), 1);
        assert_eq!(packet_id_for(65534), 65535);
        assert_eq!(packet_id_for(65535), 1);
    }
}
