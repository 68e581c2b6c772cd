//! `seed-bench`: load generator for Seed and peer MQTT brokers (Mosquitto, rumqttd).
//!
//! This file holds the command line and dispatch; each scenario lives in `scenarios/`, the
//! measurement and output code in `stats.rs`, the rumqttc v4/v5 wrapper in `mqtt.rs`, and a
//! minimal HTTP client for Seed's account API and `/metrics` in `http.rs`.
//! Every run prints exactly one summary line (or JSON object with `--json`) on stdout.

mod http;
mod mqtt;
mod procfs;
mod scenarios;
mod stats;

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N publisher/subscriber pairs, one topic per pair.
    Pairs,
    /// G groups of one publisher and M subscribers.
    Fanout,
    /// N idle connections; broker RSS per connection.
    Idle,
    /// Persistent-session queue replay after reconnect.
    Offline,
    /// Seed's chat protocol: N pairs of users, A sending direct messages to B (Seed only).
    Chat,
}

/// MQTT broker benchmark (loopback only).
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Broker host; must be a loopback address or `localhost`.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// QoS for publishes and subscriptions (pairs, fanout).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Number of publisher/subscriber pairs (pairs).
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Number of groups (fanout).
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Subscribers per group (fanout).
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Idle connections to open (idle).
    #[arg(long, default_value_t = 10_000)]
    pub connections: u64,
    /// Total publish rate in msg/s over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publishing duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Total messages to publish (0 = bounded by --duration only; offline defaults to 20000).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Payload size in bytes (minimum 16: sequence number + timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Client-side in-flight window for QoS > 0 publishes.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Seconds without progress after publishing ends before counting the rest as lost.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Maximum concurrent connection attempts.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds to wait after all idle connections are up before reading the broker RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// MQTT protocol version: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt_version: u8,
    /// Seed's HTTP port (chat: accounts and /metrics), on the same host.
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Concurrent register/login calls (chat; each costs the server an argon2 hash).
    #[arg(long, default_value_t = 4)]
    pub http_concurrency: usize,
    /// PID of the broker process: its RSS (idle) and its CPU time per delivered message
    /// (pairs, fanout, chat).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Free-form label copied into the summary (e.g. the broker name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Write every delivered message's send time and latency to this file (pairs, fanout,
    /// chat): `sent_unix_us latency_us` per line, in send order, to find when a tail happens.
    #[arg(long)]
    pub latency_log: Option<std::path::PathBuf>,
    /// Print the summary as a JSON object instead of key=value pairs.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn version(&self) -> mqtt::Version {
        if self.mqtt_version == 5 { mqtt::Version::V5 } else { mqtt::Version::V4 }
    }

    fn validate(&self) -> Result<()> {
        if !is_loopback(&self.host) {
            bail!(
                "refusing non-loopback host {:?}: only 127.0.0.0/8, ::1 and localhost",
                self.host
            );
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            bail!("--rate must be >= 0");
        }
        if !(self.drain_timeout.is_finite()
            && self.drain_timeout > 0.0
            && self.drain_timeout <= 600.0)
        {
            bail!("--drain-timeout must be in (0, 600] seconds");
        }
        if !(self.settle.is_finite() && (0.0..=600.0).contains(&self.settle)) {
            bail!("--settle must be in [0, 600] seconds");
        }
        if self.payload < stats::HEADER_LEN || self.payload > 256 * 1024 {
            bail!("--payload must be between {} and 262144 bytes", stats::HEADER_LEN);
        }
        if self.pairs == 0 || self.groups == 0 || self.members == 0 || self.connections == 0 {
            bail!("--pairs, --groups, --members and --connections must be positive");
        }
        if self.pairs > 10_000 || self.groups * self.members > 100_000 || self.connections > 200_000
        {
            bail!(
                "client counts are capped (pairs 10000, groups*members 100000, connections 200000)"
            );
        }
        Ok(())
    }
}

/// True for `localhost` and any loopback IP literal (127.0.0.0/8, ::1, optionally bracketed).
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Errors are printed as a one-line cause chain (no backtrace noise from RUST_BACKTRACE).
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    args.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut summary = rt.block_on(async {
        match args.scenario {
            Scenario::Pairs => scenarios::pairs::run(args).await,
            Scenario::Fanout => scenarios::fanout::run(args).await,
            Scenario::Idle => scenarios::idle::run(args).await,
            Scenario::Offline => scenarios::offline::run(args).await,
            Scenario::Chat => scenarios::chat::run(args).await,
        }
    })?;
    summary.label = args.label.clone();
    println!("{}", if args.json { summary.to_json() } else { summary.to_line() });
    // Don't wait for stray tasks (e.g. sockets still closing) at shutdown.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(f) = summary.failure {
        bail!("{f}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_only() {
        for ok in ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback(ok), "{ok}");
        }
        for bad in ["10.0.0.1", "192.168.1.1", "example.com", "0.0.0.0", "::", "8.8.8.8", ""] {
            assert!(!is_loopback(bad), "{bad}");
        }
    }
}
