//! The PolicyGate controller.
//!
//! Today it does what it can do truthfully: dereferences the selected Repositories and the
//! Plugins its rules use, validates every rule ([`crate::gate::validate_gate`]: globs, regexes,
//! the rule expression and the CEL of `cel`/`if`, a compile error being `Stalled` with reason
//! `InvalidExpression`) and reports counts. Evaluation of pull requests and the status write-back are not implemented yet; the
//! `Ready` condition says so (reason `EvaluationNotImplemented`) instead of pretending.

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{Outcome, Plugin, PolicyGate, PolicyGateStatus, Repository};
use crate::error::Error;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::Duration;

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<PolicyGate> {
    KindController::new(primary_controller::<PolicyGate>(&cctx.ctx), |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

async fn reconcile(gate: Arc<PolicyGate>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let namespace = gate.namespace().unwrap_or_default();

    // validate: a CEL or expression that does not compile is `InvalidExpression`, reported now
    // rather than when a pull request arrives.
    let plugins = crate::gate::validate_gate(&gate.spec).map_err(|e| match e.reason {
        crate::gate::validate::REASON_INVALID_EXPRESSION => Error::InvalidExpression(e.message),
        _ => Error::InvalidSpec(e.message),
    })?;

    // dereference
    let repository_count = match (&gate.spec.repository_ref, &gate.spec.repository_selector) {
        (Some(r), _) => {
            refs::repository(ctx, &namespace, &r.name).await?;
            1
        }
        (None, Some(selector)) => {
            let selector: Selector = selector
                .clone()
                .try_into()
                .map_err(|e| Error::InvalidSpec(format!("repositorySelector: {e}")))?;
            let api: Api<Repository> = Api::namespaced(ctx.client.clone(), &namespace);
            api.list_metadata(&ListParams::default().labels_from(&selector))
                .await?
                .items
                .len()
        }
        (None, None) => {
            return Err(Error::InvalidSpec(
                "set repositoryRef or repositorySelector".into(),
            ));
        }
    };
    let plugin_api: Api<Plugin> = Api::namespaced(ctx.client.clone(), &namespace);
    for name in plugins {
        let plugin = plugin_api
            .get_opt(&name)
            .await?
            .ok_or_else(|| Error::ReferenceNotFound {
                kind: "Plugin",
                namespace: namespace.clone(),
                name: name.clone(),
            })?;
        if plugin.spec.wasm.is_none() {
            return Err(Error::InvalidSpec(format!(
                "rule plugin {name:?} is not a wasm Plugin"
            )));
        }
    }

    let message = format!(
        "{} rules valid for {} repositories; evaluating pull requests and writing statuses is not implemented in this version, so no rule field (e.g. modifiedLines, signedCommits, previewHealthy, approvals.teams) has an effect and status.passedCount stays 0 (docs/status.md)",
        gate.spec.rules.len(),
        repository_count
    );
    let mut st = gate.status.clone().unwrap_or_default();
    st = PolicyGateStatus {
        common: status::common_status(
            gate.as_ref(),
            &Outcome::stalled("EvaluationNotImplemented", message),
        ),
        rule_count: u32::try_from(gate.spec.rules.len()).unwrap_or(u32::MAX),
        repository_count: u32::try_from(repository_count).unwrap_or(u32::MAX),
        ..st
    };
    status::apply_status(ctx, gate.as_ref(), "policygate", &st).await?;
    // Repositories matching a selector come and go; recount now and then.
    Ok(Action::requeue(Duration::from_secs(300)))
}
