//! Probes against real servers on 127.0.0.1 (hyper, tonic, raw TCP) and a test DNS server.

use super::*;
use crate::net::test_dns::TestDns;
use futures::future::BoxFuture;
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use std::convert::Infallible;

type Body = BoxBody<Bytes, Infallible>;

/// A guard that allows loopback (the test servers), like the e2e operator.
fn lo_guard() -> Guard {
    Guard::new(vec![], vec!["127.0.0.0/8".parse().unwrap()])
}

fn prober() -> Prober {
    Prober::new(lo_guard(), ProbeLimits::default())
}

fn prober_with_dns(dns: &TestDns) -> Prober {
    Prober::new(
        lo_guard().with_dns_servers(&[dns.addr]),
        ProbeLimits::default(),
    )
}

fn get() -> HttpCheck {
    HttpCheck {
        method: HttpMethod::Get,
        headers: vec![],
        secret_headers: vec![],
        expect_status: vec![],
        body_contains: None,
        max_latency: None,
    }
}

fn target(url: &str) -> ProbeTarget {
    ProbeTarget {
        url: url::Url::parse(url).unwrap(),
        pinned: None,
        ca_pem: None,
    }
}

fn http(url: &str, check: HttpCheck) -> ProbeRequest {
    ProbeRequest {
        kind: ProbeKind::Http(check),
        target: target(url),
        timeout: Duration::from_secs(10),
    }
}

fn err(o: &ProbeOutcome) -> &str {
    assert!(!o.success, "expected a failure: {o:?}");
    o.error.as_deref().expect("a failure has an error")
}

// --- test servers ------------------------------------------------------------------------

/// One request as a test server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
}

type Handler = Arc<dyn Fn(Seen) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// An HTTP server on 127.0.0.1; stopped (with its connections) when dropped.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Http1,
    H2,
}

async fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(None, Proto::Http1, handler).await
}

async fn serve_with<F, Fut>(
    tls: Option<tokio_rustls::TlsAcceptor>,
    proto: Proto,
    handler: F,
) -> Server
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |seen| Box::pin(handler(seen)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        // Dropped with the accept task: every connection ends with the server.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Seen {
                        method: req.method().clone(),
                        path: req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: req.headers().clone(),
                    };
                    log.lock().unwrap().push(seen.clone());
                    let reply = handler(seen);
                    async move { Ok::<_, Infallible>(reply.await) }
                });
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_conn(TokioIo::new(stream), svc, proto).await;
                        }
                    }
                    None => serve_conn(TokioIo::new(stream), svc, proto).await,
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Server { addr, seen, task }
}

async fn serve_conn<I, S>(io: I, svc: S, proto: Proto)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    match proto {
        Proto::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        }
        Proto::H2 => {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        }
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn redirect(status: u16, location: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(LOCATION, location)
        .body(Empty::new().boxed())
        .unwrap()
}

/// A body that never ends (16 KiB chunks of `x`).
fn endless() -> Response<Body> {
    let chunks = futures::stream::repeat_with(|| {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[b'x'; 16 * 1024])))
    });
    Response::new(StreamBody::new(chunks).boxed())
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// --- HTTP ----------------------------------------------------------------------------------

#[tokio::test]
async fn http_200_is_success_and_sends_method_host_and_user_agent() {
    let server = serve(|_| async { reply(200, "ok") }).await;
    let start = Instant::now();
    let o = prober()
        .probe(&http(&server.url("/healthz?x=1"), get()))
        .await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.status_code, Some(200));
    assert_eq!(o.error, None);
    assert!(!o.refused);
    assert!(o.latency > Duration::ZERO && o.latency <= start.elapsed());
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, "/healthz?x=1");
    assert_eq!(seen[0].headers[HOST], server.addr.to_string().as_str());
    assert!(
        seen[0].headers[USER_AGENT]
            .to_str()
            .unwrap()
            .starts_with("pullwarden-healthcheck/")
    );

    for (method, expected) in [
        (HttpMethod::Head, Method::HEAD),
        (HttpMethod::Post, Method::POST),
    ] {
        let o = prober()
            .probe(&http(&server.url("/"), HttpCheck { method, ..get() }))
            .await;
        assert!(o.success, "{o:?}");
        assert_eq!(server.seen().last().unwrap().method, expected);
    }
}

#[tokio::test]
async fn http_status_outside_the_expected_ranges_fails() {
    let server = serve(|seen| async move {
        match seen.path.as_str() {
            "/401" => reply(401, "no"),
            _ => reply(500, "boom: internal details"),
        }
    })
    .await;
    let o = prober().probe(&http(&server.url("/"), get())).await;
    assert_eq!(err(&o), "status 500 not in 200-299");
    assert_eq!(o.status_code, Some(500));
    assert!(!o.refused);
    let o = prober()
        .probe(&http(
            &server.url("/"),
            HttpCheck {
                expect_status: vec![(200, 299), (401, 401)],
                ..get()
            },
        ))
        .await;
    assert_eq!(err(&o), "status 500 not in 200-299, 401");
    let o = prober()
        .probe(&http(
            &server.url("/401"),
            HttpCheck {
                expect_status: vec![(200, 299), (401, 401)],
                ..get()
            },
        ))
        .await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.status_code, Some(401));
}

#[tokio::test]
async fn body_contains_reads_at_most_the_limit() {
    let mut late = vec![b'x'; 512 * 1024];
    late.extend_from_slice(b"status: ok");
    let late = Bytes::from(late);
    let server = serve(move |seen| {
        let late = late.clone();
        async move {
            match seen.path.as_str() {
                "/late" => reply(200, late),
                "/endless" => endless(),
                _ => reply(200, "status: degraded"),
            }
        }
    })
    .await;
    let check = |text: &str| HttpCheck {
        body_contains: Some(text.into()),
        ..get()
    };
    // Found after 512 KiB (within the default 1 MiB).
    let o = prober()
        .probe(&http(&server.url("/late"), check("status: ok")))
        .await;
    assert!(o.success, "{o:?}");
    // Wrong body: the whole (short) body was read.
    let o = prober()
        .probe(&http(&server.url("/"), check("status: ok")))
        .await;
    assert_eq!(
        err(&o),
        "body does not contain \"status: ok\" (16 bytes read, the whole body)"
    );
    assert_eq!(o.status_code, Some(200));
    // Beyond the limit is not read: found at 512 KiB is not found with a 256 KiB limit.
    let small = Prober::new(
        lo_guard(),
        ProbeLimits {
            max_body_bytes: 256 * 1024,
            ..ProbeLimits::default()
        },
    );
    let o = small
        .probe(&http(&server.url("/late"), check("status: ok")))
        .await;
    assert_eq!(
        err(&o),
        "body does not contain \"status: ok\" (first 256 KiB read)"
    );
    // An endless body: the probe stops at the limit, well inside its timeout.
    let mut req = http(&server.url("/endless"), check("status: ok"));
    req.timeout = Duration::from_secs(30);
    let o = prober().probe(&req).await;
    assert_eq!(
        err(&o),
        "body does not contain \"status: ok\" (first 1 MiB read)"
    );
}

#[tokio::test]
async fn scan_body_finds_text_across_frames_and_stops_at_the_limit() {
    fn body(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed()
    }
    let scan = |chunks: &[&'static str], needle: &'static str, limit: usize| {
        let b = body(chunks);
        async move { scan_body(b, needle.as_bytes(), limit).await.unwrap() }
    };
    assert_eq!(scan(&["hea", "lthy"], "healthy", 100).await, Scan::Found);
    assert_eq!(
        scan(&["h", "e", "a", "l", "t", "h", "y"], "healthy", 100).await,
        Scan::Found
    );
    assert_eq!(
        scan(&["xxhe", "al", "thyxx"], "healthy", 100).await,
        Scan::Found
    );
    assert_eq!(scan(&["healt", "h", "y"], "healthy", 6).await, Scan::Limit);
    assert_eq!(scan(&["abc", "def"], "healthy", 100).await, Scan::Ended(6));
    assert_eq!(scan(&["abc"], "", 100).await, Scan::Found);
    // Exactly at the limit still counts.
    assert_eq!(scan(&["xhealthy"], "healthy", 8).await, Scan::Found);
}

#[tokio::test]
async fn slow_headers_time_out_and_max_latency_is_time_to_headers() {
    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut req = http(&format!("http://{addr}/"), get());
    req.timeout = Duration::from_millis(300);
    let start = Instant::now();
    let o = prober().probe(&req).await;
    let took = start.elapsed();
    holder.abort();
    assert_eq!(
        err(&o),
        "timed out after 300ms (waiting for response headers)"
    );
    assert!(o.latency >= Duration::from_millis(300), "{o:?}");
    assert!(
        took < Duration::from_secs(5),
        "bounded by the timeout: {took:?}"
    );

    let slow = serve(|_| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reply(200, "ok")
    })
    .await;
    let o = prober()
        .probe(&http(
            &slow.url("/"),
            HttpCheck {
                max_latency: Some(Duration::from_millis(50)),
                ..get()
            },
        ))
        .await;
    let e = err(&o);
    assert!(e.starts_with("answered in "), "{e}");
    assert!(e.ends_with(", above maxLatency 50ms"), "{e}");
    assert!(o.latency >= Duration::from_millis(200));
    assert_eq!(o.status_code, Some(200));
    let o = prober()
        .probe(&http(
            &slow.url("/"),
            HttpCheck {
                max_latency: Some(Duration::from_secs(5)),
                ..get()
            },
        ))
        .await;
    assert!(o.success, "{o:?}");
}

#[tokio::test]
async fn connection_refused_and_unresolvable_names_are_clear_failures() {
    let port = closed_port().await;
    let o = prober()
        .probe(&http(&format!("http://127.0.0.1:{port}/"), get()))
        .await;
    assert_eq!(
        err(&o),
        format!("connect to 127.0.0.1:{port}: connection refused")
    );
    assert!(!o.refused);
    assert_eq!(o.status_code, None);

    let dns = TestDns::start(&[]).await;
    let o = prober_with_dns(&dns)
        .probe(&http("http://nosuch.invalid/", get()))
        .await;
    let e = err(&o);
    assert!(e.starts_with("cannot resolve nosuch.invalid: "), "{e}");
    assert!(!o.refused);
}

#[tokio::test]
async fn metadata_and_loopback_targets_are_refused_before_any_connection() {
    let o = prober()
        .probe(&http("http://169.254.169.254/latest/meta-data/", get()))
        .await;
    assert!(o.refused, "{o:?}");
    let e = err(&o);
    assert!(
        e.starts_with("outbound connection to 169.254.169.254 refused: "),
        "{e}"
    );
    assert!(e.contains("cloud metadata"), "{e}");
    // A name the test DNS server answers with the metadata address.
    let dns = TestDns::start(&[]).await;
    let o = prober_with_dns(&dns)
        .probe(&http("http://evil.test/", get()))
        .await;
    assert!(o.refused, "{o:?}");
    assert!(
        err(&o).starts_with("outbound connection to evil.test (169.254.169.254) refused: "),
        "{o:?}"
    );
    // Loopback without an allow entry (the operator's default).
    let server = serve(|_| async { reply(200, "ok") }).await;
    let strict = Prober::new(Guard::default(), ProbeLimits::default());
    let o = strict.probe(&http(&server.url("/"), get())).await;
    assert!(o.refused && err(&o).contains("loopback"), "{o:?}");
    assert!(server.seen().is_empty());
    // Unsupported schemes are not probed.
    let o = prober().probe(&http("ftp://127.0.0.1/x", get())).await;
    assert!(err(&o).starts_with("unsupported scheme ftp"), "{o:?}");
}

#[tokio::test]
async fn redirects_are_followed_and_every_hop_is_checked() {
    let server = serve(|seen| async move {
        match seen.path.as_str() {
            "/" => redirect(302, "/next"),
            "/next" => reply(200, "ok"),
            "/meta" => redirect(301, "http://169.254.169.254/latest/meta-data"),
            "/evil" => redirect(307, "http://evil.test:8080/"),
            "/loop" => redirect(302, "/loop"),
            "/ftp" => redirect(302, "ftp://example.com/"),
            "/post" => redirect(303, "/next"),
            "/not-modified" => redirect(304, "/next"),
            _ => reply(404, ""),
        }
    })
    .await;
    let o = prober().probe(&http(&server.url("/"), get())).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.status_code, Some(200));
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/", "/next"]);

    let o = prober().probe(&http(&server.url("/meta"), get())).await;
    assert!(o.refused, "{o:?}");
    let e = err(&o);
    assert!(
        e.starts_with("redirect to http://169.254.169.254/latest/meta-data refused: "),
        "{e}"
    );
    assert!(e.contains("cloud metadata"), "{e}");
    assert_eq!(o.status_code, Some(301));

    let dns = TestDns::start(&[]).await;
    let o = prober_with_dns(&dns)
        .probe(&http(&server.url("/evil"), get()))
        .await;
    assert!(o.refused, "{o:?}");
    assert!(
        err(&o).starts_with(
            "redirect to http://evil.test:8080/ refused: outbound connection to evil.test (169.254.169.254) refused"
        ),
        "{o:?}"
    );

    let before = server.seen().len();
    let o = prober().probe(&http(&server.url("/loop"), get())).await;
    assert_eq!(err(&o), "too many redirects (more than 5)");
    assert!(!o.refused);
    assert_eq!(
        server.seen().len() - before,
        6,
        "the first request and 5 hops"
    );

    let o = prober()
        .probe(&http(&server.url("/not-modified"), get()))
        .await;
    assert_eq!(err(&o), "status 304 not in 200-299", "not followed");

    let o = prober().probe(&http(&server.url("/ftp"), get())).await;
    assert_eq!(
        err(&o),
        "redirect to a ftp: URL (only http and https are followed)"
    );

    // 303 after a POST continues with GET.
    let o = prober()
        .probe(&http(
            &server.url("/post"),
            HttpCheck {
                method: HttpMethod::Post,
                ..get()
            },
        ))
        .await;
    assert!(o.success, "{o:?}");
    let seen = server.seen();
    let last_two: Vec<&Method> = seen[seen.len() - 2..].iter().map(|s| &s.method).collect();
    assert_eq!(last_two, [&Method::POST, &Method::GET]);
}

#[tokio::test]
async fn spec_headers_go_to_the_first_origin_only_and_never_into_errors() {
    let other = serve(|_| async { reply(500, "other") }).await;
    let landing = other.url("/landing");
    let first = serve(move |seen| {
        let landing = landing.clone();
        async move {
            match seen.path.as_str() {
                "/" => redirect(302, "/same"),
                "/same" => redirect(302, &landing),
                _ => reply(404, ""),
            }
        }
    })
    .await;
    let check = HttpCheck {
        headers: vec![("X-Probe".into(), "yes".into())],
        secret_headers: vec![(
            "Authorization".into(),
            SecretString::from("Bearer s3cret-token"),
        )],
        ..get()
    };
    assert!(!format!("{check:?}").contains("s3cret"), "Debug redacts");
    let o = prober().probe(&http(&first.url("/"), check)).await;
    // Both hops on the first origin got the headers; the other origin got neither.
    for seen in first.seen() {
        assert_eq!(seen.headers["x-probe"], "yes", "{}", seen.path);
        assert_eq!(seen.headers["authorization"], "Bearer s3cret-token");
    }
    assert_eq!(first.seen().len(), 2);
    let at_other = other.seen();
    assert_eq!(at_other.len(), 1);
    assert!(!at_other[0].headers.contains_key("authorization"));
    assert!(!at_other[0].headers.contains_key("x-probe"));
    assert_eq!(err(&o), "status 500 not in 200-299");
    assert!(!format!("{o:?}").contains("s3cret"));

    // An invalid header is the spec's fault and names the header, never the value.
    let bad = HttpCheck {
        secret_headers: vec![("X-Token".into(), SecretString::from("line\nbreak-s3cret"))],
        ..get()
    };
    let o = prober().probe(&http(&first.url("/"), bad)).await;
    assert_eq!(
        err(&o),
        "header x-token: the value is not a valid header value"
    );
    let bad = HttpCheck {
        headers: vec![("bad header".into(), "v".into())],
        ..get()
    };
    let o = prober().probe(&http(&first.url("/"), bad)).await;
    assert_eq!(err(&o), "header \"bad header\": not a valid header name");
    assert_eq!(first.seen().len(), 2, "no request for a bad spec");
}

// --- TLS -----------------------------------------------------------------------------------

/// A CA (PEM) and a server configuration whose leaf it signed, valid for `names`.
fn test_pki(names: &[&str], alpn: &[&[u8]]) -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pullwarden test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (
        ca.pem().into_bytes(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test]
async fn https_verifies_against_the_given_ca_and_the_url_host() {
    let (ca_pem, acceptor) = test_pki(&["ok.test"], &[b"http/1.1"]);
    let server = serve_with(Some(acceptor), Proto::Http1, |_| async { reply(200, "ok") }).await;
    let dns = TestDns::start(&[]).await;
    let p = prober_with_dns(&dns);
    let port = server.addr.port();
    let mut req = http(&format!("https://ok.test:{port}/healthz"), get());

    let o = p.probe(&req).await;
    assert_eq!(err(&o), "TLS: invalid peer certificate: UnknownIssuer");
    assert!(server.seen().is_empty());

    req.target.ca_pem = Some(Arc::new(ca_pem.clone()));
    let o = p.probe(&req).await;
    assert!(o.success, "{o:?}");
    assert_eq!(
        server.seen()[0].headers[HOST],
        format!("ok.test:{port}").as_str()
    );
    // Cached configuration, same answer.
    assert!(p.probe(&req).await.success);

    // The certificate must name the URL's host.
    let mut by_ip = http(&format!("https://127.0.0.1:{port}/"), get());
    by_ip.target.ca_pem = Some(Arc::new(ca_pem));
    let e = err(&p.probe(&by_ip).await).to_string();
    assert!(e.starts_with("TLS: invalid peer certificate: "), "{e}");
    assert!(e.contains("not valid for name \"127.0.0.1\""), "{e}");

    // A CA that is not PEM is said so before any connection.
    req.target.ca_pem = Some(Arc::new(b"not a certificate".to_vec()));
    let o = p.probe(&req).await;
    assert_eq!(err(&o), "TLS: the CA holds no PEM certificate");

    // Plain HTTP against a TLS port (and the reverse) fail clearly, without hanging.
    let o = p
        .probe(&http(&format!("http://127.0.0.1:{port}/"), get()))
        .await;
    assert_eq!(
        err(&o),
        "not a valid HTTP answer: invalid HTTP version parsed"
    );
    let plain = serve(|_| async { reply(200, "ok") }).await;
    let o = p
        .probe(&http(
            &format!("https://127.0.0.1:{}/", plain.addr.port()),
            get(),
        ))
        .await;
    assert_eq!(
        err(&o),
        "TLS: received corrupt message of type InvalidContentType"
    );
}

// --- TCP -----------------------------------------------------------------------------------

fn tcp(url: &str) -> ProbeRequest {
    ProbeRequest {
        kind: ProbeKind::Tcp,
        target: target(url),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn tcp_open_and_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let o = prober().probe(&tcp(&format!("tcp://{addr}"))).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.status_code, None);
    drop(listener);
    let o = prober().probe(&tcp(&format!("tcp://{addr}"))).await;
    assert_eq!(err(&o), format!("connect to {addr}: connection refused"));
    let o = prober().probe(&tcp("tcp://127.0.0.1")).await;
    assert_eq!(err(&o), "tcp://127.0.0.1 has no port");
    let o = prober().probe(&tcp("tcp://169.254.169.254:22")).await;
    assert!(o.refused, "{o:?}");
}

// --- pinned Service endpoints ----------------------------------------------------------------

fn pinned(url: &str, addrs: &[&str], cluster_exempt: bool) -> ProbeTarget {
    ProbeTarget {
        pinned: Some(PinnedAddrs {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            cluster_exempt,
        }),
        ..target(url)
    }
}

#[tokio::test]
async fn pinned_endpoints_are_connected_to_and_the_name_only_names_the_host() {
    let server = serve(|seen| async move {
        match seen.path.as_str() {
            "/" => redirect(302, "/ready"),
            _ => reply(200, "ok"),
        }
    })
    .await;
    let addr = server.addr.to_string();
    let req = ProbeRequest {
        kind: ProbeKind::Http(get()),
        // This name resolves nowhere (and the guard would refuse it as cluster-internal).
        target: pinned("http://web.preview.svc:8080/", &[&addr], true),
        timeout: Duration::from_secs(5),
    };
    let o = prober().probe(&req).await;
    assert!(o.success, "{o:?}");
    let seen = server.seen();
    assert_eq!(
        seen.len(),
        2,
        "the same-origin redirect uses the endpoints too"
    );
    assert!(
        seen.iter()
            .all(|s| s.headers[HOST] == "web.preview.svc:8080")
    );
}

#[tokio::test]
async fn pinned_endpoints_keep_every_fixed_class_and_skip_only_cluster_cidrs_when_exempt() {
    let p = Prober::new(
        Guard::new(vec!["10.244.0.0/16".parse().unwrap()], vec![]),
        ProbeLimits::default(),
    );
    let ok = |r: Result<Vec<SocketAddr>, Fail>| r.map_err(|f| (f.refused, f.error));
    // Exempt: the cluster range passes (pure check: nothing is connected to here).
    let exempt = pinned(
        "http://web.ns.svc/",
        &["10.244.1.7:8080", "10.244.2.9:8080"],
        true,
    );
    assert_eq!(
        ok(p.check_pinned(exempt.pinned.as_ref().unwrap()))
            .unwrap()
            .len(),
        2
    );
    // Not exempt (a hand-written EndpointSlice): the full guard.
    let manual = pinned("http://web.ns.svc/", &["10.244.1.7:8080"], false);
    let (refused, e) = ok(p.check_pinned(manual.pinned.as_ref().unwrap())).unwrap_err();
    assert!(refused && e.contains("--cluster-cidrs"), "{e}");
    // A fixed class is refused even when exempt; the rest of the list is kept.
    let mixed = pinned(
        "http://web.ns.svc/",
        &["169.254.169.254:80", "10.244.1.7:8080"],
        true,
    );
    assert_eq!(
        ok(p.check_pinned(mixed.pinned.as_ref().unwrap())).unwrap(),
        vec!["10.244.1.7:8080".parse::<SocketAddr>().unwrap()]
    );
    // Through a whole probe: refused, no connection.
    for (addrs, exempt) in [
        (&["169.254.169.254:80"][..], true),
        (&["127.0.0.1:9"][..], true),
    ] {
        let req = ProbeRequest {
            kind: ProbeKind::Tcp,
            target: pinned("tcp://web.ns.svc:80", addrs, exempt),
            timeout: Duration::from_secs(5),
        };
        let o = p.probe(&req).await;
        assert!(o.refused, "{addrs:?}: {o:?}");
    }
    let empty = ProbeRequest {
        kind: ProbeKind::Tcp,
        target: pinned("tcp://web.ns.svc:80", &[], true),
        timeout: Duration::from_secs(5),
    };
    let o = p.probe(&empty).await;
    assert_eq!(err(&o), "no endpoint to probe");
    assert!(!o.refused);
}

// --- gRPC ----------------------------------------------------------------------------------

fn grpc(url: &str, service: &str) -> ProbeRequest {
    ProbeRequest {
        kind: ProbeKind::Grpc {
            service: service.into(),
        },
        target: target(url),
        timeout: Duration::from_secs(5),
    }
}

/// tonic's own health service on 127.0.0.1 (plaintext HTTP/2).
async fn tonic_health() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("app", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _keep = reporter;
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    (addr, task)
}

#[tokio::test]
async fn grpc_health_against_tonic() {
    let (addr, task) = tonic_health().await;
    let url = format!("http://{addr}");
    let o = prober().probe(&grpc(&url, "app")).await;
    assert!(o.success, "{o:?}");
    let o = prober().probe(&grpc(&url, "")).await;
    assert!(o.success, "the whole server: {o:?}");
    let o = prober().probe(&grpc(&url, "down")).await;
    assert_eq!(err(&o), "serving status NOT_SERVING");
    let o = prober().probe(&grpc(&url, "nosuch")).await;
    assert_eq!(err(&o), "gRPC status 5 (NOT_FOUND): service not registered");
    task.abort();
    let _ = task.await;
    let o = prober().probe(&grpc(&url, "app")).await;
    assert_eq!(err(&o), format!("connect to {addr}: connection refused"));
    // An HTTP/1 server is not a gRPC server.
    let plain = serve(|_| async { reply(200, "ok") }).await;
    let o = prober().probe(&grpc(&plain.url(""), "app")).await;
    assert!(err(&o).starts_with("HTTP/2: "), "{o:?}");
}

/// A hand-rolled gRPC health answer: one message with `status`, then `grpc-status: 0`.
fn grpc_answer(serving_status: u8) -> Response<Body> {
    let message = [0u8, 0, 0, 0, 2, 0x08, serving_status];
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::copy_from_slice(&message))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header(CONTENT_TYPE, "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)).boxed())
        .unwrap()
}

#[tokio::test]
async fn grpc_over_tls_with_alpn_h2_and_trailers_only_answers() {
    let (ca_pem, acceptor) = test_pki(&["ok.test"], &[b"h2"]);
    let server = serve_with(Some(acceptor), Proto::H2, |_| async { grpc_answer(1) }).await;
    let dns = TestDns::start(&[]).await;
    let p = prober_with_dns(&dns);
    let mut req = grpc(&format!("https://ok.test:{}", server.addr.port()), "app");
    req.target.ca_pem = Some(Arc::new(ca_pem));
    let o = p.probe(&req).await;
    assert!(o.success, "{o:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, GRPC_HEALTH_CHECK_PATH);
    assert_eq!(seen[0].headers[CONTENT_TYPE], "application/grpc");
    assert_eq!(seen[0].headers["te"], "trailers");

    // Plaintext h2c: a trailers-only error answer and serving statuses by number.
    let h2c = serve_with(None, Proto::H2, |_| async {
        Response::builder()
            .header(CONTENT_TYPE, "application/grpc")
            .header("grpc-status", "12")
            .header("grpc-message", "unknown%20service%0A grpc.health.v1.Health")
            .body(Empty::new().boxed())
            .unwrap()
    })
    .await;
    let o = p.probe(&grpc(&h2c.url(""), "")).await;
    assert_eq!(
        err(&o),
        "gRPC status 12 (UNIMPLEMENTED): unknown service  grpc.health.v1.Health"
    );
    for (status, name) in [
        (0u8, "UNKNOWN"),
        (3, "SERVICE_UNKNOWN"),
        (9, "9 (not a known value)"),
    ] {
        let server = serve_with(None, Proto::H2, move |_| async move { grpc_answer(status) }).await;
        let o = p.probe(&grpc(&server.url(""), "")).await;
        assert_eq!(err(&o), format!("serving status {name}"));
    }
}

#[test]
fn grpc_messages_are_encoded_and_decoded_by_hand() {
    assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
    assert_eq!(
        &grpc_health_request("app")[..],
        &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'p']
    );
    let long = "s".repeat(200);
    let frame = grpc_health_request(&long);
    assert_eq!(&frame[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
    assert_eq!(
        grpc_serving_status(&[0, 0, 0, 0, 0]),
        Ok(0),
        "absent = UNKNOWN"
    );
    // Unknown fields are skipped (a string field 2, then status).
    assert_eq!(
        grpc_serving_status(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 2]),
        Ok(2)
    );
    assert!(grpc_serving_status(&[]).is_err());
    assert!(
        grpc_serving_status(&[1, 0, 0, 0, 2, 0x08, 1]).is_err(),
        "compressed"
    );
    assert!(
        grpc_serving_status(&[0, 0, 0, 0, 9, 0x08, 1]).is_err(),
        "truncated"
    );
}

#[test]
fn messages_are_short_and_formatted() {
    assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
    assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
    assert_eq!(fmt_duration(Duration::from_millis(1250)), "1.25s");
    assert_eq!(fmt_bytes(1024 * 1024), "1 MiB");
    assert_eq!(fmt_bytes(64 * 1024), "64 KiB");
    assert_eq!(fmt_bytes(16), "16 bytes");
    assert_eq!(fmt_ranges(&[(200, 299), (401, 401)]), "200-299, 401");
    let u = url::Url::parse("https://user:pw@example.com:8443/a/b?token=x#f").unwrap();
    assert_eq!(shown(&u), "https://example.com:8443/a/b");
    assert_eq!(excerpt(&"x".repeat(500)).chars().count(), 121);
    assert_eq!(percent_decode(b"a%20b%zz"), "a b%zz");
}
