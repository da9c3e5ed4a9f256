//! The shared condition type and the helpers every controller uses to write it.
//!
//! Conditions are exactly `metav1.Condition` (k8s-openapi's type) and follow kstatus:
//! `Ready` summarises; `Reconciling` is present while work is under way and `Stalled` while a
//! permanent error blocks progress; both are removed (not set to False) when they stop applying,
//! which is what kstatus-aware tools (Argo CD, Flux, `kubectl wait`) expect.
//!
//! `lastTransitionTime` moves only when a condition's status changes: rewriting the same status
//! with a new message must not look like a transition to alerting built on it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Summary condition: the object does what it was asked to do.
pub const READY: &str = "Ready";
/// Present (True) while the controller is working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// Present (True) while a permanent error blocks progress until the spec or the world changes.
pub const STALLED: &str = "Stalled";
/// PreviewEnvironment: the rendered manifests (or Argo CD Application) are applied.
pub const DEPLOYED: &str = "Deployed";
/// PreviewEnvironment: the deployed workloads and registered HealthChecks are healthy.
pub const HEALTHY: &str = "Healthy";
/// Whether the last write-back to the forge (commit status, deployment, comment) succeeded;
/// False names the forge call that failed. It never blocks the deployment itself.
pub const REPORTED: &str = "Reported";

/// A condition's status, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Longest message the API server accepts in `metav1.Condition.message`.
const MAX_MESSAGE_BYTES: usize = 32_768;

/// Sets (adds or updates) the condition `type_`, bumping `lastTransitionTime` only when the
/// status changes. Reason must be CamelCase (the API server validates it).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let mut message = message.into();
    truncate_at_char_boundary(&mut message, MAX_MESSAGE_BYTES);
    let status = status.as_str().to_owned();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
                existing.status = status;
            }
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Removes the condition `type_` if present (kstatus abnormal-true conditions are removed,
/// not set to False, when they stop applying).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Finds the condition `type_`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition `type_` exists with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// The three kstatus conditions for the common outcomes of a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Desired state reached.
    Ready { reason: String, message: String },
    /// Still working (e.g. waiting for a dependency that will appear or a transient error).
    Progressing { reason: String, message: String },
    /// A permanent problem only a change of the spec or the world can fix.
    Stalled { reason: String, message: String },
}

impl Outcome {
    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        Outcome::Ready {
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn progressing(reason: &str, message: impl Into<String>) -> Self {
        Outcome::Progressing {
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn stalled(reason: &str, message: impl Into<String>) -> Self {
        Outcome::Stalled {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Writes `Ready`, `Reconciling` and `Stalled` for an outcome, consistently.
pub fn apply_outcome(
    conditions: &mut Vec<Condition>,
    outcome: &Outcome,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    match outcome {
        Outcome::Ready { reason, message } => {
            set_condition(
                conditions,
                READY,
                ConditionStatus::True,
                reason,
                message.clone(),
                observed_generation,
                now,
            );
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        Outcome::Progressing { reason, message } => {
            set_condition(
                conditions,
                READY,
                ConditionStatus::False,
                reason,
                message.clone(),
                observed_generation,
                now,
            );
            set_condition(
                conditions,
                RECONCILING,
                ConditionStatus::True,
                reason,
                message.clone(),
                observed_generation,
                now,
            );
            remove_condition(conditions, STALLED);
        }
        Outcome::Stalled { reason, message } => {
            set_condition(
                conditions,
                READY,
                ConditionStatus::False,
                reason,
                message.clone(),
                observed_generation,
                now,
            );
            set_condition(
                conditions,
                STALLED,
                ConditionStatus::True,
                reason,
                message.clone(),
                observed_generation,
                now,
            );
            remove_condition(conditions, RECONCILING);
        }
    }
}

/// Truncates in place to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            READY,
            ConditionStatus::False,
            "SecretNotFound",
            "a",
            Some(1),
            t(10),
        );
        set_condition(
            &mut conds,
            READY,
            ConditionStatus::False,
            "AuthFailed",
            "b",
            Some(2),
            t(20),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(t(10)));
        assert_eq!(conds[0].reason, "AuthFailed");
        assert_eq!(conds[0].message, "b");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            READY,
            ConditionStatus::True,
            "Synced",
            "c",
            Some(2),
            t(30),
        );
        assert_eq!(conds[0].last_transition_time, Time(t(30)));
        assert_eq!(conds[0].status, "True");
    }

    #[test]
    fn outcomes_follow_kstatus() {
        let mut conds = Vec::new();
        apply_outcome(
            &mut conds,
            &Outcome::progressing("Syncing", "x"),
            Some(1),
            t(1),
        );
        assert!(is_condition_true(&conds, RECONCILING));
        assert!(!is_condition_true(&conds, READY));
        apply_outcome(
            &mut conds,
            &Outcome::stalled("InvalidSpec", "y"),
            Some(1),
            t(2),
        );
        assert!(find_condition(&conds, RECONCILING).is_none());
        assert!(is_condition_true(&conds, STALLED));
        apply_outcome(&mut conds, &Outcome::ready("Synced", "z"), Some(1), t(3));
        assert!(is_condition_true(&conds, READY));
        assert!(find_condition(&conds, STALLED).is_none());
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "ééé".to_string();
        truncate_at_char_boundary(&mut s, 3);
        assert_eq!(s, "é");
    }
}
