//! Prometheus metrics of the forge layer.
//!
//! One [`ForgeMetrics`] is created by the binary, registered once on the root registry, and handed
//! to [`super::ForgeClients::new`]; every per-credential budget records into it. Labels are
//! bounded: `endpoint` is a route template (`/repos/{owner}/{repo}/pulls`), never a URL with ids,
//! and `credential` is 12 hex digits of the credential's *keyed* fingerprint (HMAC under a
//! per-process random key, see [`super::Credentials::fingerprint`]): it tells credentials apart
//! on a dashboard but cannot confirm a guessed token, and it changes when the process restarts.
//!
//! Who may scrape: `/metrics` is on the admin port (`--admin-addr`), not the webhook port; the
//! chart exposes it only inside the cluster. Labels hold no secret, but forge names, endpoint
//! templates and quota levels still describe the installation, so restrict scraping to the
//! monitoring namespace (the chart's NetworkPolicy for Pullwarden's pods) — see
//! docs/security.md.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub forge: String,
    pub endpoint: String,
    /// HTTP status code, or `timeout` / `error` when no response arrived.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub forge: String,
    pub credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionalLabels {
    pub forge: String,
    /// `hit` (answered 304 from our ETag cache), `miss` (a full answer with an ETag: the next
    /// read can be conditional) or `no_etag` (a full answer without one: the forge does not
    /// support conditional reads there, e.g. Gitea's JSON API, so every poll pays in full).
    pub result: String,
}

/// The outcome of a GET as far as conditional requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditional {
    Hit,
    Miss,
    NoEtag,
}

/// Cheaply cloneable handles; clones record into the same series.
#[derive(Clone, Debug, Default)]
pub struct ForgeMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub rate_limit_remaining: Family<RateLimitLabels, Gauge>,
    pub conditional_requests: Family<ConditionalLabels, Counter>,
}

impl ForgeMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register on the root registry (names carry the `pullwarden_` prefix themselves; counters
    /// get `_total` appended by the encoder).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pullwarden_forge_requests",
            "Requests sent to forge APIs, by forge, endpoint template and HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "pullwarden_forge_rate_limit_remaining",
            "Remaining API quota last reported by the forge, per credential (keyed fingerprint)",
            self.rate_limit_remaining.clone(),
        );
        registry.register(
            "pullwarden_forge_conditional_requests",
            "GETs by conditional-request outcome: hit = 304 answered from the ETag cache (free on GitHub), miss = full answer with an ETag, no_etag = full answer the forge gave no ETag for (every repeat pays in full)",
            self.conditional_requests.clone(),
        );
    }

    pub(crate) fn request(&self, forge: &str, endpoint: &str, status: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                forge: forge.to_string(),
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    pub(crate) fn remaining(&self, forge: &str, credential: &str, remaining: u64) {
        self.rate_limit_remaining
            .get_or_create(&RateLimitLabels {
                forge: forge.to_string(),
                credential: credential.to_string(),
            })
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    }

    pub(crate) fn conditional(&self, forge: &str, outcome: Conditional) {
        let result = match outcome {
            Conditional::Hit => "hit",
            Conditional::Miss => "miss",
            Conditional::NoEtag => "no_etag",
        };
        self.conditional_requests
            .get_or_create(&ConditionalLabels {
                forge: forge.to_string(),
                result: result.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes_expected_names() {
        let m = ForgeMetrics::new();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.request("github", "/repos/{owner}/{repo}/pulls", "200");
        m.remaining("github", "abcdef012345", 4999);
        m.conditional("github", Conditional::Hit);
        m.conditional("github", Conditional::Miss);
        m.conditional("gitea", Conditional::NoEtag);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains(
            "pullwarden_forge_requests_total{forge=\"github\",endpoint=\"/repos/{owner}/{repo}/pulls\",status=\"200\"} 1"
        ), "{out}");
        assert!(out.contains(
            "pullwarden_forge_rate_limit_remaining{forge=\"github\",credential=\"abcdef012345\"} 4999"
        ), "{out}");
        assert!(
            out.contains(
                "pullwarden_forge_conditional_requests_total{forge=\"github\",result=\"hit\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "pullwarden_forge_conditional_requests_total{forge=\"gitea\",result=\"no_etag\"} 1"
            ),
            "{out}"
        );
    }
}
