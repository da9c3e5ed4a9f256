//! `pullwarden gate test`: a PolicyGate evaluated against one pull request read from files, with
//! no cluster and no forge. Pure: the binary reads the two files and prints what [`gate_test`]
//! returns.
//!
//! **The gate** is the PolicyGate manifest as applied with kubectl (a multi-document file or a
//! `kind: List` picks the first PolicyGate, or the one named). Fields the CRD schema does not
//! define are refused, as `kubectl apply` (strict field validation) refuses them, so a typo is
//! never silently ignored; then the gate is compiled exactly as the controller compiles it
//! ([`CompiledGate::compile`]), so a gate that passes here is accepted by the operator
//! (the apiserver's own schema rules — lengths, patterns, "labels needs require or forbid" — are
//! checked by `kubectl apply --dry-run=server`).
//!
//! **The pull request** is one JSON file, recognised by its shape:
//! - a [`PrSnapshot`] (camelCase, with `headSha`), as the controller gathers it;
//! - a GitHub pull request (`GET /repos/{o}/{r}/pulls/{n}`), or a bundle
//!   `{"pull_request", "files", "reviews", "commits", "statuses", "check_runs"}` holding the REST
//!   responses of those endpoints (`statuses` from `/commits/{ref}/statuses` or the combined
//!   `/commits/{ref}/status`; `check_runs` from `/commits/{ref}/check-runs`), parsed by the
//!   GitHub provider's own JSON types, files with their `patch` so `secretScan` works;
//! - a GitLab merge request (`GET /projects/:id/merge_requests/:iid`), or a bundle
//!   `{"merge_request", "diffs", "approvals", "commits", "statuses", "versions", "signatures"}`
//!   (`signatures`: commit SHA → `/repository/commits/:sha/signature`; `versions` decides when
//!   the head was pushed), parsed by the GitLab provider's types.
//!
//! Either bundle may add `teams` (team → member logins, which no single endpoint returns) and
//! `preview` (`{ready, healthy, message}`). A bundle that lists fewer files or commits than the
//! pull request says it has counts as a listing cut short, as when GitHub stops at 3000 files:
//! rules that need every file can then prove a fail, never a pass.
//!
//! Exit code ([`exit_code`]): 0 passed, 1 failed or pending, 2 an evaluation error or input that
//! cannot be used.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::evaluate::{GateResult, GateVerdict};
use super::report::text_table;
use super::snapshot::{PrSnapshot, PreviewState, SnapshotFile};
use super::validate::CompiledGate;
use crate::api::{GateMode, PolicyGate};
use crate::forge::{CheckResult, github, gitlab};

/// Why the input cannot be evaluated; the message is what the CLI prints.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn err(message: impl Into<String>) -> InputError {
    InputError(message.into())
}

/// How the verdict is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// The aligned table of [`text_table`].
    #[default]
    Text,
    /// The [`GateVerdict`] as JSON.
    Json,
}

/// Options of `gate test`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateTestOptions {
    /// The PolicyGate to pick from a file holding several.
    pub name: Option<String>,
    /// Every reason in full and what it means.
    pub explain: bool,
    pub format: OutputFormat,
}

/// What `gate test` prints, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateTestOutput {
    pub exit_code: u8,
    pub stdout: String,
    /// Notes (`note: …`) and input errors.
    pub stderr: String,
    /// The verdict, when there was one.
    pub verdict: Option<GateVerdict>,
}

/// Exit code for an invalid gate, unusable input or a gate that could not decide.
pub const EXIT_INVALID: u8 = 2;

/// 0 passed, 1 failed or pending, 2 error.
pub fn exit_code(result: GateResult) -> u8 {
    match result {
        GateResult::Passed => 0,
        GateResult::Failed | GateResult::Pending => 1,
        GateResult::Error => EXIT_INVALID,
    }
}

/// Evaluates the PolicyGate in `gate_yaml` against the pull request in `pr_json`.
pub fn gate_test(gate_yaml: &str, pr_json: &str, opts: &GateTestOptions) -> GateTestOutput {
    let invalid = |e: InputError| GateTestOutput {
        exit_code: EXIT_INVALID,
        stdout: String::new(),
        stderr: format!("{e}\n"),
        verdict: None,
    };
    let gate = match load_gate(gate_yaml, opts.name.as_deref()) {
        Ok(g) => g,
        Err(e) => return invalid(err(format!("--gate: {e}"))),
    };
    let compiled = match compile_gate(&gate) {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    let pr = match parse_pr(pr_json) {
        Ok(p) => p,
        Err(e) => return invalid(err(format!("--pr: {e}"))),
    };
    let verdict = compiled.evaluate(&pr.snapshot);
    let mut notes = pr.notes;
    if gate.spec.mode == GateMode::Evaluate {
        notes.push(
            "mode: evaluate: the operator reports this verdict with a success state, so it \
             never blocks a merge; the exit code is the would-be verdict's"
                .into(),
        );
    }
    let stdout = match opts.format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&verdict)
                .expect("a verdict always serialises to JSON");
            s.push('\n');
            s
        }
        OutputFormat::Text => {
            let name = gate.metadata.name.as_deref().unwrap_or("(unnamed)");
            let head: String = pr.snapshot.head_sha.chars().take(7).collect();
            format!(
                "gate {name}, pull request #{} at {head} ({} → {})\n\n{}",
                pr.snapshot.number,
                pr.snapshot.source_branch,
                pr.snapshot.target_branch,
                text_table(&verdict, opts.explain)
            )
        }
    };
    GateTestOutput {
        exit_code: exit_code(verdict.result),
        stdout,
        stderr: notes.iter().map(|n| format!("note: {n}\n")).collect(),
        verdict: Some(verdict),
    }
}

// ---------------------------------------------------------------------------------------------
// The gate
// ---------------------------------------------------------------------------------------------

const GROUP: &str = "pullwarden.dev";
const KIND: &str = "PolicyGate";

/// The PolicyGate of a manifest file: the first one, or the one named `name`; fields the CRD
/// does not define are refused.
pub fn load_gate(yaml: &str, name: Option<&str>) -> Result<PolicyGate, InputError> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).map_err(|e| err(format!("not YAML: {e}")))?;
        match value {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                objects.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => objects.push(other),
        }
    }
    let is_gate = |v: &Value| {
        v.get("kind").and_then(Value::as_str) == Some(KIND)
            && v.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|a| a.split('/').next() == Some(GROUP))
    };
    let gate_name = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let gates: Vec<&Value> = objects.iter().filter(|v| is_gate(v)).collect();
    let chosen = match name {
        None => gates.first().copied(),
        Some(n) => gates
            .iter()
            .copied()
            .find(|v| gate_name(v).as_deref() == Some(n)),
    };
    let Some(chosen) = chosen else {
        let found: Vec<String> = if gates.is_empty() {
            objects
                .iter()
                .map(|v| {
                    v.get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("(no kind)")
                        .to_string()
                })
                .collect()
        } else {
            gates
                .iter()
                .map(|v| format!("PolicyGate {}", gate_name(v).unwrap_or_default()))
                .collect()
        };
        let what = match name {
            Some(n) => format!("no {KIND} named {n}"),
            None => format!("no {KIND} (apiVersion {GROUP}/…)"),
        };
        return Err(err(if found.is_empty() {
            format!("{what}: the file holds no objects")
        } else {
            format!("{what}; the file holds: {}", found.join(", "))
        }));
    };
    let crd = PolicyGate::crd();
    let version = chosen
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let served = crd
        .spec
        .versions
        .iter()
        .find(|v| format!("{GROUP}/{}", v.name) == version)
        .ok_or_else(|| {
            err(format!(
                "apiVersion {version} is not served; use {GROUP}/{}",
                crd.spec
                    .versions
                    .first()
                    .map(|v| v.name.as_str())
                    .unwrap_or("v1alpha1")
            ))
        })?;
    if let Some(schema) = served
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
    {
        let mut unknown = Vec::new();
        unknown_fields(chosen, schema, "", &mut unknown);
        if !unknown.is_empty() {
            return Err(err(format!(
                "unknown field{} {} (not in the PolicyGate schema; kubectl apply refuses it too)",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", ")
            )));
        }
    }
    serde_json::from_value(chosen.clone()).map_err(|e| err(format!("not a valid {KIND}: {e}")))
}

/// Paths in `value` of fields `schema` does not define. `apiVersion`, `kind` and `metadata`
/// (ObjectMeta, which a CRD schema does not spell out) are every object's and left to the
/// apiserver's own rules.
fn unknown_fields(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            let mut props: BTreeMap<&str, &JSONSchemaProps> = BTreeMap::new();
            let groups = [&schema.all_of, &schema.any_of, &schema.one_of];
            for s in std::iter::once(schema).chain(groups.into_iter().flatten().flatten()) {
                for (k, v) in s.properties.iter().flatten() {
                    props.insert(k, v);
                }
            }
            let extra = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(s)) => Some(Some(s.as_ref())),
                Some(JSONSchemaPropsOrBool::Bool(true)) => Some(None),
                _ => None,
            };
            for (k, v) in map {
                let child = format!("{path}.{k}");
                match (props.get(k.as_str()), extra) {
                    _ if path.is_empty()
                        && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
                    (Some(s), _) => unknown_fields(v, s, &child, out),
                    (None, Some(Some(s))) => unknown_fields(v, s, &child, out),
                    (None, Some(None)) => {}
                    (None, None) => out.push(child.trim_start_matches('.').to_string()),
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(s)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Compiles the gate as the controller does; an invalid gate reads
/// `InvalidExpression: rule x: if: …` (the condition reason the controller would set, then the
/// message).
pub fn compile_gate(gate: &PolicyGate) -> Result<CompiledGate, InputError> {
    CompiledGate::compile(&gate.spec).map_err(|e| err(format!("{}: {}", e.reason, e.message)))
}

// ---------------------------------------------------------------------------------------------
// The pull request
// ---------------------------------------------------------------------------------------------

/// What the `--pr` file held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrSource {
    Snapshot,
    GithubPull,
    GithubBundle,
    GitlabMergeRequest,
    GitlabBundle,
}

/// The pull request of a `--pr` file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedPr {
    pub snapshot: PrSnapshot,
    pub source: PrSource,
    /// What the user should know about the input (a listing that looks cut short).
    pub notes: Vec<String>,
}

/// Parses a `--pr` file: a snapshot, or a GitHub or GitLab pull request (bundle).
pub fn parse_pr(json: &str) -> Result<ParsedPr, InputError> {
    let value: Value = serde_json::from_str(json).map_err(|e| err(format!("not JSON: {e}")))?;
    let has = |k: &str| value.get(k).is_some();
    if has("headSha") {
        let snapshot: PrSnapshot = serde_json::from_value(value)
            .map_err(|e| err(format!("not a pull-request snapshot: {e}")))?;
        return Ok(ParsedPr {
            snapshot,
            source: PrSource::Snapshot,
            notes: Vec::new(),
        });
    }
    if let Some(pull) = value.get("pull_request") {
        return github_pr(pull, Some(&value), PrSource::GithubBundle);
    }
    if has("head") && has("base") && has("number") {
        return github_pr(&value, None, PrSource::GithubPull);
    }
    if let Some(mr) = value.get("merge_request") {
        return gitlab_pr(mr, Some(&value), PrSource::GitlabBundle);
    }
    if has("iid") && has("source_branch") {
        return gitlab_pr(&value, None, PrSource::GitlabMergeRequest);
    }
    Err(err(
        "cannot tell what this is: expected a snapshot (with headSha), a GitHub pull request \
         (with head, base, number) or a bundle with pull_request, or a GitLab merge request \
         (with iid, source_branch) or a bundle with merge_request",
    ))
}

/// `bundle[key]` as `T`, `None` when absent or null.
fn field<T: DeserializeOwned>(bundle: Option<&Value>, key: &str) -> Result<Option<T>, InputError> {
    match bundle.and_then(|b| b.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| err(format!("{key}: {e}"))),
    }
}

/// `bundle[key]` as a list of `T`: the list itself, or the list under `inner` of an object
/// (a response that wraps its list, like GitHub's combined status or check-runs).
fn list<T: DeserializeOwned>(
    bundle: Option<&Value>,
    key: &str,
    inner: Option<&str>,
) -> Result<Vec<T>, InputError> {
    let v = match (bundle.and_then(|b| b.get(key)), inner) {
        (None | Some(Value::Null), _) => return Ok(Vec::new()),
        (Some(Value::Object(m)), Some(inner)) => m.get(inner).cloned().unwrap_or(Value::Null),
        (Some(v), _) => v.clone(),
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(v).map_err(|e| err(format!("{key}: {e}")))
}

/// The extensions both bundles accept: `teams` (team → member logins) and `preview`.
fn extras(bundle: Option<&Value>, s: &mut PrSnapshot) -> Result<(), InputError> {
    let teams: Option<BTreeMap<String, BTreeSet<String>>> = field(bundle, "teams")?;
    if let Some(teams) = teams {
        s.teams = teams;
    }
    s.preview = field::<PreviewState>(bundle, "preview")?;
    Ok(())
}

/// A note, and `truncated`, when the input lists fewer `what` than the pull request counts.
fn short_listing(
    what: &str,
    listed: usize,
    counted: Option<u64>,
    truncated: &mut bool,
    notes: &mut Vec<String>,
) {
    if let Some(n) = counted.filter(|n| *n > listed as u64) {
        *truncated = true;
        notes.push(format!(
            "the pull request has {n} {what}, the input lists {listed}: rules that need every \
             one can fail but not pass"
        ));
    }
}

fn github_pr(
    pull: &Value,
    bundle: Option<&Value>,
    source: PrSource,
) -> Result<ParsedPr, InputError> {
    let p: github::Pull = serde_json::from_value(pull.clone())
        .map_err(|e| err(format!("not a GitHub pull request: {e}")))?;
    let (files_count, commits_count) = (p.changed_files, p.commits);
    let body = pull.get("body").and_then(Value::as_str).unwrap_or_default();
    let mut s = PrSnapshot::from_pull_request(&github::to_pull(p), body);
    let files: Vec<Value> = list(bundle, "files", None)?;
    s.files = files
        .iter()
        .map(|f| {
            let json: github::FileJson =
                serde_json::from_value(f.clone()).map_err(|e| err(format!("files: {e}")))?;
            Ok(SnapshotFile::from_changed_file(
                &github::to_file(json),
                f.get("patch").and_then(Value::as_str),
            ))
        })
        .collect::<Result<_, InputError>>()?;
    let reviews: Vec<github::ReviewJson> = list(bundle, "reviews", None)?;
    s.reviews = reviews.into_iter().map(github::to_review).collect();
    let commits: Vec<github::CommitJson> = list(bundle, "commits", None)?;
    s.commits = commits.into_iter().map(github::to_commit).collect();
    let statuses: Vec<github::StatusJson> = list(bundle, "statuses", Some("statuses"))?;
    let runs: Vec<github::CheckRunJson> = list(bundle, "check_runs", Some("check_runs"))?;
    let checks: Vec<CheckResult> = statuses
        .into_iter()
        .map(github::to_status_check)
        .chain(runs.into_iter().map(github::to_check_run))
        .collect();
    s.checks = github::merge_checks(checks);
    extras(bundle, &mut s)?;
    let mut notes = Vec::new();
    short_listing(
        "changed files",
        s.files.len(),
        files_count,
        &mut s.files_truncated,
        &mut notes,
    );
    short_listing(
        "commits",
        s.commits.len(),
        commits_count,
        &mut s.commits_truncated,
        &mut notes,
    );
    Ok(ParsedPr {
        snapshot: s,
        source,
        notes,
    })
}

fn gitlab_pr(mr: &Value, bundle: Option<&Value>, source: PrSource) -> Result<ParsedPr, InputError> {
    let m: gitlab::MergeRequestJson = serde_json::from_value(mr.clone())
        .map_err(|e| err(format!("not a GitLab merge request: {e}")))?;
    let body = mr
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut s = PrSnapshot::from_pull_request(&gitlab::to_pull(m), body);
    let diffs: Vec<Value> = list(bundle, "diffs", None)?;
    let mut notes = Vec::new();
    for d in &diffs {
        let flag = |k: &str| d.get(k).and_then(Value::as_bool) == Some(true);
        if flag("too_large") || flag("collapsed") {
            notes.push(format!(
                "GitLab sent no diff for {} (too large or collapsed): its lines are neither \
                 counted nor scanned",
                d.get("new_path").and_then(Value::as_str).unwrap_or("?")
            ));
        }
    }
    s.files = diffs
        .iter()
        .map(|d| {
            let json: gitlab::DiffJson =
                serde_json::from_value(d.clone()).map_err(|e| err(format!("diffs: {e}")))?;
            // A collapsed or too-large diff arrives empty: that is "no diff", not "no lines".
            let patch = d
                .get("diff")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty());
            Ok(SnapshotFile::from_changed_file(
                &gitlab::to_file(json),
                patch,
            ))
        })
        .collect::<Result<_, InputError>>()?;
    if let Some(a) = field::<gitlab::ApprovalsJson>(bundle, "approvals")? {
        s.reviews = gitlab::to_reviews(a);
    }
    let signatures: BTreeMap<String, gitlab::SignatureJson> =
        field(bundle, "signatures")?.unwrap_or_default();
    let commits: Vec<gitlab::CommitJson> = list(bundle, "commits", None)?;
    s.commits = commits
        .into_iter()
        .map(|c| crate::forge::Commit {
            // As the provider decides: verified only when GitLab says `verified`.
            verified: signatures
                .get(&c.id)
                .and_then(|sig| sig.verification_status.as_deref())
                == Some("verified"),
            sha: c.id,
            author: c.author_name.unwrap_or_default(),
            message: c.message,
        })
        .collect();
    let statuses: Vec<gitlab::StatusJson> = list(bundle, "statuses", None)?;
    s.checks = github::merge_checks(statuses.into_iter().map(gitlab::to_check).collect());
    let versions: Vec<gitlab::VersionJson> = list(bundle, "versions", None)?;
    s.head_pushed_at = gitlab::pushed_at(&versions, &s.head_sha);
    extras(bundle, &mut s)?;
    Ok(ParsedPr {
        snapshot: s,
        source,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::{CheckState, FileStatus, ReviewState};
    use crate::gate::{Outcome, evaluate};

    macro_rules! data {
        ($path:literal) => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../test-data/", $path))
        };
    }
    macro_rules! example {
        ($path:literal) => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/", $path))
        };
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn github_bundle() -> Value {
        serde_json::json!({
            "pull_request": json(data!("github/rest/pulls-get.json")),
            "files": json(data!("github/rest/pulls-list-files.json")),
            "reviews": json(data!("github/rest/pulls-list-reviews.json")),
            "commits": json(data!("github/rest/pulls-list-commits.json")),
            "statuses": json(data!("github/rest/repos-list-commit-statuses-for-ref.json")),
            "check_runs": json(data!("github/rest/checks-list-for-ref.json")),
        })
    }

    #[test]
    fn github_bundles_parse_through_the_provider_types() {
        let parsed = parse_pr(&github_bundle().to_string()).unwrap();
        assert_eq!(parsed.source, PrSource::GithubBundle);
        let s = &parsed.snapshot;
        assert_eq!((s.number, s.author.as_str()), (1347, "octocat"));
        assert_eq!(s.body, "Please pull these awesome changes in!");
        assert_eq!(
            (s.source_branch.as_str(), s.target_branch.as_str()),
            ("new-topic", "master")
        );
        assert_eq!(s.head_sha, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
        assert_eq!(s.labels, vec!["bug".to_string()]);
        // The file's patch is the diff secretScan reads (the example holds only hunk headers).
        assert_eq!(s.files.len(), 1);
        assert_eq!(
            (s.files[0].path.as_str(), s.files[0].status),
            ("file1.txt", FileStatus::Added)
        );
        assert_eq!((s.files[0].additions, s.files[0].deletions), (103, 21));
        assert_eq!(s.files[0].added_lines.as_deref(), Some(&[][..]));
        let r = &s.reviews[0];
        assert_eq!(
            (r.user.as_str(), r.state),
            ("octocat", ReviewState::Approved)
        );
        assert_eq!(
            r.commit_sha.as_deref(),
            Some("ecdd80bb57125d7ba9641ffaa4d7d2c19d3f3091")
        );
        assert_eq!(s.commits.len(), 1);
        assert!(!s.commits[0].verified);
        // The status list (one `continuous-integration/jenkins`) and the check run (neutral).
        let checks: Vec<(&str, CheckState)> = s
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.state))
            .collect();
        assert_eq!(
            checks,
            vec![
                ("continuous-integration/jenkins", CheckState::Success),
                ("mighty_readme", CheckState::Neutral)
            ]
        );
        // The example pull request counts 5 files and 3 commits but the lists hold 1 each:
        // the listing counts as cut short, and the user is told.
        assert!(s.files_truncated && s.commits_truncated);
        assert_eq!(parsed.notes.len(), 2);
        assert!(
            parsed.notes[0].contains("5 changed files, the input lists 1"),
            "{:?}",
            parsed.notes
        );
        let spec: crate::api::PolicyGateSpec = serde_yaml::from_str(
            "repositoryRef: {name: w}\nrules:\n- name: txt\n  changedFiles: {paths: ['*.txt']}\n- name: big\n  maxFiles: {max: 0}\n",
        )
        .unwrap();
        let v = evaluate(&spec, s);
        assert_eq!(v.rules[0].outcome, Outcome::Error, "{}", v.rules[0].reason);
        assert_eq!(v.rules[1].outcome, Outcome::Fail, "{}", v.rules[1].reason);

        // The combined status response works as well as the status list; teams and the
        // preview ride along.
        let mut b = github_bundle();
        b["statuses"] = json(data!("github/rest/repos-get-combined-status-for-ref.json"));
        b["teams"] = serde_json::json!({"octo-org/reviewers": ["octocat"]});
        b["preview"] = serde_json::json!({"ready": true, "healthy": false, "message": "probe"});
        let s = parse_pr(&b.to_string()).unwrap().snapshot;
        let names: Vec<&str> = s.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "continuous-integration/jenkins",
                "mighty_readme",
                "security/brakeman"
            ]
        );
        assert!(s.team("octo-org/reviewers").unwrap().contains("octocat"));
        assert_eq!(s.preview.unwrap().healthy, Some(false));
    }

    #[test]
    fn a_bare_github_pull_request_is_metadata_only() {
        let parsed = parse_pr(data!("github/rest/pulls-get.json")).unwrap();
        assert_eq!(parsed.source, PrSource::GithubPull);
        let s = parsed.snapshot;
        assert!(s.files.is_empty() && s.reviews.is_empty() && s.checks.is_empty());
        // It says it changes 5 files and lists none: file rules cannot pass on it.
        assert!(s.files_truncated && s.commits_truncated);
        assert_eq!(s.title, "Amazing new feature");
    }

    #[test]
    fn gitlab_bundles_parse_through_the_provider_types() {
        let mr = json(data!("gitlab/rest/get-single-merge-request.json"));
        let sha = mr["sha"].as_str().unwrap().to_string();
        let commits = serde_json::json!([
            {"id": sha, "author_name": "Example User", "message": "Update VERSION"},
            {"id": "0000000000000000000000000000000000000001", "author_name": "x", "message": "y"},
        ]);
        let bundle = serde_json::json!({
            "merge_request": mr,
            "diffs": json(data!("gitlab/rest/list-merge-request-diffs.json")),
            "approvals": json(data!("gitlab/rest/get-merge-request-approvals.json")),
            "statuses": json(data!("gitlab/rest/list-commit-statuses.json")),
            "commits": commits,
            "signatures": {sha.clone(): {"verification_status": "verified"}},
            "versions": [
                {"head_commit_sha": "ffff", "created_at": "2016-06-01T00:00:00Z"},
                {"head_commit_sha": sha, "created_at": "2016-06-09T01:40:00Z"},
            ],
        });
        let parsed = parse_pr(&bundle.to_string()).unwrap();
        assert_eq!(parsed.source, PrSource::GitlabBundle);
        let s = &parsed.snapshot;
        assert_eq!((s.number, s.target_branch.as_str()), (133, "main"));
        assert_eq!(
            s.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            vec!["README", "VERSION"]
        );
        assert!(s.files.iter().all(|f| f.added_lines.is_some()));
        assert_eq!(s.reviews.len(), 1);
        assert_eq!(s.reviews[0].user, "root");
        assert_eq!(
            s.head_pushed_at,
            Some("2016-06-09T01:40:00Z".parse().unwrap())
        );
        assert_eq!(
            s.commits.iter().map(|c| c.verified).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert!(s.checks.iter().all(|c| c.state == CheckState::Pending));
        // root approved at 01:45:21, after the 01:40 push: the approval is on the head.
        let spec: crate::api::PolicyGateSpec = serde_yaml::from_str(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  approvals: {count: 1}\n",
        )
        .unwrap();
        assert_eq!(evaluate(&spec, s).rules[0].reason, "approvals 1/1 (root)");
        // A bare merge request is recognised too.
        let bare = parse_pr(data!("gitlab/rest/get-single-merge-request.json")).unwrap();
        assert_eq!(bare.source, PrSource::GitlabMergeRequest);
        assert_eq!(bare.snapshot.head_sha, sha);
    }

    #[test]
    fn snapshots_and_unknown_shapes() {
        let parsed = parse_pr(example!("gates/pr-passing.json")).unwrap();
        assert_eq!(parsed.source, PrSource::Snapshot);
        assert_eq!(parsed.snapshot.files.len(), 3);
        let again = serde_json::to_string(&parsed.snapshot).unwrap();
        assert_eq!(parse_pr(&again).unwrap().snapshot, parsed.snapshot);

        let e = parse_pr(r#"{"title": "x"}"#).unwrap_err();
        assert!(e.0.starts_with("cannot tell what this is"), "{e}");
        assert!(parse_pr("not json").unwrap_err().0.starts_with("not JSON"));
        let e = parse_pr(r#"{"headSha": "h", "title": 3}"#).unwrap_err();
        assert!(e.0.starts_with("not a pull-request snapshot"), "{e}");
        // A bundle part of the wrong shape is named.
        let mut b = github_bundle();
        b["reviews"] = serde_json::json!([{"state": 1}]);
        let e = parse_pr(&b.to_string()).unwrap_err();
        assert!(e.0.starts_with("reviews: "), "{e}");
    }

    const GATE: &str = "apiVersion: pullwarden.dev/v1alpha1\nkind: PolicyGate\nmetadata: {name: NAME}\nspec:\n  repositoryRef: {name: web}\n  rules:\n  - name: a\n    approvals: {count: 1}\n";

    fn gate_doc(name: &str) -> String {
        GATE.replace("NAME", name)
    }

    #[test]
    fn gates_are_picked_from_multi_document_files() {
        let file = format!(
            "apiVersion: pullwarden.dev/v1alpha1\nkind: Repository\nmetadata: {{name: web}}\nspec: {{url: 'https://x'}}\n---\n{}---\n{}",
            gate_doc("first"),
            gate_doc("second")
        );
        assert_eq!(
            load_gate(&file, None).unwrap().metadata.name.as_deref(),
            Some("first")
        );
        assert_eq!(
            load_gate(&file, Some("second"))
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("second")
        );
        let e = load_gate(&file, Some("third")).unwrap_err();
        assert_eq!(
            e.0,
            "no PolicyGate named third; the file holds: PolicyGate first, PolicyGate second"
        );
        let e = load_gate(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "no PolicyGate (apiVersion pullwarden.dev/…); the file holds: ConfigMap"
        );
        // `kubectl get -o yaml` output is a List.
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            serde_json::to_string(&serde_yaml::from_str::<Value>(&gate_doc("listed")).unwrap())
                .unwrap()
        );
        assert_eq!(
            load_gate(&list, None).unwrap().metadata.name.as_deref(),
            Some("listed")
        );
        let e = load_gate(&gate_doc("g").replace("v1alpha1", "v9"), None).unwrap_err();
        assert_eq!(
            e.0,
            "apiVersion pullwarden.dev/v9 is not served; use pullwarden.dev/v1alpha1"
        );
    }

    #[test]
    fn unknown_fields_are_refused_like_kubectl_does() {
        let typo = gate_doc("g").replace("count: 1", "count: 1, invalidateOnPsh: false");
        let e = load_gate(&typo, None).unwrap_err();
        assert_eq!(
            e.0,
            "unknown field spec.rules[0].approvals.invalidateOnPsh (not in the PolicyGate schema; kubectl apply refuses it too)"
        );
        let two = gate_doc("g").replace("  rules:", "  mod: evaluate\n  rules:")
            + "    signedCommits: {really: true}\n";
        let e = load_gate(&two, None).unwrap_err();
        assert!(
            e.0.starts_with("unknown fields spec.mod, spec.rules[0].signedCommits.really"),
            "{e}"
        );
        // metadata is the apiserver's business, and the example gate is clean.
        let meta = gate_doc("g").replace(
            "metadata: {name: g}",
            "metadata: {name: g, labels: {a: b}, annotations: {x: y}}",
        );
        load_gate(&meta, None).unwrap();
        load_gate(example!("gates/gate.yaml"), None).unwrap();
        load_gate(example!("policygate.yaml"), None).unwrap();
    }

    #[test]
    fn invalid_gates_exit_2_with_the_controllers_reason() {
        let bad = gate_doc("g").replace(
            "    approvals: {count: 1}\n",
            "    if: pr.lables.size() > 0\n    approvals: {count: 1}\n",
        );
        let out = gate_test(&bad, example!("gates/pr-passing.json"), &Default::default());
        assert_eq!(out.exit_code, 2);
        assert!(out.stdout.is_empty());
        assert!(
            out.stderr.starts_with("InvalidExpression: rule a: if: ")
                && out.stderr.contains("lables"),
            "{}",
            out.stderr
        );
        let out = gate_test(&gate_doc("g"), "[]", &Default::default());
        assert_eq!(out.exit_code, 2);
        assert!(
            out.stderr.starts_with("--pr: cannot tell"),
            "{}",
            out.stderr
        );
        let out = gate_test("kind: Nope", "{}", &Default::default());
        assert_eq!(out.exit_code, 2);
        assert!(
            out.stderr.starts_with("--gate: no PolicyGate"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn example_gate_passes_and_fails_as_documented() {
        let gate = example!("gates/gate.yaml");
        let pass = gate_test(gate, example!("gates/pr-passing.json"), &Default::default());
        assert_eq!(pass.exit_code, 0, "{}{}", pass.stdout, pass.stderr);
        let v = pass.verdict.as_ref().unwrap();
        assert_eq!(v.result, GateResult::Passed);
        // Without the docs label, docs_only is skipped; everything else passes.
        let outcomes: Vec<(&str, Outcome)> = v
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("reviewed", Outcome::Pass),
                ("maintainers", Outcome::Pass),
                ("security_veto", Outcome::Pass),
                ("docs_only", Outcome::Skipped),
                ("no_secrets", Outcome::Pass),
                ("small_change", Outcome::Pass),
                ("conventional_title", Outcome::Pass),
                ("ci", Outcome::Pass),
            ]
        );
        assert!(
            pass.stdout.starts_with(
                "gate web-merge-policy, pull request #482 at 3f2c9a1 (feature/persistent-cart → main)\n\nRULE"
            ),
            "{}",
            pass.stdout
        );
        assert!(
            pass.stdout.ends_with("result: passed (7/7 rules passed)\n"),
            "{}",
            pass.stdout
        );
        assert!(pass.stderr.is_empty(), "{}", pass.stderr);

        let raw = example!("gates/pr-failing.json");
        let fail = gate_test(
            gate,
            raw,
            &GateTestOptions {
                explain: true,
                ..Default::default()
            },
        );
        assert_eq!(fail.exit_code, 1, "{}{}", fail.stdout, fail.stderr);
        let v = fail.verdict.as_ref().unwrap();
        assert_eq!(v.result, GateResult::Failed);
        let by_name = |n: &str| v.rules.iter().find(|r| r.name == n).unwrap();
        assert_eq!(
            by_name("maintainers").reason,
            "approvals 1/2 (mo; lee's approval is on an older commit; yuki is not an allowed approver)"
        );
        // yuki's later approval replaces the change request: the veto is lifted.
        assert_eq!(by_name("security_veto").outcome, Outcome::Pass);
        assert_eq!(
            by_name("no_secrets").reason,
            "1 possible secret (deploy/staging.env:3 (aws-access-key-id))"
        );
        assert!(by_name("ci").pending);
        // The key is in the input and nowhere in what is printed.
        let key = "AKIAFAKEFAKEFAKEFAKE";
        assert!(raw.contains(key));
        assert!(!fail.stdout.contains(key) && !fail.stderr.contains(key));
        let json_out = gate_test(
            gate,
            raw,
            &GateTestOptions {
                format: OutputFormat::Json,
                ..Default::default()
            },
        );
        assert!(!json_out.stdout.contains(key));
        let parsed: GateVerdict = serde_json::from_str(&json_out.stdout).unwrap();
        assert_eq!(&parsed, v);
    }

    #[test]
    fn exit_codes_and_evaluate_mode() {
        assert_eq!(exit_code(GateResult::Passed), 0);
        assert_eq!(exit_code(GateResult::Failed), 1);
        assert_eq!(exit_code(GateResult::Pending), 1);
        assert_eq!(exit_code(GateResult::Error), 2);
        // An unsupported plugin rule the gate needs is an evaluation error: exit 2.
        let plugin = gate_doc("g").replace(
            "    approvals: {count: 1}\n",
            "    plugin: {ref: {name: license}}\n",
        );
        let out = gate_test(
            &plugin,
            example!("gates/pr-passing.json"),
            &Default::default(),
        );
        assert_eq!(out.exit_code, 2, "{}", out.stdout);
        assert!(out.stdout.contains("unsupported"), "{}", out.stdout);
        // `mode: evaluate` keeps the would-be verdict's exit code and says so.
        let evaluate_mode = gate_doc("g").replace("  rules:", "  mode: evaluate\n  rules:");
        let snapshot = r#"{"number":1,"title":"t","author":"a","sourceBranch":"f","targetBranch":"main","headSha":"h"}"#;
        let out = gate_test(&evaluate_mode, snapshot, &Default::default());
        assert_eq!(out.exit_code, 1, "{}", out.stdout);
        assert!(
            out.stderr.starts_with("note: mode: evaluate"),
            "{}",
            out.stderr
        );
    }
}
