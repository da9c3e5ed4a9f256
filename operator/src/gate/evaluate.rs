//! Evaluation of a PolicyGate against one [`PrSnapshot`]: per-rule [`RuleVerdict`]s and the
//! combined [`GateVerdict`]. Pure: no I/O, no clock.
//!
//! **Rule outcomes.** `Pass`, `Fail`, `Skipped` (its `if` is false), `Error` (the rule could not
//! decide: an `if` or `cel` expression failed at run time, a team's membership is unknown, the
//! forge's listing was cut short and what was listed does not decide), `Unsupported` (`plugin`
//! rules until plugins land). An `if` that errors makes the rule `Error`, never `Skipped`.
//!
//! **Combining** (all rules by default, else the gate `expression`). Each outcome is one of four
//! values: `Pass` = true, `Fail` = false, `Error`/`Unsupported` = unknown, `Skipped` = skipped.
//! - `&&`: false if either side is false; else unknown if either is unknown; else skipped if
//!   both are skipped; else true.
//! - `||`: true if either side is true; else unknown if either is unknown; else skipped if both
//!   are skipped; else false.
//! - `!`: swaps true and false; unknown and skipped stay as they are.
//! - The gate: true → `Passed`; false → `Failed` (`Pending` when every failing rule is only
//!   waiting on automation: a required check still running or not reported yet, a preview still
//!   deploying); unknown → `Error`; skipped (every rule it depends on was skipped) → `Passed`.
//!
//! Why: a skipped rule is left out of `&&` and `||`, as policy-bot does (its `and`/`or` ignore
//! skipped children and are skipped when all children are), and `!skipped` stays skipped so a
//! rule that does not apply never turns into a requirement. A gate whose rules are all skipped
//! passes, as the `if` field's documentation says (its combinators would call that result
//! "skipped"; a gate has to post a verdict, and a gate with nothing to check passes). Errors
//! follow strong
//! three-valued (Kleene) logic: an error is reported exactly when it could change the result,
//! so `approvals || plugin_rule` passes on approvals alone while `!plugin_rule` is an error — an
//! error or an unsupported rule is never a pass, also under negation. This differs from
//! policy-bot, whose `or` reports "pending" over an error beside it and whose `and` reports an
//! error even next to a pending rule; both block a merge in either design.
//!
//! **Reviews** (`approvals`, `disapproval`, `pr.approvals` in CEL): only approvals, change
//! requests and dismissals are decisive (a later plain comment does not withdraw an approval);
//! the latest decisive review per user (logins compared case-insensitively) wins, so a later
//! change request or dismissal replaces an approval. With `invalidateOnPush` an approval counts
//! only when given on the head commit, or — for forges that report no commit (GitLab) — when
//! given at or after the time the head was pushed; an approval that matches neither is not
//! counted and the reason says why.
//!
//! **Checks**: the latest result per name (status context or check-run name) on the head;
//! `success`, `neutral` and `skipped` satisfy a requirement (as GitHub's required checks do);
//! `pending` or not reported yet is a fail whose reason says "pending"; `failure`/`error` fail.
//!
//! **Other rules.** `changedFiles`: every touched path (for a rename, the old path too) not
//! matched by `ignore` must match `paths` (globs with `literal_separator`: `*` stays within a
//! directory). `labels`: case-insensitive. `linkedIssue`: the title, then the body.
//! `signedCommits`: the forge's verification verdict of every listed commit. `secretScan`:
//! added lines of every file not removed; a file whose diff is missing or shorter than its
//! addition count cannot be vouched for (error unless something was found). A listing the forge
//! cut short (`filesTruncated`, `commitsTruncated`) can prove a fail, never a pass.
//! `previewHealthy`: no preview fails; a preview not yet ready is a pending fail.
//!
//! **Reasons** are short: a head (`approvals 1/2`) and optional details in parentheses;
//! [`GateVerdict::summary`] joins the heads of the rules that did not pass into one commit
//! status description within 140 characters.

use std::collections::BTreeMap;

use super::Expr;
use super::cel::{
    CelCommit, CelFile, CelPr, CelPreview, CelProgram, CelReview, eval_all, teams_view,
};
use super::secrets::MAX_FINDINGS;
use super::snapshot::PrSnapshot;
use super::validate::{CompiledGate, CompiledRule, RuleKind, compile_expression};
use crate::api::{ApprovalsRule, DisapprovalRule, LabelsRule, PolicyGateSpec};
use crate::forge::{
    CheckResult, CheckState, FileStatus, Review, ReviewState, STATUS_DESCRIPTION_MAX_CHARS,
    truncate_chars,
};

/// What one rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Pass,
    Fail,
    Skipped,
    Error,
    Unsupported,
}

/// One rule's verdict with a short human reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleVerdict {
    pub name: String,
    pub outcome: Outcome,
    /// A short head (used in the commit status summary), optionally followed by details in
    /// parentheses: `approvals 1/2 (alice; bob's approval is on an older commit)`.
    pub reason: String,
    /// A fail that may clear without anyone acting (a check still running).
    #[serde(default)]
    pub pending: bool,
}

/// The combined result, as written to `status.evaluations[].result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum GateResult {
    Passed,
    Failed,
    Pending,
    Error,
}

impl GateResult {
    pub fn as_str(self) -> &'static str {
        match self {
            GateResult::Passed => "passed",
            GateResult::Failed => "failed",
            GateResult::Pending => "pending",
            GateResult::Error => "error",
        }
    }
}

/// Every rule's verdict and the combined result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateVerdict {
    pub result: GateResult,
    /// In the order of the spec.
    pub rules: Vec<RuleVerdict>,
    /// Why the combination itself failed (an expression that does not compile), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Compiles `spec` and evaluates it. A rule that does not compile is an `Error` verdict (the
/// others still run); an expression that does not compile makes the gate an error.
pub fn evaluate(spec: &PolicyGateSpec, pr: &PrSnapshot) -> GateVerdict {
    let compiled: Vec<Result<CompiledRule, (String, String)>> = spec
        .rules
        .iter()
        .map(|r| CompiledRule::compile(r).map_err(|e| (r.name.clone(), e.message)))
        .collect();
    let names = spec.rules.iter().map(|r| r.name.as_str()).collect();
    let expression = spec
        .expression
        .as_deref()
        .map(|e| compile_expression(e, &names))
        .transpose();
    let ok: Vec<Option<&CompiledRule>> = compiled.iter().map(|r| r.as_ref().ok()).collect();
    let cel = cel_results(pr, &ok);
    let rules: Vec<RuleVerdict> = compiled
        .iter()
        .zip(&cel)
        .map(|(r, c)| match r {
            Ok(rule) => evaluate_rule(rule, pr, c),
            Err((name, message)) => verdict(name, Outcome::Error, message.clone()),
        })
        .collect();
    match expression {
        Ok(expr) => combine(expr.as_ref(), rules),
        Err(e) => GateVerdict {
            result: GateResult::Error,
            rules,
            error: Some(e.message),
        },
    }
}

impl CompiledGate {
    /// Evaluates the compiled gate.
    pub fn evaluate(&self, pr: &PrSnapshot) -> GateVerdict {
        let all: Vec<Option<&CompiledRule>> = self.rules.iter().map(Some).collect();
        let cel = cel_results(pr, &all);
        let rules = self
            .rules
            .iter()
            .zip(&cel)
            .map(|(r, c)| evaluate_rule(r, pr, c))
            .collect();
        combine(self.expression.as_ref(), rules)
    }
}

/// The results of a rule's CEL expressions (its `if`, its `cel`), evaluated together up front.
#[derive(Clone, Debug, Default)]
struct RuleCel {
    scope: Option<Result<bool, String>>,
    body: Option<Result<bool, String>>,
}

fn cel_program(rule: &CompiledRule) -> Option<&CelProgram> {
    match &rule.kind {
        RuleKind::Cel { program, .. } => Some(program),
        _ => None,
    }
}

/// Evaluates every CEL expression of `rules` in one go (one conversion of `pr`, one CEL
/// thread), aligned with `rules`.
fn cel_results(pr: &PrSnapshot, rules: &[Option<&CompiledRule>]) -> Vec<RuleCel> {
    let programs: Vec<&CelProgram> = rules
        .iter()
        .flatten()
        .flat_map(|r| r.scope.iter().chain(cel_program(r)))
        .collect();
    if programs.is_empty() {
        return vec![RuleCel::default(); rules.len()];
    }
    let mut results = eval_all(&cel_pr(pr), &programs).into_iter();
    let mut next = || {
        results
            .next()
            .unwrap_or_else(|| Err("internal: missing CEL result".into()))
    };
    rules
        .iter()
        .map(|r| match r {
            Some(r) => RuleCel {
                scope: r.scope.as_ref().map(|_| next()),
                body: cel_program(r).map(|_| next()),
            },
            None => RuleCel::default(),
        })
        .collect()
}

fn verdict(name: &str, outcome: Outcome, reason: impl Into<String>) -> RuleVerdict {
    RuleVerdict {
        name: name.to_string(),
        outcome,
        reason: reason.into(),
        pending: false,
    }
}

fn evaluate_rule(rule: &CompiledRule, pr: &PrSnapshot, cel: &RuleCel) -> RuleVerdict {
    if let Some(scope) = &cel.scope {
        match scope.clone() {
            Ok(true) => {}
            Ok(false) => return verdict(&rule.name, Outcome::Skipped, "skipped (if is false)"),
            Err(e) => return verdict(&rule.name, Outcome::Error, format!("if: {e}")),
        }
    }
    let (outcome, reason, pending) = match &rule.kind {
        RuleKind::Approvals(a) => approvals(a, pr),
        RuleKind::Disapproval(d) => disapproval(d, pr),
        RuleKind::ChangedFiles { paths, ignore } => changed_files(paths, ignore, pr),
        RuleKind::ModifiedLines(max) => {
            let total = pr.modified_lines();
            let text = format!("{total} lines modified (max {max})");
            let withheld: Vec<String> = pr
                .files
                .iter()
                .filter(|f| f.diff_withheld)
                .map(|f| f.path.clone())
                .collect();
            if total <= u64::from(*max) && !withheld.is_empty() {
                return verdict(
                    &rule.name,
                    Outcome::Error,
                    format!(
                        "{text} so far; the forge withheld the diff of {}, whose lines are not counted",
                        list(&withheld, 3)
                    ),
                );
            }
            bound(
                total,
                u64::from(*max),
                pr.files_truncated,
                text,
                pr.files.len(),
            )
        }
        RuleKind::MaxFiles(max) => {
            let n = pr.files.len() as u64;
            let text = format!("{n} files changed (max {max})");
            bound(n, u64::from(*max), pr.files_truncated, text, pr.files.len())
        }
        RuleKind::Branches { source, target } => {
            let mut problems = Vec::new();
            if !source.is_empty() && !source.is_match(&pr.source_branch) {
                problems.push(format!(
                    "source {} does not match {}",
                    pr.source_branch,
                    source.source.join(", ")
                ));
            }
            if !target.is_empty() && !target.is_match(&pr.target_branch) {
                problems.push(format!(
                    "target {} does not match {}",
                    pr.target_branch,
                    target.source.join(", ")
                ));
            }
            if problems.is_empty() {
                (
                    Outcome::Pass,
                    format!("{} → {}", pr.source_branch, pr.target_branch),
                    false,
                )
            } else {
                (Outcome::Fail, problems.join("; "), false)
            }
        }
        RuleKind::Labels(l) => labels(l, pr),
        RuleKind::Title {
            matches,
            not_matches,
        } => {
            let mut problems = Vec::new();
            if let Some(re) = matches
                && !re.is_match(&pr.title)
            {
                problems.push(format!("title does not match {}", clip(re.as_str(), 60)));
            }
            if let Some(re) = not_matches
                && re.is_match(&pr.title)
            {
                problems.push(format!("title matches {}", clip(re.as_str(), 60)));
            }
            if problems.is_empty() {
                (Outcome::Pass, "title ok".into(), false)
            } else {
                (Outcome::Fail, problems.join("; "), false)
            }
        }
        RuleKind::LinkedIssue(re) => match re.find(&pr.title).or_else(|| re.find(&pr.body)) {
            Some(m) => (
                Outcome::Pass,
                format!("references {}", clip(m.as_str(), 40)),
                false,
            ),
            None => (
                Outcome::Fail,
                format!(
                    "no issue reference (no match for {} in title or body)",
                    clip(re.as_str(), 60)
                ),
                false,
            ),
        },
        RuleKind::SignedCommits => signed_commits(pr),
        RuleKind::Checks(required) => checks(required, &pr.checks),
        RuleKind::SecretScan(scanner) => secret_scan(scanner, pr),
        RuleKind::PreviewHealthy => preview_healthy(pr),
        RuleKind::Cel { message, .. } => match cel
            .body
            .clone()
            .unwrap_or_else(|| Err("internal: no CEL result".into()))
        {
            Ok(true) => (Outcome::Pass, "expression is true".into(), false),
            Ok(false) => (
                Outcome::Fail,
                message
                    .clone()
                    .unwrap_or_else(|| "expression is false".into()),
                false,
            ),
            Err(e) => (Outcome::Error, format!("cel: {e}"), false),
        },
        RuleKind::Plugin(name) => (
            Outcome::Unsupported,
            format!(
                "plugin {name}: plugin rules are not implemented yet, so this rule never passes"
            ),
            false,
        ),
    };
    RuleVerdict {
        name: rule.name.clone(),
        outcome,
        reason,
        pending,
    }
}

/// `value <= max`, where a truncated listing can only prove a failure.
fn bound(
    value: u64,
    max: u64,
    truncated: bool,
    text: String,
    listed: usize,
) -> (Outcome, String, bool) {
    if value > max {
        (Outcome::Fail, text, false)
    } else if truncated {
        (
            Outcome::Error,
            format!("the forge listed only the first {listed} files; {text} so far"),
            false,
        )
    } else {
        (Outcome::Pass, text, false)
    }
}

fn clip(s: &str, max: usize) -> String {
    truncate_chars(s, max)
}

/// Up to `max` items joined with ", ", then "+N more".
fn list(items: &[String], max: usize) -> String {
    let mut out = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        out.push_str(&format!(", +{} more", items.len() - max));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reviews
// ---------------------------------------------------------------------------------------------

/// Where a review stands relative to the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Currency {
    OnHead,
    Older,
    Unknown,
}

fn currency(r: &Review, pr: &PrSnapshot) -> Currency {
    match (&r.commit_sha, r.submitted_at, pr.head_pushed_at) {
        (Some(sha), _, _) if sha.eq_ignore_ascii_case(&pr.head_sha) => Currency::OnHead,
        (Some(_), _, _) => Currency::Older,
        (None, Some(at), Some(pushed)) if at >= pushed => Currency::OnHead,
        (None, Some(_), Some(_)) => Currency::Older,
        (None, _, _) => Currency::Unknown,
    }
}

/// The latest decisive review per user, in the order those reviews were given.
fn latest_reviews(pr: &PrSnapshot) -> Vec<&Review> {
    let mut decisive: Vec<&Review> = pr
        .reviews
        .iter()
        .filter(|r| {
            !r.user.is_empty()
                && matches!(
                    r.state,
                    ReviewState::Approved | ReviewState::ChangesRequested | ReviewState::Dismissed
                )
        })
        .collect();
    // Forges list reviews oldest first; reorder by time only when every review has one.
    if decisive.iter().all(|r| r.submitted_at.is_some()) {
        decisive.sort_by_key(|r| r.submitted_at);
    }
    let mut latest: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in decisive.iter().enumerate() {
        latest.insert(r.user.to_lowercase(), i);
    }
    let mut idx: Vec<usize> = latest.into_values().collect();
    idx.sort_unstable();
    idx.into_iter().map(|i| decisive[i]).collect()
}

fn same_login(a: &str, b: &str) -> bool {
    !a.is_empty() && a.to_lowercase() == b.to_lowercase()
}

/// Whether `login` is listed in `users` or a member of one of `teams`; `Err` names a team whose
/// membership the snapshot does not have.
fn listed(
    login: &str,
    users: &[String],
    teams: &[String],
    pr: &PrSnapshot,
) -> Result<bool, String> {
    if users.iter().any(|u| same_login(u, login)) {
        return Ok(true);
    }
    for t in teams {
        let members = pr
            .team(t)
            .ok_or_else(|| format!("membership of team {t} is not known"))?;
        if members.iter().any(|m| same_login(m, login)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Logins whose approval counts for the head, and notes on those that do not.
fn counted_approvals(
    a: &ApprovalsRule,
    pr: &PrSnapshot,
) -> Result<(Vec<String>, Vec<String>), String> {
    let restricted = !a.users.is_empty() || !a.teams.is_empty();
    // Every team must be known even if nobody from it approved: otherwise the verdict would
    // depend on which reviews happen to exist.
    for t in &a.teams {
        if pr.team(t).is_none() {
            return Err(format!("membership of team {t} is not known"));
        }
    }
    let mut counted = Vec::new();
    let mut notes = Vec::new();
    for r in latest_reviews(pr) {
        if r.state != ReviewState::Approved {
            continue;
        }
        let user = &r.user;
        if same_login(user, &pr.author) && !a.allow_author {
            notes.push(format!("{user} is the author"));
            continue;
        }
        if restricted && !listed(user, &a.users, &a.teams, pr)? {
            notes.push(format!("{user} is not an allowed approver"));
            continue;
        }
        if a.invalidate_on_push {
            match currency(r, pr) {
                Currency::OnHead => {}
                Currency::Older => {
                    notes.push(format!("{user}'s approval is on an older commit"));
                    continue;
                }
                Currency::Unknown => {
                    notes.push(format!(
                        "{user}'s approval names no commit and the push time is unknown"
                    ));
                    continue;
                }
            }
        }
        counted.push(user.clone());
    }
    Ok((counted, notes))
}

fn approvals(a: &ApprovalsRule, pr: &PrSnapshot) -> (Outcome, String, bool) {
    let (counted, notes) = match counted_approvals(a, pr) {
        Ok(x) => x,
        Err(e) => return (Outcome::Error, e, false),
    };
    let mut details = Vec::new();
    if !counted.is_empty() {
        details.push(list(&counted, 5));
    }
    details.extend(notes.iter().take(4).cloned());
    if notes.len() > 4 {
        details.push(format!("+{} more", notes.len() - 4));
    }
    let n = counted.len();
    let mut reason = format!("approvals {n}/{}", a.count);
    if !details.is_empty() {
        reason.push_str(&format!(" ({})", details.join("; ")));
    }
    let outcome = if n >= a.count as usize {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    (outcome, reason, false)
}

fn disapproval(d: &DisapprovalRule, pr: &PrSnapshot) -> (Outcome, String, bool) {
    let mut vetoes = Vec::new();
    for t in &d.teams {
        if pr.team(t).is_none() {
            return (
                Outcome::Error,
                format!("membership of team {t} is not known"),
                false,
            );
        }
    }
    for r in latest_reviews(pr) {
        if r.state != ReviewState::ChangesRequested {
            continue;
        }
        match listed(&r.user, &d.users, &d.teams, pr) {
            Ok(true) => vetoes.push(r.user.clone()),
            Ok(false) => {}
            Err(e) => return (Outcome::Error, e, false),
        }
    }
    if vetoes.is_empty() {
        (
            Outcome::Pass,
            "no changes requested by veto holders".into(),
            false,
        )
    } else {
        (
            Outcome::Fail,
            format!("changes requested by {}", list(&vetoes, 5)),
            false,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Files, labels, commits, checks, secrets, preview
// ---------------------------------------------------------------------------------------------

fn changed_files(
    paths: &super::validate::Globs,
    ignore: &super::validate::Globs,
    pr: &PrSnapshot,
) -> (Outcome, String, bool) {
    let mut outside = Vec::new();
    let mut ignored = 0usize;
    let mut matched = 0usize;
    for f in &pr.files {
        for p in f.touched_paths() {
            if ignore.is_match(p) {
                ignored += 1;
            } else if paths.is_match(p) {
                matched += 1;
            } else {
                outside.push(p.to_string());
            }
        }
    }
    let what = paths.source.join(", ");
    if !outside.is_empty() {
        let n = outside.len();
        let noun = if n == 1 { "file" } else { "files" };
        return (
            Outcome::Fail,
            format!("{n} {noun} outside {what} ({})", list(&outside, 3)),
            false,
        );
    }
    if pr.files_truncated {
        return (
            Outcome::Error,
            format!(
                "the forge listed only the first {} files, all within {what}",
                pr.files.len()
            ),
            false,
        );
    }
    let mut reason = format!("all {matched} files within {what}");
    if ignored > 0 {
        reason.push_str(&format!(" ({ignored} ignored)"));
    }
    (Outcome::Pass, reason, false)
}

fn labels(l: &LabelsRule, pr: &PrSnapshot) -> (Outcome, String, bool) {
    let has = |want: &str| pr.labels.iter().any(|x| x.eq_ignore_ascii_case(want));
    let missing: Vec<String> = l.require.iter().filter(|x| !has(x)).cloned().collect();
    let forbidden: Vec<String> = l.forbid.iter().filter(|x| has(x)).cloned().collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing label {}", list(&missing, 3)));
    }
    if !forbidden.is_empty() {
        problems.push(format!("forbidden label {}", list(&forbidden, 3)));
    }
    if problems.is_empty() {
        (Outcome::Pass, "labels ok".into(), false)
    } else {
        (Outcome::Fail, problems.join("; "), false)
    }
}

fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

fn signed_commits(pr: &PrSnapshot) -> (Outcome, String, bool) {
    let unverified: Vec<String> = pr
        .commits
        .iter()
        .filter(|c| !c.verified)
        .map(|c| short_sha(&c.sha))
        .collect();
    let total = pr.commits.len();
    if !unverified.is_empty() {
        return (
            Outcome::Fail,
            format!(
                "{} of {total} commits unverified ({})",
                unverified.len(),
                list(&unverified, 3)
            ),
            false,
        );
    }
    if total == 0 {
        return (Outcome::Error, "no commits listed".into(), false);
    }
    if pr.commits_truncated {
        return (
            Outcome::Error,
            format!("the forge listed only the first {total} commits, all verified"),
            false,
        );
    }
    (
        Outcome::Pass,
        format!("all {total} commits verified"),
        false,
    )
}

/// The latest result for `name`: the one with the newest time (entries without a time lose to
/// timed ones; among equals the last listed wins).
fn latest_check<'a>(checks: &'a [CheckResult], name: &str) -> Option<&'a CheckResult> {
    checks.iter().filter(|c| c.name == name).fold(
        None,
        |best: Option<&CheckResult>, c| match best {
            Some(b) if b.updated_at > c.updated_at => Some(b),
            _ => Some(c),
        },
    )
}

fn checks(required: &[String], all: &[CheckResult]) -> (Outcome, String, bool) {
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    for name in required {
        match latest_check(all, name).map(|c| c.state) {
            Some(CheckState::Success | CheckState::Neutral | CheckState::Skipped) => {}
            Some(CheckState::Pending) => pending.push(format!("{name} pending")),
            None => pending.push(format!("{name} pending (not reported)")),
            Some(CheckState::Failure) => failed.push(format!("{name} failed")),
            Some(CheckState::Error) => failed.push(format!("{name} errored")),
        }
    }
    if failed.is_empty() && pending.is_empty() {
        return (
            Outcome::Pass,
            format!("{0}/{0} checks succeeded", required.len()),
            false,
        );
    }
    let only_pending = failed.is_empty();
    failed.extend(pending);
    (Outcome::Fail, list(&failed, 3), only_pending)
}

fn secret_scan(
    scanner: &super::secrets::SecretScanner,
    pr: &PrSnapshot,
) -> (Outcome, String, bool) {
    let mut findings = Vec::new();
    let mut unscanned = Vec::new();
    let mut lines = 0usize;
    for f in &pr.files {
        if f.status == FileStatus::Removed {
            continue;
        }
        match &f.added_lines {
            Some(added) => {
                lines += added.len();
                findings.extend(scanner.scan_file(&f.path, added));
                // Fewer added lines than the forge counted: the diff was cut (or is a
                // placeholder), so the rest of the file is unseen.
                if (added.len() as u64) < f.additions {
                    unscanned.push(format!(
                        "{} ({} of {} added lines in the diff)",
                        f.path,
                        added.len(),
                        f.additions
                    ));
                }
            }
            None if f.diff_withheld => unscanned.push(format!(
                "{} (the forge withheld its diff: too large)",
                f.path
            )),
            None if f.additions > 0 => {
                unscanned.push(format!("{} (the forge sent no diff)", f.path))
            }
            None => {}
        }
    }
    if !findings.is_empty() {
        let n = findings.len();
        let places: Vec<String> = findings
            .iter()
            .take(MAX_FINDINGS)
            .map(|f| format!("{}:{} ({})", f.path, f.line, f.pattern))
            .collect();
        let noun = if n == 1 { "secret" } else { "secrets" };
        return (
            Outcome::Fail,
            format!("{n} possible {noun} ({})", list(&places, 3)),
            false,
        );
    }
    if !unscanned.is_empty() {
        return (
            Outcome::Error,
            format!("cannot scan every added line: {}", list(&unscanned, 3)),
            false,
        );
    }
    if pr.files_truncated {
        return (
            Outcome::Error,
            format!(
                "the forge listed only the first {} files; no secrets in those",
                pr.files.len()
            ),
            false,
        );
    }
    (
        Outcome::Pass,
        format!("no secrets in {lines} added lines"),
        false,
    )
}

fn preview_healthy(pr: &PrSnapshot) -> (Outcome, String, bool) {
    let detail = |m: &Option<String>| {
        m.as_deref()
            .map(|m| format!(" ({})", clip(m, 60)))
            .unwrap_or_default()
    };
    match &pr.preview {
        None => (Outcome::Fail, "no preview environment".into(), false),
        Some(p) if !p.ready => (
            Outcome::Fail,
            format!("preview not ready{}", detail(&p.message)),
            true,
        ),
        Some(p) if p.healthy == Some(false) => (
            Outcome::Fail,
            format!("preview unhealthy{}", detail(&p.message)),
            false,
        ),
        Some(p) if p.healthy.is_none() => (
            Outcome::Pass,
            "preview ready (no health checks)".into(),
            false,
        ),
        Some(_) => (Outcome::Pass, "preview ready and healthy".into(), false),
    }
}

// ---------------------------------------------------------------------------------------------
// CEL view
// ---------------------------------------------------------------------------------------------

fn state_name(s: ReviewState) -> &'static str {
    match s {
        ReviewState::Approved => "approved",
        ReviewState::ChangesRequested => "changes_requested",
        ReviewState::Commented => "commented",
        ReviewState::Dismissed => "dismissed",
        ReviewState::Pending => "pending",
    }
}

fn check_name(s: CheckState) -> &'static str {
    match s {
        CheckState::Pending => "pending",
        CheckState::Success => "success",
        CheckState::Failure => "failure",
        CheckState::Error => "error",
        CheckState::Neutral => "neutral",
        CheckState::Skipped => "skipped",
    }
}

fn file_status_name(s: FileStatus) -> &'static str {
    match s {
        FileStatus::Added => "added",
        FileStatus::Modified => "modified",
        FileStatus::Removed => "removed",
        FileStatus::Renamed => "renamed",
        FileStatus::Other => "other",
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `pr` for CEL (see [`CelPr`]).
pub fn cel_pr(pr: &PrSnapshot) -> CelPr {
    let anyone = ApprovalsRule {
        count: 1,
        users: Vec::new(),
        teams: Vec::new(),
        allow_author: false,
        invalidate_on_push: true,
    };
    let approvals = counted_approvals(&anyone, pr)
        .map(|(c, _)| c)
        .unwrap_or_default();
    let latest = latest_reviews(pr);
    let changes_requested = latest
        .iter()
        .filter(|r| r.state == ReviewState::ChangesRequested)
        .map(|r| r.user.clone())
        .collect();
    let mut latest: BTreeMap<&str, &CheckResult> = BTreeMap::new();
    for c in &pr.checks {
        // Same choice as `latest_check`: newer wins, the later listed among equals.
        match latest.get(c.name.as_str()) {
            Some(b) if b.updated_at > c.updated_at => {}
            _ => {
                latest.insert(&c.name, c);
            }
        }
    }
    let checks = latest
        .into_iter()
        .map(|(name, c)| (name.to_string(), check_name(c.state).to_string()))
        .collect();
    CelPr {
        number: int(pr.number),
        title: pr.title.clone(),
        body: pr.body.clone(),
        author: pr.author.clone(),
        source: pr.source_branch.clone(),
        target: pr.target_branch.clone(),
        labels: pr.labels.clone(),
        head_sha: pr.head_sha.clone(),
        draft: pr.draft,
        fork: pr.fork,
        files: pr
            .files
            .iter()
            .map(|f| CelFile {
                path: f.path.clone(),
                previous_path: f.previous_path.clone().unwrap_or_default(),
                status: file_status_name(f.status).to_string(),
                additions: int(f.additions),
                deletions: int(f.deletions),
            })
            .collect(),
        additions: int(pr
            .files
            .iter()
            .map(|f| f.additions)
            .fold(0, u64::saturating_add)),
        deletions: int(pr
            .files
            .iter()
            .map(|f| f.deletions)
            .fold(0, u64::saturating_add)),
        approvals,
        reviews: pr
            .reviews
            .iter()
            .map(|r| CelReview {
                user: r.user.clone(),
                state: state_name(r.state).to_string(),
                on_head: currency(r, pr) == Currency::OnHead,
            })
            .collect(),
        changes_requested,
        commits: pr
            .commits
            .iter()
            .map(|c| CelCommit {
                sha: c.sha.clone(),
                author: c.author.clone(),
                message: c.message.clone(),
                verified: c.verified,
            })
            .collect(),
        checks,
        preview: pr
            .preview
            .as_ref()
            .map(|p| CelPreview {
                exists: true,
                ready: p.ready,
                healthy: p.ready && p.healthy != Some(false),
            })
            .unwrap_or_default(),
        teams: teams_view(&pr.teams),
        files_truncated: pr.files_truncated,
        commits_truncated: pr.commits_truncated,
    }
}

// ---------------------------------------------------------------------------------------------
// Combining
// ---------------------------------------------------------------------------------------------

/// A rule's (or sub-expression's) value in the combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
    Skipped,
}

fn tri(o: Outcome) -> Tri {
    match o {
        Outcome::Pass => Tri::True,
        Outcome::Fail => Tri::False,
        Outcome::Skipped => Tri::Skipped,
        Outcome::Error | Outcome::Unsupported => Tri::Unknown,
    }
}

fn and(a: Tri, b: Tri) -> Tri {
    use Tri::*;
    match (a, b) {
        (False, _) | (_, False) => False,
        (Unknown, _) | (_, Unknown) => Unknown,
        (Skipped, Skipped) => Skipped,
        _ => True,
    }
}

fn or(a: Tri, b: Tri) -> Tri {
    use Tri::*;
    match (a, b) {
        (True, _) | (_, True) => True,
        (Unknown, _) | (_, Unknown) => Unknown,
        (Skipped, Skipped) => Skipped,
        _ => False,
    }
}

fn eval_expr(e: &Expr, values: &BTreeMap<&str, Tri>) -> Tri {
    match e {
        // Compilation checked every name; a missing one cannot decide.
        Expr::Rule(n) => values.get(n.as_str()).copied().unwrap_or(Tri::Unknown),
        Expr::Not(x) => match eval_expr(x, values) {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            other => other,
        },
        Expr::And(a, b) => and(eval_expr(a, values), eval_expr(b, values)),
        Expr::Or(a, b) => or(eval_expr(a, values), eval_expr(b, values)),
    }
}

fn combine(expression: Option<&Expr>, rules: Vec<RuleVerdict>) -> GateVerdict {
    let values: BTreeMap<&str, Tri> = rules
        .iter()
        .map(|r| (r.name.as_str(), tri(r.outcome)))
        .collect();
    let value = match expression {
        Some(e) => eval_expr(e, &values),
        None => rules.iter().map(|r| tri(r.outcome)).fold(Tri::Skipped, and),
    };
    let result = match value {
        Tri::True | Tri::Skipped => GateResult::Passed,
        Tri::Unknown => GateResult::Error,
        Tri::False => {
            let referenced: Option<std::collections::BTreeSet<&str>> =
                expression.map(|e| e.rule_names());
            let failing: Vec<&RuleVerdict> = rules
                .iter()
                .filter(|r| r.outcome == Outcome::Fail)
                .filter(|r| {
                    referenced
                        .as_ref()
                        .is_none_or(|names| names.contains(r.name.as_str()))
                })
                .collect();
            if !failing.is_empty() && failing.iter().all(|r| r.pending) {
                GateResult::Pending
            } else {
                GateResult::Failed
            }
        }
    };
    GateVerdict {
        result,
        rules,
        error: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------

/// The head of a reason: the text before its parenthesised details.
pub(crate) fn reason_head(reason: &str) -> &str {
    reason.split(" (").next().unwrap_or(reason)
}

impl GateVerdict {
    /// Rules that passed.
    pub fn passed_count(&self) -> usize {
        self.rules
            .iter()
            .filter(|r| r.outcome == Outcome::Pass)
            .count()
    }

    /// Rules that were not skipped.
    pub fn applicable_count(&self) -> usize {
        self.rules
            .iter()
            .filter(|r| r.outcome != Outcome::Skipped)
            .count()
    }

    /// Names of the rules that failed, errored or are unsupported.
    pub fn failed_rules(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Pass | Outcome::Skipped))
            .map(|r| r.name.clone())
            .collect()
    }

    /// The head of [`summary`](Self::summary), unbounded: `3/4 rules passed`, `all 2 rules
    /// skipped`, or `error: …` when the combination itself failed. Also the check run's title.
    pub fn headline(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error: {e}");
        }
        let applicable = self.applicable_count();
        if applicable == 0 {
            format!("all {} rules skipped", self.rules.len())
        } else {
            format!("{}/{applicable} rules passed", self.passed_count())
        }
    }

    /// One line for a commit status, within GitHub's 140 characters:
    /// `3/4 rules passed: approvals 1/2`.
    pub fn summary(&self) -> String {
        let max = STATUS_DESCRIPTION_MAX_CHARS;
        let head = self.headline();
        if self.error.is_some() {
            return truncate_chars(&head, max);
        }
        let problems: Vec<String> = self
            .rules
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Pass | Outcome::Skipped))
            .map(|r| {
                let h = reason_head(&r.reason);
                if h.starts_with(r.name.as_str()) {
                    h.to_string()
                } else {
                    format!("{}: {h}", r.name)
                }
            })
            .collect();
        if problems.is_empty() {
            return truncate_chars(&head, max);
        }
        let mut out = format!("{head}: ");
        let mut shown = 0;
        for (i, p) in problems.iter().enumerate() {
            let rest = problems.len() - i - 1;
            let sep = if shown == 0 { "" } else { "; " };
            let more = if rest > 0 {
                format!("; +{rest} more")
            } else {
                String::new()
            };
            let candidate = format!("{out}{sep}{p}");
            if candidate.chars().count() + more.chars().count() <= max {
                out = candidate;
                shown += 1;
            } else {
                if shown == 0 {
                    // Not even one fits whole: cut the first.
                    let room = max.saturating_sub(out.chars().count() + more.chars().count());
                    out.push_str(&truncate_chars(p, room.max(1)));
                    out.push_str(&more);
                } else {
                    out.push_str(&format!("; +{} more", problems.len() - shown));
                }
                return truncate_chars(&out, max);
            }
        }
        truncate_chars(&out, max)
    }
}
