//! Minimal `/proc` reader: the resident set size and CPU time of another process (the broker
//! under test), and the machine's steal time.

use anyhow::{Context, Result, bail};

/// Parses the `VmRSS:` line of a `/proc/<pid>/status` document into bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    let mult = match unit {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    value.checked_mul(mult)
}

/// Current RSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    match parse_vm_rss(&text) {
        Some(v) => Ok(v),
        None => bail!("no VmRSS in {path}"),
    }
}

/// Clock ticks per second in `/proc/<pid>/stat`: Linux reports CPU times there in USER_HZ,
/// which is 100 on every architecture this runs on, whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// User plus system time of a `/proc/<pid>/stat` document, in clock ticks. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // Field 3 (the state) comes first; utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time `pid` has used so far, every thread's (exited ones included), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    match parse_cpu_ticks(&text) {
        Some(ticks) => Ok(ticks as f64 / USER_HZ),
        None => bail!("no CPU times in {path}"),
    }
}

/// Steal and total time of every CPU, in clock ticks, from the `cpu` line of a `/proc/stat`
/// document: steal is the time a virtual machine's CPUs wanted to run and the hypervisor ran
/// something else.
pub fn parse_steal(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let ticks: Vec<u64> =
        line.split_whitespace().skip(1).take(8).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

fn machine_steal() -> Option<(u64, u64)> {
    parse_steal(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The broker's CPU time over a run (nothing when its pid is not known), and the machine's
/// steal time over the same span.
pub struct CpuMeter {
    broker: Option<(u32, f64)>,
    steal: Option<(u64, u64)>,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> Result<CpuMeter> {
        let broker = pid.map(|pid| cpu_seconds(pid).map(|seconds| (pid, seconds))).transpose()?;
        Ok(CpuMeter { broker, steal: machine_steal() })
    }

    /// The share of all CPU time since [`CpuMeter::start`] that the hypervisor took (0 on
    /// bare metal; None where `/proc/stat` cannot be read).
    pub fn steal_pct(&self) -> Option<f64> {
        let (steal0, total0) = self.steal?;
        let (steal, total) = machine_steal()?;
        (total > total0).then(|| (steal - steal0) as f64 * 100.0 / (total - total0) as f64)
    }

    /// Microseconds of broker CPU per delivered message since [`CpuMeter::start`]. A broker
    /// gone meanwhile is reported and gives None: the run's other figures still stand.
    pub fn per_message_us(&self, delivered: u64) -> Option<f64> {
        let (pid, start) = self.broker?;
        match cpu_seconds(pid) {
            Ok(now) => (delivered > 0).then(|| (now - start) * 1e6 / delivered as f64),
            Err(e) => {
                eprintln!("broker CPU time: {e:#}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb() {
        let s = "Name:\tmosquitto\nVmPeak:\t  1 kB\nVmRSS:\t    7168 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(s), Some(7168 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn parses_cpu_ticks_after_an_awkward_name() {
        let s = "4242 (seed) (x) S 1 4242 4242 0 -1 4194560 1 0 0 0 731 269 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_ticks(s), Some(731 + 269));
        assert_eq!(parse_cpu_ticks("4242 (seed) S 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn parses_steal() {
        let s = "cpu  100 5 50 800 10 0 5 30 0 0\ncpu0 50 2 25 400 5 0 2 15 0 0\n";
        assert_eq!(parse_steal(s), Some((30, 1000)));
        assert_eq!(parse_steal("cpu0 1 2 3\n"), None);
        assert_eq!(parse_steal("cpu  1 2 3\n"), None, "a short line");
    }

    #[test]
    fn reads_its_own_cpu_time() {
        // Spins until /proc shows 50 ms more CPU time (5 ticks), however busy the machine.
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_seconds(pid).unwrap() - before < 0.05 {
            assert!(std::time::Instant::now() < deadline, "no CPU time counted (x = {x})");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }
}
