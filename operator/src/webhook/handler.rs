//! The axum side of the ingress: routes, the per-delivery flow described in the module docs
//! of [`super`], and the shared state (de-duplication cache, rate limiters, metrics).
//!
//! The remote IP (for the unauthenticated budget) comes from axum's
//! `ConnectInfo<SocketAddr>`; [`serve`] sets that up. Behind a proxy every request shares the
//! proxy's address, and without `ConnectInfo` the per-IP budget is not applied at all;
//! `X-Forwarded-For` is deliberately not trusted (anyone can send it).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use subtle::ConstantTimeEq;
use tracing::{debug, info, warn};

use super::event::{ForgeEvent, Route, parse};
use super::limits::{DedupeCache, RateLimiter};
use super::metrics::{WebhookMetrics, WebhookResult};
use super::verify::{PresentedCredential, presented_credential, verify};
use super::{
    Forge, ObjectKey, RepositoryDirectory, WebhookCandidate, WebhookConfig, WebhookSecret,
};

/// Everything the routes share. Cheap to clone.
#[derive(Clone)]
pub struct WebhookState {
    inner: Arc<Inner>,
}

struct Inner {
    config: WebhookConfig,
    directory: Arc<dyn RepositoryDirectory>,
    metrics: WebhookMetrics,
    dedupe: Mutex<DedupeCache<(Forge, String)>>,
    per_source: Mutex<RateLimiter<ObjectKey>>,
    unauthenticated: Mutex<RateLimiter<IpAddr>>,
    /// Random per process; verified against when no Repository follows the URL, so that an
    /// unknown repository costs the same HMAC work as a known one with a wrong signature.
    decoy_secret: WebhookSecret,
}

impl WebhookState {
    pub fn new(
        config: WebhookConfig,
        directory: Arc<dyn RepositoryDirectory>,
        metrics: WebhookMetrics,
    ) -> Self {
        let inner = Inner {
            dedupe: Mutex::new(DedupeCache::new(config.dedupe_capacity, config.dedupe_ttl)),
            per_source: Mutex::new(RateLimiter::new(
                config.limiter_capacity,
                config.per_source_rate,
                config.per_source_burst,
            )),
            unauthenticated: Mutex::new(RateLimiter::new(
                config.limiter_capacity,
                config.unauthenticated_rate,
                config.unauthenticated_burst,
            )),
            decoy_secret: WebhookSecret::new(rand::random::<[u8; 32]>().to_vec()),
            config,
            directory,
            metrics,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &WebhookMetrics {
        &self.inner.metrics
    }
}

impl fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// `POST /hooks/{github,gitlab,gitea}` and `GET /healthz`.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/hooks/github", post(github))
        .route("/hooks/gitlab", post(gitlab))
        .route("/hooks/gitea", post(gitea))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Serve [`router`] on `listener` with the peer address available to the per-IP limiter,
/// until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebhookState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn github(State(state): State<WebhookState>, request: Request) -> Response {
    handle(&state, Forge::Github, request).await
}

async fn gitlab(State(state): State<WebhookState>, request: Request) -> Response {
    handle(&state, Forge::Gitlab, request).await
}

async fn gitea(State(state): State<WebhookState>, request: Request) -> Response {
    handle(&state, Forge::Gitea, request).await
}

async fn handle(state: &WebhookState, forge: Forge, request: Request) -> Response {
    let outcome = process(&state.inner, forge, request).await;
    state.inner.metrics.record(forge, outcome.result());
    outcome.into_response()
}

/// How one delivery ended.
#[derive(Debug)]
enum Outcome {
    Accepted,
    Ping,
    Ignored,
    Duplicate,
    Unauthorized,
    TooLarge,
    Malformed { status: StatusCode, message: String },
    RateLimited { retry_after: Duration },
}

impl Outcome {
    fn result(&self) -> WebhookResult {
        match self {
            Outcome::Accepted => WebhookResult::Accepted,
            Outcome::Ping | Outcome::Ignored => WebhookResult::Ignored,
            Outcome::Duplicate => WebhookResult::Duplicate,
            Outcome::Unauthorized => WebhookResult::Unauthorized,
            Outcome::TooLarge => WebhookResult::TooLarge,
            Outcome::Malformed { .. } => WebhookResult::Malformed,
            Outcome::RateLimited { .. } => WebhookResult::RateLimited,
        }
    }

    fn malformed(message: impl fmt::Display) -> Self {
        Outcome::Malformed {
            status: StatusCode::BAD_REQUEST,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let result = self.result().as_str();
        let (status, body) = match &self {
            Outcome::Accepted => (StatusCode::ACCEPTED, json_result(result)),
            Outcome::Ignored => (StatusCode::ACCEPTED, json_result(result)),
            Outcome::Ping => (StatusCode::OK, json_result("ping")),
            Outcome::Duplicate => (StatusCode::OK, json_result(result)),
            // One fixed response whatever the reason (unknown repository, missing, malformed
            // or wrong signature), so a caller learns nothing about which Repositories exist.
            Outcome::Unauthorized => (StatusCode::UNAUTHORIZED, json_result(result)),
            Outcome::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, json_result(result)),
            Outcome::Malformed { status, message } => (
                *status,
                serde_json::json!({ "result": result, "message": message }).to_string(),
            ),
            Outcome::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, json_result(result)),
        };
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Outcome::RateLimited { retry_after } = self {
            let seconds = retry_after.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn json_result(result: &str) -> String {
    serde_json::json!({ "result": result }).to_string()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked (no await, no partial
    // updates spanning a panic point), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The peer address as a rate-limit key: IPv6 clients are grouped by /64, since one host
/// usually owns a whole /64 and could otherwise rotate addresses to escape the limit.
fn client_key(request: &Request) -> Option<IpAddr> {
    let ConnectInfo(addr) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(match addr.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    })
}

async fn process(inner: &Inner, forge: Forge, request: Request) -> Outcome {
    let client = client_key(&request);
    if let Some(ip) = client
        && let Err(retry_after) = lock(&inner.unauthenticated).check(&ip, Instant::now())
    {
        // This address spent its budget of failed requests: refuse before reading anything.
        debug!(%forge, "webhook refused: too many failed requests from this address");
        return Outcome::RateLimited { retry_after };
    }
    let (parts, body) = request.into_parts();
    match authenticate(inner, forge, &parts.headers, body).await {
        Ok(verified) => route_verified(inner, verified).await,
        Err(failure) => {
            // Only failures spend the per-IP budget, so a forge that delivers correctly is never
            // slowed down by it.
            if let Some(ip) = client {
                lock(&inner.unauthenticated).charge(&ip, Instant::now());
            }
            failure
        }
    }
}

struct Verified {
    event: ForgeEvent,
    targets: Vec<ObjectKey>,
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Io,
}

async fn authenticate(
    inner: &Inner,
    forge: Forge,
    headers: &HeaderMap,
    body: Body,
) -> Result<Verified, Outcome> {
    let max = inner.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        debug!(%forge, "webhook refused: declared body too large");
        return Err(Outcome::TooLarge);
    }
    let body =
        match tokio::time::timeout(inner.config.body_read_timeout, read_capped(body, max)).await {
            Ok(Ok(body)) => body,
            Ok(Err(ReadError::TooLarge)) => {
                debug!(%forge, "webhook refused: body too large");
                return Err(Outcome::TooLarge);
            }
            Ok(Err(ReadError::Io)) => return Err(Outcome::malformed("could not read the body")),
            Err(_) => {
                return Err(Outcome::Malformed {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: "body not received in time".to_owned(),
                });
            }
        };

    let event = parse(forge, headers, &body).map_err(|error| {
        debug!(%forge, %error, "webhook refused: malformed");
        let status = match error {
            super::ParseError::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Outcome::Malformed {
            status,
            message: error.to_string(),
        }
    })?;

    let credential = presented_credential(forge, headers).map_err(|reason| {
        debug!(%forge, delivery = %event.delivery_id, %reason, "webhook unauthorized");
        Outcome::Unauthorized
    })?;
    let candidates = inner
        .directory
        .candidates(forge, &event.repository_urls)
        .await;
    let candidate_count = candidates.len();
    let targets = verified_targets(inner, &credential, candidates, &body);
    if targets.is_empty() {
        debug!(
            %forge,
            delivery = %event.delivery_id,
            candidates = candidate_count,
            "webhook unauthorized: no candidate secret verifies"
        );
        return Err(Outcome::Unauthorized);
    }
    Ok(Verified { event, targets })
}

/// Read the body, giving up as soon as it grows past `max` bytes (the rest is never read).
async fn read_capped(body: Body, max: usize) -> Result<Bytes, ReadError> {
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ReadError::Io)?;
        if chunk.len() > max - buffer.len() {
            return Err(ReadError::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// The candidates whose secret verifies the raw body, sorted and de-duplicated. Candidates
/// sharing a secret are verified once; at most `max_distinct_secrets` secrets are tried.
fn verified_targets(
    inner: &Inner,
    credential: &PresentedCredential,
    candidates: Vec<WebhookCandidate>,
    body: &[u8],
) -> Vec<ObjectKey> {
    let limit = inner.config.max_distinct_secrets.max(1);
    let mut groups: Vec<(WebhookSecret, Vec<ObjectKey>)> = Vec::new();
    let mut skipped = 0usize;
    for WebhookCandidate { target, secret } in candidates {
        let same = groups
            .iter()
            .position(|(s, _)| bool::from(s.expose().ct_eq(secret.expose())));
        match same {
            Some(i) => groups[i].1.push(target),
            None if groups.len() < limit => groups.push((secret, vec![target])),
            None => skipped += 1,
        }
    }
    if skipped > 0 {
        warn!(
            skipped,
            limit, "more distinct webhook secrets follow one repository than are verified"
        );
    }
    if groups.is_empty() {
        std::hint::black_box(verify(credential, &inner.decoy_secret, body));
        return Vec::new();
    }
    let mut targets: Vec<ObjectKey> = groups
        .into_iter()
        .filter(|(secret, _)| verify(credential, secret, body))
        .flat_map(|(_, targets)| targets)
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

async fn route_verified(inner: &Inner, Verified { event, targets }: Verified) -> Outcome {
    let forge = event.forge;
    // Recorded only now, after verification: an unauthenticated request cannot make a real
    // delivery id look like a duplicate.
    let key = (forge, event.delivery_id.clone());
    if !lock(&inner.dedupe).record(key.clone(), Instant::now()) {
        debug!(%forge, delivery = %event.delivery_id, "webhook duplicate");
        return Outcome::Duplicate;
    }
    match event.route() {
        Route::Ping => {
            info!(%forge, delivery = %event.delivery_id, "webhook ping");
            Outcome::Ping
        }
        Route::Ignore => {
            debug!(
                %forge,
                delivery = %event.delivery_id,
                event = %event.event_name,
                action = event.action.as_deref().unwrap_or_default(),
                "webhook ignored"
            );
            Outcome::Ignored
        }
        Route::Act => {
            let now = Instant::now();
            let mut allowed = Vec::with_capacity(targets.len());
            let mut retry_after = Duration::MAX;
            {
                let mut limiter = lock(&inner.per_source);
                for target in targets {
                    match limiter.try_acquire(&target, now) {
                        Ok(()) => allowed.push(target),
                        Err(wait) => {
                            debug!(%forge, %target, "webhook rate limited for this Repository");
                            retry_after = retry_after.min(wait);
                        }
                    }
                }
            }
            if allowed.is_empty() {
                // Not acted on, so a redelivery of this id must not be taken for a duplicate.
                lock(&inner.dedupe).forget(&key);
                return Outcome::RateLimited { retry_after };
            }
            inner.directory.notify(&allowed, &event).await;
            info!(
                %forge,
                delivery = %event.delivery_id,
                event = %event.event_name,
                action = event.action.as_deref().unwrap_or_default(),
                pull_request = event.pull_request,
                targets = allowed.len(),
                "webhook accepted"
            );
            Outcome::Accepted
        }
    }
}
