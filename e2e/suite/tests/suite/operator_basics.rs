//! The operator binary against the local control plane, running as its least-privilege
//! ServiceAccount: every kind gets real conditions, references are resolved, invalid specs stall
//! without a hot loop, and the admin endpoints work.

use crate::support::{operator_for, ready_message};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use pullwarden::api::{HealthCheck, Plugin, PolicyGate, PreviewEnvironment, Repository};
use pullwarden_emulator::{Emulator, EmulatorConfig, PushSpec, RepoSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use serde_json::json;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

fn has_reason<K: pullwarden::api::HasCommonStatus>(obj: &K, status: &str, reason: &str) -> bool {
    obj.common()
        .and_then(|c| ready(&c.conditions))
        .is_some_and(|c| c.status == status && c.reason == reason)
}

fn apply<K: serde::Serialize>(value: &K) -> Patch<&K> {
    Patch::Apply(value)
}

#[tokio::test]
async fn every_kind_gets_real_conditions() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "basics").await.unwrap();
    let n = ns.name().to_string();

    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token("ghp_basics", "ci-bot").await.unwrap();
    let repo = emu
        .create_repo(RepoSpec {
            path: "acme/web".into(),
            private: true,
            ..Default::default()
        })
        .await
        .unwrap();
    emu.push(
        "acme/web",
        PushSpec {
            branch: "main".into(),
            files: [("README.md".to_string(), Some("hello\n".to_string()))].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let op = operator_for(cluster, &n).await;

    let pp = PatchParams::apply("pullwarden.dev/e2e");
    // Repository whose credentials Secret does not exist yet.
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let spec = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": "web"},
        "spec": {
            "provider": "github", "url": repo.clone_url, "apiUrl": emu.github_api_url(),
            "allowInsecureHTTP": true, "auth": {"secretRef": {"name": "web-token"}}, "interval": "10s",
        }
    });
    repos.patch("web", &pp, &apply(&spec)).await.unwrap();
    let stuck = wait_for(
        &repos,
        "web",
        TIMEOUT,
        "Repository Ready=False SecretNotFound",
        |r: &Repository| has_reason(r, "False", "SecretNotFound"),
    )
    .await
    .unwrap();
    let message = &ready(&stuck.status.as_ref().unwrap().common.conditions)
        .unwrap()
        .message;
    assert!(
        message.contains(&format!("{n}/web-token")),
        "the message names the Secret: {message}"
    );

    // Creating the Secret (and asking for a reconcile) makes it sync from the forge.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "web-token", "labels": {"pullwarden.dev/credentials": "true"}},
        "stringData": {"token": "ghp_basics"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let annotate =
        json!({"metadata": {"annotations": {"pullwarden.dev/reconcile-requested-at": "first"}}});
    repos
        .patch("web", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    let synced = wait_for(
        &repos,
        "web",
        TIMEOUT,
        "Repository Ready=True Synced",
        |r: &Repository| has_reason(r, "True", "Synced"),
    )
    .await
    .unwrap();
    let st = synced.status.unwrap();
    assert_eq!(st.default_branch.as_deref(), Some("main"));
    assert_eq!(
        st.branches
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        vec!["main"]
    );
    assert_eq!(
        st.common.last_handled_reconcile_at.as_deref(),
        Some("first")
    );
    assert_eq!(st.common.observed_generation, synced.metadata.generation);
    assert!(st.rate_limit.is_some_and(|r| r.limit > 0));
    assert!(st.last_sync_time.is_some() && st.next_sync_time.is_some());

    // A wrong token is AuthFailed, and the data of the last good sync stays.
    let bad: Secret = serde_json::from_value(
        json!({"metadata": {"name": "web-token", "labels": {"pullwarden.dev/credentials": "true"}},
               "stringData": {"token": "wrong"}}),
    )
    .unwrap();
    secrets
        .replace("web-token", &PostParams::default(), &bad)
        .await
        .unwrap();
    let annotate =
        json!({"metadata": {"annotations": {"pullwarden.dev/reconcile-requested-at": "second"}}});
    repos
        .patch("web", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    let failed = wait_for(
        &repos,
        "web",
        TIMEOUT,
        "Repository Ready=False AuthFailed",
        |r: &Repository| has_reason(r, "False", "AuthFailed"),
    )
    .await
    .unwrap();
    let st = failed.status.unwrap();
    assert_eq!(
        st.default_branch.as_deref(),
        Some("main"),
        "last good data is kept"
    );
    let msg = &ready(&st.common.conditions).unwrap().message;
    assert!(msg.contains("last successful sync"), "{msg}");

    // PolicyGate: validated; its Repository's credential is refused, so it cannot evaluate and
    // says why (the forge's category), never a pass.
    let gates: Api<PolicyGate> = Api::namespaced(client.clone(), &n);
    let gate = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": "policy"},
        "spec": {"repositoryRef": {"name": "web"}, "rules": [{"name": "approvals", "approvals": {"count": 1}}, {"name": "title", "title": {"matches": "^feat"}}]}
    });
    gates.patch("policy", &pp, &apply(&gate)).await.unwrap();
    let g = wait_for(
        &gates,
        "policy",
        TIMEOUT,
        "PolicyGate Ready=False AuthFailed",
        |g: &PolicyGate| has_reason(g, "False", "AuthFailed"),
    )
    .await
    .unwrap();
    assert_eq!(g.status.as_ref().unwrap().rule_count, 2);
    assert_eq!(g.status.as_ref().unwrap().repository_count, 1);
    assert_eq!(g.status.as_ref().unwrap().passed_count, 0);

    // An invalid regular expression stalls, and is not retried in a hot loop.
    let broken = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": "broken"},
        "spec": {"repositoryRef": {"name": "web"}, "rules": [{"name": "title", "title": {"matches": "("}}]}
    });
    gates.patch("broken", &pp, &apply(&broken)).await.unwrap();
    let b = wait_for(
        &gates,
        "broken",
        TIMEOUT,
        "PolicyGate Stalled InvalidSpec",
        |g: &PolicyGate| has_reason(g, "False", "InvalidSpec"),
    )
    .await
    .unwrap();
    let conds = &b.status.unwrap().common.conditions;
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True"),
        "{conds:?}"
    );
    let sample = r#"pullwarden_reconcile_errors_total{kind="PolicyGate",category="InvalidSpec"}"#;
    let before = op.metric(sample).await.unwrap().unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = op.metric(sample).await.unwrap().unwrap_or(0.0);
    assert!(
        before >= 1.0 && after - before <= 1.0,
        "invalid object retried hot: {before} -> {after}"
    );

    // A CEL rule that does not compile is refused when applied, with the rule and position, not
    // when a pull request arrives.
    let bad_cel = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": "bad-cel"},
        "spec": {"repositoryRef": {"name": "web"}, "rules": [{"name": "small", "cel": {"expression": "pr.files.size() < "}}]}
    });
    gates.patch("bad-cel", &pp, &apply(&bad_cel)).await.unwrap();
    let c = wait_for(
        &gates,
        "bad-cel",
        TIMEOUT,
        "PolicyGate Stalled InvalidExpression",
        |g: &PolicyGate| has_reason(g, "False", "InvalidExpression"),
    )
    .await
    .unwrap();
    let msg = ready_message(&c);
    assert!(
        msg.contains("rule small: cel.expression: line 1, column"),
        "names the rule and the position: {msg}"
    );

    // HealthCheck: the outbound guard refuses a literal metadata address (never probed); a
    // missing preview is no data: the check probes, says why and stays Unknown.
    let checks: Api<HealthCheck> = Api::namespaced(client.clone(), &n);
    let metadata = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "HealthCheck", "metadata": {"name": "metadata"},
        "spec": {"target": {"url": "http://169.254.169.254/latest/meta-data"}, "probe": {"http": {}}}
    });
    checks
        .patch("metadata", &pp, &apply(&metadata))
        .await
        .unwrap();
    let h = wait_for(
        &checks,
        "metadata",
        TIMEOUT,
        "HealthCheck TargetRefused",
        |h: &HealthCheck| has_reason(h, "False", "TargetRefused"),
    )
    .await
    .unwrap();
    let st = h.status.unwrap();
    assert!(
        ready(&st.common.conditions)
            .unwrap()
            .message
            .contains("cloud metadata"),
        "{:?}",
        st.common.conditions
    );
    assert!(
        st.last_probe.is_none(),
        "a refused literal target is never probed"
    );
    let orphan = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "HealthCheck", "metadata": {"name": "orphan"},
        "spec": {"target": {"previewRef": {"name": "nope"}}, "probe": {"http": {}}, "interval": "1s", "timeout": "1s"}
    });
    checks.patch("orphan", &pp, &apply(&orphan)).await.unwrap();
    let h = wait_for(
        &checks,
        "orphan",
        TIMEOUT,
        "HealthCheck probing a missing preview: no data",
        |h: &HealthCheck| {
            has_reason(h, "True", "Probing")
                && h.status
                    .as_ref()
                    .and_then(|s| s.last_probe.as_ref())
                    .and_then(|p| p.error.as_deref())
                    .is_some_and(|e| e.contains("PreviewEnvironment nope not found"))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        h.status.unwrap().state,
        pullwarden::api::HealthState::Unknown
    );

    // Plugin: its Slack Secret is missing.
    let plugins: Api<Plugin> = Api::namespaced(client.clone(), &n);
    let plugin = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Plugin", "metadata": {"name": "slack"},
        "spec": {"events": ["preview.ready"], "slack": {"webhookSecretRef": {"name": "slack-url", "key": "url"}}}
    });
    plugins.patch("slack", &pp, &apply(&plugin)).await.unwrap();
    wait_for(
        &plugins,
        "slack",
        TIMEOUT,
        "Plugin SecretNotFound",
        |p: &Plugin| has_reason(p, "False", "SecretNotFound"),
    )
    .await
    .unwrap();

    // PreviewEnvironment pointing at a Repository that does not exist.
    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let pe = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment", "metadata": {"name": "lost"},
        "spec": {"repositoryRef": {"name": "missing"}, "branch": "main", "template": {"path": "deploy"}}
    });
    previews.patch("lost", &pp, &apply(&pe)).await.unwrap();
    wait_for(
        &previews,
        "lost",
        TIMEOUT,
        "PreviewEnvironment ReferenceNotFound",
        |p: &PreviewEnvironment| has_reason(p, "False", "ReferenceNotFound"),
    )
    .await
    .unwrap();

    // Warning events carry the error category as reason.
    let events = cluster
        .kubectl([
            "get",
            "events",
            "-n",
            &n,
            "-o",
            "custom-columns=REASON:.reason,TYPE:.type",
        ])
        .await
        .unwrap();
    for reason in [
        "SecretNotFound",
        "AuthFailed",
        "InvalidSpec",
        "ReferenceNotFound",
    ] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }

    // Admin endpoints.
    assert_eq!(op.get("/healthz").await.unwrap().0, 200);
    let metrics = op.metrics().await.unwrap();
    for name in [
        "pullwarden_reconciles_total",
        "pullwarden_forge_requests_total",
        "pullwarden_webhook_requests_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}
