//! `pullwarden_webhook_requests_total{forge,result}`: one count per answered delivery, and
//! `pullwarden_webhook_connections_refused_total{reason}`: connections closed at accept because
//! a connection cap was reached (no request was read from them, so they have no forge).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Forge;

/// The outcome of one delivery, as counted and as returned in `{"result": …}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookResult {
    /// Verified, acted on: the Repository objects were notified (`202`).
    Accepted,
    /// Verified, but the delivery id was seen recently (`200`).
    Duplicate,
    /// No verifying secret: unknown repository, missing or wrong signature/token (`401`).
    Unauthorized,
    /// Body above the configured cap (`413`).
    TooLarge,
    /// Missing/invalid headers, unparsable body, unsupported content type (`400`/`415`).
    Malformed,
    /// Verified, but nothing Pullwarden acts on; pings are counted here too (`202`/`200`).
    Ignored,
    /// Verified, and the forge echoing Pullwarden's own write (its commit status or check run,
    /// its sticky comment, a deployment): suppressed, nothing is synced (`202`).
    Echo,
    /// Per-Repository or per-IP budget exhausted (`429`).
    RateLimited,
    /// The server is at a global cap (in-flight requests, in-flight body bytes) or this
    /// address is at its in-flight cap; refused before (further) reading (`503`).
    Overloaded,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 9] = [
        WebhookResult::Accepted,
        WebhookResult::Duplicate,
        WebhookResult::Unauthorized,
        WebhookResult::TooLarge,
        WebhookResult::Malformed,
        WebhookResult::Ignored,
        WebhookResult::Echo,
        WebhookResult::RateLimited,
        WebhookResult::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::Malformed => "malformed",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Echo => "echo",
            WebhookResult::RateLimited => "rate_limited",
            WebhookResult::Overloaded => "overloaded",
        }
    }
}

impl EncodeLabelValue for WebhookResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for Forge {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    forge: Forge,
    result: WebhookResult,
}

/// Why a connection was closed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionRefusal {
    /// `--webhook-max-connections` open connections in total.
    Total,
    /// `--webhook-max-connections-per-address` open connections from this address.
    PerAddress,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 2] =
        [ConnectionRefusal::Total, ConnectionRefusal::PerAddress];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::Total => "total",
            ConnectionRefusal::PerAddress => "per_address",
        }
    }
}

impl EncodeLabelValue for ConnectionRefusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: ConnectionRefusal,
}

/// The ingress's metrics. Cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    requests: Family<RequestLabels, Counter>,
    refused_connections: Family<RefusalLabels, Counter>,
}

impl WebhookMetrics {
    /// Counters for every `forge × result` exist from the start (at zero), so `rate()` and
    /// alerts work before the first failure of a kind.
    pub fn new() -> Self {
        let metrics = Self {
            requests: Family::default(),
            refused_connections: Family::default(),
        };
        for reason in ConnectionRefusal::ALL {
            let _ = metrics
                .refused_connections
                .get_or_create(&RefusalLabels { reason });
        }
        for forge in Forge::ALL {
            for result in WebhookResult::ALL {
                let _ = metrics
                    .requests
                    .get_or_create(&RequestLabels { forge, result });
            }
        }
        metrics
    }
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Register under the full name `pullwarden_webhook_requests` (exposed as
    /// `pullwarden_webhook_requests_total`): pass the root registry, not one created with
    /// `Registry::with_prefix("pullwarden")`, or the prefix would be doubled.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pullwarden_webhook_requests",
            "Inbound webhook deliveries by forge and result",
            self.requests.clone(),
        );
        registry.register(
            "pullwarden_webhook_connections_refused",
            "Webhook connections closed at accept because a connection cap was reached",
            self.refused_connections.clone(),
        );
    }

    pub fn refuse_connection(&self, reason: ConnectionRefusal) {
        self.refused_connections
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Current count of refused connections, for tests and diagnostics.
    pub fn refused_connections(&self, reason: ConnectionRefusal) -> u64 {
        self.refused_connections
            .get_or_create(&RefusalLabels { reason })
            .get()
    }

    pub fn record(&self, forge: Forge, result: WebhookResult) {
        self.requests
            .get_or_create(&RequestLabels { forge, result })
            .inc();
    }

    /// Current count, for tests and diagnostics.
    pub fn count(&self, forge: Forge, result: WebhookResult) -> u64 {
        self.requests
            .get_or_create(&RequestLabels { forge, result })
            .get()
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn encodes_with_lowercase_labels_and_total_suffix() {
        let metrics = WebhookMetrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.record(Forge::Gitea, WebhookResult::RateLimited);
        metrics.record(Forge::Gitea, WebhookResult::RateLimited);
        metrics.refuse_connection(ConnectionRefusal::PerAddress);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"pullwarden_webhook_requests_total{forge="gitea",result="rate_limited"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pullwarden_webhook_requests_total{forge="github",result="too_large"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pullwarden_webhook_requests counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pullwarden_webhook_requests_total{forge="gitlab",result="overloaded"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pullwarden_webhook_connections_refused_total{reason="per_address"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"pullwarden_webhook_connections_refused_total{reason="total"} 0"#),
            "{text}"
        );
        assert_eq!(metrics.count(Forge::Gitea, WebhookResult::RateLimited), 2);
    }
}
