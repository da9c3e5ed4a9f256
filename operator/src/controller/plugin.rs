//! The Plugin controller.
//!
//! Today it dereferences every Secret and ConfigMap the plugin needs and reports its type.
//! Delivering events is not implemented yet; `Ready` says so (reason `DeliveryNotImplemented`).

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{Outcome, Plugin, PluginStatus};
use crate::error::Error;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<Plugin> {
    KindController::new(primary_controller::<Plugin>(&cctx.ctx), |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

async fn reconcile(plugin: Arc<Plugin>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let ns = plugin.namespace().unwrap_or_default();
    let spec = &plugin.spec;

    let type_ = if let Some(w) = &spec.webhook {
        crate::api::parse_duration("webhook.timeout", &w.timeout).map_err(Error::InvalidSpec)?;
        if let Some(r) = &w.url_secret_ref {
            let url = refs::secret_key(ctx, &ns, &r.name, &r.key).await?;
            let url = String::from_utf8(url).map_err(|_| Error::SecretInvalid {
                namespace: ns.clone(),
                name: r.name.clone(),
                problem: format!("key `{}` is not UTF-8", r.key),
            })?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Error::SecretInvalid {
                    namespace: ns.clone(),
                    name: r.name.clone(),
                    problem: format!("key `{}` does not hold an http(s) URL", r.key),
                });
            }
        }
        if let Some(r) = &w.secret_ref {
            refs::secret_key(ctx, &ns, &r.name, &r.key).await?;
        }
        "webhook"
    } else if let Some(s) = &spec.slack {
        refs::secret_key(
            ctx,
            &ns,
            &s.webhook_secret_ref.name,
            &s.webhook_secret_ref.key,
        )
        .await?;
        "slack"
    } else if let Some(w) = &spec.wasm {
        crate::api::parse_duration("wasm.limits.timeout", &w.limits.timeout)
            .map_err(Error::InvalidSpec)?;
        if let Some(cm) = &w.source.config_map_ref {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            let map = api
                .get_opt(&cm.name)
                .await?
                .ok_or_else(|| Error::ReferenceNotFound {
                    kind: "ConfigMap",
                    namespace: ns.clone(),
                    name: cm.name.clone(),
                })?;
            let present = map
                .binary_data
                .as_ref()
                .is_some_and(|d| d.contains_key(&cm.key))
                || map.data.as_ref().is_some_and(|d| d.contains_key(&cm.key));
            if !present {
                return Err(Error::InvalidSpec(format!(
                    "ConfigMap {} has no key `{}`",
                    cm.name, cm.key
                )));
            }
        }
        "wasm"
    } else {
        return Err(Error::InvalidSpec(
            "set exactly one of webhook, slack or wasm".into(),
        ));
    };

    let st = PluginStatus {
        common: status::common_status(
            plugin.as_ref(),
            &Outcome::stalled(
                "DeliveryNotImplemented",
                format!(
                    "{type_} plugin configuration is valid; delivering events is not implemented in this version (maxRetries and wasm.memoryMib have no effect, wasm.source.sha256 is not checked, status.deliveriesSucceeded/Failed/Pending stay 0 and status.lastDeliveryTime and lastError stay unset; docs/status.md)"
                ),
            ),
        ),
        type_: Some(type_.into()),
        ..plugin.status.clone().unwrap_or_default()
    };
    status::apply_status(ctx, plugin.as_ref(), "plugin", &st).await?;
    Ok(Action::await_change())
}
