//! `seed`: the assembled server. Reads `seed.toml` (optional), applies command-line flags and
//! `SEED_*` environment variables over it, builds the plugins it names, and runs the broker
//! and the HTTP API until SIGTERM or ctrl-c. SIGHUP re-reads the file and hands each plugin
//! its new tunables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use seed_broker::hooks::{HookSettings, Hooks, PluginContext, PluginRegistry};
use seed_broker::{Config, Server};

// mimalloc: per-thread heaps. With glibc's malloc, buffers allocated on the runtime's
// threads and freed on the store's writer thread cost ~13% of the CPU in `seed-bench chat`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "seed", version, about = "Seed: a chat backend whose wire protocol is MQTT")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Print an argon2 hash of a password, for `[plugins.auth-static]` users.
    HashPassword {
        /// The password; read from standard input when omitted.
        password: Option<String>,
    },
}

#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// Configuration file (TOML). Without one, built-in defaults run a complete server.
    #[arg(long, env = "SEED_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT over TCP listen address, or "off" [default: 127.0.0.1:1883].
    #[arg(long, env = "SEED_MQTT")]
    mqtt: Option<String>,
    /// MQTT over WebSocket (path /mqtt) listen address, or "off" [default: 127.0.0.1:8083].
    #[arg(long, env = "SEED_WS")]
    ws: Option<String>,
    /// HTTP listen address for /metrics, /healthz and the API, or "off" [default: 127.0.0.1:8080].
    #[arg(long, env = "SEED_HTTP")]
    http: Option<String>,
    /// Directory of the embedded store [default: ./data].
    #[arg(long, env = "SEED_DATA")]
    data: Option<PathBuf>,
    /// Log filter, e.g. "info" or "seed_broker=debug".
    #[arg(long, env = "SEED_LOG", default_value = "info")]
    log: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword { password }) => hash_password(password),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

/// Every plugin this build has. Providers come before their users: the store before the
/// plugins that need it, `auth-jwt` (which provides token verification) before `chat`.
fn registry() -> PluginRegistry {
    PluginRegistry::new()
        .register("store-sqlite", seed_plugin_store_sqlite::factory)
        .register("auth-jwt", seed_plugin_auth_jwt::factory)
        .register("chat", seed_plugin_chat::factory)
        .register("acl", seed_plugin_acl::factory)
        .register("auth-static", seed_plugin_auth_static::factory)
}

fn serve(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let config = load_config(&args)?;
    // The runtime's threads carry every message: they ask for short scheduler slices.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(seed_broker::sched::prefer_short_slices)
        .build()?;
    runtime.block_on(run(args, config))
}

async fn run(args: ServeArgs, config: Config) -> Result<()> {
    let registry = registry();
    let mut context = PluginContext::new(config.store.data_dir.clone());
    let plugins = registry.build(&config.plugins, &mut context).context("building plugins")?;
    let names: Vec<&str> = plugins.iter().map(|(p, _)| p.name()).collect();
    tracing::info!(plugins = ?names, "plugins built");
    let live: Vec<_> = plugins.iter().map(|(p, _)| p.clone()).collect();
    let server = Server::start(config, plugins, axum_router()).await?;
    for (what, addr) in [
        ("mqtt", server.bound.mqtt),
        ("tls", server.bound.tls),
        ("ws", server.bound.ws),
        ("http", server.bound.http),
    ] {
        if let Some(addr) = addr {
            println!("seed: {what} listening on {addr}");
        }
    }

    wait_for_signals(&args, &server.broker.hooks, &live).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

fn axum_router() -> seed_broker::http::Router {
    seed_broker::http::Router::new()
}

#[cfg(unix)]
async fn wait_for_signals(
    args: &ServeArgs,
    hooks: &Arc<Hooks>,
    plugins: &[Arc<dyn seed_broker::hooks::Plugin>],
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => reload(args, hooks, plugins),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(
    _: &ServeArgs,
    _: &Arc<Hooks>,
    _: &[Arc<dyn seed_broker::hooks::Plugin>],
) {
    let _ = tokio::signal::ctrl_c().await;
}

/// SIGHUP: new tunables for the running plugins. Listeners, the store and the set of plugins
/// stay as they are (those need a restart).
fn reload(args: &ServeArgs, hooks: &Hooks, plugins: &[Arc<dyn seed_broker::hooks::Plugin>]) {
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload: configuration rejected, keeping the old one");
            return;
        }
    };
    let mut settings = Vec::new();
    for plugin in plugins {
        let Some(value) = config.plugins.get(plugin.name()) else { continue };
        let table = value.as_table().cloned().unwrap_or_default();
        match HookSettings::split(table) {
            Ok((common, own)) => match plugin.reload(own) {
                Ok(()) => {
                    settings.push((plugin.name(), common));
                    tracing::info!(plugin = plugin.name(), "reloaded");
                }
                Err(e) => tracing::error!(plugin = plugin.name(), error = %e, "reload rejected"),
            },
            Err(e) => tracing::error!(plugin = plugin.name(), error = %e, "reload rejected"),
        }
    }
    hooks.update_settings(&settings);
}

fn load_config(args: &ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => read_config(path)?,
        None => Config::default(),
    };
    if let Some(v) = &args.mqtt {
        config.listeners.mqtt = parse_listen(v, "--mqtt")?;
    }
    if let Some(v) = &args.ws {
        config.listeners.ws = parse_listen(v, "--ws")?;
    }
    if let Some(v) = &args.http {
        config.listeners.http = parse_listen(v, "--http")?;
    }
    if let Some(dir) = &args.data {
        config.store.data_dir = dir.clone();
    }
    Ok(config)
}

fn read_config(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::from_toml(&text).with_context(|| format!("parsing {}", path.display()))
}

fn parse_listen(value: &str, flag: &str) -> Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    match value.parse() {
        Ok(addr) => Ok(Some(addr)),
        Err(_) => bail!("{flag}: expected host:port or \"off\", got {value:?}"),
    }
}

fn hash_password(password: Option<String>) -> Result<()> {
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let hash = seed_plugin_auth_static::hash_password(&password)?;
    println!("{hash}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example in `deploy/` is a valid configuration whose plugins build.
    #[test]
    fn deploy_examples_build() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let config = read_config(&path).unwrap();
            let data = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _guard = runtime.enter();
            let mut context = PluginContext::new(data.path().to_path_buf());
            let built = registry().build(&config.plugins, &mut context);
            assert!(built.is_ok(), "{}: {:?}", path.display(), built.err());
            checked += 1;
        }
        assert!(checked >= 3, "found only {checked} example configurations");
    }

    #[test]
    fn listen_flags() {
        assert_eq!(parse_listen("off", "--mqtt").unwrap(), None);
        assert_eq!(
            parse_listen("127.0.0.1:1", "--mqtt").unwrap(),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert!(parse_listen("nonsense", "--mqtt").is_err());
    }
}
