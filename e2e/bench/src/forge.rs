//! The forge side of a benchmark phase: the emulator's request counts of one client (a delta of
//! `GET /_emulator/requests`), grouped by what the request is for.
//!
//! Kinds, decided on the route template (`"METHOD /template"`) in this order:
//! - `git`: smart-HTTP traffic (`GET /{repo}.git/info/refs`, `POST /{repo}.git/git-upload-pack`);
//! - `write_back`: a write to the pull request's page: commit statuses, deployments and their
//!   statuses, comments (GitHub/Gitea), GitLab notes and environments ([`WRITE_BACK_ROUTES`]);
//! - `reads`: every other `GET`/`HEAD` (the pull request, checks, branches, lists, and the reads
//!   that find what to update, e.g. listing comments or deployments);
//! - `other_writes`: any other write.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use pullwarden_emulator::ClientCounts;

/// Path fragments of the routes whose writes are write-back (any of the three forges).
pub const WRITE_BACK_ROUTES: &[&str] = &[
    "/statuses/",
    "/deployments",
    "/comments",
    "/notes",
    "/environments",
];

/// The kind of one route (see the module docs).
pub fn kind(route: &str) -> &'static str {
    let (method, template) = route.split_once(' ').unwrap_or((route, ""));
    if template.starts_with("/{repo}.git/") {
        "git"
    } else if method == "GET" || method == "HEAD" {
        "reads"
    } else if WRITE_BACK_ROUTES.iter().any(|f| template.contains(f)) {
        "write_back"
    } else {
        "other_writes"
    }
}

/// Totals of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub requests: u64,
    /// Counted against the rate limit.
    pub charged: u64,
    /// Answered 304 Not Modified (never charged).
    pub not_modified: u64,
}

/// Per kind, from one client's counts.
pub fn by_kind(c: &ClientCounts) -> BTreeMap<&'static str, KindCounts> {
    let mut out: BTreeMap<&'static str, KindCounts> = BTreeMap::new();
    for (route, statuses) in &c.routes {
        let k = out.entry(kind(route)).or_default();
        k.requests += statuses.values().sum::<u64>();
        k.not_modified += statuses.get("304").copied().unwrap_or(0);
        k.charged += c.charged_routes.get(route).copied().unwrap_or(0);
    }
    out
}

/// `{"total", "charged", "not_modified", "by_kind": {kind: {...}}, "routes": {route: {status:
/// n}}}` for one client's counts.
pub fn to_json(c: &ClientCounts) -> Value {
    let kinds: serde_json::Map<String, Value> = by_kind(c)
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!({"requests": v.requests, "charged": v.charged, "not_modified": v.not_modified}),
            )
        })
        .collect();
    json!({
        "total": c.total,
        "charged": c.charged,
        "not_modified": c.not_modified,
        "by_kind": kinds,
        "routes": c.routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_routes() {
        for (route, want) in [
            ("GET /{repo}.git/info/refs", "git"),
            ("POST /{repo}.git/git-upload-pack", "git"),
            ("GET /repos/{owner}/{repo}/pulls/{number}", "reads"),
            (
                "GET /repos/{owner}/{repo}/commits/{ref*}/check-runs",
                "reads",
            ),
            (
                "GET /repos/{owner}/{repo}/issues/{number}/comments",
                "reads",
            ),
            ("POST /repos/{owner}/{repo}/statuses/{sha}", "write_back"),
            ("POST /repos/{owner}/{repo}/deployments", "write_back"),
            (
                "POST /repos/{owner}/{repo}/deployments/{id}/statuses",
                "write_back",
            ),
            (
                "PATCH /repos/{owner}/{repo}/issues/comments/{id}",
                "write_back",
            ),
            (
                "POST /repos/{owner}/{repo}/issues/{number}/comments",
                "write_back",
            ),
            (
                "POST /api/v4/projects/{id}/merge_requests/{iid}/notes",
                "write_back",
            ),
            (
                "POST /api/v4/projects/{id}/environments/{env}/stop",
                "write_back",
            ),
            (
                "POST /app/installations/{installation_id}/access_tokens",
                "other_writes",
            ),
        ] {
            assert_eq!(kind(route), want, "{route}");
        }
    }

    #[test]
    fn counts_per_kind() {
        let mut c = ClientCounts::default();
        let mut add = |route: &str, status: &str, n: u64, charged: u64| {
            c.routes
                .entry(route.into())
                .or_default()
                .insert(status.into(), n);
            c.total += n;
            if status == "304" {
                c.not_modified += n;
            }
            if charged > 0 {
                *c.charged_routes.entry(route.into()).or_default() += charged;
                c.charged += charged;
            }
        };
        add("GET /repos/{owner}/{repo}/pulls/{number}", "200", 3, 3);
        add("GET /repos/{owner}/{repo}/pulls", "304", 2, 0);
        add("POST /{repo}.git/git-upload-pack", "200", 1, 0);
        add("POST /repos/{owner}/{repo}/statuses/{sha}", "201", 2, 2);
        let k = by_kind(&c);
        assert_eq!(
            k["reads"],
            KindCounts {
                requests: 5,
                charged: 3,
                not_modified: 2
            }
        );
        assert_eq!(k["git"].requests, 1);
        assert_eq!(k["write_back"].charged, 2);
        let j = to_json(&c);
        assert_eq!(j["total"], 8);
        assert_eq!(j["by_kind"]["reads"]["not_modified"], 2);
    }
}
