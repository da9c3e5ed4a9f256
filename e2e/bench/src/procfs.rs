//! What `/proc` says about a process and the machine: resident memory (`VmRSS`, `VmHWM`), CPU
//! time, core count, CPU model and total memory. Linux only; every reader returns `None` when the
//! file is missing (another OS, or the process has exited).

use serde::Serialize;

/// Linux reports `utime`/`stime` in `/proc/<pid>/stat` in clock ticks of `USER_HZ`, which the
/// kernel ABI fixes at 100 on every architecture we run on.
const USER_HZ: f64 = 100.0;

/// Resident memory of a process, in KiB, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident set now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident set since the process started.
    pub hwm_kib: u64,
}

impl Memory {
    /// `rss_kib` in MiB.
    pub fn rss_mib(&self) -> f64 {
        kib_to_mib(self.rss_kib)
    }

    /// `hwm_kib` in MiB.
    pub fn hwm_mib(&self) -> f64 {
        kib_to_mib(self.hwm_kib)
    }
}

/// KiB → MiB, rounded to 0.1.
pub fn kib_to_mib(kib: u64) -> f64 {
    round1(kib as f64 / 1024.0)
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

/// Parses the `VmRSS:` and `VmHWM:` lines of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// User + system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&text)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let after = stat.rsplit_once(") ")?.1;
    let mut fields = after.split_whitespace();
    // `after` starts at field 3 (state): utime is field 14, i.e. index 11 here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The machine a benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    /// `model name` from `/proc/cpuinfo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// `MemTotal` from `/proc/meminfo`, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_total_mib: Option<u64>,
    /// 1-minute load average when the measurement started (other work on a shared machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_avg_1m: Option<f64>,
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
    });
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let kib: u64 = l
                .strip_prefix("MemTotal:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024)
        })
    });
    Machine {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        mem_total_mib,
        load_avg_1m: load_average(),
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_memory() {
        let text =
            "Name:\tpullwarden\nVmPeak:\t 900000 kB\nVmHWM:\t   61234 kB\nVmRSS:\t   51200 kB\n";
        let m = parse_status(text).unwrap();
        assert_eq!(
            m,
            Memory {
                rss_kib: 51200,
                hwm_kib: 61234
            }
        );
        assert_eq!(m.rss_mib(), 50.0);
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn parses_stat_cpu_after_a_tricky_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        if std::path::Path::new("/proc/self/status").exists() {
            let me = memory(std::process::id()).unwrap();
            assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
            assert!(cpu_seconds(std::process::id()).is_some());
        }
        assert!(machine().cores >= 1);
    }
}
