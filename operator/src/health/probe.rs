//! Probe execution: one HTTP, TCP or gRPC health probe against a target, through the outbound
//! guard ([`crate::net::Guard`]).
//!
//! A HealthCheck makes the operator's pod open a connection a tenant chose and report what came
//! back, so every probe is an outbound connection under the same rules as forge and git traffic:
//!
//! - **Resolve once, connect to what was checked.** The target's name is resolved by
//!   [`Guard::resolve`] (the only DNS lookup of a probe) and the TCP connection goes to one of
//!   the addresses it returned; no client library ever sees the name, so a DNS answer that
//!   changes between check and connect (rebinding) changes nothing. Refused: unspecified,
//!   multicast and broadcast addresses always; loopback, link-local (169.254.0.0/16, fe80::/10)
//!   and cloud metadata addresses and names unless the operator lists them explicitly; and
//!   `--cluster-cidrs` unless exempted (see the guard's docs).
//! - **Service endpoints** ([`PinnedAddrs`]) listed by the controller are each checked by the
//!   guard; endpoints the cluster derived from the Service's own selector skip only the
//!   `--cluster-cidrs` rule ([`Guard::check_addr_fixed_classes`]), never a fixed class.
//! - **Redirects** are followed up to [`ProbeLimits::max_redirects`]; every hop is parsed,
//!   checked and resolved again, and a refused hop fails the probe as refused. The spec's
//!   headers (literal and from the Secret) go to the target's origin only, never to a hop on
//!   another origin.
//! - **Bounded**: the whole probe (resolve, connect, TLS, request, body) runs under
//!   `req.timeout`; at most [`ProbeLimits::max_body_bytes`] of a body are read (only for
//!   `bodyContains`; a 10 GB answer costs one buffer of reading, not 10 GB), response headers
//!   are bounded by hyper's limits. Each probe is a fresh connection (no pooling), closed when
//!   the probe ends.
//! - **TLS** is always verified: the system roots plus the check's CA (`tls.caSecretRef`), the
//!   server name being the URL's host (also the `Host` header), also when connecting to a
//!   pinned endpoint.
//! - **Errors** are short and safe for a status field: they name the URL (without credentials
//!   or query), the address and the rule, never a header value or more than a short excerpt
//!   of an answer (a gRPC status message).
//!
//! gRPC probes speak the standard health protocol (`grpc.health.v1.Health/Check`) over HTTP/2
//! (h2c for `http://`, TLS with ALPN `h2` for `https://`), with the two protobuf messages
//! encoded by hand (one string field, one enum field).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::api::HttpMethod;
use crate::net::{Guard, ResolveError, same_origin};

/// One probe, fully resolved by the controller: no Kubernetes lookups happen while probing.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    pub kind: ProbeKind,
    pub target: ProbeTarget,
    /// The whole probe (resolve, connect, TLS, request, bounded body read).
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum ProbeKind {
    Http(HttpCheck),
    Tcp,
    /// `grpc.health.v1.Health/Check` for `service` ("" = the whole server).
    Grpc {
        service: String,
    },
}

#[derive(Clone, Debug)]
pub struct HttpCheck {
    pub method: HttpMethod,
    /// Literal headers, then the Secret's; both sent to the target's origin only.
    pub headers: Vec<(String, String)>,
    pub secret_headers: Vec<(String, SecretString)>,
    /// Inclusive ranges of accepted status codes (empty: 200-299).
    pub expect_status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    /// Time to response headers above this is a failure.
    pub max_latency: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// `http(s)://host[:port]/path` for http and grpc (https = TLS), `tcp://host:port` for tcp.
    pub url: url::Url,
    /// Service endpoints listed by the controller: connect to these instead of resolving the
    /// URL's host (which then only names the Host header and TLS server name). A redirect to
    /// the same origin uses them again; one to another origin is resolved through the guard.
    pub pinned: Option<PinnedAddrs>,
    /// PEM CA certificates trusted in addition to the system roots.
    pub ca_pem: Option<Arc<Vec<u8>>>,
}

#[derive(Clone, Debug)]
pub struct PinnedAddrs {
    pub addrs: Vec<SocketAddr>,
    /// Endpoints the endpoint-slice controller derived from the Service's own selector: exempt
    /// from `--cluster-cidrs` (still subject to every fixed class: loopback, link-local,
    /// metadata…). Hand-written EndpointSlices get the full guard.
    pub cluster_exempt: bool,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOutcome {
    pub success: bool,
    /// From the probe's start until the target answered (HTTP: the response headers of the last
    /// hop; TCP: the connection accepted; gRPC: the complete reply), or until the probe failed
    /// without an answer.
    pub latency: Duration,
    /// Final HTTP status (after redirects), when there was one.
    pub status_code: Option<u16>,
    /// Why it failed: safe for status (never a header value; at most a short excerpt of an
    /// answer).
    pub error: Option<String>,
    /// The outbound guard refused the target (or a redirect hop).
    pub refused: bool,
}

/// Limits of every probe.
#[derive(Clone, Debug)]
pub struct ProbeLimits {
    /// Most body bytes read (for `bodyContains`); more is not read.
    pub max_body_bytes: usize,
    pub max_redirects: usize,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            max_body_bytes: 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// Runs probes. Cheap to clone; shared by every check.
#[derive(Clone, Debug)]
pub struct Prober {
    guard: Guard,
    limits: ProbeLimits,
    tls: Arc<TlsConfigs>,
}

/// What the probe did last and what it saw; kept outside the probe's future so a timeout can
/// still report it.
#[derive(Debug, Default)]
struct Trace {
    phase: &'static str,
    status_code: Option<u16>,
    answered: Option<Duration>,
}

/// A failed probe: the status text and whether the guard refused it.
#[derive(Debug)]
struct Fail {
    error: String,
    refused: bool,
}

impl Fail {
    fn new(error: impl Into<String>) -> Self {
        Fail {
            error: error.into(),
            refused: false,
        }
    }

    fn refused(error: impl Into<String>) -> Self {
        Fail {
            error: error.into(),
            refused: true,
        }
    }
}

type Probed = Result<(), Fail>;

impl Prober {
    pub fn new(guard: Guard, limits: ProbeLimits) -> Self {
        Prober {
            guard,
            limits,
            tls: Arc::default(),
        }
    }

    /// Runs one probe; never panics, never exceeds `req.timeout` by more than scheduling noise.
    pub async fn probe(&self, req: &ProbeRequest) -> ProbeOutcome {
        let start = Instant::now();
        let mut trace = Trace {
            phase: "starting",
            ..Trace::default()
        };
        let run = self.run(req, start, &mut trace);
        let result = match tokio::time::timeout(req.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(Fail::new(format!(
                "timed out after {} ({})",
                fmt_duration(req.timeout),
                trace.phase
            ))),
        };
        let latency = trace.answered.unwrap_or_else(|| start.elapsed());
        match result {
            Ok(()) => ProbeOutcome {
                success: true,
                latency,
                status_code: trace.status_code,
                error: None,
                refused: false,
            },
            Err(fail) => ProbeOutcome {
                success: false,
                latency,
                status_code: trace.status_code,
                error: Some(fail.error),
                refused: fail.refused,
            },
        }
    }

    async fn run(&self, req: &ProbeRequest, start: Instant, trace: &mut Trace) -> Probed {
        match &req.kind {
            ProbeKind::Tcp => self.tcp(&req.target, start, trace).await,
            ProbeKind::Http(check) => self.http(check, &req.target, start, trace).await,
            ProbeKind::Grpc { service } => self.grpc(service, &req.target, start, trace).await,
        }
    }

    // --- addresses and connections ---------------------------------------------------------

    /// The checked addresses of `url`: the pinned endpoints for the target's own origin, else
    /// the guard's one resolution.
    async fn addresses(
        &self,
        url: &url::Url,
        target: &ProbeTarget,
        trace: &mut Trace,
    ) -> Result<Vec<SocketAddr>, Fail> {
        // The target itself (`tcp://` URLs have opaque origins) or a hop on its origin.
        if let Some(pinned) = &target.pinned
            && (url == &target.url || same_origin(url, &target.url))
        {
            return self.check_pinned(pinned);
        }
        let host = url
            .host_str()
            .ok_or_else(|| Fail::new(format!("{} has no host", shown(url))))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Fail::new(format!("{} has no port", shown(url))))?;
        trace.phase = "resolving";
        self.guard.resolve(host, port).await.map_err(|e| match e {
            ResolveError::Refused(r) => Fail::refused(r.to_string()),
            ResolveError::Lookup(m) => Fail::new(m),
        })
    }

    /// Every pinned endpoint through the guard; the ones that pass, or the first refusal.
    fn check_pinned(&self, pinned: &PinnedAddrs) -> Result<Vec<SocketAddr>, Fail> {
        if pinned.addrs.is_empty() {
            return Err(Fail::new("no endpoint to probe"));
        }
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for sa in &pinned.addrs {
            let verdict = if pinned.cluster_exempt {
                self.guard.check_addr_fixed_classes(sa.ip())
            } else {
                self.guard.check_addr(sa.ip())
            };
            match verdict {
                Ok(()) => ok.push(*sa),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match first_refusal {
            Some(r) if ok.is_empty() => Err(Fail::refused(r.to_string())),
            _ => Ok(ok),
        }
    }

    /// A TCP connection to the first of `addrs` that accepts.
    async fn connect(addrs: &[SocketAddr], trace: &mut Trace) -> Result<TcpStream, Fail> {
        trace.phase = "connecting";
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(format!("connect to {addr}: {}", io_text(&e))),
            }
        }
        Err(Fail::new(
            last.unwrap_or_else(|| "no address to connect to".into()),
        ))
    }

    /// A connection to `url` (TLS for `https`), to a checked address.
    async fn open(
        &self,
        url: &url::Url,
        target: &ProbeTarget,
        alpn: Alpn,
        trace: &mut Trace,
    ) -> Result<Box<dyn Io>, Fail> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(Fail::new(format!(
                    "unsupported scheme {other}: (http or https)"
                )));
            }
        };
        // The TLS settings first: a bad CA is the spec's fault, whatever the network does.
        let config = if tls {
            Some(
                self.tls
                    .config(target.ca_pem.as_deref().map(Vec::as_slice), alpn)
                    .map_err(Fail::new)?,
            )
        } else {
            None
        };
        let addrs = self.addresses(url, target, trace).await?;
        let stream = Self::connect(&addrs, trace).await?;
        let Some(config) = config else {
            return Ok(Box::new(stream));
        };
        let name = match url.host() {
            Some(url::Host::Domain(d)) => ServerName::try_from(d.to_string())
                .map_err(|_| Fail::new(format!("TLS: {d} is not a valid server name")))?,
            Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
            Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
            None => return Err(Fail::new(format!("{} has no host", shown(url)))),
        };
        trace.phase = "TLS handshake";
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| Fail::new(tls_text(&e)))?;
        Ok(Box::new(tls))
    }

    // --- TCP -------------------------------------------------------------------------------

    async fn tcp(&self, target: &ProbeTarget, start: Instant, trace: &mut Trace) -> Probed {
        let addrs = self.addresses(&target.url, target, trace).await?;
        let stream = Self::connect(&addrs, trace).await?;
        trace.answered = Some(start.elapsed());
        drop(stream);
        Ok(())
    }

    // --- HTTP ------------------------------------------------------------------------------

    async fn http(
        &self,
        check: &HttpCheck,
        target: &ProbeTarget,
        start: Instant,
        trace: &mut Trace,
    ) -> Probed {
        // Bad headers are the spec's fault: say so before any connection.
        let spec_headers = spec_headers(check)?;
        let first = &target.url;
        let mut url = first.clone();
        let mut method = match check.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Post => Method::POST,
        };
        let mut hops = 0;
        let (response, _conn) = loop {
            let headers = same_origin(&url, first).then_some(&spec_headers);
            let exchanged = self
                .http1_exchange(&url, target, &method, headers, trace)
                .await;
            let (response, conn) = match exchanged {
                Ok(ok) => ok,
                Err(fail) if hops == 0 => return Err(fail),
                Err(fail) if fail.refused => {
                    return Err(Fail::refused(format!(
                        "redirect to {} refused: {}",
                        shown(&url),
                        fail.error
                    )));
                }
                Err(fail) => {
                    return Err(Fail::new(format!(
                        "redirect to {}: {}",
                        shown(&url),
                        fail.error
                    )));
                }
            };
            trace.answered = Some(start.elapsed());
            let status = response.status();
            trace.status_code = Some(status.as_u16());
            // 300 and 304 name no single next URL; they are answers like any other.
            let location = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
                .then(|| response.headers().get(LOCATION))
                .flatten();
            let Some(location) = location else {
                break (response, conn);
            };
            if hops >= self.limits.max_redirects {
                return Err(Fail::new(format!(
                    "too many redirects (more than {})",
                    self.limits.max_redirects
                )));
            }
            let next = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    Fail::new(format!(
                        "status {} from {} with an invalid Location",
                        status.as_u16(),
                        shown(&url)
                    ))
                })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(Fail::new(format!(
                    "redirect to a {}: URL (only http and https are followed)",
                    next.scheme()
                )));
            }
            // 303 (and 301/302 after a POST, as every client does) continue with GET.
            if status == http::StatusCode::SEE_OTHER && method != Method::HEAD
                || matches!(status.as_u16(), 301 | 302) && method == Method::POST
            {
                method = Method::GET;
            }
            drop((response, conn));
            url = next;
            hops += 1;
        };

        let status = response.status().as_u16();
        let ranges = if check.expect_status.is_empty() {
            &[(200, 299)][..]
        } else {
            &check.expect_status[..]
        };
        if !ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
            return Err(Fail::new(format!(
                "status {status} not in {}",
                fmt_ranges(ranges)
            )));
        }
        if let (Some(max), Some(took)) = (check.max_latency, trace.answered)
            && took > max
        {
            return Err(Fail::new(format!(
                "answered in {}, above maxLatency {}",
                fmt_duration(took),
                fmt_duration(max)
            )));
        }
        if let Some(needle) = &check.body_contains {
            trace.phase = "reading the body";
            let limit = self.limits.max_body_bytes;
            let scan = scan_body(response.into_body(), needle.as_bytes(), limit)
                .await
                .map_err(|e| Fail::new(format!("reading the body: {e}")))?;
            match scan {
                Scan::Found => {}
                Scan::Ended(read) => {
                    return Err(Fail::new(format!(
                        "body does not contain {} ({} read, the whole body)",
                        quoted(needle),
                        fmt_bytes(read)
                    )));
                }
                Scan::Limit => {
                    return Err(Fail::new(format!(
                        "body does not contain {} (first {} read)",
                        quoted(needle),
                        fmt_bytes(limit)
                    )));
                }
            }
        }
        Ok(())
    }

    /// One HTTP/1.1 request on a fresh connection; the connection lives as long as the returned
    /// guard (the body is read through it).
    async fn http1_exchange(
        &self,
        url: &url::Url,
        target: &ProbeTarget,
        method: &Method,
        spec_headers: Option<&HeaderMap>,
        trace: &mut Trace,
    ) -> Result<(Response<Incoming>, AbortOnDrop), Fail> {
        let io = self.open(url, target, Alpn::Http1, trace).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
                .await
                .map_err(|e| Fail::new(hyper_text(&e)))?;
        let conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Empty::<Bytes>::new())
            .map_err(|e| Fail::new(format!("{}: {e}", shown(url))))?;
        let headers = request.headers_mut();
        headers.insert(HOST, host_header(url)?);
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(spec) = spec_headers {
            // The spec's headers replace the defaults of the same name (a Host override for a
            // virtual host, a User-Agent).
            for name in spec.keys() {
                headers.remove(name);
            }
            for (name, value) in spec {
                headers.append(name, value.clone());
            }
        }
        trace.phase = "waiting for response headers";
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Fail::new(hyper_text(&e)))?;
        Ok((response, conn))
    }

    // --- gRPC ------------------------------------------------------------------------------

    async fn grpc(
        &self,
        service: &str,
        target: &ProbeTarget,
        start: Instant,
        trace: &mut Trace,
    ) -> Probed {
        let url = &target.url;
        let io = self.open(url, target, Alpn::H2, trace).await?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(io),
        )
        .await
        .map_err(|e| Fail::new(format!("HTTP/2: {}", hyper_text(&e))))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let authority = host_header(url)?;
        let uri = format!(
            "{}://{}{GRPC_HEALTH_CHECK_PATH}",
            url.scheme(),
            authority.to_str().unwrap_or_default()
        );
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(grpc_health_request(service)))
            .map_err(|e| Fail::new(format!("{}: {e}", shown(url))))?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        trace.phase = "waiting for the gRPC answer";
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Fail::new(format!("HTTP/2: {}", hyper_text(&e))))?;
        let status = response.status().as_u16();
        trace.status_code = Some(status);
        let grpc = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if status != 200 || !grpc {
            return Err(Fail::new(format!(
                "not a gRPC answer (HTTP status {status}{})",
                if grpc {
                    ""
                } else {
                    ", no application/grpc content type"
                }
            )));
        }
        // A trailers-only answer carries grpc-status in the headers.
        let (message, trailers) = if response.headers().contains_key("grpc-status") {
            (Vec::new(), response.headers().clone())
        } else {
            read_grpc_body(response.into_body(), self.limits.max_body_bytes)
                .await
                .map_err(|e| Fail::new(format!("reading the gRPC answer: {e}")))?
        };
        trace.answered = Some(start.elapsed());
        let code = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| Fail::new("gRPC answer without grpc-status"))?;
        if code != 0 {
            let detail = trailers
                .get("grpc-message")
                .map(|m| excerpt(&percent_decode(m.as_bytes())))
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(Fail::new(format!(
                "gRPC status {code} ({}){detail}",
                grpc_code_name(code)
            )));
        }
        match grpc_serving_status(&message) {
            Ok(1) => Ok(()),
            Ok(other) => Err(Fail::new(format!(
                "serving status {}",
                serving_status_name(other)
            ))),
            Err(e) => Err(Fail::new(format!("gRPC answer: {e}"))),
        }
    }
}

const USER_AGENT_VALUE: &str = concat!("pullwarden-healthcheck/", env!("CARGO_PKG_VERSION"));

const GRPC_HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection task that ends with the probe.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The spec's headers, literal then secret (marked sensitive: hyper never prints them).
/// Names and values that are not valid HTTP are errors that name the header, never its value.
fn spec_headers(check: &HttpCheck) -> Result<HeaderMap, Fail> {
    let mut map = HeaderMap::new();
    let literal = check
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str(), false));
    let secret = check
        .secret_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose_secret(), true));
    for (name, value, sensitive) in literal.chain(secret) {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Fail::new(format!("header {}: not a valid header name", quoted(name))))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Fail::new(format!(
                "header {header}: the value is not a valid header value"
            ))
        })?;
        value.set_sensitive(sensitive);
        map.append(header, value);
    }
    Ok(map)
}

/// `host[:port]` as written in the URL (the port only when not the scheme's default).
fn host_header(url: &url::Url) -> Result<HeaderValue, Fail> {
    let host = url
        .host_str()
        .ok_or_else(|| Fail::new(format!("{} has no host", shown(url))))?;
    let value = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    HeaderValue::from_str(&value)
        .map_err(|_| Fail::new(format!("{} has an invalid host", shown(url))))
}

/// What a bounded body scan found.
#[derive(Debug, PartialEq)]
enum Scan {
    Found,
    /// The body ended after this many bytes without the text.
    Ended(usize),
    /// `limit` bytes read without the text; the rest is not read.
    Limit,
}

/// Reads `body` until `needle` is found, the body ends or `limit` bytes were read. Keeps only
/// the last `needle.len() - 1` bytes between frames (a match may span two).
async fn scan_body<B>(mut body: B, needle: &[u8], limit: usize) -> Result<Scan, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if needle.is_empty() {
        return Ok(Scan::Found);
    }
    let keep = needle.len() - 1;
    let mut window: Vec<u8> = Vec::with_capacity(2 * needle.len());
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let take = data.len().min(limit - read);
        let chunk = &data[..take];
        read += take;
        // The carried tail plus the head of this chunk: matches across the boundary.
        let head = &chunk[..chunk.len().min(keep)];
        window.extend_from_slice(head);
        if contains(&window, needle) || contains(chunk, needle) {
            return Ok(Scan::Found);
        }
        if chunk.len() >= keep {
            window.clear();
            window.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            let excess = window.len().saturating_sub(keep);
            window.drain(..excess);
        }
        if read >= limit {
            return Ok(Scan::Limit);
        }
    }
    Ok(Scan::Ended(read))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The data of a gRPC answer (at most `limit` bytes) and its trailers.
async fn read_grpc_body(mut body: Incoming, limit: usize) -> Result<(Vec<u8>, HeaderMap), String> {
    let mut data = Vec::new();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| hyper_text(&e))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > limit {
                    return Err(format!("more than {} of data", fmt_bytes(limit)));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(t);
                }
            }
        }
    }
    Ok((data, trailers))
}

/// `HealthCheckRequest { string service = 1; }` in one uncompressed gRPC frame.
fn grpc_health_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// `HealthCheckResponse { ServingStatus status = 1; }` from the first gRPC frame of `data`
/// (an absent field is 0, UNKNOWN; unknown fields are skipped).
fn grpc_serving_status(data: &[u8]) -> Result<u64, String> {
    let [flag, a, b, c, d, rest @ ..] = data else {
        return Err("no response message".into());
    };
    if *flag != 0 {
        return Err("compressed response message (not requested)".into());
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    let mut msg = rest.get(..len).ok_or("truncated response message")?;
    let mut status = 0;
    while !msg.is_empty() {
        let key = get_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 1) => msg = msg.get(8..).ok_or("truncated field")?,
            (_, 2) => {
                let n = get_varint(&mut msg)? as usize;
                msg = msg.get(n..).ok_or("truncated field")?;
            }
            (_, 5) => msg = msg.get(4..).ok_or("truncated field")?,
            (_, wire) => return Err(format!("unsupported protobuf wire type {wire}")),
        }
    }
    Ok(status)
}

fn serving_status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("{other} (not a known value)"),
    }
}

fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "not a known code",
    }
}

/// `grpc-message` is percent-encoded (RFC 3986 style, as the gRPC spec says).
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let Some(hex) = raw.get(i + 1..i + 3)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(s, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At most 120 printable characters of a text the target sent.
fn excerpt(text: &str) -> String {
    const MAX: usize = 120;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    match clean.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean.to_string(),
    }
}

/// A spec text in quotes, shortened.
fn quoted(text: &str) -> String {
    format!("{:?}", excerpt(text))
}

/// A URL for messages: scheme, host, port and path; never credentials, query or fragment.
fn shown(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    excerpt(&format!("{}://{host}{port}{}", url.scheme(), url.path()))
}

fn fmt_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2s`, `500ms`, `1.25s`.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis().max(1))
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// `1 MiB`, `64 KiB`, `1234 bytes`.
fn fmt_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// An I/O error without the OS error number.
fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "timed out".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::UnexpectedEof => "connection closed".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(cut) => text[..cut].to_string(),
                None => text,
            }
        }
    }
}

/// A TLS handshake error: rustls' own words (`invalid peer certificate: UnknownIssuer`).
fn tls_text(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => format!("TLS: {tls}"),
        None => format!("TLS handshake: {}", io_text(e)),
    }
}

/// A hyper error and the I/O error beneath it, if any.
fn hyper_text(e: &hyper::Error) -> String {
    if e.is_parse() {
        return format!("not a valid HTTP answer: {e}");
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return format!("{e}: {}", io_text(io));
        }
        source = err.source();
    }
    match std::error::Error::source(e) {
        Some(inner) => format!("{e}: {inner}"),
        None => e.to_string(),
    }
}

// --- TLS client configurations -------------------------------------------------------------

/// ALPN of a probe connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Alpn {
    Http1,
    H2,
}

/// Client configurations by (CA PEM digest, ALPN): the system roots are loaded once per process,
/// a configuration is built once per distinct CA.
#[derive(Debug, Default)]
struct TlsConfigs {
    cache: Mutex<ConfigCache>,
}

/// (SHA-256 of the CA PEM, ALPN) → configuration.
type ConfigCache = HashMap<(Option<[u8; 32]>, Alpn), Arc<ClientConfig>>;

/// Bounded: a cluster has few distinct CAs; past this the cache starts over.
const MAX_TLS_CONFIGS: usize = 256;

impl TlsConfigs {
    fn config(&self, ca_pem: Option<&[u8]>, alpn: Alpn) -> Result<Arc<ClientConfig>, String> {
        let key = (ca_pem.map(|pem| Sha256::digest(pem).into()), alpn);
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let mut roots = (*system_roots()).clone();
        if let Some(pem) = ca_pem {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("TLS: the CA is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("TLS: a CA certificate is not usable: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err("TLS: the CA holds no PEM certificate".into());
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        let config = Arc::new(config);
        let mut cache = self.lock();
        if cache.len() >= MAX_TLS_CONFIGS {
            cache.clear();
        }
        cache.insert(key, config.clone());
        Ok(config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The platform's trusted roots, loaded once (`SSL_CERT_FILE`/`SSL_CERT_DIR` apply).
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    errors = found.errors.len(),
                    "no system CA certificates found: https probes verify only against a HealthCheck's tls.caSecretRef"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

#[cfg(test)]
mod tests;
