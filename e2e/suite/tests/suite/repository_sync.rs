//! The Repository controller against the forge emulator: pull requests opened, pushed,
//! labelled and closed are followed through webhooks and through polling alone; a forge outage
//! keeps the last good data and says why; an unchanged repository costs only 304s.

use crate::support::*;
use kube::Api;
use pullwarden::api::Repository;
use pullwarden_emulator::{
    Emulator, EmulatorConfig, FaultAction, FaultSpec, HookSpec, PullSpec, PushSpec,
};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghp_sync";

fn pr_head(r: &Repository, number: u64) -> Option<String> {
    r.status
        .as_ref()?
        .pull_requests
        .iter()
        .find(|p| p.number == number)
        .map(|p| p.head_sha.clone())
}

#[tokio::test]
async fn webhooks_drive_pull_request_changes_without_polling() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "hooks").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "ci-bot").await.unwrap();
    let repo = github_repo(&emu, "acme/shop", &[("README.md", "shop\n")]).await;
    emu.create_branch("acme/shop", "feature", Some("main"))
        .await
        .unwrap();

    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "shop-token", &[("token", TOKEN)]).await;
    secret(&client, &n, "shop-hook", &[("secret", "s3cr3t-hook")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    // A long interval: anything seen within the test came through a webhook.
    let manifest = repository(
        "shop",
        &emu,
        &repo,
        "shop-token",
        json!({
            "interval": "30m", "webhook": {"secretRef": {"name": "shop-hook"}},
        }),
    );
    apply(&repos, "shop", &manifest).await;
    let synced = wait_for(&repos, "shop", TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    assert_eq!(
        synced.status.as_ref().unwrap().webhook_path.as_deref(),
        Some("/hooks/github")
    );
    emu.add_hook(
        "acme/shop",
        HookSpec {
            url: format!("http://{}/hooks/github", op.webhook_addr),
            secret: Some("s3cr3t-hook".into()),
            events: vec![],
        },
    )
    .await
    .unwrap();

    // Opened.
    let t = Instant::now();
    let pr = emu
        .open_pull(
            "acme/shop",
            PullSpec {
                head: "feature".into(),
                title: "Add cart".into(),
                author: Some("alice".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let r = wait_for(
        &repos,
        "shop",
        TIMEOUT,
        "PR opened via webhook",
        |r: &Repository| pr_head(r, pr.number).is_some(),
    )
    .await
    .unwrap();
    eprintln!("webhook → PR listed in status: {:?}", t.elapsed());
    assert!(r.status.as_ref().unwrap().last_event_time.is_some());
    let listed = r
        .status
        .unwrap()
        .pull_requests
        .into_iter()
        .find(|p| p.number == pr.number)
        .unwrap();
    assert_eq!(
        (
            listed.title.as_str(),
            listed.author.as_str(),
            listed.head_ref.as_str(),
            listed.base_ref.as_str()
        ),
        ("Add cart", "alice", "feature", "main")
    );

    // Pushed.
    let t = Instant::now();
    let pushed = emu
        .push_to_pull(
            "acme/shop",
            pr.number,
            PushSpec {
                files: files(&[("cart.txt", "v2\n")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for(
        &repos,
        "shop",
        TIMEOUT,
        "new head SHA via webhook",
        |r: &Repository| pr_head(r, pr.number).as_deref() == Some(pushed.after.as_str()),
    )
    .await
    .unwrap();
    eprintln!("webhook → pushed SHA in status: {:?}", t.elapsed());

    // Labelled.
    let t = Instant::now();
    emu.add_label("acme/shop", pr.number, "preview")
        .await
        .unwrap();
    wait_for(
        &repos,
        "shop",
        TIMEOUT,
        "label via webhook",
        |r: &Repository| {
            r.status.as_ref().is_some_and(|s| {
                s.pull_requests
                    .iter()
                    .any(|p| p.number == pr.number && p.labels.contains(&"preview".to_string()))
            })
        },
    )
    .await
    .unwrap();
    eprintln!("webhook → label in status: {:?}", t.elapsed());

    // Closed.
    let t = Instant::now();
    emu.close_pull("acme/shop", pr.number).await.unwrap();
    wait_for(
        &repos,
        "shop",
        TIMEOUT,
        "closed PR removed via webhook",
        |r: &Repository| {
            r.status
                .as_ref()
                .is_some_and(|s| s.pull_request_count == 0 && s.pull_requests.is_empty())
        },
    )
    .await
    .unwrap();
    eprintln!("webhook → closed PR gone from status: {:?}", t.elapsed());

    // The deliveries were accepted (and none was refused).
    let accepted = op
        .metric(r#"pullwarden_webhook_requests_total{forge="github",result="accepted"}"#)
        .await
        .unwrap()
        .unwrap_or(0.0);
    let unauthorized = op
        .metric(r#"pullwarden_webhook_requests_total{forge="github",result="unauthorized"}"#)
        .await
        .unwrap()
        .unwrap_or(0.0);
    assert!(accepted >= 4.0, "accepted deliveries: {accepted}");
    assert_eq!(unauthorized, 0.0);
}

#[tokio::test]
async fn polling_alone_follows_pull_requests_within_the_interval() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "poll").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "ci-bot").await.unwrap();
    let repo = github_repo(&emu, "acme/poll", &[("README.md", "poll\n")]).await;
    emu.create_branch("acme/poll", "topic", Some("main"))
        .await
        .unwrap();

    let _op = operator_for(cluster, &n).await;
    secret(&client, &n, "poll-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        "poll",
        &repository(
            "poll",
            &emu,
            &repo,
            "poll-token",
            json!({"interval": "10s", "maxInterval": "20s"}),
        ),
    )
    .await;
    wait_for(&repos, "poll", TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();

    // An unchanged repository: every poll request is conditional and answered 304 (no quota).
    tokio::time::sleep(Duration::from_secs(2)).await;
    emu.reset_request_counts().await.unwrap();
    let before = repos
        .get("poll")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_sync_time
        .unwrap();
    wait_for(
        &repos,
        "poll",
        Duration::from_secs(45),
        "a later poll",
        |r: &Repository| {
            r.status
                .as_ref()
                .and_then(|s| s.last_sync_time.as_ref())
                .is_some_and(|t| t.0 > before.0)
        },
    )
    .await
    .unwrap();
    let counts = emu.request_counts().await.unwrap();
    let client_counts = counts.clients.get(TOKEN).cloned().unwrap_or_default();
    assert!(
        client_counts.total >= 3,
        "a poll reads repo, branches and pulls: {client_counts:?}"
    );
    assert_eq!(
        client_counts.total, client_counts.not_modified,
        "an unchanged poll must be all 304s: {client_counts:?}"
    );
    // The Repository reports that cost itself.
    let cost = repos
        .get("poll")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_sync_cost
        .unwrap();
    assert!(
        cost.requests >= 3 && cost.not_modified == cost.requests,
        "status.lastSyncCost of an unchanged poll: {cost:?}"
    );

    // A PR opened with no webhook appears within the polling interval.
    let t = Instant::now();
    let pr = emu
        .open_pull(
            "acme/poll",
            PullSpec {
                head: "topic".into(),
                title: "Poll me".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for(
        &repos,
        "poll",
        Duration::from_secs(45),
        "PR found by polling",
        |r: &Repository| pr_head(r, pr.number).is_some(),
    )
    .await
    .unwrap();
    eprintln!(
        "polling (interval 10s, maxInterval 20s) → PR listed after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_forge_outage_keeps_the_last_good_state_and_says_why() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "outage").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "ci-bot").await.unwrap();
    let repo = github_repo(&emu, "acme/flaky", &[("README.md", "flaky\n")]).await;
    emu.create_branch("acme/flaky", "fix", Some("main"))
        .await
        .unwrap();
    let pr = emu
        .open_pull(
            "acme/flaky",
            PullSpec {
                head: "fix".into(),
                title: "Fix".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let _op = operator_for(cluster, &n).await;
    secret(&client, &n, "flaky-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        "flaky",
        &repository(
            "flaky",
            &emu,
            &repo,
            "flaky-token",
            json!({"interval": "10s"}),
        ),
    )
    .await;
    wait_for(&repos, "flaky", TIMEOUT, "first sync", |r: &Repository| {
        pr_head(r, pr.number).is_some()
    })
    .await
    .unwrap();

    // A 429 asking for two minutes is honoured: nothing is sent to the forge until then, so
    // that case is checked last and without waiting for the recovery.
    for (action, reason) in [
        (FaultAction::Status { status: 500 }, "Transient"),
        (
            FaultAction::TooManyRequests { retry_after: 120 },
            "RateLimited",
        ),
    ] {
        emu.add_fault(FaultSpec {
            method: None,
            path: "/repos/*".into(),
            forge: None,
            token: None,
            action,
            times: None,
        })
        .await
        .unwrap();
        request_reconcile(&repos, "flaky", reason).await;
        let stale = wait_for(
            &repos,
            "flaky",
            TIMEOUT,
            &format!("Ready=False {reason}"),
            |r: &Repository| has_reason(r, "False", reason),
        )
        .await
        .unwrap();
        let st = stale.status.as_ref().unwrap();
        assert_eq!(
            st.pull_request_count, 1,
            "the PR is not forgotten during an outage"
        );
        assert!(pr_head(&stale, pr.number).is_some());
        assert!(
            ready_message(&stale).contains("last successful sync"),
            "{}",
            ready_message(&stale)
        );
        emu.clear_faults().await.unwrap();
        if reason == "RateLimited" {
            assert!(
                ready_message(&stale).contains("resumes at"),
                "says when the forge may be asked again: {}",
                ready_message(&stale)
            );
            break;
        }
        request_reconcile(&repos, "flaky", &format!("{reason}-recovered")).await;
        wait_for(&repos, "flaky", TIMEOUT, "recovered", |r: &Repository| {
            has_reason(r, "True", "Synced")
        })
        .await
        .unwrap();
    }
}

/// The same loop on GitLab (nested group, merge requests, `X-Gitlab-Token` webhooks) and on
/// Gitea (HMAC webhooks without prefix): the controller is forge-agnostic.
#[tokio::test]
async fn gitlab_and_gitea_repositories_follow_merge_requests_through_webhooks() {
    use pullwarden_emulator::Forge as EmuForge;
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "forges").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "ci-bot").await.unwrap();
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "token", &[("token", TOKEN)]).await;
    secret(&client, &n, "hook", &[("secret", "forge-hook-secret")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);

    for (forge, provider, path, api, hook_path) in [
        (
            EmuForge::Gitlab,
            "gitlab",
            "grp/sub/app",
            emu.gitlab_api_url(),
            "/hooks/gitlab",
        ),
        (
            EmuForge::Gitea,
            "gitea",
            "org/app",
            emu.gitea_api_url(),
            "/hooks/gitea",
        ),
    ] {
        let info = forge_repo(&emu, forge, path, &[("README.md", "x\n")]).await;
        emu.create_branch(path, "topic", Some("main"))
            .await
            .unwrap();
        let manifest = json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": provider},
            "spec": {
                "provider": provider, "url": info.clone_url, "apiUrl": api, "allowInsecureHTTP": true,
                "auth": {"secretRef": {"name": "token"}}, "webhook": {"secretRef": {"name": "hook"}}, "interval": "30m",
            }
        });
        apply(&repos, provider, &manifest).await;
        wait_for(
            &repos,
            provider,
            TIMEOUT,
            &format!("{provider} first sync"),
            |r: &Repository| has_reason(r, "True", "Synced"),
        )
        .await
        .unwrap();
        emu.add_hook(
            path,
            HookSpec {
                url: format!("http://{}{hook_path}", op.webhook_addr),
                secret: Some("forge-hook-secret".into()),
                events: vec![],
            },
        )
        .await
        .unwrap();
        let t = Instant::now();
        let pr = emu
            .open_pull(
                path,
                PullSpec {
                    head: "topic".into(),
                    title: format!("{provider} change"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let r = wait_for(
            &repos,
            provider,
            TIMEOUT,
            &format!("{provider} MR via webhook"),
            |r: &Repository| pr_head(r, pr.number).is_some(),
        )
        .await
        .unwrap();
        eprintln!(
            "{provider}: webhook → MR listed in status: {:?}",
            t.elapsed()
        );
        assert!(r.status.unwrap().last_event_time.is_some());
    }
    let accepted_gitlab = op
        .metric(r#"pullwarden_webhook_requests_total{forge="gitlab",result="accepted"}"#)
        .await
        .unwrap()
        .unwrap_or(0.0);
    let accepted_gitea = op
        .metric(r#"pullwarden_webhook_requests_total{forge="gitea",result="accepted"}"#)
        .await
        .unwrap()
        .unwrap_or(0.0);
    assert!(
        accepted_gitlab >= 1.0 && accepted_gitea >= 1.0,
        "gitlab {accepted_gitlab}, gitea {accepted_gitea}"
    );
}

/// Provider `git`: branches only, read with `git ls-remote` over smart HTTP.
#[tokio::test]
async fn plain_git_repositories_track_branches_with_ls_remote() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "plain-git").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "ci-bot").await.unwrap();
    let info = github_repo(&emu, "acme/plain", &[("README.md", "plain\n")]).await;
    emu.create_branch("acme/plain", "release/1.0", Some("main"))
        .await
        .unwrap();
    emu.create_branch("acme/plain", "scratch/x", Some("main"))
        .await
        .unwrap();
    let _op = operator_for(cluster, &n).await;
    secret(
        &client,
        &n,
        "git-creds",
        &[("username", "ci-bot"), ("password", TOKEN)],
    )
    .await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "plain"},
        "spec": {
            "provider": "git", "url": info.clone_url, "allowInsecureHTTP": true,
            "auth": {"secretRef": {"name": "git-creds"}}, "interval": "10s",
            "branches": {"include": ["main", "release/*"]},
        }
    });
    apply(&repos, "plain", &manifest).await;
    let r = wait_for(&repos, "plain", TIMEOUT, "git sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.default_branch.as_deref(), Some("main"));
    let names: Vec<&str> = st.branches.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["main", "release/1.0"],
        "globs applied, scratch/x excluded"
    );
    assert!(ready_message(&repos.get("plain").await.unwrap()).contains("branches only"));
}
