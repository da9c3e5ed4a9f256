//! Status writes shared by every controller.
//!
//! The full status is written with server-side apply (field manager
//! `pullwarden.dev/<controller>`), and only when it differs from what is stored: an unchanged
//! status costs no API write and produces no watch event. Error conditions are written with a
//! JSON merge patch of `conditions` + `observedGeneration` + `lastHandledReconcileAt` (and the
//! kind's [`PullwardenKind::status_on_error`] fields) alone, so a failed reconcile never wipes
//! the last good data (e.g. a Repository's pull requests during a forge outage) and still
//! acknowledges a requested reconcile.

use super::PullwardenKind;
use crate::api::{self, Outcome};
use crate::context::Context;
use crate::error::Error;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde::Serialize;
use serde_json::json;
use tracing::warn;

/// Server-side applies `status` on `obj` unless it is unchanged.
pub async fn apply_status<K, S>(
    ctx: &Context,
    obj: &K,
    component: &str,
    status: &S,
) -> Result<(), Error>
where
    K: PullwardenKind,
    S: Serialize,
{
    let new = serde_json::to_value(status)
        .map_err(|e| Error::Internal(format!("serialise status: {e}")))?;
    let current = serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .unwrap_or(serde_json::Value::Null);
    if current == new {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(&Context::field_manager(component)).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The conditions `obj` should carry after `err`.
pub fn error_conditions<K: PullwardenKind>(obj: &K, err: &Error) -> Vec<Condition> {
    let mut conditions = obj
        .common()
        .map(|c| c.conditions.clone())
        .unwrap_or_default();
    let outcome = if err.is_stalled() {
        Outcome::stalled(err.category(), err.to_string())
    } else {
        Outcome::progressing(err.category(), err.to_string())
    };
    api::apply_outcome(
        &mut conditions,
        &outcome,
        obj.meta().generation,
        jiff::Timestamp::now(),
    );
    conditions
}

/// The merge patch of a failed reconcile's status (pure): the conditions describing `err`,
/// `observedGeneration`, `lastHandledReconcileAt` and `extra`; `None` when nothing changed.
pub fn error_status_patch<K: PullwardenKind>(
    obj: &K,
    err: &Error,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Option<serde_json::Value> {
    let conditions = error_conditions(obj, err);
    let common = obj.common();
    let handled = super::requested_at(obj)
        .or_else(|| common.and_then(|c| c.last_handled_reconcile_at.clone()));
    let unchanged = extra.is_empty()
        && common.is_some_and(|c| {
            c.conditions == conditions
                && c.observed_generation == obj.meta().generation
                && c.last_handled_reconcile_at == handled
        });
    if unchanged {
        return None;
    }
    let mut status = extra;
    status.insert("conditions".into(), json!(conditions));
    status.insert("observedGeneration".into(), json!(obj.meta().generation));
    if let Some(handled) = handled {
        status.insert("lastHandledReconcileAt".into(), json!(handled));
    }
    Some(json!({ "status": status }))
}

/// Writes the error status of `err` ([`error_status_patch`], only when it changed).
pub async fn write_error_conditions<K: PullwardenKind>(
    ctx: &Context,
    obj: &K,
    err: &Error,
) -> Result<(), kube::Error> {
    let Some(patch) = error_status_patch(obj, err, obj.status_on_error(ctx)) else {
        return Ok(());
    };
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Reports an object that cannot be deserialized: a Stalled condition (written through the
/// dynamic API, which does not need the typed object) and a Warning event.
pub async fn report_invalid_object<K: PullwardenKind>(
    ctx: &Context,
    meta: &ObjectMeta,
    message: &str,
) {
    let (Some(name), Some(namespace)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return;
    };
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let mut conditions: Vec<Condition> = Vec::new();
    api::apply_outcome(
        &mut conditions,
        &Outcome::stalled("InvalidObject", message),
        meta.generation,
        jiff::Timestamp::now(),
    );
    let patch =
        json!({ "status": { "conditions": conditions, "observedGeneration": meta.generation } });
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(kind = K::KIND, namespace, name, error = %e, "could not write status of an unreadable object");
    }
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    };
    let mut note = message.to_owned();
    api::truncate_at_char_boundary(&mut note, 1024);
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidObject".into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(error = %e, "could not publish event");
    }
}

/// Builds the common part of a status for a successful reconcile.
pub fn common_status<K: PullwardenKind>(obj: &K, outcome: &Outcome) -> api::CommonStatus {
    let mut conditions = obj
        .common()
        .map(|c| c.conditions.clone())
        .unwrap_or_default();
    api::apply_outcome(
        &mut conditions,
        outcome,
        obj.meta().generation,
        jiff::Timestamp::now(),
    );
    api::CommonStatus {
        observed_generation: obj.meta().generation,
        conditions,
        last_handled_reconcile_at: super::requested_at(obj).or_else(|| {
            obj.common()
                .and_then(|c| c.last_handled_reconcile_at.clone())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RECONCILE_REQUESTED_AT, Repository};
    use crate::forge::ForgeError;

    fn repository(annotation: Option<&str>, handled: Option<&str>) -> Repository {
        let mut repo: Repository = serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "web", "namespace": "team", "generation": 3},
            "spec": {"provider": "github", "url": "https://github.com/team/web"},
        }))
        .unwrap();
        if let Some(a) = annotation {
            repo.metadata.annotations =
                Some([(RECONCILE_REQUESTED_AT.to_owned(), a.to_owned())].into());
        }
        repo.status = Some(crate::api::RepositoryStatus {
            common: api::CommonStatus {
                last_handled_reconcile_at: handled.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        });
        repo
    }

    fn outage() -> Error {
        Error::ForgeStale {
            source: ForgeError::Transient {
                message: "502".into(),
            },
            last_sync: "never".into(),
        }
    }

    #[test]
    fn a_failed_reconcile_still_acknowledges_the_requested_reconcile() {
        let repo = repository(Some("t-1"), None);
        let patch = error_status_patch(&repo, &outage(), serde_json::Map::new()).unwrap();
        assert_eq!(patch["status"]["lastHandledReconcileAt"], "t-1");
        assert_eq!(patch["status"]["observedGeneration"], 3);
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");

        // Written once: the same error with the request already acknowledged writes nothing.
        let mut written = repo.clone();
        let status = written.status.as_mut().unwrap();
        status.common.conditions = error_conditions(&repo, &outage());
        status.common.observed_generation = Some(3);
        status.common.last_handled_reconcile_at = Some("t-1".into());
        assert_eq!(
            error_status_patch(&written, &outage(), serde_json::Map::new()),
            None
        );
        // A new request is acknowledged again.
        written
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(RECONCILE_REQUESTED_AT.to_owned(), "t-2".into());
        let patch = error_status_patch(&written, &outage(), serde_json::Map::new()).unwrap();
        assert_eq!(patch["status"]["lastHandledReconcileAt"], "t-2");
        // And the kind's own fields are always written when given.
        written.metadata.annotations = None;
        let mut extra = serde_json::Map::new();
        extra.insert("lastEventTime".into(), json!("2026-01-01T00:00:00Z"));
        let patch = error_status_patch(&written, &outage(), extra).unwrap();
        assert_eq!(patch["status"]["lastEventTime"], "2026-01-01T00:00:00Z");
        assert_eq!(patch["status"]["lastHandledReconcileAt"], "t-1");
    }
}
