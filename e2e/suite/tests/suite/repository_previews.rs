//! What the Repository controller does to the previews it generates, and what it records even
//! when it cannot sync, against the real API server, the operator binary and the forge
//! emulator: a user's `suspend` survives later syncs; removing `spec.preview` tears every
//! preview and its namespace down; a requested reconcile and a verified webhook are recorded
//! while the forge is down; an echo of Pullwarden's own commit status costs no forge request.

use crate::support::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use pullwarden::api::{PreviewEnvironment, Repository};
use pullwarden_emulator::{FaultAction, FaultSpec, HookSpec, PullSpec, PushSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use serde_json::json;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_repository_previews";
const HOOK_SECRET: &str = "s3cr3t-repository-previews";

/// Pull request `head` with the `preview` label.
fn labelled(head: &str) -> PullSpec {
    PullSpec {
        head: head.into(),
        title: format!("Change on {head}"),
        labels: vec!["preview".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn suspend_survives_syncs_and_removing_spec_preview_tears_every_preview_down() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "repo-previews").await.unwrap();
    let n = ns.name().to_string();
    let path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    emu.create_branch(&path, "second", Some("main"))
        .await
        .unwrap();
    let _op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let spec = |with_preview: bool| {
        let mut extra = json!({"interval": "10s", "pullRequests": {"labels": ["preview"]}});
        if with_preview {
            extra["preview"] = preview_spec(json!({}));
        }
        repository(&n, &emu, &info, "forge-token", extra)
    };
    apply(&repos, &n, &spec(true)).await;

    let first = emu.open_pull(&path, labelled("feature")).await.unwrap();
    let second = emu.open_pull(&path, labelled("second")).await.unwrap();
    let names = [
        format!("{n}-pr-{}", first.number),
        format!("{n}-pr-{}", second.number),
    ];
    let mut preview_namespaces = Vec::new();
    for name in &names {
        let pe = wait_for(
            &previews,
            name,
            TIMEOUT,
            "preview namespace created",
            |p: &PreviewEnvironment| p.status.as_ref().is_some_and(|s| s.namespace.is_some()),
        )
        .await
        .unwrap();
        let pns = pe.status.unwrap().namespace.unwrap();
        namespaces.get(&pns).await.unwrap();
        preview_namespaces.push(pns);
    }

    // A user suspends the first preview (their own field manager, as `kubectl patch` would).
    previews
        .patch(
            &names[0],
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    // A push makes the Repository apply that preview again (its head moves).
    let pushed = emu
        .push_to_pull(
            &path,
            first.number,
            PushSpec {
                files: files(&[("cart.txt", "v2\n")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let moved = wait_for(
        &previews,
        &names[0],
        TIMEOUT,
        "the Repository moved the head",
        |p: &PreviewEnvironment| p.spec.head_sha.as_deref() == Some(pushed.after.as_str()),
    )
    .await
    .unwrap();
    assert!(moved.spec.suspend, "the sync kept the user's suspend");
    // And a later sync with nothing to move keeps it too.
    let synced_before = repos
        .get(&n)
        .await
        .unwrap()
        .status
        .and_then(|s| s.last_sync_time)
        .unwrap();
    request_reconcile(&repos, &n, "after-suspend").await;
    wait_for(&repos, &n, TIMEOUT, "another sync", |r: &Repository| {
        r.status
            .as_ref()
            .and_then(|s| s.last_sync_time.as_ref())
            .is_some_and(|t| t.0 > synced_before.0)
    })
    .await
    .unwrap();
    assert!(previews.get(&names[0]).await.unwrap().spec.suspend);

    // spec.preview removed: every generated preview and its namespace go, and the Repository
    // says so.
    apply(&repos, &n, &spec(false)).await;
    let repo = wait_for(&repos, &n, TIMEOUT, "says why", |r: &Repository| {
        ready_message(r).contains("spec.preview removed")
    })
    .await
    .unwrap();
    assert!(
        has_reason(&repo, "True", "Synced"),
        "{}",
        ready_message(&repo)
    );
    for (name, pns) in names.iter().zip(&preview_namespaces) {
        wait_until_gone(&previews, name, TIMEOUT, "preview deleted")
            .await
            .unwrap();
        wait_until_gone(&namespaces, pns, TIMEOUT, "preview namespace deleted")
            .await
            .unwrap();
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &n);
    let removed = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("PreviewsRemoved"))
        .expect("a PreviewsRemoved event");
    let note = removed.note.unwrap_or_default();
    assert!(
        names.iter().all(|name| note.contains(name.as_str())),
        "{note}"
    );
}

#[tokio::test]
async fn a_requested_reconcile_and_a_webhook_are_recorded_while_the_forge_is_down() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "repo-down").await.unwrap();
    let n = ns.name().to_string();
    let path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    secret(&client, &n, "hook", &[("secret", HOOK_SECRET)]).await;
    emu.add_hook(
        &path,
        HookSpec {
            url: format!("http://{}/hooks/github", op.webhook_addr),
            secret: Some(HOOK_SECRET.into()),
            events: vec![],
        },
    )
    .await
    .unwrap();
    // The forge API is down from the start: no sync ever succeeds.
    emu.add_fault(FaultSpec {
        method: None,
        path: "/repos/*".into(),
        forge: None,
        token: None,
        action: FaultAction::Status { status: 502 },
        times: None,
    })
    .await
    .unwrap();
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        &n,
        &repository(
            &n,
            &emu,
            &info,
            "forge-token",
            json!({"interval": "30m", "webhook": {"secretRef": {"name": "hook"}}}),
        ),
    )
    .await;
    wait_for(&repos, &n, TIMEOUT, "Ready=False", |r: &Repository| {
        has_reason(r, "False", "Transient")
    })
    .await
    .unwrap();

    // The Flux habit: annotate, then wait for lastHandledReconcileAt.
    request_reconcile(&repos, &n, "while-down-1").await;
    let acknowledged = wait_for(&repos, &n, TIMEOUT, "acknowledged", |r: &Repository| {
        r.status
            .as_ref()
            .and_then(|s| s.common.last_handled_reconcile_at.as_deref())
            == Some("while-down-1")
    })
    .await
    .unwrap();
    assert!(has_reason(&acknowledged, "False", "Transient"));
    assert!(acknowledged.status.unwrap().last_sync_time.is_none());

    // A verified webhook (a pull request opened) is recorded although its sync fails.
    emu.open_pull(&path, labelled("feature")).await.unwrap();
    let recorded = wait_for(&repos, &n, TIMEOUT, "lastEventTime", |r: &Repository| {
        r.status
            .as_ref()
            .is_some_and(|s| s.last_event_time.is_some())
    })
    .await
    .unwrap();
    assert!(has_reason(&recorded, "False", "Transient"));
    let accepted = op
        .metric(r#"pullwarden_webhook_requests_total{forge="github",result="accepted"}"#)
        .await
        .unwrap()
        .unwrap_or(0.0);
    assert!(accepted >= 1.0, "accepted deliveries: {accepted}");
}

/// Signs and posts a GitHub delivery to the operator's webhook server; returns the `result`.
async fn deliver(
    addr: std::net::SocketAddr,
    event: &str,
    id: &str,
    body: &serde_json::Value,
) -> String {
    let body = body.to_string();
    let signature =
        pullwarden::webhook::verify::hmac_sha256_hex(HOOK_SECRET.as_bytes(), body.as_bytes());
    let reply = reqwest::Client::new()
        .post(format!("http://{addr}/hooks/github"))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", id)
        .header("X-Hub-Signature-256", format!("sha256={signature}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::ACCEPTED);
    let json: serde_json::Value = reply.json().await.unwrap();
    json["result"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_echo_of_our_own_commit_status_costs_no_forge_request() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "repo-echo").await.unwrap();
    let n = ns.name().to_string();
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    secret(&client, &n, "hook", &[("secret", HOOK_SECRET)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    // A long interval: any sync within the test was caused by a delivery.
    apply(
        &repos,
        &n,
        &repository(
            &n,
            &emu,
            &info,
            "forge-token",
            json!({"interval": "30m", "webhook": {"secretRef": {"name": "hook"}}}),
        ),
    )
    .await;
    let synced = wait_for(&repos, &n, TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    let first_sync = synced.status.unwrap().last_sync_time.unwrap();
    let sha = emu.branches(&format!("acme/{n}")).await.unwrap()["main"].clone();
    let repository_json =
        json!({"clone_url": info.clone_url, "html_url": info.clone_url.trim_end_matches(".git")});
    emu.reset_request_counts().await.unwrap();

    // The forge echoing our own commit status, and someone else's finished status: neither
    // syncs the Repository (the second only names its head to the previews).
    let echo = json!({"sha": sha, "state": "success", "context": "pullwarden/preview",
        "repository": repository_json, "sender": {"login": "pullwarden-bot"}});
    assert_eq!(
        deliver(op.webhook_addr, "status", "echo-1", &echo).await,
        "echo"
    );
    let ci = json!({"sha": sha, "state": "success", "context": "ci/build",
        "repository": repository_json, "sender": {"login": "ci"}});
    assert_eq!(
        deliver(op.webhook_addr, "status", "ci-1", &ci).await,
        "accepted"
    );
    let echoes = op
        .metric(r#"pullwarden_webhook_requests_total{forge="github",result="echo"}"#)
        .await
        .unwrap();
    assert_eq!(echoes, Some(1.0));
    // An observation window for a sync that must not happen (a triggered sync starts within
    // milliseconds; see the control below).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = emu.request_counts().await.unwrap();
    assert_eq!(counts.total(TOKEN), 0, "no forge request: {counts:?}");
    let after = repos.get(&n).await.unwrap().status.unwrap();
    assert_eq!(after.last_sync_time, Some(first_sync.clone()));

    // The control: a branch push delivered the same way does sync, with forge requests.
    let push = json!({"ref": "refs/heads/main", "after": sha, "repository": repository_json,
        "sender": {"login": "alice"}});
    assert_eq!(
        deliver(op.webhook_addr, "push", "push-1", &push).await,
        "accepted"
    );
    wait_for(
        &repos,
        &n,
        TIMEOUT,
        "a sync after the push",
        |r: &Repository| {
            r.status
                .as_ref()
                .and_then(|s| s.last_sync_time.as_ref())
                .is_some_and(|t| t.0 > first_sync.0)
        },
    )
    .await
    .unwrap();
    let counts = emu.request_counts().await.unwrap();
    assert!(
        counts.total(TOKEN) >= 3,
        "a sync reads the forge: {counts:?}"
    );
}
