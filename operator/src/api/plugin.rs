//! `Plugin`: extensions called on events (webhooks, Slack, WASM).

use super::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An extension called on Pullwarden events: an outgoing webhook (CloudEvents, JSON or Tekton),
/// a Slack message, or a WASM module used by gate rules and payload transforms. Delivery is at
/// least once with an idempotency key and exponential back-off.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "pullwarden.dev",
    version = "v1alpha1",
    kind = "Plugin",
    namespaced,
    status = "PluginStatus",
    shortname = "pwplugin",
    category = "pullwarden",
    printcolumn(name = "Type", type_ = "string", json_path = ".status.type"),
    printcolumn(
        name = "Delivered",
        type_ = "integer",
        json_path = ".status.deliveriesSucceeded"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.deliveriesFailed"
    ),
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
#[x_kube(validation = Rule::new("[has(self.webhook), has(self.slack), has(self.wasm)].filter(x, x).size() == 1").message("set exactly one of webhook, slack or wasm"))]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// Events that call the plugin. A `wasm` plugin used only by gate rules may list none.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub events: Vec<PluginEvent>,
    /// Only events of Repositories (in this namespace) matching these labels. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_selector: Option<RepositorySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookPlugin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackPlugin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmPlugin>,
    /// Stop delivering; events are not queued while suspended.
    #[serde(default)]
    pub suspend: bool,
}

/// Event names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum PluginEvent {
    #[serde(rename = "pullRequest.opened")]
    PullRequestOpened,
    #[serde(rename = "pullRequest.synchronized")]
    PullRequestSynchronized,
    #[serde(rename = "pullRequest.closed")]
    PullRequestClosed,
    #[serde(rename = "pullRequest.merged")]
    PullRequestMerged,
    #[serde(rename = "push")]
    Push,
    #[serde(rename = "preview.ready")]
    PreviewReady,
    #[serde(rename = "preview.failed")]
    PreviewFailed,
    #[serde(rename = "preview.deleted")]
    PreviewDeleted,
    #[serde(rename = "gate.passed")]
    GatePassed,
    #[serde(rename = "gate.failed")]
    GateFailed,
    #[serde(rename = "health.degraded")]
    HealthDegraded,
    #[serde(rename = "health.recovered")]
    HealthRecovered,
}

/// An outgoing HTTP webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlSecretRef)").message("set exactly one of url or urlSecretRef"))]
#[x_kube(validation = Rule::new("duration(self.timeout) <= duration('60s')").message("timeout must be at most 60s"))]
pub struct WebhookPlugin {
    /// Target URL (https recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// Secret key holding the target URL (for URLs with embedded tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyReference>,
    /// Secret key with the HMAC-SHA256 signing key; the signature is sent in
    /// `X-Pullwarden-Signature-256: sha256=<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyReference>,
    /// Payload format.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout.
    #[serde(default = "default_webhook_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Duration,
    /// Attempts after the first before a delivery is given up.
    /// Validated only: no effect until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: u32,
}

fn default_webhook_timeout() -> Duration {
    "10s".parse().expect("valid duration")
}
fn default_max_retries() -> u32 {
    5
}

/// Outgoing payload format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// CloudEvents 1.0, structured JSON mode; `id` is the idempotency key.
    #[default]
    Cloudevents,
    /// Plain JSON event.
    Json,
    /// A Tekton Triggers EventListener body.
    Tekton,
}

/// A Slack incoming webhook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackPlugin {
    /// Secret key holding the Slack incoming-webhook URL.
    pub webhook_secret_ref: SecretKeyReference,
    /// Message template (`{{event}}`, `{{repository}}`, `{{pullRequest}}`, `{{url}}`, `{{message}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4000))]
    pub template: Option<String>,
}

/// A WebAssembly module.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmPlugin {
    pub source: WasmSource,
    #[serde(default)]
    pub limits: WasmLimits,
}

/// Where the module comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapRef) != has(self.url)").message("set exactly one of configMapRef or url"))]
#[x_kube(validation = Rule::new("!has(self.url) || has(self.sha256)").message("a url source needs sha256"))]
pub struct WasmSource {
    /// ConfigMap key (`binaryData`) holding the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyReference>,
    /// HTTPS URL of the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https://"))]
    pub url: Option<String>,
    /// Expected SHA-256 of the module (hex).
    /// Validated only: not checked until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// Resource limits of one WASM call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmLimits {
    /// Wall-clock limit per call.
    #[serde(default = "default_wasm_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Duration,
    /// Linear memory limit in MiB.
    /// Validated only: no effect until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default = "default_wasm_memory")]
    #[schemars(range(min = 1, max = 1024))]
    pub memory_mib: u32,
    /// Instruction fuel per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fuel: Option<u64>,
}

impl Default for WasmLimits {
    fn default() -> Self {
        WasmLimits {
            timeout: default_wasm_timeout(),
            memory_mib: default_wasm_memory(),
            fuel: None,
        }
    }
}

fn default_wasm_timeout() -> Duration {
    "2s".parse().expect("valid duration")
}
fn default_wasm_memory() -> u32 {
    64
}

/// Observed state of a Plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// `webhook`, `slack` or `wasm`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Events delivered. Always 0 until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default)]
    pub deliveries_succeeded: u64,
    /// Events given up after `maxRetries`. Always 0 until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default)]
    pub deliveries_failed: u64,
    /// Events waiting for delivery. Always 0 until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default)]
    pub deliveries_pending: u64,
    /// When the last event was delivered. Never set until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<Time>,
    /// Never set until Plugin delivery lands (Ready reason `DeliveryNotImplemented`, docs/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl HasCommonStatus for Plugin {
    fn common(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}
