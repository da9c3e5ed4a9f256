//! Two operator processes with `--leader-elect`: exactly one leads and writes; a webhook sent to
//! the standby still reaches the leader; killing the leader with
//! SIGKILL hands over to the other, which then writes status; a clean SIGTERM releases the lease
//! at once.

use crate::support::*;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pullwarden::api::{HasCommonStatus, PolicyGate, Repository};
use pullwarden_emulator::{Emulator, EmulatorConfig, HookSpec, PullSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use pullwarden_harness::operator::{OPERATOR_NAMESPACE, Operator, OperatorOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const LEADER: &str = "pullwarden_leader";

async fn leader_flags(ops: &[&Operator]) -> Vec<f64> {
    let mut out = Vec::new();
    for op in ops {
        out.push(op.metric(LEADER).await.ok().flatten().unwrap_or(-1.0));
    }
    out
}

async fn wait_single_leader(ops: &[&Operator], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let flags = leader_flags(ops).await;
        let leaders: Vec<usize> = flags
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == 1.0)
            .map(|(i, _)| i)
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(leaders.len() <= 1, "two leaders at once: {flags:?}");
        assert!(
            Instant::now() < deadline,
            "no leader after {timeout:?}: {flags:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gate(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": name},
        "spec": {"repositoryRef": {"name": "absent"}, "rules": [{"name": "signed", "signedCommits": {}}]}
    })
}

fn reported(g: &PolicyGate) -> bool {
    g.common().is_some_and(|c| {
        c.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "ReferenceNotFound")
    })
}

#[tokio::test]
async fn one_leader_writes_and_a_killed_leader_hands_over() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "leader").await.unwrap();
    let n = ns.name().to_string();
    // A lease name per run so a reused cluster never waits on a lease from an earlier run.
    let lease = format!("pullwarden-e2e-{n}");
    let opts = |id: &str| OperatorOptions {
        namespace: Some(n.clone()),
        leader_election_namespace: Some(OPERATOR_NAMESPACE.into()),
        leader_election_id: Some(lease.clone()),
        identity: Some(id.into()),
        ..Default::default()
    };
    let mut a = Operator::start(cluster, opts("replica-a")).await.unwrap();
    let mut b = Operator::start(cluster, opts("replica-b")).await.unwrap();
    let first = wait_single_leader(&[&a, &b], Duration::from_secs(30)).await;
    // Both are ready: the leader after its watches synced, the standby as a standby.
    a.wait_ready(Duration::from_secs(30)).await.unwrap();
    b.wait_ready(Duration::from_secs(30)).await.unwrap();
    let standby_body = if first == 0 {
        b.get("/readyz").await.unwrap().1
    } else {
        a.get("/readyz").await.unwrap().1
    };
    assert!(standby_body.contains("standby"), "{standby_body}");

    let gates: Api<PolicyGate> = Api::namespaced(client.clone(), &n);
    let pp = PatchParams::apply("pullwarden.dev/e2e");
    gates
        .patch("before", &pp, &Patch::Apply(&gate("before")))
        .await
        .unwrap();
    wait_for(
        &gates,
        "before",
        Duration::from_secs(30),
        "status written by the leader",
        reported,
    )
    .await
    .unwrap();
    // Only the leader reconciled anything.
    let sample = r#"pullwarden_reconciles_total{kind="PolicyGate"}"#;
    let ra = a.metric(sample).await.unwrap().unwrap_or(0.0);
    let rb = b.metric(sample).await.unwrap().unwrap_or(0.0);
    let (leader_count, standby_count) = if first == 0 { (ra, rb) } else { (rb, ra) };
    assert!(
        leader_count >= 1.0 && standby_count == 0.0,
        "leader {leader_count}, standby {standby_count}"
    );

    // A webhook delivered to the standby reaches the leader (through the Repository annotation).
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token("ghp_leader", "ci-bot").await.unwrap();
    let repo = github_repo(
        &emu,
        "acme/ha",
        &[(
            "README.md",
            "ha
",
        )],
    )
    .await;
    emu.create_branch("acme/ha", "topic", Some("main"))
        .await
        .unwrap();
    secret(&client, &n, "ha-token", &[("token", "ghp_leader")]).await;
    secret(&client, &n, "ha-hook", &[("secret", "ha-hook-secret")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = repository(
        "ha",
        &emu,
        &repo,
        "ha-token",
        json!({"interval": "30m", "webhook": {"secretRef": {"name": "ha-hook"}}}),
    );
    apply(&repos, "ha", &manifest).await;
    wait_for(
        &repos,
        "ha",
        Duration::from_secs(30),
        "first sync",
        |r: &Repository| has_reason(r, "True", "Synced"),
    )
    .await
    .unwrap();
    let standby = if first == 0 { &b } else { &a };
    emu.add_hook(
        "acme/ha",
        HookSpec {
            url: format!("http://{}/hooks/github", standby.webhook_addr),
            secret: Some("ha-hook-secret".into()),
            events: vec![],
        },
    )
    .await
    .unwrap();
    let pr = emu
        .open_pull(
            "acme/ha",
            PullSpec {
                head: "topic".into(),
                title: "HA".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for(
        &repos,
        "ha",
        Duration::from_secs(30),
        "PR seen after a webhook to the standby",
        |r: &Repository| {
            r.status
                .as_ref()
                .is_some_and(|s| s.pull_requests.iter().any(|p| p.number == pr.number))
        },
    )
    .await
    .unwrap();

    // SIGKILL the leader: the standby takes over once the lease expires (15 s).
    let killed_at = Instant::now();
    if first == 0 {
        a.kill()
    } else {
        b.kill()
    }
    let survivor = if first == 0 { &b } else { &a };
    let deadline = Instant::now() + Duration::from_secs(40);
    while survivor.metric(LEADER).await.unwrap() != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "standby never took over; log:\n{}",
            survivor.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let handover = killed_at.elapsed();
    eprintln!("leader handover after SIGKILL took {handover:?}");
    gates
        .patch("after", &pp, &Patch::Apply(&gate("after")))
        .await
        .unwrap();
    wait_for(
        &gates,
        "after",
        Duration::from_secs(30),
        "status written by the new leader",
        reported,
    )
    .await
    .unwrap();

    // A clean SIGTERM releases the lease: a new replica leads without waiting for expiry.
    let mut c = Operator::start(cluster, opts("replica-c")).await.unwrap();
    // Waited for off this thread: the emulator serves from this test's runtime, and a
    // reconcile in flight at SIGTERM finishes its forge request before the operator exits.
    let mut survivor = if first == 0 { b } else { a };
    let survivor_exit =
        tokio::task::spawn_blocking(move || survivor.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(survivor_exit, Some(0), "clean shutdown exits 0");
    let released_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.metric(LEADER).await.unwrap() != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "released lease was not taken quickly; log:\n{}",
            c.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "leader handover after SIGTERM took {:?}",
        released_at.elapsed()
    );
    c.kill();
}
