//! A loopback proxy that confines libgit2's HTTP(S) connections to one checked remote.
//!
//! libgit2 resolves and connects by itself and takes no resolver hook. Every git operation over
//! http(s) therefore gets its own [`GitProxy`] on `127.0.0.1:<ephemeral>`, bound to the one
//! authority (host and port) of the remote:
//! - https: libgit2 is given the proxy through `git2::ProxyOptions` and sends
//!   `CONNECT host:port`; the tunnel opens only for the remote's authority (TLS stays end to
//!   end, so the certificate is still verified for the real host name). A redirect to another
//!   host makes libgit2 ask for a tunnel to that host, which is refused before anything — the
//!   token included — leaves.
//! - plain http: libgit2 1.9 does not route plain-http requests through a proxy (it sends the
//!   absolute-form request straight to the server), so the remote URL itself is pointed at the
//!   proxy ([`GitProxy::reverse_url`]) and the proxy forwards each request to the remote: `Host`
//!   set to the remote, `Connection: close` (one request per connection, so every response
//!   head passes through the proxy), and a redirect answer is rewritten — same-origin locations
//!   to the proxy again, any other origin replaced by a `403` and recorded.
//! - the target is resolved once through the [`Guard`] and the upstream connection goes to a
//!   checked address (no rebinding); a refusal answers `403` and is recorded, so the caller can
//!   report the guard's message instead of libgit2's generic status error.
//!
//! The proxy lives as long as the value (dropping it stops the listener and its connections).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::guard::{Guard, ResolveError};

/// Largest request head accepted from libgit2.
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// `host[:port]` the proxy lets through (lowercase host, explicit port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: u16,
}

impl Authority {
    /// The authority of an http(s) URL (default ports filled in).
    pub fn of_url(url: &url::Url) -> Option<Authority> {
        let host = match url.host()? {
            url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            url::Host::Ipv4(v4) => v4.to_string(),
            url::Host::Ipv6(v6) => v6.to_string(),
        };
        Some(Authority {
            host,
            port: url.port_or_known_default()?,
        })
    }

    /// Pure: parse `host:port` / `[v6]:port` of a CONNECT line.
    pub fn parse(s: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:")?;
            (h.to_string(), p)
        } else {
            let (h, p) = s.rsplit_once(':')?;
            (h.to_string(), p)
        };
        Some(Authority {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port: p_u16(port)?,
        })
    }
}

fn p_u16(s: &str) -> Option<u16> {
    s.parse().ok()
}

/// What the proxy does with one request head (pure, see [`decide`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Open a tunnel to the authority, answer 200.
    Tunnel(Authority),
    /// Forward to the authority (plain http) with this rewritten head.
    Forward { to: Authority, head: Vec<u8> },
    /// Answer 403 with this reason.
    Refuse(String),
}

fn cross_origin(to: &Authority, allowed: &Authority) -> Plan {
    Plan::Refuse(format!(
        "git remote redirected or connected to {}:{}, but this operation may only reach {}:{} \
         (cross-origin redirects are not followed)",
        to.host, to.port, allowed.host, allowed.port
    ))
}

/// `host[:port]` as a `Host` header value (port omitted when it is the scheme default).
fn host_header(a: &Authority, default_port: u16) -> String {
    let host = if a.host.contains(':') {
        format!("[{}]", a.host)
    } else {
        a.host.clone()
    };
    if a.port == default_port {
        host
    } else {
        format!("{host}:{}", a.port)
    }
}

/// Pure: the plan for a request head sent to the proxy, given the one allowed authority.
/// `CONNECT` opens a tunnel (https); an origin-form request (the remote URL pointed at the
/// proxy, plain http) is forwarded to `allowed` with `Host` and `Connection` rewritten.
pub fn decide(head: &[u8], allowed: &Authority) -> Plan {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Plan::Refuse("malformed request line".into());
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        return match Authority::parse(target) {
            Some(a) if a == *allowed => Plan::Tunnel(a),
            Some(a) => cross_origin(&a, allowed),
            None => Plan::Refuse(format!("bad CONNECT target {target:?}")),
        };
    }
    if !target.starts_with('/') {
        // An absolute-form request names its own target; only our own remote is reachable.
        if let Some(to) = url::Url::parse(target)
            .ok()
            .as_ref()
            .and_then(Authority::of_url)
            && to != *allowed
        {
            return cross_origin(&to, allowed);
        }
        return Plan::Refuse("only CONNECT and origin-form requests are proxied".into());
    }
    let mut out = format!("{method} {target} {version}\r\n");
    out.push_str(&format!("Host: {}\r\n", host_header(allowed, 80)));
    out.push_str("Connection: close\r\n");
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "host",
            "connection",
            "proxy-authorization",
            "proxy-connection",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    Plan::Forward {
        to: allowed.clone(),
        head: out.into_bytes(),
    }
}

/// Pure: a response head from the remote as libgit2 may see it. A redirect stays only when it
/// stays on the remote's origin (its location is pointed at the proxy again, so the next
/// request is guarded too); any other redirect is an error naming the other origin.
pub fn rewrite_response(
    head: &[u8],
    remote: &url::Url,
    proxy_base: &str,
) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(head);
    let status_line = text.split("\r\n").next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !(300..400).contains(&status) || status == 304 {
        return Ok(head.to_vec());
    }
    let mut out = String::new();
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("location") {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        }
        let target = remote
            .join(value.trim())
            .map_err(|_| "the remote redirected to an unusable location".to_string())?;
        if target.origin() != remote.origin() {
            return Err(format!(
                "the remote redirected to {}; cross-origin redirects are not followed and no \
                 credential is sent there",
                target.origin().ascii_serialization()
            ));
        }
        let mut rel = target.path().to_string();
        if let Some(q) = target.query() {
            rel.push('?');
            rel.push_str(q);
        }
        out.push_str(&format!(
            "Location: {}{rel}\r\n",
            proxy_base.trim_end_matches('/')
        ));
    }
    // `split` yields two empty strings for the terminator; keep exactly one blank line.
    while out.ends_with("\r\n\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    Ok(out.into_bytes())
}

/// A running per-operation proxy (see the module docs).
#[derive(Debug)]
pub struct GitProxy {
    addr: SocketAddr,
    refusals: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitProxy {
    /// Starts a proxy that lets libgit2 reach `allowed` only, through `guard`.
    pub async fn start(guard: Guard, allowed: Authority) -> std::io::Result<GitProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = refusals.clone();
        let base = format!("http://{addr}");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (guard, allowed, seen, base) =
                    (guard.clone(), allowed.clone(), seen.clone(), base.clone());
                // Connections die with the proxy: the JoinSet aborts them when dropped.
                conns.spawn(async move {
                    let _ = serve(stream, &guard, &allowed, &base, &seen).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(GitProxy {
            addr,
            refusals,
            task,
        })
    }

    /// `http://127.0.0.1:<port>` for `git2::ProxyOptions::url` (https remotes).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A plain-http remote URL pointed at the proxy (same path and query).
    pub fn reverse_url(&self, remote: &url::Url) -> String {
        let mut u = remote.clone();
        let _ = u.set_ip_host(self.addr.ip());
        let _ = u.set_port(Some(self.addr.port()));
        u.to_string()
    }

    /// The first refusal, if the proxy refused anything.
    pub fn refusal(&self) -> Option<String> {
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first()
            .cloned()
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    read_head_from(stream).await
}

async fn refuse(client: &mut TcpStream, seen: &Mutex<Vec<String>>, reason: String) {
    tracing::info!(reason = %reason, "git proxy refused a connection");
    let body = format!("{reason}\n");
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Recorded before libgit2 can see the 403: the caller reads the refusal as soon as the
    // fetch fails (otherwise a guard refusal could be reported as an authentication failure).
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(reason);
    let _ = client.write_all(resp.as_bytes()).await;
}

async fn connect(guard: &Guard, to: &Authority) -> Result<TcpStream, String> {
    let addrs = guard
        .resolve(&to.host, to.port)
        .await
        .map_err(|e| match e {
            ResolveError::Refused(r) => r.to_string(),
            ResolveError::Lookup(m) => m,
        })?;
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr}: timed out"),
        }
    }
    Err(last)
}

async fn serve(
    mut client: TcpStream,
    guard: &Guard,
    allowed: &Authority,
    proxy_base: &str,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (head, rest) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client))
        .await
        .map_err(|_| std::io::Error::other("head timeout"))??;
    let (to, first): (Authority, Option<Vec<u8>>) = match decide(&head, allowed) {
        Plan::Refuse(reason) => {
            refuse(&mut client, seen, reason).await;
            return Ok(());
        }
        Plan::Tunnel(to) => (to, None),
        Plan::Forward { to, head } => (to, Some(head)),
    };
    let mut upstream = match connect(guard, &to).await {
        Ok(s) => s,
        Err(reason) => {
            // A guard refusal is recorded; a plain connection failure is a 502.
            if guard_refused(guard, &to).await {
                refuse(&mut client, seen, reason).await;
            } else {
                let body = format!("{reason}\n");
                let resp = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(resp.as_bytes()).await;
            }
            return Ok(());
        }
    };
    let Some(head) = first else {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        if !rest.is_empty() {
            upstream.write_all(&rest).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    };
    // Plain http, one request per connection (`Connection: close`): the request goes up as it
    // is; the response head is checked for redirects before libgit2 sees it.
    upstream.write_all(&head).await?;
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    let (mut client_read, mut client_write) = client.split();
    let (mut up_read, mut up_write) = upstream.split();
    let request_body = async {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
    };
    let remote = url::Url::parse(&format!("http://{}/", host_header(&to, 80)))
        .map_err(std::io::Error::other)?;
    let response = async {
        let (resp_head, resp_rest) = read_head_from(&mut up_read).await?;
        match rewrite_response(&resp_head, &remote, proxy_base) {
            Ok(h) => {
                client_write.write_all(&h).await?;
                client_write.write_all(&resp_rest).await?;
                tokio::io::copy(&mut up_read, &mut client_write).await?;
            }
            Err(reason) => {
                tracing::info!(reason = %reason, "git proxy refused a redirect");
                let body = format!("{reason}\n");
                let resp = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                // Recorded before libgit2 can see the 403 (as in `refuse`): otherwise the caller
                // may read the operation's error first and report it as AuthFailed.
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(reason);
                client_write.write_all(resp.as_bytes()).await?;
            }
        }
        client_write.shutdown().await?;
        Ok::<(), std::io::Error>(())
    };
    // The response decides when the exchange is over (the server closes after it).
    tokio::select! {
        r = response => r?,
        () = async { request_body.await; std::future::pending::<()>().await } => {}
    }
    Ok(())
}

async fn read_head_from<R: AsyncReadExt + Unpin>(
    stream: &mut R,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("response head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the guard (not the network) is why `to` could not be reached.
async fn guard_refused(guard: &Guard, to: &Authority) -> bool {
    matches!(
        guard.resolve(&to.host, to.port).await,
        Err(ResolveError::Refused(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Authority {
        Authority {
            host: "git.example".into(),
            port: 443,
        }
    }

    #[test]
    fn parses_authorities() {
        assert_eq!(Authority::parse("git.example:443"), Some(allowed()));
        assert_eq!(
            Authority::parse("[::1]:8080"),
            Some(Authority {
                host: "::1".into(),
                port: 8080
            })
        );
        assert_eq!(Authority::parse("nohost"), None);
        let u = url::Url::parse("http://Git.Example./o/r.git").unwrap();
        assert_eq!(
            Authority::of_url(&u),
            Some(Authority {
                host: "git.example".into(),
                port: 80
            })
        );
    }

    #[test]
    fn connect_only_to_the_allowed_authority() {
        assert_eq!(
            decide(
                b"CONNECT git.example:443 HTTP/1.1\r\nHost: git.example:443\r\n\r\n",
                &allowed()
            ),
            Plan::Tunnel(allowed())
        );
        for other in ["evil.example:443", "git.example:8443", "169.254.169.254:80"] {
            let head = format!("CONNECT {other} HTTP/1.1\r\n\r\n");
            match decide(head.as_bytes(), &allowed()) {
                Plan::Refuse(r) => assert!(r.contains("cross-origin"), "{r}"),
                p => panic!("{other}: {p:?}"),
            }
        }
    }

    #[test]
    fn origin_form_is_forwarded_with_host_and_connection_rewritten() {
        let a = Authority {
            host: "127.0.0.1".into(),
            port: 8080,
        };
        let head = b"GET /o/r.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1:5555\r\nConnection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nAuthorization: Basic dG9rZW4=\r\n\r\n";
        match decide(head, &a) {
            Plan::Forward { to, head } => {
                assert_eq!(to, a);
                let text = String::from_utf8(head).unwrap();
                assert!(
                    text.starts_with(
                        "GET /o/r.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n"
                    ),
                    "{text}"
                );
                assert!(
                    !text.contains("5555") && !text.contains("keep-alive"),
                    "{text}"
                );
                assert!(!text.contains("Proxy-Authorization"), "{text}");
                assert!(text.contains("Authorization: Basic"), "{text}");
                assert!(text.ends_with("\r\n\r\n") && !text.ends_with("\r\n\r\n\r\n"));
            }
            p => panic!("{p:?}"),
        }
        // An absolute-form request to another origin is refused before it goes anywhere.
        let evil =
            b"GET http://127.0.0.1:9999/steal HTTP/1.1\r\nAuthorization: Basic dG9rZW4=\r\n\r\n";
        match decide(evil, &a) {
            Plan::Refuse(r) => assert!(r.contains("cross-origin"), "{r}"),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn redirects_are_kept_on_the_origin_or_refused() {
        let remote = url::Url::parse("http://git.example/").unwrap();
        let base = "http://127.0.0.1:4000";
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(rewrite_response(ok, &remote, base).unwrap(), ok.to_vec());
        let same = b"HTTP/1.1 301 Moved\r\nLocation: http://git.example/o/r2.git/info/refs?service=git-upload-pack\r\n\r\n";
        let text = String::from_utf8(rewrite_response(same, &remote, base).unwrap()).unwrap();
        assert!(
            text.contains(
                "Location: http://127.0.0.1:4000/o/r2.git/info/refs?service=git-upload-pack\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n") && !text.ends_with("\r\n\r\n\r\n"));
        let relative = b"HTTP/1.1 302 Found\r\nLocation: /o/r2.git/info/refs\r\n\r\n";
        assert!(
            String::from_utf8(rewrite_response(relative, &remote, base).unwrap())
                .unwrap()
                .contains("Location: http://127.0.0.1:4000/o/r2.git/info/refs")
        );
        let evil = b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest?x=1\r\n\r\n";
        let e = rewrite_response(evil, &remote, base).unwrap_err();
        assert!(
            e.contains("http://169.254.169.254;") && !e.contains("latest"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refuses_a_guarded_target_and_records_why() {
        // The allowed authority itself is on loopback, which the default guard refuses.
        let proxy = GitProxy::start(
            Guard::default(),
            Authority {
                host: "127.0.0.1".into(),
                port: 9,
            },
        )
        .await
        .unwrap();
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        let why = proxy.refusal().expect("recorded");
        assert!(why.contains("loopback"), "{why}");
    }
}
