//! One kube-runtime controller per kind, sharing one [`Context`].
//!
//! Every reconcile runs through [`reconcile_guarded`], which gives all kinds the same behaviour:
//! - objects that do not even deserialize (e.g. written before a schema change) are reported
//!   with a `Stalled` condition and a Warning event instead of breaking the watch;
//! - the kind's own reconcile is a pipeline: dereference → validate → build (pure) → apply →
//!   status;
//! - a failed reconcile is counted by error category, published as a Warning event whose reason
//!   is the category, and written to the `Ready` condition, together with
//!   `lastHandledReconcileAt` (a `reconcile-requested-at` annotation is acknowledged on every
//!   path, also a failing one) and the kind's [`PullwardenKind::status_on_error`] fields;
//! - [`error_policy`] turns the category into a requeue: permanent errors wait for a change,
//!   missing dependencies retry slowly, transient errors back off exponentially.
//!
//! Status-only updates do not trigger reconciles (a generation + annotations + labels predicate),
//! so writing status never feeds back into another forge poll.

pub mod directory;
pub mod healthcheck;
pub mod plugin;
pub mod policygate;
pub mod preview;
pub mod refs;
pub mod repository;
pub mod status;

mod backoff;

use crate::api::{self, HasCommonStatus, RECONCILE_REQUESTED_AT};
use crate::context::Context;
use crate::error::{Error, Retry};
use backoff::BackoffTracker;
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{info, warn};

/// What the controller framework needs to know about a Pullwarden kind.
pub trait PullwardenKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasCommonStatus
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Kind name for metrics and logs.
    const KIND: &'static str;
    /// The kind's reconcile writes its whole status on every path, errors included, so the
    /// shared wrapper must not write error conditions a second time.
    const WRITES_STATUS_ON_ERROR: bool = false;

    /// Status fields (besides conditions, `observedGeneration` and `lastHandledReconcileAt`)
    /// that a failed reconcile still writes, merged into the error status patch; only those
    /// that differ from what is stored.
    fn status_on_error(&self, _ctx: &Context) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

impl PullwardenKind for api::Repository {
    const KIND: &'static str = "Repository";

    fn status_on_error(&self, ctx: &Context) -> serde_json::Map<String, serde_json::Value> {
        repository::status_on_error(ctx, self)
    }
}
impl PullwardenKind for api::PreviewEnvironment {
    const KIND: &'static str = "PreviewEnvironment";
    const WRITES_STATUS_ON_ERROR: bool = true;
}
impl PullwardenKind for api::PolicyGate {
    const KIND: &'static str = "PolicyGate";
}
impl PullwardenKind for api::HealthCheck {
    const KIND: &'static str = "HealthCheck";
}
impl PullwardenKind for api::Plugin {
    const KIND: &'static str = "Plugin";
}

/// The shared state a controller's reconcile receives.
#[derive(Debug)]
pub struct ControllerContext {
    pub ctx: Context,
    backoff: BackoffTracker,
    /// The preview controller's caches and stores.
    previews: preview::Shared,
    /// The gate controller's stores and team-membership cache.
    gates: policygate::Shared,
    /// The one HealthCheck probe scheduler.
    health: healthcheck::HealthScheduler,
}

impl ControllerContext {
    pub fn new(ctx: Context) -> Arc<Self> {
        Arc::new(ControllerContext {
            ctx,
            backoff: BackoffTracker::default(),
            previews: preview::Shared::default(),
            gates: policygate::Shared::default(),
            health: healthcheck::HealthScheduler::default(),
        })
    }
}

/// An `Api<K>` for the namespace the operator watches (or all namespaces).
pub fn scoped_api<K: PullwardenKind>(ctx: &Context) -> Api<K> {
    match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// The value of `pullwarden.dev/reconcile-requested-at`, echoed in status once handled.
pub fn requested_at<K: Resource>(obj: &K) -> Option<String> {
    obj.meta()
        .annotations
        .as_ref()?
        .get(RECONCILE_REQUESTED_AT)
        .cloned()
}

/// Runs a kind's reconcile with the shared error handling (see the module docs).
pub async fn reconcile_guarded<K, F, Fut>(
    guarded: Arc<DeserializeGuard<K>>,
    cctx: Arc<ControllerContext>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: PullwardenKind,
    F: FnOnce(Arc<K>, Arc<ControllerContext>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let ctx = &cctx.ctx;
    let _measure = ctx.metrics.reconcile(K::KIND);
    let obj = match &guarded.0 {
        Ok(obj) => Arc::new(obj.clone()),
        Err(invalid) => {
            let err = Error::InvalidSpec(format!("object cannot be read: {}", invalid.error));
            ctx.metrics.reconcile_failure(K::KIND, "InvalidObject");
            status::report_invalid_object::<K>(ctx, &invalid.metadata, &err.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let key = object_key(obj.as_ref());
    match reconcile(obj.clone(), cctx.clone()).await {
        Ok(action) => {
            cctx.backoff.reset(&key);
            Ok(action)
        }
        Err(err) => {
            ctx.metrics.reconcile_failure(K::KIND, err.category());
            warn!(kind = K::KIND, object = %key, category = err.category(), error = %err, "reconcile failed");
            publish(
                ctx,
                obj.as_ref(),
                EventType::Warning,
                err.category(),
                "Reconcile",
                &err.to_string(),
            )
            .await;
            if K::WRITES_STATUS_ON_ERROR {
                return Err(err);
            }
            if let Err(write_err) = status::write_error_conditions(ctx, obj.as_ref(), &err).await {
                warn!(kind = K::KIND, object = %key, error = %write_err, "could not write error status");
            }
            Err(err)
        }
    }
}

/// Requeue policy derived from the error category.
pub fn error_policy<K: PullwardenKind>(
    guarded: Arc<DeserializeGuard<K>>,
    err: &Error,
    cctx: Arc<ControllerContext>,
) -> Action {
    let key = match &guarded.0 {
        Ok(obj) => object_key(obj),
        Err(invalid) => format!(
            "{}/{}",
            invalid.metadata.namespace.as_deref().unwrap_or_default(),
            invalid.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    match err.retry() {
        Retry::OnChange => Action::await_change(),
        Retry::After(delay) => Action::requeue(delay),
        Retry::Backoff => Action::requeue(cctx.backoff.next_delay(&key)),
    }
}

/// `namespace/name` of an object.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Publishes a Kubernetes event about `obj`; failures are logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let mut note = note.to_owned();
    // events.k8s.io caps the note at 1 KiB.
    api::truncate_at_char_boundary(&mut note, 1024);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(reason, error = %e, "could not publish event");
    }
}

/// Waits until the CRD of `K` is served, instead of exiting: the operator may start before
/// its CRDs are applied (e.g. in one `kubectl apply -k`).
pub async fn wait_for_crd<K: PullwardenKind>(ctx: &Context) {
    let api = scoped_api::<K>(ctx);
    let mut attempt = 0u32;
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(e) => {
                if attempt.is_multiple_of(10) {
                    warn!(kind = K::KIND, error = %e, "waiting for the CustomResourceDefinition to be installed and established");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Runs every controller until `shutdown` resolves. Sets `ctx.synced` once every watch has
/// listed its objects.
pub async fn run_all(
    ctx: Context,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    wait_for_crd::<api::Repository>(&ctx).await;
    wait_for_crd::<api::PreviewEnvironment>(&ctx).await;
    wait_for_crd::<api::PolicyGate>(&ctx).await;
    wait_for_crd::<api::HealthCheck>(&ctx).await;
    wait_for_crd::<api::Plugin>(&ctx).await;
    info!("CustomResourceDefinitions are served; starting controllers");

    let cctx = ControllerContext::new(ctx.clone());
    let repository = repository::controller(cctx.clone());
    let preview = preview::controller(cctx.clone(), repository.store());
    let gate = policygate::controller(cctx.clone(), repository.store(), preview.store());
    let health = healthcheck::controller(cctx.clone());
    cctx.health.set_stores(health.store(), preview.store());
    cctx.previews.set_health_checks(health.store());
    let plugin = plugin::controller(cctx.clone());

    // Ready once every controller's watch has delivered its initial list (see `primary_controller`).
    let synced = ctx.synced.clone();
    let flags = ctx.watch_synced.clone();
    tokio::spawn(async move {
        loop {
            if flags.all_synced() {
                synced.store(true, Ordering::Release);
                info!("every watch has synced; ready");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    futures::join!(
        drain(repository.run(shutdown.clone(), cctx.clone())),
        drain(preview.run(shutdown.clone(), cctx.clone())),
        drain(gate.run(shutdown.clone(), cctx.clone())),
        drain(health.run(shutdown.clone(), cctx.clone())),
        cctx.health.clone().run(ctx.clone(), shutdown.clone()),
        drain(plugin.run(shutdown, cctx)),
    );
    ctx.synced.store(false, Ordering::Release);
}

async fn drain<S, T, E>(stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    stream
        .for_each(|result| async move {
            if let Err(e) = result {
                // Reconcile errors were already reported with context; these are scheduling
                // or watch errors.
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// The reconcile function of a kind, as the controller runtime calls it.
pub type ReconcileFn<K> = fn(
    Arc<DeserializeGuard<K>>,
    Arc<ControllerContext>,
) -> futures::future::BoxFuture<'static, Result<Action, Error>>;

/// A kind's controller, packaged for [`run_all`].
pub struct KindController<K: PullwardenKind> {
    controller: kube::runtime::Controller<DeserializeGuard<K>>,
    reconcile: ReconcileFn<K>,
}

impl<K: PullwardenKind> KindController<K> {
    pub fn new(
        controller: kube::runtime::Controller<DeserializeGuard<K>>,
        reconcile: ReconcileFn<K>,
    ) -> Self {
        KindController {
            controller,
            reconcile,
        }
    }

    pub fn store(&self) -> Store<DeserializeGuard<K>> {
        self.controller.store()
    }

    pub fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
        cctx: Arc<ControllerContext>,
    ) -> impl futures::Stream<
        Item = Result<(ObjectRef<DeserializeGuard<K>>, Action), impl std::fmt::Display>,
    > {
        self.controller
            .graceful_shutdown_on(shutdown)
            .run(self.reconcile, error_policy::<K>, cctx)
    }
}

impl<K: PullwardenKind> std::fmt::Debug for KindController<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindController")
            .field("kind", &K::KIND)
            .finish()
    }
}

/// The watch stream of a kind, filtered so that status-only updates don't trigger reconciles.
pub fn primary_controller<K: PullwardenKind>(
    ctx: &Context,
) -> kube::runtime::Controller<DeserializeGuard<K>> {
    use futures::StreamExt as _;
    use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
    let api: Api<DeserializeGuard<K>> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (reader, writer) = reflector::store();
    // Readiness is observed on the stream itself: `Store::wait_until_ready` supports only one
    // waiter at a time (the controller's runner is already one), so a second waiter could
    // steal its wake-up.
    let synced = ctx.watch_synced.register(K::KIND);
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        // managedFields are a large part of a small object and nothing here reads them
        // (docs/benchmarks.md, bench-health).
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                synced.store(true, Ordering::Release);
            }
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation::<DeserializeGuard<K>>
                .combine(predicates::annotations::<DeserializeGuard<K>>)
                .combine(predicates::labels::<DeserializeGuard<K>>)
                // kube-runtime's `finalizer()` waits for the event of its own finalizer patch.
                .combine(predicates::finalizers::<DeserializeGuard<K>>),
            Default::default(),
        );
    kube::runtime::Controller::for_stream(stream, reader)
}
