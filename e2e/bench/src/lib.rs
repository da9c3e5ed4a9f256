//! Building blocks of the benchmarks in `src/bin/` (`bench-poll`, `bench-preview`,
//! `bench-webhook`): the control plane they run on and the interruptible runtime around them,
//! hostile webhook clients (`attack`, shared with the attack scenarios), the emulator fixture,
//! a watch that follows Repository status, `/proc` readers for memory and CPU, a Prometheus
//! text reader for counter deltas, and the readers of one preview lifetime's requests: the
//! kube-apiserver audit log (`audit`), the emulator's request counts grouped by kind (`forge`)
//! and the operator's own log lines (`oplog`), cut into phases (`window`). Everything a
//! benchmark reports is read from one of these (emulator request counts, rate-limit buckets,
//! `/proc`, `/metrics`, audit and operator logs), never estimated.

pub mod attack;
pub mod audit;
pub mod fixture;
pub mod forge;
pub mod oplog;
pub mod procfs;
pub mod prom;
pub mod rates;
pub mod tracker;
pub mod window;

use anyhow::{Result, anyhow};
use pullwarden_harness::cluster::Cluster;
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
        Plane::start_with_env(tool, &[])
    }

    /// [`Plane::start`] with extra environment for `cluster-up.sh` when it starts a plane (e.g.
    /// `PULLWARDEN_AUDIT_USERS`); an adopted cluster keeps whatever it was started with.
    pub fn start_with_env(tool: &'static str, env: &[(&str, &str)]) -> Result<Plane> {
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
                Cluster::start_with_env(&dir, 1, Some(std::process::id()), env)?
            }
        };
        Ok(Plane { cluster, tool })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The kube-apiserver audit log that `cluster-up.sh` writes with `PULLWARDEN_AUDIT_USERS`:
    /// in the state directory of a plane this process started, else next to an adopted
    /// `KUBECONFIG` made by `cluster-up.sh`. `None` when there is none.
    pub fn audit_log(&self) -> Option<std::path::PathBuf> {
        let dir = match self.cluster.state_dir() {
            Some(dir) => dir.to_path_buf(),
            None => std::path::Path::new(self.cluster.kubeconfig())
                .parent()?
                .to_path_buf(),
        };
        Some(dir.join("logs").join(AUDIT_LOG)).filter(|p| p.is_file())
    }
}

/// The audit log's file name under the plane's `logs/` (see `e2e/scripts/cluster-up.sh`).
pub const AUDIT_LOG: &str = "kube-apiserver-audit.log";

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

/// Prints a benchmark's JSON result (and writes it to `output`), or its error; the exit code.
pub fn report<T: serde::Serialize>(
    name: &str,
    output: Option<&std::path::Path>,
    result: anyhow::Result<T>,
) -> std::process::ExitCode {
    match result {
        Ok(result) => {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default();
            if let Some(path) = output
                && let Err(e) = std::fs::write(path, format!("{text}\n"))
            {
                eprintln!("{name}: writing {}: {e}", path.display());
            }
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
