//! Pullwarden's forge layer (`pullwarden::forge`, `pullwarden::git`) against the forge emulator.
//!
//! Each test starts its own in-process emulator and talks to it only through the operator's
//! public client API (`ForgeClients` → `Arc<dyn Forge>`), then checks the emulator's side of the
//! story: per-token request counts (what was sent, what was a 304), comments and their edit
//! counts, statuses, check runs and deployments. No control plane is needed.
use std::sync::Arc;
use std::time::{Duration, Instant};

use pullwarden::forge::metrics::ConditionalLabels;
use pullwarden::forge::{
    Actor, BudgetConfig, CheckConclusion, CheckRunOutput, CheckRunStatus, CheckSource, CheckState,
    CommitStatus, Credentials, DeploymentRequest, DeploymentState, DeploymentStatusUpdate, Forge,
    ForgeClients, ForgeError, ForgeKind, ForgeMetrics, PullRequestState, RepoCoordinates,
    ReviewState, StatusState,
};
use pullwarden::git::{self, GitCache};
use pullwarden_emulator::{
    AppSpec, Emulator, EmulatorConfig, EmulatorHandle, FaultAction, FaultSpec, Forge as EmuForge,
    InstallationSpec, PullSpec, PushSpec, RateLimitSpec, RepoSpec, StatusSpec, TokenSpec,
};

const TOKEN: &str = "ghp_forge_alice";
const MARKER: &str = "<!-- pullwarden:preview -->";
const PULLS_ROUTE: &str = "GET /repos/{owner}/{repo}/pulls";

async fn start() -> EmulatorHandle {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    emu.token(TOKEN, "alice").await.expect("token");
    emu
}

/// Short waits so fault tests stay fast; the production defaults are the documented ones.
fn clients() -> ForgeClients {
    ForgeClients::new(
        ForgeMetrics::new(),
        BudgetConfig {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            max_rate_limit_wait: Duration::from_secs(3),
            default_secondary_wait: Duration::from_secs(2),
            ..BudgetConfig::default()
        },
    )
}

/// Built through serde so fields the emulator adds later keep their defaults here.
fn repo_spec(forge: EmuForge, path: &str, private: bool) -> RepoSpec {
    serde_json::from_value(serde_json::json!({ "forge": forge, "path": path, "private": private }))
        .expect("repo spec")
}

fn push(branch: &str, files: &[(&str, &str)]) -> PushSpec {
    PushSpec {
        branch: branch.into(),
        files: files
            .iter()
            .map(|(p, c)| (p.to_string(), Some(c.to_string())))
            .collect(),
        message: Some(format!("Change {branch}")),
        author: Some("bob".into()),
        ..Default::default()
    }
}

/// A repository with a `feature` branch and `n` open pull requests from it; returns the head SHA.
async fn repo_with_pulls(emu: &EmulatorHandle, forge: EmuForge, path: &str, n: u64) -> String {
    emu.create_repo(repo_spec(forge, path, false))
        .await
        .expect("repo");
    let pushed = emu
        .push(
            path,
            push(
                "feature",
                &[
                    ("deploy/app.yaml", "replicas: 2\n"),
                    ("README.md", "# changed\n"),
                ],
            ),
        )
        .await
        .expect("push");
    for i in 1..=n {
        emu.open_pull(
            path,
            PullSpec {
                head: "feature".into(),
                title: format!("Change {i}"),
                author: Some("bob".into()),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .expect("pull");
    }
    pushed.after
}

fn forge_for(
    clients: &ForgeClients,
    emu: &EmulatorHandle,
    kind: ForgeKind,
    path: &str,
    creds: Credentials,
) -> Arc<dyn Forge> {
    let api = match kind {
        ForgeKind::Github => emu.github_api_url(),
        ForgeKind::Gitlab => emu.gitlab_api_url(),
        ForgeKind::Gitea => emu.gitea_api_url(),
        ForgeKind::Git => String::new(),
    };
    let api = (!api.is_empty()).then_some(api);
    let coords =
        RepoCoordinates::parse(kind, &emu.clone_url(path), api.as_deref()).expect("coordinates");
    clients.client(kind, &coords, creds, None).expect("client")
}

fn fault(path: &str, action: FaultAction, times: Option<u32>) -> FaultSpec {
    FaultSpec {
        method: Some("GET".into()),
        path: path.into(),
        forge: None,
        token: None,
        action,
        times,
    }
}

fn route_statuses(
    counts: &pullwarden_emulator::RequestCounts,
    client: &str,
    route: &str,
) -> Vec<(String, u64)> {
    counts
        .clients
        .get(client)
        .and_then(|c| c.routes.get(route))
        .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

fn hits(clients: &ForgeClients, forge: &str) -> i64 {
    clients
        .metrics()
        .conditional_requests
        .get_or_create(&ConditionalLabels {
            forge: forge.into(),
            result: "hit".into(),
        })
        .get() as i64
}

#[tokio::test]
async fn github_lists_every_pull_across_pages_and_repolls_with_304s_only() {
    let emu = start().await;
    repo_with_pulls(&emu, EmuForge::Github, "acme/many", 150).await;
    let clients = clients();
    let forge = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/many",
        Credentials::token(TOKEN),
    );

    let prs = forge.list_open_pull_requests().await.expect("list");
    let mut numbers: Vec<u64> = prs.iter().map(|p| p.number).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=150).collect::<Vec<_>>(),
        "every PR across both pages"
    );
    assert!(
        prs.iter()
            .all(|p| p.state == PullRequestState::Open && p.labels == ["preview"] && !p.fork)
    );
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(
        counts.route(TOKEN, PULLS_ROUTE),
        2,
        "150 PRs at per_page=100 is two requests"
    );
    let before = forge.rate_limit().expect("rate limit seen");

    // Second poll of an unchanged repository: only 304s, no quota spent.
    emu.reset_request_counts().await.expect("reset");
    let again = forge.list_open_pull_requests().await.expect("list again");
    assert_eq!(again, prs);
    let counts = emu.request_counts().await.expect("counts");
    let alice = &counts.clients[TOKEN];
    assert_eq!(
        (alice.total, alice.not_modified),
        (2, 2),
        "{:?}",
        alice.routes
    );
    assert_eq!(
        forge.rate_limit().expect("rate limit").remaining,
        before.remaining,
        "304s are free"
    );
    assert_eq!(hits(&clients, "github"), 2);

    // A change is seen: the changed page is fetched again.
    emu.add_label("acme/many", 1, "keep").await.expect("label");
    let changed = forge
        .list_open_pull_requests()
        .await
        .expect("list after change");
    let first = changed.iter().find(|p| p.number == 1).expect("pr 1");
    assert!(first.labels.contains(&"keep".to_string()));
    assert_eq!(
        forge.rate_limit().expect("rate limit").remaining,
        before.remaining - 1
    );

    // Another repository with the same token shares the budget (one quota view).
    emu.create_repo(repo_spec(EmuForge::Github, "acme/other", false))
        .await
        .expect("repo");
    let other = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/other",
        Credentials::token(TOKEN),
    );
    assert_eq!(
        other.default_branch().await.expect("default branch"),
        "main"
    );
    assert_eq!(clients.budget_count(), 1);
    assert!(other.rate_limit().expect("shared").remaining < before.remaining);
}

#[tokio::test]
async fn github_faults_are_retried_waited_or_categorised_never_empty() {
    let emu = start().await;
    repo_with_pulls(&emu, EmuForge::Github, "acme/app", 1).await;
    let clients = clients();
    let forge = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/app",
        Credentials::token(TOKEN),
    );
    let pulls = "/repos/acme/app/pulls";

    // Two 500s, then success: retried within one call.
    emu.add_fault(fault(pulls, FaultAction::Status { status: 500 }, Some(2)))
        .await
        .expect("fault");
    assert_eq!(
        forge
            .list_open_pull_requests()
            .await
            .expect("retried")
            .len(),
        1
    );
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(
        route_statuses(&counts, TOKEN, PULLS_ROUTE),
        vec![("200".into(), 1), ("500".into(), 2)]
    );

    // A persistent 503: Transient after 3 attempts, never an empty list.
    emu.reset_request_counts().await.expect("reset");
    emu.add_fault(fault(pulls, FaultAction::Status { status: 503 }, None))
        .await
        .expect("fault");
    let e = forge
        .list_open_pull_requests()
        .await
        .expect_err("must fail");
    assert_eq!(e.category(), "Transient", "{e}");
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(
        route_statuses(&counts, TOKEN, PULLS_ROUTE),
        vec![("503".into(), 3)]
    );
    let e = forge.get_pull_request(1).await;
    assert!(e.is_ok(), "other routes unaffected: {e:?}");
    emu.clear_faults().await.expect("clear");

    // Dropped connections are network errors: retried, then Transient.
    emu.add_fault(fault(pulls, FaultAction::DropConnection, None))
        .await
        .expect("fault");
    assert_eq!(
        forge
            .list_open_pull_requests()
            .await
            .expect_err("dropped")
            .category(),
        "Transient"
    );
    emu.clear_faults().await.expect("clear");

    // 429 and GitHub's secondary limit with a short Retry-After: waited, then served.
    for action in [
        FaultAction::TooManyRequests { retry_after: 1 },
        FaultAction::SecondaryRateLimit { retry_after: 1 },
    ] {
        emu.add_fault(fault(pulls, action, Some(1)))
            .await
            .expect("fault");
        let t = Instant::now();
        assert_eq!(
            forge.list_open_pull_requests().await.expect("waited").len(),
            1
        );
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "waited for Retry-After"
        );
    }

    // 404 is NotFound (never "closed"); a bad token is AuthFailed.
    assert_eq!(
        forge
            .get_pull_request(999)
            .await
            .expect_err("missing")
            .category(),
        "NotFound"
    );
    let bad = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/app",
        Credentials::token("wrong"),
    );
    assert_eq!(
        bad.list_open_pull_requests()
            .await
            .expect_err("bad token")
            .category(),
        "AuthFailed"
    );

    // A secondary limit beyond the max wait: RateLimited at once, and nothing is sent until then.
    emu.add_fault(fault(
        pulls,
        FaultAction::SecondaryRateLimit { retry_after: 600 },
        Some(1),
    ))
    .await
    .expect("fault");
    let t = Instant::now();
    match forge.list_open_pull_requests().await {
        Err(ForgeError::RateLimited { reset, .. }) => {
            assert!(reset.as_second() >= jiff::Timestamp::now().as_second() + 590);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "did not sleep 600 s");
    emu.reset_request_counts().await.expect("reset");
    assert_eq!(
        forge
            .get_pull_request(1)
            .await
            .expect_err("blocked")
            .category(),
        "RateLimited"
    );
    assert_eq!(
        emu.request_counts().await.expect("counts").total(TOKEN),
        0,
        "no request while blocked"
    );

    // Primary quota exhausted: RateLimited with the reset time, then fail fast without sending.
    emu.add_token(TokenSpec {
        token: "ghp_exhausted".into(),
        login: "carol".into(),
        ..Default::default()
    })
    .await
    .expect("token");
    emu.set_rate_limit(
        "ghp_exhausted",
        RateLimitSpec {
            remaining: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("exhaust");
    let dry = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/app",
        Credentials::token("ghp_exhausted"),
    );
    assert_eq!(
        dry.list_open_pull_requests()
            .await
            .expect_err("exhausted")
            .category(),
        "RateLimited"
    );
    assert_eq!(dry.rate_limit().expect("seen").remaining, 0);
    let sent = emu
        .request_counts()
        .await
        .expect("counts")
        .total("ghp_exhausted");
    assert_eq!(
        dry.list_branches()
            .await
            .expect_err("still exhausted")
            .category(),
        "RateLimited"
    );
    assert_eq!(
        emu.request_counts()
            .await
            .expect("counts")
            .total("ghp_exhausted"),
        sent
    );
}

#[tokio::test]
async fn github_writes_sticky_comment_statuses_deployments_and_trust() {
    let emu = start().await;
    let sha = repo_with_pulls(&emu, EmuForge::Github, "acme/app", 1).await;
    let clients = clients();
    let forge = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/app",
        Credentials::token(TOKEN),
    );

    // Someone else quoting our marker is never taken over.
    emu.add_comment("acme/app", 1, "bob", &format!("{MARKER}\nI copied this"))
        .await
        .expect("comment");
    let mut ids = Vec::new();
    for body in [
        "Preview deploying",
        "Preview ready",
        "Preview ready at http://x",
    ] {
        ids.push(
            forge
                .upsert_sticky_section(1, MARKER, "preview", body)
                .await
                .expect("upsert"),
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "same comment every time: {ids:?}"
    );
    let comments = emu.comments("acme/app", 1).await.expect("comments");
    let ours: Vec<_> = comments.iter().filter(|c| c.user == "alice").collect();
    assert_eq!(ours.len(), 1, "one sticky comment: {comments:?}");
    assert_eq!(ours[0].edit_count, 2, "created once, edited twice");
    assert_eq!(
        ours[0].body,
        format!(
            "{MARKER}\n<!-- pullwarden:section preview -->\nPreview ready at http://x\n<!-- pullwarden:end preview -->\n"
        )
    );
    assert_eq!(
        comments
            .iter()
            .find(|c| c.user == "bob")
            .expect("bob")
            .edit_count,
        0
    );
    // Unchanged body: no write at all.
    forge
        .upsert_sticky_section(1, MARKER, "preview", "Preview ready at http://x")
        .await
        .expect("noop");
    let comments = emu.comments("acme/app", 1).await.expect("comments");
    assert_eq!(
        comments
            .iter()
            .find(|c| c.user == "alice")
            .expect("ours")
            .edit_count,
        2
    );
    assert_eq!(forge.list_comments(1).await.expect("comments").len(), 2);

    // Statuses: ours and an external CI's, merged per context; the description fits 140 chars.
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
    .expect("ci status");
    let long = "x".repeat(300);
    let status = CommitStatus::new("pullwarden/gate/default", StatusState::Failure, &long, None);
    forge
        .set_commit_status(&sha, &status)
        .await
        .expect("status");
    forge
        .set_commit_status(&sha, &status)
        .await
        .expect("status again");
    let checks = forge.checks_for_sha(&sha).await.expect("checks");
    let names: Vec<(&str, CheckState)> =
        checks.iter().map(|c| (c.name.as_str(), c.state)).collect();
    assert_eq!(
        names,
        vec![
            ("ci/build", CheckState::Success),
            ("pullwarden/gate/default", CheckState::Failure)
        ]
    );
    assert!(checks.iter().all(|c| c.source == CheckSource::Status));
    let written = emu
        .statuses("acme/app", Some(&sha))
        .await
        .expect("statuses");
    let ours = written
        .iter()
        .find(|s| s.context == "pullwarden/gate/default")
        .expect("ours");
    assert_eq!(
        ours.description
            .as_deref()
            .expect("description")
            .chars()
            .count(),
        140
    );

    // Deployments: created once, found again after a "restart", statuses recorded.
    assert_eq!(
        forge.find_deployment("pr-1", &sha).await.expect("find"),
        None
    );
    let req = DeploymentRequest {
        git_ref: "feature".into(),
        sha: sha.clone(),
        environment: "pr-1".into(),
        description: "Preview of #1".into(),
        transient: true,
        production: false,
    };
    let id = forge.create_deployment(&req).await.expect("deployment");
    assert_eq!(
        forge.find_deployment("pr-1", &sha).await.expect("find"),
        Some(id)
    );
    let update = DeploymentStatusUpdate {
        environment_url: Some("http://pr-1.preview".into()),
        ..Default::default()
    };
    forge
        .set_deployment_status(id, DeploymentState::Success, &update)
        .await
        .expect("deployment status");
    let deployments = emu.deployments("acme/app").await.expect("deployments");
    assert_eq!(deployments.len(), 1);
    let last = deployments[0].statuses.last().expect("status");
    assert_eq!(
        (last.state.as_str(), last.environment_url.as_deref()),
        ("success", Some("http://pr-1.preview"))
    );

    // Reviews, files, commits.
    emu.add_review("acme/app", 1, "carol", "APPROVED")
        .await
        .expect("review");
    let reviews = forge.list_reviews(1).await.expect("reviews");
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (reviews[0].user.as_str(), reviews[0].state),
        ("carol", ReviewState::Approved)
    );
    assert_eq!(reviews[0].commit_sha.as_deref(), Some(sha.as_str()));
    let mut files: Vec<String> = forge
        .list_changed_files(1)
        .await
        .expect("files")
        .into_iter()
        .map(|f| f.path)
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["README.md".to_string(), "deploy/app.yaml".to_string()]
    );
    let commits = forge.list_commits(1).await.expect("commits");
    assert_eq!(commits.last().expect("commit").sha, sha);

    // Trust: users list (case-insensitive) and team membership.
    emu.set_team_membership("acme", "reviewers", "carol", "member")
        .await
        .expect("team");
    let teams = vec!["acme/reviewers".to_string()];
    assert!(
        forge
            .is_trusted(&Actor::login("carol"), &[], &teams)
            .await
            .expect("trusted")
    );
    assert!(
        !forge
            .is_trusted(&Actor::login("dave"), &[], &teams)
            .await
            .expect("not trusted")
    );
    assert!(
        forge
            .is_trusted(&Actor::login("dave"), &["Dave".to_string()], &teams)
            .await
            .expect("listed")
    );

    // Close and merge are confirmed by reading the PR back.
    emu.open_pull(
        "acme/app",
        PullSpec {
            head: "feature".into(),
            title: "two".into(),
            ..Default::default()
        },
    )
    .await
    .expect("pull 2");
    emu.close_pull("acme/app", 1).await.expect("close");
    emu.merge_pull("acme/app", 2, None).await.expect("merge");
    assert_eq!(
        forge.get_pull_request(1).await.expect("pr 1").state,
        PullRequestState::Closed
    );
    assert_eq!(
        forge.get_pull_request(2).await.expect("pr 2").state,
        PullRequestState::Merged
    );
    assert!(
        forge
            .list_open_pull_requests()
            .await
            .expect("open")
            .is_empty()
    );

    // Check runs need a GitHub App.
    let run = CheckRunOutput {
        name: "pullwarden/gate/default".into(),
        head_sha: sha,
        status: CheckRunStatus::Completed,
        conclusion: Some(CheckConclusion::Success),
        title: "ok".into(),
        summary: "ok".into(),
        text: None,
        details_url: None,
    };
    assert_eq!(
        forge
            .upsert_check_run(&run)
            .await
            .expect_err("token")
            .category(),
        "Unsupported"
    );
}

#[tokio::test]
async fn github_app_installation_token_flow_and_check_runs() {
    let emu = start().await;
    let sha = repo_with_pulls(&emu, EmuForge::Github, "acme/app", 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = crate::support::rsa_keypair(dir.path());
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
    let clients = clients();
    let app = Credentials::github_app(4242, 77, private);
    let forge = forge_for(&clients, &emu, ForgeKind::Github, "acme/app", app.clone());

    assert_eq!(
        forge.list_open_pull_requests().await.expect("list").len(),
        1
    );
    assert_eq!(
        forge.default_branch().await.expect("default branch"),
        "main"
    );
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(
        counts.route("installation:77", PULLS_ROUTE),
        1,
        "{counts:?}"
    );
    assert_eq!(
        counts.total("app:4242"),
        1,
        "one installation token minted and reused: {counts:?}"
    );

    let mut run = CheckRunOutput {
        name: "pullwarden/gate/default".into(),
        head_sha: sha.clone(),
        status: CheckRunStatus::InProgress,
        conclusion: None,
        title: "Evaluating".into(),
        summary: "rules running".into(),
        text: None,
        details_url: None,
    };
    let first = forge.upsert_check_run(&run).await.expect("create");
    run.status = CheckRunStatus::Completed;
    run.conclusion = Some(CheckConclusion::Failure);
    run.title = "1/2 rules passed".into();
    run.text = Some("| rule | result |\n|---|---|\n| approvals | 0/1 |".into());
    let second = forge.upsert_check_run(&run).await.expect("update");
    assert_eq!(first, second, "updated in place");
    let runs = emu.check_runs("acme/app", Some(&sha)).await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0].status.as_str(), runs[0].conclusion.as_deref()),
        ("completed", Some("failure"))
    );
    let checks = forge.checks_for_sha(&sha).await.expect("checks");
    assert_eq!(checks.len(), 1);
    assert_eq!(
        (checks[0].source, checks[0].state),
        (CheckSource::CheckRun, CheckState::Failure)
    );

    // The installation token also serves git over https.
    let git_creds = forge.git_credentials().await.expect("git credentials");
    assert!(matches!(git_creds, Credentials::Token(_)), "{git_creds:?}");
    let refs = git::ls_remote(&emu.clone_url("acme/app"), &git_creds, None)
        .await
        .expect("ls-remote");
    assert!(
        refs.iter()
            .any(|(name, s)| name == "refs/heads/feature" && *s == sha)
    );

    // A key that does not belong to the App is an authentication failure, not an empty answer.
    let (wrong, _) = crate::support::rsa_keypair(tempfile::tempdir().expect("tempdir").path());
    let other = forge_for(
        &clients,
        &emu,
        ForgeKind::Github,
        "acme/app",
        Credentials::github_app(4242, 77, wrong),
    );
    assert_eq!(
        other
            .list_open_pull_requests()
            .await
            .expect_err("wrong key")
            .category(),
        "AuthFailed"
    );
}

#[tokio::test]
async fn gitlab_merge_requests_notes_statuses_and_deployments() {
    let emu = start().await;
    let path = "grp/sub/proj";
    let sha = repo_with_pulls(&emu, EmuForge::Gitlab, path, 105).await;
    let clients = clients();
    let forge = forge_for(
        &clients,
        &emu,
        ForgeKind::Gitlab,
        path,
        Credentials::token(TOKEN),
    );

    let mrs = forge.list_open_pull_requests().await.expect("list");
    assert_eq!(mrs.len(), 105, "both pages");
    assert!(
        mrs.iter()
            .all(|m| m.head_sha == sha && m.head_ref == "feature" && m.base_ref == "main")
    );
    let route = "GET /api/v4/projects/{id}/merge_requests";
    assert_eq!(
        emu.request_counts()
            .await
            .expect("counts")
            .route(TOKEN, route),
        2
    );
    emu.reset_request_counts().await.expect("reset");
    assert_eq!(forge.list_open_pull_requests().await.expect("again"), mrs);
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(
        counts.clients[TOKEN].not_modified, 2,
        "{:?}",
        counts.clients[TOKEN].routes
    );
    assert_eq!(counts.clients[TOKEN].total, 2);
    assert_eq!(hits(&clients, "gitlab"), 2);

    // Notes: the sticky comment is one note, edited in place.
    for body in ["one", "two", "three"] {
        forge
            .upsert_sticky_section(1, MARKER, "preview", body)
            .await
            .expect("note");
    }
    let notes = emu.comments(path, 1).await.expect("notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(
        (notes[0].edit_count, notes[0].body.as_str()),
        (
            2,
            format!("{MARKER}\n<!-- pullwarden:section preview -->\nthree\n<!-- pullwarden:end preview -->\n").as_str()
        )
    );

    // Statuses: repeated same-state writes are fine; GitLab vocabulary is mapped.
    let status = CommitStatus::new(
        "pullwarden/gate/default",
        StatusState::Failure,
        "0/1 approvals",
        None,
    );
    forge
        .set_commit_status(&sha, &status)
        .await
        .expect("status");
    forge
        .set_commit_status(&sha, &status)
        .await
        .expect("status again");
    let written = emu.statuses(path, Some(&sha)).await.expect("statuses");
    assert!(written.iter().all(|s| s.state == "failed"), "{written:?}");
    let checks = forge.checks_for_sha(&sha).await.expect("checks");
    assert_eq!(
        checks
            .iter()
            .map(|c| (c.name.as_str(), c.state))
            .collect::<Vec<_>>(),
        vec![("pullwarden/gate/default", CheckState::Failure)]
    );

    // Approvals, diffs, commits.
    emu.add_review(path, 1, "carol", "APPROVED")
        .await
        .expect("approve");
    let reviews = forge.list_reviews(1).await.expect("approvals");
    assert_eq!(
        reviews
            .iter()
            .map(|r| (r.user.as_str(), r.state))
            .collect::<Vec<_>>(),
        vec![("carol", ReviewState::Approved)]
    );
    let mut files: Vec<String> = forge
        .list_changed_files(1)
        .await
        .expect("diffs")
        .into_iter()
        .map(|f| f.path)
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["README.md".to_string(), "deploy/app.yaml".to_string()]
    );
    assert_eq!(
        forge
            .list_commits(1)
            .await
            .expect("commits")
            .last()
            .expect("commit")
            .sha,
        sha
    );

    // Deployments.
    let req = DeploymentRequest {
        git_ref: "feature".into(),
        sha: sha.clone(),
        environment: "pr-1".into(),
        description: "Preview of !1".into(),
        transient: true,
        production: false,
    };
    let id = forge.create_deployment(&req).await.expect("deployment");
    assert_eq!(
        forge.find_deployment("pr-1", &sha).await.expect("find"),
        Some(id)
    );
    forge
        .set_deployment_status(
            id,
            DeploymentState::Success,
            &DeploymentStatusUpdate::default(),
        )
        .await
        .expect("status");
    let deployments = emu.deployments(path).await.expect("deployments");
    assert_eq!(
        deployments
            .last()
            .expect("deployment")
            .statuses
            .last()
            .expect("status")
            .state,
        "success"
    );

    // Merge/close confirmed; 404 is NotFound; faults surface as categories.
    emu.merge_pull(path, 2, None).await.expect("merge");
    emu.close_pull(path, 3).await.expect("close");
    assert_eq!(
        forge.get_pull_request(2).await.expect("mr 2").state,
        PullRequestState::Merged
    );
    assert_eq!(
        forge.get_pull_request(3).await.expect("mr 3").state,
        PullRequestState::Closed
    );
    assert_eq!(
        forge
            .get_pull_request(9999)
            .await
            .expect_err("missing")
            .category(),
        "NotFound"
    );
    emu.add_fault(fault(
        "/api/v4/projects/*/merge_requests",
        FaultAction::Status { status: 502 },
        None,
    ))
    .await
    .expect("fault");
    assert_eq!(
        forge
            .list_open_pull_requests()
            .await
            .expect_err("502")
            .category(),
        "Transient"
    );
    emu.clear_faults().await.expect("clear");
    assert_eq!(
        forge
            .upsert_check_run(&CheckRunOutput {
                name: "x".into(),
                head_sha: sha,
                status: CheckRunStatus::Queued,
                conclusion: None,
                title: String::new(),
                summary: String::new(),
                text: None,
                details_url: None,
            })
            .await
            .expect_err("no check runs")
            .category(),
        "Unsupported"
    );

    let bad = forge_for(
        &clients,
        &emu,
        ForgeKind::Gitlab,
        path,
        Credentials::token("glpat-wrong"),
    );
    assert_eq!(
        bad.list_branches().await.expect_err("bad token").category(),
        "AuthFailed"
    );
}

#[tokio::test]
async fn gitea_pulls_comments_statuses_and_unsupported_deployments() {
    let emu = start().await;
    let sha = repo_with_pulls(&emu, EmuForge::Gitea, "org/app", 60).await;
    let clients = clients();
    let forge = forge_for(
        &clients,
        &emu,
        ForgeKind::Gitea,
        "org/app",
        Credentials::token(TOKEN),
    );

    let prs = forge.list_open_pull_requests().await.expect("list");
    assert_eq!(prs.len(), 60, "Gitea caps pages at 50: two pages");
    emu.reset_request_counts().await.expect("reset");
    assert_eq!(
        forge.list_open_pull_requests().await.expect("again").len(),
        60
    );
    let counts = emu.request_counts().await.expect("counts");
    assert_eq!(
        (
            counts.clients[TOKEN].total,
            counts.clients[TOKEN].not_modified
        ),
        (2, 2)
    );

    for body in ["a", "b", "c"] {
        forge
            .upsert_sticky_section(1, MARKER, "preview", body)
            .await
            .expect("comment");
    }
    let comments = emu.comments("org/app", 1).await.expect("comments");
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].edit_count, 2);

    let status = CommitStatus::new(
        "pullwarden/gate/default",
        StatusState::Success,
        "all rules passed",
        None,
    );
    forge
        .set_commit_status(&sha, &status)
        .await
        .expect("status");
    let checks = forge.checks_for_sha(&sha).await.expect("checks");
    assert_eq!(
        checks
            .iter()
            .map(|c| (c.name.as_str(), c.state))
            .collect::<Vec<_>>(),
        vec![("pullwarden/gate/default", CheckState::Success)]
    );
    assert_eq!(forge.default_branch().await.expect("default"), "main");
    assert!(
        forge
            .list_branches()
            .await
            .expect("branches")
            .iter()
            .any(|b| b.name == "feature" && b.sha == sha)
    );

    let req = DeploymentRequest {
        git_ref: "feature".into(),
        sha: sha.clone(),
        environment: "pr-1".into(),
        description: String::new(),
        transient: true,
        production: false,
    };
    assert_eq!(
        forge
            .create_deployment(&req)
            .await
            .expect_err("no deployments")
            .category(),
        "Unsupported"
    );
    assert_eq!(
        forge
            .find_deployment("pr-1", &sha)
            .await
            .expect_err("no deployments")
            .category(),
        "Unsupported"
    );
    assert_eq!(
        forge
            .get_pull_request(999)
            .await
            .expect_err("missing")
            .category(),
        "NotFound"
    );
}

#[tokio::test]
async fn git_ls_remote_and_shallow_fetch_tree_over_smart_http() {
    let emu = start().await;
    let sha = repo_with_pulls(&emu, EmuForge::Github, "acme/app", 1).await;
    emu.create_repo(repo_spec(EmuForge::Github, "acme/private", true))
        .await
        .expect("private");
    let private_sha = emu
        .push("acme/private", push("main", &[("deploy/a.yaml", "a: 1\n")]))
        .await
        .expect("push")
        .after;
    let clients = clients();

    // Provider `git`: branches only.
    let forge = forge_for(
        &clients,
        &emu,
        ForgeKind::Git,
        "acme/app",
        Credentials::Anonymous,
    );
    assert_eq!(forge.default_branch().await.expect("HEAD"), "main");
    let branches = forge.list_branches().await.expect("branches");
    assert!(
        branches.iter().any(|b| b.name == "feature" && b.sha == sha),
        "{branches:?}"
    );
    assert_eq!(
        forge
            .list_open_pull_requests()
            .await
            .expect_err("no PRs")
            .category(),
        "Unsupported"
    );
    assert!(forge.rate_limit().is_none());

    // fetch_tree of the PR head over smart HTTP (depth 1), then from the cache.
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let url = emu.clone_url("acme/app");
    emu.reset_request_counts().await.expect("reset");
    let files = cache
        .fetch_tree(&url, &sha, "deploy", &Credentials::Anonymous, None)
        .await
        .expect("fetch");
    assert!(
        emu.request_counts()
            .await
            .expect("counts")
            .total("anonymous")
            > 0,
        "fetched over smart HTTP"
    );
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].path.as_str(), files[0].bytes.as_slice()),
        ("app.yaml", b"replicas: 2\n".as_slice())
    );
    emu.reset_request_counts().await.expect("reset");
    cache
        .fetch_tree(&url, &sha, "deploy", &Credentials::Anonymous, None)
        .await
        .expect("cached");
    assert_eq!(
        emu.request_counts()
            .await
            .expect("counts")
            .total("anonymous"),
        0,
        "served from the cache"
    );

    // Private repository: the token is required and used; without it AuthFailed.
    let private = emu.clone_url("acme/private");
    let e = cache
        .fetch_tree(
            &private,
            &private_sha,
            "deploy",
            &Credentials::Anonymous,
            None,
        )
        .await
        .expect_err("anonymous");
    assert_eq!(e.category(), "AuthFailed", "{e}");
    let files = cache
        .fetch_tree(
            &private,
            &private_sha,
            "deploy",
            &Credentials::token(TOKEN),
            None,
        )
        .await
        .expect("token");
    assert_eq!(files[0].path, "a.yaml");
    assert_eq!(
        git::default_branch(&private, &Credentials::token(TOKEN), None)
            .await
            .expect("HEAD"),
        "main"
    );

    // A broken git endpoint is Transient.
    emu.add_fault(FaultSpec {
        method: None,
        path: "/acme/app.git/*".into(),
        forge: None,
        token: None,
        action: FaultAction::Status { status: 502 },
        times: None,
    })
    .await
    .expect("fault");
    let e = git::ls_remote(&url, &Credentials::Anonymous, None)
        .await
        .expect_err("502");
    assert_eq!(e.category(), "Transient", "{e}");
}
