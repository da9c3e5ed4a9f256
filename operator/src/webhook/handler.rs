//! The HTTP side of the ingress: the connection loop with its caps ([`serve`]), the routes,
//! the per-delivery flow described in the module docs of [`super`], and the shared state
//! (de-duplication cache, rate limiters, concurrency caps, body budget, metrics).
//!
//! The TCP peer address comes from a `ConnectInfo<SocketAddr>` request extension, which
//! [`serve`] inserts; the client address is derived from it ([`super::client`]). Without it
//! (in-process tests of [`router`]) the per-address limits are not applied.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::client::{client_address, is_trusted_proxy, limit_key};
use super::event::{ForgeEvent, Route, parse};
use super::limits::{
    ByteBudget, CapExceeded, ConcurrencyCap, DedupeCache, RateLimiter, Reservation,
};
use super::metrics::{ConnectionRefusal, WebhookMetrics, WebhookResult};
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
    /// Open connections, in total and per TCP peer ([`serve`]).
    connections: Arc<ConcurrencyCap<IpAddr>>,
    /// Requests in flight, in total and per client address.
    requests: Arc<ConcurrencyCap<IpAddr>>,
    /// Body bytes buffered at once.
    body_budget: Arc<ByteBudget>,
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
            connections: ConcurrencyCap::new(
                config.max_connections,
                config.max_connections_per_address,
            ),
            requests: ConcurrencyCap::new(
                config.max_in_flight_requests,
                config.max_connections_per_address,
            ),
            body_budget: ByteBudget::new(config.max_in_flight_body_bytes),
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

    /// Requests in flight in total and from `client` (a limit key).
    #[cfg(test)]
    pub(crate) fn inner_requests_held(&self, client: &IpAddr) -> (usize, usize) {
        self.inner.requests.held(client)
    }

    /// Open connections admitted by [`serve`].
    #[cfg(test)]
    pub(crate) fn connections_held(&self) -> usize {
        self.inner.connections.held(&IpAddr::from([0, 0, 0, 0])).0
    }

    /// Body bytes reserved right now (for tests and diagnostics).
    pub fn body_bytes_in_flight(&self) -> usize {
        self.inner.body_budget.in_use()
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

/// Largest request head (request line + headers) read from a connection. Real deliveries send
/// 1-3 KiB of headers; this is also hyper's read buffer, so it bounds a connection's memory.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// What a connection refused at accept is told (best effort; it is closed right after).
const REFUSED_CONNECTION: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Retry-After: 1\r\nConnection: close\r\nContent-Length: 23\r\n\r\n{\"result\":\"overloaded\"}";

/// Serve [`router`] on `listener` over HTTP/1.1 until `shutdown` completes, with the connection
/// caps and header timeout of [`WebhookConfig`] and the peer address available to the
/// per-address limits. In-flight requests get up to the two read timeouts to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebhookState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config().clone();
    let app = router(state.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A trusted proxy carries many clients: only its requests are limited per client.
        let key =
            (!is_trusted_proxy(peer.ip(), &config.trusted_proxies)).then(|| limit_key(peer.ip()));
        let permit = match state.inner.connections.try_admit(key) {
            Ok(permit) => permit,
            Err(exceeded) => {
                let reason = match exceeded {
                    CapExceeded::Total => ConnectionRefusal::Total,
                    CapExceeded::PerKey => ConnectionRefusal::PerAddress,
                };
                debug!(
                    reason = reason.as_str(),
                    "webhook connection refused at accept"
                );
                state.inner.metrics.refuse_connection(reason);
                let _ = stream.try_write(REFUSED_CONNECTION);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(Body::new))
            },
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Header timeouts, resets, malformed requests: the client's problem.
                debug!(%error, "webhook connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drain = config.header_read_timeout + config.body_read_timeout;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("webhook connections still open at shutdown were dropped");
    }
    Ok(())
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
    Echo,
    Duplicate,
    Unauthorized,
    TooLarge,
    Malformed { status: StatusCode, message: String },
    RateLimited { retry_after: Duration },
    Overloaded,
}

impl Outcome {
    fn result(&self) -> WebhookResult {
        match self {
            Outcome::Accepted => WebhookResult::Accepted,
            Outcome::Ping | Outcome::Ignored => WebhookResult::Ignored,
            Outcome::Echo => WebhookResult::Echo,
            Outcome::Duplicate => WebhookResult::Duplicate,
            Outcome::Unauthorized => WebhookResult::Unauthorized,
            Outcome::TooLarge => WebhookResult::TooLarge,
            Outcome::Malformed { .. } => WebhookResult::Malformed,
            Outcome::RateLimited { .. } => WebhookResult::RateLimited,
            Outcome::Overloaded => WebhookResult::Overloaded,
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
            Outcome::Ignored | Outcome::Echo => (StatusCode::ACCEPTED, json_result(result)),
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
            Outcome::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, json_result(result)),
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
        let retry_after = match self {
            Outcome::RateLimited { retry_after } => Some(retry_after),
            Outcome::Overloaded => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let seconds = retry_after.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status.is_client_error() || status.is_server_error() {
            // A refused request may have left its body unread; a refused sender gets no
            // keep-alive connection to try again on.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
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

/// The client address of a request as a limit key (see [`super::client`]); `None` without a
/// peer address.
fn client_key(inner: &Inner, request: &Request) -> Option<IpAddr> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    let client = client_address(peer.ip(), request.headers(), &inner.config.trusted_proxies);
    Some(limit_key(client))
}

async fn process(inner: &Inner, forge: Forge, request: Request) -> Outcome {
    let client = client_key(inner, &request);
    // Held until the response is built: every request counts while it is being read/verified.
    let _slot = match inner.requests.try_admit(client) {
        Ok(slot) => slot,
        Err(exceeded) => {
            debug!(%forge, ?exceeded, "webhook refused: too many requests in flight");
            return Outcome::Overloaded;
        }
    };
    // Looked up now, applied only to a request that then fails: verified deliveries never
    // consult it (see the module docs, step 6).
    let over_budget = client.and_then(|ip| {
        lock(&inner.unauthenticated)
            .check(&ip, Instant::now())
            .err()
    });
    let (parts, body) = request.into_parts();
    match authenticate(inner, forge, &parts.headers, body).await {
        Ok(verified) => {
            inner.directory.verified(&verified.targets);
            route_verified(inner, verified).await
        }
        // Overload says nothing about the sender: not charged.
        Err(Outcome::Overloaded) => Outcome::Overloaded,
        Err(failure) => {
            if let Some(ip) = client {
                lock(&inner.unauthenticated).charge(&ip, Instant::now());
            }
            match over_budget {
                Some(retry_after) => {
                    debug!(%forge, "webhook refused: too many failed requests from this address");
                    Outcome::RateLimited { retry_after }
                }
                None => failure,
            }
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
    Overloaded,
    Io,
}

async fn authenticate(
    inner: &Inner,
    forge: Forge,
    headers: &HeaderMap,
    body: Body,
) -> Result<Verified, Outcome> {
    // Before the body: a delivery without a well-formed credential can never verify.
    let credential = presented_credential(forge, headers).map_err(|reason| {
        debug!(%forge, %reason, "webhook unauthorized");
        Outcome::Unauthorized
    })?;
    let max = inner.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        debug!(%forge, "webhook refused: declared body too large");
        return Err(Outcome::TooLarge);
    }
    let declared = declared.map(|n| n as usize);
    let read = read_capped(body, max, declared, inner.body_budget.reservation());
    // `_reservation` keeps the body's bytes counted until verification is done with them.
    let (body, _reservation) =
        match tokio::time::timeout(inner.config.body_read_timeout, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(ReadError::TooLarge)) => {
                debug!(%forge, "webhook refused: body too large");
                return Err(Outcome::TooLarge);
            }
            Ok(Err(ReadError::Overloaded)) => {
                debug!(%forge, "webhook refused: in-flight body budget exhausted");
                return Err(Outcome::Overloaded);
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

/// Read the body, giving up as soon as it grows past `max` bytes (the rest is never read) or
/// the budget cannot cover its next bytes. Bytes are reserved *before* they are buffered, as
/// they arrive (doubling, never beyond the declared length): a slow client that declares 1 MiB
/// and sends a trickle holds a trickle, not 1 MiB, of the global budget.
async fn read_capped(
    body: Body,
    max: usize,
    declared: Option<usize>,
    mut reservation: Reservation,
) -> Result<(Bytes, Reservation), ReadError> {
    let limit = declared.map_or(max, |declared| declared.min(max));
    let mut buffer = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ReadError::Io)?;
        if chunk.len() > max - buffer.len() {
            return Err(ReadError::TooLarge);
        }
        let needed = buffer.len() + chunk.len();
        if needed > reservation.bytes() {
            let target = (reservation.bytes().saturating_mul(2))
                .min(limit)
                .max(needed);
            if !reservation.grow(target - reservation.bytes()) {
                return Err(ReadError::Overloaded);
            }
            buffer.reserve_exact(target - buffer.len());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buffer), reservation))
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
        Route::Echo => {
            debug!(
                %forge,
                delivery = %event.delivery_id,
                event = %event.event_name,
                "webhook echo of Pullwarden's own write suppressed"
            );
            Outcome::Echo
        }
        route @ (Route::Sync | Route::HeadChecks) => {
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
            match (route, event.head_sha.as_deref()) {
                (Route::HeadChecks, Some(sha)) => {
                    inner.directory.head_checks_finished(&allowed, &event, sha)
                }
                _ => inner.directory.notify(&allowed, &event).await,
            }
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
