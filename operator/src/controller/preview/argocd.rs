//! `delivery: argocd`: instead of applying manifests, Pullwarden creates an Argo CD
//! `Application` pinned to the head SHA with the preview namespace as destination, and derives
//! readiness from the Application's health and sync status.
//!
//! The Application lives in Argo CD's namespace, so it cannot carry an owner reference to the
//! preview; the preview's finalizer deletes it. No Argo CD resources finalizer is set: the preview
//! namespace (owned and deleted by Pullwarden) takes the deployed objects with it. Confinement in
//! this mode is Argo CD's: restrict the `project` (AppProject destinations and resource
//! allow-lists) accordingly.

use super::confine::OWNER_UID_LABEL;
use crate::api::{ArgoCdOptions, PreviewEnvironment};
use crate::context::Context;
use crate::error::Error;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    )
}

/// The Application's name: derived from the preview namespace (unique per preview).
pub fn application_name(preview_namespace: &str) -> String {
    format!("preview-{preview_namespace}")
}

/// Argo CD settings with defaults when the template sets none.
pub fn options(pe: &PreviewEnvironment) -> ArgoCdOptions {
    pe.spec.template.argocd.clone().unwrap_or_else(|| {
        serde_json::from_value(json!({})).expect("all ArgoCdOptions fields have defaults")
    })
}

/// The Application manifest (pure).
pub fn application_manifest(
    pe: &PreviewEnvironment,
    preview_namespace: &str,
    repo_url: &str,
    sha: &str,
) -> Value {
    let opts = options(pe);
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {
            "name": application_name(preview_namespace),
            "namespace": opts.namespace,
            "labels": {
                OWNER_UID_LABEL: pe.meta().uid.clone().unwrap_or_default(),
                "app.kubernetes.io/managed-by": "pullwarden",
            },
            "annotations": {"pullwarden.dev/preview": format!("{}/{}", pe.namespace().unwrap_or_default(), pe.name_any())},
        },
        "spec": {
            "project": opts.project,
            "source": {"repoURL": repo_url, "targetRevision": sha, "path": pe.spec.template.path},
            "destination": {"server": opts.destination_server, "namespace": preview_namespace},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    })
}

/// Where an Application stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppState {
    /// Synced to `sha` and Healthy.
    Ready,
    /// Still syncing or progressing (with what Argo CD says).
    Progressing(String),
    /// Degraded or failed to sync.
    Failed(String),
}

/// Reads readiness from an Application's status (pure).
pub fn app_state(app: &Value, sha: &str) -> AppState {
    let status = &app["status"];
    let health = status["health"]["status"].as_str().unwrap_or("Unknown");
    let sync = status["sync"]["status"].as_str().unwrap_or("Unknown");
    let revision = status["sync"]["revision"].as_str().unwrap_or_default();
    let phase = status["operationState"]["phase"]
        .as_str()
        .unwrap_or_default();
    if health == "Degraded" {
        let msg = status["health"]["message"]
            .as_str()
            .unwrap_or("Application is Degraded");
        return AppState::Failed(format!("Argo CD: {msg}"));
    }
    if matches!(phase, "Failed" | "Error") && revision == sha {
        let msg = status["operationState"]["message"]
            .as_str()
            .unwrap_or("sync failed");
        return AppState::Failed(format!("Argo CD sync {phase}: {msg}"));
    }
    if revision == sha && sync == "Synced" && health == "Healthy" {
        return AppState::Ready;
    }
    AppState::Progressing(format!(
        "Argo CD: sync {sync} at {}, health {health}",
        if revision.is_empty() { "?" } else { revision }
    ))
}

/// Creates or updates the Application; returns its current state.
pub async fn ensure(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_namespace: &str,
    repo_url: &str,
    sha: &str,
) -> Result<AppState, Error> {
    let manifest = application_manifest(pe, preview_namespace, repo_url, sha);
    let opts = options(pe);
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &opts.namespace, &resource());
    let name = application_name(preview_namespace);
    let params = PatchParams::apply(&Context::field_manager("preview")).force();
    let applied = match api.patch(&name, &params, &Patch::Apply(&manifest)).await {
        Ok(obj) => obj,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(Error::InvalidSpec(format!(
                "delivery argocd: the Argo CD Application API is not installed (or namespace {} is missing): {}",
                opts.namespace, s.message
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(app_state(
        &serde_json::to_value(&applied).unwrap_or_default(),
        sha,
    ))
}

/// Deletes the Application (if it is ours).
pub async fn teardown(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_namespace: &str,
) -> Result<(), Error> {
    let opts = options(pe);
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &opts.namespace, &resource());
    let name = application_name(preview_namespace);
    let Some(app) = (match api.get_opt(&name).await {
        Ok(a) => a,
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(e.into()),
    }) else {
        return Ok(());
    };
    let ours = app.labels().get(OWNER_UID_LABEL) == pe.meta().uid.as_ref();
    if ours {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_head_sha_synced_and_healthy() {
        let sha = "a".repeat(40);
        let app = |sync: &str, health: &str, rev: &str| json!({"status": {"sync": {"status": sync, "revision": rev}, "health": {"status": health}}});
        assert_eq!(
            app_state(&app("Synced", "Healthy", &sha), &sha),
            AppState::Ready
        );
        assert!(matches!(
            app_state(&app("Synced", "Healthy", "old"), &sha),
            AppState::Progressing(_)
        ));
        assert!(matches!(
            app_state(&app("OutOfSync", "Progressing", &sha), &sha),
            AppState::Progressing(_)
        ));
        assert!(matches!(
            app_state(&app("Synced", "Degraded", &sha), &sha),
            AppState::Failed(_)
        ));
        assert!(matches!(
            app_state(&json!({}), &sha),
            AppState::Progressing(_)
        ));
    }

    #[test]
    fn application_is_pinned_to_the_sha_and_the_preview_namespace() {
        let pe: PreviewEnvironment = serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": "web-pr-1", "namespace": "team", "uid": "u1"},
            "spec": {"repositoryRef": {"name": "web"}, "pullRequest": 1, "template": {"path": "deploy/preview", "delivery": "argocd"}}
        }))
        .unwrap();
        let m = application_manifest(
            &pe,
            "web-pr-1",
            "https://git.example.com/acme/web.git",
            "abc",
        );
        assert_eq!(m["spec"]["source"]["targetRevision"], "abc");
        assert_eq!(m["spec"]["source"]["path"], "deploy/preview");
        assert_eq!(m["spec"]["destination"]["namespace"], "web-pr-1");
        assert_eq!(m["metadata"]["namespace"], "argocd");
        assert_eq!(m["metadata"]["labels"][OWNER_UID_LABEL], "u1");
    }
}
