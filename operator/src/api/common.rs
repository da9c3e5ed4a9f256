//! Small types shared by several kinds: references, durations, selectors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Go-style duration pattern (`30s`, `5m`, `1h30m`, `500ms`); negative durations are refused.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Annotation that asks for an immediate reconcile; its value is echoed in
/// `status.lastHandledReconcileAt` once handled (the Flux convention).
pub const RECONCILE_REQUESTED_AT: &str = "pullwarden.dev/reconcile-requested-at";
/// Annotation that wakes a sleeping preview: any new value (e.g. a timestamp) is acted on once
/// and acknowledged in `status.lastHandledWakeAt`.
pub const WAKE_REQUESTED_AT: &str = "pullwarden.dev/wake";

/// A duration in Go's `time.ParseDuration` format, the same as `metav1.Duration`.
pub type Duration = kube::core::Duration;

/// Parses a Go-style duration, with an error message suitable for a status condition.
pub fn parse_duration(field: &str, value: &Duration) -> Result<std::time::Duration, String> {
    if value.is_negative() {
        return Err(format!("{field} must not be negative, got {value}"));
    }
    Ok((*value).into())
}

/// A reference to another object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl fmt::Display for LocalObjectReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A reference to a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace as the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to one key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret, in the same namespace as the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to one key of a ConfigMap in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyReference {
    /// Name of the ConfigMap, in the same namespace as the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap (`binaryData` or `data`).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Selects Repository objects in the same namespace by their labels.
pub type RepositorySelector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let d: Duration = "1h30m".parse().unwrap();
        assert_eq!(parse_duration("interval", &d).unwrap().as_secs(), 5400);
        let neg: Duration = "-5s".parse().unwrap();
        assert!(
            parse_duration("interval", &neg)
                .unwrap_err()
                .contains("negative")
        );
    }

    #[test]
    fn duration_pattern_accepts_go_forms_and_refuses_others() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["30s", "5m", "1h30m", "500ms", "1.5h"] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["", "5", "-5s", "5 m", "1d", "PT5M"] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}

/// Fields every Pullwarden status carries (flattened into each kind's status).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` summarises; `Reconciling` and `Stalled` appear while working
    /// and while blocked by a permanent error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// The last value of the `pullwarden.dev/reconcile-requested-at` annotation that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// Access to the common status of any Pullwarden kind, so controllers share one status writer.
pub trait HasCommonStatus {
    fn common(&self) -> Option<&CommonStatus>;
}
