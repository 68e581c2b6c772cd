//! The broker's shared state and the operations connections perform on it: publish (route to
//! subscribers, keep retained messages), subscribe, and the session life cycle (create,
//! resume, take over, expire).
//!
//! Locks are short and never held across an await: the session map, the router (read-mostly)
//! and the retained map each have their own, and a session's own mutex is taken only while
//! that session is touched. Durable writes are handed to the store in one batch per
//! operation, and the caller decides whether to wait for them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};

use crate::codec::{QoS, ReasonCode, SubscriptionOptions};
use crate::config::BrokerConfig;
use crate::hooks::{Event, Hooks};
use crate::keepalive::KeepAlive;
use crate::message::{Message, now_millis};
use crate::metrics::{DropReason, Metrics};
use crate::router::{Router, Subscriber, merge_by_session};
use crate::session::{Delivered, Queued, SessionHandle, SessionRef};
use crate::store::{Loaded, Store, StoreError, Write};
use crate::topic;

/// Resolves when a publish's durable writes are committed.
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

pub struct Broker {
    pub config: BrokerConfig,
    pub metrics: Arc<Metrics>,
    pub hooks: Arc<Hooks>,
    pub store: Store,
    /// Closes connections that stay silent past their keep-alive.
    pub(crate) keep_alive: Arc<KeepAlive>,
    sessions: Mutex<HashMap<Arc<str>, SessionRef>>,
    router: RwLock<Router>,
    retained: RwLock<HashMap<Arc<str>, Arc<Message>>>,
    /// Offline persistent sessions and when they expire (unix ms).
    expiring: Mutex<HashMap<Arc<str>, u64>>,
    next_message_id: AtomicU64,
    next_link_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    /// A broker over an opened store, with the sessions and retained messages it held.
    pub fn new(
        config: BrokerConfig,
        store: Store,
        loaded: Loaded,
        hooks: Arc<Hooks>,
        metrics: Arc<Metrics>,
    ) -> Arc<Broker> {
        let broker = Broker {
            config,
            metrics,
            hooks,
            store,
            keep_alive: Arc::default(),
            sessions: Mutex::default(),
            router: RwLock::default(),
            retained: RwLock::default(),
            expiring: Mutex::default(),
            next_message_id: AtomicU64::new(loaded.next_message_id),
            next_link_id: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
        };
        broker.restore(loaded);
        Arc::new(broker)
    }

    fn restore(&self, loaded: Loaded) {
        let now = now_millis();
        let mut retained = self.retained.write();
        for message in loaded.retained {
            if !message.is_expired(now) {
                retained.insert(message.topic.clone(), Arc::new(message));
            }
        }
        self.metrics.retained.store(retained.len() as i64, Relaxed);
        drop(retained);

        let mut sessions = self.sessions.lock();
        let mut router = self.router.write();
        for stored in loaded.sessions {
            let handle = SessionHandle::new_ref(stored.client_id.clone(), stored.expiry);
            {
                let mut state = handle.state.lock();
                state.max_queued = self.max_queued();
                state.stored = true;
                // A client connected when the process died went away at start-up, at the latest.
                let gone = stored.disconnected_at.unwrap_or(now);
                state.disconnected_at = Some(gone);
                for sub in stored.subscriptions {
                    let (group, filter) = split_shared(&sub.filter);
                    let subscriber =
                        Subscriber { session: handle.clone(), options: sub.options, id: sub.id };
                    router.subscribe(filter, group, subscriber);
                    state.subscriptions.insert(sub.filter, (sub.options, sub.id));
                }
                for q in stored.queue {
                    let item = Queued {
                        seq: q.seq,
                        message_id: q.message_id,
                        message: q.message,
                        qos: q.qos,
                        retain: q.retain,
                        sub_ids: q.sub_ids,
                    };
                    state.restore(item, q.released);
                }
                self.expiring
                    .lock()
                    .insert(stored.client_id.clone(), expiry_deadline(gone, stored.expiry));
            }
            sessions.insert(stored.client_id, handle);
        }
        self.metrics.sessions.store(sessions.len() as i64, Relaxed);
        self.metrics.subscriptions.store(router.len() as i64, Relaxed);
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops the listeners and the ticker, and asks every connection to close (5.0 clients
    /// hear "server shutting down").
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            if let Some(link) = session.state.lock().link.as_mut() {
                link.close(ReasonCode::SERVER_SHUTTING_DOWN);
            }
        }
    }

    pub fn next_link_id(&self) -> u64 {
        self.next_link_id.fetch_add(1, Relaxed)
    }

    /// Routes a message to every matching subscription and keeps it if retained. Returns the
    /// commit to wait for when anything had to be stored (a retained message, or a QoS 1/2
    /// message queued for a persistent session) before the publisher may be acknowledged.
    pub fn publish(&self, message: Arc<Message>) -> Option<Durable> {
        let mut writes = Vec::new();
        if message.retain {
            self.retain(&message, &mut writes);
        }
        let mut matches = Vec::new();
        self.router.read().matches(&message.topic, &mut matches);
        if matches.is_empty() {
            self.metrics.dropped(DropReason::NoSubscribers);
        }
        let mut message_id = 0;
        for (sub, sub_ids) in merge_by_session(matches) {
            if sub.options.no_local && message.publisher.as_ref() == Some(sub.session.client_id()) {
                continue;
            }
            let qos = message.qos.min(sub.options.qos);
            let retain = sub.options.retain_as_published && message.retain;
            let mut session = sub.session.state.lock();
            if qos != QoS::AtMostOnce && session.is_persistent() && message_id == 0 {
                message_id = self.next_message_id.fetch_add(1, Relaxed);
                writes.push(Write::PutMessage { id: message_id, message: message.clone() });
            }
            let id = if qos == QoS::AtMostOnce { 0 } else { message_id };
            let result = session.deliver(&message, qos, retain, sub_ids, id, &mut writes);
            let offline = session.link.is_none();
            drop(session);
            match result {
                Delivered::Dropped(reason) => self.metrics.dropped(reason),
                Delivered::Queued if offline && self.hooks.has_observers() => {
                    self.hooks.notify(Event::Offline {
                        client_id: sub.session.client_id().clone(),
                        message: message.clone(),
                    });
                }
                _ => {}
            }
        }
        if writes.is_empty() { None } else { Some(self.store.commit(writes)) }
    }

    fn retain(&self, message: &Arc<Message>, writes: &mut Vec<Write>) {
        let mut retained = self.retained.write();
        if message.payload.is_empty() {
            // An empty retained message clears the topic ([MQTT-3.3.1-10]).
            if retained.remove(&message.topic).is_some() {
                writes.push(Write::DeleteRetained { topic: message.topic.clone() });
            }
        } else {
            retained.insert(message.topic.clone(), message.clone());
            writes.push(Write::PutRetained { message: message.clone() });
        }
        self.metrics.retained.store(retained.len() as i64, Relaxed);
    }

    /// The retained messages a new subscription to `filter` receives.
    pub fn retained_for(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = now_millis();
        let retained = self.retained.read();
        if !filter.contains(['+', '#']) {
            return retained
                .get(filter)
                .filter(|m| !m.is_expired(now))
                .cloned()
                .into_iter()
                .collect();
        }
        retained
            .values()
            .filter(|m| topic::matches(filter, &m.topic) && !m.is_expired(now))
            .cloned()
            .collect()
    }

    /// Adds a subscription to a session; returns whether it replaced one, and the writes to
    /// make it durable (empty for a non-persistent session).
    pub fn subscribe(
        &self,
        session: &SessionRef,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> (bool, Vec<Write>) {
        let (group, inner) = split_shared(filter);
        let mut state = session.state.lock();
        let subscriber = Subscriber { session: session.clone(), options, id };
        let existed = {
            let mut router = self.router.write();
            let existed = router.subscribe(inner, group, subscriber);
            self.metrics.subscriptions.store(router.len() as i64, Relaxed);
            existed
        };
        state.subscriptions.insert(filter.to_owned(), (options, id));
        let writes = if state.is_persistent() {
            vec![Write::PutSubscription {
                client_id: session.client_id().clone(),
                filter: filter.to_owned(),
                options,
                id,
            }]
        } else {
            Vec::new()
        };
        (existed, writes)
    }

    pub fn unsubscribe(&self, session: &SessionRef, filter: &str) -> (bool, Vec<Write>) {
        let (group, inner) = split_shared(filter);
        let mut state = session.state.lock();
        let existed = {
            let mut router = self.router.write();
            let existed = router.unsubscribe(inner, group, session.client_id());
            self.metrics.subscriptions.store(router.len() as i64, Relaxed);
            existed
        };
        state.subscriptions.remove(filter);
        let writes = if existed && state.is_persistent() {
            vec![Write::DeleteSubscription {
                client_id: session.client_id().clone(),
                filter: filter.to_owned(),
            }]
        } else {
            Vec::new()
        };
        (existed, writes)
    }

    /// Finds or creates the session for a connecting client. A client already connected with
    /// the same id is disconnected first (session take-over, [MQTT-3.1.4-3]); `clean_start`
    /// discards any existing session. Returns the session and whether it existed.
    pub async fn open_session(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
    ) -> (SessionRef, bool) {
        let existing = self.sessions.lock().get(client_id).cloned();
        if let Some(existing) = &existing {
            let finished = existing.state.lock().link.as_mut().and_then(|link| {
                link.close(ReasonCode::SESSION_TAKEN_OVER);
                link.finished.take()
            });
            if let Some(finished) = finished {
                // The old connection finishes its clean-up before it signals it is done.
                let _ = tokio::time::timeout(Duration::from_secs(5), finished).await;
            }
        }
        let mut sessions = self.sessions.lock();
        let current = sessions.get(client_id).cloned();
        if let Some(session) = current {
            if !clean_start {
                session.state.lock().expiry = expiry;
                self.expiring.lock().remove(client_id);
                if expiry > 0 {
                    self.store
                        .submit(vec![Write::PutSession { client_id: client_id.clone(), expiry }]);
                }
                return (session, true);
            }
            sessions.remove(client_id);
            self.discard(&session);
        }
        let session = SessionHandle::new_ref(client_id.clone(), expiry);
        {
            let mut state = session.state.lock();
            state.max_queued = self.max_queued();
            state.stored = expiry > 0;
        }
        sessions.insert(client_id.clone(), session.clone());
        self.metrics.sessions.store(sessions.len() as i64, Relaxed);
        drop(sessions);
        if expiry > 0 {
            self.store.submit(vec![Write::PutSession { client_id: client_id.clone(), expiry }]);
        }
        if self.hooks.has_observers() {
            self.hooks.notify(Event::SessionCreated { client_id: client_id.clone() });
        }
        (session, false)
    }

    /// Called by a connection when it ends: a session with expiry 0 ends with it; a
    /// persistent one starts its expiry clock.
    pub fn connection_closed(&self, session: &SessionRef, link_id: u64) {
        let mut state = session.state.lock();
        if state.link.as_ref().is_none_or(|l| l.id != link_id) {
            return; // taken over: the session belongs to a newer connection
        }
        state.link = None;
        session.set_online(false);
        let now = now_millis();
        state.disconnected_at = Some(now);
        let expiry = state.expiry;
        drop(state);
        let client_id = session.client_id();
        if expiry == 0 {
            let mut sessions = self.sessions.lock();
            if sessions.get(client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                sessions.remove(client_id);
                self.metrics.sessions.store(sessions.len() as i64, Relaxed);
            }
            drop(sessions);
            self.discard(session);
        } else {
            self.store.submit(vec![Write::SessionDisconnected {
                client_id: client_id.clone(),
                at: now,
                expiry,
            }]);
            self.expiring.lock().insert(client_id.clone(), expiry_deadline(now, expiry));
        }
    }

    /// Removes a session's subscriptions and stored state (the session is already out of the
    /// map).
    fn discard(&self, session: &SessionRef) {
        let mut state = session.state.lock();
        let stored = state.stored;
        state.stored = false;
        {
            let mut router = self.router.write();
            for filter in state.subscriptions.keys() {
                let (group, inner) = split_shared(filter);
                router.unsubscribe(inner, group, session.client_id());
            }
            self.metrics.subscriptions.store(router.len() as i64, Relaxed);
        }
        state.subscriptions.clear();
        state.queue.clear();
        state.inflight.clear();
        drop(state);
        if stored {
            self.store
                .submit(vec![Write::DeleteSession { client_id: session.client_id().clone() }]);
        }
    }

    /// Ends the persistent sessions whose expiry has passed. Runs once a second.
    pub fn expire_sessions(&self) {
        let now = now_millis();
        let due: Vec<Arc<str>> = self
            .expiring
            .lock()
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for client_id in due {
            self.expiring.lock().remove(&client_id);
            let mut sessions = self.sessions.lock();
            let Some(session) = sessions.get(&client_id).cloned() else { continue };
            if session.is_online() {
                continue;
            }
            sessions.remove(&client_id);
            self.metrics.sessions.store(sessions.len() as i64, Relaxed);
            drop(sessions);
            let dropped = session.state.lock().pending();
            for _ in 0..dropped {
                self.metrics.dropped(DropReason::SessionExpired);
            }
            self.discard(&session);
            if self.hooks.has_observers() {
                self.hooks.notify(Event::SessionExpired { client_id });
            }
        }
    }

    /// The configured bound on a session's queue, as a session keeps it.
    fn max_queued(&self) -> u32 {
        u32::try_from(self.config.max_queued_messages).unwrap_or(u32::MAX)
    }

    /// Expires sessions and ticks observers once a second, and sweeps keep-alives, until
    /// shutdown.
    pub fn start_ticker(self: &Arc<Self>) {
        self.keep_alive.start(self.shutdown_signal());
        let broker = Arc::downgrade(self);
        let mut shutdown = self.shutdown_signal();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let Some(broker) = broker.upgrade() else { return };
                broker.expire_sessions();
                if broker.hooks.has_observers() {
                    broker.hooks.notify(Event::Tick);
                }
            }
        });
    }

    /// Delivers a message straight to one client's session, bypassing subscriptions: how
    /// plugins that route themselves (the chat's inboxes) reach a device. Only connected
    /// clients get it: a plugin that delivers this way keeps its own record of what is owed.
    pub fn deliver_to(&self, client_id: &str, message: Arc<Message>, qos: QoS) -> Delivered {
        let Some(session) = self.session(client_id) else {
            return Delivered::Dropped(DropReason::NoSubscribers);
        };
        let mut state = session.state.lock();
        if state.link.is_none() {
            return Delivered::Dropped(DropReason::NoSubscribers);
        }
        let mut writes = Vec::new();
        let result = state.deliver(&message, qos, false, Vec::new(), 0, &mut writes);
        drop(state);
        if let Delivered::Dropped(reason) = result {
            self.metrics.dropped(reason);
        }
        result
    }

    /// Whether a client id has a connected session.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.session(client_id).is_some_and(|s| s.is_online())
    }

    pub fn session(&self, client_id: &str) -> Option<SessionRef> {
        self.sessions.lock().get(client_id).cloned()
    }
}

/// `$share/{group}/{filter}` into its group and filter; other filters as they are.
pub fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(filter) {
        Ok(Some((group, inner))) => (Some(group), inner),
        _ => (None, filter),
    }
}

fn expiry_deadline(gone: u64, expiry: u32) -> u64 {
    if expiry == u32::MAX { u64::MAX } else { gone + u64::from(expiry) * 1000 }
}
