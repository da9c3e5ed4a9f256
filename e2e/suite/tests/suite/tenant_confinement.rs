//! Issue 9, the preview namespace walls, tried as the attacker against the running operator
//! (under its shipped RBAC) on the local control plane:
//! - the identity Pullwarden applies as cannot be obtained by a workload: pods get a
//!   ServiceAccount token, and no ServiceAccount (not even the one Pullwarden used to impersonate)
//!   has any right in the namespace;
//! - a tenant's greedy quota does not lift the operator's ceiling (the API server enforces both);
//! - every preview namespace has a default-deny NetworkPolicy owned by Pullwarden;
//! - a tenant cannot claim a namespace name outside its prefix, nor a reserved one;
//! - previews beyond the per-namespace cap wait and say why.

use crate::support::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_emulator::{EmulatorHandle, PullSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_confinement";

struct Tenant {
    emu: EmulatorHandle,
    _op: Operator,
    ns: TestNamespace,
    client: Client,
    repo_path: String,
}

impl Tenant {
    fn name(&self) -> String {
        self.ns.name().to_string()
    }
}

/// A tenant namespace with the preview app on `main` and a `feature` branch, an operator with
/// `args`, and a Repository whose spec gets `extra` (previews of PRs labelled `preview` when
/// `extra` has a `preview`).
async fn tenant(prefix: &str, args: &[&str], extra: Value) -> Tenant {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, prefix).await.unwrap();
    let n = ns.name().to_string();
    let repo_path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    op.wait_ready(TIMEOUT).await.unwrap();
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let mut spec = json!({"interval": "10s", "pullRequests": {"labels": ["preview"]}});
    if let (Some(base), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        base.extend(more.clone());
    }
    apply(
        &repos,
        &n,
        &repository(&n, &emu, &info, "forge-token", spec),
    )
    .await;
    wait_for(&repos, &n, TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    Tenant {
        emu,
        _op: op,
        ns,
        client,
        repo_path,
    }
}

async fn open_labelled_pull(t: &Tenant) -> (u64, String) {
    let pr = t
        .emu
        .open_pull(
            &t.repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Confinement".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (pr.number, pr.head_sha)
}

/// A client for the same API server authenticated only by `token`.
async fn client_with_token(token: &str) -> Client {
    let mut config = cluster::shared().config().await.unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

/// A client impersonating `user` (and `groups`) with the test's admin credentials.
async fn impersonating(user: &str, groups: &[&str]) -> Client {
    let mut config = cluster::shared().config().await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups =
        (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).unwrap()
}

fn is_forbidden<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn a_ready_preview_is_confined_and_its_identity_is_out_of_a_workloads_reach() {
    let t = tenant(
        "confined",
        &[],
        json!({"preview": preview_spec(json!({
            // A greedy tenant: far above the ceiling, and scoped so it would count nothing.
            "quota": {"resourceQuota": {"hard": {"requests.cpu": "500", "pods": "1000"}, "scopes": ["Terminating"]}}
        }))}),
    )
    .await;
    let n = t.name();
    let previews: Api<PreviewEnvironment> = Api::namespaced(t.client.clone(), &n);
    let (number, sha) = open_labelled_pull(&t).await;
    let name = format!("{n}-pr-{number}");
    let ready = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "Ready",
        |p: &PreviewEnvironment| {
            phase(p) == Some(PreviewPhase::Ready)
                && p.status.as_ref().and_then(|s| s.deployed_sha.as_deref()) == Some(sha.as_str())
        },
    )
    .await
    .unwrap();
    let pns = ready.status.unwrap().namespace.unwrap();

    // The namespace names its tenant.
    let ns = Api::<Namespace>::all(t.client.clone())
        .get(&pns)
        .await
        .unwrap();
    assert_eq!(ns.labels()["pullwarden.dev/tenant"], n);

    // The RoleBinding grants the synthetic user, not a ServiceAccount; none is created for it.
    let rb = Api::<RoleBinding>::namespaced(t.client.clone(), &pns)
        .get("pullwarden-preview")
        .await
        .unwrap();
    let subjects = rb.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("User", "pullwarden:preview")
    );
    let sas = Api::<ServiceAccount>::namespaced(t.client.clone(), &pns);
    assert!(sas.get_opt("pullwarden-preview").await.unwrap().is_none());

    // The attack: a pod's own ServiceAccount token (what every pod in the namespace can mount or
    // request) used against the API directly. It can create nothing — not a ConfigMap, and not
    // the Service with externalIPs the safety rules would refuse.
    let sa = wait_for(&sas, "default", TIMEOUT, "default ServiceAccount", |_| true)
        .await
        .unwrap();
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [], "expirationSeconds": 600}
    }))
    .unwrap();
    let issued: TokenRequest = sas
        .create_subresource("token", &sa.name_any(), &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.unwrap().token;
    let as_pod = client_with_token(&token).await;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "from-a-pod"}, "data": {"a": "b"}}))
            .unwrap();
    let created = Api::<ConfigMap>::namespaced(as_pod.clone(), &pns)
        .create(&PostParams::default(), &cm)
        .await;
    assert!(is_forbidden(&created), "{created:?}");
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "mitm"},
        "spec": {"ports": [{"port": 80}], "externalIPs": ["10.0.0.1"]}});
    let services = Api::<DynamicObject>::namespaced_with(
        as_pod,
        &pns,
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
    );
    let created = services
        .patch("mitm", &PatchParams::apply("attacker"), &Patch::Apply(&svc))
        .await;
    assert!(is_forbidden(&created), "{created:?}");
    // The identity Pullwarden used to impersonate (a ServiceAccount in the namespace) has no
    // rights either, so minting a token for it (had it existed) would not help.
    let old_identity = impersonating(
        &format!("system:serviceaccount:{pns}:pullwarden-preview"),
        &[],
    )
    .await;
    let created = Api::<ConfigMap>::namespaced(old_identity, &pns)
        .create(&PostParams::default(), &cm)
        .await;
    assert!(is_forbidden(&created), "{created:?}");

    // Quota: the operator's ceiling is a second, unscoped quota next to the tenant's.
    let quotas =
        Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(t.client.clone(), &pns);
    let ceiling = quotas.get("pullwarden-ceiling").await.unwrap();
    let spec = ceiling.spec.unwrap();
    assert!(spec.scopes.is_none() && spec.scope_selector.is_none());
    let hard = spec.hard.unwrap();
    assert_eq!(hard["requests.cpu"].0, "4");
    assert_eq!(hard["services.loadbalancers"].0, "0");
    let tenant_quota = quotas.get("pullwarden-preview").await.unwrap();
    assert_eq!(
        tenant_quota.spec.unwrap().hard.unwrap()["requests.cpu"].0,
        "500"
    );

    // ... and it holds: a Deployment written as the preview identity whose container asks for
    // more than the per-container maximum gets no pod (the ReplicaSet controller is refused by
    // the API server's LimitRange admission).
    let preview_identity = impersonating("pullwarden:preview", &["pullwarden:previews"]).await;
    let greedy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "greedy", "labels": {"app": "greedy"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "greedy"}},
            "template": {"metadata": {"labels": {"app": "greedy"}}, "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "image": "registry.test/greedy:1",
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}}]}}}});
    let deployments = Api::<DynamicObject>::namespaced_with(
        preview_identity,
        &pns,
        &kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
    );
    deployments
        .patch(
            "greedy",
            &PatchParams::apply("e2e-as-preview"),
            &Patch::Apply(&greedy),
        )
        .await
        .unwrap();
    let replica_sets = Api::<ReplicaSet>::namespaced(t.client.clone(), &pns);
    let refused = async {
        loop {
            let list = replica_sets
                .list(&ListParams::default().labels("app=greedy"))
                .await
                .unwrap();
            let failure = list.items.iter().find_map(|rs| {
                rs.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find_map(|c| {
                        (c.type_ == "ReplicaFailure").then(|| c.message.clone().unwrap_or_default())
                    })
            });
            if let Some(message) = failure {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let message = tokio::time::timeout(TIMEOUT, refused)
        .await
        .expect("the ReplicaSet reports its refused pod");
    assert!(
        message.contains("maximum cpu usage per Container is 2"),
        "{message}"
    );

    // Network: Pullwarden's default-deny policy is in place (enforced by the cluster's CNI; the
    // local control plane has none, so this checks the object the CNI would enforce).
    let np = Api::<NetworkPolicy>::namespaced(t.client.clone(), &pns)
        .get("pullwarden-default-deny")
        .await
        .unwrap();
    let np_spec = np.spec.unwrap();
    assert_eq!(
        np_spec.policy_types.unwrap(),
        vec!["Ingress".to_string(), "Egress".to_string()]
    );
    let selector = np_spec.pod_selector.unwrap_or_default();
    assert!(
        selector.match_labels.unwrap_or_default().is_empty()
            && selector.match_expressions.unwrap_or_default().is_empty(),
        "it selects every pod"
    );
}

#[tokio::test]
async fn namespace_names_always_get_the_tenant_prefix() {
    let t = tenant("squat", &[], json!({})).await;
    let n = t.name();
    let previews: Api<PreviewEnvironment> = Api::namespaced(t.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    // Another tenant's name, and a system name: the tenant chooses only what follows its prefix.
    let victim = format!("victim-{n}");
    for (name, asked) in [("squat", victim.as_str()), ("system", "kube-system")] {
        let manifest = json!({"apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": name},
            "spec": {"repositoryRef": {"name": n}, "branch": "main",
                "template": {"path": "deploy/preview", "namespace": asked,
                    "host": "{{namespace}}.preview.test", "vars": {"image": "registry.test/acme/shop"}}}});
        apply(&previews, name, &manifest).await;
        let ready = wait_for(
            &previews,
            name,
            TIMEOUT,
            "Ready",
            |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Ready),
        )
        .await
        .unwrap();
        let got = ready.status.unwrap().namespace.unwrap();
        assert_eq!(got, format!("{n}-{asked}"));
        let ns = namespaces.get(&got).await.unwrap();
        assert_eq!(ns.labels()["pullwarden.dev/tenant"], n);
    }
    assert!(namespaces.get_opt(&victim).await.unwrap().is_none());
    let ks = namespaces.get("kube-system").await.unwrap();
    assert!(!ks.labels().contains_key("pullwarden.dev/preview-uid"));
}

#[tokio::test]
async fn reserved_names_from_the_deny_list_are_refused() {
    // The operator reserves `*-reserved-*`, which the tenant's prefix would otherwise allow.
    let t = tenant(
        "deny",
        &["--preview-namespace-deny=*-reserved-*"],
        json!({}),
    )
    .await;
    let client = t.client.clone();
    let n = t.name();
    let previews: Api<PreviewEnvironment> = Api::namespaced(t.client.clone(), &n);
    let namespace = format!("{n}-reserved-1");
    let manifest = json!({"apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
        "metadata": {"name": "reserved"},
        "spec": {"repositoryRef": {"name": n}, "branch": "main",
            "template": {"path": "deploy/preview", "namespace": namespace,
                "host": "{{namespace}}.preview.test", "vars": {"image": "registry.test/acme/shop"}}}});
    apply(&previews, "reserved", &manifest).await;
    let refused = wait_for(
        &previews,
        "reserved",
        TIMEOUT,
        "refused",
        |p: &PreviewEnvironment| has_reason(p, "False", "InvalidSpec"),
    )
    .await
    .unwrap();
    let message = ready_message(&refused);
    assert!(message.contains("--preview-namespace-deny"), "{message}");
    assert!(
        Api::<Namespace>::all(client)
            .get_opt(&namespace)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn previews_beyond_the_namespace_cap_wait_and_say_why() {
    let t = tenant("cap", &["--max-previews-per-namespace=1"], json!({})).await;
    let n = t.name();
    let previews: Api<PreviewEnvironment> = Api::namespaced(t.client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    let manifest = |name: &str, branch: &str| {
        json!({"apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": name},
            "spec": {"repositoryRef": {"name": n}, "branch": branch,
                "template": {"path": "deploy/preview", "namespace": format!("{n}-{name}"),
                    "host": "{{namespace}}.preview.test", "vars": {"image": "registry.test/acme/shop"}}}})
    };
    apply(&previews, "first", &manifest("first", "main")).await;
    wait_for(
        &previews,
        "first",
        TIMEOUT,
        "first Ready",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Ready),
    )
    .await
    .unwrap();
    apply(&previews, "second", &manifest("second", "feature")).await;
    let waiting = wait_for(
        &previews,
        "second",
        TIMEOUT,
        "capped",
        |p: &PreviewEnvironment| has_reason(p, "False", "PreviewLimitReached"),
    )
    .await
    .unwrap();
    let message = ready_message(&waiting);
    assert!(
        message.contains("--max-previews-per-namespace"),
        "{message}"
    );
    assert!(
        namespaces
            .get_opt(&format!("{n}-second"))
            .await
            .unwrap()
            .is_none()
    );
    // The first one keeps running.
    let first = previews.get("first").await.unwrap();
    assert_eq!(phase(&first), Some(PreviewPhase::Ready));
}
