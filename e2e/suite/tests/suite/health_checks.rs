//! HealthCheck probing end to end (issue 13): the operator binary under its shipped RBAC, the
//! local control plane, and real servers on loopback (`pullwarden_harness::probe_targets`: HTTP,
//! TCP, gRPC health, DNS) whose behaviour each test switches while the operator probes. The
//! harness starts the operator with `--outbound-allow-cidrs=127.0.0.0/8` (loopback allowed);
//! every other class the outbound guard refuses stays refused, which is what the metadata-address
//! tests show. Status is written on every state change and otherwise every
//! `--health-status-interval` (2s here), so the tests poll the objects; no test asserts timing.

use crate::support::*;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use pullwarden::api::{HealthCheck, HealthState, PreviewEnvironment, ProbeResult, Repository};
use pullwarden_bench::prom::Scrape;
use pullwarden_emulator::{EmulatorHandle, PullSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use pullwarden_harness::probe_targets::{
    Behaviour, DnsTarget, GrpcTarget, HttpTarget, HttpTargetOptions, TcpTarget, TlsIdentity,
};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Status writes between state changes come this often (the default, 5m, would outlast a test).
const STATUS_INTERVAL: &str = "--health-status-interval=2s";
const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// A namespace, an operator watching it and the HealthCheck API there.
struct Scene {
    client: kube::Client,
    ns: TestNamespace,
    op: Operator,
    checks: Api<HealthCheck>,
}

impl Scene {
    async fn start(prefix: &str, extra_args: &[String]) -> Scene {
        let cluster = cluster::shared();
        let client = cluster.client().await.unwrap();
        apply_crds(&client).await.unwrap();
        let ns = TestNamespace::new(cluster, prefix).await.unwrap();
        let mut args = vec![STATUS_INTERVAL.to_owned()];
        args.extend_from_slice(extra_args);
        let op = Operator::start(
            cluster,
            OperatorOptions {
                namespace: Some(ns.name().to_owned()),
                args,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        op.wait_ready(TIMEOUT).await.unwrap();
        let checks = Api::namespaced(client.clone(), ns.name());
        Scene {
            client,
            ns,
            op,
            checks,
        }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    /// Creates (or updates) HealthCheck `name` with `spec`.
    async fn check(&self, name: &str, spec: Value) {
        let manifest = json!({
            "apiVersion": "pullwarden.dev/v1alpha1",
            "kind": "HealthCheck",
            "metadata": {"name": name},
            "spec": spec,
        });
        apply(&self.checks, name, &manifest).await;
    }

    /// Waits until `predicate` holds for HealthCheck `name`; on timeout the panic shows the
    /// object and the operator's log tail.
    async fn wait(
        &self,
        name: &str,
        description: &str,
        predicate: impl FnMut(&HealthCheck) -> bool,
    ) -> HealthCheck {
        match wait_for(&self.checks, name, TIMEOUT, description, predicate).await {
            Ok(h) => h,
            Err(e) => panic!("{e}\noperator log tail:\n{}", self.op.log_tail(40)),
        }
    }

    async fn wait_state(&self, name: &str, want: HealthState) -> HealthCheck {
        self.wait(name, &format!("state {want:?}"), |h| state(h) == want)
            .await
    }

    /// Reasons of the Events about HealthCheck `name`, oldest first.
    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        let mut list: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("HealthCheck") && r.name.as_deref() == Some(name)
                })
            })
            .collect();
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Waits until the Events about `name` include `reason`.
    async fn wait_event(&self, name: &str, reason: &str) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let reasons = self.event_reasons(name).await;
            if reasons.iter().any(|r| r == reason) {
                return reasons;
            }
            assert!(
                Instant::now() < deadline,
                "no {reason} Event for HealthCheck {name} (events: {reasons:?}); operator log tail:\n{}",
                self.op.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `pullwarden_healthcheck_up{namespace, name}`, `None` when absent.
    async fn up(&self, name: &str) -> Option<f64> {
        let scrape = Scrape::parse(&self.op.metrics().await.unwrap());
        scrape
            .select(
                "pullwarden_healthcheck_up",
                &[("namespace", self.ns()), ("name", name)],
            )
            .map(|s| s.value)
            .next()
    }

    /// Waits until `pullwarden_healthcheck_up` of `name` is `want`.
    async fn wait_up(&self, name: &str, want: f64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let up = self.up(name).await;
            if up == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pullwarden_healthcheck_up for {name} is {up:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn state(h: &HealthCheck) -> HealthState {
    h.status.as_ref().map(|s| s.state).unwrap_or_default()
}

fn transitions(h: &HealthCheck) -> u64 {
    h.status.as_ref().map_or(0, |s| s.transitions)
}

fn last_probe(h: &HealthCheck) -> ProbeResult {
    h.status
        .as_ref()
        .and_then(|s| s.last_probe.clone())
        .unwrap_or_default()
}

fn last_error(h: &HealthCheck) -> String {
    last_probe(h).error.unwrap_or_default()
}

fn yaml(h: &HealthCheck) -> String {
    cluster::to_short_yaml(h)
}

/// An HTTP check probing `url` every second (timeout 1s), `extra` merged into the spec.
fn http_spec(url: &str, extra: Value) -> Value {
    merge(
        json!({
            "target": {"url": url},
            "probe": {"http": {}},
            "interval": "1s",
            "timeout": "1s",
            "failureThreshold": 2,
            "successThreshold": 1,
        }),
        extra,
    )
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(more)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// Polls until `cond` holds (up to [`TIMEOUT`]), with `what` in the panic.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn flapping_http_moves_the_state_and_counts_transitions_thresholds_damp_it() {
    let scene = Scene::start("hc-flap", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    app.set("/flap", Behaviour::Flap);
    app.set("/damped", Behaviour::Flap);
    // Thresholds of one: every probe of an alternating server changes the state.
    scene
        .check(
            "flap",
            http_spec(
                &app.url("/flap"),
                json!({"failureThreshold": 1, "successThreshold": 1}),
            ),
        )
        .await;
    // Thresholds of two: an alternating server never has two results in a row.
    scene
        .check(
            "damped",
            http_spec(
                &app.url("/damped"),
                json!({"failureThreshold": 2, "successThreshold": 2}),
            ),
        )
        .await;

    let flapped = scene
        .wait("flap", "four transitions", |h| transitions(h) >= 4)
        .await;
    assert_ne!(state(&flapped), HealthState::Unknown, "{}", yaml(&flapped));
    let status = flapped.status.clone().unwrap();
    assert!(status.last_transition_time.is_some(), "{}", yaml(&flapped));
    assert!(
        has_reason(&flapped, "True", "Probing"),
        "a probing check is Ready/Probing: {}",
        yaml(&flapped)
    );
    let availability = status.availability.clone().unwrap_or_default();
    assert!(
        availability.ends_with('%') && availability != "100%" && availability != "0%",
        "half the probes failed: {}",
        yaml(&flapped)
    );
    let reasons = scene.wait_event("flap", "HealthRecovered").await;
    assert!(
        reasons.iter().any(|r| r == "HealthDegraded"),
        "events: {reasons:?}"
    );

    // The damped check saw the same alternation (at least as many probes) and never moved.
    until("the damped check probed at least four times", || {
        app.requests_to("/damped") >= 4
    })
    .await;
    let damped = scene
        .wait("damped", "a status write after four probes", |h| {
            h.status.as_ref().is_some_and(|s| s.last_probe.is_some())
        })
        .await;
    assert_eq!(state(&damped), HealthState::Unknown, "{}", yaml(&damped));
    assert_eq!(transitions(&damped), 0, "{}", yaml(&damped));
    let s = damped.status.unwrap();
    assert!(
        s.consecutive_failures <= 1 && s.consecutive_successes <= 1,
        "never two in a row: {s:?}"
    );
}

#[tokio::test]
async fn server_errors_degrade_with_their_status_code_and_recover() {
    let scene = Scene::start("hc-500", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    scene
        .check("app", http_spec(&app.url("/healthz"), json!({})))
        .await;

    let ok = scene.wait_state("app", HealthState::Ok).await;
    assert_eq!(last_probe(&ok).status_code, Some(200), "{}", yaml(&ok));
    assert!(has_reason(&ok, "True", "Probing"), "{}", yaml(&ok));
    scene.wait_up("app", 1.0).await;

    app.set("/healthz", Behaviour::Status(500));
    let degraded = scene.wait_state("app", HealthState::Degraded).await;
    let probe = last_probe(&degraded);
    assert_eq!(probe.status_code, Some(500), "{}", yaml(&degraded));
    assert!(probe.error.is_some(), "{}", yaml(&degraded));
    assert!(
        degraded.status.as_ref().unwrap().consecutive_failures >= 2,
        "failureThreshold 2: {}",
        yaml(&degraded)
    );
    scene.wait_event("app", "HealthDegraded").await;
    scene.wait_up("app", 0.0).await;

    // A status code the spec accepts is a success.
    scene
        .check(
            "app",
            http_spec(
                &app.url("/healthz"),
                json!({"probe": {"http": {"expectStatus": ["200-299", "500"]}}}),
            ),
        )
        .await;
    let accepted = scene.wait_state("app", HealthState::Ok).await;
    assert_eq!(last_probe(&accepted).status_code, Some(500));
    scene.wait_event("app", "HealthRecovered").await;
    scene.wait_up("app", 1.0).await;
}

#[tokio::test]
async fn slow_answers_time_out_as_failures() {
    let scene = Scene::start("hc-slow", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    scene
        .check(
            "slow",
            http_spec(
                &app.url("/slow"),
                json!({"interval": "2s", "timeout": "1s"}),
            ),
        )
        .await;
    scene.wait_state("slow", HealthState::Ok).await;

    // Headers only after 30s: every probe runs out of its 1s timeout.
    app.set("/slow", Behaviour::Slow(Duration::from_secs(30)));
    let degraded = scene.wait_state("slow", HealthState::Degraded).await;
    let probe = last_probe(&degraded);
    let error = probe.error.clone().unwrap_or_default().to_lowercase();
    assert!(
        error.contains("time"),
        "the error says it timed out: {}",
        yaml(&degraded)
    );
    assert_eq!(
        probe.status_code,
        None,
        "no answer came: {}",
        yaml(&degraded)
    );

    // maxLatency: an answer slower than allowed fails although it arrives within the timeout.
    app.set("/slow", Behaviour::Ok);
    scene.wait_state("slow", HealthState::Ok).await;
    app.set("/slow", Behaviour::Slow(Duration::from_millis(600)));
    scene
        .check(
            "slow",
            http_spec(
                &app.url("/slow"),
                json!({"interval": "2s", "timeout": "2s", "probe": {"http": {"maxLatency": "100ms"}}}),
            ),
        )
        .await;
    let late = scene.wait_state("slow", HealthState::Degraded).await;
    assert_eq!(last_probe(&late).status_code, Some(200), "{}", yaml(&late));
    assert!(!last_error(&late).is_empty(), "{}", yaml(&late));
}

#[tokio::test]
async fn an_endless_body_is_read_bounded_and_fails_body_contains() {
    let scene = Scene::start("hc-huge", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    app.set("/huge", Behaviour::Huge);
    scene
        .check(
            "huge",
            http_spec(
                &app.url("/huge"),
                json!({"interval": "2s", "timeout": "2s",
                       "probe": {"http": {"bodyContains": "needle"}}}),
            ),
        )
        .await;
    let degraded = scene.wait_state("huge", HealthState::Degraded).await;
    assert_eq!(
        last_probe(&degraded).status_code,
        Some(200),
        "{}",
        yaml(&degraded)
    );
    assert!(!last_error(&degraded).is_empty(), "{}", yaml(&degraded));
    // And it keeps probing (no hang on the first endless body).
    let seen = app.requests_to("/huge");
    until("two more probes of the endless body", || {
        app.requests_to("/huge") >= seen + 2
    })
    .await;
}

#[tokio::test]
async fn connection_refused_degrades_a_tcp_probe_and_reopening_recovers() {
    let scene = Scene::start("hc-tcp", &[]).await;
    let mut port = TcpTarget::start().await.unwrap();
    scene
        .check(
            "tcp",
            json!({
                "target": {"url": port.url()},
                "probe": {"tcp": {}},
                "interval": "1s",
                "timeout": "1s",
                "failureThreshold": 2,
                "successThreshold": 1,
            }),
        )
        .await;
    scene.wait_state("tcp", HealthState::Ok).await;
    assert!(port.accepted() > 0);

    port.close().await;
    let degraded = scene.wait_state("tcp", HealthState::Degraded).await;
    let error = last_error(&degraded).to_lowercase();
    assert!(error.contains("refused"), "{}", yaml(&degraded));

    port.open().await.unwrap();
    let back = scene.wait_state("tcp", HealthState::Ok).await;
    assert!(
        transitions(&back) >= 3,
        "Unknown→OK→Degraded→OK: {}",
        yaml(&back)
    );
}

#[tokio::test]
async fn grpc_not_serving_degrades_and_serving_again_recovers() {
    let scene = Scene::start("hc-grpc", &[]).await;
    let server = GrpcTarget::start().await.unwrap();
    server.set_serving("shop.Cart").await;
    scene
        .check(
            "cart",
            json!({
                "target": {"url": server.url()},
                "probe": {"grpc": {"service": "shop.Cart"}},
                "interval": "1s",
                "timeout": "1s",
                "failureThreshold": 2,
                "successThreshold": 2,
            }),
        )
        .await;
    let ok = scene.wait_state("cart", HealthState::Ok).await;
    let first = transitions(&ok);
    assert!(server.requests() >= 2);

    server.set_not_serving("shop.Cart").await;
    let degraded = scene.wait_state("cart", HealthState::Degraded).await;
    assert!(transitions(&degraded) > first, "{}", yaml(&degraded));
    assert!(
        last_error(&degraded).to_uppercase().contains("NOT_SERVING"),
        "the error names the answer: {}",
        yaml(&degraded)
    );

    server.set_serving("shop.Cart").await;
    let back = scene.wait_state("cart", HealthState::Ok).await;
    assert!(
        transitions(&back) > transitions(&degraded),
        "{}",
        yaml(&back)
    );
    scene.wait_event("cart", "HealthRecovered").await;
}

#[tokio::test]
async fn a_name_the_resolver_answers_with_the_metadata_address_is_refused() {
    let app = HttpTarget::start().await.unwrap();
    let dns = DnsTarget::start(&[
        ("metadata.evil.test", METADATA_IP),
        ("app.test", Ipv4Addr::LOCALHOST),
    ])
    .await
    .unwrap();
    let scene = Scene::start("hc-dns", &[format!("--dns-server={}", dns.addr())]).await;
    let port = app.addr().port();
    // The same port as the allowed server: only the resolved address tells them apart.
    scene
        .check(
            "evil",
            http_spec(&format!("http://metadata.evil.test:{port}/evil"), json!({})),
        )
        .await;
    scene
        .check(
            "fine",
            http_spec(&format!("http://app.test:{port}/fine"), json!({})),
        )
        .await;

    let refused = scene
        .wait("evil", "Ready=False TargetRefused", |h| {
            has_reason(h, "False", "TargetRefused")
        })
        .await;
    let error = last_error(&refused);
    assert!(
        error.contains("169.254.169.254") || error.to_lowercase().contains("metadata"),
        "lastProbe.error names the refusal: {}",
        yaml(&refused)
    );
    assert_ne!(state(&refused), HealthState::Ok, "{}", yaml(&refused));
    scene
        .wait("evil", "the refusal counted as failures: Degraded", |h| {
            state(h) == HealthState::Degraded
        })
        .await;

    // The resolver really was asked, and the name it mapped to loopback is probed fine.
    scene.wait_state("fine", HealthState::Ok).await;
    let asked: Vec<String> = dns.queries().into_iter().map(|(n, _)| n).collect();
    assert!(
        asked.iter().any(|n| n == "metadata.evil.test") && asked.iter().any(|n| n == "app.test"),
        "queries: {asked:?}"
    );
    assert_eq!(
        app.requests_to("/evil"),
        0,
        "nothing connected for the refused name: {:?}",
        app.counts()
    );
}

#[tokio::test]
async fn redirects_to_the_metadata_address_are_refused_and_headers_stay_with_their_origin() {
    let scene = Scene::start("hc-redirect", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    // Another origin on loopback (another address, so another host).
    let other = HttpTarget::start_with(HttpTargetOptions {
        bind: SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)),
        ..Default::default()
    })
    .await
    .unwrap();
    app.set(
        "/moved",
        Behaviour::Redirect("http://169.254.169.254/latest/meta-data/".into()),
    );
    app.set("/away", Behaviour::Redirect(other.url("/landing")));
    secret(
        &scene.client,
        scene.ns(),
        "probe-token",
        &[("X-Probe-Token", "s3cret-probe-token")],
    )
    .await;

    scene
        .check("moved", http_spec(&app.url("/moved"), json!({})))
        .await;
    scene
        .check(
            "away",
            http_spec(
                &app.url("/away"),
                json!({"probe": {"http": {
                    "headers": {"X-Literal": "literal-value"},
                    "headersSecretRef": {"name": "probe-token"},
                }}}),
            ),
        )
        .await;

    let refused = scene
        .wait("moved", "Ready=False TargetRefused", |h| {
            has_reason(h, "False", "TargetRefused")
        })
        .await;
    assert!(
        last_error(&refused).contains("169.254.169.254"),
        "lastProbe.error names the refused hop: {}",
        yaml(&refused)
    );
    scene
        .wait("moved", "Degraded", |h| state(h) == HealthState::Degraded)
        .await;

    // The redirect to the other origin is followed; the headers went only to the first.
    let away = scene.wait_state("away", HealthState::Ok).await;
    assert_eq!(last_probe(&away).status_code, Some(200), "{}", yaml(&away));
    let first = app
        .seen()
        .into_iter()
        .find(|r| r.path == "/away")
        .expect("the probe reached /away");
    assert_eq!(first.header("x-probe-token"), Some("s3cret-probe-token"));
    assert_eq!(first.header("x-literal"), Some("literal-value"));
    let landed = other.seen();
    assert!(!landed.is_empty(), "the redirect was followed");
    for r in &landed {
        assert_eq!(r.path, "/landing");
        assert_eq!(
            r.header("x-probe-token"),
            None,
            "secret header travelled: {r:?}"
        );
        assert_eq!(r.header("x-literal"), None, "header travelled: {r:?}");
    }
    let body = serde_json::to_string(&scene.checks.get("away").await.unwrap()).unwrap();
    assert!(!body.contains("s3cret-probe-token"), "{body}");
}

#[tokio::test]
async fn a_deleted_health_check_is_no_longer_probed() {
    let scene = Scene::start("hc-delete", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    scene
        .check("gone", http_spec(&app.url("/gone"), json!({})))
        .await;
    scene
        .check("clock", http_spec(&app.url("/clock"), json!({})))
        .await;
    until("both checks probing", || {
        app.requests_to("/gone") >= 2 && app.requests_to("/clock") >= 2
    })
    .await;

    scene
        .checks
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    wait_until_gone(&scene.checks, "gone", TIMEOUT, "HealthCheck deleted")
        .await
        .unwrap();
    let at_delete = app.requests_to("/gone");
    // The surviving check is the clock: three more of its probes (three intervals).
    let clock = app.requests_to("/clock");
    until("three more probes of the surviving check", || {
        app.requests_to("/clock") >= clock + 3
    })
    .await;
    let after = app.requests_to("/gone");
    assert!(
        after <= at_delete + 1,
        "a deleted check is probed at most once more (one in flight): {at_delete} → {after}"
    );
    scene.wait_up("clock", 1.0).await;
    assert_eq!(
        scene.up("gone").await,
        None,
        "a deleted check leaves no pullwarden_healthcheck_up series"
    );
}

#[tokio::test]
async fn a_changed_path_takes_effect_at_the_next_probe() {
    let scene = Scene::start("hc-change", &[]).await;
    let app = HttpTarget::start().await.unwrap();
    app.set("/v2", Behaviour::Status(503));
    scene
        .check("app", http_spec(&app.url("/v1"), json!({})))
        .await;
    scene.wait_state("app", HealthState::Ok).await;

    scene
        .check("app", http_spec(&app.url("/v2"), json!({})))
        .await;
    until("a probe of the new path", || app.requests_to("/v2") >= 1).await;
    let v1_when_changed = app.requests_to("/v1");
    until("three probes of the new path", || {
        app.requests_to("/v2") >= 3
    })
    .await;
    assert!(
        app.requests_to("/v1") <= v1_when_changed,
        "the old path is not probed once the new one is: {:?}",
        app.counts()
    );
    let degraded = scene.wait_state("app", HealthState::Degraded).await;
    assert_eq!(
        last_probe(&degraded).status_code,
        Some(503),
        "{}",
        yaml(&degraded)
    );
}

/// The preview's condition `type_` ("" when absent): (status, reason, message).
fn preview_condition(p: &PreviewEnvironment, type_: &str) -> (String, String, String) {
    p.status
        .as_ref()
        .and_then(|s| s.common.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// The `pullwarden/health` states on `sha`, oldest first.
async fn health_statuses(emu: &EmulatorHandle, repo: &str, sha: &str) -> Vec<String> {
    let mut statuses = emu.statuses(repo, Some(sha)).await.unwrap();
    statuses.sort_by_key(|s| s.id);
    statuses
        .into_iter()
        .filter(|s| s.context == "pullwarden/health")
        .map(|s| s.state)
        .collect()
}

#[tokio::test]
async fn a_preview_health_check_follows_its_app_and_the_pull_request_shows_it() {
    const TOKEN: &str = "ghp_preview_health";
    let app = HttpTarget::start().await.unwrap();
    // The preview URL is https://pr-<n>.<repo>.preview.test; the operator reaches previews at
    // --preview-probe-address over --preview-probe-scheme, i.e. this server, over plain HTTP.
    let scene = Scene::start(
        "hc-preview",
        &[
            format!("--preview-probe-address={}", app.addr()),
            "--preview-probe-scheme=http".to_owned(),
        ],
    )
    .await;
    let n = scene.ns().to_owned();
    let path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    secret(&scene.client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(scene.client.clone(), &n);
    let previews: Api<PreviewEnvironment> = Api::namespaced(scene.client.clone(), &n);
    apply(
        &repos,
        &n,
        &repository(
            &n,
            &emu,
            &info,
            "forge-token",
            json!({
                "interval": "10s",
                "pullRequests": {"labels": ["preview"]},
                "preview": preview_spec(json!({"healthCheck": {"path": "/healthz", "interval": "1s"}})),
            }),
        ),
    )
    .await;
    let pr = emu
        .open_pull(
            &path,
            PullSpec {
                head: "feature".into(),
                title: "Change on feature".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{n}-pr-{}", pr.number);
    let sha = pr.head_sha.clone();
    let ready = wait_ready(&previews, &name, &sha).await;
    let url = ready.status.as_ref().and_then(|s| s.url.clone()).unwrap();
    let host = url.strip_prefix("https://").unwrap().to_owned();

    // Healthy: the owned check is OK, the preview says so, the pull request shows success.
    let check_name = format!("{name}-health");
    let ok = scene.wait_state(&check_name, HealthState::Ok).await;
    let owner = ok.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owner
            .iter()
            .any(|o| o.kind == "PreviewEnvironment" && o.name == name),
        "owned by the preview: {}",
        yaml(&ok)
    );
    let healthy = wait_for(&previews, &name, TIMEOUT, "Healthy=True", |p| {
        preview_condition(p, "Healthy").0 == "True"
    })
    .await
    .unwrap();
    assert_eq!(
        preview_condition(&healthy, "Healthy").1,
        "HealthCheckPassing"
    );
    let probe = app
        .seen()
        .into_iter()
        .find(|r| r.path == "/healthz")
        .expect("the probe reached the app");
    assert_eq!(
        probe.header("host"),
        Some(host.as_str()),
        "probed as the preview host"
    );
    let deadline = Instant::now() + TIMEOUT;
    while health_statuses(&emu, &path, &sha)
        .await
        .last()
        .map(String::as_str)
        != Some("success")
    {
        assert!(
            Instant::now() < deadline,
            "no pullwarden/health success on {sha}: {:?}",
            health_statuses(&emu, &path, &sha).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The app breaks: Degraded, Healthy=False, failure on the pull request.
    app.set("/healthz", Behaviour::Status(503));
    scene.wait_state(&check_name, HealthState::Degraded).await;
    let unhealthy = wait_for(&previews, &name, TIMEOUT, "Healthy=False", |p| {
        preview_condition(p, "Healthy").0 == "False"
    })
    .await
    .unwrap();
    let (_, reason, message) = preview_condition(&unhealthy, "Healthy");
    assert_eq!(reason, "HealthCheckFailing");
    assert!(message.contains("503"), "{message}");
    let deadline = Instant::now() + TIMEOUT;
    while health_statuses(&emu, &path, &sha)
        .await
        .last()
        .map(String::as_str)
        != Some("failure")
    {
        assert!(
            Instant::now() < deadline,
            "no pullwarden/health failure on {sha}: {:?}",
            health_statuses(&emu, &path, &sha).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Fixed again: back to success; one status per state change, none per probe.
    app.set("/healthz", Behaviour::Ok);
    wait_for(&previews, &name, TIMEOUT, "Healthy=True again", |p| {
        preview_condition(p, "Healthy").0 == "True"
    })
    .await
    .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let states = health_statuses(&emu, &path, &sha).await;
        if states.last().map(String::as_str) == Some("success") && states.len() > 2 {
            let mut changes = states.clone();
            changes.dedup();
            assert_eq!(changes, states, "one status per state change: {states:?}");
            assert!(
                states.ends_with(&["success".into(), "failure".into(), "success".into()]),
                "{states:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "statuses: {states:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Five more probes of the healthy app write nothing more to the pull request.
    let written = health_statuses(&emu, &path, &sha).await;
    let probes = app.requests_to("/healthz");
    until("five more probes", || {
        app.requests_to("/healthz") >= probes + 5
    })
    .await;
    assert_eq!(
        health_statuses(&emu, &path, &sha).await,
        written,
        "no status per probe"
    );
}

#[tokio::test]
async fn https_is_verified_and_a_ca_secret_adds_a_private_ca() {
    let identity = TlsIdentity::new(&["secure.test"]).unwrap();
    let app = HttpTarget::start_with(HttpTargetOptions {
        tls: Some(identity.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dns = DnsTarget::start(&[("secure.test", Ipv4Addr::LOCALHOST)])
        .await
        .unwrap();
    let scene = Scene::start("hc-tls", &[format!("--dns-server={}", dns.addr())]).await;
    secret(
        &scene.client,
        scene.ns(),
        "probe-ca",
        &[("ca.crt", identity.ca_pem())],
    )
    .await;
    let url = format!("https://secure.test:{}/healthz", app.addr().port());
    scene
        .check(
            "private-ca",
            http_spec(
                &url,
                json!({"tls": {"caSecretRef": {"name": "probe-ca", "key": "ca.crt"}}}),
            ),
        )
        .await;
    scene
        .check("system-roots", http_spec(&url, json!({})))
        .await;

    let ok = scene.wait_state("private-ca", HealthState::Ok).await;
    assert_eq!(last_probe(&ok).status_code, Some(200), "{}", yaml(&ok));
    let refused = scene
        .wait_state("system-roots", HealthState::Degraded)
        .await;
    let error = last_error(&refused);
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "an unknown issuer fails verification: {}",
        yaml(&refused)
    );
    assert!(
        app.requests_to("/healthz") > 0,
        "the verified check reached the server: {:?}",
        app.counts()
    );
}
