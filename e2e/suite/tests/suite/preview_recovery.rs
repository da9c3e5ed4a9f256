//! Previews that never get stuck and never churn (issue 10 item 2 and 4), end to end on the
//! GitHub face: a required check re-run to green redeploys with no push; the
//! `pullwarden.dev/reconcile-requested-at` annotation is acknowledged on Ready and Failed previews;
//! `Healthy` follows the workloads both ways; a same-SHA redeploy writes nothing new on the PR.
//!
//! Nothing here fakes a status: the check is a commit status delivered by the emulator's `status`
//! webhook, the outage is real (the preview's pods deleted while a ResourceQuota forbids new
//! ones, so the ReplicaSet controller cannot replace them), the redeploy is a changed template.

use crate::support::*;
use k8s_openapi::api::apps::v1::Deployment;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pullwarden::api::{HasCommonStatus, PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_emulator::{
    EmulatorHandle, HookSpec, PullInfo, PullSpec, PushSpec, RepoInfo, StatusSpec,
};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use pullwarden_harness::operator::Operator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
const TOKEN: &str = "ghp_preview_recovery";
const HOOK_SECRET: &str = "preview-recovery-hook-secret";
const CONTEXT: &str = "pullwarden/preview";
/// The required check of the `waitFor` scenario.
const CHECK: &str = "build-image";

struct Setup {
    /// The Repository's name (= its namespace's name).
    name: String,
    emu: EmulatorHandle,
    info: RepoInfo,
    _op: Operator,
    _ns: TestNamespace,
    client: kube::Client,
    repo_path: String,
}

impl Setup {
    fn previews(&self) -> Api<PreviewEnvironment> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// The Repository manifest with `preview_extra` merged into its preview section.
    fn manifest(&self, preview_extra: Value) -> Value {
        repository(
            &self.name,
            &self.emu,
            &self.info,
            "forge-token",
            json!({
                "interval": "10s",
                "webhook": {"secretRef": {"name": "forge-hook"}},
                "pullRequests": {"labels": ["preview"]},
                "preview": preview_spec(preview_extra),
            }),
        )
    }

    async fn open(&self, head: &str, title: &str) -> (PullInfo, String) {
        let pr = self
            .emu
            .open_pull(
                &self.repo_path,
                PullSpec {
                    head: head.into(),
                    title: title.into(),
                    labels: vec!["preview".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let name = format!("{}-pr-{}", self.name, pr.number);
        (pr, name)
    }

    /// What Pullwarden wrote on the PR so far: its statuses on `sha`, the sticky comment's edit
    /// count, and the deployment statuses of `sha`.
    async fn written(&self, number: u64, sha: &str) -> (usize, u32, usize) {
        let statuses = self
            .emu
            .statuses(&self.repo_path, Some(sha))
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.context == CONTEXT)
            .count();
        let comments = self.emu.comments(&self.repo_path, number).await.unwrap();
        assert_eq!(comments.len(), 1, "one sticky comment: {comments:?}");
        let deployment_statuses = self
            .emu
            .deployments(&self.repo_path)
            .await
            .unwrap()
            .iter()
            .filter(|d| d.sha == sha)
            .map(|d| d.statuses.len())
            .sum();
        (statuses, comments[0].edit_count, deployment_statuses)
    }
}

/// Emulator repo with the preview app, the operator, a Repository selecting PRs labelled
/// `preview` that follows the repository through signed webhooks (every event, `status`
/// included) and a 10 s poll.
async fn setup(prefix: &str, preview_extra: Value) -> Setup {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, prefix).await.unwrap();
    let n = ns.name().to_string();
    let repo_path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    secret(&client, &n, "forge-hook", &[("secret", HOOK_SECRET)]).await;
    let s = Setup {
        name: n.clone(),
        emu,
        info,
        _op: op,
        _ns: ns,
        client,
        repo_path,
    };
    let repos: Api<Repository> = Api::namespaced(s.client.clone(), &n);
    apply(&repos, &n, &s.manifest(preview_extra)).await;
    wait_for(&repos, &n, TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    s.emu
        .add_hook(
            &s.repo_path,
            HookSpec {
                url: format!("http://{}/hooks/github", s._op.webhook_addr),
                secret: Some(HOOK_SECRET.into()),
                events: vec![],
            },
        )
        .await
        .unwrap();
    s
}

fn condition<'a>(p: &'a PreviewEnvironment, type_: &str) -> Option<&'a Condition> {
    p.common()?.conditions.iter().find(|c| c.type_ == type_)
}

fn healthy_is(p: &PreviewEnvironment, status: &str) -> bool {
    condition(p, "Healthy").is_some_and(|c| c.status == status)
}

fn deployed_sha(p: &PreviewEnvironment) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.deployed_sha.as_deref())
}

fn acknowledged(p: &PreviewEnvironment) -> Option<&str> {
    p.common()?.last_handled_reconcile_at.as_deref()
}

/// The PR's head has not moved: whatever happened, it happened without a push.
async fn assert_no_push(s: &Setup, pr: &PullInfo) {
    let now = s.emu.pull(&s.repo_path, pr.number).await.unwrap();
    assert_eq!(now.head_sha, pr.head_sha, "the PR head moved");
}

/// A CI status on `sha`, written by `ci-bot` (the emulator delivers GitHub's `status` webhook).
async fn ci_status(s: &Setup, sha: &str, state: &str) {
    s.emu
        .set_status(
            &s.repo_path,
            sha,
            StatusSpec {
                context: CHECK.into(),
                state: state.into(),
                description: Some(format!("image build {state}")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_required_check_rerun_to_green_redeploys_the_failed_preview_without_a_push() {
    let s = setup("rerun", json!({"waitFor": {"checks": [CHECK]}})).await;
    let previews = s.previews();
    let (pr, name) = s.open("feature", "Flaky build").await;

    // The required check fails: the preview is Failed for a reason a re-run can change.
    ci_status(&s, &pr.head_sha, "failure").await;
    let failed = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Failed (RequiredCheckFailed)",
        |p: &PreviewEnvironment| {
            phase(p) == Some(PreviewPhase::Failed) && has_reason(p, "False", "RequiredCheckFailed")
        },
    )
    .await
    .unwrap();
    assert!(
        ready_message(&failed).contains(CHECK),
        "{:?}",
        failed.status
    );
    assert!(deployed_sha(&failed).is_none(), "nothing deployed yet");

    // The check is re-run on the same commit and passes: the status webhook alone brings the
    // preview to Ready at that SHA.
    let before = s.emu.deliveries(Some(&s.repo_path)).await.unwrap().len();
    let t = Instant::now();
    ci_status(&s, &pr.head_sha, "success").await;
    // Our own comment edits echo back as deliveries too: wait for the status among the new ones.
    let mut count = before + 1;
    let hook = loop {
        let deliveries = s
            .emu
            .wait_for_deliveries(&s.repo_path, count, TIMEOUT)
            .await
            .unwrap();
        if let Some(hook) = deliveries[before..].iter().find(|d| d.event == "status") {
            break hook.clone();
        }
        assert!(
            count < before + 20,
            "no status delivery among {:?}",
            &deliveries[before..]
        );
        count = deliveries.len() + 1;
    };
    assert_eq!(
        hook.outcome, "delivered",
        "the status webhook reached the operator: {hook:?}"
    );
    wait_ready(&previews, &name, &pr.head_sha).await;
    eprintln!("check re-run to green → Ready: {:?}", t.elapsed());
    assert_no_push(&s, &pr).await;
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pr.head_sha))
        .await
        .unwrap();
    assert!(
        statuses
            .iter()
            .any(|x| x.context == CONTEXT && x.state == "success"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn reconcile_requests_are_acknowledged_on_ready_and_failed_previews() {
    let s = setup("ack", json!({})).await;
    let previews = s.previews();

    // A Ready preview.
    let (ok_pr, ok_name) = s.open("feature", "Fine").await;
    wait_ready(&previews, &ok_name, &ok_pr.head_sha).await;

    // A Failed preview: its manifests are refused, which only a change can fix.
    s.emu
        .create_branch(&s.repo_path, "evil", Some("main"))
        .await
        .unwrap();
    let evil = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\ndata: {a: b}\n";
    s.emu
        .push(
            &s.repo_path,
            PushSpec {
                branch: "evil".into(),
                files: files(&[("deploy/preview/zz-evil.yaml", evil)]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, bad_name) = s.open("evil", "Sneaky").await;
    wait_for(
        &previews,
        &bad_name,
        TIMEOUT,
        "Failed (ManifestsRefused)",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Failed),
    )
    .await
    .unwrap();

    for (name, expected) in [
        (&ok_name, PreviewPhase::Ready),
        (&bad_name, PreviewPhase::Failed),
    ] {
        for token in ["2026-12-02T10:00:00Z", "second-request"] {
            let t = Instant::now();
            request_reconcile(&previews, name, token).await;
            let acked = wait_for(
                &previews,
                name,
                TIMEOUT,
                &format!("{name}: reconcile request {token} acknowledged"),
                |p: &PreviewEnvironment| acknowledged(p) == Some(token),
            )
            .await
            .unwrap();
            eprintln!("{name}: {token} acknowledged after {:?}", t.elapsed());
            assert_eq!(phase(&acked), Some(expected), "{:?}", acked.status);
        }
    }
}

#[tokio::test]
async fn healthy_follows_the_workloads_down_and_back_up_without_a_push() {
    let s = setup("healthy", json!({})).await;
    let previews = s.previews();
    let (pr, name) = s.open("feature", "Outage").await;
    let ready = wait_ready(&previews, &name, &pr.head_sha).await;
    let preview_ns = ready.status.as_ref().unwrap().namespace.clone().unwrap();
    wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Healthy",
        |p: &PreviewEnvironment| healthy_is(p, "True"),
    )
    .await
    .unwrap();

    // An outage: `web` is rolled (Recreate) onto a node selector no node has, so its pods go
    // and the new ones stay Pending. The preview's revision is unchanged: nothing is re-applied.
    // (A ResourceQuota would be refused by the admission policies of preview namespaces.)
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &preview_ns);
    let t = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "strategy": {"type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {"nodeSelector": {"pullwarden.dev/e2e-outage": "no-such-node"}}}
            }})),
        )
        .await
        .unwrap();
    let web_available = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|st| st.available_replicas)
            .unwrap_or(0)
    };
    wait_for(
        &deployments,
        "web",
        TIMEOUT,
        "web has no available replica",
        |d: &Deployment| web_available(d) == 0,
    )
    .await
    .unwrap();
    let down = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Healthy=False",
        |p: &PreviewEnvironment| healthy_is(p, "False"),
    )
    .await
    .unwrap();
    eprintln!("outage → Healthy=False: {:?}", t.elapsed());
    let why = condition(&down, "Healthy").unwrap().message.clone();
    assert!(why.contains("Deployment/web"), "{why}");

    // The outage ends: the node selector goes, the new pods are scheduled.
    let t = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"nodeSelector": null}}}})),
        )
        .await
        .unwrap();
    wait_for(
        &deployments,
        "web",
        TIMEOUT,
        "web available again",
        |d: &Deployment| {
            let wanted = d.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
            wanted > 0 && web_available(d) >= wanted
        },
    )
    .await
    .unwrap();
    eprintln!("node selector removed → web available: {:?}", t.elapsed());
    let up = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Healthy=True again",
        |p: &PreviewEnvironment| healthy_is(p, "True"),
    )
    .await
    .unwrap();
    eprintln!("recovery → Healthy=True: {:?}", t.elapsed());
    assert_eq!(phase(&up), Some(PreviewPhase::Ready), "{:?}", up.status);
    assert_eq!(deployed_sha(&up), Some(pr.head_sha.as_str()));
    assert_no_push(&s, &pr).await;
}

#[tokio::test]
async fn a_same_sha_redeploy_writes_nothing_new_on_the_pull_request() {
    let s = setup("redeploy", json!({})).await;
    let previews = s.previews();
    let repos: Api<Repository> = Api::namespaced(s.client.clone(), &s.name);
    let (pr, name) = s.open("feature", "Stable").await;
    let ready = wait_ready(&previews, &name, &pr.head_sha).await;
    let generation = ready.metadata.generation.unwrap();
    // Let resyncs pass so that everything the first deploy writes has been written.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = s.written(pr.number, &pr.head_sha).await;
    assert!(before.0 >= 2 && before.1 >= 1, "{before:?}");

    // The template changes, the head does not: a redeploy of the same SHA. (The new variable
    // is used by no manifest: changing the image would change the migration Job's pod
    // template, which the API server refuses as immutable — a different story.)
    apply(
        &repos,
        &s.name,
        &s.manifest(json!({"vars": {"image": "registry.test/acme/shop", "channel": "beta"}})),
    )
    .await;
    let t = Instant::now();
    let redeployed = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Ready for the new generation at the same SHA",
        |p: &PreviewEnvironment| {
            let generation_now = p.metadata.generation.unwrap_or(0);
            generation_now > generation
                && p.common().and_then(|c| c.observed_generation) == Some(generation_now)
                && phase(p) == Some(PreviewPhase::Ready)
                && deployed_sha(p) == Some(pr.head_sha.as_str())
        },
    )
    .await
    .unwrap();
    eprintln!(
        "template change → redeployed at generation {:?}: {:?}",
        redeployed.metadata.generation,
        t.elapsed()
    );
    // Let resyncs pass again before counting.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = s.written(pr.number, &pr.head_sha).await;
    assert_eq!(
        after, before,
        "(statuses on the SHA, comment edits, deployment statuses) changed by a same-SHA redeploy"
    );
    assert_no_push(&s, &pr).await;
}

fn web_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

#[tokio::test]
async fn an_idle_preview_sleeps_and_the_wake_annotation_brings_it_back() {
    let s = setup("sleep", json!({"sleepAfter": "15s"})).await;
    let previews = s.previews();
    let (pr, name) = s.open("feature", "Sleepy").await;
    let ready = wait_ready(&previews, &name, &pr.head_sha).await;
    let preview_ns = ready.status.as_ref().unwrap().namespace.clone().unwrap();
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &preview_ns);
    let rendered = web_replicas(&deployments.get("web").await.unwrap());
    assert!(rendered > 0);

    // No push for 15 s: scaled to zero, phase Sleeping, and the PR says how to wake it.
    let t = Instant::now();
    let asleep = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Sleeping",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Sleeping),
    )
    .await
    .unwrap();
    eprintln!("Ready → Sleeping: {:?}", t.elapsed());
    assert_eq!(web_replicas(&deployments.get("web").await.unwrap()), 0);
    let message = asleep.status.as_ref().unwrap().message.clone().unwrap();
    assert!(message.contains("pullwarden.dev/wake"), "{message}");
    let comments = s.emu.comments(&s.repo_path, pr.number).await.unwrap();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains("sleeping") && comments[0].body.contains("pullwarden.dev/wake"),
        "{}",
        comments[0].body
    );
    let (statuses_asleep, _, _) = s.written(pr.number, &pr.head_sha).await;

    // The wake annotation: the revision is applied again with its rendered replicas.
    let t = Instant::now();
    previews
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"pullwarden.dev/wake": "wake-1"}}})),
        )
        .await
        .unwrap();
    let awake = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "awake and Ready",
        |p: &PreviewEnvironment| {
            phase(p) == Some(PreviewPhase::Ready)
                && p.status
                    .as_ref()
                    .and_then(|s| s.last_handled_wake_at.as_deref())
                    == Some("wake-1")
        },
    )
    .await
    .unwrap();
    eprintln!("wake → Ready: {:?}", t.elapsed());
    assert_eq!(deployed_sha(&awake), Some(pr.head_sha.as_str()), "no push");
    assert_eq!(
        web_replicas(&deployments.get("web").await.unwrap()),
        rendered
    );
    // Asleep, the SHA's status stayed success; waking says "deploying", then success, once each.
    let (statuses_awake, _, _) = s.written(pr.number, &pr.head_sha).await;
    assert_eq!(
        statuses_awake,
        statuses_asleep + 2,
        "one pending and one success for the wake-up"
    );
    assert_no_push(&s, &pr).await;
}
