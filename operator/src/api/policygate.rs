//! `PolicyGate`: compliance rules evaluated on pull requests and reported as a status check.

use super::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Compliance rules evaluated on the open pull requests (at most 100 per Repository, the most
/// recently updated) of the selected Repositories. The result is one commit status per gate per
/// head SHA, written only when the verdict changes, and the per-rule table: a check run when
/// the credential is a GitHub App, otherwise the gate's section of the pull request's sticky
/// comment.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "pullwarden.dev",
    version = "v1alpha1",
    kind = "PolicyGate",
    namespaced,
    status = "PolicyGateStatus",
    shortname = "gate",
    shortname = "pwgate",
    category = "pullwarden",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.ruleCount"),
    printcolumn(name = "Passed", type_ = "integer", json_path = ".status.passedCount"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failedCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.repositorySelector) != has(self.repositoryRef)").message("set exactly one of repositorySelector or repositoryRef"))]
#[x_kube(validation = Rule::new("self.rules.all(r, self.rules.exists_one(o, o.name == r.name))").message("rule names must be unique"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyGateSpec {
    /// Repositories (in this namespace) whose pull requests are evaluated, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_selector: Option<RepositorySelector>,
    /// One Repository whose pull requests are evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_ref: Option<LocalObjectReference>,
    /// Status check name. Default `pullwarden/gate/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub context: Option<String>,
    /// `enforce` reports failures as a failing check; `evaluate` reports the result with a
    /// success state so it never blocks a merge (like GitHub rulesets' evaluate mode).
    #[serde(default)]
    pub mode: GateMode,
    /// The rules. Each has a unique name and exactly one rule kind.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<GateRule>,
    /// Boolean expression over rule names (`&&`, `||`, `!`, parentheses), e.g.
    /// `approvals && (no_secrets || docs_only)`. Default: every rule must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub expression: Option<String>,
    /// Periodic re-evaluation even without events (the safety net: pull request, review,
    /// label and comment webhooks, finished checks, polled pull request changes and preview
    /// readiness re-evaluate at once).
    #[serde(default = "default_gate_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Duration,
    /// Stop evaluating; statuses already written stay.
    #[serde(default)]
    pub suspend: bool,
}

fn default_gate_interval() -> Duration {
    "10m".parse().expect("valid duration")
}

/// Enforcement mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    #[default]
    Enforce,
    Evaluate,
}

impl GateMode {
    /// As written in the spec (and the `mode` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            GateMode::Enforce => "enforce",
            GateMode::Evaluate => "evaluate",
        }
    }
}

/// One named rule with exactly one rule kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.approvals), has(self.disapproval), has(self.changedFiles), has(self.modifiedLines), has(self.maxFiles), has(self.branches), has(self.labels), has(self.title), has(self.linkedIssue), has(self.signedCommits), has(self.checks), has(self.secretScan), has(self.previewHealthy), has(self.cel), has(self.plugin)].filter(x, x).size() == 1").message("each rule needs exactly one rule kind (approvals, disapproval, changedFiles, modifiedLines, maxFiles, branches, labels, title, linkedIssue, signedCommits, checks, secretScan, previewHealthy, cel, plugin)"))]
pub struct GateRule {
    /// Rule name, used in `expression` and in the reported summary.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: String,
    /// CEL condition over `pr` (the variables of `cel`); when false the rule is skipped: it is
    /// left out of `&&` and `||`, and a gate whose rules are all skipped passes. An `if` that
    /// fails to evaluate makes the rule an error, never skipped.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub if_: Option<String>,
    /// Required approving reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalsRule>,
    /// A veto: fails while any of these users or teams requests changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disapproval: Option<DisapprovalRule>,
    /// Passes when every changed file matches `paths` (minus `ignore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_files: Option<ChangedFilesRule>,
    /// Passes when additions + deletions stay within `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_lines: Option<MaxCount>,
    /// Passes when at most `max` files changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<MaxCount>,
    /// Source and target branch globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<BranchesRule>,
    /// Required and forbidden labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelsRule>,
    /// Title regular expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<TitleRule>,
    /// The title or body references an issue matching `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_issue: Option<LinkedIssueRule>,
    /// Every commit is verified (signed) according to the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_commits: Option<Empty>,
    /// Other checks of the head SHA succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksRule>,
    /// Added lines contain no credentials (cloud keys, tokens, private keys, extra patterns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_scan: Option<SecretScanRule>,
    /// The pull request's PreviewEnvironment is Ready and its HealthChecks are OK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_healthy: Option<Empty>,
    /// A CEL expression over `pr` that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel: Option<CelRule>,
    /// A WASM Plugin decides. Plugins cannot run yet: the rule reports `unsupported`, which
    /// never passes (a gate using it fails until plugins land, or use it under `mode: evaluate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRule>,
}

/// A rule kind without parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

/// Approval requirements (policy-bot vocabulary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalsRule {
    /// Number of approvals needed.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 50))]
    pub count: u32,
    /// Only approvals from these users count (with `teams`; both empty: anyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Only approvals from members of these teams count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Count the author's own approval.
    #[serde(default)]
    pub allow_author: bool,
    /// Approvals given before the latest push do not count.
    #[serde(default = "yes")]
    pub invalidate_on_push: bool,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// Veto holders.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.users) + size(self.teams) > 0").message("disapproval needs users or teams"))]
pub struct DisapprovalRule {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
}

/// Changed-file globs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangedFilesRule {
    /// Globs every changed file must match.
    #[schemars(length(min = 1, max = 64))]
    pub paths: Vec<String>,
    /// Files ignored by this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

/// An upper bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaxCount {
    #[schemars(range(min = 0))]
    pub max: u32,
}

/// Branch globs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.source) + size(self.target) > 0").message("branches needs source or target globs"))]
pub struct BranchesRule {
    #[serde(default)]
    pub source: Vec<String>,
    #[serde(default)]
    pub target: Vec<String>,
}

/// Label requirements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.require) + size(self.forbid) > 0").message("labels needs require or forbid"))]
pub struct LabelsRule {
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default)]
    pub forbid: Vec<String>,
}

/// Title regular expressions (RE2 syntax).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.matches) || has(self.notMatches)").message("title needs matches or notMatches"))]
pub struct TitleRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub not_matches: Option<String>,
}

/// Issue reference pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkedIssueRule {
    /// Regular expression an issue reference must match, e.g. `[A-Z]+-[0-9]+` or `#[0-9]+`.
    #[serde(default = "default_issue_pattern")]
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: String,
}

fn default_issue_pattern() -> String {
    "#[0-9]+".into()
}

/// Required checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChecksRule {
    /// Status contexts or check-run names that must have succeeded on the head SHA.
    #[schemars(length(min = 1, max = 64))]
    pub require: Vec<String>,
}

/// Credential scanning of added lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretScanRule {
    /// Extra patterns on top of the built-in set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub extra_patterns: Vec<NamedPattern>,
}

/// A named regular expression.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedPattern {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(length(min = 1, max = 1024))]
    pub regex: String,
}

/// A CEL rule: a Common Expression Language expression over `pr` that must be true.
///
/// `pr` has: `number` (int); `title`, `body`, `author`, `source` (head branch), `target` (base
/// branch), `headSha` (string); `labels` (list of string); `draft`, `fork` (bool); `files` (list
/// of `{path, previousPath, status, additions, deletions}`, status `added`, `modified`,
/// `removed`, `renamed` or `other`); `additions`, `deletions` (int, over all files);
/// `approvals` (logins whose approval counts for the head commit, the author's excluded);
/// `reviews` (list of `{user, state, onHead}`, state `approved`, `changes_requested`,
/// `commented`, `dismissed` or `pending`); `changesRequested` (logins); `commits` (list of
/// `{sha, author, message, verified}`); `checks` (map of status context or check-run name to
/// `success`, `failure`, `error`, `pending`, `neutral` or `skipped`); `preview`
/// (`{exists, ready, healthy}`); `teams` (map of each team the gate's rules name to those of
/// the pull request's reviewers and its author who are members: membership is asked per login,
/// never listed); `filesTruncated`, `commitsTruncated` (bool: the forge's listing was cut short).
/// Numbers are `int`. Only the CEL standard library is available (`size`, `contains`,
/// `startsWith`, `endsWith`, `matches`, `in`, `has`, `all`, `exists`, `exists_one`, `map`,
/// `filter`, conversions). An unknown variable, field of `pr` or function is refused when the
/// PolicyGate is applied; a runtime error (a missing map key, a type mismatch) makes the rule an
/// error, never a pass. Comprehensions may run at most 100000 iterations per expression.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CelRule {
    /// CEL expression over `pr` (`pr.title`, `pr.author`, `pr.labels`, `pr.files`, `pr.approvals`,
    /// `pr.commits`, `pr.checks`, ...; see the rule's description) that must evaluate to true.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
    /// Shown when the expression is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// A WASM plugin rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRule {
    /// The Plugin (with a `wasm` source) that decides.
    #[serde(rename = "ref")]
    pub ref_: LocalObjectReference,
}

/// Observed state of a PolicyGate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGateStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Number of rules.
    #[serde(default)]
    pub rule_count: u32,
    /// Repositories currently selected.
    #[serde(default)]
    pub repository_count: u32,
    /// Latest evaluations (at most 100, newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub evaluations: Vec<GateEvaluation>,
    /// Pull requests whose latest evaluation passed.
    #[serde(default)]
    pub passed_count: u32,
    /// Pull requests whose latest evaluation failed or could not decide (`error`).
    #[serde(default)]
    pub failed_count: u32,
}

/// One evaluation of one pull request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateEvaluation {
    pub repository: String,
    pub pull_request: u64,
    pub head_sha: String,
    /// `passed`, `failed`, `pending` or `error`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub evaluated_at: Time,
}

impl HasCommonStatus for PolicyGate {
    fn common(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}
