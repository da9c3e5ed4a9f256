//! Follows every Repository of a namespace through one watch and keeps, per object, what a
//! polling benchmark needs: whether it is `Ready=True/Synced`, its `lastSyncTime` and
//! `nextSyncTime`, and how many distinct syncs (increases of `lastSyncTime`) were seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use jiff::Timestamp;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use pullwarden::api::Repository;

/// What the watch last showed of one Repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoState {
    /// `Ready` condition as `status/reason` (`True/Synced`), if any.
    pub ready: Option<String>,
    pub last_sync: Option<Timestamp>,
    pub next_sync: Option<Timestamp>,
    /// How many times `lastSyncTime` moved forward while watched.
    pub syncs: u64,
}

impl RepoState {
    /// `Ready=True` with reason `Synced`.
    pub fn synced(&self) -> bool {
        self.ready.as_deref() == Some("True/Synced")
    }

    /// The poll interval the controller last scheduled (`nextSyncTime - lastSyncTime`).
    pub fn scheduled_interval_s(&self) -> Option<f64> {
        let (last, next) = (self.last_sync?, self.next_sync?);
        Some(next.duration_since(last).as_secs_f64())
    }

    /// Folds a new observation of the object into this state.
    pub fn observe(&mut self, repo: &Repository) {
        let status = repo.status.as_ref();
        self.ready = status.and_then(|s| {
            s.common
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| format!("{}/{}", c.status, c.reason))
        });
        let last = status.and_then(|s| s.last_sync_time.as_ref()).map(|t| t.0);
        if let Some(last) = last
            && self.last_sync.is_none_or(|prev| last > prev)
        {
            self.syncs += 1;
        }
        if last.is_some() {
            self.last_sync = last;
        }
        self.next_sync = status.and_then(|s| s.next_sync_time.as_ref()).map(|t| t.0);
    }
}

/// Counts over all tracked Repositories.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub total: usize,
    pub synced: usize,
    /// `Ready` status/reason → count (`none` before the first status).
    pub reasons: BTreeMap<String, usize>,
    pub syncs: u64,
}

/// A running watch; dropping it stops the watch.
#[derive(Debug)]
pub struct Tracker {
    state: Arc<Mutex<HashMap<String, RepoState>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Starts watching `api` (one namespace) on the current runtime.
    pub fn start(api: Api<Repository>) -> Tracker {
        let state: Arc<Mutex<HashMap<String, RepoState>>> = Arc::default();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed()
            );
            while let Some(event) = events.next().await {
                let mut map = shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => {
                        if let Some(name) = r.metadata.name.clone() {
                            map.entry(name).or_default().observe(&r);
                        }
                    }
                    Ok(watcher::Event::Delete(r)) => {
                        if let Some(name) = &r.metadata.name {
                            map.remove(name);
                        }
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(e) => eprintln!("bench-poll: Repository watch error (retrying): {e}"),
                }
            }
        });
        Tracker { state, task }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> HashMap<String, RepoState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Totals of the current state.
    pub fn summary(&self) -> Summary {
        summarize(&self.snapshot())
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Totals of a snapshot.
pub fn summarize(map: &HashMap<String, RepoState>) -> Summary {
    let mut s = Summary {
        total: map.len(),
        ..Summary::default()
    };
    for r in map.values() {
        if r.synced() {
            s.synced += 1;
        }
        *s.reasons
            .entry(r.ready.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
        s.syncs += r.syncs;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo(last: &str, next: &str, reason: &str) -> Repository {
        serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"provider": "github", "url": "https://github.com/o/r"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": reason, "message": "",
                                "lastTransitionTime": "2025-01-01T00:00:00Z"}],
                "lastSyncTime": last, "nextSyncTime": next
            }
        }))
        .unwrap()
    }

    #[test]
    fn counts_forward_moves_of_last_sync_time() {
        let mut s = RepoState::default();
        s.observe(&repo(
            "2025-01-01T00:00:00Z",
            "2025-01-01T00:00:30Z",
            "Synced",
        ));
        assert!(s.synced());
        assert_eq!(s.syncs, 1);
        assert_eq!(s.scheduled_interval_s(), Some(30.0));
        // The same status again (e.g. a relist) is not a new sync.
        s.observe(&repo(
            "2025-01-01T00:00:00Z",
            "2025-01-01T00:00:30Z",
            "Synced",
        ));
        assert_eq!(s.syncs, 1);
        s.observe(&repo(
            "2025-01-01T00:00:31Z",
            "2025-01-01T00:01:31Z",
            "Synced",
        ));
        assert_eq!(s.syncs, 2);
        assert_eq!(s.scheduled_interval_s(), Some(60.0));
        let m: HashMap<String, RepoState> =
            [("a".into(), s), ("b".into(), RepoState::default())].into();
        let sum = summarize(&m);
        assert_eq!((sum.total, sum.synced, sum.syncs), (2, 1, 2));
        assert_eq!(sum.reasons["none"], 1);
    }
}
