//! Gathering one pull request's [`PrSnapshot`] from the forge — the gate's only reads.
//!
//! Every read goes through the credential's shared budget, so a re-evaluation of an unchanged
//! pull request costs only conditional requests (`304`, free on GitHub's quota): after a review
//! event only the reviews are paid for. What a gate does not use is not read ([`Needs`]).
//! Team membership is asked only for the logins that matter (the reviewers and the author) and
//! cached for [`TEAM_TTL`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::{PolicyGateSpec, PreviewEnvironment};
use crate::forge::{Actor, CheckResult, Forge, ForgeError, ForgeKind, PullRequest};
use crate::gate::{PrSnapshot, PreviewState, SnapshotFile};

/// How long a team membership answer is reused.
pub const TEAM_TTL: Duration = Duration::from_secs(300);
/// GitHub lists at most this many files of a pull request.
const GITHUB_MAX_FILES: usize = 3000;
/// GitHub lists at most this many commits of a pull request.
const GITHUB_MAX_COMMITS: usize = 250;

/// Which parts of a snapshot a gate reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub files: bool,
    /// The head's checks (a `checks` rule or CEL). Without it, checks are read only to see
    /// whether the forge already shows a changed verdict.
    pub checks: bool,
    pub reviews: bool,
    pub commits: bool,
    /// Teams named by `approvals`/`disapproval` rules.
    pub teams: BTreeSet<String>,
    pub preview: bool,
}

impl Needs {
    /// What the rules of `spec` read. A CEL expression (a `cel` rule or an `if`) may read
    /// anything, so it needs everything.
    pub fn of(spec: &PolicyGateSpec) -> Needs {
        let mut n = Needs::default();
        for r in &spec.rules {
            let any = r.cel.is_some() || r.if_.is_some();
            n.files |= any
                || r.changed_files.is_some()
                || r.modified_lines.is_some()
                || r.max_files.is_some()
                || r.secret_scan.is_some();
            n.reviews |= any || r.approvals.is_some() || r.disapproval.is_some();
            n.commits |= any || r.signed_commits.is_some();
            n.checks |= any || r.checks.is_some();
            n.preview |= any || r.preview_healthy.is_some();
            if let Some(a) = &r.approvals {
                n.teams.extend(a.teams.iter().cloned());
            }
            if let Some(d) = &r.disapproval {
                n.teams.extend(d.teams.iter().cloned());
            }
        }
        n
    }
}

/// (repository, team, login lower-cased) → (member, when asked).
type Memberships = HashMap<(String, String, String), (bool, Instant)>;

/// Membership answers per (repository, team, login), shared by every gate.
#[derive(Debug, Default)]
pub struct TeamCache {
    entries: Mutex<Memberships>,
}

impl TeamCache {
    async fn is_member(
        &self,
        forge: &dyn Forge,
        team: &str,
        login: &str,
    ) -> Result<bool, ForgeError> {
        let key = (
            forge.coordinates().canonical_url(),
            team.to_owned(),
            login.to_lowercase(),
        );
        let now = Instant::now();
        if let Some((member, at)) = self.lock().get(&key).copied()
            && now.duration_since(at) < TEAM_TTL
        {
            return Ok(member);
        }
        let member = forge
            .is_trusted(&Actor::login(login), &[], &[team.to_owned()])
            .await?;
        let mut entries = self.lock();
        entries.retain(|_, (_, at)| now.duration_since(*at) < TEAM_TTL);
        entries.insert(key, (member, now));
        Ok(member)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memberships> {
        self.entries.lock().expect("team cache lock")
    }
}

/// The preview of pull request `number` of `repository`, as its controller last reported it.
pub fn preview_state<'a>(
    previews: impl IntoIterator<Item = &'a PreviewEnvironment>,
    namespace: &str,
    repository: &str,
    number: u64,
    head_sha: &str,
) -> Option<PreviewState> {
    use kube::ResourceExt;
    let pe = previews.into_iter().find(|pe| {
        pe.namespace().as_deref() == Some(namespace)
            && pe.spec.repository_ref.name == repository
            && pe.spec.pull_request == Some(number)
    })?;
    let status = pe.status.clone().unwrap_or_default();
    let conditions = &status.common.conditions;
    let ready_condition = crate::api::find_condition(conditions, crate::api::READY);
    let on_head = status.deployed_sha.as_deref() == Some(head_sha);
    let healthy_condition = crate::api::find_condition(conditions, crate::api::HEALTHY);
    // A HealthCheck without a verdict yet (`template.healthCheck`): wait for it, like a preview
    // that is not ready, instead of passing as "no health checks".
    let health_pending = healthy_condition
        .is_some_and(|c| c.status == "Unknown" && c.reason == "HealthCheckPending");
    let ready =
        crate::api::is_condition_true(conditions, crate::api::READY) && on_head && !health_pending;
    let healthy = healthy_condition
        .filter(|c| c.status != "Unknown")
        .map(|c| c.status == "True");
    let message = if ready {
        None
    } else if health_pending {
        Some("its health check has no verdict yet".into())
    } else if !on_head && ready_condition.is_some_and(|c| c.status == "True") {
        Some(format!(
            "the preview runs {}, not the head",
            status
                .deployed_sha
                .as_deref()
                .map(short)
                .unwrap_or("nothing")
        ))
    } else {
        ready_condition.map(|c| c.reason.clone())
    };
    Some(PreviewState {
        ready,
        healthy,
        message,
    })
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Reads what `needs` asks for about `pr`. Returns the snapshot (without `own_context` among
/// its checks: a gate never decides on itself) and, when read, every check of the head as the
/// forge lists it (our own status included, to see what is already written).
pub async fn snapshot(
    forge: &dyn Forge,
    pr: &PullRequest,
    needs: &Needs,
    teams: &TeamCache,
    preview: Option<PreviewState>,
    own_context: &str,
) -> Result<(PrSnapshot, Option<Vec<CheckResult>>), ForgeError> {
    let mut snap = PrSnapshot::from_pull_request(pr, pr.body.clone());
    let github = forge.kind() == ForgeKind::Github;
    if needs.files {
        let files = forge.list_changed_files(pr.number).await?;
        snap.files_truncated = github && files.len() >= GITHUB_MAX_FILES;
        snap.files = files
            .iter()
            .map(|f| SnapshotFile::from_changed_file(f, f.patch.as_deref()))
            .collect();
    }
    if needs.reviews {
        snap.reviews = forge.list_reviews(pr.number).await?;
        // Reviews without a commit (GitLab approvals) count for the head only when given after
        // its push, by the forge's clock.
        if snap.reviews.iter().any(|r| r.commit_sha.is_none()) {
            snap.head_pushed_at = forge.head_pushed_at(pr.number, &pr.head_sha).await?;
        }
    }
    if needs.commits {
        snap.commits = forge.list_commits(pr.number).await?;
        snap.commits_truncated = github && snap.commits.len() >= GITHUB_MAX_COMMITS;
    }
    let checks = match needs.checks {
        true => Some(forge.checks_for_sha(&pr.head_sha).await?),
        false => None,
    };
    snap.checks = checks
        .iter()
        .flatten()
        .filter(|c| c.name != own_context)
        .cloned()
        .collect();
    snap.preview = preview;
    if !needs.teams.is_empty() {
        let logins: BTreeSet<&str> = snap
            .reviews
            .iter()
            .map(|r| r.user.as_str())
            .chain(std::iter::once(pr.author.as_str()))
            .filter(|l| !l.is_empty())
            .collect();
        let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for team in &needs.teams {
            let entry = members.entry(team.clone()).or_default();
            for login in &logins {
                if teams.is_member(forge, team, login).await? {
                    entry.insert((*login).to_owned());
                }
            }
        }
        snap.teams = members;
    }
    Ok((snap, checks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApprovalsRule, GateRule, MaxCount};

    fn rule(name: &str) -> GateRule {
        GateRule {
            name: name.into(),
            ..GateRule::default()
        }
    }

    #[test]
    fn a_gate_reads_only_what_its_rules_use() {
        let mut spec: PolicyGateSpec = serde_json::from_value(serde_json::json!({
            "repositoryRef": {"name": "web"},
            "rules": [{"name": "t", "title": {"matches": "^feat"}}]
        }))
        .unwrap();
        assert_eq!(Needs::of(&spec), Needs::default(), "metadata only");
        spec.rules.push(GateRule {
            max_files: Some(MaxCount { max: 3 }),
            ..rule("m")
        });
        spec.rules.push(GateRule {
            approvals: Some(ApprovalsRule {
                count: 1,
                users: vec![],
                teams: vec!["acme/reviewers".into()],
                allow_author: false,
                invalidate_on_push: true,
            }),
            ..rule("a")
        });
        let n = Needs::of(&spec);
        assert!(n.files && n.reviews && !n.commits && !n.checks && !n.preview);
        assert_eq!(n.teams, BTreeSet::from(["acme/reviewers".to_string()]));
        spec.rules.push(GateRule {
            if_: Some("pr.draft == false".into()),
            ..GateRule {
                max_files: Some(MaxCount { max: 9 }),
                ..rule("scoped")
            }
        });
        let n = Needs::of(&spec);
        assert!(
            n.files && n.reviews && n.commits && n.checks && n.preview,
            "CEL may read anything"
        );
    }

    fn preview(ready: &str, healthy: Option<&str>, deployed: &str) -> PreviewEnvironment {
        let mut conditions = vec![
            serde_json::json!({"type": "Ready", "status": ready, "reason": "Deployed", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        ];
        if let Some(h) = healthy {
            conditions.push(serde_json::json!({"type": "Healthy", "status": h, "reason": "WorkloadsReady", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}));
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": "web-pr-7", "namespace": "team"},
            "spec": {"repositoryRef": {"name": "web"}, "pullRequest": 7, "template": {"path": "deploy"}},
            "status": {"conditions": conditions, "deployedSha": deployed},
        }))
        .unwrap()
    }

    #[test]
    fn the_preview_counts_only_when_ready_at_the_head() {
        let ready = preview("True", Some("True"), "abc");
        let got = preview_state([&ready], "team", "web", 7, "abc").unwrap();
        assert!(got.ready && got.healthy == Some(true) && got.message.is_none());
        // Ready, but at an older head: not ready for this head, and it says why.
        let old = preview_state([&ready], "team", "web", 7, "def").unwrap();
        assert!(!old.ready);
        assert_eq!(
            old.message.as_deref(),
            Some("the preview runs abc, not the head")
        );
        // Not ready: the condition's reason; unhealthy workloads are reported as such.
        let sick = preview("False", Some("False"), "abc");
        let got = preview_state([&sick], "team", "web", 7, "abc").unwrap();
        assert!(!got.ready && got.healthy == Some(false));
        assert_eq!(got.message.as_deref(), Some("Deployed"));
        // Another pull request, repository or namespace: no preview at all.
        assert!(preview_state([&ready], "team", "web", 8, "abc").is_none());
        assert!(preview_state([&ready], "team", "api", 7, "abc").is_none());
        assert!(preview_state([&ready], "other", "web", 7, "abc").is_none());
    }

    #[tokio::test]
    async fn snapshots_leave_out_the_gates_own_check_and_ask_teams_once() {
        use crate::forge::fake::FakeForge;
        let forge = FakeForge::github();
        let pr = forge.open_pull_request(7, "abc");
        let check = |name: &str| CheckResult {
            name: name.into(),
            state: crate::forge::CheckState::Failure,
            source: crate::forge::CheckSource::Status,
            url: None,
            updated_at: None,
            description: Some("1/2 rules passed".into()),
        };
        forge.state().checks.insert(
            "abc".into(),
            vec![check("pullwarden/gate/g"), check("ci/build")],
        );
        let needs = Needs {
            reviews: true,
            checks: true,
            teams: BTreeSet::from(["acme/reviewers".to_string()]),
            ..Needs::default()
        };
        let cache = TeamCache::default();
        for _ in 0..2 {
            let (snap, all) = snapshot(&forge, &pr, &needs, &cache, None, "pullwarden/gate/g")
                .await
                .unwrap();
            assert!(snap.teams["acme/reviewers"].is_empty());
            let names = |c: &[CheckResult]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
            assert_eq!(
                names(&snap.checks),
                vec!["ci/build"],
                "the gate never decides on itself"
            );
            assert_eq!(
                names(&all.unwrap()),
                vec!["pullwarden/gate/g", "ci/build"],
                "but sees what it wrote"
            );
        }
        assert_eq!(forge.state().count("is_trusted"), 1, "membership cached");
        assert_eq!(forge.state().count("list_changed_files"), 0, "not needed");
    }
}
