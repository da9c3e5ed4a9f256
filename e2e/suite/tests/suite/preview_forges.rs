//! The preview lifecycle (open → Ready → push → Ready → close) on every forge face of the
//! emulator: GitHub through the Enterprise base `/api/v3`, GitLab (nested group) and Gitea. One
//! scenario, parameterised by [`Face`]; the github.com layout runs in
//! `previews::pull_request_lifecycle_open_push_and_close`.
//!
//! Each face is checked for the write-back its forge supports, read from the emulator's admin
//! API: GitHub — commit status `pullwarden/preview` pending → success per SHA, one deployment per
//! SHA with `environment_url`, inactive after close, one sticky comment edited in place; GitLab —
//! commit status, an environment carrying the URL that is stopped on teardown, one note; Gitea —
//! commit status and one comment, no deployments (Gitea has no deployments API).

use crate::support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use pullwarden::api::{PreviewEnvironment, Repository};
use pullwarden_emulator::{
    EmulatorHandle, FaultAction, FaultSpec, Forge as EmuForge, HookSpec, PullSpec, PushSpec,
    StatusInfo,
};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use pullwarden_harness::operator::Operator;
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
const TOKEN: &str = "tok_preview_forges";
const HOOK_SECRET: &str = "preview-forges-hook-secret";
const CONTEXT: &str = "pullwarden/preview";

/// One forge face of the emulator, as a Repository names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Face {
    /// GitHub with `spec.apiUrl` = `<emulator>/api/v3` (GitHub Enterprise Server's layout).
    GithubEnterprise,
    Gitlab,
    Gitea,
}

impl Face {
    fn forge(self) -> EmuForge {
        match self {
            Face::GithubEnterprise => EmuForge::Github,
            Face::Gitlab => EmuForge::Gitlab,
            Face::Gitea => EmuForge::Gitea,
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Face::GithubEnterprise => "github",
            Face::Gitlab => "gitlab",
            Face::Gitea => "gitea",
        }
    }

    /// Repository path in the emulator; the project name is always `name`.
    fn path(self, name: &str) -> String {
        match self {
            Face::GithubEnterprise | Face::Gitea => format!("acme/{name}"),
            Face::Gitlab => format!("acme/web/{name}"),
        }
    }

    fn api_url(self, emu: &EmulatorHandle) -> String {
        match self {
            Face::GithubEnterprise => emu.github_enterprise_api_url(),
            Face::Gitlab => emu.gitlab_api_url(),
            Face::Gitea => emu.gitea_api_url(),
        }
    }

    fn hook_path(self) -> &'static str {
        match self {
            Face::GithubEnterprise => "/hooks/github",
            Face::Gitlab => "/hooks/gitlab",
            Face::Gitea => "/hooks/gitea",
        }
    }
}

/// Pullwarden's statuses on `sha`, oldest first.
async fn our_statuses(emu: &EmulatorHandle, path: &str, sha: &str) -> Vec<StatusInfo> {
    let mut v: Vec<StatusInfo> = emu
        .statuses(path, Some(sha))
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.context == CONTEXT)
        .collect();
    v.sort_by_key(|s| s.id);
    v
}

/// A pending status, then exactly one success carrying the preview URL.
fn assert_pending_then_success(face: Face, statuses: &[StatusInfo], url: &str) {
    let states: Vec<&str> = statuses.iter().map(|s| s.state.as_str()).collect();
    let first_success = states.iter().position(|s| *s == "success");
    let first_pending = states.iter().position(|s| *s == "pending");
    assert!(
        matches!((first_pending, first_success), (Some(p), Some(s)) if p < s),
        "{face:?}: pending before success: {states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "success").count(),
        1,
        "{face:?}: one success per SHA: {statuses:?}"
    );
    let success = statuses.iter().find(|s| s.state == "success").unwrap();
    assert_eq!(
        success.target_url.as_deref(),
        Some(url),
        "{face:?}: {success:?}"
    );
}

/// The GitHub Enterprise face must be reached only through `/api/v3`: every github.com-layout
/// API path answers 404, so a single request to the wrong base breaks the scenario.
async fn refuse_github_com_layout(emu: &EmulatorHandle) {
    for path in ["/repos/*", "/user*", "/rate_limit*", "/app*", "/orgs/*"] {
        emu.add_fault(FaultSpec {
            method: None,
            path: path.into(),
            forge: Some(EmuForge::Github),
            token: None,
            action: FaultAction::Status { status: 404 },
            times: None,
        })
        .await
        .unwrap();
    }
}

struct Running {
    emu: EmulatorHandle,
    _op: Operator,
    ns: TestNamespace,
    client: kube::Client,
    path: String,
}

/// Emulator repository with the preview app, the operator, a Repository following it through
/// webhooks (and a 10 s poll as the safety net), selecting PRs labelled `preview`.
async fn start(face: Face, prefix: &str) -> Running {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, prefix).await.unwrap();
    let n = ns.name().to_string();
    let path = face.path(&n);
    let (emu, info) = preview_app_repo_on(face.forge(), &path, TOKEN).await;
    if face == Face::GithubEnterprise {
        refuse_github_com_layout(&emu).await;
    }
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    secret(&client, &n, "forge-hook", &[("secret", HOOK_SECRET)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = repository(
        &n,
        &emu,
        &info,
        "forge-token",
        json!({
            "provider": face.provider(),
            "apiUrl": face.api_url(&emu),
            "webhook": {"secretRef": {"name": "forge-hook"}},
            "interval": "10s",
            "pullRequests": {"labels": ["preview"]},
            "preview": preview_spec(json!({})),
        }),
    );
    apply(&repos, &n, &manifest).await;
    wait_for(
        &repos,
        &n,
        TIMEOUT,
        &format!("{face:?}: first sync"),
        |r: &Repository| has_reason(r, "True", "Synced"),
    )
    .await
    .unwrap();
    emu.add_hook(
        &path,
        HookSpec {
            url: format!("http://{}{}", op.webhook_addr, face.hook_path()),
            secret: Some(HOOK_SECRET.into()),
            events: vec![],
        },
    )
    .await
    .unwrap();
    Running {
        emu,
        _op: op,
        ns,
        client,
        path,
    }
}

/// open → Ready → push → Ready → close on one face, with that forge's write-back.
async fn lifecycle(face: Face, prefix: &str) {
    let s = start(face, prefix).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());

    // Opened with the label: Ready, and the forge shows it.
    let t = Instant::now();
    let pr = s
        .emu
        .open_pull(
            &s.path,
            PullSpec {
                head: "feature".into(),
                title: "Add cart".into(),
                author: Some("alice".into()),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{n}-pr-{}", pr.number);
    let url = format!("https://pr-{}.{n}.preview.test", pr.number);
    let ready = wait_ready(&previews, &name, &pr.head_sha).await;
    eprintln!("{face:?}: PR open → preview Ready: {:?}", t.elapsed());
    let st = ready.status.clone().unwrap();
    assert_eq!(st.url.as_deref(), Some(url.as_str()));
    assert_eq!(st.inventory_count, 10, "{:?}", st.inventory);
    let preview_ns = st.namespace.clone().unwrap();
    assert_pending_then_success(
        face,
        &our_statuses(&s.emu, &s.path, &pr.head_sha).await,
        &url,
    );
    let comments = s.emu.comments(&s.path, pr.number).await.unwrap();
    assert_eq!(comments.len(), 1, "{face:?}: one sticky comment");
    assert!(
        comments[0].body.contains(&url) && comments[0].body.contains(&pr.head_sha[..7]),
        "{face:?}: {}",
        comments[0].body
    );
    let first_edits = comments[0].edit_count;
    assert_deployed(face, &s.emu, &s.path, &pr.head_sha, &url).await;

    // Pushed: the new SHA is deployed and reported on that SHA; the comment is edited in place.
    let pushed = s
        .emu
        .push_to_pull(
            &s.path,
            pr.number,
            PushSpec {
                files: files(&[("src/cart.rs", "fn cart() {}\n")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t = Instant::now();
    wait_ready(&previews, &name, &pushed.after).await;
    eprintln!("{face:?}: push → new SHA Ready: {:?}", t.elapsed());
    assert_pending_then_success(
        face,
        &our_statuses(&s.emu, &s.path, &pushed.after).await,
        &url,
    );
    let comments = s.emu.comments(&s.path, pr.number).await.unwrap();
    assert_eq!(comments.len(), 1, "{face:?}: still one sticky comment");
    assert!(
        comments[0].edit_count > first_edits && comments[0].body.contains(&pushed.after[..7]),
        "{face:?}: the comment follows the push: {:?}",
        comments[0]
    );
    assert_deployed(face, &s.emu, &s.path, &pushed.after, &url).await;

    // Closed: the preview and its namespace go, the forge shows the teardown.
    let t = Instant::now();
    s.emu.close_pull(&s.path, pr.number).await.unwrap();
    wait_until_gone(&previews, &name, TIMEOUT, "preview deleted")
        .await
        .unwrap();
    wait_until_gone(&namespaces, &preview_ns, TIMEOUT, "namespace deleted")
        .await
        .unwrap();
    eprintln!("{face:?}: close → torn down: {:?}", t.elapsed());
    let comments = s.emu.comments(&s.path, pr.number).await.unwrap();
    assert_eq!(comments.len(), 1, "{face:?}: one comment after teardown");
    assert!(
        comments[0].body.to_lowercase().contains("deleted"),
        "{face:?}: {}",
        comments[0].body
    );
    assert_torn_down(face, &s.emu, &s.path, &pushed.after).await;
}

/// The deployment side of the write-back for a Ready preview at `sha`.
async fn assert_deployed(face: Face, emu: &EmulatorHandle, path: &str, sha: &str, url: &str) {
    let deployments = emu.deployments(path).await.unwrap();
    if face == Face::Gitea {
        assert!(
            deployments.is_empty(),
            "Gitea has no deployments API: {deployments:?}"
        );
        return;
    }
    let ours: Vec<_> = deployments.iter().filter(|d| d.sha == sha).collect();
    assert_eq!(
        ours.len(),
        1,
        "{face:?}: one deployment per SHA: {deployments:?}"
    );
    let last = ours[0].statuses.last().unwrap();
    assert_eq!(last.state, "success", "{face:?}: {:?}", ours[0]);
    match face {
        Face::GithubEnterprise => {
            assert_eq!(last.environment_url.as_deref(), Some(url), "{:?}", ours[0]);
        }
        Face::Gitlab => {
            let envs = emu.environments(path).await.unwrap();
            assert_eq!(envs.len(), 1, "one environment per preview: {envs:?}");
            assert_eq!(envs[0].name, ours[0].environment, "{envs:?}");
            assert_eq!(envs[0].external_url.as_deref(), Some(url), "{envs:?}");
            assert_eq!(envs[0].state, "available", "{envs:?}");
        }
        Face::Gitea => unreachable!("returned above"),
    }
}

/// The deployment side of the write-back after teardown (`last_sha` was deployed last).
async fn assert_torn_down(face: Face, emu: &EmulatorHandle, path: &str, last_sha: &str) {
    let deployments = emu.deployments(path).await.unwrap();
    match face {
        Face::GithubEnterprise => {
            let last = deployments
                .iter()
                .find(|d| d.sha == last_sha)
                .and_then(|d| d.statuses.last())
                .unwrap();
            assert_eq!(last.state, "inactive", "{deployments:?}");
        }
        Face::Gitlab => {
            let envs = emu.environments(path).await.unwrap();
            assert_eq!(envs.len(), 1, "{envs:?}");
            assert_eq!(envs[0].state, "stopped", "environment stopped: {envs:?}");
        }
        Face::Gitea => assert!(deployments.is_empty(), "{deployments:?}"),
    }
}

#[tokio::test]
async fn preview_lifecycle_on_github_enterprise_api_v3() {
    lifecycle(Face::GithubEnterprise, "ghe-preview").await;
}

#[tokio::test]
async fn preview_lifecycle_on_gitlab() {
    lifecycle(Face::Gitlab, "gitlab-preview").await;
}

#[tokio::test]
async fn preview_lifecycle_on_gitea() {
    lifecycle(Face::Gitea, "gitea-preview").await;
}
