//! The API budget: one per credential (per API base), shared by every controller that uses it.
//!
//! Flow of one request through [`Budget::execute`]:
//! 1. **Gate**: if the credential's quota is exhausted (`remaining == 0` before `reset`) or the
//!    forge asked us to back off (secondary limit / `Retry-After`), wait when the wait is short
//!    (≤ `max_rate_limit_wait`), otherwise fail fast with `RateLimited` *without sending*, so the
//!    controller requeues at the reset time instead of hammering.
//! 2. **Conditional GET**: a cached ETag for this URL is sent as `If-None-Match`; a `304` is
//!    answered from the cache (GitHub does not charge quota for it).
//! 3. **Send** through the provider's [`Transport`] (octocrab, the gitlab crate, reqwest) with a
//!    per-request timeout.
//! 4. **Observe** rate-limit headers on every response (including 304s and errors).
//! 5. **Classify**: 2xx → cache + return; 5xx/network → jittered exponential back-off, at most
//!    `max_attempts` in total and only for idempotent requests; 403/429 with rate-limit signals →
//!    wait-or-fail as in 1; other 4xx → a categorised [`ForgeError`], never retried.
//!
//! [`Budget::get_all`] follows `Link: rel="next"` (GitHub, Gitea, GitLab) or `X-Next-Page`
//! (GitLab) to the last page; exceeding `max_pages` is an error, never a silent truncation.
//!
//! Everything that needs no I/O (Link parsing, rate-limit decisions, back-off schedule, the LRU
//! ETag cache, response classification) is a pure function or type, unit-tested below.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::ForgeError;
use super::metrics::{Conditional, ForgeMetrics};
use super::types::{ForgeKind, RateLimit};

/// Tunables of the request path. Defaults match the product documentation.
#[derive(Clone, Debug)]
pub struct BudgetConfig {
    pub request_timeout: Duration,
    /// Total attempts for network errors and 5xx (1 = no retry).
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest we sleep inside one call for a rate limit; beyond it we return `RateLimited`.
    pub max_rate_limit_wait: Duration,
    /// Wait used for a 429/secondary limit that names no time.
    pub default_secondary_wait: Duration,
    pub etag_max_entries: usize,
    pub etag_max_bytes: usize,
    pub per_page: u32,
    /// Safety stop for pagination loops (a buggy server could link pages forever).
    pub max_pages: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            request_timeout: Duration::from_secs(15),
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            max_rate_limit_wait: Duration::from_secs(60),
            default_secondary_wait: Duration::from_secs(60),
            etag_max_entries: 10_000,
            etag_max_bytes: 64 * 1024 * 1024,
            per_page: 100,
            max_pages: 1_000,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pagination headers
// ---------------------------------------------------------------------------------------------

/// The `rel="next"` target of an RFC 8288 `Link` header, if any.
pub fn parse_link_next(link: &str) -> Option<String> {
    // Split on commas that separate link-values; URLs are inside <...> so commas in them are
    // protected by scanning for '<' ... '>' first.
    let mut rest = link;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let params_and_rest = &after[end + 1..];
        let params_end = params_and_rest.find('<').unwrap_or(params_and_rest.len());
        let params = &params_and_rest[..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &params_and_rest[params_end..];
    }
    None
}

/// Replace (or add) one query parameter.
pub fn with_query_param(url: &str, key: &str, value: &str) -> Result<String, ForgeError> {
    let mut parsed = Url::parse(url)
        .map_err(|e| ForgeError::invalid_config(format!("bad request URL {url:?}: {e}")))?;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = parsed.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair(key, value);
    }
    Ok(parsed.to_string())
}

/// The next page's URL: `Link: rel="next"` first, then GitLab's `X-Next-Page`.
pub fn next_page_url(current: &str, headers: &HeaderMap) -> Result<Option<String>, ForgeError> {
    for link in headers.get_all(header::LINK) {
        if let Some(next) = link.to_str().ok().and_then(parse_link_next) {
            return Ok(Some(next));
        }
    }
    if let Some(page) = headers
        .get("x-next-page")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        let n: u64 = page.parse().map_err(|_| {
            ForgeError::invalid_response(format!("X-Next-Page is not a number: {page:?}"))
        })?;
        return with_query_param(current, "page", &n.to_string()).map(Some);
    }
    Ok(None)
}

fn same_origin(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

fn header_u64(headers: &HeaderMap, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| {
        headers
            .get(*n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    })
}

/// A rate-limit observation from response headers: GitHub/Gitea `X-RateLimit-*`, GitLab
/// `RateLimit-*`. Only GitHub's `core` bucket is tracked (search/graphql have their own).
pub fn parse_rate_headers(headers: &HeaderMap, now: Timestamp) -> Option<RateLimit> {
    if let Some(resource) = headers
        .get("x-ratelimit-resource")
        .and_then(|v| v.to_str().ok())
        && !resource.eq_ignore_ascii_case("core")
    {
        return None;
    }
    let remaining = header_u64(headers, &["x-ratelimit-remaining", "ratelimit-remaining"])?;
    let limit = header_u64(headers, &["x-ratelimit-limit", "ratelimit-limit"]).unwrap_or(0);
    let reset = header_u64(headers, &["x-ratelimit-reset", "ratelimit-reset"])
        .map(|r| {
            // Epoch seconds on GitHub/GitLab; small values are the IETF draft's delta-seconds.
            if r < 1_000_000_000 {
                now.as_second()
                    .saturating_add(i64::try_from(r).unwrap_or(0))
            } else {
                i64::try_from(r).unwrap_or(i64::MAX)
            }
        })
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(now);
    Some(RateLimit {
        remaining,
        limit,
        reset,
    })
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?;
    let secs = at.as_second().saturating_sub(now.as_second()).max(0);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// What to do before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    Wait(Duration),
    /// Do not send; the quota returns at this time.
    Refuse(Timestamp),
}

/// The per-credential rate-limit view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub last: Option<RateLimit>,
    /// Set by secondary limits / `Retry-After`.
    pub blocked_until: Option<Timestamp>,
}

impl RateState {
    pub fn observe(&mut self, obs: RateLimit) {
        self.last = Some(obs);
    }

    pub fn block_until(&mut self, until: Timestamp) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    pub fn gate(&self, now: Timestamp, max_wait: Duration) -> Gate {
        let mut until: Option<Timestamp> = self.blocked_until.filter(|b| *b > now);
        if let Some(obs) = self.last
            && obs.remaining == 0
            && obs.reset > now
        {
            until = Some(until.map_or(obs.reset, |u| u.max(obs.reset)));
        }
        match until {
            None => Gate::Go,
            Some(u) => {
                let wait = seconds_between(now, u);
                if wait <= max_wait {
                    Gate::Wait(wait)
                } else {
                    Gate::Refuse(u)
                }
            }
        }
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> Duration {
    let millis = to
        .as_millisecond()
        .saturating_sub(from.as_millisecond())
        .max(0);
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn add_duration(t: Timestamp, d: Duration) -> Timestamp {
    let millis = t
        .as_millisecond()
        .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
    Timestamp::from_millisecond(millis).unwrap_or(Timestamp::MAX)
}

/// Equal-jitter exponential back-off: `attempt` 0 is the first retry. `jitter` ∈ [0, 1).
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base
        .checked_mul(2u32.saturating_pow(attempt.min(20)))
        .unwrap_or(max)
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

// ---------------------------------------------------------------------------------------------
// Response classification
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub enum Verdict {
    Ok,
    NotModified,
    RateLimited {
        until: Timestamp,
        secondary: bool,
    },
    /// 5xx: retry with back-off when allowed.
    Retry(String),
    Fail(ForgeError),
}

/// The human message in a forge error body (`message` on GitHub/Gitea, `message`/`error` on
/// GitLab), shortened.
pub fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error", "error_description"]
                .iter()
                .find_map(|k| match v.get(*k) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                        Some(other.to_string())
                    }
                    _ => None,
                })
        });
    // Only the forge's own error field is quoted. Anything else (an HTML page, a proxy's or an
    // internal service's answer) is described, never echoed: a tenant must not be able to read
    // responses of arbitrary endpoints through status conditions.
    let msg = from_json.unwrap_or_else(|| describe_body(body));
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    super::types::truncate_chars(clean.trim(), 300)
}

/// A body that is not a forge error, described without quoting it.
pub(crate) fn describe_body(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        "empty body".to_string()
    } else {
        format!(
            "a {}-byte body that is not a forge error (not shown)",
            body.len()
        )
    }
}

/// A redirect that reached us was not followed: it leaves the origin (reqwest follows
/// same-origin redirects itself, see `crate::net::redirect_policy`).
fn redirect_refused(status: StatusCode, headers: &HeaderMap) -> ForgeError {
    let to = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| url::Url::parse(l).ok())
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|| "an unusable location".to_string());
    ForgeError::OutboundRefused {
        message: format!(
            "the forge answered {status} redirecting to {to}; redirects to another origin are \
             not followed and no credential is sent there"
        ),
    }
}

/// Classify a response. `default_secondary_wait` applies to 429/secondary limits without a time.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
    default_secondary_wait: Duration,
) -> Verdict {
    if status == StatusCode::NOT_MODIFIED {
        return Verdict::NotModified;
    }
    if status.is_success() {
        return Verdict::Ok;
    }
    if status.is_redirection() {
        return Verdict::Fail(redirect_refused(status, headers));
    }
    let msg = error_message(body);
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(wait) = parse_retry_after(headers, now) {
            return Verdict::RateLimited {
                until: add_duration(now, wait.max(Duration::from_secs(1))),
                secondary: true,
            };
        }
        if let Some(obs) = parse_rate_headers(headers, now)
            && obs.remaining == 0
        {
            return Verdict::RateLimited {
                until: obs.reset.max(add_duration(now, Duration::from_secs(1))),
                secondary: false,
            };
        }
        let lower = msg.to_ascii_lowercase();
        if status == StatusCode::TOO_MANY_REQUESTS
            || lower.contains("secondary rate limit")
            || lower.contains("abuse detection")
            || lower.contains("rate limit exceeded")
        {
            return Verdict::RateLimited {
                until: add_duration(now, default_secondary_wait),
                secondary: true,
            };
        }
        return Verdict::Fail(ForgeError::auth(format!("403 Forbidden: {msg}")));
    }
    match status.as_u16() {
        401 => Verdict::Fail(ForgeError::auth(format!(
            "401 Unauthorized (credential rejected or expired): {msg}"
        ))),
        404 => Verdict::Fail(ForgeError::not_found(format!("404: {msg}"))),
        // Conflicts resolve on their own (concurrent writers); worth a later retry.
        409 => Verdict::Fail(ForgeError::transient(format!("409 Conflict: {msg}"))),
        408 => Verdict::Retry(format!("408 Request Timeout: {msg}")),
        s if s >= 500 => Verdict::Retry(format!("{status}: {msg}")),
        _ => Verdict::Fail(ForgeError::invalid_config(format!(
            "forge rejected the request ({status}): {msg}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// ETag cache
// ---------------------------------------------------------------------------------------------

/// A cached 200 response: enough to answer a 304 (body and pagination headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    pub etag: HeaderValue,
    pub body: Bytes,
    pub headers: HeaderMap,
}

impl CachedResponse {
    fn weight(&self, key: &str) -> usize {
        key.len() + self.body.len() + self.etag.len() + 64
    }
}

/// LRU bounded by entry count and by bytes.
#[derive(Debug)]
pub struct EtagCache {
    entries: HashMap<String, (CachedResponse, u64)>,
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl EtagCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        EtagCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Look up and mark as recently used.
    pub fn get(&mut self, key: &str) -> Option<CachedResponse> {
        self.tick += 1;
        let tick = self.tick;
        let (resp, old) = self.entries.get_mut(key)?;
        self.order.remove(old);
        *old = tick;
        self.order.insert(tick, key.to_string());
        Some(resp.clone())
    }

    pub fn insert(&mut self, key: String, resp: CachedResponse) {
        self.remove(&key);
        let weight = resp.weight(&key);
        if weight > self.max_bytes {
            return;
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (resp, self.tick));
        self.bytes += weight;
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((r, _)) = self.entries.remove(&oldest) {
                self.bytes -= r.weight(&oldest);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Some((r, tick)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.bytes -= r.weight(key);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and transports
// ---------------------------------------------------------------------------------------------

/// One API call as the provider modules describe it.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Route template for metrics, e.g. `/repos/{owner}/{repo}/pulls`.
    pub endpoint: &'static str,
    pub body: Option<serde_json::Value>,
    /// Safe to resend after a 5xx/timeout (GET, PATCH, PUT, status POSTs).
    pub idempotent: bool,
}

impl ApiRequest {
    pub fn get(url: impl Into<String>, endpoint: &'static str) -> Self {
        ApiRequest {
            method: Method::GET,
            url: url.into(),
            endpoint,
            body: None,
            idempotent: true,
        }
    }

    pub fn write(
        method: Method,
        url: impl Into<String>,
        endpoint: &'static str,
        body: serde_json::Value,
        idempotent: bool,
    ) -> Self {
        ApiRequest {
            method,
            url: url.into(),
            endpoint,
            body: Some(body),
            idempotent,
        }
    }
}

/// What a transport hands back: the raw response.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A provider's way of putting bytes on the wire (auth included). Errors must already be
/// categorised: `Transient` for anything worth retrying.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    async fn send(&self, req: &ApiRequest, extra: HeaderMap) -> Result<RawResponse, ForgeError>;
}

/// A successful response.
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Answered from the ETag cache after a 304.
    pub from_cache: bool,
}

impl ApiResponse {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ForgeError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            // serde's message can quote the body; say where it failed instead.
            ForgeError::invalid_response(format!(
                "cannot parse the answer ({}) as {}: {:?} error at line {} column {}",
                describe_body(&self.body),
                std::any::type_name::<T>(),
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// Pagination headers worth keeping with a cached page.
fn pagination_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [
        "link",
        "x-next-page",
        "x-total",
        "x-total-count",
        "x-total-pages",
    ] {
        for v in headers.get_all(name) {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                kept.append(n, v.clone());
            }
        }
    }
    kept
}

/// Sleeps longer than this inside one call for rate limits are never taken twice.
const MAX_RATE_WAITS_PER_CALL: u32 = 2;

/// One credential's quota view and ETag cache.
pub struct Budget {
    forge: ForgeKind,
    credential: String,
    config: BudgetConfig,
    metrics: ForgeMetrics,
    state: Mutex<RateState>,
    cache: Mutex<EtagCache>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("forge", &self.forge)
            .field("credential", &self.credential)
            .field("rate_limit", &self.rate_limit())
            .finish()
    }
}

/// What the forge calls made inside one [`measure_cost`] scope cost: responses received, and how
/// many of them were `304 Not Modified` (free on GitHub's quota). A Repository reports this per
/// sync (`status.lastSyncCost`), which is how an idle poll's price on a forge without ETags
/// (Gitea) shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCost {
    pub responses: u32,
    pub not_modified: u32,
}

tokio::task_local! {
    static COST: std::cell::Cell<CallCost>;
}

/// Runs `fut`, counting the forge responses it receives on this task (calls spawned onto other
/// tasks are not counted).
pub async fn measure_cost<F: std::future::Future>(fut: F) -> (F::Output, CallCost) {
    COST.scope(std::cell::Cell::new(CallCost::default()), async {
        let out = fut.await;
        (out, COST.with(std::cell::Cell::get))
    })
    .await
}

fn record_cost(not_modified: bool) {
    let _ = COST.try_with(|c| {
        let mut cost = c.get();
        cost.responses = cost.responses.saturating_add(1);
        cost.not_modified = cost.not_modified.saturating_add(u32::from(not_modified));
        c.set(cost);
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Budget {
    pub fn new(
        forge: ForgeKind,
        credential_fingerprint: &str,
        config: BudgetConfig,
        metrics: ForgeMetrics,
    ) -> Self {
        let cache = EtagCache::new(config.etag_max_entries, config.etag_max_bytes);
        Budget {
            forge,
            credential: credential_fingerprint.chars().take(12).collect(),
            config,
            metrics,
            state: Mutex::new(RateState::default()),
            cache: Mutex::new(cache),
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The last rate limit the forge reported for this credential.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        lock(&self.state).last
    }

    /// Number of cached responses (for tests and debugging).
    pub fn cached_entries(&self) -> usize {
        lock(&self.cache).len()
    }

    fn rate_limited_error(&self, until: Timestamp, what: &str) -> ForgeError {
        ForgeError::RateLimited {
            reset: until,
            message: format!(
                "{} credential {}: {what}",
                self.forge.as_str(),
                self.credential
            ),
        }
    }

    /// Send one request under this budget (see the module docs for the flow).
    pub async fn execute(
        &self,
        transport: &dyn Transport,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ForgeError> {
        let forge = self.forge.as_str();
        let is_get = req.method == Method::GET;
        let mut attempt: u32 = 0;
        let mut rate_waits: u32 = 0;
        loop {
            let gate = lock(&self.state).gate(Timestamp::now(), self.config.max_rate_limit_wait);
            match gate {
                Gate::Go => {}
                Gate::Wait(d) if rate_waits < MAX_RATE_WAITS_PER_CALL => {
                    rate_waits += 1;
                    tracing::info!(forge, credential = %self.credential, wait_ms = d.as_millis() as u64,
                        "rate limited: waiting before sending");
                    tokio::time::sleep(d).await;
                    continue;
                }
                Gate::Wait(d) => {
                    let until = add_duration(Timestamp::now(), d);
                    return Err(self.rate_limited_error(until, "still rate limited after waiting"));
                }
                Gate::Refuse(until) => {
                    return Err(self.rate_limited_error(
                        until,
                        "quota exhausted; not sending until the reset",
                    ));
                }
            }

            let cached = if is_get {
                lock(&self.cache).get(&req.url)
            } else {
                None
            };
            let mut extra = HeaderMap::new();
            if let Some(c) = &cached {
                extra.insert(header::IF_NONE_MATCH, c.etag.clone());
            }

            let sent =
                tokio::time::timeout(self.config.request_timeout, transport.send(req, extra)).await;
            let raw = match sent {
                Err(_) => {
                    self.metrics.request(forge, req.endpoint, "timeout");
                    Err(ForgeError::transient(format!(
                        "{} {} timed out after {:?}",
                        req.method, req.endpoint, self.config.request_timeout
                    )))
                }
                Ok(Err(e)) => {
                    self.metrics.request(forge, req.endpoint, "error");
                    Err(e)
                }
                Ok(Ok(raw)) => Ok(raw),
            };
            let raw = match raw {
                Ok(raw) => raw,
                Err(e @ ForgeError::Transient { .. }) => {
                    if req.idempotent && attempt + 1 < self.config.max_attempts {
                        self.sleep_backoff(attempt, &e).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };

            let now = Timestamp::now();
            self.metrics
                .request(forge, req.endpoint, raw.status.as_str());
            record_cost(raw.status == StatusCode::NOT_MODIFIED);
            if let Some(obs) = parse_rate_headers(&raw.headers, now) {
                lock(&self.state).observe(obs);
                self.metrics
                    .remaining(forge, &self.credential, obs.remaining);
            }

            match classify(
                raw.status,
                &raw.headers,
                &raw.body,
                now,
                self.config.default_secondary_wait,
            ) {
                Verdict::NotModified => {
                    let Some(c) = cached else {
                        return Err(ForgeError::invalid_response(format!(
                            "{} answered 304 to a request without If-None-Match",
                            req.endpoint
                        )));
                    };
                    self.metrics.conditional(forge, Conditional::Hit);
                    let mut headers = raw.headers;
                    for (k, v) in &c.headers {
                        headers.insert(k.clone(), v.clone());
                    }
                    return Ok(ApiResponse {
                        status: StatusCode::OK,
                        headers,
                        body: c.body,
                        from_cache: true,
                    });
                }
                Verdict::Ok => {
                    if is_get {
                        self.metrics.conditional(
                            forge,
                            if raw.headers.contains_key(header::ETAG) {
                                Conditional::Miss
                            } else {
                                Conditional::NoEtag
                            },
                        );
                        let mut cache = lock(&self.cache);
                        match raw.headers.get(header::ETAG) {
                            Some(etag) => cache.insert(
                                req.url.clone(),
                                CachedResponse {
                                    etag: etag.clone(),
                                    body: raw.body.clone(),
                                    headers: pagination_headers(&raw.headers),
                                },
                            ),
                            None => cache.remove(&req.url),
                        }
                    }
                    return Ok(ApiResponse {
                        status: raw.status,
                        headers: raw.headers,
                        body: raw.body,
                        from_cache: false,
                    });
                }
                Verdict::RateLimited { until, secondary } => {
                    lock(&self.state).block_until(until);
                    let wait = seconds_between(now, until);
                    let kind = if secondary { "secondary" } else { "primary" };
                    if rate_waits < MAX_RATE_WAITS_PER_CALL
                        && wait <= self.config.max_rate_limit_wait
                    {
                        rate_waits += 1;
                        tracing::info!(forge, credential = %self.credential, kind,
                            wait_ms = wait.as_millis() as u64, "rate limited by forge: waiting");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(self.rate_limited_error(
                        until,
                        &format!("{kind} rate limit ({})", raw.status),
                    ));
                }
                Verdict::Retry(msg) => {
                    let e =
                        ForgeError::transient(format!("{} {}: {msg}", req.method, req.endpoint));
                    if req.idempotent && attempt + 1 < self.config.max_attempts {
                        self.sleep_backoff(attempt, &e).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    async fn sleep_backoff(&self, attempt: u32, cause: &ForgeError) {
        let delay = backoff_delay(
            attempt,
            self.config.backoff_base,
            self.config.backoff_max,
            rand::random::<f64>(),
        );
        tracing::debug!(forge = self.forge.as_str(), attempt, delay_ms = delay.as_millis() as u64,
            error = %cause, "retrying forge request");
        tokio::time::sleep(delay).await;
    }

    /// GET every page starting at `url` (which should carry `per_page`), following
    /// `Link: rel="next"` / `X-Next-Page`. Each page is conditional on its own ETag.
    pub async fn get_all(
        &self,
        transport: &dyn Transport,
        url: &str,
        endpoint: &'static str,
    ) -> Result<Vec<ApiResponse>, ForgeError> {
        let mut pages = Vec::new();
        let mut next = Some(url.to_string());
        while let Some(current) = next {
            if pages.len() >= self.config.max_pages as usize {
                return Err(ForgeError::invalid_response(format!(
                    "{endpoint}: more than {} pages; refusing to return a truncated list",
                    self.config.max_pages
                )));
            }
            let resp = self
                .execute(transport, &ApiRequest::get(current.clone(), endpoint))
                .await?;
            next = next_page_url(&current, &resp.headers)?;
            if let Some(n) = &next {
                // Never send the credential to a host the first request did not target.
                if !same_origin(n, url) {
                    return Err(ForgeError::invalid_response(format!(
                        "{endpoint}: next-page link points to another origin: {n}"
                    )));
                }
                if *n == current {
                    return Err(ForgeError::invalid_response(format!(
                        "{endpoint}: next-page link points to the same page"
                    )));
                }
            }
            pages.push(resp);
        }
        Ok(pages)
    }

    /// [`Self::get_all`] + parse each page as a JSON array of `T`, concatenated.
    pub async fn get_all_items<T: DeserializeOwned>(
        &self,
        transport: &dyn Transport,
        url: &str,
        endpoint: &'static str,
    ) -> Result<Vec<T>, ForgeError> {
        let mut out = Vec::new();
        for page in self.get_all(transport, url, endpoint).await? {
            out.extend(page.json::<Vec<T>>()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn link_header_parsing() {
        let gh = r#"<https://api.github.com/repositories/1/pulls?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/pulls?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            parse_link_next(gh).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?per_page=100&page=2")
        );
        let last_page = r#"<https://x/p?page=1>; rel="first", <https://x/p?page=4>; rel="prev""#;
        assert_eq!(parse_link_next(last_page), None);
        // rel listed second, unquoted, multiple relation types, odd spacing.
        assert_eq!(
            parse_link_next("<https://x/a?b=1,2>;rel=next").as_deref(),
            Some("https://x/a?b=1,2")
        );
        assert_eq!(
            parse_link_next(
                r#"<https://x/1>; rel="prev", <https://x/3>; type="json"; rel="next last""#
            )
            .as_deref(),
            Some("https://x/3")
        );
        assert_eq!(parse_link_next(""), None);
        assert_eq!(parse_link_next("garbage"), None);
    }

    #[test]
    fn next_page_from_headers() {
        let url =
            "https://gitlab.example.com/api/v4/projects/1/merge_requests?state=opened&per_page=100";
        let h = headers(&[("x-next-page", "3"), ("x-page", "2")]);
        let next = next_page_url(url, &h).unwrap().unwrap();
        assert!(
            next.contains("page=3")
                && next.contains("state=opened")
                && next.contains("per_page=100"),
            "{next}"
        );
        let again = next_page_url(&next, &headers(&[("x-next-page", "4")]))
            .unwrap()
            .unwrap();
        assert!(
            again.contains("page=4") && !again.contains("page=3"),
            "{again}"
        );
        assert_eq!(
            next_page_url(url, &headers(&[("x-next-page", "")])).unwrap(),
            None
        );
        assert!(next_page_url(url, &headers(&[("x-next-page", "x")])).is_err());
        // Link wins over X-Next-Page.
        let h = headers(&[
            (
                "link",
                "<https://gitlab.example.com/l?page=9>; rel=\"next\"",
            ),
            ("x-next-page", "3"),
        ]);
        assert_eq!(
            next_page_url(url, &h).unwrap().as_deref(),
            Some("https://gitlab.example.com/l?page=9")
        );
        assert!(same_origin("https://a/x", "https://a:443/y"));
        assert!(!same_origin("https://a/x", "https://b/x"));
        assert!(!same_origin("http://a/x", "https://a/x"));
    }

    #[test]
    fn rate_headers() {
        let now = ts(1_700_000_000);
        let h = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1700000600"),
            ("x-ratelimit-resource", "core"),
        ]);
        assert_eq!(
            parse_rate_headers(&h, now),
            Some(RateLimit {
                remaining: 4999,
                limit: 5000,
                reset: ts(1_700_000_600)
            })
        );
        let gl = headers(&[
            ("ratelimit-limit", "600"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "1700000060"),
        ]);
        assert_eq!(parse_rate_headers(&gl, now).unwrap().remaining, 0);
        // Delta-seconds form.
        let delta = headers(&[("ratelimit-remaining", "3"), ("ratelimit-reset", "30")]);
        assert_eq!(
            parse_rate_headers(&delta, now).unwrap().reset,
            ts(1_700_000_030)
        );
        let search = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-resource", "search"),
        ]);
        assert_eq!(parse_rate_headers(&search, now), None);
        assert_eq!(parse_rate_headers(&HeaderMap::new(), now), None);

        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "42")]), now),
            Some(Duration::from_secs(42))
        );
        let date = headers(&[("retry-after", "Tue, 14 Nov 2023 22:15:00 GMT")]); // now + 100 s
        assert_eq!(
            parse_retry_after(&date, now),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "soon")]), now),
            None
        );
    }

    #[test]
    fn rate_gate_decisions() {
        let now = ts(1_000);
        let max = Duration::from_secs(60);
        let mut s = RateState::default();
        assert_eq!(s.gate(now, max), Gate::Go);
        s.observe(RateLimit {
            remaining: 10,
            limit: 5000,
            reset: ts(2_000),
        });
        assert_eq!(s.gate(now, max), Gate::Go);
        // Exhausted, reset soon → wait; far → refuse without sending.
        s.observe(RateLimit {
            remaining: 0,
            limit: 5000,
            reset: ts(1_030),
        });
        assert_eq!(s.gate(now, max), Gate::Wait(Duration::from_secs(30)));
        s.observe(RateLimit {
            remaining: 0,
            limit: 5000,
            reset: ts(4_600),
        });
        assert_eq!(s.gate(now, max), Gate::Refuse(ts(4_600)));
        // After the reset passed, sending resumes even before new headers arrive.
        assert_eq!(s.gate(ts(4_601), max), Gate::Go);
        // Secondary block.
        let mut s = RateState::default();
        s.block_until(ts(1_010));
        assert_eq!(s.gate(now, max), Gate::Wait(Duration::from_secs(10)));
        s.block_until(ts(1_005)); // never shortens an existing block
        assert_eq!(s.gate(now, max), Gate::Wait(Duration::from_secs(10)));
        assert_eq!(s.gate(ts(1_011), max), Gate::Go);
    }

    #[test]
    fn backoff_schedule() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(8);
        assert_eq!(backoff_delay(0, base, max, 0.0), Duration::from_millis(250));
        assert_eq!(backoff_delay(0, base, max, 0.999_999).as_millis(), 499);
        assert_eq!(backoff_delay(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(2, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(10, base, max, 1.0), max);
        assert_eq!(backoff_delay(u32::MAX, base, max, 0.0), max / 2);
        for a in 0..6 {
            assert!(backoff_delay(a, base, max, 0.5) <= backoff_delay(a + 1, base, max, 0.5));
        }
    }

    #[test]
    fn classification() {
        let now = ts(1_700_000_000);
        let w = Duration::from_secs(60);
        let c = |status: u16, h: &[(&str, &str)], body: &str| {
            classify(
                StatusCode::from_u16(status).unwrap(),
                &headers(h),
                body.as_bytes(),
                now,
                w,
            )
        };
        assert!(matches!(c(200, &[], ""), Verdict::Ok));
        assert!(matches!(c(304, &[], ""), Verdict::NotModified));
        // Primary limit: 403 + remaining 0.
        match c(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000500"),
            ],
            "{\"message\":\"API rate limit exceeded\"}",
        ) {
            Verdict::RateLimited {
                until,
                secondary: false,
            } => assert_eq!(until, ts(1_700_000_500)),
            v => panic!("{v:?}"),
        }
        // Secondary limit with Retry-After.
        match c(
            403,
            &[("retry-after", "30"), ("x-ratelimit-remaining", "4000")],
            "{\"message\":\"You have exceeded a secondary rate limit\"}",
        ) {
            Verdict::RateLimited {
                until,
                secondary: true,
            } => assert_eq!(until, ts(1_700_000_030)),
            v => panic!("{v:?}"),
        }
        // Secondary limit by message only.
        match c(
            403,
            &[("x-ratelimit-remaining", "4000")],
            "{\"message\":\"You have exceeded a secondary rate limit. Please wait\"}",
        ) {
            Verdict::RateLimited {
                until,
                secondary: true,
            } => assert_eq!(until, ts(1_700_000_060)),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            c(429, &[], ""),
            Verdict::RateLimited {
                secondary: true,
                ..
            }
        ));
        // A plain 403 is an auth problem.
        match c(
            403,
            &[("x-ratelimit-remaining", "4000")],
            "{\"message\":\"Resource not accessible by integration\"}",
        ) {
            Verdict::Fail(e) => {
                assert_eq!(e.category(), "AuthFailed");
                assert!(e.to_string().contains("Resource not accessible"), "{e}");
            }
            v => panic!("{v:?}"),
        }
        match c(401, &[], "{\"message\":\"Bad credentials\"}") {
            Verdict::Fail(e) => assert_eq!(e.category(), "AuthFailed"),
            v => panic!("{v:?}"),
        }
        match c(404, &[], "{\"message\":\"Not Found\"}") {
            Verdict::Fail(e) => assert_eq!(e.category(), "NotFound"),
            v => panic!("{v:?}"),
        }
        match c(502, &[], "<html>secret internal page</html>") {
            Verdict::Retry(m) => {
                assert!(
                    !m.contains("secret"),
                    "bodies of other answers are not echoed: {m}"
                );
                assert!(m.contains("33-byte body"), "{m}");
            }
            v => panic!("{v:?}"),
        }
        // A redirect that reaches us left the origin: refused, naming only the origin.
        match c(
            302,
            &[("location", "http://169.254.169.254/latest/meta-data?x=1")],
            "",
        ) {
            Verdict::Fail(e) => {
                assert_eq!(e.category(), "OutboundRefused");
                assert!(e.to_string().contains("http://169.254.169.254;"), "{e}");
                assert!(!e.to_string().contains("meta-data"), "{e}");
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(
            error_message(br#"{"message":"line\nbreak\u0007"}"#),
            "line break"
        );
        assert!(matches!(c(500, &[], ""), Verdict::Retry(_)));
        match c(
            422,
            &[],
            "{\"message\":\"Validation Failed\",\"errors\":[]}",
        ) {
            Verdict::Fail(e) => assert_eq!(e.category(), "InvalidConfig"),
            v => panic!("{v:?}"),
        }
        match c(409, &[], "{\"message\":\"conflict\"}") {
            Verdict::Fail(e) => assert_eq!(e.category(), "Transient"),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            error_message(b"{\"error\":\"invalid_token\"}"),
            "invalid_token"
        );
        assert_eq!(
            error_message(b"{\"message\":{\"name\":[\"bad\"]}}"),
            "{\"name\":[\"bad\"]}"
        );
    }

    fn cached(body: &str) -> CachedResponse {
        CachedResponse {
            etag: HeaderValue::from_static("\"e\""),
            body: Bytes::from(body.to_string()),
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn etag_cache_is_lru_bounded() {
        let mut c = EtagCache::new(2, 1 << 20);
        c.insert("a".into(), cached("1"));
        c.insert("b".into(), cached("2"));
        assert!(c.get("a").is_some()); // a is now most recent
        c.insert("c".into(), cached("3"));
        assert_eq!(c.len(), 2);
        assert!(c.get("b").is_none(), "least recently used evicted");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        // Replacing keeps accounting right.
        c.insert("a".into(), cached("1111"));
        assert_eq!(c.get("a").unwrap().body, Bytes::from("1111"));
        c.remove("a");
        c.remove("c");
        assert_eq!((c.len(), c.bytes()), (0, 0));

        // Byte bound.
        let mut c = EtagCache::new(100, 300);
        c.insert("x".into(), cached(&"x".repeat(100)));
        c.insert("y".into(), cached(&"y".repeat(100)));
        assert_eq!(c.len(), 1, "second entry pushes the first out by bytes");
        assert!(c.get("y").is_some());
        c.insert("huge".into(), cached(&"h".repeat(1000)));
        assert!(
            c.get("huge").is_none(),
            "an entry larger than the cache is not stored"
        );
        assert!(c.get("y").is_some());
    }

    /// A scripted transport for the I/O loop.
    #[derive(Debug, Default)]
    struct Script {
        responses: Mutex<VecDeque<Result<RawResponse, ForgeError>>>,
        seen: Mutex<Vec<(String, Option<String>)>>,
        calls: AtomicUsize,
    }

    impl Script {
        fn push(&self, status: u16, h: &[(&str, &str)], body: &str) {
            lock(&self.responses).push_back(Ok(RawResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers: headers(h),
                body: Bytes::from(body.to_string()),
            }));
        }
        fn push_err(&self, e: ForgeError) {
            lock(&self.responses).push_back(Err(e));
        }
    }

    #[async_trait]
    impl Transport for Script {
        async fn send(
            &self,
            req: &ApiRequest,
            extra: HeaderMap,
        ) -> Result<RawResponse, ForgeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            lock(&self.seen).push((
                req.url.clone(),
                extra
                    .get(header::IF_NONE_MATCH)
                    .map(|v| v.to_str().unwrap().to_string()),
            ));
            lock(&self.responses)
                .pop_front()
                .unwrap_or_else(|| Err(ForgeError::invalid_response("script exhausted")))
        }
    }

    fn budget() -> (Budget, ForgeMetrics) {
        let metrics = ForgeMetrics::new();
        let cfg = BudgetConfig {
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(4),
            max_rate_limit_wait: Duration::from_secs(2),
            ..BudgetConfig::default()
        };
        (
            Budget::new(ForgeKind::Github, "0123456789abcdef", cfg, metrics.clone()),
            metrics,
        )
    }

    const BASE: &str = "https://api.example.com/repos/o/r/pulls?per_page=100";

    #[tokio::test]
    async fn pagination_and_conditional_requests() {
        let (b, metrics) = budget();
        let t = Script::default();
        let page2 = "https://api.example.com/repos/o/r/pulls?per_page=100&page=2";
        t.push(
            200,
            &[
                ("etag", "\"p1\""),
                ("link", &format!("<{page2}>; rel=\"next\"")),
            ],
            "[1,2]",
        );
        t.push(200, &[("etag", "\"p2\"")], "[3]");
        let items: Vec<u32> = b
            .get_all_items(&t, BASE, "/repos/{owner}/{repo}/pulls")
            .await
            .unwrap();
        assert_eq!(items, vec![1, 2, 3]);
        // Second poll: both pages 304, answered from cache, pagination header replayed.
        t.push(
            304,
            &[
                ("x-ratelimit-remaining", "4990"),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-reset", "1900000000"),
            ],
            "",
        );
        t.push(304, &[], "");
        let again: Vec<u32> = b
            .get_all_items(&t, BASE, "/repos/{owner}/{repo}/pulls")
            .await
            .unwrap();
        assert_eq!(again, vec![1, 2, 3]);
        let seen = lock(&t.seen).clone();
        assert_eq!(seen[0].1, None);
        assert_eq!(seen[2], (BASE.to_string(), Some("\"p1\"".into())));
        assert_eq!(seen[3], (page2.to_string(), Some("\"p2\"".into())));
        assert_eq!(b.rate_limit().unwrap().remaining, 4990);
        let hits = metrics
            .conditional_requests
            .get_or_create(&crate::forge::metrics::ConditionalLabels {
                forge: "github".into(),
                result: "hit".into(),
            })
            .get();
        assert_eq!(hits, 2);
        assert_eq!(b.cached_entries(), 2);
    }

    /// A forge that sends no ETag (Gitea's JSON API): every poll is full responses, which the
    /// per-sync cost and the `no_etag` series make visible; with ETags the cost shows the 304s.
    #[tokio::test]
    async fn sync_cost_counts_responses_and_304s_and_no_etag_is_its_own_series() {
        let (b, metrics) = budget();
        let t = Script::default();
        t.push(200, &[], "[1]");
        t.push(200, &[], "[1]");
        let ((), cost) = measure_cost(async {
            for _ in 0..2 {
                let _: Vec<u32> = b
                    .get_all_items(&t, BASE, "/repos/{owner}/{repo}/pulls")
                    .await
                    .unwrap();
            }
        })
        .await;
        assert_eq!(
            cost,
            CallCost {
                responses: 2,
                not_modified: 0
            }
        );
        assert!(lock(&t.seen).iter().all(|(_, etag)| etag.is_none()));
        let series = |result: &str| {
            metrics
                .conditional_requests
                .get_or_create(&crate::forge::metrics::ConditionalLabels {
                    forge: "github".into(),
                    result: result.into(),
                })
                .get()
        };
        assert_eq!(
            (series("no_etag"), series("miss"), series("hit")),
            (2, 0, 0)
        );

        t.push(200, &[("etag", "\"e\"")], "[1]");
        t.push(304, &[], "");
        let ((), cost) = measure_cost(async {
            for _ in 0..2 {
                let _: Vec<u32> = b
                    .get_all_items(&t, BASE, "/repos/{owner}/{repo}/pulls")
                    .await
                    .unwrap();
            }
        })
        .await;
        assert_eq!(
            cost,
            CallCost {
                responses: 2,
                not_modified: 1
            }
        );
        assert_eq!(
            (series("no_etag"), series("miss"), series("hit")),
            (2, 1, 1)
        );
        // Outside a scope nothing is counted (and nothing panics).
        t.push(200, &[], "[1]");
        let _: Vec<u32> = b
            .get_all_items(&t, BASE, "/repos/{owner}/{repo}/pulls")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn pagination_refuses_foreign_origin_and_loops() {
        let (b, _) = budget();
        let t = Script::default();
        t.push(
            200,
            &[("link", "<https://evil.example/steal?page=2>; rel=\"next\"")],
            "[1]",
        );
        let e = b.get_all(&t, BASE, "/x").await.unwrap_err();
        assert_eq!(e.category(), "InvalidResponse");
        t.push(200, &[("link", &format!("<{BASE}>; rel=\"next\""))], "[1]");
        assert!(b.get_all(&t, BASE, "/x").await.is_err());
    }

    #[tokio::test]
    async fn retries_5xx_then_fails_transient_never_empty() {
        let (b, _) = budget();
        let t = Script::default();
        t.push(502, &[], "bad gateway");
        t.push(200, &[], "[7]");
        let v: Vec<u32> = b.get_all_items(&t, BASE, "/x").await.unwrap();
        assert_eq!(v, vec![7]);
        for _ in 0..3 {
            t.push(500, &[], "boom");
        }
        let e = b.get_all_items::<u32>(&t, BASE, "/x").await.unwrap_err();
        assert_eq!(e.category(), "Transient");
        assert_eq!(t.calls.load(Ordering::SeqCst), 5, "3 attempts at most");
        // Network errors are retried too; 4xx never.
        t.push_err(ForgeError::transient("connection refused"));
        t.push(200, &[], "[]");
        assert!(
            b.get_all_items::<u32>(&t, BASE, "/x")
                .await
                .unwrap()
                .is_empty()
        );
        t.push(404, &[], "{\"message\":\"Not Found\"}");
        let before = t.calls.load(Ordering::SeqCst);
        assert_eq!(
            b.get_all_items::<u32>(&t, BASE, "/x")
                .await
                .unwrap_err()
                .category(),
            "NotFound"
        );
        assert_eq!(t.calls.load(Ordering::SeqCst), before + 1);
        // Non-idempotent writes are not resent after a 5xx.
        t.push(500, &[], "");
        let post = ApiRequest::write(Method::POST, BASE, "/x", serde_json::json!({}), false);
        let before = t.calls.load(Ordering::SeqCst);
        assert_eq!(
            b.execute(&t, &post).await.unwrap_err().category(),
            "Transient"
        );
        assert_eq!(t.calls.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn rate_limits_wait_or_fail_fast() {
        let (b, _) = budget();
        let t = Script::default();
        // Secondary limit with a short Retry-After: waited, then retried.
        t.push(
            403,
            &[("retry-after", "1")],
            "{\"message\":\"secondary rate limit\"}",
        );
        t.push(200, &[], "[1]");
        let start = std::time::Instant::now();
        let v: Vec<u32> = b.get_all_items(&t, BASE, "/x").await.unwrap();
        assert_eq!(v, vec![1]);
        assert!(start.elapsed() >= Duration::from_millis(900));

        // Primary limit far in the future: RateLimited, and the next call is not even sent.
        let reset = Timestamp::now().as_second() + 3600;
        t.push(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-reset", &reset.to_string()),
            ],
            "{\"message\":\"API rate limit exceeded\"}",
        );
        let e = b.get_all_items::<u32>(&t, BASE, "/x").await.unwrap_err();
        match &e {
            ForgeError::RateLimited { reset: r, .. } => assert_eq!(r.as_second(), reset),
            other => panic!("{other:?}"),
        }
        let calls = t.calls.load(Ordering::SeqCst);
        let e = b.get_all_items::<u32>(&t, BASE, "/x").await.unwrap_err();
        assert_eq!(e.category(), "RateLimited");
        assert_eq!(
            t.calls.load(Ordering::SeqCst),
            calls,
            "no request sent while exhausted"
        );
        assert_eq!(b.rate_limit().unwrap().remaining, 0);
    }

    #[tokio::test]
    async fn timeout_is_transient() {
        #[derive(Debug)]
        struct Slow(Arc<AtomicUsize>);
        #[async_trait]
        impl Transport for Slow {
            async fn send(&self, _: &ApiRequest, _: HeaderMap) -> Result<RawResponse, ForgeError> {
                self.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
                Err(ForgeError::invalid_response("unreachable"))
            }
        }
        let metrics = ForgeMetrics::new();
        let cfg = BudgetConfig {
            request_timeout: Duration::from_millis(20),
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            ..BudgetConfig::default()
        };
        let b = Budget::new(ForgeKind::Gitea, "f", cfg, metrics);
        let n = Arc::new(AtomicUsize::new(0));
        let e = b
            .execute(&Slow(n.clone()), &ApiRequest::get(BASE, "/x"))
            .await
            .unwrap_err();
        assert_eq!(e.category(), "Transient");
        assert!(e.to_string().contains("timed out"), "{e}");
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
