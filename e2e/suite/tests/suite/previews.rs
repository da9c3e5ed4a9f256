//! Previews end to end: the operator binary (as its least-privilege ServiceAccount), the local
//! control plane (kwok makes Deployments Available) and the forge emulator.

use crate::support::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::ListParams;
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_emulator::{EmulatorHandle, FaultAction, FaultSpec, PullSpec, PushSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_previews";

struct Setup {
    /// The Repository's name (= its namespace's name).
    name: String,
    emu: EmulatorHandle,
    op: Operator,
    ns: TestNamespace,
    client: kube::Client,
    repo_path: String,
}

/// Emulator repo with the preview app on main, a `feature` branch, the operator, and a
/// Repository selecting PRs labelled `preview`.
async fn setup(prefix: &str, preview_extra: serde_json::Value) -> Setup {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, prefix).await.unwrap();
    let n = ns.name().to_string();
    let repo_path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = repository(
        &n,
        &emu,
        &info,
        "forge-token",
        json!({
            "interval": "10s",
            "pullRequests": {"labels": ["preview"]},
            "preview": preview_spec(preview_extra),
        }),
    );
    apply(&repos, &n, &manifest).await;
    wait_for(&repos, &n, TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    Setup {
        name: n,
        emu,
        op,
        ns,
        client,
        repo_path,
    }
}

#[tokio::test]
async fn pull_request_lifecycle_open_push_and_close() {
    let s = setup("lifecycle", json!({})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);

    // Opened with the label: a preview becomes Ready and the PR shows the URL.
    let t = Instant::now();
    let pr = s
        .emu
        .open_pull(
            &s.repo_path,
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
    let name = format!("{}-pr-{}", s.name, pr.number);
    let ready = wait_ready(&previews, &name, &pr.head_sha).await;
    eprintln!("PR open → preview Ready: {:?}", t.elapsed());
    let st = ready.status.clone().unwrap();
    let url = format!("https://pr-{}.{}.preview.test", pr.number, s.name);
    assert_eq!(st.url.as_deref(), Some(url.as_str()));
    assert_eq!(
        st.inventory_count, 10,
        "ten objects applied: {:?}",
        st.inventory
    );
    let preview_ns = st.namespace.clone().unwrap();
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let pns = namespaces.get(&preview_ns).await.unwrap();
    assert_eq!(
        pns.metadata.labels.as_ref().unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pr.head_sha))
        .await
        .unwrap();
    let success = statuses
        .iter()
        .find(|x| x.context == "pullwarden/preview" && x.state == "success")
        .expect("success status");
    assert_eq!(success.target_url.as_deref(), Some(url.as_str()));
    let deployments = s.emu.deployments(&s.repo_path).await.unwrap();
    let dep = deployments
        .iter()
        .find(|d| d.sha == pr.head_sha)
        .expect("a deployment for the head SHA");
    assert_eq!(dep.statuses.last().unwrap().state, "success");
    assert_eq!(
        dep.statuses.last().unwrap().environment_url.as_deref(),
        Some(url.as_str())
    );
    let comments = s.emu.comments(&s.repo_path, pr.number).await.unwrap();
    assert_eq!(comments.len(), 1, "one sticky comment");
    assert!(
        comments[0].body.contains(&url) && comments[0].body.contains(&pr.head_sha[..7]),
        "{}",
        comments[0].body
    );

    // Pushed: the new SHA is deployed, the old migration Job is pruned, statuses on the new SHA.
    let old_job = format!("migrate-{}", &pr.head_sha[..7]);
    let pushed = s
        .emu
        .push_to_pull(
            &s.repo_path,
            pr.number,
            PushSpec {
                files: files(&[("src/cart.rs", "fn cart() {}\n")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t = Instant::now();
    let ready = wait_ready(&previews, &name, &pushed.after).await;
    eprintln!("push → new SHA Ready: {:?}", t.elapsed());
    // Ready never waits for the write-back; a failed one is retried (condition `Reported`).
    wait_for(
        &previews,
        &name,
        TIMEOUT,
        "write-back of the new SHA",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.reported.as_ref())
                .is_some_and(|r| r.sha == pushed.after && r.state == "success")
        },
    )
    .await
    .unwrap();
    let inventory = ready.status.unwrap().inventory;
    let new_job = format!("migrate-{}", &pushed.after[..7]);
    assert!(
        inventory
            .iter()
            .any(|e| e.kind == "Job" && e.name == new_job)
    );
    assert!(!inventory.iter().any(|e| e.name == old_job));
    let cm: Api<ConfigMap> = Api::namespaced(s.client.clone(), &preview_ns);
    let config = cm.list(&ListParams::default()).await.unwrap();
    assert!(
        config.items.iter().any(|c| c
            .data
            .as_ref()
            .is_some_and(|d| d.get("GIT_SHA") == Some(&pushed.after))),
        "config follows the new SHA"
    );
    let jobs = cluster::shared()
        .kubectl(["get", "jobs", "-n", &preview_ns, "-o", "name"])
        .await
        .unwrap();
    assert!(!jobs.contains(&old_job), "stale Job pruned: {jobs}");
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pushed.after))
        .await
        .unwrap();
    assert!(
        statuses
            .iter()
            .any(|x| x.context == "pullwarden/preview" && x.state == "success")
    );
    let comments = s.emu.comments(&s.repo_path, pr.number).await.unwrap();
    assert_eq!(
        comments.len(),
        1,
        "still one sticky comment, updated in place"
    );
    assert!(comments[0].edit_count >= 2 && comments[0].body.contains(&pushed.after[..7]));
    // At most one write per (SHA, state): resyncs did not repeat the success status.
    let successes = statuses
        .iter()
        .filter(|x| x.context == "pullwarden/preview" && x.state == "success")
        .count();
    assert_eq!(successes, 1, "{statuses:?}");

    // Closed: the preview, its namespace and the deployment go.
    let t = Instant::now();
    s.emu.close_pull(&s.repo_path, pr.number).await.unwrap();
    wait_until_gone(&previews, &name, TIMEOUT, "deleted")
        .await
        .unwrap();
    wait_until_gone(&namespaces, &preview_ns, TIMEOUT, "deleted")
        .await
        .unwrap();
    eprintln!("close → namespace gone: {:?}", t.elapsed());
    let deployments = s.emu.deployments(&s.repo_path).await.unwrap();
    let last = deployments
        .iter()
        .filter(|d| d.sha == pushed.after)
        .flat_map(|d| d.statuses.last())
        .next()
        .unwrap();
    assert_eq!(last.state, "inactive");
}

#[tokio::test]
async fn label_removal_and_merge_tear_previews_down() {
    let s = setup("teardown", json!({})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    s.emu
        .create_branch(&s.repo_path, "second", Some("main"))
        .await
        .unwrap();
    let a = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "A".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let b = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "second".into(),
                title: "B".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pa = wait_ready(
        &previews,
        &format!("{}-pr-{}", s.name, a.number),
        &a.head_sha,
    )
    .await;
    let pb = wait_ready(
        &previews,
        &format!("{}-pr-{}", s.name, b.number),
        &b.head_sha,
    )
    .await;

    s.emu
        .remove_label(&s.repo_path, a.number, "preview")
        .await
        .unwrap();
    wait_until_gone(
        &previews,
        &pa.metadata.name.clone().unwrap(),
        TIMEOUT,
        "deleted",
    )
    .await
    .unwrap();
    wait_until_gone(
        &namespaces,
        pa.status.as_ref().unwrap().namespace.as_ref().unwrap(),
        TIMEOUT,
        "deleted",
    )
    .await
    .unwrap();

    s.emu
        .merge_pull(&s.repo_path, b.number, Some("maintainer"))
        .await
        .unwrap();
    wait_until_gone(
        &previews,
        &pb.metadata.name.clone().unwrap(),
        TIMEOUT,
        "deleted",
    )
    .await
    .unwrap();
    wait_until_gone(
        &namespaces,
        pb.status.as_ref().unwrap().namespace.as_ref().unwrap(),
        TIMEOUT,
        "deleted",
    )
    .await
    .unwrap();
    let comments = s.emu.comments(&s.repo_path, b.number).await.unwrap();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.to_lowercase().contains("deleted"),
        "{}",
        comments[0].body
    );
}

#[tokio::test]
async fn forbidden_manifests_are_refused_and_nothing_is_applied() {
    let s = setup("refused", json!({})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let evil = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n";
    let sneaky = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\ndata: {a: b}\n";
    s.emu
        .push(
            &s.repo_path,
            PushSpec {
                branch: "feature".into(),
                files: files(&[
                    ("deploy/preview/zz-evil.yaml", evil),
                    ("deploy/preview/zz-sneaky.yaml", sneaky),
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pr = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Innocent".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{}-pr-{}", s.name, pr.number);
    let failed = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "refused",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Failed),
    )
    .await
    .unwrap();
    assert!(
        has_reason(&failed, "False", "ManifestsRefused"),
        "{:?}",
        failed.status
    );
    let msg = ready_message(&failed);
    assert!(
        msg.contains("ClusterRoleBinding") && msg.contains("kube-system"),
        "{msg}"
    );
    // Nothing applied: no preview namespace, no binding, nothing in kube-system.
    let preview_ns = failed.status.as_ref().unwrap().namespace.clone().unwrap();
    assert!(
        namespaces.get_opt(&preview_ns).await.unwrap().is_none(),
        "the namespace was not even created"
    );
    let crb = cluster::shared()
        .kubectl([
            "get",
            "clusterrolebinding",
            "pwn",
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .await
        .unwrap();
    assert!(crb.trim().is_empty());
    let cm = cluster::shared()
        .kubectl([
            "get",
            "configmap",
            "x",
            "-n",
            "kube-system",
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .await
        .unwrap();
    assert!(cm.trim().is_empty());
    // The PR says why.
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pr.head_sha))
        .await
        .unwrap();
    let failure = statuses
        .iter()
        .find(|x| x.context == "pullwarden/preview" && x.state == "failure")
        .expect("failure status");
    let desc = failure.description.clone().unwrap_or_default();
    assert!(
        desc.chars().count() <= 140 && desc.contains("ClusterRoleBinding"),
        "{desc}"
    );
    let comments = s.emu.comments(&s.repo_path, pr.number).await.unwrap();
    assert!(
        comments[0].body.contains("ClusterRoleBinding") && comments[0].body.contains("kube-system"),
        "{}",
        comments[0].body
    );
}

#[tokio::test]
async fn a_forge_outage_never_deletes_a_preview() {
    let s = setup("outage", json!({})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let repos: Api<Repository> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let pr = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Stay".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{}-pr-{}", s.name, pr.number);
    let ready = wait_ready(&previews, &name, &pr.head_sha).await;
    let preview_ns = ready.status.unwrap().namespace.unwrap();

    // Every API answer is a 500, then a 404 (a lost token looks like this on GitHub), across
    // several poll intervals.
    for (action, reason) in [
        (FaultAction::Status { status: 500 }, "Transient"),
        (FaultAction::Status { status: 404 }, "NotFound"),
    ] {
        s.emu
            .add_fault(FaultSpec {
                method: None,
                path: "/repos/*".into(),
                forge: None,
                token: None,
                action,
                times: None,
            })
            .await
            .unwrap();
        request_reconcile(&repos, &s.name, reason).await;
        wait_for(
            &repos,
            &s.name,
            TIMEOUT,
            &format!("Repository stale ({reason})"),
            |r: &Repository| has_reason(r, "False", reason),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(25)).await;
        let still = previews.get(&name).await.unwrap();
        assert!(
            still.metadata.deletion_timestamp.is_none(),
            "{reason}: preview deleted during an outage"
        );
        assert!(
            namespaces.get_opt(&preview_ns).await.unwrap().is_some(),
            "{reason}: namespace deleted during an outage"
        );
        let repo = repos.get(&s.name).await.unwrap();
        assert_eq!(repo.status.as_ref().unwrap().pull_request_count, 1);
        assert!(ready_message(&repo).contains("last successful sync"));
        s.emu.clear_faults().await.unwrap();
    }
    request_reconcile(&repos, &s.name, "recovered").await;
    wait_for(&repos, &s.name, TIMEOUT, "recovered", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    assert_eq!(
        phase(&previews.get(&name).await.unwrap()),
        Some(PreviewPhase::Ready)
    );
}

#[tokio::test]
async fn sigkill_mid_deploy_converges_without_duplicates() {
    let mut s = setup("crash", json!({})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let pr = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Crash".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{}-pr-{}", s.name, pr.number);
    let preview_ns = format!("{}-pr-{}", s.name, pr.number);

    // Kill the operator the moment the preview namespace exists: objects are being applied or
    // their readiness awaited, the preview is not Ready yet.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if namespaces.get_opt(&preview_ns).await.unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the preview namespace never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.op.kill();
    let mid = previews.get(&name).await.unwrap();
    assert_ne!(
        phase(&mid),
        Some(PreviewPhase::Ready),
        "killed too late to be mid-deploy"
    );
    eprintln!("killed in phase {:?}", phase(&mid));

    let op = Operator::start(
        cluster::shared(),
        OperatorOptions {
            namespace: Some(n.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    op.wait_ready(TIMEOUT).await.unwrap();
    wait_ready(&previews, &name, &pr.head_sha).await;
    // Let a few more resyncs happen before counting writes.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let owned: Vec<Namespace> = namespaces
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=pullwarden"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ns| {
            ns.metadata
                .name
                .as_deref()
                .is_some_and(|x| x.starts_with(&s.name))
        })
        .collect();
    assert_eq!(
        owned.len(),
        1,
        "exactly one preview namespace: {:?}",
        owned
            .iter()
            .map(|n| n.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let comments = s.emu.comments(&s.repo_path, pr.number).await.unwrap();
    assert_eq!(comments.len(), 1, "one sticky comment after the crash");
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pr.head_sha))
        .await
        .unwrap();
    let ours: Vec<_> = statuses
        .iter()
        .filter(|x| x.context == "pullwarden/preview")
        .collect();
    let successes = ours.iter().filter(|x| x.state == "success").count();
    let pendings = ours.iter().filter(|x| x.state == "pending").count();
    assert_eq!(successes, 1, "{ours:?}");
    // The pending status may be written once more if the crash hit between the forge write and
    // the status write that records it; never more.
    assert!(pendings <= 2, "{ours:?}");
    let deployments = s.emu.deployments(&s.repo_path).await.unwrap();
    assert_eq!(
        deployments.iter().filter(|d| d.sha == pr.head_sha).count(),
        1,
        "one deployment for the SHA"
    );
    drop(op);
}

#[tokio::test]
async fn wait_for_checks_holds_the_deploy_until_the_build_succeeds() {
    let s = setup("checks", json!({"waitFor": {"checks": ["build-image"]}})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let pr = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Wait".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{}-pr-{}", s.name, pr.number);
    let waiting = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "WaitingForChecks",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::WaitingForChecks),
    )
    .await
    .unwrap();
    assert!(
        waiting
            .status
            .unwrap()
            .message
            .unwrap_or_default()
            .contains("build-image")
    );
    assert!(
        namespaces.get_opt(&name).await.unwrap().is_none(),
        "nothing deployed before the check passed"
    );
    s.emu
        .set_status(
            &s.repo_path,
            &pr.head_sha,
            pullwarden_emulator::StatusSpec {
                context: "build-image".into(),
                state: "success".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_ready(&previews, &name, &pr.head_sha).await;
}

#[tokio::test]
async fn ttl_expires_an_idle_preview_and_a_push_brings_it_back() {
    let s = setup("ttl", json!({"ttl": "20s"})).await;
    let n = s.ns.name().to_string();
    let previews: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let pr = s
        .emu
        .open_pull(
            &s.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Idle".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{}-pr-{}", s.name, pr.number);
    wait_ready(&previews, &name, &pr.head_sha).await;
    let expired = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Expired after the TTL",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Expired),
    )
    .await
    .unwrap();
    let preview_ns = expired.status.as_ref().unwrap().namespace.clone().unwrap();
    wait_until_gone(&namespaces, &preview_ns, TIMEOUT, "deleted")
        .await
        .unwrap();
    let deployments = s.emu.deployments(&s.repo_path).await.unwrap();
    let last = deployments
        .iter()
        .find(|d| d.sha == pr.head_sha)
        .and_then(|d| d.statuses.last())
        .unwrap();
    assert_eq!(last.state, "inactive");
    // The expired preview is not recreated by the next syncs...
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        phase(&previews.get(&name).await.unwrap()),
        Some(PreviewPhase::Expired)
    );
    // ...until a push.
    let pushed = s
        .emu
        .push_to_pull(
            &s.repo_path,
            pr.number,
            PushSpec {
                files: files(&[("src/again.txt", "again\n")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_ready(&previews, &name, &pushed.after).await;
    assert!(namespaces.get_opt(&preview_ns).await.unwrap().is_some());
}

// Fork pull requests and their per-commit approval: see fork_approval.rs.
