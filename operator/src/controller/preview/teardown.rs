//! Teardown of a preview: on deletion (behind the finalizer `pullwarden.dev/preview-teardown`)
//! and on TTL expiry.
//!
//! The namespace is deleted only if its ownership labels say it is this preview's
//! ([`super::confine::teardown`]); Argo CD objects only if they carry this preview's UID. On
//! deletion the forge deployment is marked inactive and the sticky comment says so; a forge
//! error there is retried (the finalizer keeps the object until the forge answers), but a
//! Repository or credential that is gone means there is nothing left to report to.

use super::writeback::{Reporter, Say};
use super::{ControllerContext, confine};
use crate::api::{Delivery, PreviewEnvironment, Repository};
use crate::context::Context;
use crate::controller::{refs, status};
use crate::error::Error;
use crate::render::ReportState;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

/// Deletes what the preview created outside its object: the Argo CD Application and project,
/// then the namespace.
pub(super) async fn children(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_ns: &str,
) -> Result<(), Error> {
    if preview_ns.is_empty() {
        return Ok(());
    }
    if pe.spec.template.delivery == Delivery::Argocd {
        super::argocd::teardown(ctx, pe, preview_ns).await?;
    }
    if !confine::teardown(ctx, pe, preview_ns).await? {
        tracing::warn!(
            namespace = preview_ns,
            "namespace is not owned by this preview; left alone"
        );
    }
    Ok(())
}

/// Teardown on deletion; the finalizer is removed (by kube-runtime's `finalizer()`) only once
/// this succeeds. A failure is written to the status before it is retried.
pub(super) async fn cleanup(
    cctx: &ControllerContext,
    pe: &PreviewEnvironment,
) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let result = async {
        let status = cctx.previews.status_of(pe);
        let namespace = status.namespace.clone().unwrap_or_default();
        children(ctx, pe, &namespace).await?;
        if let Some(reported) = status.reported.as_ref() {
            mark_inactive(cctx, pe, reported, &namespace).await?;
        }
        cctx.previews.forget(pe, Some(&namespace));
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = &result {
        if let Err(write_err) = status::write_error_conditions(ctx, pe, err).await {
            tracing::warn!(preview = %pe.name_any(), error = %write_err, "could not write teardown status");
        }
        return Err(result.unwrap_err());
    }
    ctx.metrics
        .set_preview_phase(&crate::controller::object_key(pe), None);
    info!(preview = %pe.name_any(), "preview torn down");
    Ok(Action::await_change())
}

fn repository_of(cctx: &ControllerContext, pe: &PreviewEnvironment) -> Option<Repository> {
    let namespace = pe.namespace().unwrap_or_default();
    cctx.previews
        .repositories
        .get()?
        .get(&ObjectRef::new(&pe.spec.repository_ref.name).within(&namespace))
        .and_then(|g| g.0.as_ref().ok().cloned())
}

async fn mark_inactive(
    cctx: &ControllerContext,
    pe: &PreviewEnvironment,
    reported: &crate::api::ReportedState,
    preview_ns: &str,
) -> Result<(), Error> {
    let ctx = &cctx.ctx;
    // The Repository may be gone already (deleted with its previews): nothing to report to.
    let Some(repo) = repository_of(cctx, pe) else {
        return Ok(());
    };
    let coords = refs::coordinates(&repo.spec, &ctx.config.settings.network)?;
    let Ok((creds, ca)) = refs::credentials(ctx, &repo).await else {
        return Ok(());
    };
    let forge = ctx
        .forges
        .client(refs::forge_kind(&repo.spec), &coords, creds, ca)?;
    let preview = pe.name_any();
    let reporter = Reporter {
        forge: forge.as_ref(),
        preview: &preview,
        git_ref: pe.spec.branch.as_deref().unwrap_or_default(),
        namespace: preview_ns,
        pull_request: pe.spec.pull_request,
    };
    let say = Say {
        state: ReportState::Deleted,
        sha: &reported.sha,
        message: "preview deleted: the namespace was torn down",
        url: None,
        objects: &[],
        refusal: None,
    };
    reporter.say(Some(reported), &say).await.map_err(|e| {
        tracing::warn!(preview = %pe.name_any(), call = %e.call, "teardown write-back failed");
        Error::Forge(e.source)
    })?;
    Ok(())
}
