//! The PreviewEnvironment controller.
//!
//! Dereferences the Repository and validates the template. Deployment is not implemented yet;
//! `Ready` says so (reason `DeliveryNotImplemented`) and the phase stays `Pending`.

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{Outcome, PreviewEnvironment, PreviewEnvironmentStatus, PreviewPhase};
use crate::error::Error;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<PreviewEnvironment> {
    KindController::new(
        primary_controller::<PreviewEnvironment>(&cctx.ctx),
        |obj, cctx| Box::pin(reconcile_guarded(obj, cctx, reconcile)),
    )
}

async fn reconcile(
    pe: Arc<PreviewEnvironment>,
    cctx: Arc<ControllerContext>,
) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let namespace = pe.namespace().unwrap_or_default();
    super::repository::previews::validate_template(&pe.spec.template)
        .map_err(Error::InvalidSpec)?;
    refs::repository(ctx, &namespace, &pe.spec.repository_ref.name).await?;
    let st = PreviewEnvironmentStatus {
        common: status::common_status(
            pe.as_ref(),
            &Outcome::stalled(
                "DeliveryNotImplemented",
                "repository and template are valid; deploying previews is not implemented in this version",
            ),
        ),
        phase: PreviewPhase::Pending,
        ..pe.status.clone().unwrap_or_default()
    };
    status::apply_status(ctx, pe.as_ref(), "preview", &st).await?;
    Ok(Action::await_change())
}
