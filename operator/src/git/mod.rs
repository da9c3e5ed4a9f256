//! git2-based remote access: `ls-remote` (branches, default branch) and shallow fetches of one
//! commit's files for preview templates.
//!
//! Flow:
//! - [`ls_remote`] / [`default_branch`] connect a detached remote (no repository on disk), list
//!   the advertised refs and the `HEAD` symref, and disconnect.
//! - [`GitCache::fetch_tree_scoped`] keeps one bare repository per (tenant namespace,
//!   credential, remote URL) under the cache directory ([`CacheScope`]): a commit another tenant
//!   — or another credential — fetched is never served to a caller whose own credential did not
//!   fetch it, so a cache hit never skips the caller's own authentication. If the wanted commit
//!   is already in the caller's cache (commits are immutable) nothing is fetched; otherwise
//!   the commit alone is fetched with depth 1 (falling back to fetching an advertised ref that
//!   points at it, for servers that refuse SHA wants). A new cache entry is built in a temporary
//!   directory and renamed into place only on success. Files under `subpath` are then read
//!   straight from the object database — nothing is checked out, so no symlink on disk can be
//!   followed. Work is bounded while it happens: the transfer aborts beyond
//!   [`FetchLimits::max_fetch_bytes`] / [`FetchLimits::max_fetch_objects`] (transfer progress
//!   callback), and the tree walk stops at the first entry beyond the file/byte limits (sizes
//!   read from object headers; blobs are loaded only after the walk fits). Finally whole
//!   repository caches are evicted least-recently-used first beyond a count/size budget.
//! - Everything git2 does is blocking and runs on `tokio::task::spawn_blocking`.
//!
//! Outbound guard (`crate::net`), when the cache or call has one: http(s) remotes go through a
//! per-operation loopback [`GitProxy`] (a CONNECT tunnel for https; for plain http the URL is
//! pointed at the proxy) that only reaches the remote's own authority, at an address the
//! guard checked when connecting; ssh and `git://` remotes are resolved once
//! through the guard and the URL is pinned to the checked address (host keys are still
//! matched against the original host name); local paths are refused. libgit2 follows no
//! off-site redirect, and the credential callback only answers for the remote's own host.
//!
//! Authentication: tokens and basic auth through the credential callback (never in the URL),
//! SSH keys from memory with the server's host key checked against the Secret's `known_hosts`
//! (unknown hosts are refused). TLS verification is never disabled; a private CA (`caSecretRef`)
//! can additionally vouch for a server certificate that the system roots reject.
//!
//! Errors map into forge categories: authentication → `AuthFailed`, network → `Transient`,
//! missing commit/path → `NotFound`, rejected host key/certificate, unsafe trees or caps →
//! `InvalidConfig`, guard refusals → `OutboundRefused`.

pub mod known_hosts;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, ObjectType, Oid, ProxyOptions, RemoteCallbacks, RemoteRedirect, Repository,
    TreeWalkMode, TreeWalkResult,
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::forge::{Branch, Credentials, ForgeError};
use crate::net::{Authority, GitProxy, Guard, ResolveError};
use known_hosts::{HostKeyVerdict, KnownHosts};

/// Username sent with a token over https. GitHub (installation tokens), GitLab (personal,
/// project and group tokens) and Gitea all accept a token as the password of any username.
const TOKEN_USERNAME: &str = "x-access-token";

/// How long one `ls-remote` may take before the caller gets a `Transient` error.
pub const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Advertised refs of a remote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    /// Target of the `HEAD` symref, e.g. `refs/heads/main`, when the server advertises it.
    pub head: Option<String>,
    /// `(refname, sha)` pairs, including `HEAD`.
    pub refs: Vec<(String, String)>,
}

/// One file of a fetched tree.
#[derive(Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Path relative to the requested subpath, `/`-separated.
    pub path: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

impl std::fmt::Debug for TreeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeFile")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .field("executable", &self.executable)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Remove `user:password@` from a URL for messages.
fn sanitize_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() || !u.username().is_empty() => {
            let _ = u.set_password(None);
            if u.scheme() != "ssh" {
                let _ = u.set_username("");
            }
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn map_git_error(e: &git2::Error, url: &str) -> ForgeError {
    let clean = sanitize_url(url);
    let msg = e.message().replace(url, &clean);
    let text = format!("git {clean}: {msg}");
    let lower = msg.to_ascii_lowercase();
    match e.code() {
        ErrorCode::Auth => return ForgeError::auth(text),
        ErrorCode::Certificate => return ForgeError::invalid_config(text),
        ErrorCode::NotFound => return ForgeError::not_found(text),
        _ => {}
    }
    if lower.contains("401") || lower.contains("403") || lower.contains("authentication") {
        return ForgeError::auth(text);
    }
    if lower.contains("404")
        || lower.contains("not found")
        || lower.contains("does not appear to be a git repository")
        || lower.contains("failed to resolve path")
        || lower.contains("could not find repository")
    {
        return ForgeError::not_found(text);
    }
    match e.class() {
        ErrorClass::Net
        | ErrorClass::Ssl
        | ErrorClass::Os
        | ErrorClass::Ssh
        | ErrorClass::Http
        | ErrorClass::Callback => ForgeError::transient(text),
        _ => ForgeError::invalid_response(text),
    }
}

fn io_error(context: &str, e: &std::io::Error) -> ForgeError {
    ForgeError::transient(format!("{context}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Callbacks: credentials, host keys, certificates, deadline
// ---------------------------------------------------------------------------------------------

fn url_host_port(url: &str) -> (Option<String>, Option<u16>) {
    if url.contains("://") {
        match url::Url::parse(url) {
            Ok(u) => (u.host_str().map(str::to_ascii_lowercase), u.port()),
            Err(_) => (None, None),
        }
    } else {
        // scp-like user@host:path
        let before = url.split_once(':').map_or(url, |(b, _)| b);
        let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
        (Some(host.to_ascii_lowercase()), None)
    }
}

/// Whether `der` chains to a certificate in `ca_pem` and is valid for `host`.
fn verified_by_private_ca(der: &[u8], host: &str, ca_pem: &[u8]) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return false;
    };
    verifier
        .verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
        .is_ok()
}

/// Where one git operation connects and with what (see [`Route`] for `connect_url`/`proxy`).
#[derive(Clone, Copy)]
struct Access<'a> {
    /// The remote as configured: messages, the credential host check, `known_hosts` lookups.
    url: &'a str,
    /// What libgit2 connects to: `url`, or `url` pinned to a checked address (ssh, git://).
    connect_url: &'a str,
    /// `http://127.0.0.1:<port>` of the operation's [`GitProxy`] (http(s) under a guard).
    proxy: Option<&'a str>,
    creds: &'a Credentials,
    ca_pem: Option<&'a [u8]>,
    kh: Option<&'a KnownHosts>,
}

/// Bounds checked by the transfer progress callback while fetching.
#[derive(Clone)]
struct Transfer {
    deadline: Instant,
    max_bytes: u64,
    max_objects: usize,
    /// Set when a cap (not the network) aborted the transfer.
    tripped: Arc<Mutex<Option<String>>>,
}

impl Transfer {
    fn new(limits: &FetchLimits) -> Self {
        Transfer {
            deadline: Instant::now() + limits.timeout,
            max_bytes: limits.max_fetch_bytes,
            max_objects: limits.max_fetch_objects,
            tripped: Arc::default(),
        }
    }

    fn tripped(&self) -> Option<String> {
        self.tripped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Pure: whether the transfer may go on after `bytes` and `objects` (the larger of what the
    /// server announced and what arrived).
    fn verdict(&self, bytes: u64, objects: usize) -> Result<(), String> {
        if objects > self.max_objects {
            return Err(format!(
                "the fetch holds more than {} objects (limit)",
                self.max_objects
            ));
        }
        if bytes > self.max_bytes {
            return Err(format!(
                "the fetch exceeded {} bytes (limit)",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

fn same_host(a: &str, b: &str) -> bool {
    let (ha, pa) = url_host_port(a);
    let (hb, pb) = url_host_port(b);
    ha.is_some() && ha == hb && pa == pb
}

fn callbacks<'a>(access: &Access<'a>, transfer: Option<&Transfer>) -> RemoteCallbacks<'a> {
    let Access {
        url,
        connect_url,
        creds,
        ca_pem,
        kh: known_hosts,
        ..
    } = *access;
    let mut cb = RemoteCallbacks::new();
    let mut attempts = 0u32;
    cb.credentials(move |asking, username_from_url, allowed| {
        attempts += 1;
        // libgit2 asks again after a rejection; stop instead of looping.
        if attempts > 3 {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "credentials were rejected by the remote",
            ));
        }
        // A redirect may move the request to another host; the credential stays with ours.
        if !is_local(connect_url) && !same_host(asking, connect_url) {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                format!(
                    "refusing to send credentials to {}: not the remote's host",
                    url_host_port(asking).0.unwrap_or_default()
                ),
            ));
        }
        let user = username_from_url.unwrap_or("git");
        match creds {
            Credentials::Token(t) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                Cred::userpass_plaintext(TOKEN_USERNAME, t.expose_secret())
            }
            Credentials::Basic { username, password }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, password.expose_secret())
            }
            Credentials::Ssh { identity, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                Cred::ssh_key_from_memory(user, None, identity.expose_secret(), None)
            }
            _ if allowed.contains(CredentialType::USERNAME) => Cred::username(user),
            Credentials::Anonymous => Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "the remote requires authentication and no credentials are configured",
            )),
            other => Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                format!(
                    "the remote asked for {allowed:?} but the credential is {}",
                    other.type_name()
                ),
            )),
        }
    });
    // Host keys are pinned by name: a URL pinned to an address still checks the original host.
    let (original_host, port) = url_host_port(url);
    cb.certificate_check(move |cert, host| {
        let host = original_host.as_deref().unwrap_or(host);
        if let Some(hostkey) = cert.as_hostkey() {
            let Some(kh) = known_hosts else {
                return Err(git2::Error::new(
                    ErrorCode::Certificate,
                    ErrorClass::Callback,
                    format!("refusing SSH host {host}: no known_hosts configured"),
                ));
            };
            let verdict = kh.check(host, port, |pinned| match hostkey.hostkey() {
                Some(raw) => raw == pinned,
                None => hostkey
                    .hash_sha256()
                    .is_some_and(|h| h.as_slice() == Sha256::digest(pinned).as_slice()),
            });
            return match verdict {
                HostKeyVerdict::Trusted => Ok(CertificateCheckStatus::CertificateOk),
                other => Err(git2::Error::new(
                    ErrorCode::Certificate,
                    ErrorClass::Callback,
                    format!("refusing SSH host {host}: host key {other:?} in known_hosts"),
                )),
            };
        }
        if let (Some(x509), Some(ca)) = (cert.as_x509(), ca_pem)
            && verified_by_private_ca(x509.data(), host, ca)
        {
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        // libgit2's own verification against the system roots decides.
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    if let Some(t) = transfer {
        let t = t.clone();
        cb.transfer_progress(move |stats| {
            if Instant::now() >= t.deadline {
                return false;
            }
            let objects = stats.total_objects().max(stats.received_objects());
            match t.verdict(stats.received_bytes() as u64, objects) {
                Ok(()) => true,
                Err(why) => {
                    *t.tripped
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                    false
                }
            }
        });
    }
    cb
}

fn proxy_options(access: &Access<'_>) -> ProxyOptions<'static> {
    let mut po = ProxyOptions::new();
    if let Some(p) = access.proxy {
        po.url(p);
    }
    po
}

/// How a guarded operation reaches its remote: through a proxy (http(s)) or at a pinned,
/// checked address (ssh, git://). Holds the proxy alive for the operation.
struct Route {
    connect_url: String,
    /// Whether libgit2 reaches the remote through the proxy as a CONNECT proxy (https).
    tunnel: bool,
    proxy: Option<GitProxy>,
}

impl Route {
    fn direct(url: &str) -> Route {
        Route {
            connect_url: url.to_string(),
            tunnel: false,
            proxy: None,
        }
    }

    fn proxy_url(&self) -> Option<String> {
        self.proxy
            .as_ref()
            .filter(|_| self.tunnel)
            .map(GitProxy::url)
    }

    /// The guard's own message when the proxy refused something during the operation.
    fn refused(&self, url: &str) -> Option<ForgeError> {
        let reason = self.proxy.as_ref()?.refusal()?;
        Some(ForgeError::OutboundRefused {
            message: format!("git {}: {reason}", sanitize_url(url)),
        })
    }
}

/// Pure: `url` with its host replaced by `ip` (ssh://, git:// or scp-like `user@host:path`).
fn pin_url(url: &str, ip: std::net::IpAddr) -> Option<String> {
    let literal = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if url.contains("://") {
        let mut u = url::Url::parse(url).ok()?;
        u.set_ip_host(ip).ok()?;
        return Some(u.to_string());
    }
    let (before, path) = url.split_once(':')?;
    let user = before.rsplit_once('@').map(|(u, _)| u);
    Some(match user {
        Some(user) => format!("{user}@{literal}:{path}"),
        None => format!("{literal}:{path}"),
    })
}

/// Prepares a guarded connection to `url` (see the module docs).
async fn route(url: &str, guard: Option<&Guard>) -> Result<Route, ForgeError> {
    let Some(guard) = guard else {
        return Ok(Route::direct(url));
    };
    let refuse = |why: String| ForgeError::OutboundRefused {
        message: format!("git {}: {why}", sanitize_url(url)),
    };
    if is_local(url) {
        return Err(refuse("local repositories are not reachable".into()));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let parsed = url::Url::parse(url)
            .map_err(|e| ForgeError::invalid_config(format!("git url: {e}")))?;
        let authority = Authority::of_url(&parsed)
            .ok_or_else(|| ForgeError::invalid_config("git url has no host"))?;
        let proxy = GitProxy::start(guard.clone(), authority)
            .await
            .map_err(|e| io_error("starting the git proxy", &e))?;
        // https tunnels through the proxy (CONNECT); plain http is pointed at it, because
        // libgit2 does not send plain-http requests through a proxy (see `crate::net::proxy`).
        let (connect_url, tunnel) = if lower.starts_with("https://") {
            (url.to_string(), true)
        } else {
            (proxy.reverse_url(&parsed), false)
        };
        return Ok(Route {
            connect_url,
            tunnel,
            proxy: Some(proxy),
        });
    }
    let (Some(host), port) = url_host_port(url) else {
        return Err(ForgeError::invalid_config(format!(
            "git url {:?} has no host",
            sanitize_url(url)
        )));
    };
    let port = port.unwrap_or(if lower.starts_with("git://") {
        9418
    } else {
        22
    });
    let addrs = guard.resolve(&host, port).await.map_err(|e| match e {
        ResolveError::Refused(r) => refuse(r.to_string()),
        ResolveError::Lookup(m) => ForgeError::transient(format!("git {}: {m}", sanitize_url(url))),
    })?;
    let ip = addrs[0].ip();
    let connect_url = pin_url(url, ip).ok_or_else(|| {
        ForgeError::invalid_config(format!("git url {:?} cannot be pinned", sanitize_url(url)))
    })?;
    Ok(Route {
        connect_url,
        tunnel: false,
        proxy: None,
    })
}

fn parse_known_hosts(creds: &Credentials) -> Result<Option<KnownHosts>, ForgeError> {
    match creds {
        Credentials::Ssh { known_hosts, .. } => KnownHosts::parse(known_hosts).map(Some),
        _ => Ok(None),
    }
}

async fn blocking<T, F>(what: &'static str, timeout: Duration, f: F) -> Result<T, ForgeError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ForgeError> + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ForgeError::transient(format!("{what} task failed: {join}"))),
        Err(_) => Err(ForgeError::transient(format!(
            "{what} timed out after {timeout:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// ls-remote
// ---------------------------------------------------------------------------------------------

fn ls_remote_blocking(access: &Access<'_>) -> Result<RemoteRefs, ForgeError> {
    let url = access.url;
    let mut remote = git2::Remote::create_detached(access.connect_url).map_err(|e| {
        ForgeError::invalid_config(format!("git url {:?}: {}", sanitize_url(url), e.message()))
    })?;
    let cb = callbacks(access, None);
    let conn = remote
        .connect_auth(Direction::Fetch, Some(cb), Some(proxy_options(access)))
        .map_err(|e| map_git_error(&e, url))?;
    let refs = conn
        .list()
        .map_err(|e| map_git_error(&e, url))?
        .iter()
        .map(|h| (h.name().to_string(), h.oid().to_string()))
        .collect();
    let head = conn
        .default_branch()
        .ok()
        .and_then(|b| b.as_str().map(str::to_string));
    Ok(RemoteRefs { head, refs })
}

/// `git ls-remote` with the `HEAD` symref, through `guard` when given (the operator always
/// gives one; `None` is for tools and tests against local remotes).
pub async fn ls_remote_guarded(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
    guard: Option<&Guard>,
) -> Result<RemoteRefs, ForgeError> {
    let route = route(url, guard).await?;
    let (url_owned, connect, proxy, creds, ca) = (
        url.to_string(),
        route.connect_url.clone(),
        route.proxy_url(),
        creds.clone(),
        ca_pem.map(<[u8]>::to_vec),
    );
    let result = blocking("git ls-remote", LS_REMOTE_TIMEOUT, move || {
        let kh = parse_known_hosts(&creds)?;
        ls_remote_blocking(&Access {
            url: &url_owned,
            connect_url: &connect,
            proxy: proxy.as_deref(),
            creds: &creds,
            ca_pem: ca.as_deref(),
            kh: kh.as_ref(),
        })
    })
    .await;
    match (result, route.refused(url)) {
        (Err(_), Some(refused)) => Err(refused),
        (result, _) => result,
    }
}

/// `git ls-remote` with the `HEAD` symref, without the outbound guard.
pub async fn ls_remote_full(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<RemoteRefs, ForgeError> {
    ls_remote_guarded(url, creds, ca_pem, None).await
}

/// `git ls-remote`: every advertised `(refname, sha)` (without the outbound guard).
pub async fn ls_remote(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<Vec<(String, String)>, ForgeError> {
    Ok(ls_remote_full(url, creds, ca_pem).await?.refs)
}

/// The remote's default branch name (from the `HEAD` symref), without `refs/heads/`.
pub async fn default_branch_guarded(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
    guard: Option<&Guard>,
) -> Result<String, ForgeError> {
    let refs = ls_remote_guarded(url, creds, ca_pem, guard).await?;
    default_branch_of(&refs).ok_or_else(|| {
        ForgeError::not_found(format!(
            "git {}: the remote advertises no HEAD branch (empty repository?)",
            sanitize_url(url)
        ))
    })
}

/// [`default_branch_guarded`] without the outbound guard.
pub async fn default_branch(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<String, ForgeError> {
    default_branch_guarded(url, creds, ca_pem, None).await
}

/// Pure: the default branch from advertised refs; when the server sends no symref, the only
/// branch whose tip equals `HEAD` (ambiguity yields `None`).
pub fn default_branch_of(refs: &RemoteRefs) -> Option<String> {
    if let Some(head) = refs
        .head
        .as_deref()
        .and_then(|h| h.strip_prefix("refs/heads/"))
    {
        return Some(head.to_string());
    }
    let head_sha = refs
        .refs
        .iter()
        .find(|(n, _)| n == "HEAD")
        .map(|(_, s)| s)?;
    let mut candidates = refs
        .refs
        .iter()
        .filter(|(n, s)| s == head_sha && n.starts_with("refs/heads/"));
    let first = candidates.next()?;
    candidates
        .next()
        .is_none()
        .then(|| first.0.trim_start_matches("refs/heads/").to_string())
}

/// Pure: branches from advertised refs.
pub fn branches(refs: &[(String, String)]) -> Vec<Branch> {
    refs.iter()
        .filter_map(|(name, sha)| {
            name.strip_prefix("refs/heads/").map(|b| Branch {
                name: b.to_string(),
                sha: sha.clone(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// fetch_tree
// ---------------------------------------------------------------------------------------------

/// Bounds on what one `fetch_tree` may transfer and return.
#[derive(Clone, Debug)]
pub struct FetchLimits {
    /// Files under the subpath (the walk stops at the first one beyond).
    pub max_files: usize,
    /// Bytes of those files together.
    pub max_total_bytes: u64,
    /// Wall-clock budget for the network transfer.
    pub timeout: Duration,
    /// Bytes one fetch may receive (the pack); checked while it arrives.
    pub max_fetch_bytes: u64,
    /// Objects one fetch may bring (as announced by the server or received).
    pub max_fetch_objects: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_files: 2_000,
            max_total_bytes: 16 * 1024 * 1024,
            timeout: Duration::from_secs(120),
            max_fetch_bytes: 256 * 1024 * 1024,
            max_fetch_objects: 200_000,
        }
    }
}

impl FetchLimits {
    /// The limits the operator uses: the tree walk stops at what the renderer would accept
    /// anyway (its file count and byte limits), so nothing beyond that is read into memory.
    pub fn for_render(render: &crate::render::Limits) -> Self {
        FetchLimits {
            max_files: render.max_files,
            max_total_bytes: render.max_bytes as u64,
            ..FetchLimits::default()
        }
    }
}

/// Whose cache a fetch may use: one bare repository per (tenant namespace, credential,
/// remote). The credential enters as its keyed fingerprint (`Credentials::fingerprint`), so
/// the directory name reveals nothing about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheScope {
    key: String,
}

impl CacheScope {
    /// The scope of `credential` used by namespace `namespace` (for a GitHub App pass the
    /// configured App credential, not the short-lived installation token, so the cache
    /// survives token rotation).
    pub fn new(namespace: &str, credential: &Credentials) -> Self {
        CacheScope {
            key: format!("{namespace}\0{}", credential.fingerprint()),
        }
    }
}

/// Bounds on the on-disk cache.
#[derive(Clone, Debug)]
pub struct CacheLimits {
    pub max_repos: usize,
    pub max_bytes: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_repos: 32,
            max_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// A bounded cache of bare repositories used to read preview templates.
#[derive(Clone, Debug)]
pub struct GitCache {
    dir: PathBuf,
    cache: CacheLimits,
    fetch: FetchLimits,
    /// The outbound guard for fetches; `None` only for tools and tests (see `Context::new`).
    guard: Option<Guard>,
}

const LAST_USED: &str = "pullwarden-last-used";
const TMP_PREFIX: &str = ".tmp-";

/// One lock per repository cache directory, process-wide, so concurrent fetches of the same
/// remote (from any `GitCache` handle) never write one repository at once.
fn repo_lock(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// Pure: a subpath as safe components. Refuses absolute paths and `..`.
pub fn normalize_subpath(subpath: &str) -> Result<Vec<String>, ForgeError> {
    if subpath.starts_with('/') || subpath.contains('\\') || subpath.contains('\0') {
        return Err(ForgeError::invalid_config(format!(
            "path {subpath:?} must be relative to the repository root"
        )));
    }
    let mut out = Vec::new();
    for c in subpath.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(ForgeError::invalid_config(format!(
                    "path {subpath:?} must not contain '..'"
                )));
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Pure: resolve a symlink target relative to the link's directory, staying inside the subtree.
/// `link_dir` is relative to the subtree root.
pub fn resolve_link(link_dir: &[String], target: &str) -> Option<Vec<String>> {
    if target.starts_with('/') || target.contains('\0') {
        return None;
    }
    let mut stack: Vec<String> = link_dir.to_vec();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            c => stack.push(c.to_string()),
        }
    }
    (!stack.is_empty()).then_some(stack)
}

fn valid_sha(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_local(url: &str) -> bool {
    url.starts_with("file://") || url.starts_with('/') || url.starts_with("./")
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn last_used(path: &Path) -> SystemTime {
    fs::metadata(path.join(LAST_USED))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn touch(path: &Path) -> Result<(), ForgeError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join(LAST_USED))
        .map_err(|e| io_error("git cache", &e))?;
    f.set_modified(SystemTime::now())
        .map_err(|e| io_error("git cache", &e))
}

fn fetch_commit(
    repo: &Repository,
    access: &Access<'_>,
    sha: &str,
    oid: Oid,
    limits: &FetchLimits,
) -> Result<(), ForgeError> {
    let url = access.url;
    let transfer = Transfer::new(limits);
    let local_ref = format!("refs/pullwarden/{sha}");
    let fetch = |refspec: &str| -> Result<(), ForgeError> {
        let run = || -> Result<(), git2::Error> {
            let mut remote = repo.remote_anonymous(access.connect_url)?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(callbacks(access, Some(&transfer)));
            fo.proxy_options(proxy_options(access));
            // Same-site redirects only; an off-site one is an error, not a new host for our
            // credential.
            fo.follow_redirects(RemoteRedirect::None);
            fo.download_tags(AutotagOption::None);
            if !is_local(access.connect_url) {
                // The local transport cannot do shallow fetches; it copies objects directly.
                fo.depth(1);
            }
            remote.fetch(&[refspec], Some(&mut fo), None)
        };
        run().map_err(|e| match transfer.tripped() {
            Some(why) => {
                ForgeError::invalid_config(format!("git {}: {why}; refused", sanitize_url(url)))
            }
            None => map_git_error(&e, url),
        })
    };
    let first = fetch(&format!("+{sha}:{local_ref}"));
    if first.is_ok() && repo.find_commit(oid).is_ok() {
        return Ok(());
    }
    if let Err(mapped) = &first {
        // Only "server refused this want" is worth the fallback; auth, TLS and caps are not.
        if matches!(
            mapped,
            ForgeError::AuthFailed { .. } | ForgeError::InvalidConfig { .. }
        ) || transfer.tripped().is_some()
        {
            return Err(first.unwrap_err());
        }
        tracing::debug!(error = %mapped, "fetch by SHA failed; trying advertised refs");
    }
    let refs = ls_remote_blocking(access)?;
    let Some((name, _)) = refs.refs.iter().find(|(n, s)| s == sha && n != "HEAD") else {
        return Err(match first {
            Err(mapped) => {
                if mapped.category() == "Transient" {
                    mapped
                } else {
                    ForgeError::not_found(format!(
                        "git {}: commit {sha} is not fetchable and no ref points at it",
                        sanitize_url(url)
                    ))
                }
            }
            Ok(()) => ForgeError::not_found(format!(
                "git {}: commit {sha} not found on the remote",
                sanitize_url(url)
            )),
        });
    };
    fetch(&format!("+{name}:{local_ref}"))?;
    repo.find_commit(oid).map(|_| ()).map_err(|_| {
        ForgeError::not_found(format!(
            "git {}: ref {name} did not bring commit {sha}",
            sanitize_url(url)
        ))
    })
}

fn read_tree(
    repo: &Repository,
    oid: Oid,
    sub: &[String],
    limits: &FetchLimits,
) -> Result<Vec<TreeFile>, ForgeError> {
    let shown = sub.join("/");
    let internal = |e: git2::Error| {
        ForgeError::invalid_response(format!("git object database: {}", e.message()))
    };
    let commit = repo
        .find_commit(oid)
        .map_err(|_| ForgeError::not_found(format!("commit {oid} is not in the cache")))?;
    let root = commit.tree().map_err(internal)?;
    let tree = if sub.is_empty() {
        root
    } else {
        let entry = root.get_path(Path::new(&shown)).map_err(|_| {
            ForgeError::not_found(format!("path {shown:?} does not exist in commit {oid}"))
        })?;
        match entry.kind() {
            Some(ObjectType::Tree) => repo.find_tree(entry.id()).map_err(internal)?,
            Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                let (size, _) = repo
                    .odb()
                    .and_then(|odb| odb.read_header(entry.id()))
                    .map_err(internal)?;
                if size as u64 > limits.max_total_bytes {
                    return Err(too_big(&shown, limits));
                }
                let blob = repo.find_blob(entry.id()).map_err(internal)?;
                return Ok(vec![TreeFile {
                    path: sub.last().cloned().unwrap_or_default(),
                    bytes: blob.content().to_vec(),
                    executable: entry.filemode() == 0o100755,
                }]);
            }
            _ => {
                return Err(ForgeError::invalid_config(format!(
                    "path {shown:?} in commit {oid} is not a directory or regular file"
                )));
            }
        }
    };

    // Walk with bounds: the callback cannot return our errors, so it records the first
    // problem and aborts; blob sizes come from object headers, contents are read only after
    // the whole walk fits the limits.
    let odb = repo.odb().map_err(internal)?;
    let mut planned: Vec<(String, Oid, i32)> = Vec::new();
    let mut total: u64 = 0;
    let mut visited: usize = 0;
    let max_visits = limits.max_files.saturating_mul(4).max(64);
    let mut problem: Option<ForgeError> = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        visited += 1;
        if visited > max_visits {
            problem = Some(ForgeError::invalid_config(format!(
                "{shown:?} holds more than {max_visits} entries; refused"
            )));
            return TreeWalkResult::Abort;
        }
        let path = format!("{dir}{}", entry.name().unwrap_or_default());
        let (mode, kind) = (entry.filemode(), entry.kind());
        let blob_id = match (kind, mode) {
            (Some(ObjectType::Tree), _) => return TreeWalkResult::Ok,
            (Some(ObjectType::Blob), 0o120000) => {
                match resolve_symlink(repo, &tree, &shown, &path, entry.id()) {
                    Ok(id) => id,
                    Err(e) => {
                        problem = Some(e);
                        return TreeWalkResult::Abort;
                    }
                }
            }
            (Some(ObjectType::Blob), _) => entry.id(),
            (Some(ObjectType::Commit), _) => {
                problem = Some(ForgeError::invalid_config(format!(
                    "{path:?} is a submodule; submodules are not supported in templates"
                )));
                return TreeWalkResult::Abort;
            }
            _ => return TreeWalkResult::Ok,
        };
        if planned.len() >= limits.max_files {
            problem = Some(ForgeError::invalid_config(format!(
                "{shown:?} holds more than {} files; refused",
                limits.max_files
            )));
            return TreeWalkResult::Abort;
        }
        let size = match odb.read_header(blob_id) {
            Ok((size, _)) => size as u64,
            Err(e) => {
                problem = Some(internal(e));
                return TreeWalkResult::Abort;
            }
        };
        total += size;
        if total > limits.max_total_bytes {
            problem = Some(too_big(&shown, limits));
            return TreeWalkResult::Abort;
        }
        planned.push((path, blob_id, mode));
        TreeWalkResult::Ok
    });
    if let Some(p) = problem {
        return Err(p);
    }
    walked.map_err(internal)?;

    let mut out = Vec::with_capacity(planned.len());
    for (path, blob_id, mode) in planned {
        let blob = repo.find_blob(blob_id).map_err(internal)?;
        out.push(TreeFile {
            path,
            bytes: blob.content().to_vec(),
            executable: mode == 0o100755,
        });
    }
    Ok(out)
}

/// A symlink inside the subtree, resolved to the regular file it points to.
fn resolve_symlink(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    shown: &str,
    path: &str,
    link: Oid,
) -> Result<Oid, ForgeError> {
    let internal = |e: git2::Error| {
        ForgeError::invalid_response(format!("git object database: {}", e.message()))
    };
    let target = repo.find_blob(link).map_err(internal)?;
    let target = String::from_utf8_lossy(target.content()).to_string();
    let parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let resolved = resolve_link(&parts[..parts.len() - 1], &target).ok_or_else(|| {
        ForgeError::invalid_config(format!(
            "symlink {path:?} points outside {shown:?} ({target:?}); refused"
        ))
    })?;
    let entry = tree.get_path(Path::new(&resolved.join("/"))).map_err(|_| {
        ForgeError::invalid_config(format!(
            "symlink {path:?} points to a missing file ({target:?})"
        ))
    })?;
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
        return Err(ForgeError::invalid_config(format!(
            "symlink {path:?} must point to a regular file; refused"
        )));
    }
    Ok(entry.id())
}

fn too_big(shown: &str, limits: &FetchLimits) -> ForgeError {
    ForgeError::invalid_config(format!(
        "{shown:?} holds more than {} bytes; refused",
        limits.max_total_bytes
    ))
}

impl GitCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_limits(dir, CacheLimits::default(), FetchLimits::default())
    }

    pub fn with_limits(dir: impl Into<PathBuf>, cache: CacheLimits, fetch: FetchLimits) -> Self {
        GitCache {
            dir: dir.into(),
            cache,
            fetch,
            guard: None,
        }
    }

    /// Every fetch of this cache goes through `guard` (the operator's cache always does).
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn repo_dir(&self, scope: &CacheScope, url: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(scope.key.as_bytes());
        h.update(b"\0");
        h.update(sanitize_url(url).as_bytes());
        let key = hex::encode(h.finalize());
        self.dir.join(&key[..32])
    }

    /// [`Self::fetch_tree_scoped`] in the scope of `creds` alone (no namespace): tools and
    /// tests. Controllers pass the tenant's scope.
    pub async fn fetch_tree(
        &self,
        url: &str,
        sha: &str,
        subpath: &str,
        creds: &Credentials,
        ca_pem: Option<&[u8]>,
    ) -> Result<Vec<TreeFile>, ForgeError> {
        self.fetch_tree_scoped(
            &CacheScope::new("", creds),
            url,
            sha,
            subpath,
            creds,
            ca_pem,
        )
        .await
    }

    /// The files of `sha` under `subpath`, from `scope`'s own cache or fetched with `creds`
    /// (see the module docs).
    pub async fn fetch_tree_scoped(
        &self,
        scope: &CacheScope,
        url: &str,
        sha: &str,
        subpath: &str,
        creds: &Credentials,
        ca_pem: Option<&[u8]>,
    ) -> Result<Vec<TreeFile>, ForgeError> {
        if !valid_sha(sha) {
            return Err(ForgeError::invalid_config(format!(
                "{sha:?} is not a full commit SHA"
            )));
        }
        let sub = normalize_subpath(subpath)?;
        let route = route(url, self.guard.as_ref()).await?;
        let this = self.clone();
        let (scope, url_owned, connect, proxy, sha, creds, ca) = (
            scope.clone(),
            url.to_string(),
            route.connect_url.clone(),
            route.proxy_url(),
            sha.to_ascii_lowercase(),
            creds.clone(),
            ca_pem.map(<[u8]>::to_vec),
        );
        // The transfer aborts itself at the deadline; the extra minute covers reading the tree.
        let timeout = self.fetch.timeout + Duration::from_secs(60);
        let result = blocking("git fetch", timeout, move || {
            let kh = parse_known_hosts(&creds)?;
            let access = Access {
                url: &url_owned,
                connect_url: &connect,
                proxy: proxy.as_deref(),
                creds: &creds,
                ca_pem: ca.as_deref(),
                kh: kh.as_ref(),
            };
            this.fetch_tree_blocking(&scope, &access, &sha, &sub)
        })
        .await;
        match (result, route.refused(url)) {
            (Err(_), Some(refused)) => Err(refused),
            (result, _) => result,
        }
    }

    fn fetch_tree_blocking(
        &self,
        scope: &CacheScope,
        access: &Access<'_>,
        sha: &str,
        sub: &[String],
    ) -> Result<Vec<TreeFile>, ForgeError> {
        let url = access.url;
        let oid = Oid::from_str(sha)
            .map_err(|e| ForgeError::invalid_config(format!("bad SHA {sha:?}: {}", e.message())))?;
        fs::create_dir_all(&self.dir).map_err(|e| io_error("creating git cache dir", &e))?;
        let repo_dir = self.repo_dir(scope, url);
        let lock = repo_lock(&repo_dir);
        let files = {
            let _guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let repo = if repo_dir.join("HEAD").exists() {
                let repo = Repository::open_bare(&repo_dir).map_err(|e| map_git_error(&e, url))?;
                if repo.find_commit(oid).is_err() {
                    fetch_commit(&repo, access, sha, oid, &self.fetch)?;
                }
                repo
            } else {
                let tmp = self
                    .dir
                    .join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
                let built = Repository::init_bare(&tmp)
                    .map_err(|e| map_git_error(&e, url))
                    .and_then(|repo| fetch_commit(&repo, access, sha, oid, &self.fetch))
                    .and_then(|()| {
                        let _ = fs::remove_dir_all(&repo_dir);
                        fs::rename(&tmp, &repo_dir).map_err(|e| io_error("git cache", &e))
                    });
                if let Err(e) = built {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e);
                }
                Repository::open_bare(&repo_dir).map_err(|e| map_git_error(&e, url))?
            };
            touch(&repo_dir)?;
            read_tree(&repo, oid, sub, &self.fetch)?
        };
        self.evict(&repo_dir);
        Ok(files)
    }

    /// Drop whole repository caches, least recently used first, beyond the limits. Never the
    /// one just used, never one another fetch holds. Stale temp dirs (crashes) go too.
    fn evict(&self, keep: &Path) {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut repos: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in read.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(TMP_PREFIX) {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600))
                    .unwrap_or(false);
                if old {
                    let _ = fs::remove_dir_all(&path);
                }
                continue;
            }
            repos.push((last_used(&path), dir_size(&path), path));
        }
        repos.sort_by_key(|(t, _, _)| *t);
        let mut count = repos.len();
        let mut bytes: u64 = repos.iter().map(|(_, s, _)| s).sum();
        for (_, size, path) in repos {
            if count <= self.cache.max_repos && bytes <= self.cache.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            let lock = repo_lock(&path);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            if fs::remove_dir_all(&path).is_ok() {
                count -= 1;
                bytes = bytes.saturating_sub(size);
            }
        }
    }
}

/// [`GitCache::fetch_tree`] with default limits on `cache_dir`.
pub async fn fetch_tree(
    url: &str,
    sha: &str,
    subpath: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
    cache_dir: &Path,
) -> Result<Vec<TreeFile>, ForgeError> {
    GitCache::new(cache_dir)
        .fetch_tree(url, sha, subpath, creds, ca_pem)
        .await
}

#[cfg(test)]
mod tests;
