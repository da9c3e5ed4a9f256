//! The HTTP server and the per-request pipeline every forge request goes through.
//!
//! Flow of one request (admin requests under `/_emulator` skip all of it):
//! 1. classify: git smart HTTP (`…/info/refs`, `…/git-upload-pack`), GitLab (`/api/v4`),
//!    Gitea (`/api/v1`), otherwise GitHub (root or `/api/v3`); match the route template;
//! 2. identify the caller ([`super::auth::identify`]);
//! 3. fault injection ([`super::faults::take_fault`]): error, latency or a dropped connection;
//! 4. 401 for bad credentials, rate-limit check (exhausted → 403/429, handler not run);
//! 5. the handler; then the ETag, `If-None-Match` → 304 (not charged), else charge one request
//!    and add the rate-limit headers;
//! 6. count the request per client, route template and status, and whether it was charged.
//!
//! hyper is used directly (not axum) because "drop the connection" must be expressible: a
//! service error makes hyper close the socket without writing a response.
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::auth::{Identity, can_see, identify};
use super::faults::take_fault;
use super::model::{FaultAction, Forge};
use super::ratelimit::Bucket;
use super::reply::{ApiRequest, Reply, etag_for, etag_matches, set_header};
use super::router::{self, Matched};
use super::state::{Shared, State, TokenKind};
use super::{admin, git_http, gitea, github, gitlab};

/// Response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// Returned to hyper to make it drop the connection without a response.
#[derive(Debug)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Accepts connections until `shutdown` flips, then aborts the open ones.
pub async fn serve(listener: TcpListener, shared: Shared, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), peer, req));
                    // Errors here are clients going away or injected drops: nothing to report.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Builds a response from parts.
pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// JSON response helper.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    response(
        status,
        "application/json; charset=utf-8",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

enum Target {
    Git {
        repo_path: String,
        rest: String,
    },
    Api {
        forge: Forge,
        prefix: &'static str,
        rest: String,
    },
}

fn classify(path: &str) -> Target {
    if let Some((repo_path, rest)) = git_http::split_git_path(path) {
        return Target::Git { repo_path, rest };
    }
    for (prefix, forge) in [
        ("/api/v3", Forge::Github),
        ("/api/v4", Forge::Gitlab),
        ("/api/v1", Forge::Gitea),
    ] {
        if path == prefix || path.starts_with(&format!("{prefix}/")) {
            return Target::Api {
                forge,
                prefix,
                rest: path[prefix.len()..].to_string(),
            };
        }
    }
    Target::Api {
        forge: Forge::Github,
        prefix: "",
        rest: path.to_string(),
    }
}

/// The bucket for a caller, created with the configured default on first use.
pub fn bucket<'a>(
    state: &'a mut State,
    ident: &Identity,
    cfg: &super::EmulatorConfig,
) -> Option<&'a mut Bucket> {
    let key = ident.client();
    let limit = match ident {
        Identity::Invalid(_) => return None,
        Identity::Anonymous => cfg.anonymous_rate_limit,
        Identity::App(_) => cfg.default_rate_limit,
        Identity::Token(t) => match t.kind {
            TokenKind::Personal => cfg.default_rate_limit,
            TokenKind::Installation { .. } => cfg.default_rate_limit,
        },
    };
    Some(
        state
            .buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(limit, cfg.rate_limit_window_secs)),
    )
}

async fn handle(shared: Shared, peer: SocketAddr, req: Request<Incoming>) -> Result<Resp, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 64 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "body too large",
            ));
        }
    };
    let path = parts.uri.path().to_string();
    if path == "/_emulator" || path.starts_with("/_emulator/") {
        return Ok(admin::handle(&shared, &parts, body).await);
    }
    let method = parts.method.as_str().to_string();

    // 1. classify and match.
    let target = classify(&path);
    let (forge, template, matched) = match &target {
        Target::Git { repo_path, rest } => {
            let st = shared.state.lock().await;
            let forge = st.repos.get(repo_path).map(|r| r.forge);
            let template = format!("{method} /{{repo}}.git/{}", git_http::route_label(rest));
            (forge, template, None)
        }
        Target::Api {
            forge,
            prefix,
            rest,
        } => match route(*forge, &method, rest) {
            Some(m) => {
                let label = if *forge == Forge::Github { "" } else { *prefix };
                (
                    Some(*forge),
                    format!("{method} {label}{}", m.template),
                    Some(m),
                )
            }
            None => (Some(*forge), format!("{method} (unmatched)"), None),
        },
    };

    // 2. who. 3. faults.
    let (ident, fault) = {
        let mut st = shared.state.lock().await;
        let ident = identify(&st, &parts.headers, forge.unwrap_or(Forge::Github));
        let fault = take_fault(&mut st.faults, &method, &path, forge, &ident.token_value());
        (ident, fault)
    };
    let client = ident.client();
    let reply_forge = forge.unwrap_or(Forge::Github);
    if let Some(action) = fault {
        let early = match action {
            FaultAction::Latency { millis } => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                None
            }
            FaultAction::DropConnection => {
                record(&shared, &client, &template, 0, false).await;
                return Err(Dropped);
            }
            FaultAction::Status { status } => {
                let code =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let msg = match reply_forge {
                    Forge::Gitlab => format!(
                        "{} {}",
                        code.as_u16(),
                        code.canonical_reason().unwrap_or("Error")
                    ),
                    _ => code
                        .canonical_reason()
                        .unwrap_or("Server Error")
                        .to_string(),
                };
                Some(finish(Reply::error(reply_forge, code, &msg), reply_forge))
            }
            FaultAction::TooManyRequests { retry_after } => {
                let r = match reply_forge {
                    Forge::Gitlab => Reply {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        body: None,
                        text: Some("Retry later\n".into()),
                        headers: Vec::new(),
                    },
                    f => Reply::error(f, StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
                };
                Some(finish(
                    r.header("retry-after", retry_after.to_string()),
                    reply_forge,
                ))
            }
            FaultAction::Redirect { location } => {
                let target = match parts.uri.query() {
                    Some(q) => format!("{}{path}?{q}", location.trim_end_matches('/')),
                    None => format!("{}{path}", location.trim_end_matches('/')),
                };
                let r = Reply::with(
                    StatusCode::FOUND,
                    json!({"message": "Moved", "location": target}),
                )
                .header("location", target);
                Some(finish(r, reply_forge))
            }
            FaultAction::SecondaryRateLimit { retry_after } => {
                let r = Reply::with(
                    StatusCode::FORBIDDEN,
                    json!({
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                        "status": "403"
                    }),
                )
                .header("retry-after", retry_after.to_string());
                Some(finish(r, reply_forge))
            }
        };
        if let Some(resp) = early {
            record(&shared, &client, &template, resp.status().as_u16(), false).await;
            return Ok(resp);
        }
    }

    let resp = match target {
        Target::Git { repo_path, rest } => {
            git_request(&shared, &parts, body, &ident, &repo_path, &rest, peer).await
        }
        Target::Api { forge, prefix, .. } => {
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| shared.public_url.trim_start_matches("http://").to_string());
            let query = parts
                .uri
                .query()
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default();
            let mut req = ApiRequest {
                method: parts.method.clone(),
                path: path.clone(),
                raw_query: parts.uri.query().map(str::to_string),
                query,
                headers: parts.headers.clone(),
                body,
                params: Vec::new(),
                ident,
                host,
                prefix,
                forge,
            };
            api_request(&shared, &mut req, matched).await
        }
    };
    let charged = resp.extensions().get::<Charged>().is_some();
    record(&shared, &client, &template, resp.status().as_u16(), charged).await;
    Ok(resp)
}

/// Marks a response whose request was charged against the caller's rate limit, for the counters.
#[derive(Debug, Clone, Copy)]
struct Charged;

async fn record(shared: &Shared, client: &str, template: &str, status: u16, charged: bool) {
    shared
        .state
        .lock()
        .await
        .counters
        .record(client, template, status, charged);
}

#[derive(Debug, Clone, Copy)]
enum AnyHandler {
    Github(github::H),
    Gitlab(gitlab::H),
    Gitea(gitea::H),
}

fn route(forge: Forge, method: &str, rest: &str) -> Option<Matched<AnyHandler>> {
    fn map<H: Copy>(m: Option<Matched<H>>, f: fn(H) -> AnyHandler) -> Option<Matched<AnyHandler>> {
        m.map(|m| Matched {
            handler: f(m.handler),
            template: m.template,
            params: m.params,
        })
    }
    match forge {
        Forge::Github => map(
            router::find(github::ROUTES, method, rest),
            AnyHandler::Github,
        ),
        Forge::Gitlab => map(
            router::find(gitlab::ROUTES, method, rest),
            AnyHandler::Gitlab,
        ),
        Forge::Gitea => map(router::find(gitea::ROUTES, method, rest), AnyHandler::Gitea),
    }
}

/// Serializes a reply with the forge's usual headers.
fn finish(reply: Reply, forge: Forge) -> Resp {
    let mut resp = match (&reply.body, &reply.text) {
        (Some(v), _) => json_response(reply.status, v),
        (None, Some(t)) => response(reply.status, "text/plain", t.clone()),
        (None, None) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = reply.status;
            r
        }
    };
    let h = resp.headers_mut();
    for (k, v) in &reply.headers {
        set_header(h, k.clone(), v);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    match forge {
        Forge::Github => {
            set_header(
                h,
                http::HeaderName::from_static("x-github-media-type"),
                "github.v3; format=json",
            );
            set_header(
                h,
                http::HeaderName::from_static("x-github-api-version-selected"),
                "2022-11-28",
            );
            set_header(
                h,
                http::HeaderName::from_static("x-github-request-id"),
                &request_id,
            );
        }
        Forge::Gitlab | Forge::Gitea => {
            set_header(
                h,
                http::HeaderName::from_static("x-request-id"),
                &request_id,
            );
        }
    }
    resp
}

async fn api_request(
    shared: &Shared,
    req: &mut ApiRequest,
    matched: Option<Matched<AnyHandler>>,
) -> Resp {
    let forge = req.forge;
    // 4a. bad credentials.
    if let Identity::Invalid(why) = &req.ident {
        let msg = match forge {
            Forge::Github => why.clone(),
            Forge::Gitlab => "401 Unauthorized".to_string(),
            Forge::Gitea => "invalid username, password or token".to_string(),
        };
        let mut r = Reply::error(forge, StatusCode::UNAUTHORIZED, &msg);
        if forge == Forge::Gitlab {
            r = Reply::with(
                StatusCode::UNAUTHORIZED,
                json!({"message": "401 Unauthorized"}),
            );
        }
        return finish(r, forge);
    }
    let Some(m) = matched else {
        let msg = format!(
            "forge-emulator does not implement {} {} ({} API)",
            req.method,
            req.path,
            forge.as_str()
        );
        return finish(
            Reply::with(StatusCode::NOT_IMPLEMENTED, json!({ "message": msg })),
            forge,
        );
    };
    req.params = m.params;
    let charged =
        !matches!(m.handler, AnyHandler::Github(github::H::RateLimit)) && forge != Forge::Gitea;

    // 4b. rate limit, before anything happens.
    if charged {
        let mut st = shared.state.lock().await;
        if let Some(b) = bucket(&mut st, &req.ident, &shared.config)
            && b.exhausted()
        {
            let b = b.clone();
            drop(st);
            let reply = match forge {
                Forge::Github => Reply::with(
                    StatusCode::FORBIDDEN,
                    json!({
                        "message": format!("API rate limit exceeded for {}. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)", req.ident.login().unwrap_or("127.0.0.1")),
                        "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
                    }),
                ),
                _ => Reply {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    body: None,
                    text: Some("Retry later\n".into()),
                    headers: Vec::new(),
                }
                .header(
                    "retry-after",
                    (b.reset - super::state::now()).max(1).to_string(),
                ),
            };
            let mut resp = finish(reply, forge);
            b.write_headers(forge, resp.headers_mut());
            return resp;
        }
    }

    // 5. the handler.
    let reply = match m.handler {
        AnyHandler::Github(h) => github::dispatch(shared, h, req).await,
        AnyHandler::Gitlab(h) => gitlab::dispatch(shared, h, req).await,
        AnyHandler::Gitea(h) => gitea::dispatch(shared, h, req).await,
    };
    let mut resp = finish(reply, forge);

    let mut not_modified = false;
    if req.method == Method::GET && resp.status().is_success() {
        let body_bytes = resp
            .body()
            .clone()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let tag = etag_for(&body_bytes);
        let inm = req
            .headers
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if inm.is_some_and(|v| etag_matches(v, &tag)) {
            not_modified = true;
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [
                "link",
                "x-github-media-type",
                "x-github-request-id",
                "x-request-id",
            ] {
                if let Some(v) = resp.headers().get(name) {
                    r.headers_mut().insert(name, v.clone());
                }
            }
            resp = r;
        }
        set_header(resp.headers_mut(), http::header::ETAG, &tag);
        set_header(
            resp.headers_mut(),
            http::header::CACHE_CONTROL,
            "private, max-age=60, s-maxage=60",
        );
        set_header(
            resp.headers_mut(),
            http::header::VARY,
            "Accept, Authorization, Cookie",
        );
    }

    // Charge (unless 304) and report the bucket.
    let mut st = shared.state.lock().await;
    if let Some(b) = bucket(&mut st, &req.ident, &shared.config) {
        if charged && !not_modified {
            b.consume();
            resp.extensions_mut().insert(Charged);
        } else {
            b.roll();
        }
        if forge != Forge::Gitea {
            b.write_headers(forge, resp.headers_mut());
        }
    }
    resp
}

async fn git_request(
    shared: &Shared,
    parts: &http::request::Parts,
    body: Bytes,
    ident: &Identity,
    repo_path: &str,
    rest: &str,
    peer: SocketAddr,
) -> Resp {
    let (git_dir, visible, private) = {
        let st = shared.state.lock().await;
        match st.repos.get(repo_path) {
            Some(r) => (r.git_dir.clone(), can_see(&st, ident, r), r.private),
            None => {
                return response(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "Repository not found.\n",
                );
            }
        }
    };
    let challenge = |msg: &str| {
        let mut r = response(StatusCode::UNAUTHORIZED, "text/plain", msg.to_string());
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"forge-emulator\""),
        );
        r
    };
    match ident {
        Identity::Invalid(_) => return challenge("Invalid username or token.\n"),
        Identity::Anonymous if private => return challenge("Authentication required.\n"),
        _ if !visible => {
            return response(
                StatusCode::NOT_FOUND,
                "text/plain",
                "Repository not found.\n",
            );
        }
        _ => {}
    }
    if rest.contains("git-receive-pack") {
        return response(
            StatusCode::FORBIDDEN,
            "text/plain",
            "forge-emulator: pushing over HTTP is not supported; use POST /_emulator/repos/{path}/-/commits\n",
        );
    }
    git_http::cgi(shared, &git_dir, parts, body, rest, peer).await
}
