//! One error type for every controller, with stable categories.
//!
//! The category of an error is part of the operator's interface: it labels the
//! `pullwarden_reconcile_errors_total` metric, becomes the reason of the Warning event and of
//! the `Ready` condition, and decides how the controller retries:
//! - permanent errors (the object is wrong) are reported and NOT retried until the object or
//!   what it references changes — no hot loop on invalid input;
//! - dependency errors (a Secret or Repository that may appear later) are retried slowly;
//! - transient errors (API server, forge outages) back off exponentially.

use crate::forge::ForgeError;
use std::time::Duration;

/// Any failure of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object's spec is invalid beyond what the schema could check.
    #[error("{0}")]
    InvalidSpec(String),

    /// An expression in the spec (a PolicyGate's CEL `cel`/`if` or its rule `expression`) does
    /// not compile; the message names the rule and the position.
    #[error("{0}")]
    InvalidExpression(String),

    /// A referenced Secret does not exist.
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },

    /// A referenced Secret exists but does not hold what is needed.
    #[error("Secret {namespace}/{name}: {problem}")]
    SecretInvalid {
        namespace: String,
        name: String,
        problem: String,
    },

    /// A referenced Secret may not be used for this: it did not opt in as a credential, or it
    /// is a service-account token. `reason` is the condition reason
    /// (`CredentialsNotOptedIn`, `ServiceAccountTokenRefused`).
    #[error("Secret {namespace}/{name} {problem}")]
    SecretRefused {
        namespace: String,
        name: String,
        reason: &'static str,
        problem: String,
    },

    /// A referenced Pullwarden object does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    ReferenceNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },

    /// A referenced Pullwarden object exists but is not usable yet.
    #[error("{kind} {namespace}/{name} is not ready: {reason}")]
    ReferenceNotReady {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },

    /// A preview's rendered manifests were refused by the safety rules; nothing was applied.
    #[error("manifests refused: {0}")]
    ManifestsRefused(String),

    /// A preview template could not be rendered.
    #[error("render failed: {0}")]
    RenderFailed(String),

    /// The forge answered with an error (never read as "no pull requests" or "closed").
    #[error(transparent)]
    Forge(#[from] ForgeError),

    /// A sync failed at the forge; the status keeps the data of the last good sync.
    #[error("{source}; status shows the data of the last successful sync ({last_sync})")]
    ForgeStale {
        source: ForgeError,
        last_sync: String,
    },

    /// The Kubernetes API answered with an error.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// A bug or an impossible state; reported, retried with back-off.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the controller should treat an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Do not retry until the object (or something it watches) changes.
    OnChange,
    /// Retry after a fixed, slow delay (a dependency that may appear later).
    After(Duration),
    /// Retry with exponential back-off.
    Backoff,
}

impl Error {
    /// Stable, CamelCase category: metric label, event reason and condition reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::InvalidExpression(_) => "InvalidExpression",
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretInvalid { .. } => "SecretInvalid",
            Error::SecretRefused { reason, .. } => reason,
            Error::ReferenceNotFound { .. } => "ReferenceNotFound",
            Error::ReferenceNotReady { .. } => "ReferenceNotReady",
            Error::ManifestsRefused(_) => "ManifestsRefused",
            Error::RenderFailed(_) => "RenderFailed",
            Error::Forge(e) | Error::ForgeStale { source: e, .. } => e.category(),
            Error::Kube(_) => "KubeApiError",
            Error::Internal(_) => "InternalError",
        }
    }

    /// The retry policy for this error.
    pub fn retry(&self) -> Retry {
        match self {
            Error::InvalidSpec(_) | Error::InvalidExpression(_) | Error::ManifestsRefused(_) => {
                Retry::OnChange
            }
            // Secrets are not watched (that would need list/watch on every Secret in the
            // cluster), so a created or fixed Secret is noticed on this retry or at once when the
            // object is touched (e.g. the reconcile-requested-at annotation).
            Error::SecretNotFound { .. }
            | Error::SecretInvalid { .. }
            | Error::SecretRefused { .. } => Retry::After(Duration::from_secs(30)),
            Error::ReferenceNotFound { .. } | Error::ReferenceNotReady { .. } => {
                Retry::After(Duration::from_secs(60))
            }
            Error::RenderFailed(_) => Retry::After(Duration::from_secs(120)),
            Error::Forge(e) | Error::ForgeStale { source: e, .. } => {
                match e.requeue_after(jiff::Timestamp::now()) {
                    Some(delay) => Retry::After(delay),
                    // Credentials, URLs and missing repositories need a human; retry slowly so a
                    // fixed token is picked up without hammering the forge meanwhile.
                    None if !e.is_retryable() => Retry::After(Duration::from_secs(300)),
                    None => Retry::Backoff,
                }
            }
            Error::Kube(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                Retry::OnChange
            }
            Error::Kube(_) | Error::Internal(_) => Retry::Backoff,
        }
    }

    /// True when a Stalled condition (not Reconciling) describes the situation.
    pub fn is_stalled(&self) -> bool {
        !matches!(self.retry(), Retry::Backoff)
    }
}
