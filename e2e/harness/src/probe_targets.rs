//! Real servers on loopback for HealthCheck probes to hit: the end-to-end tests and
//! `bench-health` point HealthChecks at them and change their behaviour while the operator probes.
//!
//! - [`HttpTarget`]: HTTP/1.1 and HTTP/2 (optionally TLS with a test CA, [`TlsIdentity`]) whose
//!   answer per path is switched live ([`Behaviour`]); it counts requests per path and records
//!   their headers (to show a secret header did not travel). [`HttpTarget::many`] is the
//!   benchmark's variant: any path answers `200 ok` and only a request counter is kept.
//! - [`TcpTarget`]: a listener that can be closed (connection refused) and reopened on the same
//!   port.
//! - [`GrpcTarget`]: the standard gRPC health service (`tonic-health`), its services switched
//!   between `SERVING` and `NOT_SERVING`.
//! - [`DnsTarget`]: a DNS server (UDP and TCP, one port) answering configured `name → IPv4`
//!   records, for the operator's `--dns-server`; every other name is NXDOMAIN.
//!
//! Every server runs as tokio tasks owned by its handle: dropping the handle (or `stop().await`,
//! which also waits) aborts the accept loop and every connection, so no task or port outlives
//! the test. They must be created inside a tokio runtime.

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

// ---------------------------------------------------------------------------------------------
// Task ownership: one accept loop and its connections per server.

/// The tasks of one server (connections, and HTTP/2 streams spawned by hyper): aborted together.
#[derive(Clone, Default)]
struct TaskScope(Arc<Mutex<JoinSet<()>>>);

impl std::fmt::Debug for TaskScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskScope")
    }
}

impl TaskScope {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().expect("task scope lock");
        // Reap finished tasks so a long benchmark does not accumulate them.
        while set.try_join_next().is_some() {}
        set.spawn(fut);
    }

    fn abort_all(&self) {
        if let Ok(mut set) = self.0.lock() {
            set.abort_all();
        }
    }
}

/// hyper's executor for HTTP/2 stream tasks: into the server's scope, not detached.
impl<F> hyper::rt::Executor<F> for TaskScope
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            fut.await;
        });
    }
}

/// A listening socket with its accept loop; aborted (port closed, connections cut) on drop.
#[derive(Debug)]
struct Serving {
    addr: SocketAddr,
    scope: TaskScope,
    accept: Option<JoinHandle<()>>,
}

impl Serving {
    /// Accepts on `listener`, handing each connection to `handle` in the server's scope.
    fn spawn<H, Fut>(listener: TcpListener, handle: H) -> Result<Serving>
    where
        H: Fn(TcpStream, TaskScope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let scope = TaskScope::default();
        let conn_scope = scope.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        conn_scope.spawn(handle(stream, conn_scope.clone()));
                    }
                    // EMFILE and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        Ok(Serving {
            addr,
            scope,
            accept: Some(accept),
        })
    }

    fn shutdown(&mut self) {
        if let Some(task) = &self.accept {
            task.abort();
        }
        self.scope.abort_all();
    }

    /// Shuts down and waits until the listening socket is closed.
    async fn stop(mut self) {
        self.shutdown();
        if let Some(task) = self.accept.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A test CA and a server certificate it signed for some DNS names (and IP addresses), for
/// HTTPS targets. Give [`TlsIdentity::ca_pem`] to the client (e.g. a HealthCheck's
/// `tls.caSecretRef`).
#[derive(Clone)]
pub struct TlsIdentity {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh CA and a leaf certificate for `names` (DNS names or IP literals).
    pub fn new(names: &[&str]) -> Result<TlsIdentity> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pullwarden e2e probe CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf_params = rcgen::CertificateParams::new(names)?;
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pullwarden e2e probe target");
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

        let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|e| anyhow!("leaf key: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            ca_pem: ca_cert.pem(),
            config: Arc::new(config),
        })
    }

    /// The CA certificate (PEM) that verifies the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// How an [`HttpTarget`] answers a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// `200` with body `ok`.
    Ok,
    /// This status with body `status <n>`.
    Status(u16),
    /// `200 ok`, the response headers sent only after this long.
    Slow(Duration),
    /// Alternates per request on this path: `200 ok`, then `500`, then `200 ok`, ...
    Flap,
    /// `200` with a body that never ends (chunks of `x` until the client goes away).
    Huge,
    /// `302 Found` to this URL.
    Redirect(String),
}

/// One request an [`HttpTarget`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Header names (lowercase) and values; a value that is not UTF-8 is shown lossily.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The value of header `name` (case-insensitive), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Requests kept by [`HttpTarget::seen`] (oldest dropped first).
const MAX_SEEN: usize = 10_000;

#[derive(Debug, Default)]
struct HttpState {
    /// Many-target mode: any path answers `200 ok`, only `total` is kept.
    counting_only: bool,
    total: AtomicU64,
    inner: Mutex<HttpRoutes>,
}

#[derive(Debug, Default)]
struct HttpRoutes {
    default: Option<Behaviour>,
    paths: HashMap<String, Behaviour>,
    /// Requests per path (all paths, not only configured ones).
    counts: BTreeMap<String, u64>,
    /// Requests so far that hit [`Behaviour::Flap`], per path.
    flaps: HashMap<String, u64>,
    seen: std::collections::VecDeque<SeenRequest>,
}

/// Options of an [`HttpTarget`].
#[derive(Clone, Debug)]
pub struct HttpTargetOptions {
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub bind: SocketAddr,
    /// Serve HTTPS with this certificate (ALPN h2 and http/1.1).
    pub tls: Option<TlsIdentity>,
}

impl Default for HttpTargetOptions {
    fn default() -> Self {
        HttpTargetOptions {
            bind: loopback_any_port(),
            tls: None,
        }
    }
}

/// An HTTP server whose behaviour per path is switched at runtime. Paths not configured answer
/// with the default behaviour ([`Behaviour::Ok`] until [`HttpTarget::set_default`]).
#[derive(Debug)]
pub struct HttpTarget {
    serving: Serving,
    state: Arc<HttpState>,
    scheme: &'static str,
}

impl HttpTarget {
    /// Plain HTTP on a free loopback port.
    pub async fn start() -> Result<HttpTarget> {
        HttpTarget::start_with(HttpTargetOptions::default()).await
    }

    /// The benchmark's server: any path answers `200 ok` at once; only the request counter
    /// ([`HttpTarget::requests`]) is kept, no per-path counts or headers.
    pub async fn many() -> Result<HttpTarget> {
        HttpTarget::spawn(HttpTargetOptions::default(), true).await
    }

    pub async fn start_with(opts: HttpTargetOptions) -> Result<HttpTarget> {
        HttpTarget::spawn(opts, false).await
    }

    async fn spawn(opts: HttpTargetOptions, counting_only: bool) -> Result<HttpTarget> {
        let listener = bind(opts.bind).await?;
        let state = Arc::new(HttpState {
            counting_only,
            ..Default::default()
        });
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let acceptor = opts
            .tls
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.config.clone()));
        let conn_state = state.clone();
        let serving = Serving::spawn(listener, move |stream, scope| {
            let state = conn_state.clone();
            let acceptor = acceptor.clone();
            async move {
                let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
                match acceptor {
                    None => serve_http(TokioIo::new(stream), service, scope).await,
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            serve_http(TokioIo::new(tls), service, scope).await;
                        }
                    }
                }
            }
        })?;
        Ok(HttpTarget {
            serving,
            state,
            scheme,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// `http://127.0.0.1:<port><path>` (`https` with TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr(), path)
    }

    /// How `path` answers from the next request on.
    pub fn set(&self, path: &str, behaviour: Behaviour) {
        let mut routes = self.routes();
        routes.flaps.remove(path);
        routes.paths.insert(path.to_owned(), behaviour);
    }

    /// How paths without their own behaviour answer.
    pub fn set_default(&self, behaviour: Behaviour) {
        self.routes().default = Some(behaviour);
    }

    /// Requests received on every path.
    pub fn requests(&self) -> u64 {
        self.state.total.load(Ordering::Relaxed)
    }

    /// Requests received on `path` (0 in many-target mode).
    pub fn requests_to(&self, path: &str) -> u64 {
        self.routes().counts.get(path).copied().unwrap_or(0)
    }

    /// Requests per path.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.routes().counts.clone()
    }

    /// The latest requests (at most 10,000), oldest first; none in many-target mode.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.routes().seen.iter().cloned().collect()
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(self) {
        self.serving.stop().await;
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HttpRoutes> {
        self.state.inner.lock().expect("http target lock")
    }
}

type HttpBody = BoxBody<Bytes, Infallible>;

async fn serve_http<I, S>(io: TokioIo<I>, service: S, scope: TaskScope)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<HttpBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(scope);
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    // Errors here are the client going away (e.g. a probe that stopped reading a huge body).
    let _ = builder.serve_connection(io, service).await;
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<HttpBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

fn endless_body() -> HttpBody {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let chunks = futures::stream::repeat_with(|| {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK)))
    });
    StreamBody::new(chunks).boxed()
}

async fn answer(
    state: Arc<HttpState>,
    req: Request<Incoming>,
) -> Result<Response<HttpBody>, Infallible> {
    state.total.fetch_add(1, Ordering::Relaxed);
    if state.counting_only {
        return Ok(text(StatusCode::OK, "ok"));
    }
    let path = req.uri().path().to_owned();
    let (behaviour, flap_n) = {
        let mut routes = state.inner.lock().expect("http target lock");
        *routes.counts.entry(path.clone()).or_default() += 1;
        if routes.seen.len() >= MAX_SEEN {
            routes.seen.pop_front();
        }
        routes.seen.push_back(SeenRequest {
            method: req.method().to_string(),
            path: path.clone(),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        });
        let behaviour = routes
            .paths
            .get(&path)
            .or(routes.default.as_ref())
            .cloned()
            .unwrap_or(Behaviour::Ok);
        let flap_n = if behaviour == Behaviour::Flap {
            let n = routes.flaps.entry(path).or_default();
            *n += 1;
            *n
        } else {
            0
        };
        (behaviour, flap_n)
    };
    Ok(match behaviour {
        Behaviour::Ok => text(StatusCode::OK, "ok"),
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, format!("status {code}"))
        }
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            text(StatusCode::OK, "ok")
        }
        Behaviour::Flap if flap_n % 2 == 1 => text(StatusCode::OK, "ok"),
        Behaviour::Flap => text(StatusCode::INTERNAL_SERVER_ERROR, "flap: failing this time"),
        Behaviour::Huge => {
            let mut resp = Response::new(endless_body());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            resp
        }
        Behaviour::Redirect(location) => {
            let mut resp = text(StatusCode::FOUND, "redirecting");
            match header::HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
            }
            resp
        }
    })
}

// ---------------------------------------------------------------------------------------------
// TCP

/// A TCP listener that accepts (and at once closes) connections while open; closed, its port
/// refuses connections. Reopening binds the same port again.
#[derive(Debug)]
pub struct TcpTarget {
    addr: SocketAddr,
    serving: Option<Serving>,
    accepted: Arc<AtomicU64>,
}

impl TcpTarget {
    /// Open, on a free loopback port.
    pub async fn start() -> Result<TcpTarget> {
        let listener = bind(loopback_any_port()).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let serving = Some(TcpTarget::serve(listener, accepted.clone())?);
        Ok(TcpTarget {
            addr,
            serving,
            accepted,
        })
    }

    fn serve(listener: TcpListener, accepted: Arc<AtomicU64>) -> Result<Serving> {
        Serving::spawn(listener, move |stream, _| {
            accepted.fetch_add(1, Ordering::Relaxed);
            async move { drop(stream) }
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    pub fn is_open(&self) -> bool {
        self.serving.is_some()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops listening; returns once the port refuses connections.
    pub async fn close(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.stop().await;
        }
    }

    /// Listens on the same port again (retrying briefly while the old socket goes away).
    pub async fn open(&mut self) -> Result<()> {
        if self.serving.is_some() {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("rebinding {}", self.addr)),
            }
        };
        self.serving = Some(TcpTarget::serve(listener, self.accepted.clone())?);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC

/// The standard gRPC health service (`grpc.health.v1.Health`, served by `tonic-health`) over
/// plaintext HTTP/2. The whole server (`""`) starts `SERVING`; named services are unknown
/// (`NOT_FOUND`) until set.
#[derive(Debug)]
pub struct GrpcTarget {
    serving: Serving,
    reporter: tonic_health::server::HealthReporter,
    requests: Arc<AtomicU64>,
}

impl GrpcTarget {
    pub async fn start() -> Result<GrpcTarget> {
        let listener = bind(loopback_any_port()).await?;
        let (reporter, health) = tonic_health::server::health_reporter();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let serving = Serving::spawn(listener, move |stream, scope| {
            let health = health.clone();
            let counter = counter.clone();
            async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    tower::ServiceExt::oneshot(health.clone(), req)
                });
                let mut builder = hyper::server::conn::http2::Builder::new(scope);
                builder.timer(TokioTimer::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })?;
        Ok(GrpcTarget {
            serving,
            reporter,
            requests,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// `http://127.0.0.1:<port>` (plaintext HTTP/2).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `service` ("" = the whole server) answers `SERVING`.
    pub async fn set_serving(&self, service: &str) {
        self.reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }

    /// `service` ("" = the whole server) answers `NOT_SERVING`.
    pub async fn set_not_serving(&self, service: &str) {
        self.reporter
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }

    /// gRPC calls received (every method).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub async fn stop(self) {
        self.serving.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// DNS

/// A DNS server on one loopback port (UDP and TCP) that answers `A` queries for configured
/// names (case-insensitive, with or without the final dot); other types of a known name get an
/// empty answer, unknown names NXDOMAIN. Answers carry TTL 0.
#[derive(Debug)]
pub struct DnsTarget {
    addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Ipv4Addr>>>,
    queries: Arc<Mutex<Vec<(String, String)>>>,
    udp: JoinHandle<()>,
    _tcp: Serving,
}

impl Drop for DnsTarget {
    fn drop(&mut self) {
        self.udp.abort();
    }
}

fn dns_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsTarget {
    /// Starts answering `records`.
    pub async fn start(records: &[(&str, Ipv4Addr)]) -> Result<DnsTarget> {
        let records: HashMap<String, Ipv4Addr> =
            records.iter().map(|(n, ip)| (dns_key(n), *ip)).collect();
        let records = Arc::new(Mutex::new(records));
        let queries = Arc::new(Mutex::new(Vec::new()));
        // UDP first on a free port, then TCP on the same number (retry when that one is taken).
        let mut attempt = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(loopback_any_port()).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if attempt >= 20 => return Err(e).context("binding DNS over TCP"),
                Err(_) => attempt += 1,
            }
        };
        let addr = udp.local_addr()?;
        let udp = {
            let records = records.clone();
            let queries = queries.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    if let Some(reply) = dns_reply(&buf[..n], &records, &queries) {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                }
            })
        };
        let tcp = {
            let records = records.clone();
            let queries = queries.clone();
            Serving::spawn(tcp, move |stream, _| {
                let records = records.clone();
                let queries = queries.clone();
                async move {
                    let _ = serve_dns_tcp(stream, &records, &queries).await;
                }
            })?
        };
        Ok(DnsTarget {
            addr,
            records,
            queries,
            udp,
            _tcp: tcp,
        })
    }

    /// `127.0.0.1:<port>`, for `--dns-server`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `name` with `ip` from now on.
    pub fn set(&self, name: &str, ip: Ipv4Addr) {
        self.records
            .lock()
            .expect("dns lock")
            .insert(dns_key(name), ip);
    }

    /// `name` becomes NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.records
            .lock()
            .expect("dns lock")
            .remove(&dns_key(name));
    }

    /// Every question received: (name without the final dot, record type), oldest first.
    pub fn queries(&self) -> Vec<(String, String)> {
        self.queries.lock().expect("dns lock").clone()
    }
}

async fn serve_dns_tcp(
    mut stream: TcpStream,
    records: &Mutex<HashMap<String, Ipv4Addr>>,
    queries: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let len = stream.read_u16().await? as usize;
        let mut msg = vec![0u8; len];
        stream.read_exact(&mut msg).await?;
        let Some(reply) = dns_reply(&msg, records, queries) else {
            return Ok(());
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_u16(reply_len).await?;
        stream.write_all(&reply).await?;
    }
}

/// The answer to one DNS message, `None` for garbage (dropped, like a real server would).
fn dns_reply(
    query: &[u8],
    records: &Mutex<HashMap<String, Ipv4Addr>>,
    queries: &Mutex<Vec<(String, String)>>,
) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_queries(request.queries.clone());
    let records = records.lock().ok()?;
    let mut any_known = request.queries.is_empty();
    for q in &request.queries {
        let key = dns_key(&q.name().to_ascii());
        if let Ok(mut log) = queries.lock() {
            log.push((key.clone(), q.query_type().to_string()));
        }
        if let Some(ip) = records.get(&key) {
            any_known = true;
            if q.query_type() == RecordType::A {
                reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(*ip))));
            }
        }
    }
    if !any_known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn get(url: &str) -> (u16, String) {
        let resp = client().get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Connecting to `addr` is refused (nothing listens).
    async fn refused(addr: SocketAddr) -> bool {
        matches!(
            TcpStream::connect(addr).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }

    #[tokio::test]
    async fn http_behaviours_switch_live_and_requests_are_counted_with_their_headers() {
        let target = HttpTarget::start().await.unwrap();
        assert_eq!(get(&target.url("/anything")).await, (200, "ok".into()));

        target.set("/health", Behaviour::Status(500));
        assert_eq!(
            get(&target.url("/health")).await,
            (500, "status 500".into())
        );
        target.set("/health", Behaviour::Ok);
        assert_eq!(get(&target.url("/health")).await.0, 200);

        target.set("/flap", Behaviour::Flap);
        let mut codes = Vec::new();
        for _ in 0..4 {
            codes.push(get(&target.url("/flap")).await.0);
        }
        assert_eq!(codes, [200, 500, 200, 500]);

        target.set(
            "/moved",
            Behaviour::Redirect("http://169.254.169.254/".into()),
        );
        let resp = client().get(target.url("/moved")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 302);
        assert_eq!(
            resp.headers()["location"].to_str().unwrap(),
            "http://169.254.169.254/"
        );

        target.set_default(Behaviour::Status(404));
        assert_eq!(get(&target.url("/elsewhere")).await.0, 404);

        client()
            .get(target.url("/with-headers?x=1"))
            .header("X-Probe-Token", "s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(target.requests(), 10);
        assert_eq!(target.requests_to("/flap"), 4);
        assert_eq!(target.requests_to("/health"), 2);
        assert_eq!(target.requests_to("/never"), 0);
        let seen = target.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.path, "/with-headers");
        assert_eq!(last.method, "GET");
        assert_eq!(last.header("x-probe-token"), Some("s3cret"));
        assert_eq!(seen[0].header("x-probe-token"), None);
    }

    #[tokio::test]
    async fn slow_sends_headers_after_the_delay_and_a_client_timeout_fires_first() {
        let target = HttpTarget::start().await.unwrap();
        target.set("/slow", Behaviour::Slow(Duration::from_millis(300)));
        let started = Instant::now();
        assert_eq!(get(&target.url("/slow")).await.0, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));

        target.set("/slower", Behaviour::Slow(Duration::from_secs(30)));
        let err = client()
            .get(target.url("/slower"))
            .timeout(Duration::from_millis(200))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    #[tokio::test]
    async fn huge_never_ends_and_a_bounded_reader_stops_after_its_limit() {
        let target = HttpTarget::start().await.unwrap();
        target.set("/huge", Behaviour::Huge);
        let mut resp = client().get(target.url("/huge")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.content_length(), None, "no declared end");
        let mut read = 0usize;
        while read < 8 * 1024 * 1024 {
            let chunk = resp.chunk().await.unwrap().expect("the body goes on");
            assert!(chunk.iter().all(|b| *b == b'x'));
            read += chunk.len();
        }
        drop(resp);
        // The server is still fine after the client walked away.
        assert_eq!(get(&target.url("/")).await.0, 200);
    }

    #[tokio::test]
    async fn dropping_a_server_closes_its_port_and_cuts_its_connections() {
        let target = HttpTarget::start().await.unwrap();
        let addr = target.addr();
        target.set("/huge", Behaviour::Huge);
        let mut resp = client().get(target.url("/huge")).send().await.unwrap();
        resp.chunk().await.unwrap().unwrap();
        target.stop().await;
        assert!(refused(addr).await, "port still open after stop");
        // The endless body ends with an error once its connection task is aborted.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => continue,
                    other => break other.is_err() || matches!(other, Ok(None)),
                }
            }
        })
        .await
        .expect("the connection was cut");
        assert!(ended);

        let dropped = HttpTarget::start().await.unwrap();
        let addr = dropped.addr();
        drop(dropped);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !refused(addr).await {
            assert!(Instant::now() < deadline, "port still open after drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn many_target_mode_answers_any_path_and_counts() {
        let target = HttpTarget::many().await.unwrap();
        let c = client();
        for i in 0..50 {
            let resp = c
                .get(target.url(&format!("/check-{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
        }
        assert_eq!(target.requests(), 50);
        assert!(target.seen().is_empty() && target.counts().is_empty());
    }

    #[tokio::test]
    async fn https_with_the_test_ca_verifies_and_without_it_does_not() {
        let tls = TlsIdentity::new(&["app.test"]).unwrap();
        let target = HttpTarget::start_with(HttpTargetOptions {
            tls: Some(tls.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        let url = format!("https://app.test:{}/x", target.addr().port());
        let trusting = reqwest::Client::builder()
            .resolve("app.test", target.addr())
            .tls_certs_only([reqwest::Certificate::from_pem(tls.ca_pem().as_bytes()).unwrap()])
            .build()
            .unwrap();
        let resp = trusting.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");

        let untrusting = reqwest::Client::builder()
            .resolve("app.test", target.addr())
            .build()
            .unwrap();
        let err = untrusting.get(&url).send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(target.requests(), 1);
    }

    #[tokio::test]
    async fn tcp_target_refuses_while_closed_and_reopens_on_the_same_port() {
        async fn wait_accepted(target: &TcpTarget, n: u64) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while target.accepted() < n {
                assert!(Instant::now() < deadline, "accepted {}", target.accepted());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut target = TcpTarget::start().await.unwrap();
        let addr = target.addr();
        assert!(target.url().starts_with("tcp://127.0.0.1:"));
        TcpStream::connect(addr).await.unwrap();
        wait_accepted(&target, 1).await;
        target.close().await;
        assert!(!target.is_open());
        assert!(refused(addr).await);
        target.open().await.unwrap();
        assert_eq!(target.addr(), addr);
        TcpStream::connect(addr).await.unwrap();
        wait_accepted(&target, 2).await;
    }

    #[tokio::test]
    async fn grpc_health_answers_serving_and_not_serving_per_service() {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let target = GrpcTarget::start().await.unwrap();
        let channel = tonic::transport::Endpoint::from_shared(target.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let check = |service: &str| HealthCheckRequest {
            service: service.to_owned(),
        };
        let whole = client.check(check("")).await.unwrap().into_inner();
        assert_eq!(whole.status(), ServingStatus::Serving);
        let unknown = client.check(check("shop.Cart")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        target.set_serving("shop.Cart").await;
        let r = client.check(check("shop.Cart")).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving);
        target.set_not_serving("shop.Cart").await;
        let r = client.check(check("shop.Cart")).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::NotServing);
        target.set_serving("shop.Cart").await;
        let r = client.check(check("shop.Cart")).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving);
        assert_eq!(target.requests(), 5);

        let addr = target.addr();
        target.stop().await;
        assert!(refused(addr).await);
    }

    /// Asks `server` about `name` over UDP or TCP; returns (response code, A addresses).
    async fn ask(server: SocketAddr, name: &str, tcp: bool) -> (String, Vec<Ipv4Addr>) {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RData, RecordType};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let bytes = q.to_vec().unwrap();
        let reply = if tcp {
            let mut s = TcpStream::connect(server).await.unwrap();
            s.write_u16(bytes.len() as u16).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            let len = s.read_u16().await.unwrap() as usize;
            let mut buf = vec![0; len];
            s.read_exact(&mut buf).await.unwrap();
            buf
        } else {
            let sock = UdpSocket::bind(loopback_any_port()).await.unwrap();
            sock.send_to(&bytes, server).await.unwrap();
            let mut buf = vec![0; 4096];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            buf.truncate(n);
            buf
        };
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, q.metadata.id);
        let ips = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        (reply.metadata.response_code.to_string(), ips)
    }

    #[tokio::test]
    async fn dns_answers_configured_names_over_udp_and_tcp() {
        let metadata = Ipv4Addr::new(169, 254, 169, 254);
        let dns = DnsTarget::start(&[
            ("metadata.evil.test", metadata),
            ("app.test", Ipv4Addr::LOCALHOST),
        ])
        .await
        .unwrap();
        let server = dns.addr();
        assert_eq!(
            ask(server, "metadata.evil.test.", false).await,
            ("No Error".into(), vec![metadata])
        );
        assert_eq!(
            ask(server, "APP.test", true).await,
            ("No Error".into(), vec![Ipv4Addr::LOCALHOST])
        );
        assert_eq!(
            ask(server, "nowhere.test", false).await.0,
            "Non-Existent Domain"
        );
        dns.set("nowhere.test", Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(
            ask(server, "nowhere.test", false).await.1,
            vec![Ipv4Addr::new(127, 0, 0, 9)]
        );
        dns.remove("app.test");
        assert_eq!(ask(server, "app.test", true).await.0, "Non-Existent Domain");
        let asked: Vec<String> = dns.queries().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            asked,
            [
                "metadata.evil.test",
                "app.test",
                "nowhere.test",
                "nowhere.test",
                "app.test"
            ]
        );
    }
}
