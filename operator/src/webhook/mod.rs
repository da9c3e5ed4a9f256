//! The inbound webhook ingress: `POST /hooks/{github,gitlab,gitea}` on `--webhook-addr`.
//!
//! Webhooks are *hints*: the controllers always re-read the forge (level-triggered), so a lost
//! or refused delivery costs latency, never correctness. That is why this module can afford to
//! be strict and refuse anything it cannot authenticate.
//!
//! The port faces the internet, so every resource an anonymous client can make it hold is
//! capped before it is spent (flags in [`WebhookOptions`], defaults sized for a 512 MiB pod):
//! - **Connections** ([`serve`]): at most [`WebhookConfig::max_connections`] open, at most
//!   [`WebhookConfig::max_connections_per_address`] from one address (trusted proxies are
//!   exempt, they carry many clients); more are answered `503` and closed at accept, counted in
//!   `pullwarden_webhook_connections_refused_total{reason}`. The request line and headers must
//!   arrive within [`WebhookConfig::header_read_timeout`] (also between keep-alive requests),
//!   and are capped at 64 KiB.
//! - **Requests** (step 1 below): at most [`WebhookConfig::max_in_flight_requests`] at once in
//!   total and [`WebhookConfig::max_connections_per_address`] per client address.
//! - **Body bytes** (step 3): a body's bytes are reserved from the global
//!   [`WebhookConfig::max_in_flight_body_bytes`] budget *before* they are buffered, as they
//!   arrive (so a slow client holds only what it really sent), and the body must fit
//!   [`WebhookConfig::max_body_bytes`] (1 MiB by default) and arrive within
//!   [`WebhookConfig::body_read_timeout`].
//! - **Verification work** (step 5): at most [`CandidateLimits::max_candidates`] Repositories,
//!   chosen before any Secret is read, with their Secrets cached briefly (see
//!   [`crate::controller::directory`]).
//!
//! Flow of one delivery (see [`handler`]):
//! 1. The client address is the TCP peer, or the `X-Forwarded-For` client when the peer is a
//!    trusted proxy ([`client`]). Over the global or this address's in-flight cap →
//!    `503 overloaded` before reading the body (not charged to the address: it says nothing
//!    about the sender).
//! 2. The presented credential is read from the headers ([`verify::presented_credential`]); a
//!    delivery without a well-formed one can never verify → `401 unauthorized` before reading
//!    the body.
//! 3. A declared `Content-Length` above [`WebhookConfig::max_body_bytes`] → `413 too_large`
//!    without reading the body; otherwise the body is streamed and the read is abandoned as
//!    soon as it crosses the cap (never buffered beyond it), or as soon as the global budget
//!    cannot cover the next bytes (`503 overloaded`), or when the timeout ends
//!    (`408`, counted as `malformed`).
//! 4. [`event::parse`] (pure) turns headers + raw body into a [`ForgeEvent`], including every
//!    repository URL of the payload in canonical form → `400 malformed` on bad JSON or missing
//!    headers (`415` for unsupported content types, counted as `malformed`).
//! 5. The [`RepositoryDirectory`] is asked for the Repository objects following those URLs
//!    (bounded, fairly ordered across namespaces), and the raw body is verified against
//!    *each* candidate's secret ([`verify::verify`]). Only the candidates whose secret verifies
//!    become targets. No target → `401 unauthorized` with one fixed body, whether the
//!    repository is unknown or the signature is wrong.
//! 6. Failures of steps 2-5 are charged to the client address's *unauthenticated* budget
//!    ([`WebhookConfig::unauthenticated_burst`], refilling at
//!    [`WebhookConfig::unauthenticated_rate`]); a failure from an address that has spent it is
//!    answered `429 rate_limited` with `Retry-After` instead. The budget is consulted only
//!    *after* verification, and a verified delivery is never charged nor refused by it: an
//!    attacker who shares an address with a real forge (a shared ingress, the forge's egress
//!    IPs) cannot lock its deliveries out. What an unverified request may cost is bounded by the
//!    caps above, not by the budget.
//! 7. Verified: the `(forge, delivery id)` pair is recorded in a bounded TTL cache; a repeat →
//!    `200 duplicate`. Recording happens only now, so unauthenticated requests cannot poison it.
//! 8. [`ForgeEvent::route`]: `ping` → `200`, events Pullwarden does not act on → `202 ignored`,
//!    echoes of its own writes (its commit statuses and check runs, its sticky comment,
//!    deployments) → `202 echo`; the others spend a token from each verified target's bucket
//!    (`429 rate_limited` if none has one left, and the delivery is forgotten so a redelivery
//!    is not a "duplicate") and then either [`RepositoryDirectory::notify`] (a Repository
//!    sync) or, for a finished check, [`RepositoryDirectory::head_checks_finished`] with its
//!    head SHA is called once → `202 accepted`.
//!
//! Every response is counted in `pullwarden_webhook_requests_total{forge,result}`
//! ([`WebhookMetrics`]; a ping counts as `ignored`, a suppressed echo as `echo`); refusals
//! (4xx/5xx) close the connection.
//! Secrets and signatures are never logged.
//!
//! Wiring (for the operator): build a [`WebhookState`] from a [`WebhookConfig`] (from
//! [`WebhookOptions::config`]), an `Arc<dyn RepositoryDirectory>` and a [`WebhookMetrics`]
//! (registered once with [`WebhookMetrics::register`]), then run [`serve`], which enforces the
//! connection caps and the header timeout. [`router`] alone (for in-process tests) reads the
//! peer address from a `ConnectInfo<SocketAddr>` extension and skips per-address limits
//! without one.

pub mod client;
pub mod event;
pub mod handler;
pub(crate) mod limits;
pub mod metrics;
pub mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretSlice};

pub use event::{EventKind, ForgeEvent, ParseError, Route, canonicalize_repo_url};
pub use handler::{WebhookState, router, serve};
pub use metrics::{ConnectionRefusal, WebhookMetrics, WebhookResult};

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

    /// Called once per accepted, verified, non-duplicate event routed [`Route::Sync`], with
    /// the Repository objects it verified for (and that still had rate-limit budget).
    async fn notify(&self, targets: &[ObjectKey], event: &ForgeEvent);

    /// Like [`RepositoryDirectory::notify`] for an event routed [`Route::HeadChecks`]: a check
    /// finished on commit `sha` of these Repositories. No Repository sync: only what waits on
    /// that head's checks (previews, gates) needs to look again.
    fn head_checks_finished(&self, targets: &[ObjectKey], event: &ForgeEvent, sha: &str);

    /// Called for every delivery that verified (also pings, duplicates and ignored events), with
    /// the Repository objects whose secret verified it. A directory that bounds its candidates
    /// can rank these first, so Repositories that really receive deliveries are never crowded
    /// out by decoys following the same URL.
    fn verified(&self, targets: &[ObjectKey]) {
        let _ = targets;
    }
}

/// Tunables of the ingress. Rates are tokens per second; a bucket starts full.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Largest accepted body (GitHub caps payloads at 25 MB, but real ones are far smaller).
    pub max_body_bytes: usize,
    /// How long the request line and headers may take to arrive, also while a keep-alive
    /// connection waits for its next request (defends against slow-drip headers).
    pub header_read_timeout: Duration,
    /// How long reading the body may take (defends against slow-drip bodies).
    pub body_read_timeout: Duration,
    /// Open connections at once, in total; more are refused at accept.
    pub max_connections: usize,
    /// Open connections at once from one address (IPv6: one /64), and in-flight requests at
    /// once from one client address; trusted proxies are exempt from the connection count.
    pub max_connections_per_address: usize,
    /// Requests being read, verified or routed at once; more get `503 overloaded`.
    pub max_in_flight_requests: usize,
    /// Bytes of request bodies buffered at once over all requests; a body whose bytes the
    /// budget cannot cover gets `503 overloaded`.
    pub max_in_flight_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` names the client (see [`client`]).
    pub trusted_proxies: Vec<IpNet>,
    /// Number of `(forge, delivery id)` pairs remembered for de-duplication.
    pub dedupe_capacity: usize,
    /// How long a delivery id is remembered.
    pub dedupe_ttl: Duration,
    /// Sustained acted-on events per second per verified Repository object.
    pub per_source_rate: f64,
    /// Burst of acted-on events per verified Repository object.
    pub per_source_burst: u32,
    /// Sustained *failed* (unauthenticated) requests per second per client address (IPv6: per
    /// /64).
    pub unauthenticated_rate: f64,
    /// Burst of failed requests per client address before its failures are answered `429`.
    pub unauthenticated_burst: u32,
    /// Number of rate-limit buckets kept per limiter (least recently used are evicted).
    pub limiter_capacity: usize,
    /// Most distinct secrets verified per delivery; bounds the HMAC work an unauthenticated
    /// request can cause when many Repository objects follow the same URL (the directory
    /// bounds its candidates too, see [`CandidateLimits`]).
    pub max_distinct_secrets: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_address: 8,
            max_in_flight_requests: 256,
            max_in_flight_body_bytes: 32 * 1024 * 1024,
            trusted_proxies: Vec::new(),
            dedupe_capacity: 10_000,
            dedupe_ttl: Duration::from_secs(60 * 60),
            per_source_rate: 1.0,
            per_source_burst: 60,
            unauthenticated_rate: 1.0,
            unauthenticated_burst: 30,
            limiter_capacity: 10_000,
            max_distinct_secrets: DEFAULT_MAX_CANDIDATES,
        }
    }
}

const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_MAX_CANDIDATES: usize = 8;

/// How the Repository directory bounds the work of one delivery before any I/O.
#[derive(Clone, Debug)]
pub struct CandidateLimits {
    /// Most Repository objects whose secret is looked up and verified per delivery, chosen
    /// round-robin across namespaces (recently verified ones first).
    pub max_candidates: usize,
    /// How long a webhook Secret read is reused (also a missing or refused one).
    pub secret_cache_ttl: Duration,
    /// Secrets kept in the cache (least recently used are evicted).
    pub secret_cache_capacity: usize,
}

impl Default for CandidateLimits {
    fn default() -> Self {
        Self {
            max_candidates: DEFAULT_MAX_CANDIDATES,
            secret_cache_ttl: Duration::from_secs(15),
            secret_cache_capacity: 4096,
        }
    }
}

/// The webhook flags of `pullwarden run`. Defaults fit a 512 MiB pod with room to spare: at
/// most 1024 connections × 64 KiB of header buffer (64 MiB) plus 32 MiB of bodies in flight,
/// whatever anonymous clients do.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookOptions {
    /// Largest accepted webhook body in bytes; a larger one gets `413`.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES, env = "PULLWARDEN_WEBHOOK_MAX_BODY_BYTES")]
    pub webhook_max_body_bytes: usize,
    /// Time allowed for a request's line and headers to arrive (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_timeout, env = "PULLWARDEN_WEBHOOK_HEADER_READ_TIMEOUT")]
    pub webhook_header_read_timeout: Duration,
    /// Time allowed for a request's body to arrive.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, env = "PULLWARDEN_WEBHOOK_BODY_READ_TIMEOUT")]
    pub webhook_body_read_timeout: Duration,
    /// Open webhook connections at once, in total.
    #[arg(
        long,
        default_value_t = 1024,
        env = "PULLWARDEN_WEBHOOK_MAX_CONNECTIONS"
    )]
    pub webhook_max_connections: usize,
    /// Open connections (and in-flight requests) at once from one client address (IPv6: /64).
    #[arg(
        long,
        default_value_t = 8,
        env = "PULLWARDEN_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS"
    )]
    pub webhook_max_connections_per_address: usize,
    /// Webhook requests being read or verified at once; more get `503 overloaded`.
    #[arg(
        long,
        default_value_t = 256,
        env = "PULLWARDEN_WEBHOOK_MAX_IN_FLIGHT_REQUESTS"
    )]
    pub webhook_max_in_flight_requests: usize,
    /// Bytes of webhook bodies buffered at once over all requests; beyond it `503 overloaded`.
    #[arg(long, default_value_t = 32 * 1024 * 1024, env = "PULLWARDEN_WEBHOOK_MAX_IN_FLIGHT_BODY_BYTES")]
    pub webhook_max_in_flight_body_bytes: usize,
    /// Proxies (CIDRs or addresses, comma separated) whose `X-Forwarded-For` names the client;
    /// from any other peer the header is ignored. Empty: the TCP peer is the client.
    #[arg(long, value_delimiter = ',', value_parser = client::parse_trusted_proxy, env = "PULLWARDEN_WEBHOOK_TRUSTED_PROXY_CIDRS")]
    pub webhook_trusted_proxy_cidrs: Vec<IpNet>,
    /// Failed (unverified) deliveries one client address may send in a burst before its
    /// failures are answered `429`.
    #[arg(
        long,
        default_value_t = 30,
        env = "PULLWARDEN_WEBHOOK_UNAUTHENTICATED_BURST"
    )]
    pub webhook_unauthenticated_burst: u32,
    /// Failed deliveries per second one client address may send once its burst is spent.
    #[arg(
        long,
        default_value_t = 1.0,
        env = "PULLWARDEN_WEBHOOK_UNAUTHENTICATED_RATE"
    )]
    pub webhook_unauthenticated_rate: f64,
    /// Most Repositories whose webhook secret is tried for one delivery.
    #[arg(long, default_value_t = DEFAULT_MAX_CANDIDATES, env = "PULLWARDEN_WEBHOOK_MAX_CANDIDATES")]
    pub webhook_max_candidates: usize,
    /// How long a webhook Secret read is reused before it is read again.
    #[arg(long, default_value = "15s", value_parser = parse_timeout, env = "PULLWARDEN_WEBHOOK_SECRET_CACHE_TTL")]
    pub webhook_secret_cache_ttl: Duration,
}

impl WebhookOptions {
    /// The ingress configuration these flags describe.
    pub fn config(&self) -> WebhookConfig {
        WebhookConfig {
            max_body_bytes: self.webhook_max_body_bytes,
            header_read_timeout: self.webhook_header_read_timeout,
            body_read_timeout: self.webhook_body_read_timeout,
            max_connections: self.webhook_max_connections,
            max_connections_per_address: self.webhook_max_connections_per_address,
            max_in_flight_requests: self.webhook_max_in_flight_requests,
            max_in_flight_body_bytes: self.webhook_max_in_flight_body_bytes,
            trusted_proxies: self.webhook_trusted_proxy_cidrs.clone(),
            unauthenticated_burst: self.webhook_unauthenticated_burst,
            unauthenticated_rate: self.webhook_unauthenticated_rate,
            max_distinct_secrets: self.webhook_max_candidates,
            ..WebhookConfig::default()
        }
    }

    /// The directory's bounds these flags describe.
    pub fn candidate_limits(&self) -> CandidateLimits {
        CandidateLimits {
            max_candidates: self.webhook_max_candidates.max(1),
            secret_cache_ttl: self.webhook_secret_cache_ttl,
            ..CandidateLimits::default()
        }
    }
}

/// A positive duration: `10s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds = value * scale;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 24.0 * 3600.0) {
        return Err(format!("{text:?} must be more than 0 and at most 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod option_tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookOptions,
    }

    #[test]
    fn defaults_and_flags_map_to_the_config() {
        let cli = Cli::try_parse_from(["pw"]).unwrap();
        let config = cli.webhook.config();
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(cli.webhook.candidate_limits().max_candidates, 8);

        let cli = Cli::try_parse_from([
            "pw",
            "--webhook-header-read-timeout=500ms",
            "--webhook-body-read-timeout=2m",
            "--webhook-trusted-proxy-cidrs=10.0.0.0/8,192.0.2.1",
            "--webhook-max-connections-per-address=3",
            "--webhook-secret-cache-ttl=30",
        ])
        .unwrap();
        let config = cli.webhook.config();
        assert_eq!(config.header_read_timeout, Duration::from_millis(500));
        assert_eq!(config.body_read_timeout, Duration::from_secs(120));
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.max_connections_per_address, 3);
        assert_eq!(
            cli.webhook.candidate_limits().secret_cache_ttl,
            Duration::from_secs(30)
        );
        assert!(Cli::try_parse_from(["pw", "--webhook-body-read-timeout=0s"]).is_err());
        assert!(Cli::try_parse_from(["pw", "--webhook-trusted-proxy-cidrs=nope"]).is_err());
    }
}
