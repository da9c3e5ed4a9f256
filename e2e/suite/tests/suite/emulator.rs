//! Tests of the forge emulator itself (no control plane needed).
//!
//! Each test starts its own in-process emulator on a free port, drives it through the admin
//! client, and checks what real clients see: GitHub bodies against the JSON Schemas in
//! `test-data/github/rest/schemas`, unmodified octocrab and gitlab clients, stock `git` and
//! libgit2 over smart HTTP, pagination, ETags and quotas, fault injection, and webhook
//! deliveries (signatures recomputed here, shapes compared with the fixture payloads).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use pullwarden_emulator::{
    AppSpec, CheckRunSpec, Emulator, EmulatorConfig, EmulatorHandle, FaultAction, FaultSpec, Forge,
    HookSpec, InstallationSpec, PullSpec, PullUpdate, PushSpec, RateLimitSpec, RepoSpec,
    StatusSpec, TokenSpec,
};
use serde_json::{Value, json};
use sha2::Sha256;

const TOKEN: &str = "ghp_test_alice";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-data")
}

async fn start() -> EmulatorHandle {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    emu.token(TOKEN, "alice").await.expect("token");
    emu
}

fn repo_spec(forge: Forge, path: &str) -> RepoSpec {
    RepoSpec {
        forge,
        path: path.into(),
        default_branch: None,
        private: false,
        description: None,
        empty: false,
    }
}

fn push(branch: &str, files: &[(&str, &str)], author: &str) -> PushSpec {
    PushSpec {
        branch: branch.into(),
        files: files
            .iter()
            .map(|(p, c)| (p.to_string(), Some(c.to_string())))
            .collect(),
        message: Some(format!("Change {branch}")),
        author: Some(author.into()),
        ..Default::default()
    }
}

fn pull(head: &str, title: &str, author: &str) -> PullSpec {
    PullSpec {
        head: head.into(),
        title: title.into(),
        author: Some(author.into()),
        ..Default::default()
    }
}

/// A repository with one open PR (`feature` → `main`) and returns the PR head SHA.
async fn repo_with_pr(emu: &EmulatorHandle, forge: Forge, path: &str) -> String {
    emu.create_repo(repo_spec(forge, path)).await.expect("repo");
    emu.push(
        path,
        push(
            "feature",
            &[
                ("deploy/app.yaml", "replicas: 2\n"),
                ("README.md", "# changed\n"),
            ],
            "bob",
        ),
    )
    .await
    .expect("push");
    let pr = emu
        .open_pull(
            path,
            PullSpec {
                labels: vec!["preview".into()],
                ..pull("feature", "Add app", "bob")
            },
        )
        .await
        .expect("pull");
    pr.head_sha
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> Resp {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().expect("method"), url);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
    }
}

async fn gh(emu: &EmulatorHandle, method: &str, path: &str, body: Option<Value>) -> Resp {
    let auth = format!("token {TOKEN}");
    call(
        method,
        &format!("{}{path}", emu.url()),
        Some(("authorization", &auth)),
        body,
        &[],
    )
    .await
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

// ---- GitHub schemas -------------------------------------------------------------------

struct Schemas {
    index: Value,
    covered: BTreeSet<String>,
}

impl Schemas {
    fn load() -> Self {
        let index = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("github/rest/index.json"))
                .expect("index.json"),
        )
        .expect("index parses");
        Self {
            index,
            covered: BTreeSet::new(),
        }
    }

    /// Validates `body` against the schema of `op` (formats checked too); panics with every
    /// error so a failing run says what to fix.
    fn check(&mut self, op: &str, resp: &Resp) {
        let expected = self.index[op]["status"].as_u64().expect("status in index");
        assert_eq!(
            resp.status.as_u16() as u64,
            expected,
            "{op}: status, body {}",
            resp.body
        );
        let file = self.index[op]["schema_file"].as_str().expect("schema_file");
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("github/rest").join(file)).expect("schema"),
        )
        .expect("schema parses");
        let v = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("schema compiles");
        let errors: Vec<String> = v
            .iter_errors(&resp.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{op} does not match its schema:\n{}",
            errors.join("\n")
        );
        self.covered.insert(op.to_string());
    }
}

fn rsa_keypair(dir: &Path) -> (String, String) {
    let key = dir.join("app.pem");
    let public = dir.join("app.pub.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl genrsa")
        .status
        .success();
    assert!(ok, "openssl genrsa failed");
    let ok = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("openssl rsa")
        .status
        .success();
    assert!(ok, "openssl rsa -pubout failed");
    (
        std::fs::read_to_string(key).expect("key"),
        std::fs::read_to_string(public).expect("pub"),
    )
}

fn app_jwt(private_pem: &str, app_id: u64) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({"iat": now - 30, "exp": now + 540, "iss": app_id.to_string()});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("pem"),
    )
    .expect("jwt")
}

/// Registers App 4242 installed on `acme` and returns its private key.
async fn install_app(emu: &EmulatorHandle, dir: &Path) -> String {
    let (private, public) = rsa_keypair(dir);
    emu.add_app(AppSpec {
        app_id: 4242,
        slug: Some("pullwarden".into()),
        public_key_pem: public,
        owner: Some("acme".into()),
    })
    .await
    .expect("app");
    emu.add_installation(
        4242,
        InstallationSpec {
            installation_id: 77,
            account: "acme".into(),
            ..Default::default()
        },
    )
    .await
    .expect("installation");
    private
}

#[tokio::test]
async fn github_responses_validate_against_the_fixture_schemas() {
    let emu = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let private = install_app(&emu, dir.path()).await;
    let sha = repo_with_pr(&emu, Forge::Github, "acme/app").await;
    emu.add_review("acme/app", 1, "carol", "APPROVED")
        .await
        .expect("review");
    emu.set_status(
        "acme/app",
        &sha,
        StatusSpec {
            context: "ci/build".into(),
            state: "success".into(),
            ..Default::default()
        },
    )
    .await
    .expect("status");
    emu.set_team_membership("acme", "platform", "carol", "maintainer")
        .await
        .expect("team");
    emu.set_collaborator("acme/app", "carol", "write")
        .await
        .expect("collaborator");
    let mut s = Schemas::load();

    s.check("repos/get", &gh(&emu, "GET", "/repos/acme/app", None).await);
    s.check(
        "pulls/list",
        &gh(
            &emu,
            "GET",
            "/repos/acme/app/pulls?state=open&per_page=10&page=1",
            None,
        )
        .await,
    );
    s.check(
        "pulls/get",
        &gh(&emu, "GET", "/repos/acme/app/pulls/1", None).await,
    );
    s.check(
        "pulls/list-files",
        &gh(&emu, "GET", "/repos/acme/app/pulls/1/files", None).await,
    );
    s.check(
        "pulls/list-reviews",
        &gh(&emu, "GET", "/repos/acme/app/pulls/1/reviews", None).await,
    );
    let commits = gh(&emu, "GET", "/repos/acme/app/pulls/1/commits", None).await;
    s.check("pulls/list-commits", &commits);
    assert!(commits.body[0]["commit"]["verification"]["verified"].is_boolean());
    s.check(
        "repos/list-branches",
        &gh(&emu, "GET", "/repos/acme/app/branches", None).await,
    );
    s.check(
        "repos/get-branch",
        &gh(&emu, "GET", "/repos/acme/app/branches/feature", None).await,
    );
    let r = gh(&emu, "GET", "/repos/acme/app/git/ref/heads/feature", None).await;
    assert_eq!(r.body["object"]["sha"], json!(sha));
    s.check("git/get-ref", &r);
    s.check(
        "repos/get-commit",
        &gh(&emu, "GET", &format!("/repos/acme/app/commits/{sha}"), None).await,
    );
    s.check(
        "repos/get-commit",
        &gh(&emu, "GET", "/repos/acme/app/commits/feature", None).await,
    );
    let created = gh(
        &emu,
        "POST",
        &format!("/repos/acme/app/statuses/{sha}"),
        Some(json!({"state": "pending", "context": "pullwarden/gate/default", "description": "0/1 rules passed"})),
    )
    .await;
    s.check("repos/create-commit-status", &created);
    let combined = gh(&emu, "GET", "/repos/acme/app/commits/feature/status", None).await;
    assert_eq!(
        combined.body["state"], "pending",
        "a pending context makes the combined state pending"
    );
    s.check("repos/get-combined-status-for-ref", &combined);
    s.check(
        "repos/list-commit-statuses-for-ref",
        &gh(
            &emu,
            "GET",
            &format!("/repos/acme/app/commits/{sha}/statuses"),
            None,
        )
        .await,
    );
    let c = gh(
        &emu,
        "POST",
        "/repos/acme/app/issues/1/comments",
        Some(json!({"body": "preview deploying"})),
    )
    .await;
    s.check("issues/create-comment", &c);
    let id = c.body["id"].as_u64().expect("comment id");
    s.check(
        "issues/list-comments",
        &gh(&emu, "GET", "/repos/acme/app/issues/1/comments", None).await,
    );
    s.check(
        "issues/update-comment",
        &gh(
            &emu,
            "PATCH",
            &format!("/repos/acme/app/issues/comments/{id}"),
            Some(json!({"body": "ready"})),
        )
        .await,
    );
    s.check(
        "issues/get",
        &gh(&emu, "GET", "/repos/acme/app/issues/1", None).await,
    );
    let d = gh(
        &emu,
        "POST",
        "/repos/acme/app/deployments",
        Some(json!({"ref": "feature", "environment": "pr-1", "auto_merge": false, "required_contexts": [], "transient_environment": true})),
    )
    .await;
    s.check("repos/create-deployment", &d);
    let did = d.body["id"].as_u64().expect("deployment id");
    s.check(
        "repos/list-deployments",
        &gh(
            &emu,
            "GET",
            "/repos/acme/app/deployments?environment=pr-1",
            None,
        )
        .await,
    );
    s.check(
        "repos/create-deployment-status",
        &gh(&emu, "POST", &format!("/repos/acme/app/deployments/{did}/statuses"), Some(json!({"state": "success", "environment_url": "http://pr-1.preview.local", "log_url": "http://logs.local/1"}))).await,
    );
    s.check(
        "repos/list-deployment-statuses",
        &gh(
            &emu,
            "GET",
            &format!("/repos/acme/app/deployments/{did}/statuses"),
            None,
        )
        .await,
    );
    s.check(
        "rate-limit/get",
        &gh(&emu, "GET", "/rate_limit", None).await,
    );
    s.check(
        "teams/get-membership-for-user-in-org",
        &gh(
            &emu,
            "GET",
            "/orgs/acme/teams/platform/memberships/carol",
            None,
        )
        .await,
    );
    s.check(
        "repos/get-collaborator-permission-level",
        &gh(
            &emu,
            "GET",
            "/repos/acme/app/collaborators/carol/permission",
            None,
        )
        .await,
    );

    // The GitHub App flow: JWT → installation → installation token → check runs.
    let jwt = format!("Bearer {}", app_jwt(&private, 4242));
    let inst = call(
        "GET",
        &format!("{}/repos/acme/app/installation", emu.url()),
        Some(("authorization", &jwt)),
        None,
        &[],
    )
    .await;
    s.check("apps/get-repo-installation", &inst);
    assert_eq!(inst.body["id"], 77);
    let tok = call(
        "POST",
        &format!("{}/app/installations/77/access_tokens", emu.url()),
        Some(("authorization", &jwt)),
        None,
        &[],
    )
    .await;
    s.check("apps/create-installation-access-token", &tok);
    assert!(tok.body["expires_at"].is_string());
    let itoken = format!("token {}", tok.body["token"].as_str().expect("token"));
    let run = call(
        "POST",
        &format!("{}/repos/acme/app/check-runs", emu.url()),
        Some(("authorization", &itoken)),
        Some(json!({"name": "pullwarden/gate", "head_sha": sha, "status": "in_progress", "output": {"title": "Gate", "summary": "running"}})),
        &[],
    )
    .await;
    s.check("checks/create", &run);
    let run_id = run.body["id"].as_u64().expect("run id");
    let upd = call(
        "PATCH",
        &format!("{}/repos/acme/app/check-runs/{run_id}", emu.url()),
        Some(("authorization", &itoken)),
        Some(json!({"conclusion": "success", "output": {"title": "Gate", "summary": "| rule | ok |"}})),
        &[],
    )
    .await;
    s.check("checks/update", &upd);
    assert_eq!(upd.body["status"], "completed");
    emu.add_check_run(
        "acme/app",
        CheckRunSpec {
            head_sha: sha.clone(),
            name: "ci/build".into(),
            ..Default::default()
        },
    )
    .await
    .expect("external check run");
    let runs = call(
        "GET",
        &format!("{}/repos/acme/app/commits/{sha}/check-runs", emu.url()),
        Some(("authorization", &itoken)),
        None,
        &[],
    )
    .await;
    assert_eq!(runs.body["total_count"], 2);
    s.check("checks/list-for-ref", &runs);

    // The Enterprise layout serves the same bodies with /api/v3 URLs.
    let v3 = call(
        "GET",
        &format!("{}/repos/acme/app/pulls/1", emu.github_enterprise_api_url()),
        Some(("authorization", &format!("token {TOKEN}"))),
        None,
        &[],
    )
    .await;
    s.check("pulls/get", &v3);
    assert!(
        v3.body["url"]
            .as_str()
            .expect("url")
            .contains("/api/v3/repos/acme/app/pulls/1")
    );

    // Every operation in the fixtures index that the emulator serves was validated above.
    let not_served: BTreeSet<&str> = [
        "repos/compare-commits",
        "repos/list-webhooks",
        "repos/get-content",
    ]
    .into();
    let all: BTreeSet<String> = s
        .index
        .as_object()
        .expect("index")
        .keys()
        .cloned()
        .collect();
    let missing: Vec<&String> = all
        .iter()
        .filter(|op| !s.covered.contains(*op) && !not_served.contains(op.as_str()))
        .collect();
    assert!(missing.is_empty(), "operations not validated: {missing:?}");
    for path in [
        "/repos/acme/app/compare/main...feature",
        "/repos/acme/app/hooks",
        "/repos/acme/app/contents/README.md",
    ] {
        let r = gh(&emu, "GET", path, None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_IMPLEMENTED,
            "{path} is not served and must answer 501"
        );
        assert!(r.body["message"].as_str().expect("message").contains(path));
    }
}

#[tokio::test]
async fn octocrab_lists_and_writes_and_the_sticky_comment_is_edited_in_place() {
    let emu = start().await;
    let sha = repo_with_pr(&emu, Forge::Github, "acme/app").await;
    emu.add_review("acme/app", 1, "carol", "CHANGES_REQUESTED")
        .await
        .expect("review");
    emu.add_review("acme/app", 1, "dave", "APPROVED")
        .await
        .expect("review");
    let gh = octocrab::Octocrab::builder()
        .base_uri(emu.github_api_url())
        .expect("uri")
        .personal_token(TOKEN.to_string())
        .build()
        .expect("octocrab");

    let prs = gh
        .pulls("acme", "app")
        .list()
        .state(octocrab::params::State::Open)
        .send()
        .await
        .expect("list pulls");
    assert_eq!(prs.items.len(), 1);
    assert_eq!(prs.items[0].head.sha, sha);
    assert_eq!(
        prs.items[0].labels.as_ref().map(|l| l[0].name.clone()),
        Some("preview".to_string())
    );
    let files = gh.pulls("acme", "app").list_files(1).await.expect("files");
    let names: BTreeSet<String> = files.items.iter().map(|f| f.filename.clone()).collect();
    assert_eq!(
        names,
        ["README.md".to_string(), "deploy/app.yaml".to_string()].into()
    );
    let reviews = gh
        .pulls("acme", "app")
        .list_reviews(1)
        .send()
        .await
        .expect("reviews");
    assert_eq!(reviews.items.len(), 2);

    gh.repos("acme", "app")
        .create_status(sha.clone(), octocrab::models::StatusState::Success)
        .context("pullwarden/gate/default".to_string())
        .description("3/3 rules passed".to_string())
        .send()
        .await
        .expect("create status");
    let statuses = emu
        .statuses("acme/app", Some(&sha))
        .await
        .expect("statuses");
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (
            statuses[0].context.as_str(),
            statuses[0].state.as_str(),
            statuses[0].creator.as_str()
        ),
        ("pullwarden/gate/default", "success", "alice")
    );

    let c = gh
        .issues("acme", "app")
        .create_comment(1, "Preview: deploying")
        .await
        .expect("comment");
    gh.issues("acme", "app")
        .update_comment(c.id, "Preview: ready")
        .await
        .expect("update 1");
    gh.issues("acme", "app")
        .update_comment(c.id, "Preview: ready (2)")
        .await
        .expect("update 2");
    let comments = emu.comments("acme/app", 1).await.expect("comments");
    assert_eq!(comments.len(), 1, "one sticky comment");
    assert_eq!(comments[0].edit_count, 2);
    assert_eq!(comments[0].body, "Preview: ready (2)");
    assert_eq!(comments[0].user, "alice");
}

#[tokio::test]
async fn octocrab_github_app_installation_creates_check_runs_and_tokens_cannot() {
    let emu = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let private = install_app(&emu, dir.path()).await;
    let sha = repo_with_pr(&emu, Forge::Github, "acme/app").await;
    let app = octocrab::Octocrab::builder()
        .base_uri(emu.github_api_url())
        .expect("uri")
        .app(
            4242.into(),
            jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).expect("key"),
        )
        .build()
        .expect("app client");
    let inst = app.installation(77.into()).expect("installation client");
    let run = inst
        .checks("acme", "app")
        .create_check_run("pullwarden/gate", sha.clone())
        .send()
        .await
        .expect("check run");
    inst.checks("acme", "app")
        .update_check_run(run.id)
        .conclusion(octocrab::params::checks::CheckRunConclusion::Failure)
        .send()
        .await
        .expect("update check run");
    let runs = emu.check_runs("acme/app", Some(&sha)).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (
            runs[0].app_id,
            runs[0].conclusion.as_deref(),
            runs[0].update_count
        ),
        (4242, Some("failure"), 1)
    );

    // A personal token may not write check runs, like on GitHub.
    let r = gh(
        &emu,
        "POST",
        "/repos/acme/app/check-runs",
        Some(json!({"name": "x", "head_sha": sha})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["message"], "You must authenticate via a GitHub App.");
    // A JWT signed by another key is rejected.
    let other_dir = tempfile::tempdir().expect("tmp");
    let (other, _) = rsa_keypair(other_dir.path());
    let bad = format!("Bearer {}", app_jwt(&other, 4242));
    let r = call(
        "POST",
        &format!("{}/app/installations/77/access_tokens", emu.url()),
        Some(("authorization", &bad)),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn gitlab_crate_reads_merge_requests_and_posts_a_status() {
    use gitlab::api::AsyncQuery;
    let emu = start().await;
    let sha = repo_with_pr(&emu, Forge::Gitlab, "grp/sub/proj").await;
    emu.add_review("grp/sub/proj", 1, "carol", "APPROVED")
        .await
        .expect("approve");
    let client = gitlab::GitlabBuilder::new(emu.host(), TOKEN)
        .insecure()
        .build_async()
        .await
        .expect("gitlab client");

    let mrs: Vec<Value> = gitlab::api::projects::merge_requests::MergeRequests::builder()
        .project("grp/sub/proj")
        .state(gitlab::api::projects::merge_requests::MergeRequestState::Opened)
        .build()
        .expect("endpoint")
        .query_async(&client)
        .await
        .expect("merge requests");
    assert_eq!(mrs.len(), 1);
    assert_eq!(
        (mrs[0]["iid"].as_u64(), mrs[0]["sha"].as_str()),
        (Some(1), Some(sha.as_str()))
    );
    assert_eq!(mrs[0]["labels"], json!(["preview"]));
    let one: Value = gitlab::api::projects::merge_requests::MergeRequest::builder()
        .project("grp/sub/proj")
        .merge_request(1)
        .build()
        .expect("endpoint")
        .query_async(&client)
        .await
        .expect("merge request");
    assert_eq!(one["diff_refs"]["head_sha"], json!(sha));

    let status: Value = gitlab::api::projects::repository::commits::CreateCommitStatus::builder()
        .project("grp/sub/proj")
        .commit(sha.as_str())
        .state(gitlab::api::projects::repository::commits::CommitStatusState::Success)
        .name("pullwarden/gate/default")
        .description("3/3 rules passed")
        .build()
        .expect("endpoint")
        .query_async(&client)
        .await
        .expect("create status");
    assert_eq!(status["status"], "success");
    let recorded = emu
        .statuses("grp/sub/proj", Some(&sha))
        .await
        .expect("statuses");
    assert_eq!(recorded[0].context, "pullwarden/gate/default");

    // Raw calls for the rest: numeric id, notes (sticky), approvals, diffs, commits.
    let info = emu.repo_info("grp/sub/proj").await.expect("info");
    let pt = ("private-token", TOKEN);
    let base = emu.gitlab_api_url();
    let p = call(
        "GET",
        &format!("{base}/projects/{}", info.id),
        Some(pt),
        None,
        &[],
    )
    .await;
    assert_eq!(p.body["path_with_namespace"], "grp/sub/proj");
    let note = call(
        "POST",
        &format!("{base}/projects/{}/merge_requests/1/notes", info.id),
        Some(pt),
        Some(json!({"body": "Preview: deploying"})),
        &[],
    )
    .await;
    assert_eq!(note.status, StatusCode::CREATED);
    let nid = note.body["id"].as_u64().expect("note id");
    let put = call(
        "PUT",
        &format!("{base}/projects/{}/merge_requests/1/notes/{nid}", info.id),
        Some(pt),
        Some(json!({"body": "Preview: ready"})),
        &[],
    )
    .await;
    assert_eq!(put.body["body"], "Preview: ready");
    assert_eq!(
        emu.comments("grp/sub/proj", 1).await.expect("comments")[0].edit_count,
        1
    );
    let appr = call(
        "GET",
        &format!("{base}/projects/grp%2Fsub%2Fproj/merge_requests/1/approvals"),
        Some(pt),
        None,
        &[],
    )
    .await;
    assert_eq!(appr.body["approved_by"][0]["user"]["username"], "carol");
    let diffs = call(
        "GET",
        &format!("{base}/projects/grp%2Fsub%2Fproj/merge_requests/1/diffs"),
        Some(pt),
        None,
        &[],
    )
    .await;
    assert_eq!(diffs.body.as_array().map(Vec::len), Some(2));
    let commits = call(
        "GET",
        &format!("{base}/projects/grp%2Fsub%2Fproj/merge_requests/1/commits"),
        Some(pt),
        None,
        &[],
    )
    .await;
    assert_eq!(commits.body[0]["id"], json!(sha));
    let sts = call(
        "GET",
        &format!("{base}/projects/grp%2Fsub%2Fproj/repository/commits/{sha}/statuses"),
        Some(pt),
        None,
        &[],
    )
    .await;
    assert_eq!(sts.body[0]["name"], "pullwarden/gate/default");
    let dep = call("POST", &format!("{base}/projects/{}/deployments", info.id), Some(pt), Some(json!({"environment": "pr-1", "sha": sha, "ref": "feature", "tag": false, "status": "running"})), &[]).await;
    assert_eq!(dep.status, StatusCode::CREATED);
    let did = dep.body["id"].as_u64().expect("id");
    let upd = call(
        "PUT",
        &format!("{base}/projects/{}/deployments/{did}", info.id),
        Some(pt),
        Some(json!({"status": "success"})),
        &[],
    )
    .await;
    assert_eq!(upd.body["status"], "success");
    let envs = call(
        "GET",
        &format!("{base}/projects/{}/environments", info.id),
        Some(pt),
        None,
        &[],
    )
    .await;
    assert_eq!(envs.body[0]["name"], "pr-1");
    let deps = emu.deployments("grp/sub/proj").await.expect("deployments");
    assert_eq!(
        deps[0]
            .statuses
            .iter()
            .map(|s| s.state.as_str())
            .collect::<Vec<_>>(),
        ["running", "success"]
    );
    // Wrong token: GitLab's 401 shape.
    let bad = call(
        "GET",
        &format!("{base}/projects/{}", info.id),
        Some(("private-token", "nope")),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (bad.status, bad.body.clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
}

#[tokio::test]
async fn gitea_pulls_statuses_and_comments() {
    let emu = start().await;
    let sha = repo_with_pr(&emu, Forge::Gitea, "org/svc").await;
    emu.add_review("org/svc", 1, "carol", "CHANGES_REQUESTED")
        .await
        .expect("review");
    let base = emu.gitea_api_url();
    let auth = format!("token {TOKEN}");
    let a = Some(("authorization", auth.as_str()));
    let prs = call(
        "GET",
        &format!("{base}/repos/org/svc/pulls?state=open"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(
        (
            prs.body[0]["number"].as_u64(),
            prs.body[0]["head"]["sha"].as_str()
        ),
        (Some(1), Some(sha.as_str()))
    );
    assert_eq!(header(&prs.headers, "x-total-count"), "1");
    let files = call(
        "GET",
        &format!("{base}/repos/org/svc/pulls/1/files"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(files.body.as_array().map(Vec::len), Some(2));
    let reviews = call(
        "GET",
        &format!("{base}/repos/org/svc/pulls/1/reviews"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(reviews.body[0]["state"], "REQUEST_CHANGES");
    let commits = call(
        "GET",
        &format!("{base}/repos/org/svc/pulls/1/commits"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(commits.body[0]["sha"], json!(sha));
    let branches = call(
        "GET",
        &format!("{base}/repos/org/svc/branches"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(branches.body.as_array().map(Vec::len), Some(2));
    let st = call(
        "POST",
        &format!("{base}/repos/org/svc/statuses/{sha}"),
        a,
        Some(json!({"state": "warning", "context": "pw", "description": "d"})),
        &[],
    )
    .await;
    assert_eq!(st.status, StatusCode::CREATED);
    let combined = call(
        "GET",
        &format!("{base}/repos/org/svc/commits/feature/status"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(
        (
            combined.body["state"].as_str(),
            combined.body["total_count"].as_u64()
        ),
        (Some("warning"), Some(1))
    );
    let c = call(
        "POST",
        &format!("{base}/repos/org/svc/issues/1/comments"),
        a,
        Some(json!({"body": "hi"})),
        &[],
    )
    .await;
    let cid = c.body["id"].as_u64().expect("id");
    call(
        "PATCH",
        &format!("{base}/repos/org/svc/issues/comments/{cid}"),
        a,
        Some(json!({"body": "hi again"})),
        &[],
    )
    .await;
    let list = call(
        "GET",
        &format!("{base}/repos/org/svc/issues/1/comments"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(list.body[0]["body"], "hi again");
    assert_eq!(
        emu.comments("org/svc", 1).await.expect("comments")[0].edit_count,
        1
    );
    let missing = call(
        "GET",
        &format!("{base}/repos/org/svc/releases"),
        a,
        None,
        &[],
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        missing.body["message"]
            .as_str()
            .expect("message")
            .contains("/api/v1/repos/org/svc/releases")
    );
}

fn git(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn git_smart_http_serves_stock_git_and_libgit2() {
    let emu = start().await;
    let sha = repo_with_pr(&emu, Forge::Github, "acme/app").await;
    emu.create_repo(RepoSpec {
        private: true,
        ..repo_spec(Forge::Gitlab, "grp/sub/secret")
    })
    .await
    .expect("private repo");
    let dir = tempfile::tempdir().expect("tmp");
    let url = emu.clone_url("acme/app");
    let d = dir.path().to_path_buf();
    let (url2, d2, sha2) = (url.clone(), d.clone(), sha.clone());
    tokio::task::spawn_blocking(move || {
        let refs = git(&["ls-remote", &url2], &d2);
        assert!(
            refs.contains(&format!("{sha2}\trefs/heads/feature")),
            "{refs}"
        );
        assert!(
            refs.contains(&format!("{sha2}\trefs/pull/1/head")),
            "{refs}"
        );
        git(&["clone", "--quiet", &url2, "stock"], &d2);
        assert_eq!(
            git(&["rev-parse", "origin/feature"], &d2.join("stock")).trim(),
            sha2
        );
        assert_eq!(
            std::fs::read_to_string(d2.join("stock/README.md")).expect("readme"),
            "# app\n"
        );
        // Protocol v0 as well as v2, and fetching the PR ref.
        git(&["-c", "protocol.version=0", "ls-remote", &url2], &d2);
        git(
            &["fetch", "--quiet", "origin", "refs/pull/1/head"],
            &d2.join("stock"),
        );
    })
    .await
    .expect("stock git");

    // libgit2: anonymous public clone; private clone with a token as the password.
    let (url3, d3, sha3) = (url.clone(), d.clone(), sha.clone());
    let private_url = emu.clone_url("grp/sub/secret");
    tokio::task::spawn_blocking(move || {
        let repo = git2::Repository::clone(&url3, d3.join("libgit2")).expect("libgit2 clone");
        let feature = repo
            .find_reference("refs/remotes/origin/feature")
            .expect("feature ref");
        assert_eq!(feature.target().expect("oid").to_string(), sha3);
        assert!(
            git2::Repository::clone(&private_url, d3.join("anon")).is_err(),
            "private repo needs credentials"
        );
        let mut cb = git2::RemoteCallbacks::new();
        cb.credentials(|_, _, _| git2::Cred::userpass_plaintext("oauth2", TOKEN));
        let mut fo = git2::FetchOptions::new();
        fo.remote_callbacks(cb);
        let mut b = git2::build::RepoBuilder::new();
        b.fetch_options(fo);
        b.clone(&private_url, &d3.join("authed"))
            .expect("authenticated libgit2 clone");
    })
    .await
    .expect("libgit2");
    // Pushing over HTTP is refused: the admin API is the only writer.
    let r = call("POST", &format!("{url}/git-receive-pack"), None, None, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Follows `Link: rel="next"` from `url`, returning every item and the pages fetched.
async fn follow_links(url: &str, auth: (&str, &str)) -> (Vec<Value>, Vec<Resp>) {
    let mut items = Vec::new();
    let mut pages = Vec::new();
    let mut next = Some(url.to_string());
    while let Some(u) = next.take() {
        let r = call("GET", &u, Some(auth), None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{u}: {}", r.body);
        items.extend(r.body.as_array().cloned().unwrap_or_default());
        let link = header(&r.headers, "link");
        next = link
            .split(',')
            .find(|p| p.contains("rel=\"next\""))
            .and_then(|p| {
                let s = p.find('<')? + 1;
                let e = p.find('>')?;
                Some(p[s..e].to_string())
            });
        pages.push(r);
        assert!(pages.len() < 50, "runaway pagination");
    }
    (items, pages)
}

#[tokio::test]
async fn pagination_returns_everything_across_pages() {
    let emu = start().await;
    for (forge, path) in [
        (Forge::Github, "acme/app"),
        (Forge::Gitlab, "grp/proj"),
        (Forge::Gitea, "org/svc"),
    ] {
        emu.create_repo(repo_spec(forge, path)).await.expect("repo");
        let files: Vec<(String, String)> = (0..65)
            .map(|i| (format!("k8s/f{i:03}.yaml"), format!("n: {i}\n")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        emu.push(path, push("many", &refs, "bob"))
            .await
            .expect("push");
        emu.open_pull(path, pull("many", "Many files", "bob"))
            .await
            .expect("pr");
        for i in 0..6 {
            emu.push(path, push(&format!("b{i}"), &[("x.txt", "x")], "bob"))
                .await
                .expect("push");
            emu.open_pull(path, pull(&format!("b{i}"), &format!("PR {i}"), "bob"))
                .await
                .expect("pr");
        }
    }
    let auth = format!("token {TOKEN}");
    let gh_auth = ("authorization", auth.as_str());

    // GitHub: default 30 per page, rel="next"/"last".
    let (files, pages) = follow_links(
        &format!("{}/repos/acme/app/pulls/1/files", emu.url()),
        gh_auth,
    )
    .await;
    assert_eq!((files.len(), pages.len()), (65, 3));
    assert!(header(&pages[0].headers, "link").contains("page=3&per_page=30>; rel=\"last\""));
    let names: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f["filename"].as_str())
        .collect();
    assert_eq!(names.len(), 65);
    let (prs, pages) = follow_links(
        &format!("{}/repos/acme/app/pulls?state=open&per_page=2", emu.url()),
        gh_auth,
    )
    .await;
    assert_eq!((prs.len(), pages.len()), (7, 4));
    let big = call(
        "GET",
        &format!("{}/repos/acme/app/pulls/1/files?per_page=1000", emu.url()),
        Some(gh_auth),
        None,
        &[],
    )
    .await;
    assert_eq!(
        big.body.as_array().map(Vec::len),
        Some(65),
        "per_page above 100 is capped, not rejected"
    );
    assert!(
        header(&big.headers, "link").is_empty(),
        "one page needs no Link"
    );

    // GitLab: X-Next-Page / X-Total(-Pages) and Link.
    let pt = ("private-token", TOKEN);
    let (diffs, pages) = follow_links(
        &format!(
            "{}/projects/grp%2Fproj/merge_requests/1/diffs?per_page=20",
            emu.gitlab_api_url()
        ),
        pt,
    )
    .await;
    assert_eq!((diffs.len(), pages.len()), (65, 4));
    let h = &pages[0].headers;
    assert_eq!(
        (
            header(h, "x-next-page"),
            header(h, "x-page"),
            header(h, "x-per-page"),
            header(h, "x-total"),
            header(h, "x-total-pages")
        ),
        ("2".into(), "1".into(), "20".into(), "65".into(), "4".into())
    );
    assert_eq!(header(&pages[3].headers, "x-next-page"), "");
    let (mrs, _) = follow_links(
        &format!(
            "{}/projects/grp%2Fproj/merge_requests?state=opened&per_page=3",
            emu.gitlab_api_url()
        ),
        pt,
    )
    .await;
    assert_eq!(mrs.len(), 7);

    // Gitea: page + limit (max 50), Link and X-Total-Count.
    let (gfiles, pages) = follow_links(
        &format!(
            "{}/repos/org/svc/pulls/1/files?limit=50",
            emu.gitea_api_url()
        ),
        gh_auth,
    )
    .await;
    assert_eq!((gfiles.len(), pages.len()), (65, 2));
    assert_eq!(header(&pages[0].headers, "x-total-count"), "65");
}

#[tokio::test]
async fn etags_answer_304_without_spending_quota_and_rate_limits_bite() {
    let emu = start().await;
    repo_with_pr(&emu, Forge::Github, "acme/app").await;
    let url = format!("{}/repos/acme/app/pulls", emu.url());
    let auth = format!("token {TOKEN}");
    let a = Some(("authorization", auth.as_str()));
    let r1 = call("GET", &url, a, None, &[]).await;
    let r2 = call("GET", &url, a, None, &[]).await;
    let remaining = |r: &Resp| {
        header(&r.headers, "x-ratelimit-remaining")
            .parse::<u32>()
            .expect("remaining")
    };
    assert_eq!(
        remaining(&r1) - 1,
        remaining(&r2),
        "each request is charged"
    );
    assert_eq!(header(&r1.headers, "x-ratelimit-limit"), "5000");
    assert_eq!(header(&r1.headers, "x-ratelimit-resource"), "core");
    let etag = header(&r1.headers, "etag");
    assert!(!etag.is_empty());
    assert_eq!(
        etag,
        header(&r2.headers, "etag"),
        "identical bodies, identical ETags"
    );
    for _ in 0..3 {
        let r = call("GET", &url, a, None, &[("if-none-match", etag.as_str())]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert_eq!(r.body, Value::Null);
        assert_eq!(remaining(&r), remaining(&r2), "a 304 is free");
    }
    // A change invalidates the ETag.
    emu.add_label("acme/app", 1, "keep").await.expect("label");
    let r3 = call("GET", &url, a, None, &[("if-none-match", etag.as_str())]).await;
    assert_eq!(r3.status, StatusCode::OK);
    assert_eq!(remaining(&r3), remaining(&r2) - 1);
    // /rate_limit is free and agrees.
    let rl = call("GET", &format!("{}/rate_limit", emu.url()), a, None, &[]).await;
    assert_eq!(
        rl.body["resources"]["core"]["remaining"].as_u64(),
        Some(remaining(&r3) as u64)
    );

    // Exhaustion: 403 with remaining 0, and the handler did not run (no comment created).
    emu.set_rate_limit(
        TOKEN,
        RateLimitSpec {
            remaining: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("set");
    let r = call(
        "POST",
        &format!("{}/repos/acme/app/issues/1/comments", emu.url()),
        a,
        Some(json!({"body": "x"})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(header(&r.headers, "x-ratelimit-remaining"), "0");
    assert!(
        r.body["message"]
            .as_str()
            .expect("message")
            .starts_with("API rate limit exceeded")
    );
    assert!(
        emu.comments("acme/app", 1)
            .await
            .expect("comments")
            .is_empty()
    );

    // GitLab headers decrease too; exhausted → 429 with Retry-After.
    emu.create_repo(repo_spec(Forge::Gitlab, "grp/proj"))
        .await
        .expect("repo");
    emu.add_token(TokenSpec {
        token: "glpat-x".into(),
        login: "bob".into(),
        rate_limit: Some(2),
        ..Default::default()
    })
    .await
    .expect("token");
    let gl = format!("{}/projects/grp%2Fproj", emu.gitlab_api_url());
    let g1 = call("GET", &gl, Some(("private-token", "glpat-x")), None, &[]).await;
    assert_eq!(
        (
            header(&g1.headers, "ratelimit-limit"),
            header(&g1.headers, "ratelimit-remaining")
        ),
        ("2".into(), "1".into())
    );
    call("GET", &gl, Some(("private-token", "glpat-x")), None, &[]).await;
    let g3 = call("GET", &gl, Some(("private-token", "glpat-x")), None, &[]).await;
    assert_eq!(g3.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!header(&g3.headers, "retry-after").is_empty());

    // Bad credentials are 401 in GitHub's shape; private repos are 404 to those who can't see them.
    let bad = call(
        "GET",
        &url,
        Some(("authorization", "token wrong")),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (bad.status, bad.body["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Bad credentials"))
    );
    emu.create_repo(RepoSpec {
        private: true,
        ..repo_spec(Forge::Github, "acme/secret")
    })
    .await
    .expect("private");
    emu.add_token(TokenSpec {
        token: "narrow".into(),
        login: "eve".into(),
        repos: Some(vec!["acme/app".into()]),
        ..Default::default()
    })
    .await
    .expect("t");
    let hidden = call(
        "GET",
        &format!("{}/repos/acme/secret", emu.url()),
        Some(("authorization", "token narrow")),
        None,
        &[],
    )
    .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let anon = call(
        "GET",
        &format!("{}/repos/acme/secret", emu.url()),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(anon.status, StatusCode::NOT_FOUND);
    assert_eq!(
        header(&anon.headers, "x-ratelimit-limit"),
        "60",
        "anonymous callers get 60/hour"
    );
    emu.set_rate_limit(
        TOKEN,
        RateLimitSpec {
            limit: Some(5000),
            ..Default::default()
        },
    )
    .await
    .expect("refill");
    let seen = call(
        "GET",
        &format!("{}/repos/acme/secret", emu.url()),
        Some(("authorization", &format!("Bearer {TOKEN}"))),
        None,
        &[],
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
}

#[tokio::test]
async fn fault_rules_apply_and_expire() {
    let emu = start().await;
    repo_with_pr(&emu, Forge::Github, "acme/app").await;
    emu.token("other", "bob").await.expect("token");
    let url = format!("{}/repos/acme/app/pulls", emu.url());
    let auth = format!("token {TOKEN}");
    let a = Some(("authorization", auth.as_str()));
    let fault = |action, times| FaultSpec {
        method: Some("GET".into()),
        path: "/repos/*/pulls".into(),
        forge: None,
        token: None,
        action,
        times,
    };

    emu.add_fault(fault(FaultAction::Status { status: 503 }, Some(2)))
        .await
        .expect("fault");
    assert_eq!(
        call("GET", &url, a, None, &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call("GET", &url, a, None, &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call("GET", &url, a, None, &[]).await.status,
        StatusCode::OK,
        "expired after 2"
    );
    assert!(emu.faults().await.expect("faults").is_empty());

    emu.add_fault(fault(
        FaultAction::TooManyRequests { retry_after: 7 },
        Some(1),
    ))
    .await
    .expect("fault");
    let r = call("GET", &url, a, None, &[]).await;
    assert_eq!(
        (r.status, header(&r.headers, "retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, "7".to_string())
    );

    emu.add_fault(fault(
        FaultAction::SecondaryRateLimit { retry_after: 60 },
        Some(1),
    ))
    .await
    .expect("fault");
    let r = call("GET", &url, a, None, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(header(&r.headers, "retry-after"), "60");
    assert!(
        r.body["message"]
            .as_str()
            .expect("msg")
            .starts_with("You have exceeded a secondary rate limit")
    );

    emu.add_fault(fault(FaultAction::Latency { millis: 300 }, Some(1)))
        .await
        .expect("fault");
    let t = Instant::now();
    assert_eq!(call("GET", &url, a, None, &[]).await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));

    emu.add_fault(fault(FaultAction::DropConnection, None))
        .await
        .expect("fault");
    let dropped = reqwest::Client::new()
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await;
    assert!(dropped.is_err(), "connection dropped without a response");
    emu.clear_faults().await.expect("clear");

    // Scoped to one token and one forge; lasts until cleared when `times` is None.
    emu.add_fault(FaultSpec {
        token: Some("other".into()),
        forge: Some(Forge::Github),
        ..fault(FaultAction::Status { status: 500 }, None)
    })
    .await
    .expect("fault");
    assert_eq!(call("GET", &url, a, None, &[]).await.status, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(
            call(
                "GET",
                &url,
                Some(("authorization", "token other")),
                None,
                &[]
            )
            .await
            .status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    emu.clear_faults().await.expect("clear");
    assert_eq!(
        call(
            "GET",
            &url,
            Some(("authorization", "token other")),
            None,
            &[]
        )
        .await
        .status,
        StatusCode::OK
    );
    // Git over HTTP can be broken too.
    emu.add_fault(FaultSpec {
        method: None,
        path: "/acme/app.git/*".into(),
        forge: None,
        token: None,
        action: FaultAction::Status { status: 502 },
        times: Some(1),
    })
    .await
    .expect("fault");
    let r = call(
        "GET",
        &format!(
            "{}/info/refs?service=git-upload-pack",
            emu.clone_url("acme/app")
        ),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

/// A webhook receiver on a free port; answers 200 and keeps every request.
async fn receiver() -> (String, Inbox) {
    let inbox = Inbox::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(inbox): axum::extract::State<Inbox>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    inbox.0.lock().expect("lock").push((headers, body));
                    StatusCode::OK
                },
            ),
        )
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

fn hmac256(secret: &str, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn template_keys(rel: &str) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).expect("fixture"))
            .expect("json");
    v.as_object().expect("object").keys().cloned().collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

async fn received(inbox: &Inbox, n: usize) -> Vec<(HeaderMap, Value, Bytes)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let got = inbox.0.lock().expect("lock");
            if got.len() >= n {
                return got
                    .iter()
                    .map(|(h, b)| {
                        (
                            h.clone(),
                            serde_json::from_slice(b).expect("json body"),
                            b.clone(),
                        )
                    })
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} webhooks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn github_webhooks_are_signed_ordered_and_shaped_like_the_fixtures() {
    let emu = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    install_app(&emu, dir.path()).await;
    let (url, inbox) = receiver().await;
    emu.create_repo(repo_spec(Forge::Github, "acme/app"))
        .await
        .expect("repo");
    emu.push("acme/app", push("feature", &[("a.yaml", "a: 1\n")], "bob"))
        .await
        .expect("push");
    emu.add_hook(
        "acme/app",
        HookSpec {
            url: url.clone(),
            secret: Some("s3cret".into()),
            events: vec![],
        },
    )
    .await
    .expect("hook");
    emu.open_pull(
        "acme/app",
        PullSpec {
            draft: true,
            ..pull("feature", "Feature", "bob")
        },
    )
    .await
    .expect("pr");
    emu.update_pull(
        "acme/app",
        1,
        PullUpdate {
            draft: Some(false),
            ..Default::default()
        },
    )
    .await
    .expect("ready");
    emu.add_label("acme/app", 1, "preview")
        .await
        .expect("label");
    emu.remove_label("acme/app", 1, "preview")
        .await
        .expect("unlabel");
    let pushed = emu
        .push_to_pull("acme/app", 1, push("", &[("a.yaml", "a: 2\n")], "bob"))
        .await
        .expect("sync");
    emu.add_review("acme/app", 1, "carol", "APPROVED")
        .await
        .expect("review");
    emu.add_comment("acme/app", 1, "carol", "/ok-to-preview")
        .await
        .expect("comment");
    emu.close_pull("acme/app", 1).await.expect("close");
    emu.reopen_pull("acme/app", 1).await.expect("reopen");
    let merged = emu
        .merge_pull("acme/app", 1, Some("carol"))
        .await
        .expect("merge");

    let expected = [
        ("ping", None),
        ("pull_request", Some("opened")),
        ("pull_request", Some("ready_for_review")),
        ("pull_request", Some("labeled")),
        ("pull_request", Some("unlabeled")),
        ("push", None),
        ("pull_request", Some("synchronize")),
        ("pull_request_review", Some("submitted")),
        ("issue_comment", Some("created")),
        ("pull_request", Some("closed")),
        ("pull_request", Some("reopened")),
        ("push", None),
        ("pull_request", Some("closed")),
    ];
    let got = received(&inbox, expected.len()).await;
    assert_eq!(got.len(), expected.len());
    for ((h, v, raw), (event, action)) in got.iter().zip(expected) {
        assert_eq!(header(h, "x-github-event"), event);
        assert_eq!(v["action"].as_str(), action, "{event}");
        assert!(header(h, "user-agent").starts_with("GitHub-Hookshot/"));
        assert!(!header(h, "x-github-delivery").is_empty());
        assert_eq!(
            header(h, "x-hub-signature-256"),
            format!("sha256={}", hmac256("s3cret", raw))
        );
        let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(b"s3cret").expect("key");
        m.update(raw);
        assert_eq!(
            header(h, "x-hub-signature"),
            format!("sha1={}", hex::encode(m.finalize().into_bytes()))
        );
        let fixture = match (event, action) {
            ("ping", _) => "github/webhooks/ping.json".to_string(),
            ("push", _) => "github/webhooks/push.branch-created.json".to_string(),
            ("pull_request_review", _) => {
                "github/webhooks/pull_request_review.submitted.json".to_string()
            }
            ("issue_comment", _) => "github/webhooks/issue_comment.created.json".to_string(),
            (_, Some(a)) => format!("github/webhooks/pull_request.{a}.json"),
            _ => unreachable!(),
        };
        assert_eq!(
            keys(v),
            template_keys(&fixture),
            "{event} {action:?} top-level keys"
        );
    }
    let (_, opened, _) = &got[1];
    assert_eq!(
        (
            opened["number"].as_u64(),
            opened["pull_request"]["draft"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert_eq!(opened["installation"]["id"], 77);
    assert_eq!(got[3].1["label"]["name"], "preview");
    assert_eq!(got[6].1["after"], json!(pushed.after));
    assert_eq!(got[6].1["pull_request"]["head"]["sha"], json!(pushed.after));
    assert!(
        got[8].1["issue"]["pull_request"]["url"].is_string(),
        "comment on a PR has issue.pull_request"
    );
    assert_eq!(got[9].1["pull_request"]["merged"], false);
    let last = &got[12].1["pull_request"];
    assert_eq!(
        (last["merged"].as_bool(), last["merge_commit_sha"].as_str()),
        (Some(true), merged.merge_commit_sha.as_deref())
    );
    assert_eq!(got[11].1["after"], json!(merged.merge_commit_sha));

    // Redelivery re-sends the same bytes with the same GUID; recorded as a redelivery.
    let deliveries = emu
        .wait_for_deliveries("acme/app", expected.len(), Duration::from_secs(10))
        .await
        .expect("deliveries");
    assert!(
        deliveries
            .iter()
            .all(|d| d.outcome == "delivered" && d.status_code == Some(200))
    );
    let again = emu.redeliver(deliveries[1].id).await.expect("redeliver");
    let got = received(&inbox, expected.len() + 1).await;
    let (h, _, raw) = got.last().expect("redelivered");
    assert_eq!(header(h, "x-github-delivery"), deliveries[1].guid);
    assert_eq!(raw.as_ref(), deliveries[1].body.as_bytes());
    assert!(again.redelivery);

    // A dead receiver is recorded as failed and breaks nothing.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/gone", l.local_addr().expect("addr"))
    };
    emu.add_hook(
        "acme/app",
        HookSpec {
            url: dead,
            secret: None,
            events: vec!["push".into()],
        },
    )
    .await
    .expect("hook");
    emu.push("acme/app", push("main", &[("z", "z")], "bob"))
        .await
        .expect("push");
    let all = emu
        .wait_for_deliveries("acme/app", expected.len() + 4, Duration::from_secs(15))
        .await
        .expect("deliveries");
    assert!(
        all.iter()
            .any(|d| d.outcome == "failed" && d.error.is_some())
    );
    assert_eq!(
        gh(&emu, "GET", "/repos/acme/app", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gitlab_and_gitea_webhooks_use_their_headers_and_shapes() {
    let emu = start().await;
    let (url, inbox) = receiver().await;
    emu.create_repo(repo_spec(Forge::Gitlab, "grp/sub/proj"))
        .await
        .expect("repo");
    emu.push(
        "grp/sub/proj",
        push("feature", &[("a.yaml", "a: 1\n")], "bob"),
    )
    .await
    .expect("push");
    emu.add_hook(
        "grp/sub/proj",
        HookSpec {
            url: url.clone(),
            secret: Some("gl-token".into()),
            events: vec![],
        },
    )
    .await
    .expect("hook");
    emu.open_pull("grp/sub/proj", pull("feature", "MR", "bob"))
        .await
        .expect("mr");
    emu.push_to_pull("grp/sub/proj", 1, push("", &[("a.yaml", "a: 2\n")], "bob"))
        .await
        .expect("sync");
    emu.add_comment("grp/sub/proj", 1, "carol", "looks good")
        .await
        .expect("note");
    emu.merge_pull("grp/sub/proj", 1, None)
        .await
        .expect("merge");
    let got = received(&inbox, 6).await;
    let events: Vec<(String, Option<String>)> = got
        .iter()
        .map(|(h, v, _)| {
            (
                header(h, "x-gitlab-event"),
                v["object_attributes"]["action"]
                    .as_str()
                    .map(str::to_string),
            )
        })
        .collect();
    let e = |a: &str, b: Option<&str>| (a.to_string(), b.map(str::to_string));
    assert_eq!(
        events,
        vec![
            e("Merge Request Hook", Some("open")),
            e("Push Hook", None),
            e("Merge Request Hook", Some("update")),
            e("Note Hook", Some("create")),
            e("Push Hook", None),
            e("Merge Request Hook", Some("merge")),
        ]
    );
    for (h, v, _) in &got {
        assert_eq!(header(h, "x-gitlab-token"), "gl-token");
        assert!(!header(h, "x-gitlab-event-uuid").is_empty());
        let fixture = match header(h, "x-gitlab-event").as_str() {
            "Merge Request Hook" => "gitlab/webhooks/merge_request.open.json",
            "Push Hook" => "gitlab/webhooks/push.json",
            _ => "gitlab/webhooks/note.merge_request.json",
        };
        assert_eq!(keys(v), template_keys(fixture));
    }
    assert!(
        got[2].1["object_attributes"]["oldrev"].is_string(),
        "an update with new commits carries oldrev"
    );

    // Gitea: hex signature without prefix, duplicated X-GitHub-* headers.
    emu.create_repo(repo_spec(Forge::Gitea, "org/svc"))
        .await
        .expect("repo");
    emu.push("org/svc", push("feature", &[("a", "1")], "bob"))
        .await
        .expect("push");
    emu.add_hook(
        "org/svc",
        HookSpec {
            url,
            secret: Some("gt".into()),
            events: vec![],
        },
    )
    .await
    .expect("hook");
    emu.push("org/svc", push("feature", &[("a", "2")], "bob"))
        .await
        .expect("push");
    emu.open_pull("org/svc", pull("feature", "PR", "bob"))
        .await
        .expect("pr");
    emu.add_label("org/svc", 1, "preview").await.expect("label");
    let got = received(&inbox, 9).await;
    let gitea = &got[6..];
    for (h, _, raw) in gitea {
        assert_eq!(header(h, "x-gitea-signature"), hmac256("gt", raw));
        assert_eq!(header(h, "x-github-event"), header(h, "x-gitea-event"));
        assert_eq!(
            header(h, "x-github-delivery"),
            header(h, "x-gitea-delivery")
        );
    }
    assert_eq!(header(&gitea[0].0, "x-gitea-event"), "push");
    let mut want = template_keys("gitea/webhooks/push.json");
    want.remove("secret");
    let have = keys(&gitea[0].1);
    assert!(
        have.is_superset(&want),
        "push payload keys {have:?} ⊇ {want:?}"
    );
    assert_eq!(
        (
            header(&gitea[1].0, "x-gitea-event"),
            gitea[1].1["action"].as_str()
        ),
        ("pull_request".to_string(), Some("opened"))
    );
    assert_eq!(
        header(&gitea[2].0, "x-gitea-event-type"),
        "pull_request_label"
    );
}

#[tokio::test]
async fn request_counts_are_kept_per_client_route_and_status() {
    let emu = start().await;
    repo_with_pr(&emu, Forge::Github, "acme/app").await;
    emu.token("argocd", "argo").await.expect("token");
    emu.reset_request_counts().await.expect("reset");
    let url = format!("{}/repos/acme/app/pulls", emu.url());
    let pw = format!("token {TOKEN}");
    let r = call("GET", &url, Some(("authorization", &pw)), None, &[]).await;
    let etag = header(&r.headers, "etag");
    call(
        "GET",
        &url,
        Some(("authorization", &pw)),
        None,
        &[("if-none-match", etag.as_str())],
    )
    .await;
    for _ in 0..3 {
        call(
            "GET",
            &format!("{}/repos/acme/app/pulls/1", emu.url()),
            Some(("authorization", "token argocd")),
            None,
            &[],
        )
        .await;
    }
    call("GET", &url, None, None, &[]).await;
    call(
        "GET",
        &url,
        Some(("authorization", "token wrong")),
        None,
        &[],
    )
    .await;
    let counts = emu.request_counts().await.expect("counts");
    let mine = &counts.clients[TOKEN];
    assert_eq!((mine.total, mine.not_modified), (2, 1));
    assert_eq!(mine.routes["GET /repos/{owner}/{repo}/pulls"]["304"], 1);
    // The 304 was not charged; the 200 was.
    assert_eq!(mine.charged, 1);
    assert_eq!(mine.charged_routes["GET /repos/{owner}/{repo}/pulls"], 1);
    assert_eq!(
        counts.route("argocd", "GET /repos/{owner}/{repo}/pulls/{number}"),
        3
    );
    assert_eq!(counts.clients["argocd"].charged, 3);
    assert_eq!(counts.total("anonymous"), 1);
    assert_eq!(
        counts.clients["invalid"].routes["GET /repos/{owner}/{repo}/pulls"]["401"],
        1
    );
    assert_eq!(counts.clients["invalid"].charged, 0);
    emu.reset_request_counts().await.expect("reset");
    assert!(
        emu.request_counts()
            .await
            .expect("counts")
            .clients
            .is_empty()
    );
    // Counts include git traffic, keyed by the same clients.
    let d = tempfile::tempdir().expect("tmp");
    let clone = emu.clone_url("acme/app");
    let dp = d.path().to_path_buf();
    tokio::task::spawn_blocking(move || git(&["ls-remote", &clone], &dp))
        .await
        .expect("ls-remote");
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(counts.route("anonymous", "GET /{repo}.git/info/refs"), 1);
    // Git traffic is not charged against the REST quota.
    assert_eq!(counts.clients["anonymous"].charged, 0);
}

#[tokio::test]
async fn fork_pull_requests_follow_the_head_in_the_fork() {
    let emu = start().await;
    let (url, inbox) = receiver().await;
    emu.create_repo(repo_spec(Forge::Github, "acme/app"))
        .await
        .expect("repo");
    let fork = emu
        .fork_repo("acme/app", "mallory/app")
        .await
        .expect("fork");
    assert_eq!(
        fork.branches,
        emu.branches("acme/app").await.expect("branches"),
        "a fork starts with the parent's history"
    );
    emu.push(
        "mallory/app",
        push("evil", &[("deploy/x.yaml", "kind: Secret\n")], "mallory"),
    )
    .await
    .expect("push");
    emu.add_hook(
        "acme/app",
        HookSpec {
            url,
            secret: None,
            events: vec!["pull_request".into()],
        },
    )
    .await
    .expect("hook");
    let pr = emu
        .open_pull(
            "acme/app",
            PullSpec {
                head_repo: Some("mallory/app".into()),
                ..pull("evil", "Fork PR", "mallory")
            },
        )
        .await
        .expect("fork pr");
    assert!(pr.fork);
    let r = gh(&emu, "GET", "/repos/acme/app/pulls/1", None).await;
    assert_eq!(r.body["head"]["repo"]["full_name"], "mallory/app");
    assert_eq!(r.body["head"]["repo"]["fork"], true);
    assert_eq!(r.body["head"]["label"], "mallory:evil");
    assert_eq!(r.body["base"]["repo"]["full_name"], "acme/app");
    assert_eq!(r.body["changed_files"], 1);
    let second = emu
        .push(
            "mallory/app",
            push("evil", &[("deploy/y.yaml", "b\n")], "mallory"),
        )
        .await
        .expect("push");
    let r = gh(&emu, "GET", "/repos/acme/app/pulls/1", None).await;
    assert_eq!(
        (
            r.body["head"]["sha"].clone(),
            r.body["changed_files"].clone()
        ),
        (json!(second.after), json!(2))
    );
    let (clone, after) = (emu.clone_url("acme/app"), second.after.clone());
    let d = tempfile::tempdir().expect("tmp");
    let dp = d.path().to_path_buf();
    let refs = tokio::task::spawn_blocking(move || git(&["ls-remote", &clone], &dp))
        .await
        .expect("ls-remote");
    assert!(
        refs.contains(&format!("{after}\trefs/pull/1/head")),
        "the base repository carries the fork head: {refs}"
    );
    let got = received(&inbox, 3).await;
    let actions: Vec<&str> = got
        .iter()
        .map(|(h, v, _)| {
            v["action"]
                .as_str()
                .unwrap_or(if header(h, "x-github-event") == "ping" {
                    "ping"
                } else {
                    "?"
                })
        })
        .collect();
    assert_eq!(actions, ["ping", "opened", "synchronize"]);
    assert_eq!(got[2].1["pull_request"]["head"]["sha"], json!(second.after));
}
