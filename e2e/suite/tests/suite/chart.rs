//! The Helm chart in `charts/pullwarden`, rendered by a real helm (built from the Go module pinned
//! in `e2e/helm` by `e2e/scripts/build-helm.sh`) and checked against the real API server:
//!
//! - `helm lint` (also `--strict`) passes with the default and a non-default set of values;
//! - the default render is exactly config/default's objects (minus the Namespace) with the same
//!   names, RBAC rules, CRDs and manager hardening, and the API server accepts it (server dry run);
//! - a non-default render (namespace scope, Ingress, ServiceMonitor, 3 replicas, no CRDs, ...)
//!   says what the values asked for and is accepted too;
//! - values.schema.json rejects bad values with helm's schema error, while good ones pass;
//! - the manager Pod passes the `restricted` Pod Security Standard, enforced by the API server;
//! - `security:` has one key per safety flag of `pullwarden run` and renders each as that flag,
//!   and the admission policies are config/admission's, reading the same settings.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pullwarden_harness::cluster::{self, Cluster, TestNamespace, repo_root};
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

const HELM_TIMEOUT: Duration = Duration::from_secs(120);
/// Field manager of the server-side dry runs (nothing is persisted).
const DRY_RUN_MANAGER: &str = "pullwarden-chart-test";

/// Values that change every behaviour switch of the chart away from its default.
const NON_DEFAULT_VALUES: &str = r#"
replicas: 3
namespaceScope: team-shop
logFormat: text
installCRDs: false
image:
  repository: registry.example.com/platform/pullwarden
  tag: 0.1.0-rc.1
  pullPolicy: Always
leaderElection:
  enabled: true
  leaseName: pullwarden-team-shop
extraArgs:
  - --webhook-max-body-bytes=5242880
extraEnv:
  - name: RUST_LOG
    value: pullwarden=debug
webhook:
  service:
    type: LoadBalancer
    port: 8443
  ingress:
    enabled: true
    className: nginx
    host: pullwarden.example.com
    tls:
      secretName: pullwarden-webhook-tls
    annotations:
      nginx.ingress.kubernetes.io/proxy-body-size: 10m
metrics:
  serviceMonitor:
    enabled: true
    interval: 15s
    labels:
      release: kube-prometheus-stack
resources:
  requests:
    cpu: 100m
    memory: 128Mi
  limits:
    memory: 1Gi
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: dedicated
    operator: Equal
    value: platform
    effect: NoSchedule
podAnnotations:
  example.com/team: platform
security:
  previewDomain: preview.example.com
  previewIngressClass: nginx
  previewIngressAnnotations: [nginx.ingress.kubernetes.io/proxy-body-size, "example.com/*"]
  previewServiceTypes: [NodePort]
  defaultMaxPreviews: 5
  allowCrossHostApiUrl: true
networkPolicy:
  enabled: true
  ingress:
    webhookFrom:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: ingress-nginx
  egress:
    apiServer:
      cidrs: [10.0.0.1/32, 192.168.10.4/32]
      port: 443
    forges:
      cidrs: [140.82.112.0/20, 0.0.0.0/0, "::/0"]
      except: [169.254.0.0/16, 10.0.0.0/8, "fe80::/10"]
      ports: [443, 22]
"#;

/// A subset of the Prometheus Operator's ServiceMonitor CRD (the fields the chart sets, with
/// their real names, types and the real duration pattern, so that a typo fails the dry run).
/// Installed only when the cluster has no ServiceMonitor CRD.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
  labels:
    pullwarden.dev/test: "true"
  annotations:
    pullwarden.dev/fixture: a subset of the Prometheus Operator's ServiceMonitor CRD, for chart tests
spec:
  group: monitoring.coreos.com
  names:
    kind: ServiceMonitor
    listKind: ServiceMonitorList
    plural: servicemonitors
    singular: servicemonitor
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [selector]
              properties:
                jobLabel: {type: string}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                selector:
                  type: object
                  x-kubernetes-map-type: atomic
                  properties:
                    matchLabels:
                      type: object
                      additionalProperties: {type: string}
                    matchExpressions:
                      type: array
                      items:
                        type: object
                        required: [key, operator]
                        properties:
                          key: {type: string}
                          operator: {type: string}
                          values: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      scheme: {type: string}
                      interval:
                        type: string
                        pattern: ^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$
                      scrapeTimeout:
                        type: string
                        pattern: ^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$
"#;

// ---------------------------------------------------------------------------------------------
// helm

fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("pullwarden")
}

/// The helm binary, built once per cache key by e2e/scripts/build-helm.sh (whose last stdout line
/// is the binary's path).
fn helm_bin() -> &'static Path {
    static HELM: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let built = HELM.get_or_init(|| {
        let script = repo_root()
            .join("e2e")
            .join("scripts")
            .join("build-helm.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Progress of a first build goes straight to the test output.
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}); stdout:\n{stdout}",
                script.display(),
                out.status
            ));
        }
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} printed {path:?}, which is not a file",
                script.display()
            ))
        }
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("helm is unavailable: {e}"),
    }
}

#[derive(Debug)]
struct HelmOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs helm with its config, cache and data homes in a throwaway directory, so nothing leaks in
/// from (or out to) the user's helm setup.
async fn helm<I, S>(args: I) -> Result<HelmOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = tokio::task::spawn_blocking(helm_bin).await?;
    let home = tempfile::Builder::new()
        .prefix("pullwarden-helm-")
        .tempdir()?;
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let child = tokio::process::Command::new(bin)
        .args(&args)
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let out = tokio::time::timeout(HELM_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("helm {shown} timed out after {HELM_TIMEOUT:?}"))??;
    Ok(HelmOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `helm template` of the chart as release `release` in `namespace`, with optional values (as a
/// values file) and `--set` arguments.
async fn template(
    release: &str,
    namespace: &str,
    values: Option<&str>,
    sets: &[&str],
) -> Result<HelmOutput> {
    let dir = tempfile::tempdir()?;
    let mut args: Vec<String> = vec![
        "template".into(),
        release.into(),
        chart_dir().to_string_lossy().into_owned(),
        "--namespace".into(),
        namespace.into(),
    ];
    if let Some(values) = values {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values)?;
        args.push("--values".into());
        args.push(file.to_string_lossy().into_owned());
    }
    for set in sets {
        args.push("--set".into());
        args.push((*set).into());
    }
    helm(&args).await
}

/// [`template`] that must succeed; returns the rendered YAML.
async fn render(release: &str, namespace: &str, values: Option<&str>) -> String {
    let out = template(release, namespace, values, &[]).await.unwrap();
    assert!(
        out.success,
        "helm template failed:\n{}\n{}",
        out.stderr, out.stdout
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------------
// manifests

fn parse_docs(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn kind_name(v: &Value) -> (String, String) {
    (
        str_at(v, &["kind"]).unwrap_or_default().to_owned(),
        str_at(v, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned(),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} among {:?}",
                docs.iter().map(kind_name).collect::<Vec<_>>()
            )
        })
}

fn all_of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| str_at(d, &["kind"]) == Some(kind))
        .collect()
}

/// The manager container of a Deployment.
fn manager_container(deployment: &Value) -> &Value {
    at(deployment, &["spec", "template", "spec", "containers"])
        .and_then(Value::as_sequence)
        .and_then(|cs| cs.iter().find(|c| str_at(c, &["name"]) == Some("manager")))
        .expect("the Deployment has a container named manager")
}

fn args_of(container: &Value) -> Vec<String> {
    at(container, &["args"])
        .and_then(Value::as_sequence)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// YAML numbers compared by value: helm's fromYaml/toYaml turns `minimum: 0.0` into `0`.
fn normalize_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN).into()),
        Value::Sequence(s) => Value::Sequence(s.iter().map(normalize_numbers).collect()),
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize_numbers(v)))
                .collect::<Mapping>(),
        ),
        Value::Tagged(t) => normalize_numbers(&t.value),
        other => other.clone(),
    }
}

/// Objects of `kubectl kustomize config/default`: the source of truth the chart mirrors.
async fn kustomize_default(cluster: &Cluster) -> Vec<Value> {
    let dir = repo_root().join("config").join("default");
    let out = cluster
        .kubectl([OsStr::new("kustomize"), dir.as_os_str()])
        .await
        .unwrap();
    parse_docs(&out).unwrap()
}

/// Server-side dry-run apply of a render: the API server validates and admits every object
/// (schemas, field validation, RBAC escalation checks) without persisting anything. Returns the
/// applied objects as kubectl reports them.
async fn server_dry_run(cluster: &Cluster, yaml: &str) -> Result<Vec<String>> {
    let out = cluster
        .kubectl_with_stdin(
            [
                "apply",
                "--server-side",
                "--force-conflicts",
                &format!("--field-manager={DRY_RUN_MANAGER}"),
                "--dry-run=server",
                "-f",
                "-",
            ],
            yaml,
        )
        .await?;
    Ok(out
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .map(str::to_owned)
        .collect())
}

/// Installs [`SERVICE_MONITOR_CRD`] unless the cluster already serves ServiceMonitors (a real
/// Prometheus Operator CRD is never replaced).
async fn ensure_service_monitor_crd(cluster: &Cluster) -> Result<()> {
    const NAME: &str = "crd/servicemonitors.monitoring.coreos.com";
    if cluster.kubectl(["get", NAME]).await.is_ok() {
        return Ok(());
    }
    cluster
        .kubectl_with_stdin(
            [
                "apply",
                "--server-side",
                &format!("--field-manager={}", cluster::FIELD_MANAGER),
                "-f",
                "-",
            ],
            SERVICE_MONITOR_CRD,
        )
        .await?;
    cluster
        .kubectl(["wait", "--for=condition=Established", "--timeout=60s", NAME])
        .await?;
    Ok(())
}

fn assert_dry_run_covers(applied: &[String], docs: &[Value]) {
    assert_eq!(
        applied.len(),
        docs.len(),
        "the server dry run applied {} objects, the render has {}:\n{}",
        applied.len(),
        docs.len(),
        applied.join("\n")
    );
    for doc in docs {
        let (_, name) = kind_name(doc);
        assert!(
            applied.iter().any(|l| l.contains(&format!("/{name} "))),
            "{:?} missing from the server dry run:\n{}",
            kind_name(doc),
            applied.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn chart_lints_cleanly_with_default_and_non_default_values() {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, NON_DEFAULT_VALUES).unwrap();
    let values = values.to_string_lossy();
    for args in [
        vec!["lint", &*chart],
        vec!["lint", "--strict", &*chart],
        vec!["lint", "--strict", &*chart, "--values", &*values],
        vec![
            "lint",
            "--strict",
            &*chart,
            "--namespace",
            "pullwarden-system",
        ],
    ] {
        let out = helm(&args).await.unwrap();
        assert!(
            out.success && out.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm {} failed:\n{}\n{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        // --strict turns warnings into failures; also refuse them without it.
        assert!(
            !out.stdout.contains("[WARNING]") && !out.stdout.contains("[ERROR]"),
            "helm {}:\n{}",
            args.join(" "),
            out.stdout
        );
    }
}

#[tokio::test]
async fn default_render_mirrors_config_default_and_is_accepted_by_the_api_server() {
    let cluster = cluster::shared();
    let ns = TestNamespace::new(cluster, "chart-default").await.unwrap();
    let yaml = render("pullwarden", ns.name(), None).await;
    let docs = parse_docs(&yaml).unwrap();

    // The same objects, by kind and name, as `kubectl apply -k config/default` creates, except the
    // Namespace (Helm installs into an existing or --create-namespace'd one).
    let rendered: BTreeSet<_> = docs.iter().map(kind_name).collect();
    let kustomized: BTreeSet<_> = kustomize_default(cluster)
        .await
        .iter()
        .map(kind_name)
        .filter(|(kind, _)| kind != "Namespace")
        .collect();
    assert_eq!(
        rendered, kustomized,
        "the chart's default objects differ from config/default's"
    );
    // Off by default.
    for kind in ["Ingress", "ServiceMonitor", "NetworkPolicy"] {
        assert!(
            all_of_kind(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // Namespaced objects land in the release namespace.
    for doc in &docs {
        let kind = str_at(doc, &["kind"]).unwrap();
        let namespaced = !matches!(
            kind,
            "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        );
        assert_eq!(
            str_at(doc, &["metadata", "namespace"]),
            namespaced.then_some(ns.name()),
            "{:?}",
            kind_name(doc)
        );
    }

    let applied = server_dry_run(cluster, &yaml).await.unwrap();
    assert_dry_run_covers(&applied, &docs);
}

#[tokio::test]
async fn rendered_crds_are_the_generated_crds_and_survive_uninstall() {
    let crds_dir = repo_root().join("crds");
    let mut generated: Vec<PathBuf> = std::fs::read_dir(&crds_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(OsStr::to_str) != Some("kustomization.yaml"))
        .collect();
    generated.sort();
    assert!(!generated.is_empty());

    // files/crds is a byte-for-byte copy of crds/ (refreshed by charts/sync-from-config.sh).
    let copies_dir = chart_dir().join("files").join("crds");
    let mut copies: Vec<String> = std::fs::read_dir(&copies_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    copies.sort();
    let names: Vec<String> = generated
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        copies,
        names,
        "{} must hold exactly the CRD files of crds/; run `just crds` and charts/sync-from-config.sh",
        copies_dir.display()
    );
    for name in &names {
        let original = std::fs::read(crds_dir.join(name)).unwrap();
        let copy = std::fs::read(copies_dir.join(name)).unwrap();
        assert!(
            original == copy,
            "{} differs from crds/{name}; run `just crds` and charts/sync-from-config.sh",
            copies_dir.join(name).display()
        );
    }

    // What helm renders from them: the same CRDs plus labels and the keep policy.
    let docs = parse_docs(&render("pullwarden", "pullwarden-system", None).await).unwrap();
    let rendered = all_of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(rendered.len(), generated.len());
    for path in &generated {
        for original in read_docs(path) {
            let (_, name) = kind_name(&original);
            let ours = find(&docs, "CustomResourceDefinition", &name);
            assert_eq!(
                str_at(
                    ours,
                    &["metadata", "annotations", "helm.sh/resource-policy"]
                ),
                Some("keep"),
                "{name}: `helm uninstall` would delete every object of this kind"
            );
            assert_eq!(
                str_at(
                    ours,
                    &["metadata", "annotations", "argocd.argoproj.io/sync-options"]
                ),
                Some("Prune=false,Delete=false"),
                "{name}: deleting the Argo CD Application would delete every object of this kind"
            );
            assert_eq!(
                str_at(
                    ours,
                    &["metadata", "labels", "app.kubernetes.io/managed-by"]
                ),
                Some("Helm")
            );
            let mut stripped = ours.clone();
            let meta = stripped
                .get_mut("metadata")
                .and_then(Value::as_mapping_mut)
                .unwrap();
            meta.remove("labels");
            meta.remove("annotations");
            assert!(
                normalize_numbers(&stripped) == normalize_numbers(&original),
                "the rendered CRD {name} differs from {}",
                path.display()
            );
        }
    }

    // installCRDs=false renders none; keepCRDs=false drops the policy.
    let out = template(
        "pullwarden",
        "pullwarden-system",
        None,
        &["installCRDs=false"],
    )
    .await
    .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(
        all_of_kind(
            &parse_docs(&out.stdout).unwrap(),
            "CustomResourceDefinition"
        )
        .is_empty()
    );
    let out = template("pullwarden", "pullwarden-system", None, &["keepCRDs=false"])
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(!out.stdout.contains("helm.sh/resource-policy"));
    assert!(!out.stdout.contains("argocd.argoproj.io/sync-options"));
}

#[tokio::test]
async fn rbac_rules_are_identical_to_config_rbac() {
    let docs = parse_docs(&render("pullwarden", "pullwarden-system", None).await).unwrap();
    let rbac = repo_root().join("config").join("rbac");
    for (file, kind, name) in [
        ("cluster_role.yaml", "ClusterRole", "pullwarden-manager"),
        (
            "preview_workload_role.yaml",
            "ClusterRole",
            "pullwarden-preview-workload",
        ),
        (
            "leader_election_role.yaml",
            "Role",
            "pullwarden-leader-election",
        ),
    ] {
        let source = read_docs(&rbac.join(file));
        let expected = find(&source, kind, name);
        let ours = find(&docs, kind, name);
        let (want, got) = (at(expected, &["rules"]), at(ours, &["rules"]));
        assert!(want.is_some(), "config/rbac/{file} has no rules");
        assert!(
            want == got,
            "the chart's {kind} {name} rules differ from config/rbac/{file}; run charts/sync-from-config.sh\nchart:\n{}\nconfig:\n{}",
            serde_yaml::to_string(&got).unwrap(),
            serde_yaml::to_string(&want).unwrap()
        );
    }

    // The bindings grant them to the chart's ServiceAccount, and the fixed preview role name
    // (the only one the manager may bind) survives a different release name.
    let docs = parse_docs(&render("team-a", "team-a-system", None).await).unwrap();
    find(&docs, "ClusterRole", "pullwarden-preview-workload");
    let sa = find(&docs, "ServiceAccount", "team-a-pullwarden");
    assert_eq!(
        str_at(sa, &["metadata", "namespace"]),
        Some("team-a-system")
    );
    for (kind, name, role_kind) in [
        (
            "ClusterRoleBinding",
            "team-a-pullwarden-manager",
            "ClusterRole",
        ),
        ("RoleBinding", "team-a-pullwarden-leader-election", "Role"),
    ] {
        let binding = find(&docs, kind, name);
        assert_eq!(str_at(binding, &["roleRef", "kind"]), Some(role_kind));
        find(
            &docs,
            role_kind,
            str_at(binding, &["roleRef", "name"]).unwrap(),
        );
        let subjects = at(binding, &["subjects"])
            .and_then(Value::as_sequence)
            .unwrap();
        assert_eq!(subjects.len(), 1, "{kind} {name}");
        assert_eq!(str_at(&subjects[0], &["kind"]), Some("ServiceAccount"));
        assert_eq!(str_at(&subjects[0], &["name"]), Some("team-a-pullwarden"));
        assert_eq!(str_at(&subjects[0], &["namespace"]), Some("team-a-system"));
    }
}

#[tokio::test]
async fn deployment_has_the_hardening_of_config_manager() {
    let cluster = cluster::shared();
    let docs = parse_docs(&render("pullwarden", "pullwarden-system", None).await).unwrap();
    let ours = find(&docs, "Deployment", "pullwarden");
    let source = kustomize_default(cluster).await;
    let theirs = find(&source, "Deployment", "pullwarden");

    // The restricted profile, spelled out.
    let pod = at(ours, &["spec", "template", "spec"]).unwrap();
    assert_eq!(
        at(pod, &["securityContext", "runAsNonRoot"]),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        at(pod, &["securityContext", "runAsUser"]),
        Some(&Value::from(65532))
    );
    assert_eq!(
        at(pod, &["securityContext", "runAsGroup"]),
        Some(&Value::from(65532))
    );
    assert_eq!(
        str_at(pod, &["securityContext", "seccompProfile", "type"]),
        Some("RuntimeDefault")
    );
    let c = manager_container(ours);
    assert_eq!(
        at(c, &["securityContext", "allowPrivilegeEscalation"]),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        at(c, &["securityContext", "readOnlyRootFilesystem"]),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        at(c, &["securityContext", "capabilities", "drop"]),
        Some(&Value::Sequence(vec![Value::from("ALL")]))
    );
    assert_eq!(str_at(pod, &["serviceAccountName"]), Some("pullwarden"));

    // And everything else config/manager/deployment.yaml sets, field by field.
    let tc = manager_container(theirs);
    let their_pod = at(theirs, &["spec", "template", "spec"]).unwrap();
    assert_eq!(
        at(pod, &["securityContext"]),
        at(their_pod, &["securityContext"])
    );
    assert_eq!(at(pod, &["volumes"]), at(their_pod, &["volumes"]));
    for field in [
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "env",
        "volumeMounts",
        "resources",
    ] {
        assert!(
            at(c, &[field]) == at(tc, &[field]),
            "container {field} differs from config/manager/deployment.yaml:\nchart: {:?}\nconfig: {:?}",
            at(c, &[field]),
            at(tc, &[field])
        );
    }
    let ports = |c: &Value| -> Vec<(String, i64)> {
        at(c, &["ports"])
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .map(|p| {
                (
                    str_at(p, &["name"]).unwrap().to_owned(),
                    at(p, &["containerPort"]).and_then(Value::as_i64).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        ports(c),
        vec![("admin".into(), 8080), ("webhook".into(), 8081)]
    );
    assert_eq!(ports(c), ports(tc));
    assert_eq!(
        at(ours, &["spec", "replicas"]),
        at(theirs, &["spec", "replicas"])
    );
    let args = args_of(c);
    for arg in args_of(tc) {
        assert!(args.contains(&arg), "chart args {args:?} lack {arg}");
    }
    assert!(args.contains(&"--leader-election-namespace=pullwarden-system".to_owned()));
    assert_eq!(
        str_at(c, &["image"]),
        Some("ghcr.io/pullwarden/pullwarden:0.1.0"),
        "the image tag defaults to appVersion"
    );
}

#[tokio::test]
async fn manager_pod_passes_the_restricted_pod_security_standard() {
    let cluster = cluster::shared();
    let ns = TestNamespace::new(cluster, "chart-psa").await.unwrap();
    cluster
        .kubectl([
            "label",
            "namespace",
            ns.name(),
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .await
        .unwrap();
    // A Pod's ServiceAccount must exist for admission; only the Pod itself is a dry run.
    cluster
        .kubectl(["create", "serviceaccount", "pullwarden", "-n", ns.name()])
        .await
        .unwrap();
    let docs = parse_docs(&render("pullwarden", ns.name(), None).await).unwrap();
    let template = at(
        find(&docs, "Deployment", "pullwarden"),
        &["spec", "template"],
    )
    .unwrap();
    let pod = |spec: &Value| {
        serde_yaml::to_string(&serde_yaml::from_str::<Value>(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pullwarden-psa-check\n  namespace: {}\nspec: {}",
            ns.name(),
            serde_json::to_string(spec).unwrap()
        ))
        .unwrap())
        .unwrap()
    };
    let spec = at(template, &["spec"]).unwrap().clone();
    cluster
        .kubectl_with_stdin(["create", "--dry-run=server", "-f", "-"], &pod(&spec))
        .await
        .unwrap_or_else(|e| panic!("the manager Pod is refused under `restricted`: {e:#}"));

    // The control: the same Pod without the container's securityContext is refused, so the
    // check above is the admission plugin's verdict and not a no-op.
    let mut weakened = spec;
    for c in weakened
        .get_mut("containers")
        .and_then(Value::as_sequence_mut)
        .unwrap()
    {
        c.as_mapping_mut().unwrap().remove("securityContext");
    }
    let err = cluster
        .kubectl_with_stdin(["create", "--dry-run=server", "-f", "-"], &pod(&weakened))
        .await
        .expect_err("a Pod without securityContext must violate `restricted`");
    assert!(
        format!("{err:#}").contains("violates PodSecurity"),
        "unexpected error: {err:#}"
    );
}

#[tokio::test]
async fn non_default_values_render_as_asked_and_are_accepted_by_the_api_server() {
    let cluster = cluster::shared();
    let ns = TestNamespace::new(cluster, "chart-custom").await.unwrap();
    let yaml = render("team-shop", ns.name(), Some(NON_DEFAULT_VALUES)).await;
    let docs = parse_docs(&yaml).unwrap();
    let full = "team-shop-pullwarden";

    assert!(
        all_of_kind(&docs, "CustomResourceDefinition").is_empty(),
        "installCRDs=false still rendered CRDs"
    );
    // Namespace scope narrows what is watched, not the RBAC: previews create namespaces.
    assert_eq!(all_of_kind(&docs, "ClusterRole").len(), 2);
    find(&docs, "ClusterRoleBinding", &format!("{full}-manager"));

    let deployment = find(&docs, "Deployment", full);
    assert_eq!(at(deployment, &["spec", "replicas"]), Some(&Value::from(3)));
    let c = manager_container(deployment);
    assert_eq!(
        str_at(c, &["image"]),
        Some("registry.example.com/platform/pullwarden:0.1.0-rc.1")
    );
    assert_eq!(str_at(c, &["imagePullPolicy"]), Some("Always"));
    let args = args_of(c);
    for want in [
        "run".to_owned(),
        "--log-format=text".to_owned(),
        "--leader-elect".to_owned(),
        "--leader-election-id=pullwarden-team-shop".to_owned(),
        // The Lease stays where the Role for it is, not in the watched namespace.
        format!("--leader-election-namespace={}", ns.name()),
        "--namespace=team-shop".to_owned(),
        "--webhook-max-body-bytes=5242880".to_owned(),
        "--preview-domain=preview.example.com".to_owned(),
        "--preview-ingress-class=nginx".to_owned(),
        "--preview-ingress-annotations=nginx.ingress.kubernetes.io/proxy-body-size,example.com/*"
            .to_owned(),
        "--preview-service-types=NodePort".to_owned(),
        "--default-max-previews=5".to_owned(),
        "--allow-cross-host-api-url".to_owned(),
    ] {
        assert!(args.contains(&want), "args {args:?} lack {want}");
    }
    // The admission policies read the same settings.
    let params = find(&docs, "ConfigMap", &format!("{full}-admission"));
    for (key, want) in [
        ("previewDomain", "preview.example.com"),
        ("ingressClass", "nginx"),
        (
            "ingressAnnotations",
            "nginx.ingress.kubernetes.io/proxy-body-size,example.com/*",
        ),
        ("serviceTypes", "NodePort"),
        ("runtimeClasses", ""),
        (
            "operatorUsername",
            &format!("system:serviceaccount:{}:{full}", ns.name()),
        ),
    ] {
        assert_eq!(str_at(params, &["data", key]), Some(want), "{key}");
    }
    // Pullwarden's own NetworkPolicy: the two ports in, API server, DNS and forges out.
    let np = find(&docs, "NetworkPolicy", full);
    let ingress = at(np, &["spec", "ingress"])
        .and_then(Value::as_sequence)
        .unwrap();
    let ports: Vec<&str> = ingress
        .iter()
        .map(|r| str_at(&at(r, &["ports"]).unwrap()[0], &["port"]).unwrap())
        .collect();
    assert_eq!(ports, ["webhook", "admin"]);
    assert!(at(&ingress[0], &["from"]).is_some() && at(&ingress[1], &["from"]).is_none());
    let egress = at(np, &["spec", "egress"])
        .and_then(Value::as_sequence)
        .unwrap();
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert_eq!(
        str_at(&at(&egress[0], &["to"]).unwrap()[1], &["ipBlock", "cidr"]),
        Some("192.168.10.4/32")
    );
    let forges = at(&egress[2], &["to"])
        .and_then(Value::as_sequence)
        .unwrap();
    // `except` entries go only to the "anywhere" block of their own address family.
    let v6 = forges
        .iter()
        .find(|t| str_at(t, &["ipBlock", "cidr"]) == Some("::/0"))
        .unwrap();
    assert_eq!(
        at(v6, &["ipBlock", "except"]),
        Some(&Value::Sequence(vec![Value::from("fe80::/10")]))
    );
    let github = forges
        .iter()
        .find(|t| str_at(t, &["ipBlock", "cidr"]) == Some("140.82.112.0/20"))
        .unwrap();
    assert!(at(github, &["ipBlock", "except"]).is_none());
    assert!(
        at(c, &["env"])
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .any(|e| str_at(e, &["name"]) == Some("RUST_LOG"))
    );
    assert_eq!(str_at(c, &["resources", "limits", "memory"]), Some("1Gi"));
    let pod = at(deployment, &["spec", "template", "spec"]).unwrap();
    assert_eq!(
        str_at(pod, &["nodeSelector", "kubernetes.io/os"]),
        Some("linux")
    );
    assert_eq!(
        str_at(&at(pod, &["tolerations"]).unwrap()[0], &["key"]),
        Some("dedicated")
    );
    assert_eq!(
        str_at(
            deployment,
            &[
                "spec",
                "template",
                "metadata",
                "annotations",
                "example.com/team"
            ]
        ),
        Some("platform")
    );

    let webhook = find(&docs, "Service", &format!("{full}-webhook"));
    assert_eq!(str_at(webhook, &["spec", "type"]), Some("LoadBalancer"));
    assert_eq!(
        at(webhook, &["spec", "ports"]).unwrap()[0].get("port"),
        Some(&Value::from(8443))
    );

    // The Ingress exposes the webhook paths only, over TLS, through the webhook Service.
    let ingress = find(&docs, "Ingress", &format!("{full}-webhook"));
    assert_eq!(
        str_at(ingress, &["spec", "ingressClassName"]),
        Some("nginx")
    );
    let tls = &at(ingress, &["spec", "tls"]).unwrap()[0];
    assert_eq!(str_at(tls, &["secretName"]), Some("pullwarden-webhook-tls"));
    assert_eq!(
        at(tls, &["hosts"]),
        Some(&Value::Sequence(vec![Value::from(
            "pullwarden.example.com"
        )]))
    );
    let rule = &at(ingress, &["spec", "rules"]).unwrap()[0];
    assert_eq!(str_at(rule, &["host"]), Some("pullwarden.example.com"));
    let paths = at(rule, &["http", "paths"])
        .and_then(Value::as_sequence)
        .unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(str_at(&paths[0], &["path"]), Some("/hooks"));
    assert_eq!(str_at(&paths[0], &["pathType"]), Some("Prefix"));
    assert_eq!(
        str_at(&paths[0], &["backend", "service", "name"]),
        Some(format!("{full}-webhook").as_str())
    );
    assert_eq!(
        str_at(&paths[0], &["backend", "service", "port", "name"]),
        Some("webhook")
    );
    assert_eq!(
        str_at(
            ingress,
            &[
                "metadata",
                "annotations",
                "nginx.ingress.kubernetes.io/proxy-body-size"
            ]
        ),
        Some("10m")
    );

    // The ServiceMonitor selects the metrics Service (and only it) on its admin port.
    let monitor = find(&docs, "ServiceMonitor", full);
    assert_eq!(
        str_at(monitor, &["metadata", "labels", "release"]),
        Some("kube-prometheus-stack")
    );
    let endpoint = &at(monitor, &["spec", "endpoints"]).unwrap()[0];
    assert_eq!(str_at(endpoint, &["interval"]), Some("15s"));
    assert_eq!(str_at(endpoint, &["port"]), Some("admin"));
    assert_eq!(str_at(endpoint, &["path"]), Some("/metrics"));
    let selector = at(monitor, &["spec", "selector", "matchLabels"])
        .and_then(Value::as_mapping)
        .unwrap();
    let selects = |svc: &Value| {
        selector
            .iter()
            .all(|(k, v)| at(svc, &["metadata", "labels"]).and_then(|l| l.get(k)) == Some(v))
    };
    let services = all_of_kind(&docs, "Service");
    let selected: Vec<_> = services
        .iter()
        .filter(|s| selects(s))
        .map(|s| kind_name(s).1)
        .collect();
    assert_eq!(selected, vec![format!("{full}-metrics")]);
    let metrics = find(&docs, "Service", &format!("{full}-metrics"));
    assert!(
        at(metrics, &["spec", "ports"])
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .any(|p| str_at(p, &["name"]) == Some("admin"))
    );

    ensure_service_monitor_crd(cluster).await.unwrap();
    let applied = server_dry_run(cluster, &yaml).await.unwrap();
    assert_dry_run_covers(&applied, &docs);
}

#[tokio::test]
async fn values_schema_rejects_bad_values_and_accepts_good_ones() {
    // (bad --set, what helm's schema error must mention, a good value for the same key)
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["replicas=0"], &["/replicas", "minimum"], &["replicas=1"]),
        (&["logFormat=xml"], &["/logFormat"], &["logFormat=text"]),
        (
            &["image.pullPolicy=Sometimes"],
            &["/image/pullPolicy"],
            &["image.pullPolicy=Never"],
        ),
        (
            &["webhook.service.type=ExternalName"],
            &["/webhook/service/type"],
            &["webhook.service.type=NodePort"],
        ),
        (
            &["metrics.serviceMonitor.interval=30 seconds"],
            &["/metrics/serviceMonitor/interval"],
            &["metrics.serviceMonitor.interval=1m30s"],
        ),
        (
            &["namespaceScope=Team_Shop"],
            &["/namespaceScope"],
            &["namespaceScope=team-shop"],
        ),
        // More than one replica without leader election would run every controller twice.
        (
            &["replicas=2", "leaderElection.enabled=false"],
            &["/leaderElection/enabled"],
            &["replicas=1", "leaderElection.enabled=false"],
        ),
        // A typo is an error, not a silently ignored key.
        (&["replica=3"], &["replica"], &["replicas=3"]),
        (
            &["security.previewServiceTypes={ExternalName}"],
            &["/security/previewServiceTypes"],
            &["security.previewServiceTypes={LoadBalancer}"],
        ),
        (
            &["security.argocdProject=default"],
            &["/security/argocdProject"],
            &["security.argocdProject=previews"],
        ),
        (
            &["security.previewDomian=x.example.com"],
            &["previewDomian"],
            &["security.previewDomain=x.example.com"],
        ),
        (
            &["networkPolicy.enabled=true"],
            &["/networkPolicy/egress"],
            &[
                "networkPolicy.enabled=true",
                "networkPolicy.egress.apiServer.cidrs={10.0.0.1/32}",
            ],
        ),
        (
            &[
                "webhook.ingress.enabled=true",
                "webhook.ingress.tls.secretName=tls",
            ],
            &["/webhook/ingress/host"],
            &[
                "webhook.ingress.enabled=true",
                "webhook.ingress.tls.secretName=tls",
                "webhook.ingress.host=pw.example.com",
            ],
        ),
    ];
    for (bad, mentions, good) in cases {
        let out = template("pullwarden", "pullwarden-system", None, bad)
            .await
            .unwrap();
        assert!(!out.success, "--set {bad:?} was accepted");
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema"),
            "--set {bad:?} failed, but not by the schema:\n{}",
            out.stderr
        );
        for m in *mentions {
            assert!(
                out.stderr.contains(m),
                "--set {bad:?}: the error does not mention {m}:\n{}",
                out.stderr
            );
        }
        let out = template("pullwarden", "pullwarden-system", None, good)
            .await
            .unwrap();
        assert!(out.success, "--set {good:?} was refused:\n{}", out.stderr);
    }
}

/// Sanity of the harness itself: a render that the API server must refuse is refused, so the dry
/// runs above can fail.
#[tokio::test]
async fn server_dry_run_refuses_an_invalid_render() {
    let cluster = cluster::shared();
    let ns = TestNamespace::new(cluster, "chart-invalid").await.unwrap();
    let yaml = render("pullwarden", ns.name(), None).await;
    // A port the API server's validation refuses.
    let broken = yaml.replacen("containerPort: 8081", "containerPort: 80810", 1);
    assert_ne!(broken, yaml);
    match server_dry_run(cluster, &broken).await {
        Ok(applied) => panic!(
            "an invalid Deployment was accepted:\n{}",
            applied.join("\n")
        ),
        Err(e) => assert!(
            format!("{e:#}").contains("containerPort"),
            "the dry run failed for another reason: {e:#}"
        ),
    }
}

/// `security:` holds exactly the safety flags of `pullwarden run` (SafetyOptions), each named
/// like its flag; set, they render as flags that `pullwarden run` accepts and that build the
/// settings asked for; unset, none is rendered (the binary's defaults apply).
#[tokio::test]
async fn security_values_are_the_safety_flags() {
    use clap::{Args as _, Parser as _};
    let flags: BTreeSet<String> =
        pullwarden::settings::SafetyOptions::augment_args(clap::Command::new("run"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let keys: BTreeSet<String> = values["security"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| {
            // camelCase -> kebab-case, as the chart's `kebabcase` does.
            let mut out = String::new();
            for c in k.as_str().unwrap().chars() {
                if c.is_ascii_uppercase() {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        })
        .collect();
    assert_eq!(keys, flags, "security: keys vs SafetyOptions flags");

    let default_args = args_of(manager_container(find(
        &parse_docs(&render("pullwarden", "pullwarden-system", None).await).unwrap(),
        "Deployment",
        "pullwarden",
    )));
    for flag in &flags {
        assert!(
            !default_args
                .iter()
                .any(|a| a.starts_with(&format!("--{flag}"))),
            "--{flag} rendered without being set: {default_args:?}"
        );
    }

    let all = r#"
security:
  previewNamespacePrefix: "{{tenant}}-pv-"
  previewNamespaceDeny: [kube-*, prod-*]
  previewQuotaCeiling: [requests.cpu=2, pods=10]
  previewContainerMax: [cpu=1, memory=1Gi]
  defaultMaxPreviews: 3
  maxPreviewsPerNamespace: 7
  previewIngressNamespace: traefik
  previewEgressCidrs: [10.20.0.0/16]
  previewDomain: .Preview.Example.com
  previewIngressClass: traefik
  previewIngressAnnotations: [traefik.ingress.kubernetes.io/*]
  previewServiceTypes: [NodePort, LoadBalancer]
  previewRuntimeClasses: [gvisor]
  argocdNamespace: gitops
  argocdProject: previews
  argocdAllowedProjects: [team-previews]
  argocdDestinationServer: https://previews.example.com:6443
  clusterCidrs: [10.0.0.0/8, "fd00::/8"]
  outboundAllowCidrs: [192.168.5.0/24]
  allowCrossHostApiUrl: true
  gitFetchMaxBytes: 1048576
  gitFetchMaxObjects: 5000
  previewProbeAddress: "10.96.0.80:80"
  previewProbeScheme: http
  dnsServer: ["10.0.0.10:53"]
  healthProbeConcurrency: 32
  healthStatusInterval: 90s
"#;
    let args = args_of(manager_container(find(
        &parse_docs(&render("pullwarden", "pullwarden-system", Some(all)).await).unwrap(),
        "Deployment",
        "pullwarden",
    )));
    let security: Vec<String> = args
        .iter()
        .filter(|a| flags.iter().any(|f| a.starts_with(&format!("--{f}"))))
        .cloned()
        .collect();
    assert_eq!(
        security.len(),
        flags.len(),
        "one arg per flag: {security:?}"
    );
    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        opts: pullwarden::settings::SafetyOptions,
    }
    let parsed = Run::try_parse_from(std::iter::once("run".to_owned()).chain(security))
        .unwrap_or_else(|e| panic!("the rendered flags do not parse: {e}"))
        .opts;
    let s = pullwarden::settings::Settings::from_options(&parsed).unwrap();
    assert_eq!(s.previews.namespace_prefix, "{{tenant}}-pv-");
    assert_eq!(s.previews.namespace_deny, ["kube-*", "prod-*"]);
    assert_eq!(s.previews.quota_ceiling.len(), 2);
    assert_eq!(s.previews.max_previews_per_namespace, 7);
    assert_eq!(s.previews.domain.as_deref(), Some("preview.example.com"));
    assert_eq!(s.previews.ingress_class.as_deref(), Some("traefik"));
    assert_eq!(s.previews.service_types, ["NodePort", "LoadBalancer"]);
    assert_eq!(s.argocd.allowed_projects, ["team-previews"]);
    assert_eq!(s.network.cluster_cidrs.len(), 2);
    assert!(s.network.allow_cross_host_api_url);
    assert_eq!(s.network.git_fetch_max_bytes, 1_048_576);
    assert_eq!(s.network.dns_servers.len(), 1);
    assert_eq!(
        s.previews.probe_address,
        Some("10.96.0.80:80".parse().unwrap())
    );
    assert_eq!(s.previews.probe_scheme, "http");
    assert_eq!(s.health.probe_concurrency, 32);
    assert_eq!(s.health.status_interval, std::time::Duration::from_secs(90));
    assert_eq!(s.network.git_fetch_max_objects, 5000);
    // The admission params normalise the domain the same way.
    let docs = parse_docs(&render("pullwarden", "pullwarden-system", Some(all)).await).unwrap();
    let params = find(&docs, "ConfigMap", "pullwarden-admission");
    assert_eq!(
        str_at(params, &["data", "previewDomain"]),
        Some("preview.example.com")
    );
}

/// `webhook.limits` renders one `--webhook-*` flag per key set (none by default), and the
/// rendered flags parse into the values asked for.
#[tokio::test]
async fn webhook_limit_values_are_the_webhook_flags() {
    use clap::Parser as _;
    let default_args = args_of(manager_container(find(
        &parse_docs(&render("pullwarden", "pullwarden-system", None).await).unwrap(),
        "Deployment",
        "pullwarden",
    )));
    assert!(
        !default_args.iter().any(|a| a.starts_with("--webhook-")),
        "{default_args:?}"
    );
    let values = r#"
webhook:
  limits:
    maxBodyBytes: 524288
    headerReadTimeout: 5s
    bodyReadTimeout: 7s
    maxConnections: 100
    maxConnectionsPerAddress: 4
    maxInFlightRequests: 50
    maxInFlightBodyBytes: 8388608
    trustedProxyCidrs: [10.0.0.0/8]
    unauthenticatedBurst: 10
    unauthenticatedRate: 0.5
    maxCandidates: 4
    secretCacheTtl: 30s
"#;
    let args: Vec<String> = args_of(manager_container(find(
        &parse_docs(&render("pullwarden", "pullwarden-system", Some(values)).await).unwrap(),
        "Deployment",
        "pullwarden",
    )))
    .into_iter()
    .filter(|a| a.starts_with("--webhook-"))
    .collect();
    assert_eq!(args.len(), 12, "{args:?}");
    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        opts: pullwarden::webhook::WebhookOptions,
    }
    let o = Run::try_parse_from(std::iter::once("run".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("the rendered flags do not parse: {e}"))
        .opts;
    assert_eq!(o.webhook_max_body_bytes, 524_288);
    assert_eq!(
        o.webhook_header_read_timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(o.webhook_max_connections_per_address, 4);
    assert_eq!(o.webhook_trusted_proxy_cidrs.len(), 1);
    assert!((o.webhook_unauthenticated_rate - 0.5).abs() < 1e-9);
    assert_eq!(
        o.webhook_secret_cache_ttl,
        std::time::Duration::from_secs(30)
    );
}

/// The chart's admission policies are config/admission's verbatim; its bindings and params
/// equal config/admission's for the default release in pullwarden-system, and follow the
/// release otherwise.
#[tokio::test]
async fn admission_policies_are_identical_to_config_admission() {
    let docs = parse_docs(&render("pullwarden", "pullwarden-system", None).await).unwrap();
    let dir = repo_root().join("config").join("admission");
    let source = read_docs(&dir.join("policies.yaml"));
    assert_eq!(source.len(), 7);
    for policy in &source {
        let (kind, name) = kind_name(policy);
        let ours = find(&docs, &kind, &name);
        assert!(
            normalize_numbers(ours) == normalize_numbers(policy),
            "the chart's {kind} {name} differs from config/admission/policies.yaml; run charts/sync-from-config.sh"
        );
    }
    for binding in read_docs(&dir.join("bindings.yaml")) {
        let (kind, name) = kind_name(&binding);
        let ours = find(&docs, &kind, &name);
        assert_eq!(at(ours, &["spec"]), at(&binding, &["spec"]), "{name}");
    }
    let params = &read_docs(&dir.join("params.yaml"))[0];
    let ours = find(&docs, "ConfigMap", "pullwarden-admission");
    assert_eq!(at(ours, &["data"]), at(params, &["data"]));
    assert_eq!(
        str_at(ours, &["metadata", "namespace"]),
        str_at(params, &["metadata", "namespace"])
    );

    // Another release: params in its namespace, naming its ServiceAccount.
    let docs = parse_docs(&render("team-a", "team-a-system", None).await).unwrap();
    let binding = find(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "pullwarden-preview-owned",
    );
    assert_eq!(
        str_at(binding, &["spec", "paramRef", "name"]),
        Some("team-a-pullwarden-admission")
    );
    assert_eq!(
        str_at(binding, &["spec", "paramRef", "namespace"]),
        Some("team-a-system")
    );
    let params = find(&docs, "ConfigMap", "team-a-pullwarden-admission");
    assert_eq!(
        str_at(params, &["data", "operatorUsername"]),
        Some("system:serviceaccount:team-a-system:team-a-pullwarden")
    );
    // Off: none of it.
    let out = template(
        "pullwarden",
        "pullwarden-system",
        None,
        &["admissionPolicies.enabled=false"],
    )
    .await
    .unwrap();
    assert!(out.success, "{}", out.stderr);
    let docs = parse_docs(&out.stdout).unwrap();
    assert!(all_of_kind(&docs, "ValidatingAdmissionPolicy").is_empty());
    assert!(all_of_kind(&docs, "ValidatingAdmissionPolicyBinding").is_empty());
}
