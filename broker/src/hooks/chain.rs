//! Runs the hook chains: priority order, deadlines, fallbacks, panics caught, metrics.
//!
//! The chains are rebuilt as a whole on reload and swapped in behind an `Arc`, so a call in
//! progress finishes on the settings it started with and the hot path only clones an `Arc`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::RwLock;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{
    Action, BuiltPlugin, ClientInfo, Credentials, Decision, Event, Hook, Outcome, Plugin,
    PluginError,
};
use crate::codec::ReasonCode;
use crate::message::Message;
use crate::metrics::{HookStats, Metrics};

/// What an interceptor's call yields when it times out, fails or panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Allow,
    #[default]
    Deny,
}

/// The settings every plugin has, besides its own (`[plugins.<name>]` in `seed.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    pub enabled: bool,
    /// Lower runs first.
    pub priority: i32,
    /// Deadline of each interceptor call.
    pub deadline_ms: u64,
    /// Answer on timeout, error or panic.
    pub fallback: Fallback,
    /// Capacity of the plugin's observer queue.
    pub observer_queue: usize,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            enabled: true,
            priority: 100,
            deadline_ms: 1000,
            fallback: Fallback::Deny,
            observer_queue: 4096,
        }
    }
}

impl HookSettings {
    const KEYS: [&'static str; 5] =
        ["enabled", "priority", "deadline_ms", "fallback", "observer_queue"];

    /// Splits a plugin's table into the common settings and the plugin's own.
    pub fn split(mut table: toml::Table) -> Result<(HookSettings, toml::Table), PluginError> {
        let mut common = toml::Table::new();
        for key in Self::KEYS {
            if let Some(value) = table.remove(key) {
                common.insert(key.to_owned(), value);
            }
        }
        let settings = common.try_into().map_err(PluginError::new)?;
        Ok((settings, table))
    }
}

struct Entry {
    plugin: Arc<dyn Plugin>,
    settings: HookSettings,
    stats: Vec<(Hook, Arc<HookStats>)>,
}

impl Entry {
    fn stats(&self, hook: Hook) -> Option<&HookStats> {
        self.stats.iter().find(|(h, _)| *h == hook).map(|(_, s)| s.as_ref())
    }
}

struct Observer {
    queue: mpsc::Sender<Event>,
    drops: Arc<AtomicU64>,
}

#[derive(Default)]
struct Chain {
    authenticate: Vec<Arc<Entry>>,
    authorize: Vec<Arc<Entry>>,
    on_publish: Vec<Arc<Entry>>,
    inline: Vec<Arc<Entry>>,
    observers: Vec<Observer>,
}

/// The broker's entry point to its plugins.
pub struct Hooks {
    chain: RwLock<Arc<Chain>>,
    metrics: Arc<Metrics>,
}

impl Hooks {
    /// Hooks with no plugin: everyone may connect, publish and subscribe.
    pub fn none(metrics: Arc<Metrics>) -> Hooks {
        Hooks { chain: RwLock::new(Arc::default()), metrics }
    }

    /// Installs plugins; starts each observer's queue task (needs a tokio runtime).
    pub fn new(plugins: Vec<BuiltPlugin>, metrics: Arc<Metrics>) -> Hooks {
        let hooks = Hooks::none(metrics);
        let mut observers = Vec::new();
        for (plugin, settings) in &plugins {
            if plugin.hooks().contains(&Hook::Observe) {
                observers.push(hooks.start_observer(plugin.clone(), settings.observer_queue));
            }
        }
        let mut chain = hooks.chain_of(plugins);
        chain.observers = observers;
        *hooks.chain.write() = Arc::new(chain);
        hooks
    }

    /// New settings for the plugins already installed (SIGHUP). Observer queues are kept.
    pub fn update_settings(&self, settings: &[(&str, HookSettings)]) {
        let old = self.chain.read().clone();
        let mut plugins: Vec<BuiltPlugin> = Vec::new();
        let entries = old.authenticate.iter().chain(&old.authorize).chain(&old.on_publish);
        for entry in entries.chain(&old.inline) {
            if plugins.iter().any(|(p, _)| Arc::ptr_eq(p, &entry.plugin)) {
                continue;
            }
            let name = entry.plugin.name();
            let new = settings.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone());
            plugins.push((entry.plugin.clone(), new.unwrap_or_else(|| entry.settings.clone())));
        }
        let mut chain = self.chain_of(plugins);
        chain.observers = old
            .observers
            .iter()
            .map(|o| Observer { queue: o.queue.clone(), drops: o.drops.clone() })
            .collect();
        *self.chain.write() = Arc::new(chain);
    }

    fn chain_of(&self, mut plugins: Vec<BuiltPlugin>) -> Chain {
        plugins.retain(|(_, s)| s.enabled);
        plugins.sort_by_key(|(_, s)| s.priority);
        let mut chain = Chain::default();
        for (plugin, settings) in plugins {
            let stats = plugin
                .hooks()
                .iter()
                .map(|&h| (h, self.metrics.hook(plugin.name(), h.name())))
                .collect();
            let entry = Arc::new(Entry { plugin, settings, stats });
            for hook in entry.plugin.hooks() {
                match hook {
                    Hook::Authenticate => chain.authenticate.push(entry.clone()),
                    Hook::Authorize => chain.authorize.push(entry.clone()),
                    Hook::OnPublish => chain.on_publish.push(entry.clone()),
                    Hook::Inline => chain.inline.push(entry.clone()),
                    Hook::Observe => {}
                }
            }
        }
        chain
    }

    fn start_observer(&self, plugin: Arc<dyn Plugin>, capacity: usize) -> Observer {
        let (queue, mut events) = mpsc::channel::<Event>(capacity.max(1));
        let stats = self.metrics.hook(plugin.name(), Hook::Observe.name());
        let drops = self.metrics.observer_drops(plugin.name());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let started = Instant::now();
                let call = AssertUnwindSafe(plugin.on_event(&event)).catch_unwind().await;
                stats.observe(started.elapsed());
                if call.is_err() {
                    stats.errors.fetch_add(1, Relaxed);
                    tracing::error!(plugin = plugin.name(), "observer panicked");
                }
            }
        });
        Observer { queue, drops }
    }

    pub fn has_authenticate(&self) -> bool {
        !self.chain.read().authenticate.is_empty()
    }

    /// Whether a client may connect. With no authentication plugin everyone may; with one,
    /// a client that no plugin accepts is refused.
    pub async fn authenticate(
        &self,
        client: &ClientInfo,
        credentials: &Credentials<'_>,
    ) -> Decision {
        let chain = self.chain.read().clone();
        if chain.authenticate.is_empty() {
            return Decision::Allow;
        }
        let mut accepted = false;
        for entry in &chain.authenticate {
            let call = entry.plugin.authenticate(client, credentials);
            match run(entry, Hook::Authenticate, ReasonCode::SERVER_UNAVAILABLE, call).await {
                Outcome::Continue => accepted = true,
                Outcome::Stop(decision) => return decision,
                Outcome::Defer => {}
            }
        }
        if accepted { Decision::Allow } else { Decision::Deny(ReasonCode::NOT_AUTHORIZED) }
    }

    /// Whether a client may publish, subscribe or leave a will. Allowed unless a plugin denies.
    pub async fn authorize(&self, client: &ClientInfo, action: &Action<'_>) -> Decision {
        let chain = self.chain.read().clone();
        for entry in &chain.authorize {
            let call = entry.plugin.authorize(client, action);
            match run(entry, Hook::Authorize, ReasonCode::NOT_AUTHORIZED, call).await {
                Outcome::Stop(decision) => return decision,
                Outcome::Continue | Outcome::Defer => {}
            }
        }
        Decision::Allow
    }

    /// Whether any plugin looks at publishes (`authorize` or `on_publish`).
    pub fn intercepts_publish(&self) -> bool {
        let chain = self.chain.read();
        !chain.authorize.is_empty() || !chain.on_publish.is_empty()
    }

    pub fn has_on_publish(&self) -> bool {
        !self.chain.read().on_publish.is_empty()
    }

    /// Runs the `on_publish` chain over an accepted message; it may be rewritten in place.
    pub async fn on_publish(&self, client: &ClientInfo, message: &mut Message) -> Decision {
        let chain = self.chain.read().clone();
        for entry in &chain.on_publish {
            let call = entry.plugin.on_publish(client, message);
            let code = ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR;
            match run(entry, Hook::OnPublish, code, call).await {
                Outcome::Stop(decision) => return decision,
                Outcome::Continue | Outcome::Defer => {}
            }
        }
        Decision::Allow
    }

    /// Tells the inline observers, then hands the event to every queued observer without
    /// waiting; a full queue drops it (counted).
    pub fn notify(&self, event: Event) {
        let chain = self.chain.read().clone();
        for entry in &chain.inline {
            let started = Instant::now();
            let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
                entry.plugin.on_event_inline(&event);
            }));
            let stats = entry.stats(Hook::Inline);
            if let Some(stats) = stats {
                stats.observe(started.elapsed());
            }
            if call.is_err() {
                if let Some(stats) = stats {
                    stats.errors.fetch_add(1, Relaxed);
                }
                tracing::error!(plugin = entry.plugin.name(), "inline observer panicked");
            }
        }
        for observer in &chain.observers {
            if observer.queue.try_send(event.clone()).is_err() {
                observer.drops.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn has_observers(&self) -> bool {
        let chain = self.chain.read();
        !chain.observers.is_empty() || !chain.inline.is_empty()
    }
}

/// One interceptor call under its deadline, with panics and errors turned into the fallback.
async fn run<F>(entry: &Entry, hook: Hook, deny: ReasonCode, call: F) -> Outcome
where
    F: Future<Output = Result<Outcome, PluginError>>,
{
    let deadline = Duration::from_millis(entry.settings.deadline_ms);
    let started = Instant::now();
    let result = tokio::time::timeout(deadline, AssertUnwindSafe(call).catch_unwind()).await;
    let stats = entry.stats(hook);
    if let Some(stats) = stats {
        stats.observe(started.elapsed());
    }
    let plugin = entry.plugin.name();
    let failed = match result {
        Ok(Ok(Ok(outcome))) => return outcome,
        Ok(Ok(Err(error))) => {
            tracing::warn!(plugin, hook = hook.name(), %error, "hook failed");
            stats.map(|s| &s.errors)
        }
        Ok(Err(_panic)) => {
            tracing::error!(plugin, hook = hook.name(), "hook panicked");
            stats.map(|s| &s.errors)
        }
        Err(_elapsed) => {
            tracing::warn!(plugin, hook = hook.name(), ?deadline, "hook missed its deadline");
            stats.map(|s| &s.timeouts)
        }
    };
    if let Some(counter) = failed {
        counter.fetch_add(1, Relaxed);
    }
    match entry.settings.fallback {
        Fallback::Allow => Outcome::Continue,
        Fallback::Deny => Outcome::Stop(Decision::Deny(deny)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::hooks::Event;

    struct Counter {
        seen: AtomicUsize,
        panics: bool,
    }

    impl Plugin for Counter {
        fn name(&self) -> &'static str {
            if self.panics { "panics" } else { "counts" }
        }

        fn hooks(&self) -> &'static [Hook] {
            &[Hook::Inline, Hook::Observe]
        }

        fn on_event_inline(&self, _event: &Event) {
            self.seen.fetch_add(1, Relaxed);
            assert!(!self.panics, "an inline observer that panics");
        }
    }

    /// Inline observers see every event, however many come at once, while the queued
    /// observer of the same plugin drops what its queue cannot hold; a panic is contained.
    #[tokio::test]
    async fn inline_observers_miss_nothing() {
        let metrics = Arc::new(Metrics::default());
        let counts = Arc::new(Counter { seen: AtomicUsize::new(0), panics: false });
        let panics = Arc::new(Counter { seen: AtomicUsize::new(0), panics: true });
        let settings = HookSettings { observer_queue: 1, ..HookSettings::default() };
        let plugins: Vec<BuiltPlugin> =
            vec![(counts.clone(), settings.clone()), (panics.clone(), settings)];
        let hooks = Hooks::new(plugins, metrics.clone());
        assert!(hooks.has_observers());
        for _ in 0..100 {
            hooks.notify(Event::Tick);
        }
        assert_eq!(counts.seen.load(Relaxed), 100);
        assert_eq!(panics.seen.load(Relaxed), 100);
        let stats = metrics.hook("panics", Hook::Inline.name());
        assert_eq!(stats.errors.load(Relaxed), 100);
        assert!(metrics.observer_drops("counts").load(Relaxed) > 0, "the queue is lossy");
    }
}
