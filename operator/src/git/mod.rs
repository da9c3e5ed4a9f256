//! git2-based remote access: `ls-remote` (branches, default branch) and shallow fetches of one
//! commit's files for preview templates.
//!
//! Flow:
//! - [`ls_remote`] / [`default_branch`] connect a detached remote (no repository on disk), list
//!   the advertised refs and the `HEAD` symref, and disconnect.
//! - [`GitCache::fetch_tree`] keeps one bare repository per remote URL under the cache directory.
//!   If the wanted commit is already there (commits are immutable) nothing is fetched; otherwise
//!   the commit alone is fetched with depth 1 (falling back to fetching an advertised ref that
//!   points at it, for servers that refuse SHA wants). A new cache entry is built in a temporary
//!   directory and renamed into place only on success. Files under `subpath` are then read
//!   straight from the object database — nothing is checked out, so no symlink on disk can be
//!   followed — with limits on file count and bytes. Finally whole repository caches are evicted
//!   least-recently-used first beyond a count/size budget.
//! - Everything git2 does is blocking and runs on `tokio::task::spawn_blocking`.
//!
//! Authentication: tokens and basic auth through the credential callback (never in the URL),
//! SSH keys from memory with the server's host key checked against the Secret's `known_hosts`
//! (unknown hosts are refused). TLS verification is never disabled; a private CA (`caSecretRef`)
//! can additionally vouch for a server certificate that the system roots reject.
//!
//! Errors map into forge categories: authentication → `AuthFailed`, network → `Transient`,
//! missing commit/path → `NotFound`, rejected host key/certificate or unsafe trees →
//! `InvalidConfig`.

pub mod known_hosts;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository, TreeWalkMode, TreeWalkResult,
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::forge::{Branch, Credentials, ForgeError};
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

fn callbacks<'a>(
    url: &'a str,
    creds: &'a Credentials,
    ca_pem: Option<&'a [u8]>,
    known_hosts: Option<&'a KnownHosts>,
    deadline: Option<Instant>,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut attempts = 0u32;
    cb.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        // libgit2 asks again after a rejection; stop instead of looping.
        if attempts > 3 {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "credentials were rejected by the remote",
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
    let (_, port) = url_host_port(url);
    cb.certificate_check(move |cert, host| {
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
    if let Some(deadline) = deadline {
        cb.transfer_progress(move |_| Instant::now() < deadline);
    }
    cb
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

fn ls_remote_blocking(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<RemoteRefs, ForgeError> {
    let kh = parse_known_hosts(creds)?;
    let mut remote = git2::Remote::create_detached(url).map_err(|e| {
        ForgeError::invalid_config(format!("git url {:?}: {}", sanitize_url(url), e.message()))
    })?;
    let cb = callbacks(url, creds, ca_pem, kh.as_ref(), None);
    let conn = remote
        .connect_auth(Direction::Fetch, Some(cb), None)
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

/// `git ls-remote` with the `HEAD` symref.
pub async fn ls_remote_full(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<RemoteRefs, ForgeError> {
    let (url, creds, ca) = (url.to_string(), creds.clone(), ca_pem.map(<[u8]>::to_vec));
    blocking("git ls-remote", LS_REMOTE_TIMEOUT, move || {
        ls_remote_blocking(&url, &creds, ca.as_deref())
    })
    .await
}

/// `git ls-remote`: every advertised `(refname, sha)`.
pub async fn ls_remote(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<Vec<(String, String)>, ForgeError> {
    Ok(ls_remote_full(url, creds, ca_pem).await?.refs)
}

/// The remote's default branch name (from the `HEAD` symref), without `refs/heads/`.
pub async fn default_branch(
    url: &str,
    creds: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<String, ForgeError> {
    let refs = ls_remote_full(url, creds, ca_pem).await?;
    default_branch_of(&refs).ok_or_else(|| {
        ForgeError::not_found(format!(
            "git {}: the remote advertises no HEAD branch (empty repository?)",
            sanitize_url(url)
        ))
    })
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

/// Bounds on what one `fetch_tree` may return.
#[derive(Clone, Debug)]
pub struct FetchLimits {
    pub max_files: usize,
    pub max_total_bytes: u64,
    /// Wall-clock budget for the network transfer.
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_files: 2_000,
            max_total_bytes: 16 * 1024 * 1024,
            timeout: Duration::from_secs(120),
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

/// Everything needed to talk to one remote.
#[derive(Clone, Copy)]
struct Access<'a> {
    url: &'a str,
    creds: &'a Credentials,
    ca_pem: Option<&'a [u8]>,
    kh: Option<&'a KnownHosts>,
}

fn fetch_commit(
    repo: &Repository,
    access: &Access<'_>,
    sha: &str,
    oid: Oid,
    timeout: Duration,
) -> Result<(), ForgeError> {
    let Access {
        url,
        creds,
        ca_pem,
        kh,
    } = *access;
    let deadline = Instant::now() + timeout;
    let local_ref = format!("refs/pullwarden/{sha}");
    let fetch = |refspec: &str| -> Result<(), git2::Error> {
        let mut remote = repo.remote_anonymous(url)?;
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(callbacks(url, creds, ca_pem, kh, Some(deadline)));
        fo.download_tags(AutotagOption::None);
        if !is_local(url) {
            // The local transport cannot do shallow fetches; it copies objects directly.
            fo.depth(1);
        }
        remote.fetch(&[refspec], Some(&mut fo), None)
    };
    let first = fetch(&format!("+{sha}:{local_ref}"));
    if first.is_ok() && repo.find_commit(oid).is_ok() {
        return Ok(());
    }
    if let Err(e) = &first {
        let mapped = map_git_error(e, url);
        // Only "server refused this want" is worth the fallback; auth and TLS problems are not.
        if matches!(
            mapped,
            ForgeError::AuthFailed { .. } | ForgeError::InvalidConfig { .. }
        ) {
            return Err(mapped);
        }
        tracing::debug!(error = %mapped, "fetch by SHA failed; trying advertised refs");
    }
    let refs = ls_remote_blocking(url, creds, ca_pem)?;
    let Some((name, _)) = refs.refs.iter().find(|(n, s)| s == sha && n != "HEAD") else {
        return Err(match first {
            Err(e) => {
                let mapped = map_git_error(&e, url);
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
    fetch(&format!("+{name}:{local_ref}")).map_err(|e| map_git_error(&e, url))?;
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
                let blob = repo.find_blob(entry.id()).map_err(internal)?;
                if blob.size() as u64 > limits.max_total_bytes {
                    return Err(too_big(&shown, limits));
                }
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

    // Collect first: the walk callback cannot return our errors.
    let mut entries: Vec<(String, Oid, i32, Option<ObjectType>)> = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        entries.push((
            format!("{dir}{name}"),
            entry.id(),
            entry.filemode(),
            entry.kind(),
        ));
        TreeWalkResult::Ok
    })
    .map_err(internal)?;

    let mut out = Vec::new();
    let mut total: u64 = 0;
    for (path, id, mode, kind) in entries {
        let blob_id = match (kind, mode) {
            (Some(ObjectType::Tree), _) => continue,
            (Some(ObjectType::Blob), 0o120000) => {
                let target = repo.find_blob(id).map_err(internal)?;
                let target = String::from_utf8_lossy(target.content()).to_string();
                let parts: Vec<String> = path.split('/').map(str::to_string).collect();
                let resolved =
                    resolve_link(&parts[..parts.len() - 1], &target).ok_or_else(|| {
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
                entry.id()
            }
            (Some(ObjectType::Blob), _) => id,
            (Some(ObjectType::Commit), _) => {
                return Err(ForgeError::invalid_config(format!(
                    "{path:?} is a submodule; submodules are not supported in templates"
                )));
            }
            _ => continue,
        };
        if out.len() >= limits.max_files {
            return Err(ForgeError::invalid_config(format!(
                "{shown:?} holds more than {} files; refused",
                limits.max_files
            )));
        }
        let blob = repo.find_blob(blob_id).map_err(internal)?;
        total += blob.size() as u64;
        if total > limits.max_total_bytes {
            return Err(too_big(&shown, limits));
        }
        out.push(TreeFile {
            path,
            bytes: blob.content().to_vec(),
            executable: mode == 0o100755,
        });
    }
    Ok(out)
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
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn repo_dir(&self, url: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(sanitize_url(url).as_bytes()));
        self.dir.join(&key[..24])
    }

    /// The files of `sha` under `subpath` (see the module docs).
    pub async fn fetch_tree(
        &self,
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
        let this = self.clone();
        let (url, sha, creds, ca) = (
            url.to_string(),
            sha.to_ascii_lowercase(),
            creds.clone(),
            ca_pem.map(<[u8]>::to_vec),
        );
        // The transfer aborts itself at the deadline; the extra minute covers reading the tree.
        let timeout = self.fetch.timeout + Duration::from_secs(60);
        blocking("git fetch", timeout, move || {
            this.fetch_tree_blocking(&url, &sha, &sub, &creds, ca.as_deref())
        })
        .await
    }

    fn fetch_tree_blocking(
        &self,
        url: &str,
        sha: &str,
        sub: &[String],
        creds: &Credentials,
        ca_pem: Option<&[u8]>,
    ) -> Result<Vec<TreeFile>, ForgeError> {
        let kh = parse_known_hosts(creds)?;
        let access = Access {
            url,
            creds,
            ca_pem,
            kh: kh.as_ref(),
        };
        let oid = Oid::from_str(sha)
            .map_err(|e| ForgeError::invalid_config(format!("bad SHA {sha:?}: {}", e.message())))?;
        fs::create_dir_all(&self.dir).map_err(|e| io_error("creating git cache dir", &e))?;
        let repo_dir = self.repo_dir(url);
        let lock = repo_lock(&repo_dir);
        let files = {
            let _guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let repo = if repo_dir.join("HEAD").exists() {
                let repo = Repository::open_bare(&repo_dir).map_err(|e| map_git_error(&e, url))?;
                if repo.find_commit(oid).is_err() {
                    fetch_commit(&repo, &access, sha, oid, self.fetch.timeout)?;
                }
                repo
            } else {
                let tmp = self
                    .dir
                    .join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
                let built = Repository::init_bare(&tmp)
                    .map_err(|e| map_git_error(&e, url))
                    .and_then(|repo| fetch_commit(&repo, &access, sha, oid, self.fetch.timeout))
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
