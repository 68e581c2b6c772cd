//! Assembles a running server from a [`Config`]: opens the store, builds the broker, binds
//! the listeners and the HTTP port, and shuts it all down in order.
//!
//! Tests use the same entry point with port 0 and read the bound addresses back, so what they
//! exercise is exactly what the binary runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::Config;
use crate::hooks::{BuiltPlugin, Hooks};
use crate::listener::{self, Kind};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("TLS listener: {0}")]
    Tls(String),
}

/// The addresses actually bound (useful when the configuration asked for port 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub mqtt: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

pub struct Server {
    pub broker: Arc<Broker>,
    pub bound: Bound,
    tasks: JoinSet<()>,
}

impl Server {
    /// Starts everything the configuration names. `api` holds extra HTTP routes served on
    /// the same port as `/metrics`.
    pub async fn start(
        config: Config,
        plugins: Vec<BuiltPlugin>,
        api: axum::Router,
    ) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::default());
        let live: Vec<_> = plugins.iter().map(|(plugin, _)| plugin.clone()).collect();
        let hooks = Arc::new(Hooks::new(plugins, metrics.clone()));
        let (store, loaded) = Store::open(&config.store.data_dir, config.store.fsync)?;
        tracing::info!(
            sessions = loaded.sessions.len(),
            retained = loaded.retained.len(),
            data = %config.store.data_dir.display(),
            "store opened"
        );
        let broker = Broker::new(config.broker.clone(), store, loaded, hooks, metrics);
        broker.start_ticker();
        let mut api = api;
        for plugin in &live {
            plugin.attach(&broker);
            if let Some(routes) = plugin.routes() {
                api = api.merge(routes);
            }
        }

        let mut tasks = JoinSet::new();
        let mut bound = Bound::default();
        let listeners = &config.listeners;
        if let Some(addr) = listeners.mqtt {
            let listener = bind("mqtt", addr).await?;
            bound.mqtt = listener.local_addr().ok();
            tasks.spawn(listener::run(listener, Kind::Tcp, broker.clone()));
        }
        if let Some(tls) = &listeners.tls {
            let acceptor = listener::tls_acceptor(&tls.cert, &tls.key).map_err(ServerError::Tls)?;
            let listener = bind("tls", tls.addr).await?;
            bound.tls = listener.local_addr().ok();
            tasks.spawn(listener::run(listener, Kind::Tls(acceptor), broker.clone()));
        }
        if let Some(addr) = listeners.ws {
            let listener = bind("ws", addr).await?;
            bound.ws = listener.local_addr().ok();
            tasks.spawn(listener::run(listener, Kind::WebSocket, broker.clone()));
        }
        if let Some(addr) = listeners.http {
            let listener = bind("http", addr).await?;
            bound.http = listener.local_addr().ok();
            let app = crate::http::routes(broker.clone()).merge(api);
            let mut shutdown = broker.shutdown_signal();
            tasks.spawn(async move {
                let stop = async move {
                    let _ = shutdown.changed().await;
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            });
        }
        tracing::info!(?bound, "listening");
        Ok(Server { broker, bound, tasks })
    }

    /// Stops accepting, tells every client the server is going away, waits (bounded) for
    /// connections to close, and flushes the store.
    pub async fn shutdown(mut self) {
        self.broker.shut_down();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.broker.metrics.sockets.load(std::sync::atomic::Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if let Err(e) = self.broker.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })
}
