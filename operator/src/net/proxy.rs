//! A loopback proxy that confines libgit2's HTTP(S) connections to one checked remote.
//!
//! libgit2 resolves and connects by itself and takes no resolver hook, but it honours
//! `git2::ProxyOptions`. Every git operation over http(s) therefore gets its own
//! [`GitProxy`] on `127.0.0.1:<ephemeral>`:
//! - `CONNECT host:port` (https; TLS stays end to end between libgit2 and the server, so the
//!   certificate is still verified for the real host name) and absolute-form requests
//!   (`GET http://host:port/path`, plain http) are accepted only for the one authority the
//!   operation was started for — a redirect to another host (libgit2 follows the first
//!   redirect of a fetch) reaches the proxy and is refused before anything, token included, is
//!   forwarded;
//! - the target is resolved once through the [`Guard`] and the upstream connection goes to a
//!   checked address (no rebinding);
//! - a refusal answers `403` and is recorded, so the caller can report the guard's message
//!   instead of libgit2's generic proxy error.
//!
//! After the first request of a plain-http connection the bytes are relayed as they are:
//! libgit2 opens a new proxy connection whenever the server changes, and later requests on a
//! kept-alive connection stay absolute-form, which origin servers must accept (RFC 9112 §3.2.2).
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
    /// Connect to the authority and send the head rewritten to origin form.
    Forward { to: Authority, head: Vec<u8> },
    /// Answer 403 with this reason.
    Refuse(String),
}

/// Pure: the plan for a request head sent to the proxy, given the one allowed authority.
pub fn decide(head: &[u8], allowed: &Authority) -> Plan {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Plan::Refuse("malformed request line".into());
    };
    let other = |to: &Authority| {
        Plan::Refuse(format!(
            "git remote redirected or connected to {}:{}, but this operation may only reach \
             {}:{} (cross-origin redirects are not followed)",
            to.host, to.port, allowed.host, allowed.port
        ))
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        return match Authority::parse(target) {
            Some(a) if a == *allowed => Plan::Tunnel(a),
            Some(a) => other(&a),
            None => Plan::Refuse(format!("bad CONNECT target {target:?}")),
        };
    }
    let Ok(url) = url::Url::parse(target) else {
        return Plan::Refuse("only CONNECT and absolute-form http requests are proxied".into());
    };
    if url.scheme() != "http" {
        return Plan::Refuse(format!("scheme {} is not proxied", url.scheme()));
    }
    let Some(to) = Authority::of_url(&url) else {
        return Plan::Refuse("request target has no host".into());
    };
    if to != *allowed {
        return other(&to);
    }
    let mut origin_form = url.path().to_string();
    if let Some(q) = url.query() {
        origin_form.push('?');
        origin_form.push_str(q);
    }
    let mut out = format!("{method} {origin_form} {version}\r\n");
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("proxy-authorization:") || lower.starts_with("proxy-connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // `split` left the empty line(s) of the terminator; keep exactly one blank line.
    while out.ends_with("\r\n\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    Plan::Forward {
        to,
        head: out.into_bytes(),
    }
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
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (guard, allowed, seen) = (guard.clone(), allowed.clone(), seen.clone());
                // Connections die with the proxy: the JoinSet aborts them when dropped.
                conns.spawn(async move {
                    let _ = serve(stream, &guard, &allowed, &seen).await;
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

    /// `http://127.0.0.1:<port>` for `git2::ProxyOptions::url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn refuse(client: &mut TcpStream, seen: &Mutex<Vec<String>>, reason: String) {
    tracing::info!(reason = %reason, "git proxy refused a connection");
    let body = format!("{reason}\n");
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(reason);
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
    match first {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?
        }
        Some(head) => upstream.write_all(&head).await?,
    }
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
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
    fn absolute_form_is_rewritten_and_proxy_headers_dropped() {
        let a = Authority {
            host: "127.0.0.1".into(),
            port: 8080,
        };
        let head = b"GET http://127.0.0.1:8080/o/r.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nProxy-Authorization: Basic eA==\r\nAuthorization: Basic dG9rZW4=\r\n\r\n";
        match decide(head, &a) {
            Plan::Forward { to, head } => {
                assert_eq!(to, a);
                let text = String::from_utf8(head).unwrap();
                assert!(
                    text.starts_with("GET /o/r.git/info/refs?service=git-upload-pack HTTP/1.1\r\n"),
                    "{text}"
                );
                assert!(!text.contains("Proxy-Authorization"), "{text}");
                assert!(text.contains("Authorization: Basic"), "{text}");
                assert!(text.ends_with("\r\n\r\n") && !text.ends_with("\r\n\r\n\r\n"));
            }
            p => panic!("{p:?}"),
        }
        // A redirect to another origin is refused before the Authorization header goes out.
        let evil =
            b"GET http://127.0.0.1:9999/steal HTTP/1.1\r\nAuthorization: Basic dG9rZW4=\r\n\r\n";
        assert!(matches!(decide(evil, &a), Plan::Refuse(_)));
        assert!(matches!(
            decide(b"GET /relative HTTP/1.1\r\n\r\n", &a),
            Plan::Refuse(_)
        ));
        assert!(matches!(
            decide(b"GET https://127.0.0.1:8080/ HTTP/1.1\r\n\r\n", &a),
            Plan::Refuse(_)
        ));
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
