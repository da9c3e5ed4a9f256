//! The webhook port against an anonymous attacker, on the running operator (real binary,
//! shipped RBAC, real Secrets): slowloris headers and many connections from one address, slow
//! bodies that try to pin memory, oversize bodies, a flood of failing signatures from the very
//! address a real forge delivers from, and the global body budget filled from several
//! addresses. Each attack is refused with a clear status and counted in the metrics, the held
//! connections are cut by the read timeouts, and *during* the attack a correctly signed GitHub
//! delivery for a real Repository is accepted (202) and reaches the Repository
//! (`status.lastEventTime`). A Repository whose webhook Secret did not opt in never verifies.
//!
//! Attackers connect from other loopback addresses (`127.0.0.2`, ...; see
//! `pullwarden_bench::attack`), the honest delivery from `127.0.0.1`. No timing is
//! asserted beyond generous bounds that only a hang would exceed.

use crate::support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use pullwarden::api::Repository;
use pullwarden_bench::attack::{
    self, Answer, Signature, WRONG_SIGNATURE, github_request, loopback, pull_request_payload,
};
use pullwarden_emulator::{Emulator, EmulatorConfig};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
/// Only a hung server takes this long to answer or close.
const ANSWER: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghp_webhook_attacks";
const HOOK_SECRET: &str = "attack-e2e-hook-secret";
const MIB: usize = 1024 * 1024;
/// Limits of the operator under attack: small enough that a test reaches them with a few
/// connections, the same code paths as the defaults.
const PER_ADDRESS: usize = 4;
const BODY_BUDGET: usize = 8 * MIB;
const FAILURE_BURST: usize = 5;

fn honest() -> IpAddr {
    loopback(1)
}

async fn ask(source: IpAddr, target: SocketAddr, request: &[u8]) -> Answer {
    attack::send(source, target, request, ANSWER).await.unwrap()
}

async fn counter(op: &Operator, sample: &str) -> f64 {
    op.metric(sample).await.unwrap().unwrap_or(0.0)
}

#[tokio::test]
async fn webhook_server_survives_an_anonymous_attacker() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "hook-attack").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "ci-bot").await.unwrap();
    let repo = github_repo(&emu, "acme/target", &[("README.md", "target\n")]).await;
    let bystander = github_repo(&emu, "acme/bystander", &[("README.md", "b\n")]).await;

    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            args: vec![
                format!("--webhook-max-connections-per-address={PER_ADDRESS}"),
                "--webhook-header-read-timeout=3s".into(),
                "--webhook-body-read-timeout=20s".into(),
                format!("--webhook-max-in-flight-body-bytes={BODY_BUDGET}"),
                format!("--webhook-unauthenticated-burst={FAILURE_BURST}"),
                "--webhook-unauthenticated-rate=0.01".into(),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    op.wait_ready(TIMEOUT).await.unwrap();
    let target = op.webhook_addr;

    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
    let opted_in: Secret = serde_json::from_value(json!({
        "metadata": {"name": "target-hook", "labels": {"pullwarden.dev/credentials": "true"}},
        "stringData": {"secret": HOOK_SECRET},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &opted_in)
        .await
        .unwrap();
    // The same secret value, but the Secret never opted in to being used by Pullwarden.
    let unlabelled: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bystander-hook"},
        "stringData": {"secret": HOOK_SECRET},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &unlabelled)
        .await
        .unwrap();
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    for (name, info, hook) in [
        ("target", &repo, "target-hook"),
        ("bystander", &bystander, "bystander-hook"),
    ] {
        let manifest = repository(
            name,
            &emu,
            info,
            "forge-token",
            json!({"interval": "30m", "webhook": {"secretRef": {"name": hook}}}),
        );
        apply(&repos, name, &manifest).await;
    }
    wait_for(&repos, "target", TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();

    // 1. Slowloris and many connections from one address: PER_ADDRESS connections that never
    //    finish their headers are held, further ones are refused at accept with a 503.
    let mut slowloris = Vec::new();
    for _ in 0..PER_ADDRESS {
        slowloris.push(attack::slow_headers(loopback(2), target).await.unwrap());
    }
    let mut refused = 0;
    for _ in 0..PER_ADDRESS {
        let answer = ask(loopback(2), target, b"").await;
        if answer.status == Some(503) {
            assert!(
                answer.text.contains(r#"{"result":"overloaded"}"#),
                "{}",
                answer.text
            );
            refused += 1;
        }
    }
    assert!(
        refused >= 1,
        "no connection beyond the per-address cap was refused"
    );
    assert!(
        counter(
            &op,
            r#"pullwarden_webhook_connections_refused_total{reason="per_address"}"#
        )
        .await
            >= 1.0
    );

    // 2. Slow bodies from another address: each declares 1 MiB, sends a few bytes and stalls.
    //    Only bytes that arrived are reserved from the body budget, so these pin nothing.
    let mut slow_bodies = Vec::new();
    for _ in 0..PER_ADDRESS {
        slow_bodies.push(
            attack::slow_body(loopback(3), target, MIB, 16)
                .await
                .unwrap(),
        );
    }

    // 3. Oversize: a declared 2 MiB body is refused 413 before it is read.
    let oversize = github_request(
        "oversize",
        b"",
        Signature::Verbatim(WRONG_SIGNATURE),
        Some(2 * MIB),
    );
    let answer = ask(loopback(4), target, &oversize).await;
    assert_eq!(answer.status, Some(413), "{}", answer.text);
    assert!(answer.text.contains(r#""too_large""#), "{}", answer.text);

    // 4. Failing signatures for the real repository from the honest address itself (think: a
    //    shared ingress, or hooks on the forge pointed at us): 401 until the address's failure
    //    budget is spent, then 429 with Retry-After.
    let payload = pull_request_payload(&repo.clone_url, 1);
    let mut statuses = Vec::new();
    for i in 0..FAILURE_BURST + 3 {
        let request = github_request(
            &format!("forged-{i}"),
            &payload,
            Signature::With("not-the-secret"),
            None,
        );
        statuses.push(ask(honest(), target, &request).await.status);
    }
    assert!(
        statuses[..FAILURE_BURST].iter().all(|s| *s == Some(401)),
        "{statuses:?}"
    );
    let limited = ask(
        honest(),
        target,
        &github_request("forged-last", &payload, Signature::With("guess"), None),
    )
    .await;
    assert_eq!(limited.status, Some(429), "{}", limited.text);
    assert!(
        limited.text.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        limited.text
    );

    // 5. During all of it (slowloris and slow bodies still held, the address over its failure
    //    budget), a correctly signed delivery from the same address is accepted ...
    let before = repos.get("target").await.unwrap();
    let valid = github_request(
        &uuid::Uuid::new_v4().to_string(),
        &payload,
        Signature::With(HOOK_SECRET),
        None,
    );
    let accepted = ask(honest(), target, &valid).await;
    assert_eq!(accepted.status, Some(202), "{}", accepted.text);
    assert!(accepted.text.contains(r#""accepted""#), "{}", accepted.text);
    // ... and reaches its Repository.
    let previous = before
        .status
        .as_ref()
        .and_then(|s| s.last_event_time.clone());
    wait_for(
        &repos,
        "target",
        TIMEOUT,
        "lastEventTime from the delivery accepted under attack",
        |r: &Repository| {
            let now = r.status.as_ref().and_then(|s| s.last_event_time.clone());
            now.is_some() && now != previous
        },
    )
    .await
    .unwrap();

    // A Repository whose Secret did not opt in never verifies, even with the right HMAC.
    let bystander_payload = pull_request_payload(&bystander.clone_url, 1);
    let refused = ask(
        loopback(7),
        target,
        &github_request(
            "bystander",
            &bystander_payload,
            Signature::With(HOOK_SECRET),
            None,
        ),
    )
    .await;
    assert_eq!(refused.status, Some(401), "{}", refused.text);
    assert!(
        repos
            .get("bystander")
            .await
            .unwrap()
            .status
            .and_then(|s| s.last_event_time)
            .is_none()
    );

    // 6. Memory pinning: bodies of (almost) 1 MiB that really arrive and then stall, from more
    //    and more addresses (each at its connection cap), fill the global body budget; then a
    //    1 MiB body from yet another address is refused 503 `overloaded` before it is buffered.
    let mut filling = Vec::new();
    let probe_body = vec![b' '; MIB];
    let probe = github_request(
        "probe",
        &probe_body,
        Signature::Verbatim(WRONG_SIGNATURE),
        None,
    );
    let mut last = None;
    for source in 10..30 {
        for _ in 0..PER_ADDRESS {
            filling.push(
                attack::slow_body(loopback(source), target, MIB, MIB - 1)
                    .await
                    .unwrap(),
            );
        }
        // The bytes are reserved as the operator reads the stalled bodies: give it a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answer = ask(loopback(6), target, &probe).await;
        if answer.status == Some(503) {
            assert!(answer.text.contains(r#""overloaded""#), "{}", answer.text);
            last = Some(answer);
            break;
        }
        last = Some(answer);
    }
    assert_eq!(
        last.as_ref().and_then(|a| a.status),
        Some(503),
        "the body budget was never exhausted (last answer: {last:?})"
    );
    // That attacker gives up; its reservations are returned.
    drop(filling);

    // 7. The read timeouts cut the held connections: slowloris ones are closed, slow bodies are
    //    answered 408 and closed (by then the pinning connections are long gone).
    for mut stream in slowloris {
        attack::read_answer(&mut stream, ANSWER).await.unwrap();
    }
    for mut stream in slow_bodies {
        let answer = attack::read_answer(&mut stream, ANSWER).await.unwrap();
        assert_eq!(answer.status, Some(408), "{}", answer.text);
    }

    // Everything was counted, and the operator is still serving.
    for (result, at_least) in [
        ("accepted", 1.0),
        ("unauthorized", FAILURE_BURST as f64),
        ("rate_limited", 1.0),
        ("too_large", 1.0),
        ("overloaded", 1.0),
        ("malformed", PER_ADDRESS as f64),
    ] {
        let sample =
            format!(r#"pullwarden_webhook_requests_total{{forge="github",result="{result}"}}"#);
        let value = counter(&op, &sample).await;
        assert!(
            value >= at_least,
            "{sample} = {value}, expected ≥ {at_least}"
        );
    }
    let again = ask(
        honest(),
        target,
        &github_request(
            &uuid::Uuid::new_v4().to_string(),
            &payload,
            Signature::With(HOOK_SECRET),
            None,
        ),
    )
    .await;
    assert_eq!(again.status, Some(202), "{}", again.text);
}
