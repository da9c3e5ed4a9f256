//! The one `Context` every controller and server shares.

use crate::forge::{BudgetConfig, ForgeClients};
use crate::telemetry::Metrics;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Name of the field manager prefix for server-side apply: `pullwarden.dev/<component>`.
pub const FIELD_MANAGER_PREFIX: &str = "pullwarden.dev";

/// Static configuration of one operator process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// This replica's identity (Pod name, or host name outside a cluster).
    pub instance: String,
    /// Directory for cached git fetches of preview templates.
    pub git_cache_dir: PathBuf,
    /// Public base URL of the webhook server, shown in Repository status.
    pub webhook_base_path: String,
    /// Operator-level safety settings (flags); tenants cannot override them.
    pub settings: crate::settings::Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            instance: "pullwarden".into(),
            git_cache_dir: std::env::temp_dir().join("pullwarden-git-cache"),
            webhook_base_path: "/hooks".into(),
            settings: crate::settings::Settings::default(),
        }
    }
}

/// Shared state of the operator: one API client, one event recorder, one set of metrics, one
/// forge budget per credential.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    /// The configuration `client` was built from; previews clone it to impersonate their
    /// namespace's ServiceAccount.
    pub kube_config: kube::Config,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub forges: ForgeClients,
    /// Bounded cache of shallow fetches (preview templates).
    pub git: crate::git::GitCache,
    pub recorder: Recorder,
    /// True once every controller's watch has listed its objects (drives `/readyz`).
    pub synced: Arc<AtomicBool>,
    /// Immediate-reconcile requests from verified webhooks.
    pub triggers: Arc<Triggers>,
    /// One flag per controller watch, set when its initial list has been delivered.
    pub watch_synced: Arc<WatchSync>,
    /// True while this replica runs the controllers (always, without leader election).
    pub leader: Arc<AtomicBool>,
}

/// Annotation a standby replica sets on a Repository to hand a verified webhook to the leader
/// (the leader's watch sees the change and reconciles). Value: RFC 3339 time of the delivery.
pub const WEBHOOK_RECEIVED_AT: &str = "pullwarden.dev/webhook-received-at";

/// Tracks which watches have delivered their initial list.
#[derive(Debug, Default)]
pub struct WatchSync {
    flags: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
}

impl WatchSync {
    /// A new flag for one watch.
    pub fn register(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.flags
            .lock()
            .expect("watch sync lock")
            .push((name, flag.clone()));
        flag
    }

    /// True when at least one watch is registered and all have synced.
    pub fn all_synced(&self) -> bool {
        let flags = self.flags.lock().expect("watch sync lock");
        !flags.is_empty() && flags.iter().all(|(_, f)| f.load(Ordering::Acquire))
    }

    /// Names of the watches that have not synced yet.
    pub fn pending(&self) -> Vec<&'static str> {
        let flags = self.flags.lock().expect("watch sync lock");
        flags
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// `namespace/name` of an object, as a pair.
pub type ObjectKey = (String, String);

/// Webhook hints: which Repositories to reconcile now, and when their last verified event was.
/// Webhooks are hints only: the controller re-reads the forge, so a lost hint costs latency.
/// A finished check (check run, commit status, pipeline) on a head SHA of a Repository: the
/// previews (and later gates) whose head it is re-evaluate at once, without a Repository sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadEvent {
    pub namespace: String,
    pub repository: String,
    pub sha: String,
}

/// Something a PolicyGate decides on may have changed for a Repository's pull requests (a
/// pull request, review, label or comment event; a finished check; a new head seen by polling;
/// a preview becoming ready or not): the gates selecting it re-evaluate. Conditional requests
/// make a re-evaluation of unchanged pull requests free on the forge's quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateHint {
    pub namespace: String,
    pub repository: String,
}

#[derive(Debug)]
pub struct Triggers {
    repository_tx: mpsc::UnboundedSender<ObjectKey>,
    repository_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectKey>>>,
    head_tx: mpsc::UnboundedSender<HeadEvent>,
    head_rx: Mutex<Option<mpsc::UnboundedReceiver<HeadEvent>>>,
    gate_tx: mpsc::UnboundedSender<GateHint>,
    gate_rx: Mutex<Option<mpsc::UnboundedReceiver<GateHint>>>,
    last_events: Mutex<HashMap<ObjectKey, jiff::Timestamp>>,
}

impl Default for Triggers {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (head_tx, head_rx) = mpsc::unbounded_channel();
        let (gate_tx, gate_rx) = mpsc::unbounded_channel();
        Triggers {
            gate_tx,
            gate_rx: Mutex::new(Some(gate_rx)),
            repository_tx: tx,
            repository_rx: Mutex::new(Some(rx)),
            head_tx,
            head_rx: Mutex::new(Some(head_rx)),
            last_events: Mutex::default(),
        }
    }
}

impl Triggers {
    /// Asks for an immediate reconcile of a Repository and records the event time.
    pub fn repository_event(&self, key: ObjectKey, at: jiff::Timestamp) {
        self.last_events
            .lock()
            .expect("triggers lock")
            .insert(key.clone(), at);
        // The receiver lives as long as the Repository controller; when it is not running
        // (standby replica) the hint is simply dropped.
        let _ = self.repository_tx.send(key);
    }

    /// The receiving end, taken once by the Repository controller.
    /// A check finished on `event.sha`: the previews of that Repository whose head it is are
    /// reconciled (dropped when the preview controller is not running, as above).
    pub fn head_checks_finished(&self, event: HeadEvent) {
        let _ = self.head_tx.send(event);
    }

    /// The gates selecting `hint.repository` re-evaluate (dropped when the gate controller is
    /// not running).
    pub fn gates(&self, hint: GateHint) {
        let _ = self.gate_tx.send(hint);
    }

    pub fn take_gate_receiver(&self) -> Option<mpsc::UnboundedReceiver<GateHint>> {
        self.gate_rx.lock().expect("triggers lock").take()
    }

    pub fn take_head_receiver(&self) -> Option<mpsc::UnboundedReceiver<HeadEvent>> {
        self.head_rx.lock().expect("triggers lock").take()
    }

    pub fn take_repository_receiver(&self) -> Option<mpsc::UnboundedReceiver<ObjectKey>> {
        self.repository_rx.lock().expect("triggers lock").take()
    }

    /// The time of the last verified webhook event for a Repository.
    pub fn last_event(&self, key: &ObjectKey) -> Option<jiff::Timestamp> {
        self.last_events
            .lock()
            .expect("triggers lock")
            .get(key)
            .copied()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        kube_config: kube::Config,
        config: Config,
        metrics: Metrics,
    ) -> Result<Self, kube::Error> {
        let client = Client::try_from(kube_config.clone())?;
        let reporter = Reporter {
            controller: "pullwarden".into(),
            instance: Some(config.instance.clone()),
        };
        // One outbound guard for every tenant-chosen connection (forge APIs and git).
        let guard = crate::net::Guard::from(&config.settings.network);
        let forges = ForgeClients::with_guard(
            metrics.forge.clone(),
            BudgetConfig::default(),
            guard.clone(),
        );
        let git = crate::git::GitCache::with_limits(
            config.git_cache_dir.clone(),
            crate::git::CacheLimits::default(),
            crate::git::FetchLimits {
                max_fetch_bytes: config.settings.network.git_fetch_max_bytes,
                max_fetch_objects: config.settings.network.git_fetch_max_objects,
                ..crate::git::FetchLimits::for_render(&crate::render::Limits::default())
            },
        )
        .with_guard(guard);
        Ok(Context {
            git,
            recorder: Recorder::new(client.clone(), reporter),
            kube_config,
            client,
            config: Arc::new(config),
            metrics,
            forges,
            synced: Arc::new(AtomicBool::new(false)),
            triggers: Arc::new(Triggers::default()),
            watch_synced: Arc::new(WatchSync::default()),
            leader: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Field manager for server-side apply by one component, e.g. `pullwarden.dev/preview`.
    pub fn field_manager(component: &str) -> String {
        format!("{FIELD_MANAGER_PREFIX}/{component}")
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}
