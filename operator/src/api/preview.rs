//! `PreviewEnvironment`: one preview of one pull request (or branch).

use super::common::*;
use k8s_openapi::api::core::v1::{LimitRangeSpec, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One preview of one pull request or branch. Created by the Repository controller for each
/// selected pull request (owned by the Repository), or by hand. `kubectl get previewenvironments`
/// lists the live previews.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "pullwarden.dev",
    version = "v1alpha1",
    kind = "PreviewEnvironment",
    namespaced,
    status = "PreviewEnvironmentStatus",
    shortname = "preview",
    shortname = "pwpe",
    category = "pullwarden",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repositoryRef.name"
    ),
    printcolumn(name = "PR", type_ = "integer", json_path = ".spec.pullRequest"),
    printcolumn(
        name = "Branch",
        type_ = "string",
        json_path = ".spec.branch",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "SHA",
        type_ = "string",
        json_path = ".status.deployedSha",
        priority = 1
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.pullRequest) != has(self.branch)").message("set exactly one of pullRequest or branch"))]
#[serde(rename_all = "camelCase")]
pub struct PreviewEnvironmentSpec {
    /// The Repository this preview deploys from.
    pub repository_ref: LocalObjectReference,
    /// Pull request number (exclusive with `branch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pull_request: Option<u64>,
    /// Branch to preview (exclusive with `pullRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// The exact revision to deploy. The Repository controller moves it on every push; when
    /// omitted on a hand-made preview, the pull request's (or branch's) current head is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub head_sha: Option<String>,
    /// A newer head of this fork pull request that no trusted user has approved yet (set by the
    /// Repository controller under `forks: requireApproval`). It is not deployed: `headSha`
    /// stays at the last approved revision, the preview reports phase `WaitingForApproval` and
    /// says so on the pull request, until an approval given after this head was pushed moves
    /// `headSha` to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub unapproved_head_sha: Option<String>,
    /// How to build and deliver the preview.
    pub template: PreviewTemplate,
    /// Stop deploying new revisions; the current deployment stays.
    #[serde(default)]
    pub suspend: bool,
}

/// How a preview is built and delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.delivery == 'argocd' || !has(self.argocd)").message("argocd options need delivery: argocd"))]
pub struct PreviewTemplate {
    /// `manifests`: Pullwarden renders the files under `path` and applies them, confined to the
    /// preview namespace. `argocd`: Pullwarden creates an Argo CD Application pinned to the head
    /// SHA and reads its health and sync status.
    #[serde(default)]
    pub delivery: Delivery,
    /// Directory in the repository holding the preview manifests (YAML, `{{param}}` templates).
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^/].*$"))]
    pub path: String,
    /// Namespace template. Default `{{repo}}-pr-{{number}}` (branch previews:
    /// `{{repo}}-{{branch_slug}}`). Rendered names are cut to a valid RFC 1123 label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub namespace: Option<String>,
    /// Host name template for the preview URL, e.g. `pr-{{number}}.preview.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Extra template parameters, available as `{{vars.NAME}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub vars: BTreeMap<String, String>,
    /// ResourceQuota and LimitRange for the preview namespace. Defaults apply when omitted
    /// (see docs/previews.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<PreviewQuota>,
    /// Delete the preview after this long without a push. Unset: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub ttl: Option<Duration>,
    /// Scale the preview's Deployments and StatefulSets to zero after this long without a push
    /// or a wake request (phase `Sleeping`); a push or a new value of the `pullwarden.dev/wake`
    /// annotation brings it back (a `/preview wake` comment is not implemented yet). Only
    /// `delivery: manifests` previews sleep. Unset: never sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub sleep_after: Option<Duration>,
    /// A pull request label that protects its preview from TTL expiry and from the cap.
    #[serde(default = "default_keep_label")]
    #[schemars(length(min = 1, max = 63))]
    pub keep_label: String,
    /// Deploy only once these checks (commit statuses or check runs) of the head SHA succeeded,
    /// e.g. the image build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
    /// Register a HealthCheck `<preview>-health` (owned by the preview) probing the preview URL
    /// over HTTP. Its state is the preview's `Healthy` condition (and so the `previewHealthy`
    /// gate rule) and a `pullwarden/health` commit status on the PR head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<PreviewHealthCheck>,
    /// Options for `delivery: argocd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argocd: Option<ArgoCdOptions>,
}

fn default_keep_label() -> String {
    "keep-preview".into()
}

/// Delivery mechanism of a preview.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    #[default]
    Manifests,
    Argocd,
}

/// Quota objects created in the preview namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewQuota {
    /// Spec of the namespace's ResourceQuota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<ResourceQuotaSpec>,
    /// Spec of the namespace's LimitRange (default requests/limits for containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<LimitRangeSpec>,
}

/// Checks that gate a deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitFor {
    /// Status contexts or check-run names that must have succeeded on the head SHA.
    #[schemars(length(min = 1, max = 32))]
    pub checks: Vec<String>,
    /// Give up (phase Failed) when the checks have not succeeded after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<Duration>,
}

/// A HealthCheck registered for the preview URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewHealthCheck {
    /// Path probed on the preview URL.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Probe interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<Duration>,
    /// Accepted status codes or ranges, e.g. `200-299`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<String>,
}

fn default_probe_path() -> String {
    "/".into()
}

/// Argo CD Application settings for `delivery: argocd`. Where Argo CD runs, the destination
/// cluster and the projects a preview may use are operator configuration (`pullwarden run
/// --argocd-*` flags and their chart values under `security:`), not template fields: Argo CD
/// applies the pull request's content with its own privileges, so its AppProject is the
/// confinement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgoCdOptions {
    /// AppProject of the Application. Unset (recommended): the restricted AppProject Pullwarden
    /// manages for this preview (the preview namespace as the only destination, no
    /// cluster-scoped kinds, the manifests allow-list as namespaced kinds, the Repository URL as
    /// the only source). Otherwise it must be the managed project's name (`--argocd-project`)
    /// or one the operator allows (`--argocd-allowed-projects`); `default` is always refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub project: Option<String>,
    /// Deprecated, refused unless equal to the operator's setting: the namespace of Argo CD's
    /// Applications is the operator's `--argocd-namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Deprecated, refused unless equal to the operator's setting: the destination cluster is
    /// the operator's `--argocd-destination-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_server: Option<String>,
}

/// Lifecycle phase of a preview.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PreviewPhase {
    #[default]
    Pending,
    /// A fork pushed a head no trusted user approved yet (`spec.unapprovedHeadSha`); the last
    /// approved revision, if any, stays deployed.
    WaitingForApproval,
    WaitingForChecks,
    Deploying,
    Ready,
    Failed,
    Expired,
    /// Scaled to zero after `template.sleepAfter` without a push; wakes on a push or a wake
    /// request.
    Sleeping,
    Terminating,
}

impl PreviewPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PreviewPhase::Pending => "Pending",
            PreviewPhase::WaitingForApproval => "WaitingForApproval",
            PreviewPhase::WaitingForChecks => "WaitingForChecks",
            PreviewPhase::Deploying => "Deploying",
            PreviewPhase::Ready => "Ready",
            PreviewPhase::Failed => "Failed",
            PreviewPhase::Expired => "Expired",
            PreviewPhase::Sleeping => "Sleeping",
            PreviewPhase::Terminating => "Terminating",
        }
    }
}

/// Observed state of a PreviewEnvironment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewEnvironmentStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: PreviewPhase,
    /// The preview namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The preview URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The revision currently deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_sha: Option<String>,
    /// Objects applied for `deployedSha` (at most 256; see `inventoryCount`). Objects of earlier
    /// revisions missing from a new render are pruned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub inventory: Vec<InventoryEntry>,
    /// Number of applied objects.
    #[serde(default)]
    pub inventory_count: u32,
    /// When the preview last became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_time: Option<Time>,
    /// How long the last deployment took from start to Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deploy_duration: Option<String>,
    /// The head SHA this status was computed for (the one being deployed, waited for or
    /// refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_head_sha: Option<String>,
    /// When the deployment of `observedHeadSha` started (time-to-ready and timeouts count from
    /// here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_start_time: Option<Time>,
    /// Human-readable detail of the current phase (what is awaited, why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `headSha` last changed (a push); TTL counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_time: Option<Time>,
    /// The revision whose objects are applied (`headSha` at `appliedGeneration`): a reconcile
    /// re-renders and re-applies only when the head SHA or the spec changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_sha: Option<String>,
    /// The object generation `appliedSha` was applied at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// Why the last attempt failed (`phase: Failed`), e.g. `RequiredCheckFailed` (retried on
    /// check events and with back-off) or `ManifestsRefused` (waits for a new push or spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When the preview was last woken (wake annotation or command); `sleepAfter` counts from
    /// the later of this and `lastPushTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake_time: Option<Time>,
    /// The last `pullwarden.dev/wake` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_wake_at: Option<String>,
    /// What has been written back to the forge, so restarts never write twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<ReportedState>,
    /// The `pullwarden/health` commit status last written (SHA and state), from the
    /// HealthCheck of `template.healthCheck`; one write per state change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reported: Option<ReportedState>,
}

/// One applied object.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Forge write-back bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportedState {
    /// The SHA the last write-back was for.
    pub sha: String,
    /// The state written (`pending`, `success`, `failure`).
    pub state: String,
    /// Forge deployment id for this preview's environment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Id of the sticky comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<String>,
}

impl HasCommonStatus for PreviewEnvironment {
    fn common(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}
