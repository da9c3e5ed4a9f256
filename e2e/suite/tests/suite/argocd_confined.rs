//! `delivery: argocd` confined (issue 9, item 1), against the real API server with the operator
//! running under its shipped RBAC. No Argo CD runs here (a real one is issue 11's job): the tests
//! install Argo CD's Application CRD and a faithful subset of its AppProject CRD
//! (`test-data/argocd`), play Argo CD's part by writing the Application's status, and check the
//! AppProject Pullwarden writes — which is what a real Argo CD enforces on every resource it
//! syncs (destinations against each resource's own namespace, the kind white-lists, the source).
//!
//! Attacks tried as a tenant (who writes PreviewEnvironments/Repository templates): use Argo CD's
//! `default` project (every destination and kind), pick Argo CD's namespace, point a preview at
//! an existing Application or AppProject it does not own.

use crate::support::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden::render::safety::ALLOWED_KINDS;
use pullwarden_emulator::{EmulatorHandle, PullSpec};
use pullwarden_harness::cluster::{
    self, Cluster, TestNamespace, apply_crds, wait_for, wait_until_gone,
};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_argocd_confined";
const UID_LABEL: &str = "pullwarden.dev/preview-uid";
const SERVER: &str = "https://kubernetes.default.svc";

/// Installs the Application and AppProject CRDs (idempotent; the cluster is shared).
async fn install_argocd_crds(cluster: &Cluster) {
    for (file, crd) in [
        ("application-crd.yaml", "crd/applications.argoproj.io"),
        ("appproject-crd.yaml", "crd/appprojects.argoproj.io"),
    ] {
        let yaml =
            std::fs::read_to_string(cluster::repo_root().join("test-data/argocd").join(file))
                .unwrap();
        cluster
            .kubectl_with_stdin(["apply", "--server-side", "-f", "-"], &yaml)
            .await
            .unwrap();
        cluster
            .kubectl(["wait", "--for=condition=Established", crd, "--timeout=60s"])
            .await
            .unwrap();
    }
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

/// Argo CD's CRDs, a tenant and an Argo CD namespace, the emulator repo with the preview app and
/// a `feature` branch, the operator configured with that Argo CD namespace, and a Repository
/// whose PRs labelled `preview` get an Argo CD preview with the default (managed) project.
async fn setup(prefix: &str) -> Setup {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    install_argocd_crds(cluster).await;
    let tenant = TestNamespace::new(cluster, prefix).await.unwrap();
    let argocd = TestNamespace::new(cluster, &format!("{prefix}-argocd"))
        .await
        .unwrap();
    let n = tenant.name().to_string();
    let repo_path = format!("acme/{n}");
    let (emu, info) = preview_app_repo(&n, TOKEN).await;
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
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        assert!(
            namespaces.get_opt(preview_ns).await.unwrap().is_none(),
            "the preview namespace {preview_ns} was created for a refused preview"
        );
    }
}

fn phase(p: &PreviewEnvironment) -> Option<PreviewPhase> {
    p.status.as_ref().map(|s| s.phase)
}

/// The normal path: the preview gets its own restricted AppProject (the preview namespace as the
/// only destination, no cluster-scoped kinds, the allow-list kinds, the Repository URL as the
/// only source) and an Application in it pinned to the head SHA, in the operator-configured Argo
/// CD namespace; Ready follows the (played) Argo CD status; closing the PR removes both.
#[tokio::test]
async fn argocd_preview_gets_a_restricted_project_and_teardown_removes_it() {
    let s = setup("argo-ok").await;
    let n = s.tenant.name().to_string();
    let pr = s.open_pull("Argo", true).await;
    let name = format!("{n}-pr-{}", pr.number);
    let app_name = format!("preview-{name}");
    let project_name = format!("pullwarden-previews-{name}");
    let deploying = wait_for(
        &s.previews,
        &name,
        TIMEOUT,
        "Deploying (Argo CD)",
        |p: &PreviewEnvironment| phase(p) == Some(PreviewPhase::Deploying),
    )
    .await
    .unwrap();
    let uid = deploying.metadata.uid.clone().unwrap();

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

    let app = s.apps.get(&app_name).await.unwrap();
    assert_eq!(app.metadata.labels.as_ref().unwrap()[UID_LABEL], uid);
    assert_eq!(app.data["spec"]["project"], project_name.as_str());
    assert_eq!(
        app.data["spec"]["source"]["targetRevision"],
        pr.head_sha.as_str()
    );
    assert_eq!(app.data["spec"]["source"]["repoURL"], s.clone_url.as_str());
    assert_eq!(app.data["spec"]["source"]["path"], "deploy/preview");
    assert_eq!(
        app.data["spec"]["destination"],
        json!({"server": SERVER, "namespace": name})
    );

    // Play Argo CD: synced to the head SHA and healthy.
    let status = json!({"status": {"sync": {"status": "Synced", "revision": pr.head_sha}, "health": {"status": "Healthy"}}});
    s.apps
        .patch_status(
            &app_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .unwrap();
    wait_for(
        &s.previews,
        &name,
        TIMEOUT,
        "Ready at the head SHA",
        |p: &PreviewEnvironment| {
            phase(p) == Some(PreviewPhase::Ready)
                && p.status.as_ref().and_then(|st| st.deployed_sha.as_deref())
                    == Some(pr.head_sha.as_str())
        },
    )
    .await
    .unwrap();

    // Closing the PR deletes the Application and the AppProject with the preview.
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
}

/// A tenant cannot choose Argo CD's `default` project (or any project the operator did not
/// allow), nor the namespace Argo CD's Application lands in: each is refused with a condition
/// naming the setting, and nothing — no Application, no AppProject, no namespace — is created.
#[tokio::test]
async fn argocd_project_default_and_a_tenant_chosen_namespace_are_refused() {
    let s = setup("argo-refuse").await;
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
    let s = setup("argo-owned").await;
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
