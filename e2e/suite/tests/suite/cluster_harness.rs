//! Proves the local control plane behaves like a real cluster (scheduler, kwok, the namespace and
//! garbage-collector controllers, CRDs, kubectl) and that the harness helpers report failures
//! usefully.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use pullwarden_harness::cluster::{
    self, TEST_NAMESPACE_LABEL, TestNamespace, apply_crds_from, wait_for, wait_until_gone,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn config_map(name: &str, owner: Option<&ConfigMap>) -> Result<ConfigMap> {
    let owner_refs = match owner {
        Some(o) => json!([{
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": o.metadata.name.as_deref().context("owner without name")?,
            "uid": o.metadata.uid.as_deref().context("owner without uid")?,
        }]),
        None => json!(null),
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "ownerReferences": owner_refs },
        "data": { "k": "v" },
    }))?)
}

/// A random lowercase hex suffix, so cluster-scoped objects never clash across runs on a reused
/// cluster.
fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

#[tokio::test]
async fn deployment_becomes_available_on_kwok_nodes() -> Result<()> {
    let cluster = cluster::shared();
    let client = cluster.client().await?;
    let ns = TestNamespace::new(cluster, "deployment").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                // kwok never pulls or runs images; the name only has to be valid.
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] },
            },
        },
    }))?;

    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    wait_for(
        &deployments,
        "web",
        TIMEOUT,
        "Deployment web to be Available with 3 ready replicas",
        |d: &Deployment| {
            let Some(status) = &d.status else {
                return false;
            };
            status.available_replicas == Some(3)
                && status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Available" && c.status == "True")
        },
    )
    .await?;
    eprintln!(
        "cluster_harness: 3-replica Deployment Available after {:.2}s",
        started.elapsed().as_secs_f64()
    );

    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let pods = pods.list(&ListParams::default().labels("app=web")).await?;
    ensure!(
        pods.items.len() == 3,
        "expected 3 pods, got {}",
        pods.items.len()
    );
    for pod in &pods.items {
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let status = pod.status.as_ref().context("pod without status")?;
        ensure!(
            spec.node_name
                .as_deref()
                .is_some_and(|n| n.starts_with("kwok-node-")),
            "pod {:?} not scheduled onto a kwok node: {:?}",
            pod.metadata.name,
            spec.node_name
        );
        ensure!(
            status.phase.as_deref() == Some("Running"),
            "pod {:?} is {:?}, not Running",
            pod.metadata.name,
            status.phase
        );
    }
    Ok(())
}

#[tokio::test]
async fn deleted_namespace_disappears_with_its_contents() -> Result<()> {
    let cluster = cluster::shared();
    let client = cluster.client().await?;
    let ns = TestNamespace::new(cluster, "ns-delete").await?;
    // Content forces the namespace controller to empty the namespace before the finalizer goes.
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &config_map("payload", None)?)
        .await?;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(ns.name(), &DeleteParams::default())
        .await?;
    wait_until_gone(
        &namespaces,
        ns.name(),
        TIMEOUT,
        "the deleted namespace to vanish",
    )
    .await
}

#[tokio::test]
async fn dropping_a_test_namespace_deletes_it() -> Result<()> {
    let cluster = cluster::shared();
    let namespaces: Api<Namespace> = Api::all(cluster.client().await?);
    let ns = TestNamespace::new(cluster, "Drop_Me").await?;
    let name = ns.name().to_owned();
    ensure!(
        name.starts_with("drop-me-"),
        "unexpected generated name {name}"
    );
    let created = namespaces.get(&name).await?;
    ensure!(
        created
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEST_NAMESPACE_LABEL))
            .map(String::as_str)
            == Some("true"),
        "test namespace {name} lacks the {TEST_NAMESPACE_LABEL} label"
    );
    drop(ns);
    wait_until_gone(
        &namespaces,
        &name,
        TIMEOUT,
        "the dropped test namespace to vanish",
    )
    .await
}

#[tokio::test]
async fn garbage_collector_deletes_owned_objects() -> Result<()> {
    let cluster = cluster::shared();
    let client = cluster.client().await?;
    let ns = TestNamespace::new(cluster, "gc").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let pp = PostParams::default();
    let owner = config_maps.create(&pp, &config_map("owner", None)?).await?;
    config_maps
        .create(&pp, &config_map("child", Some(&owner))?)
        .await?;
    config_maps
        .create(&pp, &config_map("bystander", None)?)
        .await?;

    config_maps
        .delete("owner", &DeleteParams::background())
        .await?;
    wait_until_gone(
        &config_maps,
        "child",
        TIMEOUT,
        "the garbage collector to delete the owned ConfigMap",
    )
    .await?;
    ensure!(
        config_maps.get_opt("bystander").await?.is_some(),
        "the garbage collector deleted a ConfigMap that had no owner"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_works_against_the_cluster() -> Result<()> {
    let cluster = cluster::shared();
    let nodes = cluster
        .kubectl([
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ])
        .await?;
    ensure!(
        nodes.lines().any(|l| l.ends_with(" True")),
        "no Ready node in `kubectl get nodes`:\n{nodes}"
    );

    let s = suffix();
    let (group, plural, kind) = (
        "e2e.pullwarden.dev",
        format!("gadgets{s}"),
        format!("Gadget{s}"),
    );
    let crd_name = format!("{plural}.{group}");
    let crd = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {crd_name}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: {plural}, singular: gadget{s}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              colour:
                type: string
                description: The gadget's colour, checked by the e2e harness.
"#
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("crd.yaml");
    std::fs::write(&file, crd)?;
    let result = async {
        cluster
            .kubectl([
                "apply".as_ref(),
                "-f".as_ref(),
                file.as_os_str(),
            ])
            .await?;
        cluster
            .kubectl([
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd_name}"),
                "--timeout=60s",
            ])
            .await?;
        let ns = TestNamespace::new(cluster, "kubectl").await?;
        let object = format!(
            "apiVersion: {group}/v1\nkind: {kind}\nmetadata: {{name: g1, namespace: {}}}\nspec: {{colour: teal}}\n",
            ns.name()
        );
        cluster.kubectl_with_stdin(["apply", "-f", "-"], &object).await?;
        let colour = cluster
            .kubectl([
                "get",
                &plural,
                "g1",
                "-n",
                ns.name(),
                "-o",
                "jsonpath={.spec.colour}",
            ])
            .await?;
        ensure!(colour == "teal", "kubectl read back colour {colour:?}");

        // The OpenAPI document lags the Established condition a little; retry for a while.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match cluster
                .kubectl(["explain", &format!("{plural}.spec.colour")])
                .await
            {
                Ok(out) if out.contains("checked by the e2e harness") => break,
                Ok(out) if Instant::now() >= deadline => {
                    anyhow::bail!("kubectl explain lacks the field's description:\n{out}")
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        Ok(())
    }
    .await;
    // Best-effort: a reused cluster should not collect test CRDs.
    let _ = cluster
        .kubectl(["delete", "crd", &crd_name, "--wait=false"])
        .await;
    result
}

#[tokio::test]
async fn apply_crds_applies_and_establishes_a_directory_of_crds() -> Result<()> {
    let cluster = cluster::shared();
    let client = cluster.client().await?;
    let s = suffix();
    let crd = |plural: &str, kind: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {{name: {plural}{s}.e2e.pullwarden.dev}}\n\
             spec:\n  group: e2e.pullwarden.dev\n  scope: Namespaced\n\
             \x20 names: {{plural: {plural}{s}, kind: {kind}{s}}}\n\
             \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n\
             \x20   schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        )
    };
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("a.yaml"),
        format!(
            "---\n{}---\n{}",
            crd("widgets", "Widget"),
            crd("sprockets", "Sprocket")
        ),
    )?;
    std::fs::write(dir.path().join("b.yml"), crd("gizmos", "Gizmo"))?;
    std::fs::write(dir.path().join("README.md"), "not a manifest")?;

    let names = apply_crds_from(&client, dir.path()).await?;
    let mut expected = vec![
        format!("widgets{s}.e2e.pullwarden.dev"),
        format!("sprockets{s}.e2e.pullwarden.dev"),
        format!("gizmos{s}.e2e.pullwarden.dev"),
    ];
    let mut got = names.clone();
    expected.sort();
    got.sort();
    ensure!(got == expected, "applied {got:?}, expected {expected:?}");

    // Established must mean served: creating a custom object works right away.
    let ns = TestNamespace::new(cluster, "apply-crds").await?;
    let gvk = GroupVersionKind::gvk("e2e.pullwarden.dev", "v1", &format!("Gizmo{s}"));
    let resource = ApiResource::from_gvk_with_plural(&gvk, &format!("gizmos{s}"));
    let gizmos: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    gizmos
        .create(
            &PostParams::default(),
            &DynamicObject::new("g1", &resource).data(json!({ "spec": { "size": 3 } })),
        )
        .await?;

    // Re-applying is idempotent.
    apply_crds_from(&client, dir.path()).await?;

    // A directory with something other than CRDs is refused rather than half-applied.
    std::fs::write(
        dir.path().join("c.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )?;
    let err = apply_crds_from(&client, dir.path())
        .await
        .expect_err("a ConfigMap among the CRDs must be rejected");
    ensure!(
        format!("{err:#}").contains("ConfigMap"),
        "unexpected error: {err:#}"
    );
    let empty = tempfile::tempdir()?;
    ensure!(
        apply_crds_from(&client, empty.path()).await.is_err(),
        "an empty CRD directory must be an error"
    );

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    for name in &names {
        let _ = crds.delete(name, &DeleteParams::default()).await;
    }
    Ok(())
}

#[tokio::test]
async fn wait_for_timeouts_explain_what_was_seen() -> Result<()> {
    let cluster = cluster::shared();
    let client = cluster.client().await?;
    let ns = TestNamespace::new(cluster, "wait-for").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, ns.name());

    let err = wait_for(
        &config_maps,
        "never-created",
        Duration::from_secs(1),
        "a ConfigMap nobody creates",
        |_| true,
    )
    .await
    .expect_err("waiting for a missing object must time out");
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("a ConfigMap nobody creates") && msg.contains("object never seen"),
        "unexpected error: {msg}"
    );

    config_maps
        .create(&PostParams::default(), &config_map("stubborn", None)?)
        .await?;
    let err = wait_for(
        &config_maps,
        "stubborn",
        Duration::from_secs(1),
        "stubborn to gain a key",
        |cm: &ConfigMap| cm.data.as_ref().is_some_and(|d| d.contains_key("other")),
    )
    .await
    .expect_err("the predicate never holds");
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("stubborn to gain a key")
            && msg.contains("name: stubborn")
            && msg.contains("k: v")
            && !msg.contains("managedFields"),
        "unexpected error: {msg}"
    );

    let err = wait_until_gone(
        &config_maps,
        "stubborn",
        Duration::from_secs(1),
        "stubborn to go",
    )
    .await
    .expect_err("nothing deletes it");
    ensure!(
        format!("{err:#}").contains("still there"),
        "unexpected error: {err:#}"
    );
    Ok(())
}
