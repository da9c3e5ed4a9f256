//! Building blocks of the benchmarks in `src/bin/` (`bench-poll`, `bench-preview`,
//! `bench-webhook`): the control plane they run on and the interruptible runtime around them,
//! hostile webhook clients (`attack`, shared with the attack scenarios), the emulator fixture,
//! a watch that follows Repository status, `/proc` readers for memory and CPU, and a Prometheus
//! text reader for counter deltas. Everything a benchmark reports is read from one of these
//! (emulator request counts, rate-limit buckets, `/proc`, `/metrics`), never estimated.

pub mod attack;
pub mod fixture;
pub mod procfs;
pub mod prom;
pub mod rates;
pub mod tracker;

use crate::cluster::Cluster;
use anyhow::{Result, anyhow};
use std::future::Future;
use std::time::Duration;

/// The control plane of a benchmark: the cluster of `KUBECONFIG`, or a fresh one that is
/// stopped when this is dropped (and by the plane's watchdog if the benchmark dies).
#[derive(Debug)]
pub struct Plane {
    cluster: Cluster,
    tool: &'static str,
}

impl Plane {
    /// Adopts `KUBECONFIG`'s cluster or starts a one-node plane; `tool` prefixes messages.
    pub fn start(tool: &'static str) -> Result<Plane> {
        let cluster = match Cluster::from_env() {
            Some(c) => {
                eprintln!("{tool}: using the cluster of KUBECONFIG");
                c
            }
            None => {
                // cluster-up.sh owns (and finally deletes) the directory; keep() stops tempfile
                // racing it.
                let dir = tempfile::Builder::new()
                    .prefix("pullwarden-bench-")
                    .tempdir()?
                    .keep();
                Cluster::start(&dir, 1, Some(std::process::id()))?
            }
        };
        Ok(Plane { cluster, tool })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if self.cluster.state_dir().is_some() {
            eprintln!("{}: stopping the control plane", self.tool);
            if let Err(e) = self.cluster.stop() {
                eprintln!("{}: {e:#}", self.tool);
            }
        }
    }
}

/// Runs `work` on a multi-threaded runtime until it ends or Ctrl-C. Background tasks (emulator
/// connections, watches) end with the runtime, i.e. before a [`Plane`] created earlier stops.
pub fn run_interruptible<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Parses a duration such as `30s`, `5m`, `1h`, `1m30s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{text:?}: a number needs a unit (ms, s, m, h)"))?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = tail;
    }
    Ok(total)
}

/// A duration as a Kubernetes/Go duration string in whole seconds (`300s`), which both the CRD's
/// pattern and CEL's `duration()` accept.
pub fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
    }
}
