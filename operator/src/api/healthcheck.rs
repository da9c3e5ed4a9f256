//! `HealthCheck`: probes with a state machine (Unknown → OK ⇄ Degraded).

use super::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Probes a URL, a preview or a Service and tracks its state with thresholds, so one failed
/// probe is not an outage. Probes pass an SSRF guard: link-local, metadata and unspecified
/// addresses are refused, DNS is resolved once per probe and the connection pinned to that IP.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "pullwarden.dev",
    version = "v1alpha1",
    kind = "HealthCheck",
    namespaced,
    status = "HealthCheckStatus",
    shortname = "pwhc",
    category = "pullwarden",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.consecutiveFailures"
    ),
    printcolumn(
        name = "Latency",
        type_ = "string",
        json_path = ".status.lastProbe.latency"
    ),
    printcolumn(
        name = "Availability",
        type_ = "string",
        json_path = ".status.availability"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("duration(self.timeout) <= duration(self.interval)").message("timeout must not exceed interval"))]
#[x_kube(validation = Rule::new("!has(self.probe.tcp) || !has(self.target.url) || !self.target.url.startsWith('http')").message("a tcp probe needs a host:port target (url tcp://host:port or a service), not an http URL"))]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// What to probe.
    pub target: HealthTarget,
    /// How to probe it.
    pub probe: Probe,
    /// Time between probes.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Duration,
    /// Per-probe timeout.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Duration,
    /// Consecutive failures before the state becomes Degraded.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Consecutive successes before the state becomes OK.
    /// Validated only: no effect until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: u32,
    /// What a probe that cannot run (target not resolvable yet, preview without URL) counts as.
    /// Validated only: no effect until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default)]
    pub no_data: NoData,
    /// Alerting on state transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    /// Stop probing; the state is kept.
    #[serde(default)]
    pub suspend: bool,
}

fn default_interval() -> Duration {
    "30s".parse().expect("valid duration")
}
fn default_timeout() -> Duration {
    "5s".parse().expect("valid duration")
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_success_threshold() -> u32 {
    2
}

/// Exactly one probe target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.previewRef), has(self.service)].filter(x, x).size() == 1").message("set exactly one of url, previewRef or service"))]
pub struct HealthTarget {
    /// An absolute URL (`http(s)://...`, or `tcp://host:port` for tcp probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^(https?|tcp)://"))]
    pub url: Option<String>,
    /// A PreviewEnvironment whose URL is probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_ref: Option<LocalObjectReference>,
    /// A Service in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,
}

/// A Service port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTarget {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Path for HTTP probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Exactly one probe kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http) != has(self.tcp)").message("set exactly one of http or tcp"))]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Validated only: no effect until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
}

/// An HTTP probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    #[serde(default)]
    pub method: HttpMethod,
    /// Path appended to the target (overrides a target's own path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub path: Option<String>,
    /// Literal request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Secret whose keys are sent as request headers (for tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretReference>,
    /// Accepted status codes or ranges.
    #[serde(default = "default_expect_status")]
    #[schemars(
        length(min = 1, max = 16),
        inner(regex(pattern = r"^[1-5][0-9]{2}(-[1-5][0-9]{2})?$"))
    )]
    pub expect_status: Vec<String>,
    /// The body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub body_contains: Option<String>,
    /// Slower answers count as failures.
    /// Validated only: no effect until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_latency: Option<Duration>,
}

fn default_expect_status() -> Vec<String> {
    vec!["200-299".into()]
}

/// HTTP method of a probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
}

/// A TCP connect probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TcpProbe {}

/// How missing data counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    #[default]
    Unknown,
    Fail,
}

/// Alerting on transitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Minimum time between two alerts of this HealthCheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub cooldown: Option<Duration>,
    /// Plugins notified on `health.degraded` / `health.recovered`.
    /// Validated only: no effect until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub plugin_refs: Vec<LocalObjectReference>,
}

/// Health state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthState {
    #[default]
    Unknown,
    #[serde(rename = "OK")]
    Ok,
    Degraded,
}

/// Observed state of a HealthCheck.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default)]
    pub state: HealthState,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub consecutive_successes: u32,
    /// Never set until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeResult>,
    /// When `state` last changed.
    /// Never set until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Number of state changes.
    /// Always 0 until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default)]
    pub transitions: u64,
    /// Share of successful probes over the rolling window, e.g. `99.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    /// Median probe latency over the window, e.g. `12ms`.
    /// Never set until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50: Option<String>,
    /// 95th percentile probe latency over the window.
    /// Never set until HealthCheck probing lands (Ready reason `ProbingNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<String>,
}

/// The latest probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HasCommonStatus for HealthCheck {
    fn common(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}
