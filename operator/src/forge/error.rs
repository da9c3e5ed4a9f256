//! The one error type of the forge layer.
//!
//! Every failure talking to a forge (or to a git remote) ends up in one of a small, stable set of
//! categories. Controllers use [`ForgeError::category`] as the Kubernetes Warning event reason and
//! as the `category` metric label, and [`ForgeError::requeue_after`] to decide when to try again.
//!
//! The invariant the rest of the operator relies on: a forge error is always an error. No code in
//! this layer turns a failure into an empty list, a "closed" pull request or a silent success.

use std::time::Duration;

use jiff::Timestamp;

/// Why a forge call failed. See the module docs for the contract.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// 401, a rejected/expired credential, or a 403 that carries no rate-limit signal.
    #[error("authentication failed: {message}")]
    AuthFailed { message: String },

    /// 404 (or the git equivalent: missing commit or path). A 404 never means "pull request
    /// closed": GitHub answers 404 for resources the credential may not see.
    #[error("not found: {message}")]
    NotFound { message: String },

    /// The credential's budget is exhausted (primary limit) or the forge asked us to slow down
    /// (secondary limit, 429). `reset` is when the forge said sending may resume.
    #[error("rate limited: {message} (resumes at {reset})")]
    RateLimited { reset: Timestamp, message: String },

    /// 5xx, timeouts and connection errors, after the client's own bounded retries.
    #[error("transient forge error: {message}")]
    Transient { message: String },

    /// The forge answered, but not with something we can parse.
    #[error("invalid response from forge: {message}")]
    InvalidResponse { message: String },

    /// The Repository spec or its Secret is unusable (bad URL, bad credential keys, bad CA).
    #[error("invalid configuration: {message}")]
    InvalidConfig { message: String },

    /// The outbound guard refused the connection (link-local, metadata, loopback, cluster
    /// address, or a cross-origin redirect): nothing was sent. See `crate::net`.
    #[error("{message}")]
    OutboundRefused { message: String },

    /// The provider (or the credential type) cannot do this operation at all.
    #[error("{operation} is not supported by {provider}")]
    Unsupported {
        operation: &'static str,
        provider: String,
    },
}

impl ForgeError {
    /// The same error (same category) with `call` in front of its message, so the condition
    /// says which write failed.
    pub fn context(self, call: &str) -> ForgeError {
        let with = |message: String| format!("{call}: {message}");
        match self {
            ForgeError::AuthFailed { message } => ForgeError::AuthFailed {
                message: with(message),
            },
            ForgeError::NotFound { message } => ForgeError::NotFound {
                message: with(message),
            },
            ForgeError::RateLimited { reset, message } => ForgeError::RateLimited {
                reset,
                message: with(message),
            },
            ForgeError::Transient { message } => ForgeError::Transient {
                message: with(message),
            },
            ForgeError::InvalidResponse { message } => ForgeError::InvalidResponse {
                message: with(message),
            },
            ForgeError::InvalidConfig { message } => ForgeError::InvalidConfig {
                message: with(message),
            },
            ForgeError::OutboundRefused { message } => ForgeError::OutboundRefused {
                message: with(message),
            },
            unsupported @ ForgeError::Unsupported { .. } => unsupported,
        }
    }

    /// Stable, CamelCase name used as event reason and metric label. Never change these strings:
    /// alerts and dashboards match on them.
    pub fn category(&self) -> &'static str {
        match self {
            ForgeError::AuthFailed { .. } => "AuthFailed",
            ForgeError::NotFound { .. } => "NotFound",
            ForgeError::RateLimited { .. } => "RateLimited",
            ForgeError::Transient { .. } => "Transient",
            ForgeError::InvalidResponse { .. } => "InvalidResponse",
            ForgeError::InvalidConfig { .. } => "InvalidConfig",
            ForgeError::OutboundRefused { .. } => "OutboundRefused",
            ForgeError::Unsupported { .. } => "Unsupported",
        }
    }

    /// Whether retrying the same call later can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ForgeError::RateLimited { .. }
                | ForgeError::Transient { .. }
                | ForgeError::InvalidResponse { .. }
        )
    }

    /// A hint for the controller's requeue: the rate-limit reset for `RateLimited`, `None`
    /// otherwise (the controller applies its own back-off).
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        match self {
            ForgeError::RateLimited { reset, .. } => {
                let secs = reset.as_second().saturating_sub(now.as_second()).max(1);
                Some(Duration::from_secs(u64::try_from(secs).unwrap_or(1)))
            }
            _ => None,
        }
    }

    pub(crate) fn auth(message: impl Into<String>) -> Self {
        ForgeError::AuthFailed {
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ForgeError::NotFound {
            message: message.into(),
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        ForgeError::Transient {
            message: message.into(),
        }
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        ForgeError::InvalidResponse {
            message: message.into(),
        }
    }

    pub(crate) fn invalid_config(message: impl Into<String>) -> Self {
        ForgeError::InvalidConfig {
            message: message.into(),
        }
    }

    pub(crate) fn refused(refusal: &crate::net::Refusal) -> Self {
        ForgeError::OutboundRefused {
            message: refusal.to_string(),
        }
    }

    pub(crate) fn unsupported(operation: &'static str, provider: impl Into<String>) -> Self {
        ForgeError::Unsupported {
            operation,
            provider: provider.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_stable() {
        let cases = [
            (ForgeError::auth("x"), "AuthFailed"),
            (ForgeError::not_found("x"), "NotFound"),
            (
                ForgeError::RateLimited {
                    reset: Timestamp::UNIX_EPOCH,
                    message: "x".into(),
                },
                "RateLimited",
            ),
            (ForgeError::transient("x"), "Transient"),
            (ForgeError::invalid_response("x"), "InvalidResponse"),
            (ForgeError::invalid_config("x"), "InvalidConfig"),
            (ForgeError::unsupported("op", "git"), "Unsupported"),
            (
                ForgeError::OutboundRefused {
                    message: "x".into(),
                },
                "OutboundRefused",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.category(), want, "{err}");
        }
    }

    #[test]
    fn requeue_after_uses_reset() {
        let now = Timestamp::from_second(1_000).unwrap();
        let err = ForgeError::RateLimited {
            reset: Timestamp::from_second(1_090).unwrap(),
            message: "primary".into(),
        };
        assert_eq!(err.requeue_after(now), Some(Duration::from_secs(90)));
        // A reset already in the past still waits a second rather than hot-looping.
        let past = ForgeError::RateLimited {
            reset: Timestamp::from_second(10).unwrap(),
            message: "primary".into(),
        };
        assert_eq!(past.requeue_after(now), Some(Duration::from_secs(1)));
        assert_eq!(ForgeError::transient("x").requeue_after(now), None);
        assert!(!ForgeError::not_found("x").is_retryable());
        assert!(ForgeError::transient("x").is_retryable());
    }
}
