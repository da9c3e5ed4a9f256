//! The inbound webhook ingress: `POST /hooks/{github,gitlab,gitea}` on `--webhook-addr`.
//!
//! Webhooks are *hints*: the controllers always re-read the forge (level-triggered), so a lost
//! or refused delivery costs latency, never correctness. That is why this module can afford to
//! be strict and refuse anything it cannot authenticate.
//!
//! Flow of one delivery (see [`handler`]):
//! 1. If the remote IP has exhausted its *unauthenticated* budget (charged only by failed
//!    requests) → `429 rate_limited`, before reading anything.
//! 2. A declared `Content-Length` above [`WebhookConfig::max_body_bytes`] → `413 too_large`
//!    without reading the body; otherwise the body is streamed and the read is abandoned as
//!    soon as it crosses the cap (never buffered beyond it).
//! 3. [`event::parse`] (pure) turns headers + raw body into a [`ForgeEvent`], including every
//!    repository URL of the payload in canonical form → `400 malformed` on bad JSON or missing
//!    headers (`415` for unsupported content types and `408` for a body that does not arrive
//!    within [`WebhookConfig::body_read_timeout`], both counted as `malformed`).
//! 4. The presented credential is read from the headers ([`verify::presented_credential`]); the
//!    [`RepositoryDirectory`] is asked for the Repository objects following those URLs, and the
//!    raw body is verified against *each* candidate's secret ([`verify::verify`]). Only the
//!    candidates whose secret verifies become targets. No target → `401 unauthorized` with one
//!    fixed body, whether the repository is unknown or the signature is wrong.
//! 5. Verified: the `(forge, delivery id)` pair is recorded in a bounded TTL cache; a repeat →
//!    `200 duplicate`. Recording happens only now, so unauthenticated requests cannot poison it.
//! 6. [`ForgeEvent::route`]: `ping` → `200`, events Pullwarden does not act on → `202 ignored`,
//!    others spend a token from each verified target's bucket (`429 rate_limited` if none has
//!    one left, and the delivery is forgotten so a redelivery is not a "duplicate") and then
//!    [`RepositoryDirectory::notify`] is called once → `202 accepted`.
//!
//! Every response is counted in `pullwarden_webhook_requests_total{forge,result}`
//! ([`WebhookMetrics`]; a ping counts as `ignored`). Secrets and signatures are never logged.
//!
//! Wiring (for the operator): build a [`WebhookState`] from a [`WebhookConfig`], an
//! `Arc<dyn RepositoryDirectory>` and a [`WebhookMetrics`] (registered once with
//! [`WebhookMetrics::register`]), then run [`serve`] (or mount [`router`] and serve it with
//! `into_make_service_with_connect_info::<SocketAddr>()`, which the per-IP budget needs).

pub mod event;
pub mod handler;
mod limits;
pub mod metrics;
pub mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};

pub use event::{EventKind, ForgeEvent, ParseError, Route, canonicalize_repo_url};
pub use handler::{WebhookState, router, serve};
pub use metrics::{WebhookMetrics, WebhookResult};

/// The forges that deliver webhooks. Kept local to this module on purpose: the forge module
/// has its own `ForgeKind` (with plain `git`, which has no webhooks) and the two are mapped
/// where the operator wires the ingress up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forge {
    Github,
    Gitlab,
    Gitea,
}

impl Forge {
    /// Lower-case name, as used in routes (`/hooks/<name>`) and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    pub const ALL: [Forge; 3] = [Forge::Github, Forge::Gitlab, Forge::Gitea];
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Namespace and name of a Kubernetes object (here: a `Repository`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A webhook secret (GitHub/Gitea HMAC key, GitLab token). `Debug` is redacted and the bytes
/// are zeroed on drop.
#[derive(Clone)]
pub struct WebhookSecret(SecretSlice<u8>);

impl WebhookSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(SecretSlice::from(bytes.into()))
    }

    /// The raw secret bytes; only the verifier should need this.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// One Repository object that follows the repository a delivery is about, with its secret.
#[derive(Clone, Debug)]
pub struct WebhookCandidate {
    pub target: ObjectKey,
    pub secret: WebhookSecret,
}

/// The seam to the rest of the operator (implemented with the Repository reflector store and
/// Secrets). Both methods are awaited inside the request, so they must be quick: `notify`
/// should enqueue a reconcile, not run one.
#[async_trait::async_trait]
pub trait RepositoryDirectory: Send + Sync + 'static {
    /// Repository objects following this repository (matched on canonical URL, see
    /// [`canonicalize_repo_url`]; `repository_urls` are already canonical) with their webhook
    /// secret bytes.
    async fn candidates(&self, forge: Forge, repository_urls: &[String]) -> Vec<WebhookCandidate>;

    /// Called once per accepted, verified, non-duplicate event with the Repository objects it
    /// verified for (and that still had rate-limit budget).
    async fn notify(&self, targets: &[ObjectKey], event: &ForgeEvent);
}

/// Tunables of the ingress. Rates are tokens per second; a bucket starts full.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Largest accepted body (GitHub caps payloads at 25 MB, but real ones are far smaller).
    pub max_body_bytes: usize,
    /// How long reading the body may take (defends against slow-drip bodies).
    pub body_read_timeout: Duration,
    /// Number of `(forge, delivery id)` pairs remembered for de-duplication.
    pub dedupe_capacity: usize,
    /// How long a delivery id is remembered.
    pub dedupe_ttl: Duration,
    /// Sustained acted-on events per second per verified Repository object.
    pub per_source_rate: f64,
    /// Burst of acted-on events per verified Repository object.
    pub per_source_burst: u32,
    /// Sustained *failed* (unauthenticated) requests per second per remote IP (IPv6: per /64).
    pub unauthenticated_rate: f64,
    /// Burst of failed requests per remote IP before it is refused outright.
    pub unauthenticated_burst: u32,
    /// Number of rate-limit buckets kept per limiter (least recently used are evicted).
    pub limiter_capacity: usize,
    /// Most distinct secrets verified per delivery; bounds the HMAC work an unauthenticated
    /// request can cause when many Repository objects follow the same URL.
    pub max_distinct_secrets: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            dedupe_capacity: 10_000,
            dedupe_ttl: Duration::from_secs(60 * 60),
            per_source_rate: 1.0,
            per_source_burst: 60,
            unauthenticated_rate: 1.0,
            unauthenticated_burst: 30,
            limiter_capacity: 10_000,
            max_distinct_secrets: 32,
        }
    }
}
