//! What a gate writes, decided without I/O: the commit status and check run for a verdict (per
//! `mode`), whether the forge already shows it (so a restart or a re-evaluation writes nothing),
//! and the bounded `status.evaluations` with its counts.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{GateEvaluation, GateMode};
use crate::forge::{
    CheckConclusion, CheckResult, CheckRunStatus, CheckState, ForgeKind,
    STATUS_DESCRIPTION_MAX_CHARS, StatusState, truncate_chars,
};
use crate::gate::{GateResult, GateVerdict};

/// At most this many evaluations are kept in status (the CRD's bound).
pub const EVALUATIONS_LIMIT: usize = 100;

/// The status check name of a gate.
pub fn context_of(gate: &str, context: Option<&str>) -> String {
    context
        .map(str::to_owned)
        .unwrap_or_else(|| format!("pullwarden/gate/{gate}"))
}

/// What one verdict looks like on the forge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub state: StatusState,
    /// The commit status description and the check run title (one string, so whichever of
    /// the two the forge lists last, [`already_reported`] recognises it).
    pub description: String,
    pub check_status: CheckRunStatus,
    pub conclusion: Option<CheckConclusion>,
}

/// The report of `verdict` under `mode`: `enforce` maps the result to the state (an error
/// blocks like a failure); `evaluate` always reports success (a neutral check run) and says
/// what the verdict would have been.
pub fn report(mode: GateMode, verdict: &GateVerdict) -> Report {
    let summary = verdict.summary();
    match mode {
        GateMode::Enforce => {
            let (state, check_status, conclusion) = match verdict.result {
                GateResult::Passed => (
                    StatusState::Success,
                    CheckRunStatus::Completed,
                    Some(CheckConclusion::Success),
                ),
                GateResult::Failed => (
                    StatusState::Failure,
                    CheckRunStatus::Completed,
                    Some(CheckConclusion::Failure),
                ),
                GateResult::Pending => (StatusState::Pending, CheckRunStatus::InProgress, None),
                GateResult::Error => (
                    StatusState::Error,
                    CheckRunStatus::Completed,
                    Some(CheckConclusion::Failure),
                ),
            };
            Report {
                state,
                description: truncate_chars(&summary, STATUS_DESCRIPTION_MAX_CHARS),
                check_status,
                conclusion,
            }
        }
        GateMode::Evaluate => Report {
            state: StatusState::Success,
            description: truncate_chars(
                &format!(
                    "evaluate only, would be {}: {summary}",
                    verdict.result.as_str()
                ),
                STATUS_DESCRIPTION_MAX_CHARS,
            ),
            check_status: CheckRunStatus::Completed,
            conclusion: Some(CheckConclusion::Neutral),
        },
    }
}

/// How a written state reads back from the forge (GitLab has no `error` state: it is written
/// as `failed`).
fn reads_back_as(kind: ForgeKind, state: StatusState) -> CheckState {
    match state {
        StatusState::Pending => CheckState::Pending,
        StatusState::Success => CheckState::Success,
        StatusState::Failure => CheckState::Failure,
        StatusState::Error if kind == ForgeKind::Gitlab => CheckState::Failure,
        StatusState::Error => CheckState::Error,
    }
}

fn check_run_reads_back_as(report: &Report) -> CheckState {
    match report.conclusion {
        None => CheckState::Pending,
        Some(CheckConclusion::Success) => CheckState::Success,
        Some(CheckConclusion::Neutral) => CheckState::Neutral,
        Some(CheckConclusion::Skipped) => CheckState::Skipped,
        Some(CheckConclusion::Failure | CheckConclusion::ActionRequired) => CheckState::Failure,
        Some(_) => CheckState::Error,
    }
}

/// Whether the head's checks already show `report` under `context` (as a status or as our
/// check run): then nothing is written, also after a restart that lost `status.evaluations`.
pub fn already_reported(
    kind: ForgeKind,
    checks: &[CheckResult],
    context: &str,
    report: &Report,
) -> bool {
    checks.iter().any(|c| {
        c.name == context
            && c.description.as_deref() == Some(report.description.as_str())
            && (c.state == reads_back_as(kind, report.state)
                || c.state == check_run_reads_back_as(report))
    })
}

/// What this process last wrote for one pull request under one gate spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub decision: GateEvaluation,
    /// The per-rule table (check run or comment section) was written too.
    pub table: bool,
}

/// What a decision still needs on the forge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    Nothing,
    /// The status is there, the table is not (its write failed).
    Table,
    /// Status and table.
    Both,
    /// Not known here (nothing written by this process, not in `status.evaluations`): the
    /// head's checks say whether the status is there (a crash after the write, before the
    /// record).
    AskTheForge,
}

/// What `decision` needs, from what this process wrote last (authoritative while it runs: it
/// is the only writer) and else from what the gate recorded under the same spec generation.
pub fn needed(
    written: Option<&Written>,
    recorded: &[GateEvaluation],
    decision: &GateEvaluation,
) -> Needed {
    match written {
        Some(w) if same_decision(&w.decision, decision) && w.table => Needed::Nothing,
        Some(w) if same_decision(&w.decision, decision) => Needed::Table,
        Some(_) => Needed::Both,
        None if recorded.iter().any(|r| same_decision(r, decision)) => Needed::Nothing,
        None => Needed::AskTheForge,
    }
}

/// One evaluation as recorded in status.
pub fn evaluation(
    repository: &str,
    number: u64,
    head_sha: &str,
    verdict: &GateVerdict,
    now: jiff::Timestamp,
) -> GateEvaluation {
    GateEvaluation {
        repository: repository.to_owned(),
        pull_request: number,
        head_sha: head_sha.to_owned(),
        result: verdict.result.as_str().to_owned(),
        failed_rules: verdict.failed_rules(),
        summary: Some(verdict.summary()),
        evaluated_at: Time(now),
    }
}

/// The same pull request, head and verdict (the time aside).
pub fn same_decision(a: &GateEvaluation, b: &GateEvaluation) -> bool {
    a.repository == b.repository
        && a.pull_request == b.pull_request
        && a.head_sha == b.head_sha
        && a.result == b.result
        && a.failed_rules == b.failed_rules
        && a.summary == b.summary
}

/// The new `status.evaluations`: the latest evaluation per pull request, newest first, at most
/// [`EVALUATIONS_LIMIT`]. An unchanged decision keeps its old `evaluatedAt` (so an unchanged
/// gate writes no status); pull requests of `swept` repositories that are no longer open are
/// dropped; entries of repositories not swept this time (their forge failed) stay.
pub fn merge_evaluations(
    previous: &[GateEvaluation],
    fresh: Vec<GateEvaluation>,
    swept: &BTreeSet<String>,
) -> Vec<GateEvaluation> {
    let fresh_keys: BTreeSet<(String, u64)> = fresh
        .iter()
        .map(|e| (e.repository.clone(), e.pull_request))
        .collect();
    let mut out: Vec<GateEvaluation> = fresh
        .into_iter()
        .map(|e| match previous.iter().find(|p| same_decision(p, &e)) {
            Some(p) => p.clone(),
            None => e,
        })
        .collect();
    out.extend(
        previous
            .iter()
            .filter(|p| !swept.contains(&p.repository))
            .filter(|p| !fresh_keys.contains(&(p.repository.clone(), p.pull_request)))
            .cloned(),
    );
    out.sort_by(|a, b| {
        b.evaluated_at
            .0
            .cmp(&a.evaluated_at.0)
            .then_with(|| a.repository.cmp(&b.repository))
            .then_with(|| b.pull_request.cmp(&a.pull_request))
    });
    out.truncate(EVALUATIONS_LIMIT);
    out
}

/// Pull requests whose latest evaluation passed, and those that failed (or errored).
pub fn counts(evaluations: &[GateEvaluation]) -> (u32, u32) {
    let (mut passed, mut failed) = (0u32, 0u32);
    for e in evaluations {
        if e.result == GateResult::Passed.as_str() {
            passed = passed.saturating_add(1);
        } else if e.result == GateResult::Failed.as_str() || e.result == GateResult::Error.as_str()
        {
            failed = failed.saturating_add(1);
        }
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::CheckSource;
    use crate::gate::{Outcome, RuleVerdict};

    fn verdict(result: GateResult, failing: &[&str]) -> GateVerdict {
        let mut rules: Vec<RuleVerdict> = failing
            .iter()
            .map(|n| RuleVerdict {
                name: (*n).into(),
                outcome: Outcome::Fail,
                reason: format!("{n} 1/2"),
                pending: false,
            })
            .collect();
        rules.push(RuleVerdict {
            name: "title".into(),
            outcome: Outcome::Pass,
            reason: "title ok".into(),
            pending: false,
        });
        GateVerdict {
            result,
            rules,
            error: None,
        }
    }

    fn seen(name: &str, state: CheckState, description: &str, source: CheckSource) -> CheckResult {
        CheckResult {
            name: name.into(),
            state,
            source,
            url: None,
            updated_at: None,
            description: Some(description.into()),
        }
    }

    #[test]
    fn modes_map_results_to_states() {
        let failed = verdict(GateResult::Failed, &["approvals"]);
        let r = report(GateMode::Enforce, &failed);
        assert_eq!(r.state, StatusState::Failure);
        assert_eq!(r.description, "1/2 rules passed: approvals 1/2");
        assert_eq!(r.conclusion, Some(CheckConclusion::Failure));
        let e = report(GateMode::Evaluate, &failed);
        assert_eq!(e.state, StatusState::Success, "evaluate never blocks");
        assert_eq!(e.conclusion, Some(CheckConclusion::Neutral));
        assert!(
            e.description
                .starts_with("evaluate only, would be failed: 1/2")
        );
        let pending = report(
            GateMode::Enforce,
            &verdict(GateResult::Pending, &["checks"]),
        );
        assert_eq!(
            (pending.state, pending.check_status, pending.conclusion),
            (StatusState::Pending, CheckRunStatus::InProgress, None)
        );
        let error = report(GateMode::Enforce, &verdict(GateResult::Error, &["cel"]));
        assert_eq!(error.state, StatusState::Error);
        assert_eq!(
            error.conclusion,
            Some(CheckConclusion::Failure),
            "an error blocks"
        );
        let long = verdict(GateResult::Failed, &[&"x".repeat(200)]);
        assert!(
            report(GateMode::Evaluate, &long)
                .description
                .chars()
                .count()
                <= 140
        );
        assert_eq!(context_of("policy", None), "pullwarden/gate/policy");
        assert_eq!(context_of("policy", Some("compliance")), "compliance");
    }

    #[test]
    fn what_the_forge_shows_is_not_written_again() {
        let r = report(
            GateMode::Enforce,
            &verdict(GateResult::Failed, &["approvals"]),
        );
        let ctx = "pullwarden/gate/policy";
        let desc = r.description.clone();
        let status = seen(ctx, CheckState::Failure, &desc, CheckSource::Status);
        assert!(already_reported(
            ForgeKind::Github,
            std::slice::from_ref(&status),
            ctx,
            &r
        ));
        // The check run of the same name, listed instead of the status, counts too.
        let run = seen(ctx, CheckState::Failure, &desc, CheckSource::CheckRun);
        assert!(already_reported(ForgeKind::Github, &[run], ctx, &r));
        // Another description, another state or another context: write.
        let other = seen(
            ctx,
            CheckState::Failure,
            "0/2 rules passed",
            CheckSource::Status,
        );
        assert!(!already_reported(ForgeKind::Github, &[other], ctx, &r));
        let pending = seen(ctx, CheckState::Pending, &desc, CheckSource::Status);
        assert!(!already_reported(ForgeKind::Github, &[pending], ctx, &r));
        let elsewhere = seen("ci/build", CheckState::Failure, &desc, CheckSource::Status);
        assert!(!already_reported(ForgeKind::Github, &[elsewhere], ctx, &r));
        // GitLab reads an `error` back as `failed`.
        let e = report(GateMode::Enforce, &verdict(GateResult::Error, &["cel"]));
        let gl = seen(
            ctx,
            CheckState::Failure,
            &e.description,
            CheckSource::Status,
        );
        assert!(already_reported(
            ForgeKind::Gitlab,
            std::slice::from_ref(&gl),
            ctx,
            &e
        ));
        // On GitHub a failure is not an error, but our check run of an error is a failure.
        let gh_run = seen(
            ctx,
            CheckState::Failure,
            &e.description,
            CheckSource::CheckRun,
        );
        assert!(already_reported(ForgeKind::Github, &[gh_run], ctx, &e));
        // Evaluate mode: a success status or a neutral check run.
        let ev = report(
            GateMode::Evaluate,
            &verdict(GateResult::Failed, &["approvals"]),
        );
        let neutral = seen(
            ctx,
            CheckState::Neutral,
            &ev.description,
            CheckSource::CheckRun,
        );
        assert!(already_reported(ForgeKind::Github, &[neutral], ctx, &ev));
        assert!(!already_reported(ForgeKind::Github, &[status], ctx, &ev));
    }

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn what_was_written_decides_what_is_written_next() {
        let failed = evaluation(
            "web",
            1,
            "a",
            &verdict(GateResult::Failed, &["approvals"]),
            at(1),
        );
        let passed = evaluation("web", 1, "a", &verdict(GateResult::Passed, &[]), at(2));
        let written = |d: &GateEvaluation, table| Written {
            decision: d.clone(),
            table,
        };
        // This process wrote it: nothing, or only the table whose write failed.
        assert_eq!(
            needed(Some(&written(&failed, true)), &[], &failed),
            Needed::Nothing
        );
        assert_eq!(
            needed(Some(&written(&failed, false)), &[], &failed),
            Needed::Table
        );
        // It wrote another verdict: the forge shows that one, so write, without asking.
        assert_eq!(
            needed(
                Some(&written(&failed, true)),
                std::slice::from_ref(&passed),
                &passed
            ),
            Needed::Both,
            "this process's own write is newer than the record"
        );
        // A fresh process: the record, else the forge.
        assert_eq!(
            needed(None, std::slice::from_ref(&failed), &failed),
            Needed::Nothing
        );
        assert_eq!(
            needed(None, std::slice::from_ref(&failed), &passed),
            Needed::AskTheForge
        );
        assert_eq!(needed(None, &[], &failed), Needed::AskTheForge);
    }

    #[test]
    fn evaluations_keep_their_time_while_unchanged_and_stay_bounded() {
        let failed = verdict(GateResult::Failed, &["approvals"]);
        let passed = verdict(GateResult::Passed, &[]);
        let swept: BTreeSet<String> = ["web".to_string()].into();
        let first = merge_evaluations(
            &[],
            vec![
                evaluation("web", 1, "a", &failed, at(10)),
                evaluation("web", 2, "b", &passed, at(10)),
            ],
            &swept,
        );
        assert_eq!(counts(&first), (1, 1));
        // Re-evaluated later with the same decisions: nothing changes (no status write).
        let again = merge_evaluations(
            &first,
            vec![
                evaluation("web", 1, "a", &failed, at(99)),
                evaluation("web", 2, "b", &passed, at(99)),
            ],
            &swept,
        );
        assert_eq!(again, first);
        // #1 passes now; #2 is closed; #9 of another repository (not swept) stays.
        let other = evaluation("api", 9, "c", &failed, at(5));
        let mut previous = again.clone();
        previous.push(other.clone());
        let next = merge_evaluations(
            &previous,
            vec![evaluation("web", 1, "a", &passed, at(100))],
            &swept,
        );
        assert_eq!(next.len(), 2);
        assert_eq!(next[0].pull_request, 1);
        assert_eq!(next[0].evaluated_at, Time(at(100)));
        assert_eq!(next[1], other);
        assert_eq!(counts(&next), (1, 1));
        let many: Vec<GateEvaluation> = (0..150)
            .map(|n| evaluation("web", n, "a", &passed, at(n as i64)))
            .collect();
        let bounded = merge_evaluations(&[], many, &swept);
        assert_eq!(bounded.len(), EVALUATIONS_LIMIT);
        assert_eq!(bounded[0].pull_request, 149, "newest first");
    }
}
