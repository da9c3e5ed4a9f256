//! The Repository controller: follows a Git repository on its forge.
//!
//! Pipeline per reconcile:
//! 1. validate — parse the URLs, compile the globs, check the durations (spec errors stall);
//! 2. dereference — the auth Secret (credentials, CA) and the webhook Secret;
//! 3. sync (I/O) — default branch, branches, open pull requests through the shared forge
//!    budget (conditional requests: an unchanged repository costs only 304s); fork pull
//!    requests under `requireApproval` whose head is not approved yet also read their comments,
//!    the trust label's history and the forge's push record;
//! 4. select (pure, [`select`], [`approval`]) — which branches and pull requests count, and
//!    which head of each fork pull request is approved (per commit: a new head waits);
//! 5. previews — plan (pure, [`previews::plan_previews`]) and apply: create, move or delete
//!    PreviewEnvironments for the selected pull requests (a fork's preview stays at its approved
//!    head, with the newer head marked unapproved); without `spec.preview`, every preview the
//!    Repository generated is deleted, and an event says so;
//! 6. status — bounded lists with totals, times, rate limit; requeue after an adaptive,
//!    jittered interval between `interval` and `maxInterval`.
//!
//! A forge failure is never read as "no pull requests": the reconcile fails with the forge's
//! category, the last good status stays, and the condition says the data is stale. The error
//! status still records `lastHandledReconcileAt` and the last verified webhook
//! (`lastEventTime`, [`status_on_error`]): "did my webhook arrive?" has an answer exactly when
//! the forge is down.

pub mod approval;
pub mod previews;
pub mod select;

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{
    self, BranchStatus, ForkApprovalStatus, Outcome, PullRequestStatus, RateLimitStatus,
    Repository, RepositoryStatus, SyncCost,
};
use crate::error::Error;
use crate::forge::{Actor, Forge, ForgeError, ForgeKind, PullRequest};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use select::{Decision, Selector};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::{debug, info};

/// At most this many branches and pull requests are listed in status (totals are exact).
pub const STATUS_LIST_LIMIT: usize = 100;
/// At most this many fork approval records are kept in status. A fork pull request beyond it
/// has no persisted observation, so on forges without a push record (GitHub) it cannot be
/// approved until it is among the most recently updated again: failing closed.
pub const FORK_APPROVALS_LIMIT: usize = 256;

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<Repository> {
    let mut controller = primary_controller::<Repository>(&cctx.ctx);
    if let Some(rx) = cctx.ctx.triggers.take_repository_receiver() {
        let stream = tokio_stream_from(rx).map(|(ns, name)| ObjectRef::new(&name).within(&ns));
        controller = controller.reconcile_on(stream);
    }
    KindController::new(controller, |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

pub(super) fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What one sync read from the forge, after selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub default_branch: String,
    pub branches: Vec<crate::forge::Branch>,
    pub pull_requests: Vec<PullRequest>,
    /// Approval records of the open fork pull requests under `requireApproval`, most recently
    /// updated first (`status.forkApprovals`).
    pub fork_approvals: Vec<ForkApprovalStatus>,
}

/// What earlier syncs established about fork approvals: the previous records and the heads the
/// Repository's previews deploy (pull request number → `spec.headSha`).
#[derive(Clone, Copy, Debug)]
pub struct KnownApprovals<'a> {
    pub previous: &'a [ForkApprovalStatus],
    pub deployed: &'a BTreeMap<u64, String>,
}

impl<'a> KnownApprovals<'a> {
    fn for_pr(&self, number: u64) -> approval::Known<'a> {
        approval::Known {
            previous: self.previous.iter().find(|p| p.number == number),
            deployed: self.deployed.get(&number).map(String::as_str),
        }
    }
}

async fn reconcile(repo: Arc<Repository>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    if repo.metadata.deletion_timestamp.is_some() {
        // PreviewEnvironments are owned (ownerReferences); the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let namespace = repo.namespace().unwrap_or_default();

    // 1. validate
    let coords = refs::coordinates(&repo.spec, &ctx.config.settings.network)?;
    let selector = Selector::new(&repo.spec.branches, repo.spec.pull_requests.as_ref())
        .map_err(Error::InvalidSpec)?;
    let interval =
        api::parse_duration("interval", &repo.spec.interval).map_err(Error::InvalidSpec)?;
    let max_interval = match &repo.spec.max_interval {
        Some(d) => api::parse_duration("maxInterval", d).map_err(Error::InvalidSpec)?,
        None => interval,
    };
    if let Some(preview) = &repo.spec.preview {
        previews::validate_template(&preview.template).map_err(Error::InvalidSpec)?;
    }

    // 2. dereference
    let (creds, ca) = refs::credentials(ctx, &repo).await?;
    if let Some(webhook) = &repo.spec.webhook {
        refs::credential_secret_key(ctx, &namespace, &webhook.secret_ref.name, &webhook.key)
            .await?;
    }

    let webhook_path = repo.spec.webhook.as_ref().map(|_| {
        format!(
            "{}/{}",
            ctx.config.webhook_base_path,
            repo.spec.provider.as_str()
        )
    });

    if repo.spec.suspend {
        let mut st = repo.status.clone().unwrap_or_default();
        st.common = status::common_status(
            repo.as_ref(),
            &Outcome::progressing("Suspended", "spec.suspend is true: not syncing"),
        );
        // Suspended is not "working": drop the Reconciling condition kstatus would read as busy.
        api::remove_condition(&mut st.common.conditions, api::RECONCILING);
        st.webhook_path = webhook_path;
        status::apply_status(ctx, repo.as_ref(), "repository", &st).await?;
        return Ok(Action::await_change());
    }

    // 3 + 4. sync and select
    let forge = ctx
        .forges
        .client(refs::forge_kind(&repo.spec), &coords, creds, ca)?;
    let last_sync = repo
        .status
        .as_ref()
        .and_then(|s| s.last_sync_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| "never".into());
    // A Repository without `spec.preview` lists its previews only while the store shows it has
    // some (removing `spec.preview` deletes them): idle Repositories cost no LIST per sync.
    let owned = if repo.spec.preview.is_none() && !super::preview::any_owned_by(&cctx, &repo) {
        BTreeMap::new()
    } else {
        previews::owned_previews(ctx, &repo).await?
    };
    // Without spec.preview nothing needs the forge: the generated previews go even while it is
    // down.
    let removal = match &repo.spec.preview {
        None => {
            let nothing = Snapshot {
                default_branch: String::new(),
                branches: Vec::new(),
                pull_requests: Vec::new(),
                fork_approvals: Vec::new(),
            };
            Some(previews_step(ctx, &repo, forge.as_ref(), &nothing, &owned).await?)
        }
        Some(_) => None,
    };
    let deployed: BTreeMap<u64, String> = owned
        .iter()
        .filter_map(|(n, pe)| pe.spec.head_sha.clone().map(|sha| (*n, sha)))
        .collect();
    let known = KnownApprovals {
        previous: repo
            .status
            .as_ref()
            .map(|s| s.fork_approvals.as_slice())
            .unwrap_or_default(),
        deployed: &deployed,
    };
    let (synced, cost) = crate::forge::measure_cost(sync(
        forge.as_ref(),
        &selector,
        known,
        jiff::Timestamp::now(),
    ))
    .await;
    let snapshot = match synced {
        Ok(s) => s,
        Err(source) => return Err(Error::ForgeStale { source, last_sync }),
    };

    // 5. previews
    let preview_outcome = match removal {
        Some(outcome) => outcome,
        None => previews_step(ctx, &repo, forge.as_ref(), &snapshot, &owned).await?,
    };
    let preview_summary = preview_outcome.summary(repo.spec.preview.is_some());

    // 6. status
    let now = jiff::Timestamp::now();
    let key = (namespace.clone(), repo.name_any());
    let previous = repo.status.clone().unwrap_or_default();
    let last_event = last_event(ctx, &repo);
    let event_since_sync = match (last_event, previous.last_sync_time.as_ref()) {
        (Some(event), Some(sync)) => event > sync.0,
        (Some(_), None) => true,
        _ => false,
    };
    let changed = snapshot_changed(&previous, &snapshot) || event_since_sync;
    let previous_interval = match (
        previous.last_sync_time.as_ref(),
        previous.next_sync_time.as_ref(),
    ) {
        (Some(last), Some(next)) => next.0.duration_since(last.0).try_into().ok(),
        _ => None,
    };
    let next = select::jitter(
        select::next_poll_interval(previous_interval, changed, interval, max_interval),
        rand::random::<f64>(),
    );

    let message = match (forge.kind(), &preview_summary) {
        (ForgeKind::Git, _) => format!(
            "{} branches tracked (plain git: branches only)",
            snapshot.branches.len()
        ),
        (_, Some(p)) => format!(
            "{} branches tracked, {} pull requests selected, {}",
            snapshot.branches.len(),
            snapshot.pull_requests.len(),
            p
        ),
        _ => format!(
            "{} branches tracked, {} pull requests selected",
            snapshot.branches.len(),
            snapshot.pull_requests.len()
        ),
    };
    let mut new_status = status_from_snapshot(&snapshot);
    new_status.common = status::common_status(repo.as_ref(), &Outcome::ready("Synced", message));
    new_status.last_sync_time = Some(Time(now));
    new_status.next_sync_time = Some(Time(
        now + jiff::SignedDuration::try_from(next).unwrap_or_default(),
    ));
    new_status.last_event_time = last_event.map(Time).or(previous.last_event_time.clone());
    new_status.rate_limit = forge.rate_limit().map(|r| RateLimitStatus {
        remaining: r.remaining,
        limit: r.limit,
        reset_time: Some(Time(r.reset)),
    });
    new_status.last_sync_cost = Some(SyncCost {
        requests: cost.responses,
        not_modified: cost.not_modified,
    });
    new_status.webhook_path = webhook_path;
    new_status.previews_over_cap = preview_outcome.over_cap;
    if changed {
        info!(repository = %key.1, namespace = %key.0, prs = snapshot.pull_requests.len(), "repository changed");
    } else {
        debug!(repository = %key.1, namespace = %key.0, "repository unchanged");
    }
    // `updatedAt` moves on every review and comment, which webhooks already tell the gates.
    let gate_facts = |prs: &[PullRequestStatus]| -> Vec<(u64, String, String, Vec<String>, bool)> {
        prs.iter()
            .map(|p| {
                (
                    p.number,
                    p.head_sha.clone(),
                    p.title.clone(),
                    p.labels.clone(),
                    p.draft,
                )
            })
            .collect()
    };
    let pull_requests_changed =
        gate_facts(&previous.pull_requests) != gate_facts(&new_status.pull_requests);
    status::apply_status(ctx, repo.as_ref(), "repository", &new_status).await?;
    if pull_requests_changed {
        // A new pull request, head, title, label or draft state seen by polling: the gates of
        // this Repository re-evaluate (webhook deliveries tell them directly).
        ctx.triggers.gates(crate::context::GateHint {
            namespace: key.0.clone(),
            repository: key.1.clone(),
        });
    }
    Ok(Action::requeue(next))
}

/// Step 5: plans and applies this Repository's previews; when `spec.preview` was removed, an
/// event names the previews being deleted.
async fn previews_step(
    ctx: &crate::context::Context,
    repo: &Repository,
    forge: &dyn Forge,
    snapshot: &Snapshot,
    owned: &BTreeMap<u64, api::PreviewEnvironment>,
) -> Result<previews::PreviewOutcome, Error> {
    let actions = previews::plan_previews(
        repo,
        snapshot,
        owned,
        ctx.config.settings.previews.default_max_previews,
        jiff::Timestamp::now(),
    );
    let outcome = previews::apply_plan(ctx, repo, forge, &actions, owned).await?;
    let removed: Vec<&str> = outcome
        .deleted
        .iter()
        .filter(|(_, r)| *r == previews::DeleteReason::PreviewRemoved)
        .map(|(name, _)| name.as_str())
        .collect();
    if !removed.is_empty() {
        super::publish(
            ctx,
            repo,
            kube::runtime::events::EventType::Normal,
            "PreviewsRemoved",
            "Sync",
            &format!(
                "spec.preview was removed: deleting the previews it generated ({})",
                removed.join(", ")
            ),
        )
        .await;
    }
    Ok(outcome)
}

/// The last verified webhook delivery for this Repository: received by this replica (leader),
/// or forwarded by a standby through the [`crate::context::WEBHOOK_RECEIVED_AT`] annotation.
pub fn last_event(ctx: &crate::context::Context, repo: &Repository) -> Option<jiff::Timestamp> {
    let key = (repo.namespace().unwrap_or_default(), repo.name_any());
    let forwarded = repo
        .annotations()
        .get(crate::context::WEBHOOK_RECEIVED_AT)
        .and_then(|v| v.parse::<jiff::Timestamp>().ok());
    ctx.triggers.last_event(&key).max(forwarded)
}

/// Status fields a failed reconcile still records besides its conditions: `lastEventTime`,
/// when a webhook arrived after the stored one (the sync it asked for may be what failed).
pub fn status_on_error(
    ctx: &crate::context::Context,
    repo: &Repository,
) -> serde_json::Map<String, serde_json::Value> {
    let stored = repo
        .status
        .as_ref()
        .and_then(|s| s.last_event_time.as_ref())
        .map(|t| t.0);
    let mut fields = serde_json::Map::new();
    if let Some(at) = last_event(ctx, repo).filter(|at| Some(*at) > stored) {
        fields.insert("lastEventTime".into(), serde_json::json!(Time(at)));
    }
    fields
}

/// Reads the forge and applies the selection. Any forge error aborts the whole sync: a partial
/// read must never be mistaken for "these are all the pull requests". `now` becomes the
/// observation time of fork heads seen for the first time.
pub async fn sync(
    forge: &dyn Forge,
    selector: &Selector,
    known: KnownApprovals<'_>,
    now: jiff::Timestamp,
) -> Result<Snapshot, ForgeError> {
    let default_branch = forge.default_branch().await?;
    let branches = selector.branches(forge.list_branches().await?);
    let mut pull_requests = Vec::new();
    let mut fork_approvals = Vec::new();
    if forge.kind() != ForgeKind::Git {
        let sel = selector.pull_request_selector();
        let mut trust = HashMap::new();
        for pr in forge.list_open_pull_requests().await? {
            match selector.decide(&pr) {
                Decision::Selected => pull_requests.push(pr),
                Decision::NeedsApproval => {
                    let rec =
                        fork_approval(forge, &pr, &sel, known.for_pr(pr.number), now, &mut trust)
                            .await?;
                    debug!(pr = pr.number, state = ?rec.state, approved = ?rec.approved_sha, "fork approval");
                    let selected = approval::deploy_target(&rec).is_some();
                    fork_approvals.push((pr.updated_at, rec));
                    if selected {
                        pull_requests.push(pr);
                    }
                }
                Decision::Rejected(why) => {
                    debug!(pr = pr.number, ?why, "pull request not selected")
                }
            }
        }
    }
    pull_requests.sort_by(|a, b| {
        b.updated_at
            .cmp(&a.updated_at)
            .then(a.number.cmp(&b.number))
    });
    fork_approvals.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.number.cmp(&b.1.number)));
    Ok(Snapshot {
        default_branch,
        branches,
        pull_requests,
        fork_approvals: fork_approvals.into_iter().map(|(_, r)| r).collect(),
    })
}

/// A forge answer that may be missing without harm: `NotFound`/`Unsupported` read as "no
/// record", which only ever makes an approval harder to get.
fn optional<T>(r: Result<T, ForgeError>) -> Result<Option<T>, ForgeError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ForgeError::NotFound { .. } | ForgeError::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The approval record of one fork pull request: approved before, approved now by the newest
/// trusted attempt that followed the head, or waiting. `trust` caches `is_trusted` answers for
/// the sync.
async fn fork_approval(
    forge: &dyn Forge,
    pr: &PullRequest,
    sel: &api::PullRequestSelector,
    known: approval::Known<'_>,
    now: jiff::Timestamp,
    trust: &mut HashMap<Actor, bool>,
) -> Result<ForkApprovalStatus, ForgeError> {
    let head = pr.head_sha.as_str();
    if known.approved_before(head) {
        // Nothing to read: the record keeps the approval of this very commit.
        let times = known.times(head, None);
        return Ok(approval::record(
            pr.number,
            head,
            &known,
            &times,
            now,
            None,
            vec![],
        ));
    }
    let pushed = optional(forge.head_pushed_at(pr.number, head).await)?.flatten();
    let times = known.times(head, pushed);
    let comments = forge.list_comments(pr.number).await?;
    let labelled = pr.labels.contains(&sel.trust_label);
    let events = if labelled {
        optional(forge.list_label_events(pr.number).await)?.unwrap_or_default()
    } else {
        Vec::new()
    };
    let attempts = approval::classify(
        head,
        &times,
        &comments,
        labelled.then_some(approval::TrustLabel {
            name: &sel.trust_label,
            events: &events,
        }),
    );
    let mut refused = Vec::new();
    let mut approved = None;
    let mut lookups = 0;
    for attempt in &attempts.candidates {
        let trusted = match trust.get(&attempt.actor) {
            Some(t) => *t,
            None if lookups >= approval::MAX_TRUST_LOOKUPS => {
                refused.push(format!(
                    "{}: not checked (more than {} accounts tried to approve)",
                    attempt.what,
                    approval::MAX_TRUST_LOOKUPS
                ));
                continue;
            }
            None => {
                lookups += 1;
                let t = forge
                    .is_trusted(&attempt.actor, &sel.trusted_users, &sel.trusted_teams)
                    .await?;
                trust.insert(attempt.actor.clone(), t);
                t
            }
        };
        if trusted {
            approved = Some(attempt);
            break;
        }
        refused.push(format!("{}: not a trusted user", attempt.what));
    }
    refused.extend(attempts.ignored);
    Ok(approval::record(
        pr.number, head, &known, &times, now, approved, refused,
    ))
}

fn status_from_snapshot(snapshot: &Snapshot) -> RepositoryStatus {
    RepositoryStatus {
        default_branch: Some(snapshot.default_branch.clone()),
        branches: snapshot
            .branches
            .iter()
            .take(STATUS_LIST_LIMIT)
            .map(|b| BranchStatus {
                name: b.name.clone(),
                sha: b.sha.clone(),
            })
            .collect(),
        branch_count: u32::try_from(snapshot.branches.len()).unwrap_or(u32::MAX),
        pull_requests: snapshot
            .pull_requests
            .iter()
            .take(STATUS_LIST_LIMIT)
            .map(pr_status)
            .collect(),
        pull_request_count: u32::try_from(snapshot.pull_requests.len()).unwrap_or(u32::MAX),
        fork_approvals: snapshot
            .fork_approvals
            .iter()
            .take(FORK_APPROVALS_LIMIT)
            .cloned()
            .collect(),
        ..Default::default()
    }
}

fn pr_status(pr: &PullRequest) -> PullRequestStatus {
    PullRequestStatus {
        number: pr.number,
        title: pr.title.clone(),
        author: pr.author.clone(),
        head_sha: pr.head_sha.clone(),
        head_ref: pr.head_ref.clone(),
        base_ref: pr.base_ref.clone(),
        labels: pr.labels.clone(),
        draft: pr.draft,
        fork: pr.fork,
        url: (!pr.url.is_empty()).then(|| pr.url.clone()),
        updated_at: Some(pr.updated_at.to_string()),
    }
}

/// Whether the forge data differs from what status shows (drives adaptive polling).
fn snapshot_changed(previous: &RepositoryStatus, snapshot: &Snapshot) -> bool {
    let now = status_from_snapshot(snapshot);
    previous.default_branch != now.default_branch
        || previous.branches != now.branches
        || previous.branch_count != now.branch_count
        || previous.pull_requests != now.pull_requests
        || previous.pull_request_count != now.pull_request_count
        || previous.fork_approvals != now.fork_approvals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BranchSelector, ForkApprovalState, PullRequestSelector};
    use crate::forge::fake::FakeForge;
    use crate::forge::{Branch, Comment, CommentId};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn selector(yaml: &str) -> Selector {
        let sel: PullRequestSelector = serde_yaml::from_str(yaml).unwrap();
        Selector::new(&BranchSelector::default(), Some(&sel)).unwrap()
    }

    fn no_history() -> (Vec<ForkApprovalStatus>, BTreeMap<u64, String>) {
        (Vec::new(), BTreeMap::new())
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000_000).unwrap()
    }

    #[tokio::test]
    async fn sync_reads_the_forge_and_selects() {
        let forge = FakeForge::github();
        forge.state().branches = vec![
            Branch {
                name: "main".into(),
                sha: A.into(),
            },
            Branch {
                name: "feature-1".into(),
                sha: B.into(),
            },
        ];
        forge.open_pull_request(1, A);
        forge.open_pull_request(2, B);
        forge.open_pull_request(3, B);
        {
            let mut state = forge.state();
            state.pull_requests.get_mut(&1).unwrap().labels = vec!["preview".into()];
            state.pull_requests.get_mut(&2).unwrap().labels = vec!["preview".into()];
            state.pull_requests.get_mut(&2).unwrap().updated_at =
                jiff::Timestamp::from_second(50).unwrap();
            // Not labelled: not selected.
            state.pull_requests.get_mut(&3).unwrap().labels = vec![];
        }
        let (previous, deployed) = no_history();
        let known = KnownApprovals {
            previous: &previous,
            deployed: &deployed,
        };
        let snapshot = sync(&forge, &selector("labels: [preview]"), known, now())
            .await
            .unwrap();
        assert_eq!(snapshot.default_branch, "main");
        let names: Vec<&str> = snapshot.branches.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["feature-1", "main"], "sorted by name");
        let numbers: Vec<u64> = snapshot.pull_requests.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [2, 1], "most recently updated first");
        assert!(snapshot.fork_approvals.is_empty());
        // Three reads, nothing else: a fork-free repository costs no comment reads.
        assert_eq!(forge.state().calls.len(), 3, "{:?}", forge.state().calls);
    }

    #[tokio::test]
    async fn a_forge_error_fails_the_sync_instead_of_reading_as_no_pull_requests() {
        let forge = FakeForge::github();
        forge.open_pull_request(1, A);
        let (previous, deployed) = no_history();
        for op in ["default_branch", "list_branches", "list_open_pull_requests"] {
            forge.fail(op, || ForgeError::Transient {
                message: "503".into(),
            });
            let known = KnownApprovals {
                previous: &previous,
                deployed: &deployed,
            };
            let got = sync(&forge, &selector("{}"), known, now()).await;
            assert!(
                matches!(got, Err(ForgeError::Transient { .. })),
                "{op}: {got:?}"
            );
            forge.heal(op);
        }
    }

    #[tokio::test]
    async fn a_fork_is_selected_only_for_a_head_a_trusted_user_approved_after_it_was_seen() {
        let forge = FakeForge::github();
        forge.open_pull_request(4, B);
        forge.state().pull_requests.get_mut(&4).unwrap().fork = true;
        let sel = selector("forks: requireApproval\ntrustedUsers: [maintainer]");
        let (previous, deployed) = no_history();
        let known = KnownApprovals {
            previous: &previous,
            deployed: &deployed,
        };
        let first = sync(&forge, &sel, known, now()).await.unwrap();
        assert!(first.pull_requests.is_empty(), "waiting for approval");
        assert_eq!(
            first.fork_approvals[0].state,
            ForkApprovalState::WaitingForApproval
        );

        // A trusted maintainer approves after the head was observed; an untrusted user's
        // approval is recorded as ignored.
        let later = now() + jiff::SignedDuration::from_secs(60);
        forge.state().comments.insert(
            4,
            vec![
                Comment {
                    id: CommentId(1),
                    author: "mallory".into(),
                    author_id: Some(66),
                    body: "/ok-to-preview".into(),
                    created_at: later,
                },
                Comment {
                    id: CommentId(2),
                    author: "maintainer".into(),
                    author_id: Some(7),
                    body: "/ok-to-preview".into(),
                    created_at: later,
                },
            ],
        );
        let known = KnownApprovals {
            previous: &first.fork_approvals,
            deployed: &deployed,
        };
        let second = sync(&forge, &sel, known, later).await.unwrap();
        assert_eq!(second.pull_requests.len(), 1);
        let rec = &second.fork_approvals[0];
        assert_eq!(rec.state, ForkApprovalState::Approved);
        assert_eq!(rec.approved_sha.as_deref(), Some(B));

        // Approved before: nothing more is read for that head.
        let calls = forge.state().calls.len();
        let known = KnownApprovals {
            previous: &second.fork_approvals,
            deployed: &deployed,
        };
        let third = sync(&forge, &sel, known, later).await.unwrap();
        assert_eq!(third.pull_requests.len(), 1);
        assert_eq!(
            forge.state().calls.len() - calls,
            3,
            "only the three list reads: {:?}",
            &forge.state().calls[calls..]
        );
    }
}
