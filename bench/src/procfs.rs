//! Minimal `/proc` reader: the resident set size of another process (the broker under test).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb() {
        let s = "Name:\tmosquitto\nVmPeak:\t  1 kB\nVmRSS:\t    7168 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(s), Some(7168 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }
}
