//! Where a repository lives: parsed from the Repository's clone URL (+ optional `apiUrl`).
//!
//! Flow: `RepoCoordinates::parse(kind, url, api_url)` splits the clone URL (https, http, ssh://,
//! scp-like `git@host:owner/repo.git`, or `file://` for plain git) into host, namespace path and
//! name, then derives the REST API base the provider client talks to. `canonical_url()` is the
//! key the webhook receiver uses to match an inbound payload to Repository objects, so it must be
//! equal for every spelling of the same repository (ssh/https, `.git`, credentials, case).

use std::fmt;

use url::Url;

use super::error::ForgeError;
use super::types::ForgeKind;

/// A parsed repository location. Pure data; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoCoordinates {
    pub kind: ForgeKind,
    /// Lowercase host name, without port.
    pub host: String,
    /// Port of an http(s) clone URL when not the scheme default. ssh ports are not kept: they
    /// say nothing about where the API or the web UI is.
    pub port: Option<u16>,
    /// Owner (GitHub/Gitea) or full namespace path (GitLab `group/sub`), as written.
    pub owner: String,
    /// Repository (project) name, as written, without `.git`.
    pub name: String,
    /// REST API base without a trailing slash, e.g. `https://api.github.com`,
    /// `https://gitlab.example.com/api/v4`.
    pub api_base: String,
    /// The clone URL with any embedded credentials removed.
    pub clone_url: String,
}

impl fmt::Debug for RepoCoordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoCoordinates")
            .field("kind", &self.kind)
            .field("repo", &self.canonical_url())
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl fmt::Display for RepoCoordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical_url())
    }
}

/// The pieces of a clone URL before provider rules are applied.
struct RawLocation {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
    sanitized: String,
}

fn bad_url(url: &str, why: &str) -> ForgeError {
    // Never echo credentials that may be embedded in the URL.
    ForgeError::invalid_config(format!(
        "repository url {:?} is not usable: {why}",
        strip_userinfo(url)
    ))
}

/// Remove `user:password@` from anything that looks like a URL, for messages.
fn strip_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}{tail}");
        }
    }
    url.to_string()
}

fn parse_location(url: &str) -> Result<RawLocation, ForgeError> {
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(bad_url(url, "it is empty"));
    }
    if trimmed.contains("://") {
        let parsed = Url::parse(trimmed).map_err(|e| bad_url(url, &e.to_string()))?;
        let scheme = parsed.scheme().to_ascii_lowercase();
        match scheme.as_str() {
            "https" | "http" | "ssh" | "git" | "file" => {}
            other => return Err(bad_url(url, &format!("unsupported scheme {other:?}"))),
        }
        let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
        if host.is_empty() && scheme != "file" {
            return Err(bad_url(url, "it has no host"));
        }
        let port = match scheme.as_str() {
            "https" | "http" => parsed.port(),
            _ => None,
        };
        let mut sanitized = parsed.clone();
        // Setting an empty username/password cannot fail on URLs with a host.
        let _ = sanitized.set_username(if scheme == "ssh" {
            parsed.username()
        } else {
            ""
        });
        let _ = sanitized.set_password(None);
        let path = percent_decode(parsed.path());
        return Ok(RawLocation {
            scheme,
            host,
            port,
            path,
            sanitized: sanitized.to_string(),
        });
    }
    // scp-like syntax: [user@]host:path — git treats it as ssh when the part before the first
    // colon contains no slash.
    let Some((before, path)) = trimmed.split_once(':') else {
        return Err(bad_url(url, "expected https://, ssh:// or user@host:path"));
    };
    if before.contains('/') || path.starts_with("//") {
        return Err(bad_url(url, "expected https://, ssh:// or user@host:path"));
    }
    let host = before
        .rsplit_once('@')
        .map_or(before, |(_, h)| h)
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad_url(url, "it has no host"));
    }
    Ok(RawLocation {
        scheme: "ssh".into(),
        host,
        port: None,
        path: path.to_string(),
        sanitized: trimmed.to_string(),
    })
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split an API URL into (normalised base, web-root prefix). The prefix is the path before the
/// provider's API suffix (`/gitlab` in `https://h/gitlab/api/v4`), which self-hosted forges
/// served under a sub-path also put in front of every clone path.
fn normalise_api_url(api_url: &str, suffix: Option<&str>) -> Result<(String, String), ForgeError> {
    let parsed = Url::parse(api_url.trim()).map_err(|e| {
        ForgeError::invalid_config(format!(
            "apiUrl {:?} is not a valid URL: {e}",
            strip_userinfo(api_url)
        ))
    })?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(ForgeError::invalid_config(format!(
            "apiUrl {:?} must be an http(s) URL with a host",
            strip_userinfo(api_url)
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ForgeError::invalid_config(
            "apiUrl must not embed credentials; use auth.secretRef",
        ));
    }
    let mut origin = format!(
        "{}://{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default().to_ascii_lowercase()
    );
    if let Some(port) = parsed.port() {
        origin.push_str(&format!(":{port}"));
    }
    let path = parsed.path().trim_end_matches('/').to_string();
    let (base_path, prefix) = match suffix {
        Some(suffix) if path.ends_with(suffix) => {
            (path.clone(), path[..path.len() - suffix.len()].to_string())
        }
        // A root URL for GitLab/Gitea: the API lives under the fixed suffix.
        Some(suffix) => (format!("{path}{suffix}"), path.clone()),
        None => {
            let prefix = path.strip_suffix("/api/v3").unwrap_or("").to_string();
            (path.clone(), prefix)
        }
    };
    Ok((format!("{origin}{base_path}"), prefix))
}

impl RepoCoordinates {
    /// Parse a Repository's `url` (+ `apiUrl`) for the given provider.
    pub fn parse(kind: ForgeKind, url: &str, api_url: Option<&str>) -> Result<Self, ForgeError> {
        let loc = parse_location(url)?;
        if loc.scheme == "file" && kind != ForgeKind::Git {
            return Err(bad_url(
                url,
                "file:// URLs are only supported for provider git",
            ));
        }
        let api_suffix = match kind {
            ForgeKind::Gitlab => Some("/api/v4"),
            ForgeKind::Gitea => Some("/api/v1"),
            ForgeKind::Github | ForgeKind::Git => None,
        };
        let api = match api_url.map(str::trim).filter(|s| !s.is_empty()) {
            Some(api) => Some(normalise_api_url(api, api_suffix)?),
            None => None,
        };

        let mut path = loc.path.trim_matches('/').to_string();
        // Forges served under a sub-path put it in front of every http(s) clone path.
        if let Some((_, prefix)) = &api {
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty()
                && matches!(loc.scheme.as_str(), "http" | "https")
                && let Some(rest) = path.strip_prefix(prefix)
                && rest.starts_with('/')
            {
                path = rest.trim_start_matches('/').to_string();
            }
        }
        let path = path
            .strip_suffix(".git")
            .unwrap_or(&path)
            .trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(bad_url(url, "its path contains '.' or '..' segments"));
        }
        let (owner, name) = match (kind, segments.as_slice()) {
            (_, [] | [_]) => {
                return Err(bad_url(url, "expected a path of the form owner/repository"));
            }
            (ForgeKind::Github | ForgeKind::Gitea, [owner, name]) => {
                (owner.to_string(), name.to_string())
            }
            (ForgeKind::Github | ForgeKind::Gitea, _) => {
                return Err(bad_url(
                    url,
                    &format!(
                        "{kind} repositories have exactly two path segments (owner/repository)"
                    ),
                ));
            }
            (ForgeKind::Gitlab | ForgeKind::Git, [namespace @ .., name]) => {
                (namespace.join("/"), name.to_string())
            }
        };

        let web_scheme = if loc.scheme == "http" {
            "http"
        } else {
            "https"
        };
        let authority = match loc.port {
            Some(port) => format!("{}:{port}", loc.host),
            None => loc.host.clone(),
        };
        let api_base = match (kind, api) {
            (_, Some((base, _))) => base,
            (ForgeKind::Github, None)
                if loc.host == "github.com" || loc.host == "www.github.com" =>
            {
                "https://api.github.com".to_string()
            }
            (ForgeKind::Github, None) => format!("{web_scheme}://{authority}/api/v3"),
            (ForgeKind::Gitlab, None) => format!("{web_scheme}://{authority}/api/v4"),
            (ForgeKind::Gitea, None) => format!("{web_scheme}://{authority}/api/v1"),
            (ForgeKind::Git, None) => String::new(),
        };
        let host = if loc.host == "www.github.com" {
            "github.com".to_string()
        } else {
            loc.host
        };
        Ok(RepoCoordinates {
            kind,
            host,
            port: loc.port,
            owner,
            name,
            api_base,
            clone_url: loc.sanitized,
        })
    }

    /// `owner/name` (GitLab: `group/sub/project`).
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The project id GitLab accepts in `/projects/:id`: the URL-encoded full path.
    pub fn gitlab_project_id(&self) -> String {
        encode_path_segment(&self.full_name())
    }

    /// Match key for webhook payloads: `host[:port]/owner/name`, lowercase, no scheme, no
    /// credentials, no `.git`, no trailing slash. ssh and https spellings compare equal (the ssh
    /// port is dropped; a non-default https port is kept so two forges on one host differ).
    pub fn canonical_url(&self) -> String {
        let authority = match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        };
        format!("{authority}/{}/{}", self.owner, self.name).to_lowercase()
    }
}

/// Canonical form of any clone URL as found in webhook payloads, without provider rules.
/// Returns `None` for strings that are not repository URLs.
pub fn canonical_url_of(url: &str) -> Option<String> {
    RepoCoordinates::parse(ForgeKind::Git, url, None)
        .ok()
        .map(|c| c.canonical_url())
}

/// Percent-encode one path segment (everything but unreserved characters).
pub(crate) fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gh(url: &str) -> RepoCoordinates {
        RepoCoordinates::parse(ForgeKind::Github, url, None).unwrap()
    }

    #[test]
    fn github_https_and_ssh_forms_are_equal() {
        let forms = [
            "https://github.com/Octocat/Hello-World.git",
            "https://github.com/octocat/hello-world",
            "https://github.com/octocat/hello-world/",
            "https://x-access-token:ghs_secret@github.com/octocat/Hello-World.git",
            "git@github.com:octocat/Hello-World.git",
            "ssh://git@github.com/octocat/Hello-World.git",
            "ssh://git@github.com:22/octocat/Hello-World",
            "HTTPS://GitHub.com/octocat/Hello-World.git",
        ];
        for f in forms {
            let c = gh(f);
            assert_eq!(c.canonical_url(), "github.com/octocat/hello-world", "{f}");
            assert_eq!(c.api_base, "https://api.github.com", "{f}");
            assert_eq!(c.name.to_lowercase(), "hello-world");
        }
        let c = gh("https://user:pw@github.com/o/r.git");
        assert!(!c.clone_url.contains("pw"), "{}", c.clone_url);
        assert!(!format!("{c:?}").contains("pw"));
        assert_eq!(c.owner, "o");
        assert_eq!(c.full_name(), "o/r");
    }

    #[test]
    fn github_enterprise_api_bases() {
        let c = RepoCoordinates::parse(ForgeKind::Github, "https://ghe.corp/org/app.git", None)
            .unwrap();
        assert_eq!(c.api_base, "https://ghe.corp/api/v3");
        let c = RepoCoordinates::parse(
            ForgeKind::Github,
            "git@ghe.corp:org/app.git",
            Some("https://ghe.corp/api/v3/"),
        )
        .unwrap();
        assert_eq!(c.api_base, "https://ghe.corp/api/v3");
        // Root layout (an API served at the root, like api.github.com or the emulator).
        let c = RepoCoordinates::parse(
            ForgeKind::Github,
            "http://127.0.0.1:8080/org/app.git",
            Some("http://127.0.0.1:8080"),
        )
        .unwrap();
        assert_eq!(c.api_base, "http://127.0.0.1:8080");
        assert_eq!(c.canonical_url(), "127.0.0.1:8080/org/app");
        assert!(RepoCoordinates::parse(ForgeKind::Github, "https://h/a/b/c", None).is_err());
    }

    #[test]
    fn gitlab_nested_groups_and_api() {
        let c = RepoCoordinates::parse(
            ForgeKind::Gitlab,
            "https://gitlab.com/Group/Sub/project.git",
            None,
        )
        .unwrap();
        assert_eq!(c.owner, "Group/Sub");
        assert_eq!(c.name, "project");
        assert_eq!(c.api_base, "https://gitlab.com/api/v4");
        assert_eq!(c.gitlab_project_id(), "Group%2FSub%2Fproject");
        let ssh = RepoCoordinates::parse(
            ForgeKind::Gitlab,
            "git@gitlab.com:group/sub/project.git",
            None,
        )
        .unwrap();
        assert_eq!(ssh.canonical_url(), c.canonical_url());
        assert_eq!(c.canonical_url(), "gitlab.com/group/sub/project");

        // Self-managed under a relative URL root; apiUrl given as root or with /api/v4.
        for api in ["https://git.corp/gitlab", "https://git.corp/gitlab/api/v4/"] {
            let c = RepoCoordinates::parse(
                ForgeKind::Gitlab,
                "https://git.corp/gitlab/team/app.git",
                Some(api),
            )
            .unwrap();
            assert_eq!(c.api_base, "https://git.corp/gitlab/api/v4", "{api}");
            assert_eq!(c.full_name(), "team/app");
        }
        let http =
            RepoCoordinates::parse(ForgeKind::Gitlab, "http://127.0.0.1:9/a/b", None).unwrap();
        assert_eq!(http.api_base, "http://127.0.0.1:9/api/v4");
    }

    #[test]
    fn gitea_api_base() {
        let c = RepoCoordinates::parse(ForgeKind::Gitea, "https://gitea.io/o/r.git", None).unwrap();
        assert_eq!(c.api_base, "https://gitea.io/api/v1");
        let c = RepoCoordinates::parse(
            ForgeKind::Gitea,
            "https://h.corp/gitea/o/r.git",
            Some("https://h.corp/gitea/api/v1"),
        )
        .unwrap();
        assert_eq!((c.owner.as_str(), c.name.as_str()), ("o", "r"));
        assert!(RepoCoordinates::parse(ForgeKind::Gitea, "https://h/a/b/c", None).is_err());
    }

    #[test]
    fn rejects_bad_urls_without_leaking_credentials() {
        for bad in [
            "",
            "ftp://h/o/r",
            "https://h/only-one",
            "not a url",
            "https:///o/r",
            "https://h/o/../r",
        ] {
            let err = RepoCoordinates::parse(ForgeKind::Github, bad, None).unwrap_err();
            assert_eq!(err.category(), "InvalidConfig", "{bad}: {err}");
        }
        let err = RepoCoordinates::parse(ForgeKind::Github, "https://u:hunter2@h/only", None)
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err =
            RepoCoordinates::parse(ForgeKind::Github, "https://h/o/r", Some("nope")).unwrap_err();
        assert_eq!(err.category(), "InvalidConfig");
        assert!(RepoCoordinates::parse(ForgeKind::Github, "file:///tmp/o/r", None).is_err());
        let git = RepoCoordinates::parse(ForgeKind::Git, "file:///tmp/o/r.git", None).unwrap();
        assert_eq!(git.canonical_url(), "/tmp/o/r");
    }

    #[test]
    fn canonical_url_of_payload_urls() {
        assert_eq!(
            canonical_url_of("https://github.com/Codertocat/Hello-World.git").as_deref(),
            Some("github.com/codertocat/hello-world")
        );
        assert_eq!(
            canonical_url_of("git@github.com:Codertocat/Hello-World.git"),
            canonical_url_of("https://github.com/Codertocat/Hello-World")
        );
        assert_eq!(canonical_url_of("garbage"), None);
    }

    #[test]
    fn encodes_segments() {
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            encode_path_segment("feature/x-1_2.3~"),
            "feature%2Fx-1_2.3~"
        );
    }
}
