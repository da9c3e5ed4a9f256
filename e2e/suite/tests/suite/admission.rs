//! The second wall: the ValidatingAdmissionPolicies of `config/admission`, installed on the real
//! API server, refuse forbidden objects in a preview namespace whoever writes them — the preview
//! identity Pullwarden impersonates (`pullwarden:preview`, group `pullwarden:previews`) and a
//! tenant/GitOps identity with every right in the namespace — while Pullwarden's operator may
//! still write its own objects and harmless objects pass. And the first wall: a pull request
//! rendering an Ingress for another host is refused by Pullwarden itself, before anything is
//! applied, with the reason on the PR.
//!
//! The policies are cluster-wide (bound to every namespace labelled
//! `pullwarden.dev/preview-uid`), so installing them is idempotent and other tests sharing the
//! cluster run under them too.

use crate::support::*;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_emulator::{Emulator, EmulatorConfig, PullSpec, PushSpec, RepoSpec};
use pullwarden_harness::cluster::{self, Cluster, TestNamespace, apply_crds, repo_root, wait_for};
use pullwarden_harness::operator::{
    OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, operator_kubeconfig,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const TIMEOUT: Duration = Duration::from_secs(90);
const PREVIEW_USER: &str = "pullwarden:preview";
const PREVIEW_GROUP: &str = "pullwarden:previews";
/// A tenant or GitOps controller (Argo CD, Flux) holding every right inside the namespace.
const GITOPS_USER: &str = "e2e:gitops";
const HOST: &str = "pr-1.preview.test";

static INSTALLED: Mutex<bool> = Mutex::const_new(false);

/// Applies config/rbac (through the operator harness) and config/admission, once per process;
/// server-side apply makes it idempotent across processes on a reused cluster.
async fn install_policies(cluster: &Cluster) {
    let mut done = INSTALLED.lock().await;
    if *done {
        return;
    }
    operator_kubeconfig(cluster).await.unwrap();
    let dir = repo_root().join("config/admission");
    cluster
        .kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={}", cluster::FIELD_MANAGER),
            "-k",
            dir.to_str().unwrap(),
        ])
        .await
        .unwrap();
    *done = true;
}

/// A client authenticating as the admin but acting as `user` (and `groups`).
async fn as_user(cluster: &Cluster, user: &str, groups: &[&str]) -> kube::Client {
    let mut config = cluster.config().await.unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups =
        (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
    kube::Client::try_from(config).unwrap()
}

fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}")
}

/// The API resource of a manifest's apiVersion/kind (the kinds used below).
fn resource_of(obj: &Value) -> ApiResource {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Ingress" => "ingresses".to_owned(),
        "NetworkPolicy" => "networkpolicies".to_owned(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, version, kind),
        &plural,
    )
}

fn api_for(client: &kube::Client, ns: &str, obj: &Value) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource_of(obj))
}

/// Server-side applies `obj` as `client`.
async fn write(client: &kube::Client, ns: &str, obj: &Value) -> Result<(), kube::Error> {
    let name = obj["metadata"]["name"].as_str().unwrap();
    api_for(client, ns, obj)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map(drop)
}

/// The API server's refusal of a write (403), as its message.
fn refusal(result: Result<(), kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("{what}: expected a 403 from the API server, got {other:?}"),
    }
}

/// Writes `probe` as `client` until a ValidatingAdmissionPolicy refuses it (deleting it again
/// while the policies are not yet in effect).
async fn until_refused(client: &kube::Client, ns: &str, probe: &Value) {
    let name = probe["metadata"]["name"].as_str().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match write(client, ns, probe).await {
            Err(kube::Error::Api(s))
                if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") =>
            {
                return;
            }
            Ok(()) => {
                api_for(client, ns, probe)
                    .delete(name, &DeleteParams::default())
                    .await
                    .unwrap();
            }
            Err(e) => panic!("probe {}: {e}", probe["kind"]),
        }
        assert!(
            Instant::now() < deadline,
            "the admission policy for {} never took effect",
            probe["kind"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn deployment(name: &str, pod: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "registry.test/app:1"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), pod.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})
}

fn ingress(name: &str, host: &str, annotations: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "annotations": annotations},
           "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
               "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

/// (what, the object, the policy messages expected (any one: when two policies refuse, the API
/// server reports one of them), refused by RBAC first for the preview identity). Each is
/// written with a name of its own by each identity.
fn forbidden() -> Vec<(&'static str, Value, &'static [&'static str], bool)> {
    vec![
        (
            "a namespace-scoped RoleBinding to a Role",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "escalate"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "anything"},
                   "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]}),
            &["rolebindings.rbac.authorization.k8s.io may not be written here"],
            true,
        ),
        (
            "a Service with externalIPs",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "intercept"},
                   "spec": {"ports": [{"port": 80}], "externalIPs": ["10.0.0.1"]}}),
            &["Service spec.externalIPs is not allowed"],
            false,
        ),
        (
            "a NetworkPolicy opening egress to everywhere",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-all"},
                   "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}),
            &["NetworkPolicy egress peers may only be"],
            false,
        ),
        (
            "a NetworkPolicy admitting another namespace",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "from-anywhere"},
                   "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                            "ingress": [{"from": [{"namespaceSelector": {}}]}]}}),
            &["NetworkPolicy ingress peers may only be"],
            false,
        ),
        (
            "an ExternalName Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redirect"},
                   "spec": {"type": "ExternalName", "externalName": "db.production.svc.cluster.local"}}),
            &["Service type ExternalName is never allowed"],
            false,
        ),
        (
            "an Ingress for a production host",
            ingress("prod", "shop.example.com", json!({})),
            &["Ingress host shop.example.com is not this preview's; allowed: pr-1.preview.test"],
            false,
        ),
        (
            "an Ingress with a cert-manager annotation",
            ingress(
                "issuer",
                HOST,
                json!({"cert-manager.io/cluster-issuer": "letsencrypt-prod"}),
            ),
            &["Ingress annotation cert-manager.io/cluster-issuer is not allowed"],
            false,
        ),
        (
            "a Deployment on the host network",
            deployment("hostnet", json!({"hostNetwork": true})),
            &["hostNetwork, hostPID and hostIPC are not allowed"],
            false,
        ),
        (
            "a Deployment pinned to a node",
            deployment("pinned", json!({"nodeName": "kwok-node-0"})),
            &["spec.nodeName is not allowed"],
            false,
        ),
        (
            "a Deployment tolerating the control-plane taint",
            deployment(
                "tolerant",
                json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}),
            ),
            &["tolerations of control-plane taints"],
            false,
        ),
        (
            "a service-account token Secret",
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "token", "annotations": {"kubernetes.io/service-account.name": "default"}},
                   "type": "kubernetes.io/service-account-token"}),
            &["service-account token Secrets are not allowed"],
            false,
        ),
        (
            "Pullwarden's default-deny NetworkPolicy, replaced by an allow-all",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "pullwarden-default-deny"},
                   "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}]}}),
            &[
                "names starting with pullwarden- are reserved",
                "NetworkPolicy ingress peers may only be",
            ],
            false,
        ),
        (
            "a replacement of Pullwarden's ResourceQuota",
            json!({"apiVersion": "v1", "kind": "ResourceQuota",
                   "metadata": {"name": "pullwarden-preview"},
                   "spec": {"hard": {"pods": "10000"}}}),
            &[
                "names starting with pullwarden- are reserved",
                "resourcequotas may not be written here",
            ],
            true,
        ),
    ]
}

/// Writes `obj` under a name unique to the writer (reserved names stay as they are).
fn named_for(obj: &Value, who: &str) -> Value {
    let mut obj = obj.clone();
    let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
    if !name.starts_with("pullwarden-") {
        obj["metadata"]["name"] = json!(format!("{name}-{who}"));
    }
    obj
}

#[tokio::test]
async fn the_api_server_refuses_forbidden_objects_from_every_writer() {
    let cluster = cluster::shared();
    install_policies(cluster).await;
    let admin = cluster.client().await.unwrap();
    let tns = TestNamespace::new(cluster, "admission").await.unwrap();
    let ns = tns.name().to_owned();

    // Before the namespace is a preview namespace: a tenant's full rights in it (the Role and
    // its binding could not be written afterwards — the policies refuse RBAC objects there).
    for obj in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "everything"},
               "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "gitops"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "everything"},
               "subjects": [{"kind": "User", "name": GITOPS_USER, "apiGroup": "rbac.authorization.k8s.io"}]}),
    ] {
        write(&admin, &ns, &obj).await.unwrap();
    }
    // Now labelled and annotated as Pullwarden does for its preview namespaces.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "labels": {"pullwarden.dev/preview-uid": format!("e2e-{ns}"), "app.kubernetes.io/managed-by": "pullwarden"},
                "annotations": {"pullwarden.dev/preview-host": HOST},
            }})),
        )
        .await
        .unwrap();

    // The policies take effect once the API server's informers have them: wait (bounded) until
    // a probe of each policy is refused.
    for probe in [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe"},
               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pullwarden-probe"}}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "probe"}}),
        ingress("probe", "probe.example.com", json!({})),
        deployment("probe", json!({"hostPID": true})),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
               "metadata": {"name": "probe", "annotations": {"kubernetes.io/service-account.name": "default"}}}),
    ] {
        until_refused(&admin, &ns, &probe).await;
    }

    // The operator writes its own objects, as the confinement does (the only exemption).
    let operator = as_user(cluster, &operator_user(), &[]).await;
    for obj in [
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "pullwarden-default-deny"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "pullwarden-preview"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pullwarden-preview-workload"},
               "subjects": [{"kind": "User", "name": PREVIEW_USER, "apiGroup": "rbac.authorization.k8s.io"}]}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pullwarden-preview"},
               "spec": {"hard": {"pods": "30"}}}),
    ] {
        write(&operator, &ns, &obj)
            .await
            .unwrap_or_else(|e| panic!("the operator may write its {}: {e}", obj["kind"]));
    }

    let preview = as_user(cluster, PREVIEW_USER, &[PREVIEW_GROUP]).await;
    let gitops = as_user(cluster, GITOPS_USER, &[]).await;
    for (who, client) in [("preview", &preview), ("gitops", &gitops)] {
        for (what, obj, message, rbac_first) in forbidden() {
            let obj = named_for(&obj, who);
            let msg = refusal(write(client, &ns, &obj).await, &format!("{who}: {what}"));
            if rbac_first && who == "preview" {
                // The preview identity's RBAC already stops it (before admission).
                assert!(msg.contains("cannot"), "{who}: {what}: {msg}");
            } else {
                assert!(
                    msg.contains("ValidatingAdmissionPolicy")
                        && msg.contains("Pullwarden preview namespace: ")
                        && message.iter().any(|m| msg.contains(m)),
                    "{who}: {what}: {msg}"
                );
            }
            // Nothing was written (the reserved ones exist only as the operator wrote them).
            let name = obj["metadata"]["name"].as_str().unwrap();
            if !name.starts_with("pullwarden-") {
                assert!(
                    api_for(&admin, &ns, &obj)
                        .get_opt(name)
                        .await
                        .unwrap()
                        .is_none(),
                    "{who}: {what}: {name} exists"
                );
            }
        }
        // Pullwarden's default-deny NetworkPolicy cannot be deleted (the preview identity may
        // delete NetworkPolicies, so this is the admission policy's refusal, not RBAC's).
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
        let msg = match policies
            .delete("pullwarden-default-deny", &DeleteParams::default())
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 => s.message,
            other => panic!("{who}: deleting Pullwarden's NetworkPolicy: {other:?}"),
        };
        assert!(
            msg.contains("only the Pullwarden operator may delete them"),
            "{who}: {msg}"
        );
    }
    // A bare Pod with host PID, written by the tenant (the Pod rules hold for any writer).
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostpid"},
                     "spec": {"hostPID": true, "containers": [{"name": "a", "image": "registry.test/a:1"}]}});
    let msg = refusal(write(&gitops, &ns, &pod).await, "gitops: a hostPID Pod");
    assert!(
        msg.contains("hostNetwork, hostPID and hostIPC are not allowed"),
        "{msg}"
    );

    // Pullwarden's quota is still the operator's.
    let quotas: Api<ResourceQuota> = Api::namespaced(admin.clone(), &ns);
    let quota = quotas.get("pullwarden-preview").await.unwrap();
    assert_eq!(
        quota.spec.unwrap().hard.unwrap()["pods"].0,
        "30",
        "the quota was replaced"
    );

    // Harmless objects pass, for both writers: a ConfigMap, a Service, a restricted Deployment
    // and an Ingress for the preview's host with the tools' bookkeeping annotation.
    for (who, client) in [("preview", &preview), ("gitops", &gitops)] {
        for obj in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"}, "data": {"a": "b"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
            deployment(
                "web",
                json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "app", "image": "registry.test/app:1",
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}),
            ),
            ingress(
                "web",
                HOST,
                json!({"argocd.argoproj.io/tracking-id": "shop:networking.k8s.io/Ingress:ns/web"}),
            ),
        ] {
            let obj = named_for(&obj, who);
            write(client, &ns, &obj)
                .await
                .unwrap_or_else(|e| panic!("{who}: harmless {} refused: {e}", obj["kind"]));
        }
    }
    // The workload controllers' Pods pass the Pod rules (ServiceAccount token injection
    // included): the harmless Deployment gets its Pod.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), &ns);
    let deadline = Instant::now() + TIMEOUT;
    while pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the harmless Deployment got no Pod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The renderer refuses first, with the reason on the pull request: a PR rendering an Ingress
/// for a production host (and an ExternalName Service) gets no preview namespace at all.
#[tokio::test]
async fn a_preview_rendering_an_ingress_for_another_host_is_refused_by_pullwarden() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let tns = TestNamespace::new(cluster, "ingress-host").await.unwrap();
    let n = tns.name().to_owned();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    const TOKEN: &str = "ghp_admission";
    emu.token(TOKEN, "pullwarden-bot").await.unwrap();
    let repo_path = format!("acme/{n}");
    let info = emu
        .create_repo(RepoSpec {
            path: repo_path.clone(),
            private: true,
            ..Default::default()
        })
        .await
        .unwrap();
    emu.push(
        &repo_path,
        PushSpec {
            branch: "main".into(),
            files: preview_app("deploy/preview"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    emu.create_branch(&repo_path, "feature", Some("main"))
        .await
        .unwrap();
    let prod = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  annotations:\n    cert-manager.io/cluster-issuer: letsencrypt-prod\nspec:\n  tls:\n  - hosts: [shop.example.com]\n    secretName: shop-tls\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {name: web, port: {name: http}}\n";
    emu.push(
        &repo_path,
        PushSpec {
            branch: "feature".into(),
            files: files(&[("deploy/preview/zz-prod-ingress.yaml", prod)]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = repository(
        &n,
        &emu,
        &info,
        "forge-token",
        json!({"interval": "10s", "pullRequests": {"labels": ["preview"]}, "preview": preview_spec(json!({}))}),
    );
    apply(&repos, &n, &manifest).await;
    let pr = emu
        .open_pull(
            &repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Serve the shop".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("{n}-pr-{}", pr.number);
    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let failed = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "refused",
        |p: &PreviewEnvironment| p.status.as_ref().map(|s| s.phase) == Some(PreviewPhase::Failed),
    )
    .await
    .unwrap();
    assert!(
        has_reason(&failed, "False", "ManifestsRefused"),
        "{:?}",
        failed.status
    );
    let host = format!("pr-{}.{n}.preview.test", pr.number);
    let msg = ready_message(&failed);
    assert!(
        msg.contains("Ingress/shop")
            && msg.contains("Ingress host \"shop.example.com\" is not this preview's")
            && msg.contains(&host),
        "{msg}"
    );
    // Nothing applied: not even the namespace.
    let preview_ns = failed.status.as_ref().unwrap().namespace.clone().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&preview_ns).await.unwrap().is_none());
    // The PR says why: a failure status naming the object, and the comment with every reason.
    let statuses = emu.statuses(&repo_path, Some(&pr.head_sha)).await.unwrap();
    let failure = statuses
        .iter()
        .find(|x| x.context == "pullwarden/preview" && x.state == "failure")
        .expect("failure status");
    let desc = failure.description.clone().unwrap_or_default();
    assert!(desc.contains("Ingress/shop"), "{desc}");
    let comments = emu.comments(&repo_path, pr.number).await.unwrap();
    let body = &comments[0].body;
    for needle in [
        "shop.example.com",
        "cert-manager.io/cluster-issuer",
        "is not allowed",
    ] {
        assert!(body.contains(needle), "{needle:?} not in {body}");
    }
}
