//! `delivery: argocd` end to end, against the real API server with the operator running under
//! its shipped RBAC and a real Argo CD (application controller + repo-server of the pinned
//! module, `pullwarden_harness::argocd`) syncing from the emulator's git over smart HTTP.
//!
//! With Argo CD running: Pullwarden writes the restricted AppProject and the Application, Argo CD
//! really syncs the pull request's plain manifests into the preview namespace (kwok makes the
//! pods Ready), Pullwarden reports Ready on the pull request, closing it removes everything; and
//! a pull request that adds a ClusterRoleBinding is stopped by Argo CD enforcing that AppProject.
//!
//! Without Argo CD (only its CRDs, so nothing else writes the objects): the attacks a tenant (who
//! writes PreviewEnvironments/Repository templates) can try — use Argo CD's `default` project
//! (every destination and kind), pick Argo CD's namespace, point a preview at an existing
//! Application or AppProject it does not own — are refused before anything is written.

use crate::support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden::render::safety::ALLOWED_KINDS;
use pullwarden_emulator::{EmulatorHandle, PullSpec, PushSpec};
use pullwarden_harness::argocd::{self, ArgoCd};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
/// A real sync: Argo CD's first reconcile (cluster cache), the repo-server's clone, the apply and
/// kwok's pods; seconds normally, but the machine may be busy.
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);
const TOKEN: &str = "ghp_argocd_confined";
/// Argo CD's own read credentials for the repository (not Pullwarden's).
const ARGOCD_TOKEN: &str = "ghp_argocd_repo_reader";
const UID_LABEL: &str = "pullwarden.dev/preview-uid";
const SERVER: &str = "https://kubernetes.default.svc";

/// The pull request's app as Argo CD deploys it: plain YAML (Argo CD does not render
/// Pullwarden's `{{…}}` variables), fit for the preview namespace's Pod Security `restricted`,
/// quota and LimitRange.
const APP_CONFIG: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app.kubernetes.io/name: web}
data:
  LOG_LEVEL: debug
";
const APP_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app.kubernetes.io/name: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: web}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: web
          image: registry.test/acme/shop:preview
          ports: [{name: http, containerPort: 8080}]
          envFrom: [{configMapRef: {name: web-config}}]
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {cpu: 500m, memory: 256Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
";
const APP_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app.kubernetes.io/name: web}
spec:
  selector: {app.kubernetes.io/name: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// What a hostile pull request adds: cluster-admin for a ServiceAccount of its namespace.
fn cluster_role_binding(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
subjects: [{{kind: ServiceAccount, name: default, namespace: {namespace}}}]
"
    )
}

fn argo_api(client: &kube::Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("argoproj.io", "v1alpha1", kind),
            plural,
        ),
    )
}

struct Setup {
    /// The running Argo CD, when the scenario needs one (dropped first, before the namespaces).
    argo: Option<ArgoCd>,
    /// Tenant namespace (= the Repository's name).
    tenant: TestNamespace,
    /// Argo CD's namespace, configured by the operator (`--argocd-namespace`).
    argocd: TestNamespace,
    emu: EmulatorHandle,
    _op: Operator,
    client: kube::Client,
    repo_path: String,
    clone_url: String,
    apps: Api<DynamicObject>,
    projects: Api<DynamicObject>,
    previews: Api<PreviewEnvironment>,
}

/// Argo CD's CRDs, a tenant and an Argo CD namespace (with a running Argo CD when `real_argo`),
/// a private emulator repo whose `main` and `feature` branches hold the plain app under
/// `deploy/preview`, the operator configured with that Argo CD namespace, and a Repository whose
/// PRs labelled `preview` get an Argo CD preview with the default (managed) project.
async fn setup(prefix: &str, real_argo: bool) -> Setup {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    argocd::install_crds(&client).await.unwrap();
    let tenant = TestNamespace::new(cluster, prefix).await.unwrap();
    let argocd = TestNamespace::new(cluster, &format!("{prefix}-argocd"))
        .await
        .unwrap();
    let n = tenant.name().to_string();
    let repo_path = format!("acme/{n}");
    let emu = pullwarden_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    emu.token(TOKEN, "pullwarden-bot").await.unwrap();
    let info = github_repo(
        &emu,
        &repo_path,
        &[
            ("deploy/preview/config.yaml", APP_CONFIG),
            ("deploy/preview/deployment.yaml", APP_DEPLOYMENT),
            ("deploy/preview/service.yaml", APP_SERVICE),
        ],
    )
    .await;
    emu.create_branch(&repo_path, "feature", Some("main"))
        .await
        .unwrap();
    let argo = if real_argo {
        let argo = ArgoCd::start(cluster, argocd.name()).await.unwrap();
        emu.token(ARGOCD_TOKEN, "argocd").await.unwrap();
        argo.add_git_credentials(&info.clone_url, "x-access-token", ARGOCD_TOKEN)
            .await
            .unwrap();
        Some(argo)
    } else {
        None
    };
    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            args: vec!["--argocd-namespace".into(), argocd.name().to_owned()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    op.wait_ready(TIMEOUT).await.unwrap();
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
            "preview": preview_spec(json!({"delivery": "argocd"})),
        }),
    );
    apply(&repos, &n, &manifest).await;
    wait_for(&repos, &n, TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    let apps = argo_api(&client, argocd.name(), "Application", "applications");
    let projects = argo_api(&client, argocd.name(), "AppProject", "appprojects");
    let previews = Api::namespaced(client.clone(), &n);
    Setup {
        argo,
        tenant,
        argocd,
        emu,
        _op: op,
        client,
        repo_path,
        clone_url: info.clone_url,
        apps,
        projects,
        previews,
    }
}

impl Setup {
    /// Opens a pull request from `feature` (labelled `preview` when `labelled`).
    async fn open_pull(&self, title: &str, labelled: bool) -> pullwarden_emulator::PullInfo {
        self.emu
            .open_pull(
                &self.repo_path,
                PullSpec {
                    head: "feature".into(),
                    title: title.into(),
                    labels: if labelled {
                        vec!["preview".into()]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    /// Waits for `what` on preview `name`; on timeout the error also shows the preview's
    /// Application status and Argo CD's log tails.
    async fn wait_preview(
        &self,
        name: &str,
        what: &str,
        predicate: impl FnMut(&PreviewEnvironment) -> bool,
    ) -> PreviewEnvironment {
        match wait_for(&self.previews, name, SYNC_TIMEOUT, what, predicate).await {
            Ok(pe) => pe,
            Err(e) => {
                let app = self.apps.get_opt(&format!("preview-{name}")).await;
                let app = match app {
                    Ok(Some(app)) => cluster::to_short_yaml(&app.data["status"]),
                    other => format!("{other:?}"),
                };
                panic!(
                    "{e:#}\n--- Application status ---\n{app}{}",
                    self.argo_logs()
                )
            }
        }
    }

    fn argo_logs(&self) -> String {
        self.argo.as_ref().map_or_else(String::new, |a| {
            format!(
                "\n--- Argo CD application controller (log tail) ---\n{}\n--- repo-server ---\n{}",
                a.controller_log_tail(30),
                a.repo_server_log_tail(10)
            )
        })
    }

    /// A hand-made Argo CD preview of pull request `number` with `template` merged in.
    async fn hand_made(&self, name: &str, number: u64, template: Value) -> PreviewEnvironment {
        let n = self.tenant.name();
        let mut t = json!({"path": "deploy/preview", "delivery": "argocd"});
        if let (Some(base), Some(more)) = (t.as_object_mut(), template.as_object()) {
            for (k, v) in more {
                base.insert(k.clone(), v.clone());
            }
        }
        let pe = json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": name},
            "spec": {"repositoryRef": {"name": n}, "pullRequest": number, "template": t},
        });
        apply(&self.previews, name, &pe).await
    }

    /// Waits until the preview is refused: Ready=False with reason InvalidSpec and Stalled=True,
    /// the message containing every one of `needles`.
    async fn wait_refused(&self, name: &str, needles: &[&str]) -> PreviewEnvironment {
        let refused = wait_for(
            &self.previews,
            name,
            TIMEOUT,
            "refused (Ready=False InvalidSpec)",
            |p: &PreviewEnvironment| has_reason(p, "False", "InvalidSpec"),
        )
        .await
        .unwrap();
        let message = ready_message(&refused);
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        let stalled = refused
            .status
            .as_ref()
            .unwrap()
            .common
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("a Stalled condition");
        assert_eq!(stalled.status, "True");
        refused
    }

    /// Nothing exists for a refused preview: no Application, no managed AppProject, no
    /// preview namespace.
    async fn assert_nothing_for(&self, preview_ns: &str, except_app: bool, except_project: bool) {
        if !except_app {
            assert!(
                self.apps
                    .get_opt(&format!("preview-{preview_ns}"))
                    .await
                    .unwrap()
                    .is_none(),
                "an Application was created for refused preview namespace {preview_ns}"
            );
        }
        if !except_project {
            assert!(
                self.projects
                    .get_opt(&format!("pullwarden-previews-{preview_ns}"))
                    .await
                    .unwrap()
                    .is_none(),
                "an AppProject was created for refused preview namespace {preview_ns}"
            );
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        assert!(
            namespaces.get_opt(preview_ns).await.unwrap().is_none(),
            "the preview namespace {preview_ns} was created for a refused preview"
        );
    }
}

fn phase(p: &PreviewEnvironment) -> Option<PreviewPhase> {
    p.status.as_ref().map(|s| s.phase)
}

/// Field managers of an object's managedFields.
fn managers(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.clone())
        .collect()
}

/// The normal path with a real Argo CD. The preview gets its own restricted AppProject (the
/// preview namespace as the only destination, no cluster-scoped kinds, the allow-list kinds, the
/// Repository URL as the only source) and an Application in it pinned to the head SHA, in the
/// operator-configured Argo CD namespace. Argo CD syncs the pull request's manifests into the
/// preview namespace (its field manager, its tracking annotation), kwok makes the pods Ready, the
/// Application turns Synced + Healthy at the head SHA, and Pullwarden reports Ready on the pull
/// request; a push moves the Application to the new SHA, which Argo CD syncs (and prunes);
/// closing the pull request removes the Application, the AppProject and the namespace.
#[tokio::test]
async fn argocd_syncs_the_preview_and_teardown_removes_it() {
    let s = setup("argo-sync", true).await;
    let n = s.tenant.name().to_string();
    let t = std::time::Instant::now();
    let pr = s.open_pull("Argo", true).await;
    let name = format!("{n}-pr-{}", pr.number);
    let app_name = format!("preview-{name}");
    let project_name = format!("pullwarden-previews-{name}");
    let ready = s
        .wait_preview(&name, "Ready at the head SHA (synced by Argo CD)", |p| {
            phase(p) == Some(PreviewPhase::Ready)
                && p.status.as_ref().and_then(|st| st.deployed_sha.as_deref())
                    == Some(pr.head_sha.as_str())
        })
        .await;
    eprintln!("PR open → Argo CD preview Ready: {:?}", t.elapsed());
    let uid = ready.metadata.uid.clone().unwrap();
    let preview_ns = ready.status.as_ref().unwrap().namespace.clone().unwrap();
    assert_eq!(preview_ns, name);

    // The AppProject Argo CD enforced.
    let project = s.projects.get(&project_name).await.unwrap();
    assert_eq!(
        project.metadata.labels.as_ref().unwrap()[UID_LABEL],
        uid,
        "the AppProject is labelled with the preview's UID"
    );
    assert_eq!(
        project.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "pullwarden"
    );
    let spec = &project.data["spec"];
    assert_eq!(spec["sourceRepos"], json!([s.clone_url]));
    assert_eq!(
        spec["destinations"],
        json!([{"server": SERVER, "namespace": name}])
    );
    assert_eq!(spec["clusterResourceWhitelist"], json!([]));
    let expected: Vec<Value> = ALLOWED_KINDS
        .iter()
        .map(|k| json!({"group": k.group(), "kind": k.kind}))
        .collect();
    assert_eq!(spec["namespaceResourceWhitelist"], json!(expected));
    let mut keys: Vec<&String> = spec.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "clusterResourceWhitelist",
            "destinations",
            "namespaceResourceWhitelist",
            "sourceRepos"
        ],
        "nothing else in the project (no roles, windows, source namespaces)"
    );

    // The Application Pullwarden wrote, and what Argo CD says about it.
    let app = s.apps.get(&app_name).await.unwrap();
    assert_eq!(app.metadata.labels.as_ref().unwrap()[UID_LABEL], uid);
    assert_eq!(app.data["spec"]["project"], project_name.as_str());
    let source = &app.data["spec"]["source"];
    assert_eq!(source["targetRevision"], pr.head_sha.as_str());
    assert_eq!(source["repoURL"], s.clone_url.as_str());
    assert_eq!(source["path"], "deploy/preview");
    assert_eq!(
        app.data["spec"]["destination"],
        json!({"server": SERVER, "namespace": name})
    );
    let status = &app.data["status"];
    assert_eq!(status["sync"]["status"], "Synced", "{status}");
    assert_eq!(status["sync"]["revision"], pr.head_sha.as_str());
    assert_eq!(status["health"]["status"], "Healthy", "{status}");
    assert_eq!(status["operationState"]["phase"], "Succeeded", "{status}");
    assert!(
        managers(&app.metadata)
            .iter()
            .any(|m| m.starts_with("argocd-application-controller")),
        "Argo CD's controller wrote the status: {:?}",
        managers(&app.metadata)
    );

    // Argo CD applied the manifests (its field manager, its tracking annotation); kwok made the
    // pods Ready, so the Deployment is available.
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &name);
    let web = deployments.get("web").await.unwrap();
    let by = managers(&web.metadata);
    assert!(
        by.iter().any(|m| m == "argocd-controller"),
        "applied by Argo CD: {by:?}"
    );
    assert!(
        !by.iter().any(|m| m.starts_with("pullwarden")),
        "not applied by Pullwarden: {by:?}"
    );
    let tracking = web
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("argocd.argoproj.io/tracking-id"))
        .cloned()
        .unwrap_or_default();
    assert!(
        tracking.starts_with(&format!("{app_name}:apps/Deployment:{name}/web")),
        "{tracking:?}"
    );
    let web_status = web.status.clone().unwrap_or_default();
    assert_eq!(web_status.available_replicas, Some(2), "{web_status:?}");

    // Pullwarden reported Ready on the pull request.
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pr.head_sha))
        .await
        .unwrap();
    assert!(
        statuses
            .iter()
            .any(|x| x.context == "pullwarden/preview" && x.state == "success"),
        "{statuses:?}"
    );
    let dep = s
        .emu
        .deployments(&s.repo_path)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.sha == pr.head_sha)
        .expect("a deployment for the head SHA");
    assert_eq!(dep.statuses.last().unwrap().state, "success");

    // A push: Pullwarden moves the Application to the new SHA (while Argo CD keeps writing its
    // status), Argo CD syncs it — the changed ConfigMap updated, the removed Service pruned.
    let pushed = s
        .emu
        .push_to_pull(
            &s.repo_path,
            pr.number,
            PushSpec {
                files: [
                    (
                        "deploy/preview/config.yaml".to_owned(),
                        Some(APP_CONFIG.replace("LOG_LEVEL: debug", "LOG_LEVEL: info")),
                    ),
                    ("deploy/preview/service.yaml".to_owned(), None),
                ]
                .into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t = std::time::Instant::now();
    s.wait_preview(&name, "Ready at the pushed SHA", |p| {
        phase(p) == Some(PreviewPhase::Ready)
            && p.status.as_ref().and_then(|st| st.deployed_sha.as_deref())
                == Some(pushed.after.as_str())
    })
    .await;
    eprintln!("push → new SHA Ready (Argo CD): {:?}", t.elapsed());
    let app = s.apps.get(&app_name).await.unwrap();
    assert_eq!(
        app.data["spec"]["source"]["targetRevision"],
        pushed.after.as_str()
    );
    assert_eq!(
        app.data["status"]["sync"]["revision"],
        pushed.after.as_str()
    );
    let config: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(s.client.clone(), &name);
    let cm = config.get("web-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["LOG_LEVEL"], "info");
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(s.client.clone(), &name);
    wait_until_gone(
        &services,
        "web",
        TIMEOUT,
        "the removed Service pruned by Argo CD",
    )
    .await
    .unwrap();

    // Closing the PR deletes the Application, the AppProject and the namespace with what Argo CD
    // deployed in it.
    s.emu.close_pull(&s.repo_path, pr.number).await.unwrap();
    wait_until_gone(&s.previews, &name, TIMEOUT, "deleted")
        .await
        .unwrap();
    assert!(
        s.apps.get_opt(&app_name).await.unwrap().is_none(),
        "the Application is deleted with the preview"
    );
    assert!(
        s.projects.get_opt(&project_name).await.unwrap().is_none(),
        "the preview's AppProject is deleted with the preview"
    );
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    wait_until_gone(&namespaces, &name, TIMEOUT, "preview namespace deleted")
        .await
        .unwrap();
}

/// A pull request that adds a ClusterRoleBinding (cluster-admin for a ServiceAccount of its
/// namespace). Pullwarden does not render `delivery: argocd` manifests, so the restricted
/// AppProject is what stops it: the real Argo CD refuses the sync with its own message, nothing
/// of the pull request is applied (no ClusterRoleBinding, nor the Deployment synced with it), and
/// the preview and the pull request say why.
#[tokio::test]
async fn argocd_restricted_project_stops_a_cluster_role_binding() {
    let s = setup("argo-crb", true).await;
    let n = s.tenant.name().to_string();
    let crb_name = format!("{n}-escalate");
    s.emu
        .push(
            &s.repo_path,
            PushSpec {
                branch: "feature".into(),
                files: files(&[(
                    "deploy/preview/escalate.yaml",
                    &cluster_role_binding(&crb_name, &n),
                )]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pr = s.open_pull("Escalate", true).await;
    let name = format!("{n}-pr-{}", pr.number);
    let app_name = format!("preview-{name}");
    let project_name = format!("pullwarden-previews-{name}");

    let failed = s
        .wait_preview(&name, "Failed (Argo CD refused the sync)", |p| {
            phase(p) == Some(PreviewPhase::Failed)
        })
        .await;
    let message = ready_message(&failed);
    eprintln!("preview Ready message: {message}");
    let expected = format!(
        "resource rbac.authorization.k8s.io:ClusterRoleBinding is not permitted in project {project_name}"
    );
    assert!(message.contains(&expected), "{message}");

    // Argo CD's own verdict on the Application: the sync of the head failed on the
    // ClusterRoleBinding (Argo CD retries an automated sync 5 times over ≈5 minutes before the
    // phase turns Failed; the preview says so at the first failed attempt).
    let app = s.apps.get(&app_name).await.unwrap();
    let op = &app.data["status"]["operationState"];
    assert!(
        op["phase"] == "Failed"
            || (op["phase"] == "Running" && op["retryCount"].as_u64() > Some(0)),
        "{op}"
    );
    assert_eq!(op["syncResult"]["revision"], pr.head_sha.as_str(), "{op}");
    let refused: Vec<&Value> = op["syncResult"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "SyncFailed")
        .collect();
    assert_eq!(refused.len(), 1, "{op}");
    assert_eq!(refused[0]["kind"], "ClusterRoleBinding");
    assert_eq!(refused[0]["message"], expected.as_str());

    // Nothing cluster-scoped, nothing of the pull request in the namespace.
    let crbs: Api<ClusterRoleBinding> = Api::all(s.client.clone());
    assert!(crbs.get_opt(&crb_name).await.unwrap().is_none());
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &name);
    assert!(
        deployments.get_opt("web").await.unwrap().is_none(),
        "a failed sync applies nothing"
    );

    // The pull request says why.
    let statuses = s
        .emu
        .statuses(&s.repo_path, Some(&pr.head_sha))
        .await
        .unwrap();
    let failure = statuses
        .iter()
        .find(|x| x.context == "pullwarden/preview" && x.state == "failure")
        .unwrap_or_else(|| panic!("a failure status: {statuses:?}"));
    let desc = failure.description.clone().unwrap_or_default();
    assert!(desc.contains("ClusterRoleBinding"), "{desc}");
    let comments = s.emu.comments(&s.repo_path, pr.number).await.unwrap();
    assert!(comments[0].body.contains(&expected), "{}", comments[0].body);

    // Closing it still cleans up.
    s.emu.close_pull(&s.repo_path, pr.number).await.unwrap();
    wait_until_gone(&s.previews, &name, TIMEOUT, "deleted")
        .await
        .unwrap();
    assert!(s.apps.get_opt(&app_name).await.unwrap().is_none());
    assert!(s.projects.get_opt(&project_name).await.unwrap().is_none());
}

/// A tenant cannot choose Argo CD's `default` project (or any project the operator did not
/// allow), nor the namespace Argo CD's Application lands in: each is refused with a condition
/// naming the setting, and nothing — no Application, no AppProject, no namespace — is created.
#[tokio::test]
async fn argocd_project_default_and_a_tenant_chosen_namespace_are_refused() {
    let s = setup("argo-refuse", false).await;
    let n = s.tenant.name().to_string();
    let pr = s.open_pull("Unlabelled", false).await;

    let cases = [
        (
            "project-default",
            json!({"namespace": format!("{n}-default"), "argocd": {"project": "default"}}),
            vec!["`default` is refused", "--argocd-project"],
        ),
        (
            "project-other",
            json!({"namespace": format!("{n}-other"), "argocd": {"project": "platform"}}),
            vec!["\"platform\" is not allowed", "--argocd-allowed-projects"],
        ),
        (
            "own-argocd-ns",
            json!({"namespace": format!("{n}-ownns"), "argocd": {"namespace": n}}),
            vec!["template.argocd.namespace", "--argocd-namespace"],
        ),
        (
            "own-server",
            json!({"namespace": format!("{n}-server"), "argocd": {"destinationServer": "https://prod.example.com"}}),
            vec!["--argocd-destination-server"],
        ),
    ];
    for (name, template, needles) in &cases {
        s.hand_made(name, pr.number, template.clone()).await;
        s.wait_refused(name, needles).await;
        let preview_ns = template["namespace"].as_str().unwrap();
        s.assert_nothing_for(preview_ns, false, false).await;
    }
    // Also nothing in the tenant's own namespace (the one it tried to pick).
    let tenant_apps = argo_api(&s.client, &n, "Application", "applications");
    assert!(
        tenant_apps
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    for (name, _, _) in &cases {
        s.previews.delete(name, &Default::default()).await.unwrap();
        wait_until_gone(&s.previews, name, TIMEOUT, "deleted")
            .await
            .unwrap();
    }
}

/// An Application (or AppProject) that already exists under the name a preview would use and is
/// not labelled with its UID is left untouched — spec and resourceVersion unchanged, also by the
/// preview's teardown — and the preview says why.
#[tokio::test]
async fn argocd_existing_application_or_project_not_ours_is_left_untouched() {
    let s = setup("argo-owned", false).await;
    let n = s.tenant.name().to_string();
    let pr = s.open_pull("Unlabelled", false).await;

    // Someone else's Application named like preview namespace `<n>-squat`'s.
    let app_ns = format!("{n}-squat");
    let app_name = format!("preview-{app_ns}");
    let foreign_app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": app_name, "labels": {"team": "platform"}},
        "spec": {
            "project": "platform",
            "source": {"repoURL": "https://git.example.com/platform/infra.git", "targetRevision": "main", "path": "prod"},
            "destination": {"server": SERVER, "namespace": "prod"},
        },
    });
    let before_app = apply(&s.apps, &app_name, &foreign_app).await;
    // Someone else's AppProject named like preview namespace `<n>-proj`'s managed project.
    let proj_ns = format!("{n}-proj");
    let proj_name = format!("pullwarden-previews-{proj_ns}");
    let foreign_project = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {"name": proj_name, "labels": {UID_LABEL: "someone-else"}},
        "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}], "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]},
    });
    let before_project = apply(&s.projects, &proj_name, &foreign_project).await;

    s.hand_made("squat-app", pr.number, json!({"namespace": app_ns}))
        .await;
    s.wait_refused(
        "squat-app",
        &[
            "ApplicationNotOwned",
            &format!("{}/{app_name}", s.argocd.name()),
        ],
    )
    .await;
    s.hand_made("squat-project", pr.number, json!({"namespace": proj_ns}))
        .await;
    s.wait_refused(
        "squat-project",
        &[
            "AppProjectNotOwned",
            &format!("{}/{proj_name}", s.argocd.name()),
        ],
    )
    .await;
    // The refusal comes before anything is written (no namespace, no other object).
    s.assert_nothing_for(&app_ns, true, false).await;
    s.assert_nothing_for(&proj_ns, false, true).await;

    // Teardown of the refused previews deletes nothing that is not theirs.
    for name in ["squat-app", "squat-project"] {
        s.previews.delete(name, &Default::default()).await.unwrap();
        wait_until_gone(&s.previews, name, TIMEOUT, "deleted")
            .await
            .unwrap();
    }
    let after_app = s.apps.get(&app_name).await.unwrap();
    assert_eq!(
        after_app.metadata.resource_version,
        before_app.metadata.resource_version
    );
    assert_eq!(after_app.data["spec"], before_app.data["spec"]);
    assert_eq!(after_app.metadata.labels, before_app.metadata.labels);
    let after_project = s.projects.get(&proj_name).await.unwrap();
    assert_eq!(
        after_project.metadata.resource_version,
        before_project.metadata.resource_version
    );
    assert_eq!(after_project.data["spec"], before_project.data["spec"]);
}
