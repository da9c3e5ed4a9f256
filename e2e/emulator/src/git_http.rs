//! Git smart HTTP, served by the stock `git http-backend` run as a CGI program.
//!
//! Flow: the server recognises a git URL (`/{path}.git/info/refs?service=git-upload-pack`,
//! `/{path}.git/git-upload-pack`, also without `.git` as GitHub allows), checks access (public
//! repositories are anonymous-readable; private ones need HTTP Basic with a token as the
//! password, like `x-access-token:TOKEN` on GitHub or `oauth2:TOKEN` on GitLab), then runs
//! `git http-backend` with the CGI environment, feeds it the request body and turns its CGI
//! output (`Status:` + headers + body) into the response. Protocol v2 is passed through via
//! `GIT_PROTOCOL`, gzip request bodies via `HTTP_CONTENT_ENCODING`.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::server::{Resp, response};
use super::state::Shared;

const SUFFIXES: [&str; 3] = ["/info/refs", "/git-upload-pack", "/git-receive-pack"];

/// Splits a git URL into (repository path without `.git`, the part after it). `None` for
/// anything that is not a git smart-HTTP URL.
pub fn split_git_path(path: &str) -> Option<(String, String)> {
    if path.starts_with("/api/") || path.starts_with("/_emulator") {
        return None;
    }
    let trimmed = path.trim_start_matches('/');
    if let Some(idx) = trimmed.find(".git/") {
        let repo = &trimmed[..idx];
        let rest = &trimmed[idx + 5..];
        if repo.contains('/') {
            return Some((repo.to_string(), rest.to_string()));
        }
    }
    for suffix in SUFFIXES {
        if let Some(repo) = trimmed.strip_suffix(suffix) {
            let repo = repo.strip_suffix(".git").unwrap_or(repo);
            if repo.contains('/') && !repo.starts_with("repos/") {
                return Some((repo.to_string(), suffix.trim_start_matches('/').to_string()));
            }
        }
    }
    None
}

/// The route label used in request counts.
pub fn route_label(rest: &str) -> &'static str {
    match rest {
        "info/refs" => "info/refs",
        "git-upload-pack" => "git-upload-pack",
        "git-receive-pack" => "git-receive-pack",
        "HEAD" => "HEAD",
        _ => "objects",
    }
}

/// Runs `git http-backend` for one request against the bare repository `git_dir`.
pub async fn cgi(
    shared: &Shared,
    git_dir: &Path,
    parts: &http::request::Parts,
    body: Bytes,
    rest: &str,
    peer: SocketAddr,
) -> Resp {
    let Ok(rel) = git_dir.strip_prefix(&shared.repo_root) else {
        return response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "repository outside the root\n",
        );
    };
    let path_info = format!("/{}/{}", rel.to_string_lossy(), rest);
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };

    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &shared.repo_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let proto = header("git-protocol");
    if !proto.is_empty() {
        cmd.env("GIT_PROTOCOL", proto);
    }
    let encoding = header("content-encoding");
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("spawning git http-backend: {e}\n"),
            );
        }
    };
    let stdin = child.stdin.take();
    // Feed stdin concurrently with reading stdout: a large upload-pack negotiation could fill
    // both pipes otherwise.
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&body).await;
        }
    });
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => {
            return response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("git http-backend: {e}\n"),
            );
        }
    };
    let _ = writer.await;
    parse_cgi(&out.stdout, &out.stderr)
}

/// Turns CGI output into a response.
fn parse_cgi(out: &[u8], stderr: &[u8]) -> Resp {
    let (head, body) = match find_header_end(out) {
        Some((end, skip)) => (&out[..end], &out[end + skip..]),
        None => {
            let msg = format!(
                "git http-backend produced no headers: {}\n",
                String::from_utf8_lossy(stderr)
            );
            return response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", msg);
        }
    };
    let mut resp = response(
        StatusCode::OK,
        "application/octet-stream",
        Bytes::copy_from_slice(body),
    );
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            *resp.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(val)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(name, val);
        }
    }
    resp
}

fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    let lf = out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::split_git_path;

    #[test]
    fn git_paths() {
        assert_eq!(
            split_git_path("/o/r.git/info/refs"),
            Some(("o/r".into(), "info/refs".into()))
        );
        assert_eq!(
            split_git_path("/g/s/p.git/git-upload-pack"),
            Some(("g/s/p".into(), "git-upload-pack".into()))
        );
        assert_eq!(
            split_git_path("/o/r/info/refs"),
            Some(("o/r".into(), "info/refs".into()))
        );
        assert_eq!(split_git_path("/repos/o/r/pulls"), None);
        assert_eq!(split_git_path("/api/v4/projects/1"), None);
    }
}
