//! The PolicyGate controller: evaluates the open pull requests of the selected Repositories and
//! writes one commit status per gate per head SHA (plus a check run with a GitHub App, or the
//! gate's section of the sticky comment).
//!
//! Pipeline per reconcile (a short driver over pure parts):
//! 1. validate — compile every rule, CEL and the expression ([`CompiledGate::compile`]); a
//!    compile error is `Stalled` with reason `InvalidExpression` when the gate is applied, never
//!    when a pull request arrives;
//! 2. dereference — the Repositories (from the Repository controller's store, by
//!    `repositoryRef` or `repositorySelector`) and the `wasm` Plugins of `plugin` rules;
//! 3. gather (I/O, [`gather`]) — per open pull request (at most [`PULL_REQUESTS_PER_REPOSITORY`],
//!    most recently updated first) only what the rules read, through the credential's budget:
//!    re-reading an unchanged pull request costs `304`s;
//! 4. evaluate (pure, [`crate::gate`]) and plan (pure, [`plan`]) — the report for the verdict
//!    under `mode`, and whether the forge already shows it: a decision found in
//!    `status.evaluations` was written before it was recorded (no forge read); any other is
//!    compared with the head's checks, so a crash between the write and the status write
//!    cannot duplicate it;
//! 5. write back ([`writeback`]) only what the forge does not show yet;
//! 6. status — bounded `evaluations` (an unchanged decision keeps its time, so an unchanged
//!    gate writes no status), pass/fail counts, `Ready`.
//!
//! Triggers: the gate's own changes; [`crate::context::GateHint`]s from verified webhooks
//! (pull request, review, label, comment events and finished checks), from Repository syncs
//! that saw the pull requests change and from previews whose readiness changed; and
//! `interval` as the safety net. A forge failure of one Repository leaves its earlier
//! evaluations in status and fails the reconcile with the forge's category.

pub mod gather;
pub mod plan;
pub mod writeback;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use kube::ResourceExt;
use kube::core::{DeserializeGuard, Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, info};

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{Outcome, Plugin, PolicyGate, PolicyGateStatus, PreviewEnvironment, Repository};
use crate::error::Error;
use crate::forge::{Forge, PullRequest};
use crate::gate::CompiledGate;
use kube::api::Api;

/// At most this many open pull requests of one Repository are evaluated per reconcile (the most
/// recently updated).
pub const PULL_REQUESTS_PER_REPOSITORY: usize = 100;

/// What the gate controller keeps between reconciles (all of it can be lost on a restart).
#[derive(Debug, Default)]
pub struct Shared {
    repositories: OnceLock<Store<DeserializeGuard<Repository>>>,
    previews: OnceLock<Store<DeserializeGuard<PreviewEnvironment>>>,
    teams: gather::TeamCache,
    /// What this process wrote last per (gate UID, gate generation, Repository, pull request).
    /// Only the leader writes, so while it runs this is what the forge shows: a changed verdict
    /// is written without first reading the head's checks back.
    written: std::sync::Mutex<std::collections::HashMap<WrittenKey, plan::Written>>,
}

type WrittenKey = (String, i64, String, u64);

pub fn controller(
    cctx: Arc<ControllerContext>,
    repositories: Store<DeserializeGuard<Repository>>,
    previews: Store<DeserializeGuard<PreviewEnvironment>>,
) -> KindController<PolicyGate> {
    let mut controller = primary_controller::<PolicyGate>(&cctx.ctx);
    let _ = cctx.gates.repositories.set(repositories.clone());
    let _ = cctx.gates.previews.set(previews);
    if let Some(rx) = cctx.ctx.triggers.take_gate_receiver() {
        let gates = controller.store();
        let hints = super::repository::tokio_stream_from(rx)
            .flat_map(move |hint| futures::stream::iter(gates_of(&gates, &repositories, &hint)));
        controller = controller.reconcile_on(hints);
    }
    KindController::new(controller, |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

/// The gates that select `hint.repository`.
fn gates_of(
    gates: &Store<DeserializeGuard<PolicyGate>>,
    repositories: &Store<DeserializeGuard<Repository>>,
    hint: &crate::context::GateHint,
) -> Vec<ObjectRef<DeserializeGuard<PolicyGate>>> {
    let repo = repositories
        .get(&ObjectRef::new(&hint.repository).within(&hint.namespace))
        .and_then(|g| g.0.as_ref().ok().cloned());
    gates
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|gate| gate.namespace().as_deref() == Some(hint.namespace.as_str()))
        .filter(|gate| {
            match (
                &gate.spec.repository_ref,
                &gate.spec.repository_selector,
                &repo,
            ) {
                (Some(r), _, _) => r.name == hint.repository,
                (None, Some(sel), Some(repo)) => selects(sel, repo).unwrap_or(false),
                _ => false,
            }
        })
        .map(|gate| ObjectRef::new(&gate.name_any()).within(&hint.namespace))
        .collect()
}

fn selects(selector: &crate::api::RepositorySelector, repo: &Repository) -> Result<bool, Error> {
    let selector: Selector = selector
        .clone()
        .try_into()
        .map_err(|e| Error::InvalidSpec(format!("repositorySelector: {e}")))?;
    Ok(selector.matches(repo.labels()))
}

/// The Repositories a gate selects, from the Repository controller's store.
fn selected_repositories(
    cctx: &ControllerContext,
    gate: &PolicyGate,
) -> Result<Vec<Arc<Repository>>, Error> {
    let namespace = gate.namespace().unwrap_or_default();
    let store = cctx
        .gates
        .repositories
        .get()
        .ok_or_else(|| Error::Internal("the Repository store is not set up".into()))?;
    if !cctx.ctx.watch_synced.all_synced() {
        return Err(Error::Internal(
            "waiting for the Repository watch to sync".into(),
        ));
    }
    let all = store.state();
    let in_namespace = all
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()));
    match (&gate.spec.repository_ref, &gate.spec.repository_selector) {
        (Some(r), _) => {
            let found: Vec<Arc<Repository>> = in_namespace
                .filter(|repo| repo.name_any() == r.name)
                .map(|repo| Arc::new(repo.clone()))
                .collect();
            if found.is_empty() {
                return Err(Error::ReferenceNotFound {
                    kind: "Repository",
                    namespace,
                    name: r.name.clone(),
                });
            }
            Ok(found)
        }
        (None, Some(sel)) => {
            let mut out = Vec::new();
            for repo in in_namespace {
                if selects(sel, repo)? {
                    out.push(Arc::new(repo.clone()));
                }
            }
            out.sort_by_key(|r| r.name_any());
            Ok(out)
        }
        (None, None) => Err(Error::InvalidSpec(
            "set repositoryRef or repositorySelector".into(),
        )),
    }
}

async fn check_plugins(
    cctx: &ControllerContext,
    gate: &PolicyGate,
    plugins: Vec<String>,
) -> Result<(), Error> {
    let namespace = gate.namespace().unwrap_or_default();
    let plugin_api: Api<Plugin> = Api::namespaced(cctx.ctx.client.clone(), &namespace);
    for name in plugins {
        let plugin = plugin_api
            .get_opt(&name)
            .await?
            .ok_or_else(|| Error::ReferenceNotFound {
                kind: "Plugin",
                namespace: namespace.clone(),
                name: name.clone(),
            })?;
        if plugin.spec.wasm.is_none() {
            return Err(Error::InvalidSpec(format!(
                "rule plugin {name:?} is not a wasm Plugin"
            )));
        }
    }
    Ok(())
}

/// What one Repository's sweep produced.
#[derive(Default)]
struct Sweep {
    evaluations: Vec<crate::api::GateEvaluation>,
    written: usize,
    /// The first failure (the sweep went on with the other pull requests where it could).
    error: Option<Error>,
}

async fn reconcile(gate: Arc<PolicyGate>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let key = super::object_key(gate.as_ref());

    // 1. validate
    let plugins = crate::gate::validate_gate(&gate.spec).map_err(spec_error)?;
    let compiled = CompiledGate::compile(&gate.spec).map_err(spec_error)?;
    let interval =
        crate::api::parse_duration("interval", &gate.spec.interval).map_err(Error::InvalidSpec)?;

    // 2. dereference
    let repositories = selected_repositories(&cctx, &gate)?;
    check_plugins(&cctx, &gate, plugins).await?;

    let previous = gate.status.clone().unwrap_or_default();
    if gate.spec.suspend {
        let st = PolicyGateStatus {
            common: status::common_status(
                gate.as_ref(),
                &Outcome::ready(
                    "Suspended",
                    "spec.suspend is set: pull requests are not evaluated; statuses already written stay",
                ),
            ),
            rule_count: rule_count(&gate),
            repository_count: count(repositories.len()),
            ..previous
        };
        status::apply_status(ctx, gate.as_ref(), "policygate", &st).await?;
        return Ok(Action::await_change());
    }

    // 3-5. gather, evaluate, write back: per Repository
    let needs = gather::Needs::of(&gate.spec);
    let run = Run {
        cctx: &cctx,
        gate: &gate,
        compiled: &compiled,
        context: plan::context_of(&gate.name_any(), gate.spec.context.as_deref()),
        // One look at the preview store per reconcile, not per pull request.
        previews: match (needs.preview, cctx.gates.previews.get()) {
            (true, Some(store)) => store.state(),
            _ => Vec::new(),
        },
        needs,
        // Decisions recorded under an older spec (another mode or context) say nothing about
        // what this spec has written.
        recorded: if previous.common.observed_generation == gate.metadata.generation {
            &previous.evaluations
        } else {
            &[]
        },
    };
    let mut fresh = Vec::new();
    let mut swept = BTreeSet::new();
    let mut first_error = None;
    let mut written = 0;
    for repo in &repositories {
        let sweep = run.sweep(repo).await;
        written += sweep.written;
        if sweep.error.is_none() {
            swept.insert(repo.name_any());
        }
        fresh.extend(sweep.evaluations);
        if first_error.is_none() {
            first_error = sweep.error;
        }
    }

    run.forget_closed(&fresh, &swept);

    // 6. status
    let evaluations = plan::merge_evaluations(&previous.evaluations, fresh, &swept);
    let (passed, failed) = plan::counts(&evaluations);
    let outcome = match &first_error {
        None => Outcome::ready(
            "Evaluated",
            format!(
                "{} pull requests of {} repositories evaluated: {passed} passed, {failed} failed",
                evaluations.len(),
                repositories.len()
            ),
        ),
        // The wrapper writes the error condition after this status.
        Some(_) => Outcome::progressing("Evaluating", "some pull requests could not be evaluated"),
    };
    let st = PolicyGateStatus {
        common: status::common_status(gate.as_ref(), &outcome),
        rule_count: rule_count(&gate),
        repository_count: count(repositories.len()),
        evaluations,
        passed_count: passed,
        failed_count: failed,
    };
    status::apply_status(ctx, gate.as_ref(), "policygate", &st).await?;
    if written > 0 {
        info!(gate = %key, written, "gate verdicts written");
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Action::requeue(interval)),
    }
}

fn spec_error(e: crate::gate::SpecError) -> Error {
    match e.reason {
        crate::gate::validate::REASON_INVALID_EXPRESSION => Error::InvalidExpression(e.message),
        _ => Error::InvalidSpec(e.message),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn rule_count(gate: &PolicyGate) -> u32 {
    count(gate.spec.rules.len())
}

/// One reconcile's evaluation of one gate: what every pull request of it shares.
struct Run<'a> {
    cctx: &'a ControllerContext,
    gate: &'a PolicyGate,
    compiled: &'a CompiledGate,
    needs: gather::Needs,
    context: String,
    previews: Vec<Arc<DeserializeGuard<PreviewEnvironment>>>,
    /// What this gate recorded last (`status.evaluations`): a decision recorded there was
    /// written to the forge before it was recorded.
    recorded: &'a [crate::api::GateEvaluation],
}

impl Run<'_> {
    fn key(&self, repo_name: &str, number: u64) -> WrittenKey {
        (
            self.gate.uid().unwrap_or_default(),
            self.gate.metadata.generation.unwrap_or_default(),
            repo_name.to_owned(),
            number,
        )
    }

    fn written(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<WrittenKey, plan::Written>> {
        self.cctx.gates.written.lock().expect("written lock")
    }

    fn remember(&self, decision: &crate::api::GateEvaluation, table: bool) {
        let key = self.key(&decision.repository, decision.pull_request);
        self.written().insert(
            key,
            plan::Written {
                decision: decision.clone(),
                table,
            },
        );
    }

    /// Drops what is remembered for this gate under older specs, and for pull requests of the
    /// swept Repositories that are no longer open.
    fn forget_closed(&self, fresh: &[crate::api::GateEvaluation], swept: &BTreeSet<String>) {
        let (uid, generation) = (
            self.gate.uid().unwrap_or_default(),
            self.gate.metadata.generation.unwrap_or_default(),
        );
        let open: BTreeSet<(&str, u64)> = fresh
            .iter()
            .map(|e| (e.repository.as_str(), e.pull_request))
            .collect();
        self.written().retain(|(u, g, repo, number), _| {
            *u != uid
                || (*g == generation
                    && (!swept.contains(repo) || open.contains(&(repo.as_str(), *number))))
        });
    }

    /// Evaluates the open pull requests of `repo` (the most recently updated first, at most
    /// [`PULL_REQUESTS_PER_REPOSITORY`]); one failure does not stop the others.
    async fn sweep(&self, repo: &Repository) -> Sweep {
        let mut sweep = Sweep::default();
        let forge = match refs::forge_client(&self.cctx.ctx, repo).await {
            Ok((forge, _)) => forge,
            Err(e) => {
                sweep.error = Some(e);
                return sweep;
            }
        };
        let mut open: Vec<PullRequest> = match forge.list_open_pull_requests().await {
            Ok(prs) => prs,
            Err(e) => {
                sweep.error = Some(e.into());
                return sweep;
            }
        };
        open.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then(b.number.cmp(&a.number))
        });
        open.truncate(PULL_REQUESTS_PER_REPOSITORY);
        let repo_name = repo.name_any();
        for pr in &open {
            match self.evaluate(&repo_name, forge.as_ref(), pr).await {
                Ok((decision, wrote)) => {
                    sweep.written += usize::from(wrote);
                    sweep.evaluations.push(decision);
                }
                Err(e) => {
                    debug!(gate = %super::object_key(self.gate), repository = %repo_name, pr = pr.number, error = %e, "gate evaluation failed");
                    if sweep.error.is_none() {
                        sweep.error = Some(e);
                    }
                }
            }
        }
        sweep
    }

    /// Gathers, evaluates and (when the forge does not show it yet) writes back one pull
    /// request. Returns the decision and whether anything was written.
    async fn evaluate(
        &self,
        repo_name: &str,
        forge: &dyn Forge,
        pr: &PullRequest,
    ) -> Result<(crate::api::GateEvaluation, bool), Error> {
        let namespace = self.gate.namespace().unwrap_or_default();
        let preview = gather::preview_state(
            self.previews.iter().filter_map(|g| g.0.as_ref().ok()),
            &namespace,
            repo_name,
            pr.number,
            &pr.head_sha,
        );
        let (snapshot, checks) = gather::snapshot(
            forge,
            pr,
            &self.needs,
            &self.cctx.gates.teams,
            preview,
            &self.context,
        )
        .await?;
        let verdict = self.compiled.evaluate(&snapshot);
        let decision = plan::evaluation(
            repo_name,
            pr.number,
            &pr.head_sha,
            &verdict,
            jiff::Timestamp::now(),
        );
        let remembered = self.written().get(&self.key(repo_name, pr.number)).cloned();
        let report = plan::report(self.gate.spec.mode, &verdict);
        let mut needed = plan::needed(remembered.as_ref(), self.recorded, &decision);
        if needed == plan::Needed::AskTheForge {
            let checks = match checks {
                Some(checks) => checks,
                None => forge.checks_for_sha(&pr.head_sha).await?,
            };
            needed = match plan::already_reported(forge.kind(), &checks, &self.context, &report) {
                // Written just before a crash, or by the previous leader: the table may lag.
                true => plan::Needed::Table,
                false => plan::Needed::Both,
            };
        }
        if needed == plan::Needed::Nothing {
            self.remember(&decision, true);
            return Ok((decision, false));
        }
        let target = writeback::Target {
            forge,
            gate: &self.gate.name_any(),
            context: &self.context,
            number: pr.number,
            head_sha: &pr.head_sha,
        };
        let failed = |e: writeback::WriteError| Error::Forge(e.source.context(&e.call));
        if needed == plan::Needed::Both {
            writeback::status(&target, &report).await.map_err(failed)?;
        }
        self.remember(&decision, false);
        writeback::table(&target, &report, &verdict)
            .await
            .map_err(failed)?;
        self.remember(&decision, true);
        if needed == plan::Needed::Table {
            return Ok((decision, true));
        }
        self.cctx.ctx.metrics.gate_decision(
            &super::object_key(self.gate),
            verdict.result.as_str(),
            self.gate.spec.mode.as_str(),
        );
        Ok((decision, true))
    }
}
