//! End-to-end tests of the ingress through the axum router (in process with `oneshot`, and
//! over a real TCP socket for the streaming cap), with a fixed [`RepositoryDirectory`] test
//! double standing in for the Kubernetes side. Fixture payloads are the real forge examples
//! in `test-data/*/webhooks`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use super::verify::hmac_sha256_hex;
use super::*;

// ---------------------------------------------------------------------------------------------
// Test double and helpers

/// Follows fixed repositories (canonicalized like the real directory will) and records every
/// notification.
struct TestDirectory {
    repos: Vec<(String, ObjectKey, WebhookSecret)>,
    notified: Mutex<Vec<(Vec<ObjectKey>, ForgeEvent)>>,
    /// Finished checks: the targets and the head SHA.
    head_checks: Mutex<Vec<(Vec<ObjectKey>, String)>>,
    lookups: AtomicUsize,
}

impl TestDirectory {
    fn new(repos: &[(&str, &str, &str)]) -> Arc<Self> {
        Arc::new(Self {
            repos: repos
                .iter()
                .map(|(url, name, secret)| {
                    (
                        canonicalize_repo_url(url).expect("test repository URL"),
                        ObjectKey::new("team", *name),
                        WebhookSecret::new(*secret),
                    )
                })
                .collect(),
            notified: Mutex::new(Vec::new()),
            head_checks: Mutex::new(Vec::new()),
            lookups: AtomicUsize::new(0),
        })
    }

    fn notifications(&self) -> Vec<(Vec<ObjectKey>, ForgeEvent)> {
        self.notified.lock().unwrap().clone()
    }

    fn head_checks(&self) -> Vec<(Vec<ObjectKey>, String)> {
        self.head_checks.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl RepositoryDirectory for TestDirectory {
    async fn candidates(&self, _forge: Forge, repository_urls: &[String]) -> Vec<WebhookCandidate> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.repos
            .iter()
            .filter(|(url, _, _)| repository_urls.contains(url))
            .map(|(_, target, secret)| WebhookCandidate {
                target: target.clone(),
                secret: secret.clone(),
            })
            .collect()
    }

    async fn notify(&self, targets: &[ObjectKey], event: &ForgeEvent) {
        self.notified
            .lock()
            .unwrap()
            .push((targets.to_vec(), event.clone()));
    }

    fn head_checks_finished(&self, targets: &[ObjectKey], _event: &ForgeEvent, sha: &str) {
        self.head_checks
            .lock()
            .unwrap()
            .push((targets.to_vec(), sha.to_owned()));
    }
}

struct Harness {
    router: Router,
    state: WebhookState,
    directory: Arc<TestDirectory>,
}

fn harness_with(config: WebhookConfig, repos: &[(&str, &str, &str)]) -> Harness {
    let directory = TestDirectory::new(repos);
    let state = WebhookState::new(config, directory.clone(), WebhookMetrics::new());
    Harness {
        router: router(state.clone()),
        state,
        directory,
    }
}

fn harness(repos: &[(&str, &str, &str)]) -> Harness {
    harness_with(WebhookConfig::default(), repos)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn result(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON body");
        v["result"].as_str().expect("result field").to_owned()
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: axum::body::to_bytes(body, 1 << 20).await.unwrap(),
        }
    }

    fn count(&self, forge: Forge, result: WebhookResult) -> u64 {
        self.state.metrics().count(forge, result)
    }
}

/// The signature/token header a forge would send for `body` with `secret`.
fn credential(forge: Forge, secret: &str, body: &[u8]) -> (&'static str, String) {
    match forge {
        Forge::Github => (
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), body)),
        ),
        Forge::Gitea => (
            "X-Gitea-Signature",
            hmac_sha256_hex(secret.as_bytes(), body),
        ),
        Forge::Gitlab => ("X-Gitlab-Token", secret.to_owned()),
    }
}

/// A delivery as the forge sends it; `secret: None` sends no credential.
fn delivery(
    forge: Forge,
    event: &str,
    id: &str,
    body: impl Into<Vec<u8>>,
    secret: Option<&str>,
) -> Request<Body> {
    let body = body.into();
    let (event_header, id_header) = match forge {
        Forge::Github => ("X-GitHub-Event", "X-GitHub-Delivery"),
        Forge::Gitlab => ("X-Gitlab-Event", "X-Gitlab-Event-UUID"),
        Forge::Gitea => ("X-Gitea-Event", "X-Gitea-Delivery"),
    };
    let mut builder = Request::post(format!("/hooks/{forge}"))
        .header("Content-Type", "application/json")
        .header(event_header, event)
        .header(id_header, id);
    if let Some(secret) = secret {
        let (name, value) = credential(forge, secret, &body);
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body)).unwrap()
}

const REPO: &str = "https://github.com/acme/app.git";
const OTHER_REPO: &str = "https://github.com/acme/other.git";
const SECRET: &str = "s3cret-for-acme-app";

fn pr_body(repo_url: &str, number: u64) -> Vec<u8> {
    serde_json::json!({
        "action": "synchronize",
        "number": number,
        "pull_request": {"number": number, "head": {"sha": "0123456789abcdef0123456789abcdef01234567"}},
        "repository": {"clone_url": repo_url, "html_url": repo_url.trim_end_matches(".git")},
        "sender": {"login": "octocat"}
    })
    .to_string()
    .into_bytes()
}

fn gitlab_mr_body(project_url: &str, iid: u64) -> Vec<u8> {
    serde_json::json!({
        "object_kind": "merge_request",
        "user": {"username": "root"},
        "project": {"web_url": project_url},
        "object_attributes": {"iid": iid, "action": "update", "last_commit": {"id": "abc"}}
    })
    .to_string()
    .into_bytes()
}

fn with_peer(mut request: Request<Body>, ip: &str) -> Request<Body> {
    let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn fixtures(forge_dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../test-data")
        .join(forge_dir)
        .join("webhooks");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .filter(|(name, _)| name.ends_with(".json"))
        .collect();
    files.sort();
    files
}

/// What one fixture must parse to and how the ingress must answer it.
struct Expect {
    file: &'static str,
    event: &'static str,
    kind: EventKind,
    repo: &'static str,
    pull_request: Option<u64>,
    head_sha: Option<&'static str>,
    sender: Option<&'static str>,
    route: Route,
}

const CODERTOCAT: &str = "github.com/codertocat/hello-world";
const PR_HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn gh(
    file: &'static str,
    kind: EventKind,
    repo: &'static str,
    pull_request: Option<u64>,
    head_sha: Option<&'static str>,
    sender: &'static str,
    route: Route,
) -> Expect {
    Expect {
        file,
        event: file.split('.').next().unwrap(),
        kind,
        repo,
        pull_request,
        head_sha,
        sender: Some(sender),
        route,
    }
}

fn github_expectations() -> Vec<Expect> {
    use EventKind::*;
    use Route::{HeadChecks, Ignore, Sync};
    let pr = |file| {
        gh(
            file,
            PullRequest,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "Codertocat",
            Sync,
        )
    };
    vec![
        gh(
            "check_run.completed.json",
            CheckOrStatus,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "Codertocat",
            HeadChecks,
        ),
        gh(
            "check_run.created.json",
            CheckOrStatus,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "Codertocat",
            Ignore,
        ),
        gh(
            "check_run.requested_action.json",
            CheckOrStatus,
            "github.com/electron/electron",
            Some(26764),
            Some("5bd5f196a46b8222fb7484f05faba41a73cf34bd"),
            "codebytere",
            Ignore,
        ),
        gh(
            "check_run.rerequested.json",
            CheckOrStatus,
            // Its ssh_url is `ssh://git@localhost:3035/github/hello-world.git`.
            "localhost/github/hello-world",
            None,
            Some("d6fde92930d4715a2b49857d24b940956b26d2d3"),
            "octocat",
            Ignore,
        ),
        gh(
            "check_suite.completed.json",
            CheckOrStatus,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "Codertocat",
            Ignore,
        ),
        gh(
            "check_suite.requested.json",
            CheckOrStatus,
            CODERTOCAT,
            None,
            Some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e"),
            "Codertocat",
            Ignore,
        ),
        gh(
            "check_suite.rerequested.json",
            CheckOrStatus,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "octocoders-linter[bot]",
            Ignore,
        ),
        gh(
            "installation.created.json",
            Other("installation".into()),
            CODERTOCAT,
            None,
            None,
            "Codertocat",
            Ignore,
        ),
        gh(
            "issue_comment.created.json",
            Comment,
            CODERTOCAT,
            None,
            None,
            "Codertocat",
            Ignore,
        ),
        gh(
            "ping.json",
            Ping,
            "github.com/octocoders/hello-world",
            None,
            None,
            "Codertocat",
            Route::Ping,
        ),
        gh(
            "ping.with-app_id.json",
            Ping,
            "github.com/octocoders/hello-world",
            None,
            None,
            "Codertocat",
            Route::Ping,
        ),
        pr("pull_request.closed.json"),
        pr("pull_request.converted_to_draft.json"),
        pr("pull_request.labeled.json"),
        pr("pull_request.opened.json"),
        pr("pull_request.ready_for_review.json"),
        pr("pull_request.reopened.json"),
        pr("pull_request.synchronize.json"),
        pr("pull_request.unlabeled.json"),
        gh(
            "pull_request_review.dismissed.json",
            Review,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "Codertocat",
            Sync,
        ),
        gh(
            "pull_request_review.submitted.json",
            Review,
            CODERTOCAT,
            Some(2),
            Some(PR_HEAD),
            "Codertocat",
            Sync,
        ),
        gh(
            "push.branch-created.json",
            Push,
            CODERTOCAT,
            None,
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
            "Codertocat",
            Sync,
        ),
        gh(
            "push.tag-created.ghes-3.5.json",
            Push,
            "octocoders.github.io/codertocat/hello-world",
            None,
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
            "Codertocat",
            Ignore,
        ),
        // Tag deletion: `after` is all zeros, which is no head.
        gh(
            "push.tag-deleted.json",
            Push,
            CODERTOCAT,
            None,
            None,
            "Codertocat",
            Ignore,
        ),
    ]
}

fn gitlab_expectations() -> Vec<Expect> {
    vec![
        Expect {
            file: "merge_request.open.json",
            event: "Merge Request Hook",
            kind: EventKind::PullRequest,
            repo: "example.com/gitlabhq/gitlab-test",
            pull_request: Some(1),
            head_sha: Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
            sender: Some("root"),
            route: Route::Sync,
        },
        Expect {
            file: "note.merge_request.json",
            event: "Note Hook",
            kind: EventKind::Comment,
            repo: "example.com/gitlab-org/gitlab-test",
            pull_request: Some(1),
            head_sha: Some("562e173be03b8ff2efb05345d12df18815438a4b"),
            sender: Some("root"),
            route: Route::Sync,
        },
        Expect {
            file: "pipeline.json",
            event: "Pipeline Hook",
            kind: EventKind::CheckOrStatus,
            repo: "192.168.64.1:3005/gitlab-org/gitlab-test",
            pull_request: Some(1),
            head_sha: Some("bcbb5ec396a2c0f828686f14fac9b80b780504f2"),
            sender: Some("root"),
            route: Route::HeadChecks,
        },
        Expect {
            file: "push.json",
            event: "Push Hook",
            kind: EventKind::Push,
            repo: "example.com/mike/diaspora",
            pull_request: None,
            head_sha: Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
            sender: Some("jsmith"),
            route: Route::Sync,
        },
        Expect {
            file: "tag_push.json",
            event: "Tag Push Hook",
            kind: EventKind::Push,
            repo: "example.com/jsmith/example",
            pull_request: None,
            head_sha: Some("82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"),
            sender: None,
            route: Route::Ignore,
        },
    ]
}

fn gitea_expectations() -> Vec<Expect> {
    vec![Expect {
        file: "push.json",
        event: "push",
        kind: EventKind::Push,
        repo: "localhost:3000/gitea/webhooks",
        pull_request: None,
        head_sha: Some("bffeb74224043ba2feb48d137756c8a9331c449a"),
        sender: Some("gitea"),
        route: Route::Sync,
    }]
}

fn all_fixture_cases() -> Vec<(Forge, Expect, Vec<u8>)> {
    let mut cases = Vec::new();
    for (forge, dir, expectations) in [
        (Forge::Github, "github", github_expectations()),
        (Forge::Gitlab, "gitlab", gitlab_expectations()),
        (Forge::Gitea, "gitea", gitea_expectations()),
    ] {
        let files = fixtures(dir);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let expected: Vec<&str> = expectations.iter().map(|e| e.file).collect();
        assert_eq!(
            names, expected,
            "every {dir} fixture needs exactly one expectation (sorted by file name)"
        );
        for (expect, (_, body)) in expectations.into_iter().zip(files) {
            cases.push((forge, expect, body));
        }
    }
    assert_eq!(cases.len(), 30);
    cases
}

#[test]
fn every_fixture_parses_to_the_expected_event() {
    for (forge, expect, body) in all_fixture_cases() {
        let request = delivery(forge, expect.event, "delivery-1", body.clone(), None);
        let event = event::parse(forge, request.headers(), &body)
            .unwrap_or_else(|e| panic!("{forge}/{}: {e}", expect.file));
        let what = format!("{forge}/{}", expect.file);
        assert_eq!(event.forge, forge, "{what}");
        assert_eq!(event.delivery_id, "delivery-1", "{what}");
        assert_eq!(event.event_name, expect.event, "{what}");
        assert_eq!(event.kind, expect.kind, "{what}");
        assert!(
            event.repository_urls.iter().any(|u| u == expect.repo),
            "{what}: {:?} lacks {}",
            event.repository_urls,
            expect.repo
        );
        assert_eq!(event.pull_request, expect.pull_request, "{what}");
        assert_eq!(event.head_sha.as_deref(), expect.head_sha, "{what}");
        assert_eq!(event.sender.as_deref(), expect.sender, "{what}");
        assert_eq!(event.route(), expect.route, "{what}");
    }
}

#[test]
fn fixture_details_that_matter_downstream() {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../test-data/github/webhooks/pull_request.opened.json"),
    )
    .unwrap();
    let req = delivery(Forge::Github, "pull_request", "d", body.clone(), None);
    let event = event::parse(Forge::Github, req.headers(), &body).unwrap();
    assert_eq!(event.action.as_deref(), Some("opened"));
    // clone, html, ssh, git and svn URLs all canonicalize to one.
    assert_eq!(event.repository_urls, vec![CODERTOCAT.to_owned()]);

    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../test-data/gitlab/webhooks/merge_request.open.json"),
    )
    .unwrap();
    let req = delivery(Forge::Gitlab, "Merge Request Hook", "d", body.clone(), None);
    let event = event::parse(Forge::Gitlab, req.headers(), &body).unwrap();
    assert_eq!(event.action.as_deref(), Some("open"));
    // The target project is included; the source (possibly a fork) only because it is the
    // same project in this example.
    assert!(
        event
            .repository_urls
            .contains(&"example.com/awesome_space/awesome_project".to_owned())
    );

    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-data/gitlab/webhooks/push.json"),
    )
    .unwrap();
    let req = delivery(Forge::Gitlab, "Push Hook", "d", body.clone(), None);
    let event = event::parse(Forge::Gitlab, req.headers(), &body).unwrap();
    assert_eq!(event.git_ref.as_deref(), Some("refs/heads/master"));
}

#[tokio::test]
async fn every_fixture_routes_through_the_ingress() {
    for (i, (forge, expect, body)) in all_fixture_cases().into_iter().enumerate() {
        let repo_url = format!("https://{}", expect.repo);
        let h = harness(&[(repo_url.as_str(), "repo", SECRET)]);
        let id = format!("fixture-{i}");
        let reply = h
            .send(delivery(
                forge,
                expect.event,
                &id,
                body.clone(),
                Some(SECRET),
            ))
            .await;
        let what = format!("{forge}/{}", expect.file);
        let (status, result, notified, head_checks) = match expect.route {
            Route::Sync => (StatusCode::ACCEPTED, "accepted", 1, 0),
            Route::HeadChecks => (StatusCode::ACCEPTED, "accepted", 0, 1),
            Route::Ignore => (StatusCode::ACCEPTED, "ignored", 0, 0),
            Route::Echo => (StatusCode::ACCEPTED, "echo", 0, 0),
            Route::Ping => (StatusCode::OK, "ping", 0, 0),
        };
        assert_eq!(
            (reply.status, reply.result().as_str()),
            (status, result),
            "{what}"
        );
        let notes = h.directory.notifications();
        assert_eq!(notes.len(), notified, "{what}");
        let checks = h.directory.head_checks();
        assert_eq!(checks.len(), head_checks, "{what}");
        if let Some((targets, sha)) = checks.first() {
            assert_eq!(targets, &vec![ObjectKey::new("team", "repo")], "{what}");
            assert_eq!(Some(sha.as_str()), expect.head_sha, "{what}");
        }
        if let Some((targets, event)) = notes.first() {
            assert_eq!(targets, &vec![ObjectKey::new("team", "repo")], "{what}");
            assert_eq!(event.delivery_id, id, "{what}");
            assert_eq!(event.kind, expect.kind, "{what}");
        }
        // The same payload with a signature made with another secret is refused.
        let reply = h
            .send(delivery(
                forge,
                expect.event,
                "other",
                body,
                Some("not-the-secret"),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// (name, extra headers, expected status)
type SignatureCase = (&'static str, Vec<(&'static str, String)>, StatusCode);

#[tokio::test]
async fn github_signature_variants() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let body = pr_body(REPO, 7);
    let good = hmac_sha256_hex(SECRET.as_bytes(), &body);
    let wrong = hmac_sha256_hex(b"wrong", &body);
    let cases: Vec<SignatureCase> = vec![
        (
            "good",
            vec![("X-Hub-Signature-256", format!("sha256={good}"))],
            StatusCode::ACCEPTED,
        ),
        (
            "bad",
            vec![("X-Hub-Signature-256", format!("sha256={wrong}"))],
            StatusCode::UNAUTHORIZED,
        ),
        ("missing", vec![], StatusCode::UNAUTHORIZED),
        (
            "sha1 only",
            vec![("X-Hub-Signature", format!("sha1={}", &good[..40]))],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong algorithm",
            vec![("X-Hub-Signature-256", format!("sha512={good}"))],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no prefix",
            vec![("X-Hub-Signature-256", good.clone())],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bad hex",
            vec![("X-Hub-Signature-256", format!("sha256={}zz", &good[..62]))],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "short",
            vec![("X-Hub-Signature-256", format!("sha256={}", &good[..62]))],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (i, (name, headers, status)) in cases.into_iter().enumerate() {
        let mut request = delivery(
            Forge::Github,
            "pull_request",
            &format!("gh-{i}"),
            body.clone(),
            None,
        );
        for (k, v) in headers {
            request.headers_mut().insert(k, v.parse().unwrap());
        }
        let reply = h.send(request).await;
        assert_eq!(reply.status, status, "{name}");
    }
    assert_eq!(h.directory.notifications().len(), 1);
}

#[tokio::test]
async fn gitea_signature_variants() {
    let url = "http://localhost:3000/acme/app.git";
    let h = harness(&[(url, "app", SECRET)]);
    let body = pr_body(url, 3);
    let good = hmac_sha256_hex(SECRET.as_bytes(), &body);
    let wrong = hmac_sha256_hex(b"wrong", &body);
    let cases: Vec<SignatureCase> = vec![
        (
            "good",
            vec![("X-Gitea-Signature", good.clone())],
            StatusCode::ACCEPTED,
        ),
        (
            "bad",
            vec![("X-Gitea-Signature", wrong)],
            StatusCode::UNAUTHORIZED,
        ),
        ("missing", vec![], StatusCode::UNAUTHORIZED),
        (
            "empty (no secret configured)",
            vec![("X-Gitea-Signature", String::new())],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "github-style prefix",
            vec![("X-Gitea-Signature", format!("sha256={good}"))],
            StatusCode::UNAUTHORIZED,
        ),
        // Gitea sends these too, but the Gitea route only trusts X-Gitea-Signature.
        (
            "only github headers",
            vec![("X-Hub-Signature-256", format!("sha256={good}"))],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bad hex",
            vec![("X-Gitea-Signature", format!("{}xx", &good[..62]))],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (i, (name, headers, status)) in cases.into_iter().enumerate() {
        let mut request = delivery(
            Forge::Gitea,
            "pull_request",
            &format!("gt-{i}"),
            body.clone(),
            None,
        );
        for (k, v) in headers {
            request.headers_mut().insert(k, v.parse().unwrap());
        }
        assert_eq!(h.send(request).await.status, status, "{name}");
    }
    assert_eq!(h.directory.notifications().len(), 1);
}

#[tokio::test]
async fn gitlab_token_variants() {
    let url = "https://gitlab.example.com/acme/app";
    let h = harness(&[(url, "app", SECRET)]);
    let body = gitlab_mr_body(url, 4);
    let cases = [
        ("good", Some(SECRET), StatusCode::ACCEPTED),
        ("bad", Some("s3cret-for-acme-apq"), StatusCode::UNAUTHORIZED),
        (
            "prefix of the token",
            Some("s3cret"),
            StatusCode::UNAUTHORIZED,
        ),
        ("missing", None, StatusCode::UNAUTHORIZED),
    ];
    for (i, (name, token, status)) in cases.into_iter().enumerate() {
        let request = delivery(
            Forge::Gitlab,
            "Merge Request Hook",
            &format!("gl-{i}"),
            body.clone(),
            token,
        );
        assert_eq!(h.send(request).await.status, status, "{name}");
    }
    let notes = h.directory.notifications();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1.pull_request, Some(4));
}

#[tokio::test]
async fn unknown_repository_and_bad_signature_are_indistinguishable() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let known = pr_body(REPO, 1);
    let unknown = pr_body("https://github.com/acme/nobody-follows-this", 1);
    let bad_signature = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "a",
            known.clone(),
            Some("guess"),
        ))
        .await;
    let unknown_repo = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "b",
            unknown,
            Some(SECRET),
        ))
        .await;
    let no_signature = h
        .send(delivery(Forge::Github, "pull_request", "c", known, None))
        .await;
    for reply in [&bad_signature, &unknown_repo, &no_signature] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.headers, bad_signature.headers);
        assert_eq!(reply.body, bad_signature.body);
    }
    assert_eq!(&bad_signature.body[..], br#"{"result":"unauthorized"}"#);
    assert_eq!(h.count(Forge::Github, WebhookResult::Unauthorized), 3);
    assert!(h.directory.notifications().is_empty());
}

#[tokio::test]
async fn only_the_repository_whose_secret_verifies_is_notified() {
    let h = harness(&[
        (REPO, "team-a-app", "secret-of-team-a"),
        (
            "git@github.com:acme/app.git",
            "team-b-app",
            "secret-of-team-b",
        ),
        (REPO, "team-c-app", "secret-of-team-a"),
    ]);
    let body = pr_body(REPO, 9);
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "x",
            body.clone(),
            Some("secret-of-team-b"),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    // Objects sharing the verifying secret are all notified, in one call.
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "y",
            body,
            Some("secret-of-team-a"),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let notes = h.directory.notifications();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].0, vec![ObjectKey::new("team", "team-b-app")]);
    assert_eq!(
        notes[1].0,
        vec![
            ObjectKey::new("team", "team-a-app"),
            ObjectKey::new("team", "team-c-app")
        ]
    );
}

#[tokio::test]
async fn an_empty_secret_never_authenticates() {
    let h = harness(&[(REPO, "app", "")]);
    let body = pr_body(REPO, 1);
    let signature = format!("sha256={}", hmac_sha256_hex(b"", &body));
    let mut request = delivery(Forge::Github, "pull_request", "e", body, None);
    request
        .headers_mut()
        .insert("X-Hub-Signature-256", signature.parse().unwrap());
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_missing_credential_does_not_consult_the_directory() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "m",
            pr_body(REPO, 1),
            None,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.directory.lookups.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Body cap

fn small_cap() -> WebhookConfig {
    WebhookConfig {
        max_body_bytes: 4096,
        ..WebhookConfig::default()
    }
}

/// A body of `chunks` × 1 KiB that counts how many chunks were pulled from it.
fn counting_body(chunks: Option<usize>, polled: Arc<AtomicUsize>) -> Body {
    let stream = futures::stream::repeat_with(move || {
        polled.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1024]))
    });
    match chunks {
        Some(n) => Body::from_stream(futures::StreamExt::take(stream, n)),
        None => Body::from_stream(stream),
    }
}

fn streamed(forge: Forge, body: Body) -> Request<Body> {
    let mut request = delivery(forge, "push", "big", Vec::new(), Some(SECRET));
    *request.body_mut() = body;
    request
}

#[tokio::test]
async fn oversized_body_is_refused_without_reading_past_the_cap() {
    let h = harness_with(small_cap(), &[(REPO, "app", SECRET)]);
    let polled = Arc::new(AtomicUsize::new(0));
    let reply = h
        .send(streamed(
            Forge::Github,
            counting_body(Some(1000), polled.clone()),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.result(), "too_large");
    // 4 chunks fit exactly; the 5th crosses the cap and ends the read.
    assert_eq!(polled.load(Ordering::SeqCst), 5);

    // An endless body ends too.
    let endless = Arc::new(AtomicUsize::new(0));
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        h.send(streamed(Forge::Gitea, counting_body(None, endless.clone()))),
    )
    .await
    .expect("endless body must be cut off");
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(endless.load(Ordering::SeqCst), 5);
    assert_eq!(h.count(Forge::Github, WebhookResult::TooLarge), 1);
    assert_eq!(h.count(Forge::Gitea, WebhookResult::TooLarge), 1);
}

#[tokio::test]
async fn declared_oversize_is_refused_before_reading_anything() {
    let h = harness_with(small_cap(), &[(REPO, "app", SECRET)]);
    let polled = Arc::new(AtomicUsize::new(0));
    let mut request = streamed(Forge::Github, counting_body(Some(1), polled.clone()));
    request
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, "4097".parse().unwrap());
    let reply = h.send(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(polled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_body_exactly_at_the_cap_is_read() {
    let h = harness_with(small_cap(), &[(REPO, "app", SECRET)]);
    let mut body = pr_body(REPO, 1);
    // JSON allows trailing whitespace: pad to exactly the cap.
    body.resize(4096, b' ');
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "cap",
            body.clone(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    body.push(b' ');
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "cap+1",
            body,
            Some(SECRET),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn over_tcp_the_413_arrives_while_the_client_is_still_sending() {
    let directory = TestDirectory::new(&[(REPO, "app", SECRET)]);
    let config = WebhookConfig {
        unauthenticated_burst: 1,
        unauthenticated_rate: 0.001,
        ..small_cap()
    };
    let state = WebhookState::new(config, directory, WebhookMetrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /hooks/github HTTP/1.1\r\nHost: test\r\nX-GitHub-Event: push\r\n\
              X-GitHub-Delivery: tcp-1\r\nContent-Type: application/json\r\n\
              X-Hub-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    // 8 KiB in 1 KiB chunks, twice the cap, and the body is never terminated: a server that
    // waited for the whole body would never answer.
    for _ in 0..8 {
        stream.write_all(b"400\r\n").await.unwrap();
        stream.write_all(&[b' '; 1024]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    let mut response = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("413 must come before the body ends")
        .unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains(r#"{"result":"too_large"}"#), "{response}");

    // `serve` supplies the peer address: the failed request spent this address's only token.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /hooks/github HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut response = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after:"),
        "{response}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Duplicates and rate limits

#[tokio::test]
async fn a_redelivered_id_is_a_duplicate_and_notifies_once() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let body = pr_body(REPO, 5);
    let first = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "same-id",
            body.clone(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        (first.status, first.result().as_str()),
        (StatusCode::ACCEPTED, "accepted")
    );
    let second = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "same-id",
            body.clone(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        (second.status, second.result().as_str()),
        (StatusCode::OK, "duplicate")
    );
    assert_eq!(h.directory.notifications().len(), 1);
    assert_eq!(h.count(Forge::Github, WebhookResult::Duplicate), 1);

    // Delivery ids are per forge.
    let gitea = h
        .send(delivery(
            Forge::Gitea,
            "pull_request",
            "same-id",
            body,
            Some(SECRET),
        ))
        .await;
    assert_eq!(gitea.status, StatusCode::ACCEPTED);
    assert_eq!(h.directory.notifications().len(), 2);
}

#[tokio::test]
async fn unauthorized_requests_do_not_poison_the_duplicate_cache() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let body = pr_body(REPO, 5);
    for secret in [Some("forged"), None] {
        let reply = h
            .send(delivery(
                Forge::Github,
                "pull_request",
                "victim-id",
                body.clone(),
                secret,
            ))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let real = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "victim-id",
            body.clone(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(real.result(), "accepted");
    let again = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "victim-id",
            body,
            Some(SECRET),
        ))
        .await;
    assert_eq!(again.result(), "duplicate");
    assert_eq!(h.directory.notifications().len(), 1);
}

#[tokio::test]
async fn per_repository_budget_limits_only_that_repository() {
    let config = WebhookConfig {
        per_source_burst: 2,
        per_source_rate: 0.001,
        ..WebhookConfig::default()
    };
    let h = harness_with(
        config,
        &[(REPO, "app", SECRET), (OTHER_REPO, "other", SECRET)],
    );
    for i in 0..2 {
        let reply = h
            .send(delivery(
                Forge::Github,
                "pull_request",
                &format!("a-{i}"),
                pr_body(REPO, i),
                Some(SECRET),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let limited = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "a-2",
            pr_body(REPO, 2),
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        (limited.status, limited.result().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after));
    // Refused deliveries are not remembered: a redelivery is limited again, not a "duplicate".
    let again = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "a-2",
            pr_body(REPO, 2),
            Some(SECRET),
        ))
        .await;
    assert_eq!(again.result(), "rate_limited");

    let other = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "b-0",
            pr_body(OTHER_REPO, 1),
            Some(SECRET),
        ))
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    // Ignored events (and pings) cost no budget.
    let ignored = h
        .send(delivery(
            Forge::Github,
            "check_suite",
            "a-3",
            pr_body(REPO, 2),
            Some(SECRET),
        ))
        .await;
    assert_eq!(ignored.result(), "ignored");

    let notes = h.directory.notifications();
    assert_eq!(notes.len(), 3);
    assert_eq!(h.count(Forge::Github, WebhookResult::RateLimited), 2);
}

#[tokio::test]
async fn unauthenticated_failures_spend_a_per_address_budget() {
    let config = WebhookConfig {
        unauthenticated_burst: 2,
        unauthenticated_rate: 0.001,
        ..WebhookConfig::default()
    };
    let h = harness_with(config, &[(REPO, "app", SECRET)]);
    let good = |id: &str| {
        delivery(
            Forge::Github,
            "pull_request",
            id,
            pr_body(REPO, 1),
            Some(SECRET),
        )
    };
    let bad = |id: &str| {
        delivery(
            Forge::Github,
            "pull_request",
            id,
            pr_body(REPO, 1),
            Some("guess"),
        )
    };

    // Successful deliveries never spend it.
    for i in 0..5 {
        let reply = h
            .send(with_peer(good(&format!("ok-{i}")), "203.0.113.7"))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    for i in 0..2 {
        let reply = h
            .send(with_peer(bad(&format!("bad-{i}")), "198.51.100.1"))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Exhausted: this address's further failures are answered 429 ...
    let reply = h.send(with_peer(bad("bad-2"), "198.51.100.1")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
    // ... but a real delivery from the same address (a shared ingress, the forge's egress IP)
    // is verified and accepted: failures by others never lock it out, and it is not charged.
    for i in 0..3 {
        let reply = h
            .send(with_peer(good(&format!("after-{i}")), "198.51.100.1"))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "after-{i}");
    }
    // Other addresses are unaffected; IPv6 clients share a budget per /64.
    let reply = h.send(with_peer(bad("elsewhere"), "203.0.113.7")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    for i in 0..2 {
        let reply = h
            .send(with_peer(
                bad(&format!("v6-{i}")),
                &format!("[2001:db8::{i}]"),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = h
        .send(with_peer(bad("v6-same-64"), "[2001:db8::ffff]"))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let reply = h.send(with_peer(good("v6-ok"), "[2001:db8::ffff]")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let reply = h
        .send(with_peer(bad("v6-other"), "[2001:db8:0:1::1]"))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_spends_the_budget() {
    let config = WebhookConfig {
        unauthenticated_burst: 1,
        unauthenticated_rate: 0.001,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..WebhookConfig::default()
    };
    let h = harness_with(config, &[(REPO, "app", SECRET)]);
    let bad = |id: &str, forwarded: &str| {
        let mut request = with_peer(
            delivery(
                Forge::Github,
                "pull_request",
                id,
                pr_body(REPO, 1),
                Some("guess"),
            ),
            "10.0.0.2",
        );
        request
            .headers_mut()
            .insert("X-Forwarded-For", forwarded.parse().unwrap());
        request
    };
    assert_eq!(
        h.send(bad("a1", "203.0.113.1")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.send(bad("a2", "203.0.113.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has its own budget, and a spoofed leftmost entry
    // does not move the attacker to someone else's.
    assert_eq!(
        h.send(bad("b1", "203.0.113.2")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.send(bad("a3", "203.0.113.9, 203.0.113.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // From an untrusted peer the header means nothing: the peer itself is the client.
    let mut request = with_peer(
        delivery(
            Forge::Github,
            "pull_request",
            "c1",
            pr_body(REPO, 1),
            Some("guess"),
        ),
        "198.51.100.3",
    );
    request
        .headers_mut()
        .insert("X-Forwarded-For", "203.0.113.77".parse().unwrap());
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);
    let mut request = with_peer(
        delivery(
            Forge::Github,
            "pull_request",
            "c2",
            pr_body(REPO, 1),
            Some("guess"),
        ),
        "198.51.100.3",
    );
    request
        .headers_mut()
        .insert("X-Forwarded-For", "203.0.113.78".parse().unwrap());
    assert_eq!(h.send(request).await.status, StatusCode::TOO_MANY_REQUESTS);
}

// ---------------------------------------------------------------------------------------------
// Global caps: in-flight requests and body bytes

/// A body whose first `sent` bytes arrive at once and whose rest never does (until dropped).
fn stalled_body(sent: usize) -> Body {
    let first =
        futures::stream::once(
            async move { Ok::<_, std::io::Error>(Bytes::from(vec![b' '; sent])) },
        );
    Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
}

fn stalled(id: &str, declared: Option<usize>, sent: usize) -> Request<Body> {
    let mut request = delivery(Forge::Github, "pull_request", id, Vec::new(), Some(SECRET));
    *request.body_mut() = stalled_body(sent);
    if let Some(n) = declared {
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, n.into());
    }
    request
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("not reached: {what}");
}

#[tokio::test]
async fn body_bytes_are_reserved_before_buffering_and_released_after() {
    let config = WebhookConfig {
        max_body_bytes: 8192,
        max_in_flight_body_bytes: 10_000,
        ..WebhookConfig::default()
    };
    let h = harness_with(config, &[(REPO, "app", SECRET)]);
    // Two stalled bodies that sent 4 KiB each hold 8 KiB of the budget ...
    let mut slow: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(
                h.router
                    .clone()
                    .oneshot(stalled(&format!("s{i}"), Some(8192), 4096)),
            )
        })
        .collect();
    wait_until("two reservations", || {
        h.state.body_bytes_in_flight() == 8192
    })
    .await;
    // ... while one that declared 8 KiB but sent a trickle holds only the trickle.
    slow.push(tokio::spawn(h.router.clone().oneshot(stalled(
        "trickle",
        Some(8192),
        8,
    ))));
    wait_until("the trickle's reservation", || {
        h.state.body_bytes_in_flight() == 8200
    })
    .await;
    // A body that outgrows what is left is refused with 503 before its bytes are buffered,
    // counted as overloaded, and its connection is not kept.
    let reply = h.send(stalled("s2", Some(8192), 4096)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.result(), "overloaded");
    assert_eq!(reply.headers["connection"], "close");
    assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
    let reply = h.send(stalled("s3", None, 3000)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.state.body_bytes_in_flight(),
        8200,
        "refused bodies hold nothing"
    );
    // A small delivery still fits and is accepted.
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "small",
            pr_body(REPO, 1),
            Some(SECRET),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(h.count(Forge::Github, WebhookResult::Overloaded), 2);
    // Ending the stalled requests gives their bytes back.
    for task in slow {
        task.abort();
    }
    wait_until("reservations released", || {
        h.state.body_bytes_in_flight() == 0
    })
    .await;
    let mut request = delivery(
        Forge::Github,
        "pull_request",
        "s4",
        vec![b' '; 8192],
        Some(SECRET),
    );
    request
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, 8192.into());
    let reply = h.send(request).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "read in full (and not JSON)"
    );
    assert_eq!(h.state.body_bytes_in_flight(), 0);
}

#[tokio::test]
async fn in_flight_requests_are_capped_in_total_and_per_address() {
    let config = WebhookConfig {
        max_in_flight_requests: 3,
        max_connections_per_address: 2,
        ..WebhookConfig::default()
    };
    let h = harness_with(config, &[(REPO, "app", SECRET)]);
    let hold = |id: &str, ip: &str| {
        tokio::spawn(
            h.router
                .clone()
                .oneshot(with_peer(stalled(id, None, 1), ip)),
        )
    };
    let held = vec![hold("a1", "198.51.100.1"), hold("a2", "198.51.100.1")];
    wait_until("two held requests", || {
        h.state
            .inner_requests_held(&"198.51.100.1".parse().unwrap())
            == (2, 2)
    })
    .await;
    // The address is at its cap; another address is not.
    let reply = h
        .send(with_peer(
            delivery(
                Forge::Github,
                "pull_request",
                "a3",
                pr_body(REPO, 1),
                Some(SECRET),
            ),
            "198.51.100.1",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let third = hold("b1", "198.51.100.2");
    wait_until("three held requests", || {
        h.state
            .inner_requests_held(&"198.51.100.2".parse().unwrap())
            == (3, 1)
    })
    .await;
    // Now the total is reached for everyone.
    let reply = h
        .send(with_peer(
            delivery(
                Forge::Github,
                "pull_request",
                "c1",
                pr_body(REPO, 1),
                Some(SECRET),
            ),
            "198.51.100.3",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.count(Forge::Github, WebhookResult::Overloaded), 2);
    for task in held.into_iter().chain([third]) {
        task.abort();
    }
    wait_until("slots released", || {
        h.state
            .inner_requests_held(&"198.51.100.1".parse().unwrap())
            == (0, 0)
    })
    .await;
    let reply = h
        .send(with_peer(
            delivery(
                Forge::Github,
                "pull_request",
                "c2",
                pr_body(REPO, 1),
                Some(SECRET),
            ),
            "198.51.100.1",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------------------------------------
// Over TCP: connection caps and the header timeout

async fn serve_for_test(
    config: WebhookConfig,
) -> (
    SocketAddr,
    WebhookState,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let directory = TestDirectory::new(&[(REPO, "app", SECRET)]);
    let state = WebhookState::new(config, directory, WebhookMetrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    (addr, state, stop, server)
}

/// Connects from `source` (another loopback address: Linux routes all of 127/8 to lo).
async fn connect_from(source: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connections_are_capped_per_address_and_slow_headers_time_out() {
    let config = WebhookConfig {
        max_connections: 4,
        max_connections_per_address: 2,
        header_read_timeout: Duration::from_millis(500),
        ..WebhookConfig::default()
    };
    let (addr, state, stop, server) = serve_for_test(config).await;
    // Slowloris: two connections that never finish their headers.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from("127.0.0.2", addr).await;
        stream
            .write_all(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A third from the same address is refused at accept with a 503 ...
    let mut third = connect_from("127.0.0.2", addr).await;
    let refused = read_to_close(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains(r#"{"result":"overloaded"}"#), "{refused}");
    assert_eq!(
        state
            .metrics()
            .refused_connections(ConnectionRefusal::PerAddress),
        1
    );
    // ... while another address is served at once.
    let mut other = connect_from("127.0.0.3", addr).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut other).await.starts_with("HTTP/1.1 200"));
    // The slow connections are closed by the header timeout, and their places come back.
    for stream in &mut slow {
        let _ = read_to_close(stream).await;
    }
    let mut again = connect_from("127.0.0.2", addr).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut again).await.starts_with("HTTP/1.1 200"));
    wait_until("connections closed", || state.connections_held() == 0).await;

    // The total cap holds whatever the addresses.
    let mut held = Vec::new();
    for source in ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        let mut stream = connect_from(source, addr).await;
        stream
            .write_all(b"POST /hooks/github HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let mut fifth = connect_from("127.0.0.8", addr).await;
    assert!(read_to_close(&mut fifth).await.starts_with("HTTP/1.1 503"));
    assert_eq!(
        state
            .metrics()
            .refused_connections(ConnectionRefusal::Total),
        1
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Routing, malformed input, metrics

#[tokio::test]
async fn ping_and_ignored_events_do_not_notify() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let ping = serde_json::json!({"zen": "z", "hook_id": 1, "repository": {"html_url": REPO}});
    let reply = h
        .send(delivery(
            Forge::Github,
            "ping",
            "p",
            ping.to_string(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        (reply.status, &reply.body[..]),
        (StatusCode::OK, &br#"{"result":"ping"}"#[..])
    );

    let tag = serde_json::json!({"ref": "refs/tags/v1", "after": "abc", "repository": {"html_url": REPO}});
    let reply = h
        .send(delivery(
            Forge::Github,
            "push",
            "t",
            tag.to_string(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        (reply.status, &reply.body[..]),
        (StatusCode::ACCEPTED, &br#"{"result":"ignored"}"#[..])
    );

    let install = serde_json::json!({"action": "created", "repository": {"html_url": REPO}});
    let reply = h
        .send(delivery(
            Forge::Github,
            "installation",
            "i",
            install.to_string(),
            Some(SECRET),
        ))
        .await;
    assert_eq!(reply.result(), "ignored");
    assert!(h.directory.notifications().is_empty());
}

#[tokio::test]
async fn malformed_deliveries_get_400_or_415() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let reply = h
        .send(delivery(
            Forge::Github,
            "pull_request",
            "j",
            "{not json",
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        (reply.status, reply.result().as_str()),
        (StatusCode::BAD_REQUEST, "malformed")
    );

    let mut request = delivery(
        Forge::Github,
        "pull_request",
        "h",
        pr_body(REPO, 1),
        Some(SECRET),
    );
    request.headers_mut().remove("X-GitHub-Event");
    let reply = h.send(request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(message["message"], "missing header X-GitHub-Event");

    let mut request = delivery(Forge::Gitlab, "Push Hook", "x", "{}", Some(SECRET));
    request.headers_mut().remove("X-Gitlab-Event-UUID");
    assert_eq!(h.send(request).await.status, StatusCode::BAD_REQUEST);

    let mut request = delivery(
        Forge::Github,
        "pull_request",
        "c",
        pr_body(REPO, 1),
        Some(SECRET),
    );
    request
        .headers_mut()
        .insert("Content-Type", "application/xml".parse().unwrap());
    let reply = h.send(request).await;
    assert_eq!(
        (reply.status, reply.result().as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "malformed")
    );
    assert_eq!(h.count(Forge::Github, WebhookResult::Malformed), 3);
    assert_eq!(h.count(Forge::Gitlab, WebhookResult::Malformed), 1);
}

#[tokio::test]
async fn form_encoded_github_delivery_is_verified_over_the_raw_form_body() {
    let h = harness(&[(REPO, "app", SECRET)]);
    let json = String::from_utf8(pr_body(REPO, 12)).unwrap();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &json)
        .finish();
    let mut request = delivery(
        Forge::Github,
        "pull_request",
        "form",
        form.clone(),
        Some(SECRET),
    );
    request.headers_mut().insert(
        "Content-Type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    assert_eq!(h.send(request).await.status, StatusCode::ACCEPTED);

    // Signed over the JSON instead of the bytes actually sent: refused.
    let mut request = delivery(Forge::Github, "pull_request", "form2", form, None);
    let (name, value) = credential(Forge::Github, SECRET, json.as_bytes());
    request.headers_mut().insert(name, value.parse().unwrap());
    request.headers_mut().insert(
        "Content-Type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.directory.notifications()[0].1.pull_request, Some(12));
}

#[tokio::test]
async fn metrics_count_every_result_with_forge_labels() {
    let metrics = WebhookMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let directory = TestDirectory::new(&[
        (REPO, "app", SECRET),
        ("https://gitlab.com/acme/app", "gl", SECRET),
    ]);
    let state = WebhookState::new(WebhookConfig::default(), directory.clone(), metrics.clone());
    let h = Harness {
        router: router(state.clone()),
        state,
        directory,
    };
    h.send(delivery(
        Forge::Github,
        "pull_request",
        "1",
        pr_body(REPO, 1),
        Some(SECRET),
    ))
    .await;
    h.send(delivery(
        Forge::Github,
        "pull_request",
        "1",
        pr_body(REPO, 1),
        Some(SECRET),
    ))
    .await;
    h.send(delivery(
        Forge::Github,
        "pull_request",
        "2",
        pr_body(REPO, 1),
        Some("bad"),
    ))
    .await;
    h.send(delivery(
        Forge::Github,
        "check_suite",
        "3",
        pr_body(REPO, 1),
        Some(SECRET),
    ))
    .await;
    h.send(delivery(
        Forge::Gitlab,
        "Merge Request Hook",
        "4",
        gitlab_mr_body("https://gitlab.com/acme/app", 1),
        Some(SECRET),
    ))
    .await;
    h.send(delivery(
        Forge::Gitlab,
        "Merge Request Hook",
        "5",
        "nope",
        Some(SECRET),
    ))
    .await;

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"pullwarden_webhook_requests_total{forge="github",result="accepted"} 1"#,
        r#"pullwarden_webhook_requests_total{forge="github",result="duplicate"} 1"#,
        r#"pullwarden_webhook_requests_total{forge="github",result="unauthorized"} 1"#,
        r#"pullwarden_webhook_requests_total{forge="github",result="ignored"} 1"#,
        r#"pullwarden_webhook_requests_total{forge="github",result="malformed"} 0"#,
        r#"pullwarden_webhook_requests_total{forge="gitlab",result="accepted"} 1"#,
        r#"pullwarden_webhook_requests_total{forge="gitlab",result="malformed"} 1"#,
        r#"pullwarden_webhook_requests_total{forge="gitea",result="accepted"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let h = harness(&[]);
    let reply = h
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h
        .send(Request::get("/hooks/github").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = h
        .send(
            Request::post("/hooks/bitbucket")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Echoes of Pullwarden's own writes, unfinished and finished checks

fn fixture_json(path: &str) -> serde_json::Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../test-data")
        .join(path);
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

const STATUS_SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

/// A commit status event as GitHub and Gitea send it (no fixture exists for it).
fn status_body(context: &str, state: &str) -> Vec<u8> {
    serde_json::json!({
        "sha": STATUS_SHA, "state": state, "context": context,
        "description": "d", "target_url": null,
        "repository": {"clone_url": REPO, "html_url": REPO.trim_end_matches(".git")},
        "sender": {"login": "pullwarden-bot"}
    })
    .to_string()
    .into_bytes()
}

/// Sends `body` and returns (result, Repository syncs asked for, finished checks named).
async fn route_of(forge: Forge, event: &str, body: Vec<u8>, repo: &str) -> (String, usize, usize) {
    let h = harness(&[(repo, "repo", SECRET)]);
    let reply = h
        .send(delivery(forge, event, "d-1", body, Some(SECRET)))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let echoes = h.count(forge, WebhookResult::Echo);
    let result = reply.result();
    assert_eq!(echoes, u64::from(result == "echo"), "echoes are counted");
    (
        result,
        h.directory.notifications().len(),
        h.directory.head_checks().len(),
    )
}

#[tokio::test]
async fn own_commit_statuses_are_echoes_and_others_name_their_head() {
    for forge in [Forge::Github, Forge::Gitea] {
        // Ours, whatever its state.
        for state in ["pending", "success", "failure"] {
            let got = route_of(
                forge,
                "status",
                status_body("pullwarden/preview", state),
                REPO,
            )
            .await;
            assert_eq!(got, ("echo".into(), 0, 0), "{forge} {state}");
        }
        // Someone else's, unfinished: nothing.
        let got = route_of(forge, "status", status_body("ci/build", "pending"), REPO).await;
        assert_eq!(got, ("ignored".into(), 0, 0), "{forge} pending");
        // Someone else's, finished: the head's waiters look again; no Repository sync.
        for state in ["success", "failure", "error"] {
            let h = harness(&[(REPO, "repo", SECRET)]);
            let reply = h
                .send(delivery(
                    forge,
                    "status",
                    "d-2",
                    status_body("ci/build", state),
                    Some(SECRET),
                ))
                .await;
            assert_eq!(reply.result(), "accepted", "{forge} {state}");
            assert!(h.directory.notifications().is_empty());
            assert_eq!(
                h.directory.head_checks(),
                vec![(vec![ObjectKey::new("team", "repo")], STATUS_SHA.to_owned())]
            );
        }
    }
    // A context that merely contains the prefix is not ours.
    let got = route_of(
        Forge::Github,
        "status",
        status_body("ci/pullwarden/preview", "success"),
        REPO,
    )
    .await;
    assert_eq!(got, ("accepted".into(), 0, 1));
}

#[tokio::test]
async fn own_check_runs_are_echoes_and_unfinished_runs_do_nothing() {
    let repo = format!("https://{CODERTOCAT}");
    let mut completed = fixture_json("github/webhooks/check_run.completed.json");
    let got = route_of(
        Forge::Github,
        "check_run",
        completed.to_string().into_bytes(),
        &repo,
    )
    .await;
    assert_eq!(
        got,
        ("accepted".into(), 0, 1),
        "someone else's finished run"
    );
    completed["check_run"]["name"] = "pullwarden/preview".into();
    let got = route_of(
        Forge::Github,
        "check_run",
        completed.to_string().into_bytes(),
        &repo,
    )
    .await;
    assert_eq!(got, ("echo".into(), 0, 0), "our own run");
    let created = fixture_json("github/webhooks/check_run.created.json");
    let got = route_of(
        Forge::Github,
        "check_run",
        created.to_string().into_bytes(),
        &repo,
    )
    .await;
    assert_eq!(got, ("ignored".into(), 0, 0), "queued");
}

#[tokio::test]
async fn the_sticky_comment_is_an_echo_and_other_comments_sync() {
    use crate::render::report::COMMENT_MARKER;
    let comment = |body: &str| {
        serde_json::json!({
            "action": "edited",
            "issue": {"number": 7, "pull_request": {"url": "u"}},
            "comment": {"id": 1, "body": body},
            "repository": {"clone_url": REPO},
            "sender": {"login": "pullwarden-bot"}
        })
        .to_string()
        .into_bytes()
    };
    for forge in [Forge::Github, Forge::Gitea] {
        let got = route_of(
            forge,
            "issue_comment",
            comment(&format!("{COMMENT_MARKER}\n### Preview ready")),
            REPO,
        )
        .await;
        assert_eq!(got, ("echo".into(), 0, 0), "{forge}");
        let got = route_of(forge, "issue_comment", comment("/ok-to-preview"), REPO).await;
        assert_eq!(got, ("accepted".into(), 1, 0), "{forge}");
    }
    // GitLab: the note fixture, once as written and once as our sticky note.
    let repo = "https://example.com/gitlab-org/gitlab-test";
    let mut note = fixture_json("gitlab/webhooks/note.merge_request.json");
    let got = route_of(
        Forge::Gitlab,
        "Note Hook",
        note.to_string().into_bytes(),
        repo,
    )
    .await;
    assert_eq!(got, ("accepted".into(), 1, 0));
    note["object_attributes"]["note"] = format!("{COMMENT_MARKER}\nPreview ready").into();
    let got = route_of(
        Forge::Gitlab,
        "Note Hook",
        note.to_string().into_bytes(),
        repo,
    )
    .await;
    assert_eq!(got, ("echo".into(), 0, 0));
}

#[tokio::test]
async fn gitlab_pipelines_and_jobs_of_our_statuses_are_echoes() {
    let repo = "http://192.168.64.1:3005/gitlab-org/gitlab-test";
    let mut pipeline = fixture_json("gitlab/webhooks/pipeline.json");
    // A pipeline made only of Pullwarden's external statuses.
    for build in pipeline["builds"].as_array_mut().unwrap() {
        build["name"] = "pullwarden/preview".into();
    }
    let got = route_of(
        Forge::Gitlab,
        "Pipeline Hook",
        pipeline.to_string().into_bytes(),
        repo,
    )
    .await;
    assert_eq!(got, ("echo".into(), 0, 0));
    // One CI job among them: a real pipeline.
    pipeline["builds"][0]["name"] = "test".into();
    let got = route_of(
        Forge::Gitlab,
        "Pipeline Hook",
        pipeline.to_string().into_bytes(),
        repo,
    )
    .await;
    assert_eq!(got, ("accepted".into(), 0, 1));
    // Still running: nothing.
    pipeline["object_attributes"]["status"] = "running".into();
    let got = route_of(
        Forge::Gitlab,
        "Pipeline Hook",
        pipeline.to_string().into_bytes(),
        repo,
    )
    .await;
    assert_eq!(got, ("ignored".into(), 0, 0));

    let job = |name: &str, status: &str| {
        serde_json::json!({
            "object_kind": "build", "ref": "feature", "sha": STATUS_SHA,
            "build_name": name, "build_status": status,
            "project": {"web_url": repo}, "user": {"username": "root"}
        })
        .to_string()
        .into_bytes()
    };
    let got = route_of(
        Forge::Gitlab,
        "Job Hook",
        job("pullwarden/preview", "success"),
        repo,
    )
    .await;
    assert_eq!(got, ("echo".into(), 0, 0));
    let h = harness(&[(repo, "repo", SECRET)]);
    h.send(delivery(
        Forge::Gitlab,
        "Job Hook",
        "j",
        job("test", "failed"),
        Some(SECRET),
    ))
    .await;
    assert_eq!(
        h.directory.head_checks(),
        vec![(vec![ObjectKey::new("team", "repo")], STATUS_SHA.to_owned())]
    );
    let got = route_of(Forge::Gitlab, "Job Hook", job("test", "running"), repo).await;
    assert_eq!(got, ("ignored".into(), 0, 0));
}

#[tokio::test]
async fn deployment_events_are_echoes() {
    let body = serde_json::json!({
        "action": "created",
        "deployment": {"id": 1, "sha": STATUS_SHA, "environment": "preview/web-pr-7"},
        "deployment_status": {"state": "success"},
        "repository": {"clone_url": REPO},
        "sender": {"login": "pullwarden-bot"}
    })
    .to_string()
    .into_bytes();
    for event in ["deployment", "deployment_status"] {
        let got = route_of(Forge::Github, event, body.clone(), REPO).await;
        assert_eq!(got, ("echo".into(), 0, 0), "{event}");
    }
    let gitlab = serde_json::json!({
        "object_kind": "deployment", "status": "success",
        "project": {"web_url": "https://gitlab.example.com/g/p"}
    })
    .to_string()
    .into_bytes();
    let got = route_of(
        Forge::Gitlab,
        "Deployment Hook",
        gitlab,
        "https://gitlab.example.com/g/p",
    )
    .await;
    assert_eq!(got, ("echo".into(), 0, 0));
}
