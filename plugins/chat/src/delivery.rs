//! Delivery: from a user's inbox (in the store) to each of their connected devices.
//!
//! Every device subscribed to `inbox/{me}` gets a *pump*, a task that starts at the device's
//! stored cursor, reads inbox entries in seq order and hands each to the broker as a QoS 1
//! PUBLISH. Replay after a reconnect or a server restart is the same path, so it is in
//! order. A pump remembers the highest seq it handed out and reads only past it; when it has
//! caught up it sleeps on a per-user `watch` of the inbox's last seq, which every append
//! bumps. It never runs more than [`WINDOW`] entries ahead of what the device acknowledged
//! (the broker keeps only a bounded queue per session), and stops when the device goes.
//!
//! Acknowledgements (`Event::Delivered`) go to the device's pump through its control
//! channel; the pump gathers them and records them (cursor and receipts, `receipts.rs`) on a
//! task of their own, so neither the inline observer (`on_event_inline`, on the
//! acknowledging client's task) nor delivery waits on the store.
//!
//! A pump belongs to one connection: a second SUBSCRIBE on the same connection keeps it
//! (nothing is sent twice within a connection); a new connection replaces it and starts again
//! from the acknowledged cursor (a duplicate of an unacknowledged entry after a reconnect is
//! ordinary QoS 1; clients dedupe by seq).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use seed_broker::codec::QoS;
use seed_broker::hooks::ClientInfo;
use seed_broker::message::Message;
use seed_broker::metrics::DropReason;
use seed_broker::session::Delivered;
use seed_chat_core::{InboxEntry, NewEntry};
use seed_proto::topics;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Chat;
use crate::envelope::{self, Acked};
use crate::receipts;

/// Newest entries kept in memory per user with a connected device.
const RECENT: usize = 512;

/// Entries a device may have unacknowledged at most.
pub const WINDOW: u64 = 1000;
/// Pause before retrying after a store error or a full session queue.
const BACKOFF: Duration = Duration::from_millis(250);
/// How long acknowledgements gather before a pump records them: one cursor write and one
/// receipt per sender for all of them. A device acknowledging each message as it comes
/// cost the store three writes per message (cursor, watermark, receipt), and the writer's
/// commits, not the messages, became the limit at 5,000 msg/s. Ticks come this much later.
const ACK_EVERY: Duration = Duration::from_millis(20);

/// The index in `recent` of its first entry with a seq of at least `seq`. The seqs there
/// ascend and are almost always consecutive, so that index is nearly always `seq` minus the
/// first one: checked first, it spares the binary search's cache misses over the queue,
/// which showed in profiles at every append and every pump read.
fn first_at_least(recent: &VecDeque<InboxEntry>, seq: u64) -> usize {
    let guess = recent.front().map_or(0, |first| seq.saturating_sub(first.seq));
    if let Ok(at) = usize::try_from(guess)
        && at <= recent.len()
        && (at == 0 || recent[at - 1].seq < seq)
        && recent.get(at).is_none_or(|e| e.seq >= seq)
    {
        return at;
    }
    recent.partition_point(|e| e.seq < seq)
}

/// What a pump is told.
#[derive(Debug)]
enum Control {
    /// The device acknowledged an entry.
    Acked(Acked),
    /// `sync/{me}`: deliver again from after this seq.
    Restart(u64),
    Stop,
}

struct Device {
    /// The connection this pump serves (the same `Arc` comes with every event of it).
    connection: Arc<ClientInfo>,
    pump: u64,
    control: mpsc::UnboundedSender<Control>,
}

struct UserInbox {
    /// The highest seq known to be in the inbox; appends bump it, pumps wait on it.
    last_seq: watch::Sender<u64>,
    /// The newest entries, in seq order, so live delivery needs no store read.
    recent: VecDeque<InboxEntry>,
    devices: HashMap<String, Device>,
}

/// The connected devices of every user with a pump, and the wake-up of their pumps.
#[derive(Default)]
pub(crate) struct Inboxes {
    users: Mutex<HashMap<String, UserInbox>>,
    next_pump: AtomicU64,
}

impl Inboxes {
    /// An entry is stored in `user`'s inbox under `seq`: keeps it for the pumps (when the
    /// user has any) and wakes them.
    pub fn appended(&self, entry: NewEntry, seq: u64) {
        let mut users = self.users.lock();
        let Some(inbox) = users.get_mut(&entry.user_id) else { return };
        let stored = InboxEntry {
            seq,
            envelope: entry.envelope,
            skip_device: entry.skip_device,
            created_at: 0,
        };
        let at = first_at_least(&inbox.recent, seq);
        inbox.recent.insert(at, stored);
        if inbox.recent.len() > RECENT {
            inbox.recent.pop_front();
        }
        inbox.last_seq.send_if_modified(|last| {
            let moved = seq > *last;
            *last = (*last).max(seq);
            moved
        });
    }

    /// Entries after `after` from memory, when memory holds every one of them up to the
    /// newest appended (None: read the store).
    fn recent(&self, user: &str, after: u64, limit: usize) -> Option<Vec<InboxEntry>> {
        let users = self.users.lock();
        let recent = &users.get(user)?.recent;
        let start = first_at_least(recent, after.saturating_add(1));
        let first = recent.get(start)?;
        if first.seq != after + 1 {
            return None;
        }
        let run: Vec<InboxEntry> = recent.range(start..).take(limit).cloned().collect();
        // A gap means an entry whose wake-up has not come yet: the store has it.
        let contiguous = run.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        contiguous.then_some(run)
    }

    /// The client ids of `user`'s devices that have a pump (connected and subscribed).
    pub fn devices(&self, user: &str) -> Vec<String> {
        self.users.lock().get(user).map_or_else(Vec::new, |inbox| {
            inbox.devices.keys().map(|device| topics::client_id(user, device)).collect()
        })
    }

    /// Restarts a device's delivery from after `since`; false if it has no pump.
    pub fn restart(&self, user: &str, device: &str, since: u64) -> bool {
        let users = self.users.lock();
        let Some(device) = users.get(user).and_then(|inbox| inbox.devices.get(device)) else {
            return false;
        };
        device.control.send(Control::Restart(since)).is_ok()
    }

    /// The connection ended: its pump stops.
    pub fn disconnected(&self, client: &Arc<ClientInfo>) {
        let Some((user, device)) = topics::parse_client_id(&client.client_id) else { return };
        let mut users = self.users.lock();
        let Some(inbox) = users.get_mut(user) else { return };
        if inbox.devices.get(device).is_some_and(|d| Arc::ptr_eq(&d.connection, client)) {
            if let Some(gone) = inbox.devices.remove(device) {
                let _ = gone.control.send(Control::Stop);
            }
            if inbox.devices.is_empty() {
                users.remove(user);
            }
        }
    }

    /// A pump ended on its own (the device went away): forget it unless already replaced.
    fn ended(&self, user: &str, device: &str, pump: u64) {
        let mut users = self.users.lock();
        let Some(inbox) = users.get_mut(user) else { return };
        if inbox.devices.get(device).is_some_and(|d| d.pump == pump) {
            inbox.devices.remove(device);
            if inbox.devices.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Hands an acknowledgement to the device's pump; gives it back if there is none.
    fn acked(&self, user: &str, device: &str, acked: Acked) -> Option<Acked> {
        let users = self.users.lock();
        let Some(device) = users.get(user).and_then(|inbox| inbox.devices.get(device)) else {
            return Some(acked);
        };
        match device.control.send(Control::Acked(acked)) {
            Ok(()) => None,
            Err(mpsc::error::SendError(Control::Acked(acked))) => Some(acked),
            Err(_) => None,
        }
    }
}

/// `Event::Subscribed`: a device subscribed to its own inbox gets a pump, unless this very
/// connection already has one.
pub(crate) fn subscribed(chat: &Arc<Chat>, client: &Arc<ClientInfo>, filter: &str) {
    let Some((user, device)) = topics::parse_client_id(&client.client_id) else { return };
    if client.username.as_deref() != Some(user) || filter != topics::inbox(user) {
        return;
    }
    let pump = chat.inboxes.next_pump.fetch_add(1, Relaxed);
    let (control, commands) = mpsc::unbounded_channel();
    let last_seq = {
        let mut users = chat.inboxes.users.lock();
        let inbox = users.entry(user.to_owned()).or_insert_with(|| UserInbox {
            last_seq: watch::Sender::new(0),
            recent: VecDeque::new(),
            devices: HashMap::new(),
        });
        if let Some(running) = inbox.devices.get(device) {
            if Arc::ptr_eq(&running.connection, client) {
                return;
            }
            let _ = running.control.send(Control::Stop);
        }
        let connection = client.clone();
        inbox.devices.insert(device.to_owned(), Device { connection, pump, control });
        inbox.last_seq.subscribe()
    };
    let pump = Pump {
        chat: chat.clone(),
        user: user.to_owned(),
        device: device.to_owned(),
        client_id: client.client_id.to_string(),
        pump,
        commands,
        last_seq,
        sent: 0,
        acked: 0,
        saved: 0,
        caught_up: false,
        stalled: false,
        acks: Vec::new(),
        acks_due: Instant::now(),
    };
    tokio::spawn(pump.run());
}

/// `Event::Delivered`: a device acknowledged an inbox entry.
pub(crate) fn delivered(chat: &Arc<Chat>, client_id: &str, message: &Message) {
    let Some((user, device)) = topics::parse_client_id(client_id) else { return };
    if topics::parse(&message.topic) != Some(topics::Topic::Inbox { user }) {
        return;
    }
    let Some(acked) = envelope::parse_acked(&message.payload) else { return };
    if let Some(acked) = chat.inboxes.acked(user, device, acked) {
        // No pump (it stopped, or the broker resent a message of an old connection).
        let (chat, user, device) = (chat.clone(), user.to_owned(), device.to_owned());
        tokio::spawn(receipts::acknowledged(chat, user, device, 0, vec![acked]));
    }
}

struct Pump {
    chat: Arc<Chat>,
    user: String,
    device: String,
    client_id: String,
    pump: u64,
    commands: mpsc::UnboundedReceiver<Control>,
    last_seq: watch::Receiver<u64>,
    /// The highest seq handed to the broker (or passed over).
    sent: u64,
    /// The highest seq the device acknowledged (or passed over: entries it sent itself).
    acked: u64,
    /// The cursor last stored. Entries passed over move `acked` without a write of their
    /// own: the next acknowledgement, or the pump's end, stores it (a crash in between only
    /// makes a replay pass over them again).
    saved: u64,
    /// The last read found nothing more.
    caught_up: bool,
    /// The broker's queue for the session was full: retry after a pause.
    stalled: bool,
    /// Acknowledgements not yet recorded.
    acks: Vec<Acked>,
    /// When the oldest of `acks` is to be recorded.
    acks_due: Instant,
}

/// Why a pump ends.
struct Stop;

/// What a waiting pump woke up for.
enum Woken {
    Command(Option<Control>),
    /// The inbox grew (false: the user's inbox state is gone).
    NewEntries(bool),
    Retry,
    AcksDue,
}

impl Pump {
    async fn run(mut self) {
        let span = tracing::debug_span!("pump", client_id = %self.client_id);
        let _ = tracing::Instrument::instrument(self.work(), span).await;
        self.chat.inboxes.ended(&self.user, &self.device, self.pump);
        // Acknowledgements that came in just before the device went are still recorded,
        // so a clean disconnect never leaves its cursor behind what it acknowledged.
        while let Ok(command) = self.commands.try_recv() {
            if let Control::Acked(acked) = command {
                self.acks.push(acked);
            }
        }
        if !self.acks.is_empty() || self.acked > self.saved {
            self.record_acks().await;
        }
    }

    async fn work(&mut self) -> Result<(), Stop> {
        let cursor = loop {
            match self.chat.store.cursor(&self.user, &self.device).await {
                Ok(cursor) => break cursor,
                Err(error) => {
                    tracing::warn!(%error, "reading the device cursor failed");
                    self.pause().await?;
                }
            }
        };
        (self.sent, self.acked, self.saved) = (cursor, cursor, cursor);
        loop {
            while let Ok(command) = self.commands.try_recv() {
                self.apply(command)?;
            }
            if !self.acks.is_empty() && self.acks_due <= Instant::now() {
                // Beside delivery, not before it: waiting here for three durable writes held
                // back every entry that came meanwhile (p90 7 ms at 5,000 msg/s).
                tokio::spawn(self.record_acks());
            }
            let room = WINDOW.saturating_sub(self.sent.saturating_sub(self.acked));
            if !self.caught_up && !self.stalled && room > 0 {
                let limit = (self.chat.config().replay_batch as u64).min(room) as usize;
                let recent = self.chat.inboxes.recent(&self.user, self.sent, limit);
                let read = match recent {
                    Some(entries) => Ok(entries),
                    None => self.chat.store.inbox(&self.user, self.sent, limit).await,
                };
                match read {
                    Ok(entries) => {
                        self.caught_up = entries.len() < limit;
                        self.send(entries).await?;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reading the inbox failed");
                        self.pause().await?;
                    }
                }
                continue;
            }
            let sent = self.sent;
            let wait_for_new = self.caught_up && !self.stalled && room > 0;
            let record_acks = !self.acks.is_empty();
            let woken = tokio::select! {
                command = self.commands.recv() => Woken::Command(command),
                () = tokio::time::sleep_until(self.acks_due), if record_acks => Woken::AcksDue,
                seen = self.last_seq.wait_for(|last| *last > sent), if wait_for_new => {
                    Woken::NewEntries(seen.is_ok())
                }
                () = tokio::time::sleep(BACKOFF), if self.stalled => Woken::Retry,
            };
            match woken {
                Woken::Command(command) => self.apply(command.ok_or(Stop)?)?,
                Woken::NewEntries(alive) => {
                    if !alive {
                        return Err(Stop);
                    }
                    self.caught_up = false;
                }
                Woken::Retry => self.stalled = false,
                Woken::AcksDue => {}
            }
        }
    }

    /// Records the acknowledgements gathered so far (`receipts::acknowledged`).
    fn record_acks(&mut self) -> impl Future<Output = ()> + use<> {
        let acks = std::mem::take(&mut self.acks);
        self.saved = self.acked;
        let (chat, user, device) = (self.chat.clone(), self.user.clone(), self.device.clone());
        receipts::acknowledged(chat, user, device, self.acked, acks)
    }

    fn apply(&mut self, command: Control) -> Result<(), Stop> {
        match command {
            Control::Acked(acked) => {
                if self.acks.is_empty() {
                    self.acks_due = Instant::now() + ACK_EVERY;
                }
                self.acked = self.acked.max(acked.seq);
                self.acks.push(acked);
            }
            Control::Restart(since) => {
                self.sent = since;
                self.caught_up = false;
            }
            Control::Stop => return Err(Stop),
        }
        Ok(())
    }

    /// Hands entries to the broker in seq order.
    async fn send(&mut self, entries: Vec<InboxEntry>) -> Result<(), Stop> {
        let broker = self.chat.broker().ok_or(Stop)?;
        for entry in entries {
            if entry.skip_device.as_deref() == Some(self.device.as_str()) {
                // Not for this device; with nothing outstanding its cursor can pass it now.
                if self.acked >= self.sent {
                    self.acked = entry.seq;
                }
                self.sent = entry.seq;
                continue;
            }
            let payload = envelope::framed(entry.seq, &entry.envelope);
            let message = envelope::inbox_publish(&self.user, payload, QoS::AtLeastOnce);
            match broker.deliver_to(&self.client_id, message, QoS::AtLeastOnce) {
                Delivered::Sent | Delivered::Queued => self.sent = entry.seq,
                Delivered::Dropped(DropReason::QueueFull) => {
                    if !broker.is_connected(&self.client_id) {
                        return Err(Stop);
                    }
                    self.stalled = true;
                    self.caught_up = false;
                    break;
                }
                Delivered::Dropped(DropReason::NoSubscribers) => return Err(Stop),
                Delivered::Dropped(reason) => {
                    // This device cannot take this entry (e.g. too large): move on.
                    tracing::warn!(seq = entry.seq, ?reason, "inbox entry not deliverable");
                    self.sent = entry.seq;
                }
            }
        }
        Ok(())
    }

    /// Waits [`BACKOFF`] while still obeying commands.
    async fn pause(&mut self) -> Result<(), Stop> {
        let sleep = tokio::time::sleep(BACKOFF);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                command = self.commands.recv() => self.apply(command.ok_or(Stop)?)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(seqs: &[u64]) -> VecDeque<InboxEntry> {
        let entry = |&seq| InboxEntry {
            seq,
            envelope: Default::default(),
            skip_device: None,
            created_at: 0,
        };
        seqs.iter().map(entry).collect()
    }

    /// The shortcut answers as the binary search does, with and without gaps.
    #[test]
    fn first_at_least_agrees_with_a_binary_search() {
        let cases: [&[u64]; 5] = [&[], &[7], &[3, 4, 5, 6], &[3, 4, 6, 7, 9], &[10, 20, 21, 22]];
        for seqs in cases {
            let recent = entries(seqs);
            for seq in 0..30 {
                let expected = recent.partition_point(|e| e.seq < seq);
                assert_eq!(first_at_least(&recent, seq), expected, "{seqs:?}, seq {seq}");
            }
            assert_eq!(first_at_least(&recent, u64::MAX), recent.len());
        }
    }
}
