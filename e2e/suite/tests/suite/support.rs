//! Shared set-up for the operator scenarios: emulator repositories, Secrets, Repository objects
//! and condition predicates.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pullwarden::api::{HasCommonStatus, PreviewEnvironment, PreviewPhase};
use pullwarden_emulator::{EmulatorHandle, Forge as EmuForge, PushSpec, RepoInfo, RepoSpec};
use pullwarden_harness::cluster::Cluster;
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};

pub const FIELD_MANAGER: &str = "pullwarden.dev/e2e";

/// An operator process watching only namespace `ns`, once it reports ready (watches synced).
pub async fn operator_for(cluster: &Cluster, ns: &str) -> Operator {
    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    op.wait_ready(std::time::Duration::from_secs(90))
        .await
        .unwrap();
    op
}

pub fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// The object's Ready condition has this status and reason.
pub fn has_reason<K: HasCommonStatus>(obj: &K, status: &str, reason: &str) -> bool {
    obj.common()
        .and_then(|c| ready(&c.conditions))
        .is_some_and(|c| c.status == status && c.reason == reason)
}

/// The Ready condition's message ("" when absent).
pub fn ready_message<K: HasCommonStatus>(obj: &K) -> String {
    obj.common()
        .and_then(|c| ready(&c.conditions))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A file map for a push.
pub fn files(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(p, c)| (p.to_string(), Some(c.to_string())))
        .collect()
}

/// A GitHub repository in the emulator with a `main` branch holding `main_files`.
pub async fn github_repo(
    emu: &EmulatorHandle,
    path: &str,
    main_files: &[(&str, &str)],
) -> RepoInfo {
    forge_repo(emu, EmuForge::Github, path, main_files).await
}

/// A private repository on `forge` in the emulator with a `main` branch holding `main_files`.
pub async fn forge_repo(
    emu: &EmulatorHandle,
    forge: EmuForge,
    path: &str,
    main_files: &[(&str, &str)],
) -> RepoInfo {
    let info = emu
        .create_repo(RepoSpec {
            forge,
            path: path.into(),
            private: true,
            ..Default::default()
        })
        .await
        .unwrap();
    emu.push(
        path,
        PushSpec {
            branch: "main".into(),
            files: files(main_files),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    info
}

/// A fresh emulator knowing `token`, with a private GitHub repository `acme/<name>` holding the
/// preview app under `deploy/preview` on `main` and a `feature` branch: the starting point of
/// every preview scenario.
pub async fn preview_app_repo(name: &str, token: &str) -> (EmulatorHandle, RepoInfo) {
    preview_app_repo_on(EmuForge::Github, &format!("acme/{name}"), token).await
}

/// [`preview_app_repo`] on any forge face, at `path` (GitLab paths may nest groups).
pub async fn preview_app_repo_on(
    forge: EmuForge,
    path: &str,
    token: &str,
) -> (EmulatorHandle, RepoInfo) {
    let emu = pullwarden_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    emu.token(token, "pullwarden-bot").await.unwrap();
    let info = emu
        .create_repo(RepoSpec {
            forge,
            path: path.to_owned(),
            private: true,
            ..Default::default()
        })
        .await
        .unwrap();
    emu.push(
        path,
        PushSpec {
            branch: "main".into(),
            files: preview_app("deploy/preview"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    emu.create_branch(path, "feature", Some("main"))
        .await
        .unwrap();
    (emu, info)
}

/// Creates (or replaces) an Opaque Secret that opts in as a Pullwarden credential (label
/// `pullwarden.dev/credentials: "true"`; without it the operator refuses to use it).
pub async fn secret(client: &kube::Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let string_data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"pullwarden.dev/credentials": "true"}},
        "stringData": string_data,
    }))
    .unwrap();
    if api.create(&PostParams::default(), &s).await.is_err() {
        api.replace(name, &PostParams::default(), &s).await.unwrap();
    }
}

/// A Repository manifest following an emulator repository; `extra` is merged into `spec`.
pub fn repository(
    name: &str,
    emu: &EmulatorHandle,
    repo: &RepoInfo,
    token_secret: &str,
    extra: Value,
) -> Value {
    let mut spec = json!({
        "provider": "github",
        "url": repo.clone_url,
        "apiUrl": emu.github_api_url(),
        "allowInsecureHTTP": true,
        "auth": {"secretRef": {"name": token_secret}},
    });
    if let (Some(base), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": name}, "spec": spec})
}

/// Server-side applies a manifest with the test field manager.
pub async fn apply<K>(api: &Api<K>, name: &str, manifest: &Value) -> K
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap()
}

/// Asks for an immediate reconcile through the annotation.
pub async fn request_reconcile<K>(api: &Api<K>, name: &str, token: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch =
        json!({"metadata": {"annotations": {"pullwarden.dev/reconcile-requested-at": token}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The realistic ten-object preview app as files under `prefix` for a push.
pub fn preview_app(prefix: &str) -> std::collections::BTreeMap<String, Option<String>> {
    pullwarden_harness::fixtures::preview_app(prefix).expect("the preview app fixture is readable")
}

/// The preview section of a Repository spec using the fixture app.
pub fn preview_spec(extra: Value) -> Value {
    let mut spec = json!({
        "path": "deploy/preview",
        "host": "pr-{{number}}.{{repo}}.preview.test",
        "vars": {"image": "registry.test/acme/shop"},
    });
    if let (Some(base), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// The preview's phase (None before its first status write).
pub fn phase(p: &PreviewEnvironment) -> Option<PreviewPhase> {
    p.status.as_ref().map(|s| s.phase)
}

/// Waits (up to two minutes) until the preview is Ready with `sha` deployed.
pub async fn wait_ready(
    api: &Api<PreviewEnvironment>,
    name: &str,
    sha: &str,
) -> PreviewEnvironment {
    pullwarden_harness::cluster::wait_for(
        api,
        name,
        std::time::Duration::from_secs(120),
        &format!("preview Ready at {sha}"),
        |p: &PreviewEnvironment| {
            phase(p) == Some(PreviewPhase::Ready)
                && p.status.as_ref().and_then(|s| s.deployed_sha.as_deref()) == Some(sha)
        },
    )
    .await
    .unwrap()
}

/// A fresh RSA key pair for a GitHub App (private PEM, public PEM), made with `openssl` in `dir`.
pub fn rsa_keypair(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("app.pem");
    let public = dir.join("app.pub.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl genrsa");
    assert!(ok.status.success(), "openssl genrsa failed");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("openssl rsa");
    assert!(ok.status.success(), "openssl rsa -pubout failed");
    (
        std::fs::read_to_string(key).expect("key"),
        std::fs::read_to_string(public).expect("pub"),
    )
}
