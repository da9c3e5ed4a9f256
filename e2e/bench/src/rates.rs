//! Request rates over time from the emulator's cumulative request counts: a sampler that reads
//! `GET /_emulator/requests` once a second, and the peak number of requests per route inside any
//! sliding window (GitHub's secondary limit is per endpoint and per minute), plus deltas of
//! [`ClientCounts`] between two readings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pullwarden_emulator::{AdminClient, ClientCounts};

/// Cumulative requests per route of one client, sampled over time.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub samples: Vec<(Instant, BTreeMap<String, u64>)>,
}

impl Series {
    /// The most requests one route received within any `window` that ends inside
    /// `[from, to]`, per route (1-second sampling: a peak may be off by one sample).
    pub fn peak_per_window(
        &self,
        from: Instant,
        to: Instant,
        window: Duration,
    ) -> BTreeMap<String, u64> {
        let mut peaks: BTreeMap<String, u64> = BTreeMap::new();
        let mut j = 0;
        for (i, (t, now)) in self.samples.iter().enumerate() {
            if *t < from || *t > to {
                continue;
            }
            // The earliest sample no older than `window` before t (but not before `from`).
            while j < i && (self.samples[j].0 + window < *t || self.samples[j].0 < from) {
                j += 1;
            }
            let base = if j < i {
                &self.samples[j].1
            } else {
                // Nothing before t inside the window: count from the sample just before it.
                match i.checked_sub(1) {
                    Some(k) if self.samples[k].0 >= from => &self.samples[k].1,
                    _ => continue,
                }
            };
            for (route, n) in now {
                let d = n.saturating_sub(base.get(route).copied().unwrap_or(0));
                let p = peaks.entry(route.clone()).or_default();
                *p = (*p).max(d);
            }
        }
        peaks
    }
}

/// Per route, all statuses summed.
pub fn route_totals(c: &ClientCounts) -> BTreeMap<String, u64> {
    c.routes
        .iter()
        .map(|(r, s)| (r.clone(), s.values().sum()))
        .collect()
}

/// `after - before` for every route and status (counts only grow between resets).
pub fn delta_counts(before: &ClientCounts, after: &ClientCounts) -> ClientCounts {
    let mut routes = BTreeMap::new();
    for (route, statuses) in &after.routes {
        let mut changed = BTreeMap::new();
        for (status, n) in statuses {
            let old = before
                .routes
                .get(route)
                .and_then(|s| s.get(status))
                .copied()
                .unwrap_or(0);
            if *n > old {
                changed.insert(status.clone(), n - old);
            }
        }
        if !changed.is_empty() {
            routes.insert(route.clone(), changed);
        }
    }
    let charged_routes = after
        .charged_routes
        .iter()
        .filter_map(|(route, n)| {
            let old = before.charged_routes.get(route).copied().unwrap_or(0);
            (*n > old).then(|| (route.clone(), n - old))
        })
        .collect();
    ClientCounts {
        total: after.total.saturating_sub(before.total),
        not_modified: after.not_modified.saturating_sub(before.not_modified),
        routes,
        charged: after.charged.saturating_sub(before.charged),
        charged_routes,
    }
}

/// Samples one client's request counts every second until dropped.
#[derive(Debug)]
pub struct Sampler {
    series: Arc<Mutex<Series>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `client` (a token value) on the current runtime.
    pub fn start(admin: AdminClient, client: String) -> Sampler {
        let series: Arc<Mutex<Series>> = Arc::default();
        let shared = series.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Ok(counts) = admin.request_counts().await {
                    let now = counts
                        .clients
                        .get(&client)
                        .map(route_totals)
                        .unwrap_or_default();
                    shared
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .samples
                        .push((Instant::now(), now));
                }
            }
        });
        Sampler { series, task }
    }

    /// A copy of the samples so far.
    pub fn series(&self) -> Series {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, &str, u64)]) -> ClientCounts {
        let mut c = ClientCounts::default();
        for (route, status, n) in pairs {
            c.routes
                .entry((*route).into())
                .or_default()
                .insert((*status).into(), *n);
            c.total += n;
            if *status == "304" {
                c.not_modified += n;
            }
        }
        c
    }

    #[test]
    fn deltas_per_route_and_status() {
        let a = counts(&[("GET /a", "200", 10), ("GET /a", "304", 5)]);
        let b = counts(&[
            ("GET /a", "200", 10),
            ("GET /a", "304", 9),
            ("GET /b", "304", 2),
        ]);
        let d = delta_counts(&a, &b);
        assert_eq!((d.total, d.not_modified), (6, 6));
        assert_eq!(d.routes["GET /a"].get("200"), None);
        assert_eq!(d.routes["GET /a"]["304"], 4);
        assert_eq!(d.routes["GET /b"]["304"], 2);
    }

    #[test]
    fn peaks_inside_a_sliding_window() {
        let t0 = Instant::now();
        // Route x: 0 requests until 10s, then 10/s for 5s, then nothing.
        let samples = (0..=30u64)
            .map(|s| {
                let n = match s {
                    0..=10 => 0,
                    11..=15 => (s - 10) * 10,
                    _ => 50,
                };
                (
                    t0 + Duration::from_secs(s),
                    [("x".to_owned(), n)].into_iter().collect(),
                )
            })
            .collect();
        let series = Series { samples };
        let end = t0 + Duration::from_secs(30);
        let per_min = series.peak_per_window(t0, end, Duration::from_secs(60));
        assert_eq!(per_min["x"], 50);
        let per_2s = series.peak_per_window(t0, end, Duration::from_secs(2));
        assert_eq!(per_2s["x"], 20);
        // A range after the burst sees nothing new.
        let later =
            series.peak_per_window(t0 + Duration::from_secs(20), end, Duration::from_secs(60));
        assert_eq!(later["x"], 0);
    }
}
