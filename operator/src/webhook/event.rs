//! Pure parsing of one delivery (forge, headers, raw body) into a normalized [`ForgeEvent`],
//! and the decision of what the ingress does with it ([`ForgeEvent::route`]).
//!
//! The body is parsed *before* it is authenticated (the repository URLs in it select the
//! secrets to verify with), so parsing is written to be cheap on hostile input: the payload is
//! deserialized into small structs that name only the fields we read, unknown fields are
//! skipped by serde without allocating, and a field of an unexpected JSON type becomes `None`
//! (again skipped without buffering) rather than failing a delivery from a forge version whose
//! shape differs slightly from the documented one.
//!
//! Content types: `application/json` (or no `Content-Type`) is parsed as is. GitHub and Gitea
//! can also be configured to send `application/x-www-form-urlencoded`, where the JSON is the
//! `payload` field; that is supported (the signature still covers the raw form body). Anything
//! else, and form bodies for GitLab (which never sends them), is refused with
//! [`ParseError::UnsupportedContentType`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use http::HeaderMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Forge;

/// At most this many distinct repository URLs are taken from one payload.
pub const MAX_REPOSITORY_URLS: usize = 64;
const MAX_DELIVERY_ID_LEN: usize = 128;
const MAX_EVENT_NAME_LEN: usize = 64;
/// Arrays in payloads (e.g. `repositories` of an installation event) are read up to this length.
const MAX_LIST_LEN: usize = MAX_REPOSITORY_URLS;

/// What a delivery is about, independent of the forge's vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The forge testing the hook (GitHub `ping`).
    Ping,
    /// A pull/merge request was opened, pushed to, labelled, closed, ...
    PullRequest,
    /// A push to a branch or a tag (tags are routed to "ignored").
    Push,
    /// A review or an approval (GitLab MR `approved`/`unapproved`).
    Review,
    /// A comment on an issue or a pull/merge request.
    Comment,
    /// A check run/suite, a commit status, a pipeline or a workflow run.
    CheckOrStatus,
    /// A deployment or a deployment status (GitHub `deployment`/`deployment_status`, GitLab
    /// `Deployment Hook`).
    Deployment,
    /// Anything else, with the forge's event name.
    Other(String),
}

/// A delivery, normalized across forges. Only produced by [`parse`]; it is *not* authenticated
/// until the ingress verified the raw body it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgeEvent {
    pub forge: Forge,
    /// The forge's delivery id (GitHub/Gitea delivery GUID, GitLab event UUID or idempotency key).
    pub delivery_id: String,
    /// The raw event header value (`pull_request`, `Merge Request Hook`, ...).
    pub event_name: String,
    pub kind: EventKind,
    /// Every clone/web/ssh URL of the repository the event belongs to, canonicalized with
    /// [`canonicalize_repo_url`] and de-duplicated, in payload order. Fork (source) repositories
    /// of a pull request are not included: the hook and its secret belong to the target.
    pub repository_urls: Vec<String>,
    /// Pull/merge request number (GitLab: `iid`), when the event concerns one.
    pub pull_request: Option<u64>,
    /// `action` of the payload; for commit statuses the state, for GitLab pipelines the status.
    pub action: Option<String>,
    /// Login of the user who triggered the event.
    pub sender: Option<String>,
    /// Head commit the event refers to, when there is one (never the all-zero SHA).
    pub head_sha: Option<String>,
    /// Git ref of a push (`refs/heads/main`, `refs/tags/v1`) or of a GitLab pipeline.
    pub git_ref: Option<String>,
    /// The event reports a write Pullwarden itself makes: a commit status, check run or GitLab
    /// job named `pullwarden/…` ([`OWN_CHECK_PREFIX`]), a GitLab pipeline made only of such
    /// jobs, or a comment carrying the sticky-comment marker
    /// ([`crate::render::report::COMMENT_MARKER`]).
    pub own_write: bool,
}

/// Commit statuses and check runs whose context/name starts with this are Pullwarden's own.
pub const OWN_CHECK_PREFIX: &str = "pullwarden/";

fn is_own_check(name: Option<&str>) -> bool {
    name.is_some_and(|n| n.starts_with(OWN_CHECK_PREFIX))
}

/// What the ingress does with a verified event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answer `200` and do nothing else.
    Ping,
    /// Sync the Repository objects: something they read from the forge may have changed.
    Sync,
    /// A check finished on the event's `head_sha`: only the previews (and gates) whose head it
    /// is re-evaluate; the Repository is not synced (its pull requests did not change).
    HeadChecks,
    /// The forge echoing one of Pullwarden's own writes (`202 echo`): nothing to do, and
    /// counted apart so the echo traffic is visible.
    Echo,
    /// Nothing Pullwarden reacts to (`202 ignored`).
    Ignore,
}

/// Why a delivery could not be parsed (always answered `400 malformed`, or `415` for
/// [`ParseError::UnsupportedContentType`]). Messages name headers and fields only, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("invalid or repeated header {0}")]
    InvalidHeader(&'static str),
    #[error("unsupported content type: configure the webhook to send application/json")]
    UnsupportedContentType,
    #[error("form-encoded body must have exactly one `payload` field")]
    InvalidForm,
    #[error("invalid JSON payload: {0}")]
    InvalidJson(String),
    #[error("payload has no {0}")]
    MissingField(&'static str),
}

impl ForgeEvent {
    /// Decide what to do with the event:
    /// - pull/merge request changes, reviews, comments on pull requests (`/ok-to-preview`) and
    ///   branch pushes sync the Repository;
    /// - a *finished* check (GitHub `check_run` `completed`, a commit status other than
    ///   `pending`, a `completed` workflow run or Gitea workflow job, a GitLab pipeline or job
    ///   that succeeded, failed, was canceled or skipped) with a head SHA is a
    ///   [`Route::HeadChecks`]: gates and `waitFor.checks` depend on it, the Repository does not;
    /// - echoes of Pullwarden's own writes ([`ForgeEvent::own_write`]) and deployment events
    ///   (Pullwarden reacts to none, and most are its own) are [`Route::Echo`];
    /// - unfinished checks (queued, in progress, `pending`, re-requested), check suites (their
    ///   runs are reported individually), tag pushes, comments on plain issues, installation
    ///   and other events are ignored.
    pub fn route(&self) -> Route {
        let sync = |yes: bool| if yes { Route::Sync } else { Route::Ignore };
        if self.own_write {
            return Route::Echo;
        }
        match &self.kind {
            EventKind::Ping => Route::Ping,
            EventKind::PullRequest | EventKind::Review => Route::Sync,
            EventKind::Comment => sync(self.pull_request.is_some()),
            EventKind::Push => sync(
                self.git_ref
                    .as_deref()
                    .is_some_and(|r| r.starts_with("refs/heads/")),
            ),
            EventKind::CheckOrStatus => {
                let action = self.action.as_deref().unwrap_or_default();
                let finished = match (self.forge, self.event_name.as_str()) {
                    (Forge::Github, "check_run") => action == "completed",
                    (Forge::Github | Forge::Gitea, "status") => {
                        matches!(action, "success" | "failure" | "error" | "warning")
                    }
                    (Forge::Github | Forge::Gitea, "workflow_run")
                    | (Forge::Gitea, "workflow_job") => action == "completed",
                    (Forge::Gitlab, "Pipeline Hook" | "Job Hook") => {
                        matches!(action, "success" | "failed" | "canceled" | "skipped")
                    }
                    _ => false,
                };
                if finished && self.head_sha.is_some() {
                    Route::HeadChecks
                } else {
                    Route::Ignore
                }
            }
            EventKind::Deployment => Route::Echo,
            EventKind::Other(_) => Route::Ignore,
        }
    }
}

/// Canonical form of a repository URL, for matching a payload against Repository objects:
/// `host[:port]/path`, lower-cased, without scheme, credentials, query, `.git` suffix or
/// trailing slash. `git@host:o/r`, `ssh://git@host:2222/o/r.git`, `git://host/o/r` and
/// `https://host/o/r` are all `host/o/r`. Only a non-default *http(s)* port is kept (two web
/// forges on one host are different forges); an ssh/git port is a transport detail and is
/// dropped, so `ssh://git@host:2222/o/r` matches `https://host/o/r`; `www.github.com` is
/// `github.com`. Both sides of the match go through this function (payload URLs here, `spec.url`
/// in `controller::directory`); it is stricter than `forge::canonical_url_of` (which also keys
/// local `git` paths for client caches) and must stay the only matcher.
///
/// The path is lower-cased too: GitHub, GitLab and Gitea resolve owner/repository names
/// case-insensitively, and a match only *selects* candidates; the secret authenticates.
pub fn canonicalize_repo_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // `kept_port`: `Some(default port)` for http(s), whose other ports are kept; `None` for
    // ssh/git, whose port is dropped. `port_allowed` is false for scp-like syntax.
    let (authority, kept_port, port_allowed, path) =
        if let Some((scheme, rest)) = raw.split_once("://") {
            let kept_port = match scheme.to_ascii_lowercase().as_str() {
                "https" => Some("443"),
                "http" => Some("80"),
                "ssh" | "git+ssh" | "ssh+git" | "git" => None,
                _ => return None,
            };
            let (authority, path) = rest.split_once('/')?;
            (authority, kept_port, true, path)
        } else {
            // scp-like `[user@]host:path`: the first ':' (after an IPv6 literal) ends the host,
            // and no '/' may come before it (that would be a relative local path).
            let split = match raw.find("]:") {
                Some(i) => i + 1,
                None => raw.find(':')?,
            };
            let (authority, path) = (&raw[..split], &raw[split + 1..]);
            if authority.contains('/') {
                return None;
            }
            (authority, None, false, path)
        };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_host_port(host_port, port_allowed)?;
    let port = port.filter(|p| kept_port.is_some_and(|default| *p != default));

    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_matches('/');
    let lower = path.to_ascii_lowercase();
    let path = lower.strip_suffix(".git").unwrap_or(&lower);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() || segments.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    let mut out = host.to_ascii_lowercase();
    // GitHub serves (and users paste) `www.github.com` URLs for the same repositories.
    if out == "www.github.com" {
        out = "github.com".to_owned();
    }
    if let Some(port) = port {
        out.push(':');
        out.push_str(port);
    }
    for segment in segments {
        out.push('/');
        out.push_str(segment);
    }
    Some(out)
}

/// Split `host[:port]` (IPv6 literals in brackets); the port is only allowed in URL syntax.
fn split_host_port(host_port: &str, port_allowed: bool) -> Option<(&str, Option<&str>)> {
    let (host, port) = if host_port.starts_with('[') {
        let end = host_port.find(']')?;
        let rest = &host_port[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&host_port[..=end], port)
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':'));
    let port_ok = match port {
        None => true,
        Some(p) => {
            port_allowed && !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        }
    };
    (host_ok && port_ok).then_some((host, port.filter(|p| !p.is_empty())))
}

/// Parse one delivery. Pure: no I/O, no authentication (see [`super::verify`]).
pub fn parse(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<ForgeEvent, ParseError> {
    let (event_header, delivery_headers): (&'static str, &[&'static str]) = match forge {
        Forge::Github => ("X-GitHub-Event", &["X-GitHub-Delivery"]),
        Forge::Gitlab => (
            "X-Gitlab-Event",
            &["X-Gitlab-Event-UUID", "Idempotency-Key"],
        ),
        Forge::Gitea => ("X-Gitea-Event", &["X-Gitea-Delivery"]),
    };
    let event_name =
        single_header(headers, event_header)?.ok_or(ParseError::MissingHeader(event_header))?;
    if event_name.len() > MAX_EVENT_NAME_LEN
        || !event_name
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ParseError::InvalidHeader(event_header));
    }
    let mut delivery_id = None;
    for name in delivery_headers {
        if let Some(value) = single_header(headers, name)? {
            if value.len() > MAX_DELIVERY_ID_LEN || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ParseError::InvalidHeader(name));
            }
            delivery_id = Some(value.to_owned());
            break;
        }
    }
    // Without a delivery id there is nothing to de-duplicate on; every supported forge version
    // sends one (GitLab since 14.8), so its absence means this is not a real delivery.
    let delivery_id = delivery_id.ok_or(ParseError::MissingHeader(delivery_headers[0]))?;

    let json = json_payload(forge, headers, body)?;
    let fields = match forge {
        Forge::Github | Forge::Gitea => parse_hub(forge, event_name, &json)?,
        Forge::Gitlab => parse_gitlab(event_name, &json)?,
    };
    match fields.kind {
        EventKind::PullRequest | EventKind::Review if fields.pull_request.is_none() => {
            return Err(ParseError::MissingField("pull request number"));
        }
        EventKind::Push if fields.git_ref.is_none() => {
            return Err(ParseError::MissingField("ref"));
        }
        _ => {}
    }
    Ok(ForgeEvent {
        forge,
        delivery_id,
        event_name: event_name.to_owned(),
        kind: fields.kind,
        repository_urls: canonical_urls(fields.urls),
        pull_request: fields.pull_request,
        action: fields.action,
        sender: fields.sender,
        head_sha: fields
            .head_sha
            .filter(|s| !s.is_empty() && !s.bytes().all(|b| b == b'0')),
        git_ref: fields.git_ref,
        own_write: fields.own_write,
    })
}

/// One header value: absent or empty → `None`, repeated or not UTF-8 → error (a repeated
/// event or delivery header is ambiguous, and we refuse to guess).
pub(crate) fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, ParseError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ParseError::InvalidHeader(name));
    }
    let value = first
        .to_str()
        .map_err(|_| ParseError::InvalidHeader(name))?
        .trim();
    Ok((!value.is_empty()).then_some(value))
}

fn json_payload<'b>(
    forge: Forge,
    headers: &HeaderMap,
    body: &'b [u8],
) -> Result<Cow<'b, [u8]>, ParseError> {
    let content_type = single_header(headers, "Content-Type")?;
    let mime = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match mime.as_deref() {
        None | Some("application/json") => Ok(Cow::Borrowed(body)),
        Some("application/x-www-form-urlencoded") if forge != Forge::Gitlab => {
            let mut payloads = url::form_urlencoded::parse(body)
                .filter(|(k, _)| k == "payload")
                .map(|(_, v)| v);
            match (payloads.next(), payloads.next()) {
                (Some(payload), None) => Ok(Cow::Owned(payload.into_owned().into_bytes())),
                _ => Err(ParseError::InvalidForm),
            }
        }
        _ => Err(ParseError::UnsupportedContentType),
    }
}

fn canonical_urls(raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in raw.iter().filter_map(|u| canonicalize_repo_url(u)) {
        if out.len() == MAX_REPOSITORY_URLS {
            break;
        }
        if !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// Forge-specific results, before the checks shared by every forge.
struct Fields {
    kind: EventKind,
    urls: Vec<String>,
    pull_request: Option<u64>,
    action: Option<String>,
    sender: Option<String>,
    head_sha: Option<String>,
    git_ref: Option<String>,
    own_write: bool,
}

/// Parse the payload, which must be a JSON object (derived struct deserializers would also
/// accept an array, filling fields by position).
fn from_json<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, ParseError> {
    struct ObjectVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    deserializer
        .deserialize_map(ObjectVisitor(PhantomData))
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| ParseError::InvalidJson(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// GitHub and Gitea (Gitea's payloads follow GitHub's shapes; their event names differ).

fn hub_kind(forge: Forge, name: &str) -> EventKind {
    match (forge, name) {
        (_, "ping") => EventKind::Ping,
        (_, "push") => EventKind::Push,
        (_, "pull_request") => EventKind::PullRequest,
        (_, "issue_comment") => EventKind::Comment,
        (Forge::Github, "pull_request_review") => EventKind::Review,
        (Forge::Github, "pull_request_review_comment") => EventKind::Comment,
        (Forge::Github, "check_run" | "check_suite" | "status" | "workflow_run") => {
            EventKind::CheckOrStatus
        }
        (Forge::Github, "deployment" | "deployment_status") => EventKind::Deployment,
        // Gitea: X-Gitea-Event is `pull_request_approved`/`_rejected` for reviews and
        // `pull_request_comment` for review comments; other `pull_request_*` names
        // (`_sync`, `_label`, `_assign`, ...) are pull request changes.
        (Forge::Gitea, "pull_request_comment" | "pull_request_review_comment") => {
            EventKind::Comment
        }
        (
            Forge::Gitea,
            "pull_request_approved"
            | "pull_request_rejected"
            | "pull_request_review"
            | "pull_request_review_approved"
            | "pull_request_review_rejected",
        ) => EventKind::Review,
        (Forge::Gitea, n) if n.starts_with("pull_request_") => EventKind::PullRequest,
        (Forge::Gitea, "status" | "workflow_run" | "workflow_job") => EventKind::CheckOrStatus,
        (_, other) => EventKind::Other(other.to_owned()),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubPayload {
    action: Scalar,
    number: Scalar,
    #[serde(rename = "ref")]
    git_ref: Scalar,
    after: Scalar,
    sha: Scalar,
    state: Scalar,
    /// Commit status context.
    context: Scalar,
    is_pull: Scalar,
    comment: Obj<HubComment>,
    repository: Obj<HubRepository>,
    repositories: List<HubRepositoryRef>,
    repositories_added: List<HubRepositoryRef>,
    sender: Obj<HubUser>,
    pull_request: Obj<HubPullRequest>,
    issue: Obj<HubIssue>,
    check_run: Obj<HubCheck>,
    check_suite: Obj<HubCheck>,
    workflow_run: Obj<HubCheck>,
    workflow_job: Obj<HubCheck>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubRepository {
    html_url: Scalar,
    clone_url: Scalar,
    ssh_url: Scalar,
    git_url: Scalar,
    svn_url: Scalar,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubRepositoryRef {
    full_name: Scalar,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubUser {
    login: Scalar,
    username: Scalar,
    html_url: Scalar,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubPullRequest {
    number: Scalar,
    head: Obj<HubHead>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubHead {
    sha: Scalar,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubIssue {
    number: Scalar,
    /// Present (an object) only when the issue is a pull request.
    pull_request: Obj<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubCheck {
    head_sha: Scalar,
    name: Scalar,
    pull_requests: List<HubPullRequest>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HubComment {
    body: CarriesMarker,
}

fn parse_hub(forge: Forge, event_name: &str, json: &[u8]) -> Result<Fields, ParseError> {
    let p: HubPayload = from_json(json)?;
    let kind = hub_kind(forge, event_name);
    let pr = p.pull_request.0.as_ref();
    let pr_number = pr.and_then(|pr| pr.number.u64());
    let pr_head = pr
        .and_then(|pr| pr.head.0.as_ref())
        .and_then(|h| h.sha.string());
    let check = p
        .check_run
        .0
        .as_ref()
        .or(p.check_suite.0.as_ref())
        .or(p.workflow_run.0.as_ref())
        .or(p.workflow_job.0.as_ref());

    let (pull_request, head_sha) = match kind {
        EventKind::PullRequest | EventKind::Review => (pr_number.or(p.number.u64()), pr_head),
        EventKind::Comment => {
            let issue_pr = p.issue.0.as_ref().and_then(|issue| {
                let is_pr = issue.pull_request.0.is_some() || p.is_pull.bool() == Some(true);
                is_pr.then(|| issue.number.u64()).flatten()
            });
            (pr_number.or(issue_pr), pr_head)
        }
        EventKind::Push => (None, p.after.string()),
        EventKind::CheckOrStatus => (
            check.and_then(|c| c.pull_requests.0.iter().find_map(|pr| pr.number.u64())),
            check.and_then(|c| c.head_sha.string()).or(p.sha.string()),
        ),
        EventKind::Ping | EventKind::Deployment | EventKind::Other(_) => (None, None),
    };
    let action = p
        .action
        .string()
        .or_else(|| (event_name == "status").then(|| p.state.string()).flatten());
    let own_write = match kind {
        EventKind::Comment => p.comment.0.as_ref().is_some_and(|c| c.body.0),
        EventKind::CheckOrStatus if event_name == "status" => {
            is_own_check(p.context.string().as_deref())
        }
        EventKind::CheckOrStatus => is_own_check(check.and_then(|c| c.name.string()).as_deref()),
        _ => false,
    };

    let mut urls = Vec::new();
    if let Some(repo) = p.repository.0.as_ref() {
        for field in [
            &repo.clone_url,
            &repo.html_url,
            &repo.ssh_url,
            &repo.git_url,
            &repo.svn_url,
        ] {
            urls.extend(field.string());
        }
    } else if let Some(origin) = p
        .sender
        .0
        .as_ref()
        .and_then(|s| s.html_url.string())
        .and_then(|u| url::Url::parse(&u).ok())
        .map(|u| u.origin().ascii_serialization())
    {
        // App-level events (installation, installation_repositories) have no `repository`
        // but list the repositories by full name; the sender's profile URL gives the host
        // (github.com or the GHES instance), so their hooks can still be authenticated.
        for repo in p.repositories.0.iter().chain(&p.repositories_added.0) {
            if let Some(full_name) = repo.full_name.string() {
                urls.push(format!("{origin}/{full_name}"));
            }
        }
    }
    let sender = p
        .sender
        .0
        .as_ref()
        .and_then(|s| s.login.string().or(s.username.string()));
    Ok(Fields {
        kind,
        urls,
        pull_request,
        action,
        sender,
        head_sha,
        git_ref: p.git_ref.string(),
        own_write,
    })
}

// ---------------------------------------------------------------------------------------------
// GitLab

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabPayload {
    project: Obj<LabProject>,
    repository: Obj<LabProject>,
    object_attributes: Obj<LabAttributes>,
    merge_request: Obj<LabMergeRequest>,
    user: Obj<LabUser>,
    user_username: Scalar,
    #[serde(rename = "ref")]
    git_ref: Scalar,
    after: Scalar,
    checkout_sha: Scalar,
    /// Job Hook: the job's SHA, status and name.
    sha: Scalar,
    build_status: Scalar,
    build_name: Scalar,
    /// Pipeline Hook: the pipeline's jobs.
    builds: List<LabBuild>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabBuild {
    name: Scalar,
}

/// URL fields of `project`, `repository` and a merge request's `target`.
#[derive(Default, Deserialize)]
#[serde(default)]
struct LabProject {
    web_url: Scalar,
    git_http_url: Scalar,
    git_ssh_url: Scalar,
    http_url: Scalar,
    ssh_url: Scalar,
    url: Scalar,
    homepage: Scalar,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabAttributes {
    iid: Scalar,
    action: Scalar,
    noteable_type: Scalar,
    status: Scalar,
    sha: Scalar,
    #[serde(rename = "ref")]
    git_ref: Scalar,
    last_commit: Obj<LabCommit>,
    target: Obj<LabProject>,
    /// Note Hook: the comment text (only whether it carries the marker is kept).
    note: CarriesMarker,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabMergeRequest {
    iid: Scalar,
    last_commit: Obj<LabCommit>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabCommit {
    id: Scalar,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabUser {
    username: Scalar,
}

fn parse_gitlab(event_name: &str, json: &[u8]) -> Result<Fields, ParseError> {
    let p: LabPayload = from_json(json)?;
    let attrs = p.object_attributes.0.as_ref();
    let mr = p.merge_request.0.as_ref();
    let attr_action = attrs.and_then(|a| a.action.string());
    let mr_head = mr
        .and_then(|m| m.last_commit.0.as_ref())
        .and_then(|c| c.id.string());

    let (kind, pull_request, action, head_sha, git_ref) = match event_name {
        "Merge Request Hook" => {
            // Approvals arrive as merge request actions; for gates they are reviews.
            let kind = match attr_action.as_deref() {
                Some("approved" | "unapproved" | "approval" | "unapproval") => EventKind::Review,
                _ => EventKind::PullRequest,
            };
            let head = attrs
                .and_then(|a| a.last_commit.0.as_ref())
                .and_then(|c| c.id.string());
            (
                kind,
                attrs.and_then(|a| a.iid.u64()),
                attr_action,
                head,
                None,
            )
        }
        "Push Hook" | "Tag Push Hook" => (
            EventKind::Push,
            None,
            None,
            p.checkout_sha.string().or(p.after.string()),
            p.git_ref.string(),
        ),
        "Note Hook" | "Confidential Note Hook" => {
            let on_mr =
                attrs.and_then(|a| a.noteable_type.string()).as_deref() == Some("MergeRequest");
            let number = if on_mr {
                mr.and_then(|m| m.iid.u64())
            } else {
                None
            };
            (
                EventKind::Comment,
                number,
                attr_action,
                on_mr.then_some(mr_head).flatten(),
                None,
            )
        }
        "Pipeline Hook" => (
            EventKind::CheckOrStatus,
            mr.and_then(|m| m.iid.u64()),
            attrs.and_then(|a| a.status.string()),
            attrs.and_then(|a| a.sha.string()),
            attrs.and_then(|a| a.git_ref.string()),
        ),
        "Job Hook" => (
            EventKind::CheckOrStatus,
            None,
            p.build_status.string(),
            p.sha.string(),
            p.git_ref.string(),
        ),
        "Deployment Hook" => (EventKind::Deployment, None, None, None, None),
        other => (
            EventKind::Other(other.to_owned()),
            None,
            attr_action,
            None,
            None,
        ),
    };

    let own_write = match event_name {
        "Note Hook" | "Confidential Note Hook" => attrs.is_some_and(|a| a.note.0),
        "Job Hook" => is_own_check(p.build_name.string().as_deref()),
        // A pipeline made only of Pullwarden's commit statuses (GitLab turns each into an
        // external job); one that also runs CI jobs is a real check.
        "Pipeline Hook" => {
            !p.builds.0.is_empty()
                && p.builds
                    .0
                    .iter()
                    .all(|b| is_own_check(b.name.string().as_deref()))
        }
        _ => false,
    };
    let mut urls = Vec::new();
    let target = attrs.and_then(|a| a.target.0.as_ref());
    for project in [p.project.0.as_ref(), p.repository.0.as_ref(), target]
        .into_iter()
        .flatten()
    {
        for field in [
            &project.git_http_url,
            &project.web_url,
            &project.git_ssh_url,
            &project.http_url,
            &project.ssh_url,
            &project.url,
            &project.homepage,
        ] {
            urls.extend(field.string());
        }
    }
    let sender = p
        .user
        .0
        .as_ref()
        .and_then(|u| u.username.string())
        .or(p.user_username.string());
    Ok(Fields {
        kind,
        urls,
        pull_request,
        action,
        sender,
        head_sha,
        git_ref,
        own_write,
    })
}

// ---------------------------------------------------------------------------------------------
// Lenient, allocation-free-on-mismatch field types.

/// A JSON scalar read leniently: a value of another type (object, array, float, negative
/// number) becomes [`Scalar::Absent`] and is skipped without being buffered.
#[derive(Default)]
enum Scalar {
    #[default]
    Absent,
    Str(String),
    U64(u64),
    Bool(bool),
}

impl Scalar {
    fn string(&self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn u64(&self) -> Option<u64> {
        match self {
            Scalar::U64(n) => Some(*n),
            Scalar::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(u64::try_from(v).map_or(Scalar::Absent, Scalar::U64))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Absent)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Absent)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Absent)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Absent)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Whether a JSON string contains Pullwarden's sticky-comment marker; the text itself is not
/// kept, and any other JSON type reads as `false`.
#[derive(Default)]
struct CarriesMarker(bool);

impl<'de> Deserialize<'de> for CarriesMarker {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let carries = match Scalar::deserialize(deserializer)? {
            Scalar::Str(text) => text.contains(crate::render::report::COMMENT_MARKER),
            _ => false,
        };
        Ok(CarriesMarker(carries))
    }
}

/// A JSON object read as `T`; any other JSON type becomes `None` (skipped, not buffered).
struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Obj<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Obj<T>, D::Error> {
                Obj::deserialize(d)
            }
            fn visit_none<E: de::Error>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
        }
        deserializer.deserialize_any(ObjVisitor(PhantomData))
    }
}

/// A JSON array of objects read as `T`, keeping at most [`MAX_LIST_LEN`] elements (the rest
/// is skipped); non-arrays and non-object elements are skipped.
struct List<T>(Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::new();
                while items.len() < MAX_LIST_LEN {
                    match seq.next_element::<Obj<T>>()? {
                        Some(Obj(Some(item))) => items.push(item),
                        Some(Obj(None)) => {}
                        None => return Ok(List(items)),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(List(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<List<T>, D::Error> {
                List::deserialize(d)
            }
            fn visit_none<E: de::Error>(self) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn canonical_url_forms_agree() {
        let want = Some("github.com/codertocat/hello-world".to_owned());
        for url in [
            "https://github.com/Codertocat/Hello-World",
            "https://github.com/Codertocat/Hello-World.git",
            "https://github.com/Codertocat/Hello-World/",
            "http://GitHub.com/Codertocat/Hello-World.git/",
            "https://user:p%40ss@github.com/Codertocat/Hello-World.git",
            "https://github.com:443/Codertocat/Hello-World",
            "git@github.com:Codertocat/Hello-World.git",
            "github.com:Codertocat/Hello-World",
            "ssh://git@github.com/Codertocat/Hello-World.git",
            "ssh://git@github.com:22/Codertocat/Hello-World.git",
            "git://github.com/Codertocat/Hello-World.git",
            "https://github.com/Codertocat/Hello-World?tab=readme#top",
            "https://www.github.com/Codertocat/Hello-World",
            "  https://github.com.//Codertocat//Hello-World  ",
        ] {
            assert_eq!(canonicalize_repo_url(url), want, "{url}");
        }
    }

    #[test]
    fn canonical_url_keeps_non_default_ports_and_subgroups() {
        assert_eq!(
            canonicalize_repo_url("http://localhost:3000/gitea/webhooks.git").as_deref(),
            Some("localhost:3000/gitea/webhooks")
        );
        assert_eq!(
            canonicalize_repo_url("ssh://gitea@localhost:2222/gitea/webhooks.git").as_deref(),
            Some("localhost/gitea/webhooks")
        );
        assert_eq!(
            canonicalize_repo_url("http://localhost:80/gitea/webhooks").as_deref(),
            Some("localhost/gitea/webhooks")
        );
        assert_eq!(
            canonicalize_repo_url("https://gitlab.example.com/group/sub/project.git").as_deref(),
            Some("gitlab.example.com/group/sub/project")
        );
        assert_eq!(
            canonicalize_repo_url("ssh://git@gitea.example.com:2222/o/r.git"),
            canonicalize_repo_url("https://gitea.example.com/o/r")
        );
        assert_eq!(
            canonicalize_repo_url("git@[::1]:o/r.git").as_deref(),
            Some("[::1]/o/r")
        );
        assert_eq!(
            canonicalize_repo_url("https://[::1]:8443/o/r").as_deref(),
            Some("[::1]:8443/o/r")
        );
        assert_ne!(
            canonicalize_repo_url("http://localhost:3000/o/r"),
            canonicalize_repo_url("http://localhost:3001/o/r")
        );
    }

    #[test]
    fn canonical_url_rejects_non_repository_strings() {
        for url in [
            "",
            "https://github.com",
            "https://github.com/",
            "https://github.com/.git",
            "ftp://github.com/o/r",
            "file:///srv/git/o/r",
            "./relative/path:x",
            "https://github.com/o/../r",
            "https://git hub.com/o/r",
            "https://github.com:port/o/r",
            "https://github.com:99999999/o/r",
        ] {
            assert_eq!(canonicalize_repo_url(url), None, "{url:?}");
        }
    }

    #[test]
    fn missing_or_repeated_headers_are_malformed() {
        let body = br#"{"zen":"x","repository":{"html_url":"https://github.com/o/r"}}"#;
        assert_eq!(
            parse(Forge::Github, &headers(&[("X-GitHub-Delivery", "d")]), body),
            Err(ParseError::MissingHeader("X-GitHub-Event"))
        );
        assert_eq!(
            parse(Forge::Github, &headers(&[("X-GitHub-Event", "ping")]), body),
            Err(ParseError::MissingHeader("X-GitHub-Delivery"))
        );
        let repeated = headers(&[
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "d"),
        ]);
        assert_eq!(
            parse(Forge::Github, &repeated, body),
            Err(ParseError::InvalidHeader("X-GitHub-Event"))
        );
        let long_id = "a".repeat(MAX_DELIVERY_ID_LEN + 1);
        let h = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Delivery", &long_id)]);
        assert_eq!(
            parse(Forge::Gitea, &h, body),
            Err(ParseError::InvalidHeader("X-Gitea-Delivery"))
        );
    }

    #[test]
    fn gitlab_delivery_id_falls_back_to_idempotency_key() {
        let body = br#"{"object_kind":"push","ref":"refs/heads/main","project":{"web_url":"https://gitlab.com/g/p"}}"#;
        let h = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("Idempotency-Key", "key-1"),
        ]);
        assert_eq!(parse(Forge::Gitlab, &h, body).unwrap().delivery_id, "key-1");
        let h = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Event-UUID", "uuid-1"),
            ("Idempotency-Key", "key-1"),
        ]);
        assert_eq!(
            parse(Forge::Gitlab, &h, body).unwrap().delivery_id,
            "uuid-1"
        );
        let h = headers(&[("X-Gitlab-Event", "Push Hook")]);
        assert_eq!(
            parse(Forge::Gitlab, &h, body),
            Err(ParseError::MissingHeader("X-Gitlab-Event-UUID"))
        );
    }

    #[test]
    fn bad_json_and_missing_required_fields_are_malformed() {
        let h = headers(&[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "d"),
        ]);
        assert!(matches!(
            parse(Forge::Github, &h, b"{not json"),
            Err(ParseError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(Forge::Github, &h, b"[1,2]"),
            Err(ParseError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(Forge::Github, &h, br#"{"action":"opened"} trailing"#),
            Err(ParseError::InvalidJson(_))
        ));
        assert_eq!(
            parse(Forge::Github, &h, br#"{"action":"opened"}"#),
            Err(ParseError::MissingField("pull request number"))
        );
        let h = headers(&[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d")]);
        assert_eq!(
            parse(Forge::Github, &h, br#"{"after":"abc"}"#),
            Err(ParseError::MissingField("ref"))
        );
    }

    #[test]
    fn unexpected_json_types_are_tolerated() {
        let h = headers(&[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "d"),
        ]);
        let body = br#"{"action":7,"number":"5","sender":"someone","pull_request":[1,{"a":2}],
            "repository":{"html_url":{"nested":[1,2,3]},"clone_url":"https://github.com/o/r.git"}}"#;
        let e = parse(Forge::Github, &h, body).unwrap();
        assert_eq!(e.pull_request, Some(5));
        assert_eq!(e.action, None);
        assert_eq!(e.sender, None);
        assert_eq!(e.repository_urls, vec!["github.com/o/r".to_owned()]);
    }

    #[test]
    fn form_encoded_payload_is_supported_for_github_and_gitea_only() {
        let json = r#"{"zen":"z","repository":{"html_url":"https://github.com/o/r"}}"#;
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", json)
            .finish();
        let mut h = headers(&[
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "d"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]);
        let e = parse(Forge::Github, &h, body.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Ping);
        assert_eq!(e.repository_urls, vec!["github.com/o/r".to_owned()]);

        assert_eq!(
            parse(Forge::Github, &h, b"other=1"),
            Err(ParseError::InvalidForm)
        );
        h.insert("Content-Type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            parse(Forge::Github, &h, json.as_bytes()),
            Err(ParseError::UnsupportedContentType)
        );
        h.insert(
            "Content-Type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(parse(Forge::Github, &h, json.as_bytes()).is_ok());

        let h = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Event-UUID", "u"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]);
        assert_eq!(
            parse(Forge::Gitlab, &h, body.as_bytes()),
            Err(ParseError::UnsupportedContentType)
        );
    }

    #[test]
    fn gitea_event_names_map_to_kinds() {
        for (name, kind) in [
            ("pull_request", EventKind::PullRequest),
            ("pull_request_sync", EventKind::PullRequest),
            ("pull_request_label", EventKind::PullRequest),
            ("pull_request_approved", EventKind::Review),
            ("pull_request_rejected", EventKind::Review),
            ("pull_request_comment", EventKind::Comment),
            ("issue_comment", EventKind::Comment),
            ("status", EventKind::CheckOrStatus),
            ("create", EventKind::Other("create".into())),
            ("check_suite", EventKind::Other("check_suite".into())),
        ] {
            assert_eq!(hub_kind(Forge::Gitea, name), kind, "{name}");
        }
        assert_eq!(
            hub_kind(Forge::Github, "pull_request_sync"),
            EventKind::Other("pull_request_sync".into())
        );
    }

    #[test]
    fn gitea_comment_on_pull_request_routes_to_act() {
        let h = headers(&[
            ("X-Gitea-Event", "issue_comment"),
            ("X-Gitea-Delivery", "d"),
        ]);
        let body = br#"{"action":"created","issue":{"number":3,"pull_request":null},"is_pull":true,
            "repository":{"clone_url":"http://localhost:3000/o/r.git"},"sender":{"login":"u"}}"#;
        let e = parse(Forge::Gitea, &h, body).unwrap();
        assert_eq!(
            (e.kind.clone(), e.pull_request, e.route()),
            (EventKind::Comment, Some(3), Route::Sync)
        );
        let plain =
            br#"{"action":"created","issue":{"number":3,"pull_request":null},"is_pull":false,
            "repository":{"clone_url":"http://localhost:3000/o/r.git"}}"#;
        let e = parse(Forge::Gitea, &h, plain).unwrap();
        assert_eq!((e.pull_request, e.route()), (None, Route::Ignore));
    }

    #[test]
    fn repository_url_list_is_bounded() {
        let repos: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"full_name":"o/r{i}"}}"#))
            .collect();
        let body = format!(
            r#"{{"action":"created","repositories":[{}],"sender":{{"login":"u","html_url":"https://github.com/u"}}}}"#,
            repos.join(",")
        );
        let h = headers(&[
            ("X-GitHub-Event", "installation"),
            ("X-GitHub-Delivery", "d"),
        ]);
        let e = parse(Forge::Github, &h, body.as_bytes()).unwrap();
        assert_eq!(e.repository_urls.len(), MAX_REPOSITORY_URLS);
        assert_eq!(e.repository_urls[0], "github.com/o/r0");
    }
}
