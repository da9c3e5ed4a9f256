//! Pure selection logic of the Repository controller: which branches are tracked, which pull
//! requests are selected, and when to poll next. No I/O; tested from fixtures.

use crate::api::{BranchSelector, ForkPolicy, PullRequestSelector};
use crate::forge::{Branch, PullRequest};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::time::Duration;

/// A compiled include/exclude glob pair (exclude wins).
#[derive(Clone, Debug)]
pub struct GlobFilter {
    include: GlobSet,
    exclude: GlobSet,
    include_all: bool,
}

fn compile(field: &str, patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        // GitHub branch-protection semantics: `*` stops at `/`, `**` crosses it.
        let glob: Glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{field}: invalid glob {p:?}: {e}"))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| format!("{field}: {e}"))
}

impl GlobFilter {
    /// `include` empty means "everything".
    pub fn new(field: &str, include: &[String], exclude: &[String]) -> Result<Self, String> {
        Ok(GlobFilter {
            include: compile(&format!("{field}.include"), include)?,
            exclude: compile(&format!("{field}.exclude"), exclude)?,
            include_all: include.is_empty(),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        (self.include_all || self.include.is_match(name)) && !self.exclude.is_match(name)
    }
}

/// Compiled selection rules of a Repository; building it validates every glob.
#[derive(Clone, Debug)]
pub struct Selector {
    branches: GlobFilter,
    pr: Option<PullRequestSelector>,
    target_branches: GlobFilter,
}

/// Why a pull request is not selected (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    Draft,
    MissingLabel(String),
    ExcludedLabel(String),
    TargetBranch(String),
    Author(String),
    ForkDenied,
    ForkNotApproved,
}

/// The selection decision for one pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Selected,
    /// A fork under `requireApproval`: selected only for a head a trusted user approved (the
    /// caller checks with [`super::approval`], since that needs the forge).
    NeedsApproval,
    Rejected(Rejection),
}

impl Selector {
    pub fn new(
        branches: &BranchSelector,
        pr: Option<&PullRequestSelector>,
    ) -> Result<Self, String> {
        let empty = Vec::new();
        Ok(Selector {
            branches: GlobFilter::new("branches", &branches.include, &branches.exclude)?,
            target_branches: GlobFilter::new(
                "pullRequests.targetBranches",
                pr.map(|p| &p.target_branches).unwrap_or(&empty),
                &[],
            )?,
            pr: pr.cloned(),
        })
    }

    /// Tracked branches, sorted by name.
    pub fn branches(&self, branches: Vec<Branch>) -> Vec<Branch> {
        let mut out: Vec<Branch> = branches
            .into_iter()
            .filter(|b| self.branches.matches(&b.name))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether a pull request is selected, before fork approval comments are considered.
    pub fn decide(&self, pr: &PullRequest) -> Decision {
        let default = PullRequestSelector::default();
        let sel = self.pr.as_ref().unwrap_or(&default);
        if pr.draft && !sel.include_drafts {
            return Decision::Rejected(Rejection::Draft);
        }
        if let Some(missing) = sel.labels.iter().find(|l| !pr.labels.contains(l)) {
            return Decision::Rejected(Rejection::MissingLabel(missing.clone()));
        }
        if let Some(excluded) = sel.not_labels.iter().find(|l| pr.labels.contains(l)) {
            return Decision::Rejected(Rejection::ExcludedLabel(excluded.clone()));
        }
        if !self.target_branches.matches(&pr.base_ref) {
            return Decision::Rejected(Rejection::TargetBranch(pr.base_ref.clone()));
        }
        if !sel.authors.is_empty()
            && !sel
                .authors
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&pr.author))
        {
            return Decision::Rejected(Rejection::Author(pr.author.clone()));
        }
        if pr.fork {
            match sel.forks {
                ForkPolicy::Allow => {}
                ForkPolicy::Deny => return Decision::Rejected(Rejection::ForkDenied),
                // Even the trust label counts only for the head it was added on, by a trusted
                // user: the approval step reads when and by whom.
                ForkPolicy::RequireApproval => return Decision::NeedsApproval,
            }
        }
        Decision::Selected
    }

    pub fn pull_request_selector(&self) -> PullRequestSelector {
        self.pr.clone().unwrap_or_default()
    }
}

/// Adaptive polling: back to `interval` after a change, otherwise double the previous interval
/// up to `max_interval`. The caller adds jitter.
pub fn next_poll_interval(
    previous: Option<Duration>,
    changed: bool,
    interval: Duration,
    max_interval: Duration,
) -> Duration {
    let max_interval = max_interval.max(interval);
    if changed {
        return interval;
    }
    match previous {
        None => interval,
        Some(prev) => prev.saturating_mul(2).clamp(interval, max_interval),
    }
}

/// ±10% jitter so that many repositories created together don't poll in lockstep.
pub fn jitter(d: Duration, unit_random: f64) -> Duration {
    d.mul_f64(0.9 + 0.2 * unit_random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::PullRequestState;

    fn pr(number: u64) -> PullRequest {
        PullRequest {
            body: String::new(),
            number,
            title: "t".into(),
            author: "octocat".into(),
            head_sha: "a".repeat(40),
            head_ref: "feature/x".into(),
            base_ref: "main".into(),
            labels: vec!["preview".into()],
            draft: false,
            fork: false,
            url: String::new(),
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            state: PullRequestState::Open,
        }
    }

    fn selector(yaml: &str) -> Selector {
        let sel: PullRequestSelector = serde_yaml::from_str(yaml).unwrap();
        Selector::new(&BranchSelector::default(), Some(&sel)).unwrap()
    }

    #[test]
    fn labels_drafts_targets_and_authors() {
        let s = selector(
            "labels: [preview]\nnotLabels: [wip]\ntargetBranches: ['release/*', main]\nauthors: [OctoCat]",
        );
        assert_eq!(s.decide(&pr(1)), Decision::Selected);
        let mut p = pr(2);
        p.labels.clear();
        assert_eq!(
            s.decide(&p),
            Decision::Rejected(Rejection::MissingLabel("preview".into()))
        );
        let mut p = pr(3);
        p.labels.push("wip".into());
        assert_eq!(
            s.decide(&p),
            Decision::Rejected(Rejection::ExcludedLabel("wip".into()))
        );
        let mut p = pr(4);
        p.base_ref = "release/1.0".into();
        assert_eq!(s.decide(&p), Decision::Selected);
        p.base_ref = "release/1.0/hotfix".into();
        assert_eq!(
            s.decide(&p),
            Decision::Rejected(Rejection::TargetBranch("release/1.0/hotfix".into()))
        );
        let mut p = pr(5);
        p.draft = true;
        assert_eq!(s.decide(&p), Decision::Rejected(Rejection::Draft));
        let mut p = pr(6);
        p.author = "mallory".into();
        assert_eq!(
            s.decide(&p),
            Decision::Rejected(Rejection::Author("mallory".into()))
        );
    }

    #[test]
    fn fork_policies() {
        let mut p = pr(7);
        p.fork = true;
        assert_eq!(
            selector("{}").decide(&p),
            Decision::Rejected(Rejection::ForkDenied)
        );
        assert_eq!(selector("forks: allow").decide(&p), Decision::Selected);
        let approval = selector("forks: requireApproval\ntrustedUsers: [maintainer]");
        assert_eq!(approval.decide(&p), Decision::NeedsApproval);
        // The trust label alone no longer selects: who added it, and when, is checked.
        p.labels.push("ok-to-preview".into());
        assert_eq!(approval.decide(&p), Decision::NeedsApproval);
        // Other rules still come first.
        p.draft = true;
        assert_eq!(approval.decide(&p), Decision::Rejected(Rejection::Draft));
    }

    #[test]
    fn branch_globs_follow_github_semantics() {
        let b = |n: &str| Branch {
            name: n.into(),
            sha: "s".into(),
        };
        let all = Selector::new(&BranchSelector::default(), None).unwrap();
        assert_eq!(
            all.branches(vec![b("z"), b("feature/a"), b("main")]).len(),
            3
        );
        let sel = BranchSelector {
            include: vec!["release/*".into(), "main".into()],
            exclude: vec!["release/old".into()],
        };
        let s = Selector::new(&sel, None).unwrap();
        let names: Vec<String> = s
            .branches(vec![
                b("main"),
                b("release/1"),
                b("release/old"),
                b("release/1/x"),
                b("dev"),
            ])
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, vec!["main", "release/1"]);
    }

    #[test]
    fn invalid_globs_are_spec_errors() {
        let sel = BranchSelector {
            include: vec!["[".into()],
            exclude: vec![],
        };
        let err = Selector::new(&sel, None).unwrap_err();
        assert!(err.contains("branches.include"), "{err}");
    }

    #[test]
    fn adaptive_polling_backs_off_and_resets() {
        let i = Duration::from_secs(60);
        let m = Duration::from_secs(600);
        assert_eq!(next_poll_interval(None, false, i, m), i);
        assert_eq!(
            next_poll_interval(Some(i), false, i, m),
            Duration::from_secs(120)
        );
        assert_eq!(
            next_poll_interval(Some(Duration::from_secs(480)), false, i, m),
            m
        );
        assert_eq!(next_poll_interval(Some(m), true, i, m), i);
        // maxInterval below interval never shortens polling.
        assert_eq!(
            next_poll_interval(Some(i), false, i, Duration::from_secs(1)),
            i
        );
        let j = jitter(Duration::from_secs(100), 0.0);
        assert_eq!(j, Duration::from_secs(90));
    }
}
