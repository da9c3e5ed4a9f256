//! Where a probe goes, looked up when it runs (targets move: a preview gets its URL later or
//! sleeps, a Service's endpoints change). Reads come from the preview reflector store and, for
//! Services, from the API with a short cache per check; nothing here connects anywhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};

use super::plan::{CheckPlan, TargetPlan};
use crate::api::{PreviewEnvironment, PreviewPhase};
use crate::health::probe::{PinnedAddrs, ProbeKind, ProbeTarget};
use kube::core::DeserializeGuard;

/// What a lookup found.
#[derive(Clone, Debug)]
pub enum Resolved {
    Target(ProbeTarget),
    /// The target is not there (a `noData` probe), with why.
    NoData(String),
    /// The target itself is refused (an ExternalName Service).
    Refused(String),
}

/// The label the endpoint-slice controller puts on the slices it derives from a Service's
/// selector; slices without it were written by someone and get the full outbound guard.
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER_MANAGED: &str = "endpointslice-controller.k8s.io";

/// Pure: the URL for a probe of `kind` at `base` (a preview URL) with an optional HTTP path.
pub fn probe_url(
    kind: &ProbeKind,
    base: &url::Url,
    path: Option<&str>,
) -> Result<url::Url, String> {
    match kind {
        ProbeKind::Tcp => {
            let host = base.host_str().ok_or("the URL has no host")?;
            let port = base.port_or_known_default().ok_or("the URL has no port")?;
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            url::Url::parse(&format!("tcp://{host}:{port}")).map_err(|e| e.to_string())
        }
        _ => {
            let mut url = base.clone();
            if let Some(p) = path {
                url.set_path(p);
            }
            Ok(url)
        }
    }
}

/// How the operator reaches previews (`--preview-probe-address`, `--preview-probe-scheme`).
#[derive(Clone, Debug, Default)]
pub struct PreviewRoute {
    pub address: Option<SocketAddr>,
    pub plain_http: bool,
}

impl From<&crate::settings::PreviewSettings> for PreviewRoute {
    fn from(s: &crate::settings::PreviewSettings) -> Self {
        PreviewRoute {
            address: s.probe_address,
            plain_http: s.probe_scheme == "http",
        }
    }
}

/// The target of a preview from the store.
pub fn preview_target(
    store: Option<&Store<DeserializeGuard<PreviewEnvironment>>>,
    route: &PreviewRoute,
    namespace: &str,
    name: &str,
    plan: &CheckPlan,
    path: Option<&str>,
) -> Resolved {
    let Some(pe) = store
        .and_then(|s| s.get(&ObjectRef::new(name).within(namespace)))
        .and_then(|g| g.0.as_ref().ok().cloned())
    else {
        return Resolved::NoData(format!("PreviewEnvironment {name} not found"));
    };
    let status = pe.status.unwrap_or_default();
    if status.phase == PreviewPhase::Sleeping {
        return Resolved::NoData(format!("preview {name} is asleep"));
    }
    let Some(raw) = status.url else {
        return Resolved::NoData(format!("preview {name} has no URL yet"));
    };
    let base = url::Url::parse(&raw).map(|mut u| {
        if route.plain_http && u.scheme() == "https" {
            let _ = u.set_scheme("http");
        }
        u
    });
    match base
        .map_err(|e| e.to_string())
        .and_then(|base| probe_url(&plan.kind, &base, path))
    {
        Ok(url) => Resolved::Target(ProbeTarget {
            url,
            pinned: route.address.map(|a| PinnedAddrs {
                addrs: vec![a],
                cluster_exempt: true,
            }),
            ca_pem: plan.ca_pem.clone(),
        }),
        Err(e) => Resolved::NoData(format!("preview {name} URL {raw:?}: {e}")),
    }
}

/// Pure: the ready endpoint addresses of `slices` for Service port `port_name`, and whether all
/// of them come from the endpoint-slice controller.
pub fn endpoints(slices: &[EndpointSlice], port_name: Option<&str>) -> (Vec<SocketAddr>, bool) {
    let mut addrs = Vec::new();
    let mut all_managed = true;
    for slice in slices {
        let managed = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY))
            .is_some_and(|v| v == CONTROLLER_MANAGED);
        let Some(port) = slice.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref().unwrap_or("") == port_name.unwrap_or("")).then_some(p.port?)
        }) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    addrs.push(SocketAddr::new(ip, port));
                    all_managed &= managed;
                }
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    (addrs, all_managed)
}

/// The target of a Service: its ready endpoints (not its ClusterIP: the operator may run
/// where no kube-proxy routes), the Service's DNS name for Host and TLS.
pub async fn service_target(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port: u16,
    plan: &CheckPlan,
    path: Option<&str>,
) -> Result<Resolved, kube::Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let Some(svc) = services.get_opt(name).await? else {
        return Ok(Resolved::NoData(format!("Service {name} not found")));
    };
    let spec = svc.spec.unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Resolved::Refused(format!(
            "Service {name} is of type ExternalName; its target is a name its author chose, which is not probed (use target.url)"
        )));
    }
    let Some(svc_port) = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port))
    else {
        return Ok(Resolved::NoData(format!(
            "Service {name} has no port {port}"
        )));
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?;
    let (addrs, managed) = endpoints(&list.items, svc_port.name.as_deref());
    if addrs.is_empty() {
        return Ok(Resolved::NoData(format!(
            "Service {name} has no ready endpoint for port {port}"
        )));
    }
    let scheme = match plan.kind {
        ProbeKind::Tcp => "tcp",
        _ if plan.ca_pem.is_some() => "https",
        _ => "http",
    };
    let mut url = url::Url::parse(&format!("{scheme}://{name}.{namespace}.svc:{port}/"))
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    if scheme != "tcp"
        && let Some(p) = path
    {
        url.set_path(p);
    }
    Ok(Resolved::Target(ProbeTarget {
        url,
        pinned: Some(PinnedAddrs {
            addrs,
            cluster_exempt: managed,
        }),
        ca_pem: plan.ca_pem.clone(),
    }))
}

/// Resolves the target of `plan` (URL targets need no lookup).
pub async fn resolve(
    client: &kube::Client,
    previews: Option<&Store<DeserializeGuard<PreviewEnvironment>>>,
    route: &PreviewRoute,
    namespace: &str,
    plan: &Arc<CheckPlan>,
) -> Resolved {
    match &plan.target {
        TargetPlan::Url(url) => Resolved::Target(ProbeTarget {
            url: url.clone(),
            pinned: None,
            ca_pem: plan.ca_pem.clone(),
        }),
        TargetPlan::Preview { name, path } => {
            preview_target(previews, route, namespace, name, plan, path.as_deref())
        }
        TargetPlan::Service { name, port, path } => {
            match service_target(client, namespace, name, *port, plan, path.as_deref()).await {
                Ok(r) => r,
                Err(e) => Resolved::NoData(format!("cannot read Service {name}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::HttpCheck;

    fn slice(
        managed: bool,
        port_name: Option<&str>,
        eps: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        let mut labels = serde_json::json!({"kubernetes.io/service-name": "api"});
        if managed {
            labels[MANAGED_BY] = CONTROLLER_MANAGED.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-x", "labels": labels},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": 8080}],
            "endpoints": eps.iter().map(|(a, ready)| serde_json::json!({
                "addresses": [a], "conditions": {"ready": ready}
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_of_the_named_port() {
        let s = [
            slice(
                true,
                Some("http"),
                &[("10.1.0.5", Some(true)), ("10.1.0.6", Some(false))],
            ),
            slice(true, Some("metrics"), &[("10.1.0.7", None)]),
        ];
        let (addrs, managed) = endpoints(&s, Some("http"));
        assert_eq!(addrs, vec!["10.1.0.5:8080".parse().unwrap()]);
        assert!(managed);
        // A hand-written slice makes the set unmanaged: the full guard applies.
        let s = [
            slice(true, None, &[("10.1.0.5", None)]),
            slice(false, None, &[("10.96.0.1", None)]),
        ];
        let (addrs, managed) = endpoints(&s, None);
        assert_eq!(addrs.len(), 2);
        assert!(!managed);
    }

    #[test]
    fn probe_urls_per_kind() {
        let base: url::Url = "https://pr-7.preview.example.com/app".parse().unwrap();
        assert_eq!(
            probe_url(&ProbeKind::Tcp, &base, Some("/x"))
                .unwrap()
                .as_str(),
            "tcp://pr-7.preview.example.com:443"
        );
        let http = ProbeKind::Http(HttpCheck {
            method: crate::api::HttpMethod::Get,
            headers: vec![],
            secret_headers: vec![],
            expect_status: vec![(200, 299)],
            body_contains: None,
            max_latency: None,
        });
        assert_eq!(
            probe_url(&http, &base, Some("/healthz")).unwrap().as_str(),
            "https://pr-7.preview.example.com/healthz"
        );
        assert_eq!(probe_url(&http, &base, None).unwrap(), base);
    }
}
