//! `HealthCheck`: probes with a state machine (Unknown → OK ⇄ Degraded).

use super::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Probes a URL, a preview or a Service and tracks its state with thresholds, so one failed
/// probe is not an outage. Every probe passes the operator's outbound guard: link-local,
/// metadata, unspecified and multicast addresses are refused (loopback and `--cluster-cidrs`
/// unless the operator allows them), the name is resolved once per probe and the connection
/// goes to the address that was checked; each redirect hop is checked again.
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
#[x_kube(validation = Rule::new("!has(self.probe.tcp) || !has(self.target.url) || self.target.url.startsWith('tcp://')").message("a tcp probe needs a tcp://host:port url or a service target"))]
#[x_kube(validation = Rule::new("has(self.probe.tcp) || !has(self.target.url) || !self.target.url.startsWith('tcp://')").message("a tcp:// url needs a tcp probe"))]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// What to probe.
    pub target: HealthTarget,
    /// How to probe it.
    pub probe: Probe,
    /// Time between probes (the first probe starts at a random point within one interval, so
    /// checks created together do not probe together). A changed spec takes effect at the next
    /// probe.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Duration,
    /// Per-probe timeout: connect, TLS, request and the bounded body read together. A probe
    /// that runs out of time is a failure.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Duration,
    /// Consecutive failures before the state becomes Degraded (from Unknown or OK).
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Consecutive successes before the state becomes OK (from Unknown or Degraded).
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: u32,
    /// What a probe that cannot run counts as: the target is not there (the preview has no URL
    /// yet or is asleep, the Service has no ready endpoint). `unknown` (default): the state
    /// becomes `Unknown` and the counters restart; `fail`: it counts as a failed probe.
    #[serde(default)]
    pub no_data: NoData,
    /// TLS for `https` targets and gRPC over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProbeTls>,
    /// Alerting on state transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    /// Stop probing; the state and window are kept.
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
    /// An absolute URL (`http(s)://...`, or `tcp://host:port` for tcp probes), resolved once
    /// per probe through the outbound guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^(https?|tcp)://"))]
    pub url: Option<String>,
    /// A PreviewEnvironment in this namespace whose `status.url` is probed (no URL yet, or
    /// asleep: no data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_ref: Option<LocalObjectReference>,
    /// A Service in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,
}

/// A Service port, resolved through the Service's ready endpoints (its EndpointSlices), so a
/// probe reaches the pods the Service selects. Only Services in the HealthCheck's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTarget {
    /// Name of the Service, in the HealthCheck's namespace. `type: ExternalName` is refused.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service port (`spec.ports[].port`); the probe connects to the endpoints' matching
    /// target port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Path for HTTP probes (default `/`; `probe.http.path` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Exactly one probe kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http), has(self.tcp), has(self.grpc)].filter(x, x).size() == 1").message("set exactly one of http, tcp or grpc"))]
pub struct Probe {
    /// An HTTP(S) request whose status, body and latency are checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP connect: success when the connection is accepted within the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// The standard gRPC health protocol (`grpc.health.v1.Health/Check`): success when the
    /// answer is `SERVING`. An `https://` target uses TLS, `http://` plaintext HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbe>,
}

/// An HTTP probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// Request method (default GET; a POST sends no body).
    #[serde(default)]
    pub method: HttpMethod,
    /// Path appended to the target (overrides a target's own path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub path: Option<String>,
    /// Literal request headers (sent to the target's origin only, never to a redirect's other
    /// host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Secret whose keys are sent as request headers (for tokens); like `headers`, only to the
    /// target's origin. Values never appear in status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretReference>,
    /// Accepted status codes or ranges, e.g. `["200-299", "401"]`. Redirects (up to 5, each
    /// hop checked by the outbound guard) are followed first.
    #[serde(default = "default_expect_status")]
    #[schemars(
        length(min = 1, max = 16),
        inner(regex(pattern = r"^[1-5][0-9]{2}(-[1-5][0-9]{2})?$"))
    )]
    pub expect_status: Vec<String>,
    /// The body must contain this text; at most the first 1 MiB of the body is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub body_contains: Option<String>,
    /// Answers slower than this (time to the response headers) count as failures.
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

/// A gRPC health probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcProbe {
    /// The service name asked about (`HealthCheckRequest.service`); empty asks about the
    /// server as a whole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253))]
    pub service: String,
}

/// TLS settings of a probe. Verification is always on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTls {
    /// A Secret key holding PEM CA certificates that are trusted in addition to the system
    /// roots (for a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyReference>,
}

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
    /// Minimum time between two alerts of this HealthCheck (default: none). A transition inside
    /// the cooldown is not alerted; the status still records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub cooldown: Option<Duration>,
    /// Plugins notified on `health.degraded` / `health.recovered`.
    /// Not delivered yet: Plugin delivery is not implemented (docs/status.md); the transitions
    /// are recorded as Kubernetes Events (reasons `HealthDegraded`, `HealthRecovered`) with the
    /// cooldown applied.
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
    /// `Unknown` until the thresholds decide; then `OK` or `Degraded`.
    #[serde(default)]
    pub state: HealthState,
    /// Failed probes in a row (reset by a success).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Successful probes in a row (reset by a failure).
    #[serde(default)]
    pub consecutive_successes: u32,
    /// The latest probe, as of the last status write (status is written on a state change and
    /// otherwise at most once a minute, not per probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeResult>,
    /// When `state` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Number of state changes since the HealthCheck was created.
    #[serde(default)]
    pub transitions: u64,
    /// Share of successful probes over the rolling window, e.g. `99.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    /// Median probe latency over the window, e.g. `12ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50: Option<String>,
    /// 95th percentile probe latency over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<String>,
    /// 99th percentile probe latency over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<String>,
    /// The rolling window the figures above cover: the latest probes, at most 100 and at most
    /// one hour, e.g. `100 probes over 16m40s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// The latest probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// When the probe started.
    pub time: Option<Time>,
    /// How long it took, e.g. `12ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// The HTTP status of the final response (after redirects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Why the probe failed (or had no data); never a header value or more than a short
    /// excerpt of an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HasCommonStatus for HealthCheck {
    fn common(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}
