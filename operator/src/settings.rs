//! Operator-level safety settings: what the *operator* (the cluster admin who installs
//! Pullwarden) decides and a tenant (anyone who may write Pullwarden objects in one namespace)
//! cannot change. Every field is a `pullwarden run` flag (and an environment variable) and a
//! Helm chart value under `security:` (`charts/pullwarden/values.yaml`); docs/security.md says
//! which wall each one belongs to.
//!
//! Tenant spec never overrides these: where a spec field overlaps (e.g. `template.quota`,
//! `template.argocd.project`), the spec is checked against or intersected with the setting.

use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::Duration;

/// All operator-level safety settings, shared through [`crate::context::Config::settings`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub previews: PreviewSettings,
    pub argocd: ArgoCdSettings,
    pub network: NetworkSettings,
    pub health: HealthSettings,
}

/// The flags of `pullwarden run` that build [`Settings`].
#[derive(Clone, Debug, clap::Args)]
pub struct SafetyOptions {
    // --- Preview namespaces -------------------------------------------------------------
    /// Every preview namespace name must start with this prefix; `{{tenant}}` is the namespace
    /// of the PreviewEnvironment. A template rendering another name is refused.
    #[arg(
        long,
        default_value = "{{tenant}}-",
        env = "PULLWARDEN_PREVIEW_NAMESPACE_PREFIX"
    )]
    pub preview_namespace_prefix: String,
    /// Preview namespace names (globs) that are never used, whatever the prefix allows.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kube-*,default,pullwarden-system,argocd,flux-system,cert-manager,ingress-nginx,monitoring,istio-system,linkerd,openshift-*",
        env = "PULLWARDEN_PREVIEW_NAMESPACE_DENY"
    )]
    pub preview_namespace_deny: Vec<String>,
    /// Ceiling on every preview namespace's ResourceQuota (`resource=quantity`, comma
    /// separated). A tenant's `template.quota.resourceQuota.hard` is intersected with it: a
    /// missing resource gets the ceiling, a larger one is lowered to it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "requests.cpu=4,limits.cpu=8,requests.memory=8Gi,limits.memory=16Gi,requests.ephemeral-storage=10Gi,limits.ephemeral-storage=20Gi,requests.storage=20Gi,persistentvolumeclaims=5,pods=30,services=15,services.loadbalancers=0,services.nodeports=0,configmaps=50,secrets=50,count/deployments.apps=20,count/statefulsets.apps=10,count/jobs.batch=20,count/cronjobs.batch=10,count/ingresses.networking.k8s.io=10,count/serviceaccounts=20",
        env = "PULLWARDEN_PREVIEW_QUOTA_CEILING"
    )]
    pub preview_quota_ceiling: Vec<String>,
    /// Largest per-container limits a preview's LimitRange allows (`resource=quantity`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cpu=2,memory=4Gi,ephemeral-storage=4Gi",
        env = "PULLWARDEN_PREVIEW_CONTAINER_MAX"
    )]
    pub preview_container_max: Vec<String>,
    /// `maxPreviews` of a Repository whose template sets none (and the largest one allowed).
    #[arg(long, default_value_t = 20, env = "PULLWARDEN_DEFAULT_MAX_PREVIEWS")]
    pub default_max_previews: u32,
    /// Most PreviewEnvironments one tenant namespace may have (generated or by hand).
    #[arg(
        long,
        default_value_t = 50,
        env = "PULLWARDEN_MAX_PREVIEWS_PER_NAMESPACE"
    )]
    pub max_previews_per_namespace: u32,

    // --- Preview traffic ------------------------------------------------------------------
    /// Namespace of the ingress controller: the only source of ingress traffic the default-deny
    /// NetworkPolicy of a preview namespace admits (besides pods of the same namespace).
    #[arg(
        long,
        default_value = "ingress-nginx",
        env = "PULLWARDEN_PREVIEW_INGRESS_NAMESPACE"
    )]
    pub preview_ingress_namespace: String,
    /// CIDRs preview pods may open connections to (besides DNS and their own namespace).
    #[arg(long, value_delimiter = ',', env = "PULLWARDEN_PREVIEW_EGRESS_CIDRS")]
    pub preview_egress_cidrs: Vec<IpNet>,
    /// Ingress hosts must equal the preview's rendered `host` or sit under this domain
    /// (`pr-7.preview.example.com` under `preview.example.com`). Empty: only the rendered host.
    #[arg(long, env = "PULLWARDEN_PREVIEW_DOMAIN")]
    pub preview_domain: Option<String>,
    /// IngressClass every preview Ingress is forced to (empty: the class field must be absent,
    /// so the cluster default applies).
    #[arg(long, env = "PULLWARDEN_PREVIEW_INGRESS_CLASS")]
    pub preview_ingress_class: Option<String>,
    /// Ingress annotation keys (exact, or a prefix ending in `*`) a preview may set. Empty by
    /// default: annotations configure the ingress controller (snippets, auth bypass, cert-manager
    /// issuers), so none passes unless the operator says so.
    #[arg(
        long,
        value_delimiter = ',',
        env = "PULLWARDEN_PREVIEW_INGRESS_ANNOTATIONS"
    )]
    pub preview_ingress_annotations: Vec<String>,
    /// Service types besides ClusterIP a preview may use (`NodePort`, `LoadBalancer`).
    /// `ExternalName` and `externalIPs` are never allowed.
    #[arg(long, value_delimiter = ',', env = "PULLWARDEN_PREVIEW_SERVICE_TYPES")]
    pub preview_service_types: Vec<String>,
    /// `runtimeClassName`s a preview pod may request (empty: the field must be absent).
    #[arg(
        long,
        value_delimiter = ',',
        env = "PULLWARDEN_PREVIEW_RUNTIME_CLASSES"
    )]
    pub preview_runtime_classes: Vec<String>,
    /// Preview health probes (`template.healthCheck`) connect to this address — the ingress
    /// controller's Service or load balancer — instead of resolving the preview host, which is
    /// still sent as Host and TLS server name. For clusters where the operator cannot resolve or
    /// reach the public preview host (split-horizon DNS, no hairpin NAT). The outbound guard
    /// still checks it, except for `--cluster-cidrs` (the operator chose it, not a tenant).
    #[arg(long, env = "PULLWARDEN_PREVIEW_PROBE_ADDRESS")]
    pub preview_probe_address: Option<std::net::SocketAddr>,
    /// Scheme of preview health probes: `https` (the preview URL as written) or `http` for
    /// ingress controllers that serve previews without TLS (local clusters).
    #[arg(long, default_value = "https", value_parser = ["https", "http"], env = "PULLWARDEN_PREVIEW_PROBE_SCHEME")]
    pub preview_probe_scheme: String,

    // --- Argo CD delivery -----------------------------------------------------------------
    /// Namespace where Argo CD watches Applications (and AppProjects).
    #[arg(long, default_value = "argocd", env = "PULLWARDEN_ARGOCD_NAMESPACE")]
    pub argocd_namespace: String,
    /// The AppProject Pullwarden manages for previews, one per preview named
    /// `<this>-<preview namespace>` (destination = the preview namespace only, sourceRepos = the
    /// Repository URL, no cluster-scoped kinds, namespaced kinds = the manifests allow-list). A
    /// template naming no project (or this one) gets it.
    #[arg(
        long,
        default_value = "pullwarden-previews",
        env = "PULLWARDEN_ARGOCD_PROJECT"
    )]
    pub argocd_project: String,
    /// Extra AppProjects (managed by the operator, not by Pullwarden) a template may name in
    /// `template.argocd.project`. `default` is always refused.
    #[arg(
        long,
        value_delimiter = ',',
        env = "PULLWARDEN_ARGOCD_ALLOWED_PROJECTS"
    )]
    pub argocd_allowed_projects: Vec<String>,
    /// Destination cluster of every preview Application.
    #[arg(
        long,
        default_value = "https://kubernetes.default.svc",
        env = "PULLWARDEN_ARGOCD_DESTINATION_SERVER"
    )]
    pub argocd_destination_server: String,

    // --- Outbound traffic (forge API, git) ------------------------------------------------
    /// CIDRs of the cluster (pods, services, nodes): forge and git traffic to them is refused.
    #[arg(long, value_delimiter = ',', env = "PULLWARDEN_CLUSTER_CIDRS")]
    pub cluster_cidrs: Vec<IpNet>,
    /// CIDRs exempt from the outbound guard (e.g. a self-hosted GitLab on a private range, or
    /// 127.0.0.0/8 for a forge on loopback in development). Link-local/metadata addresses stay
    /// refused unless listed here explicitly.
    #[arg(long, value_delimiter = ',', env = "PULLWARDEN_OUTBOUND_ALLOW_CIDRS")]
    pub outbound_allow_cidrs: Vec<IpNet>,
    /// Allow a Repository's `apiUrl` on a different host than its `url`.
    #[arg(long, env = "PULLWARDEN_ALLOW_CROSS_HOST_API_URL")]
    pub allow_cross_host_api_url: bool,
    /// Most bytes one git fetch of a preview template may receive (checked while receiving).
    #[arg(long, default_value_t = 256 * 1024 * 1024, env = "PULLWARDEN_GIT_FETCH_MAX_BYTES")]
    pub git_fetch_max_bytes: u64,
    /// Most objects one git fetch of a preview template may bring (checked while receiving).
    #[arg(
        long,
        default_value_t = 200_000,
        env = "PULLWARDEN_GIT_FETCH_MAX_OBJECTS"
    )]
    pub git_fetch_max_objects: usize,

    /// DNS servers (`ip:port`, comma separated or repeated) the outbound guard resolves every
    /// name through (forge APIs, git, HealthCheck probes), for air-gapped clusters and tests;
    /// default: the system resolver.
    #[arg(
        long = "dns-server",
        value_delimiter = ',',
        env = "PULLWARDEN_DNS_SERVERS"
    )]
    pub dns_servers: Vec<SocketAddr>,

    // --- HealthCheck probing --------------------------------------------------------------
    /// Most HealthCheck probes in flight at once, over every check (the rest wait their turn;
    /// their start delay is `pullwarden_probe_start_delay_seconds`).
    #[arg(
        long,
        default_value_t = 256,
        env = "PULLWARDEN_HEALTH_PROBE_CONCURRENCY"
    )]
    pub health_probe_concurrency: usize,
    /// How often a HealthCheck's figures (counts, last probe, availability, latency) are
    /// written to its status when its state did not change. A state change is written at once.
    #[arg(
        long,
        default_value = "5m",
        value_parser = parse_flag_duration,
        env = "PULLWARDEN_HEALTH_STATUS_INTERVAL"
    )]
    pub health_status_interval: Duration,
}

/// `30s`, `5m`, `1h`, as in CRD durations.
fn parse_flag_duration(s: &str) -> Result<Duration, String> {
    let d: crate::api::Duration = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    crate::api::parse_duration("duration", &d)
}

impl Default for SafetyOptions {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            opts: SafetyOptions,
        }
        <Wrapper as clap::Parser>::parse_from(["pullwarden"]).opts
    }
}

/// Preview namespace, quota and traffic settings.
#[derive(Clone, Debug)]
pub struct PreviewSettings {
    /// Template of the enforced name prefix (`{{tenant}}` = the preview's namespace).
    pub namespace_prefix: String,
    pub namespace_deny: Vec<String>,
    /// `(resource, quantity)` pairs.
    pub quota_ceiling: Vec<(String, String)>,
    pub container_max: Vec<(String, String)>,
    pub default_max_previews: u32,
    pub max_previews_per_namespace: u32,
    pub ingress_namespace: String,
    pub egress_cidrs: Vec<IpNet>,
    pub domain: Option<String>,
    pub ingress_class: Option<String>,
    pub ingress_annotations: Vec<String>,
    pub service_types: Vec<String>,
    pub runtime_classes: Vec<String>,
    pub probe_address: Option<std::net::SocketAddr>,
    pub probe_scheme: String,
}

/// Argo CD delivery settings.
#[derive(Clone, Debug)]
pub struct ArgoCdSettings {
    pub namespace: String,
    pub project: String,
    pub allowed_projects: Vec<String>,
    pub destination_server: String,
}

/// HealthCheck probing settings.
#[derive(Clone, Debug)]
pub struct HealthSettings {
    pub probe_concurrency: usize,
    pub status_interval: Duration,
}

/// Outbound (forge API and git) guard settings.
#[derive(Clone, Debug)]
pub struct NetworkSettings {
    pub cluster_cidrs: Vec<IpNet>,
    pub allow_cidrs: Vec<IpNet>,
    pub allow_cross_host_api_url: bool,
    /// Caps on one git fetch (bytes received, objects), checked while fetching.
    pub git_fetch_max_bytes: u64,
    pub git_fetch_max_objects: usize,
    /// `--dns-server`; empty: the system resolver.
    pub dns_servers: Vec<SocketAddr>,
    /// How long a resolved address is trusted (the guard resolves once per connection anyway).
    pub connect_timeout: Duration,
}

impl Default for Settings {
    /// The settings of `pullwarden run` without any safety flag.
    fn default() -> Self {
        Settings::from_options(&SafetyOptions::default()).expect("the default flags are valid")
    }
}

impl Default for PreviewSettings {
    fn default() -> Self {
        Settings::default().previews
    }
}

impl Default for ArgoCdSettings {
    fn default() -> Self {
        Settings::default().argocd
    }
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Settings::default().network
    }
}

fn pairs(flag: &str, items: &[String]) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| format!("--{flag}: {s:?} is not resource=quantity"))
        })
        .collect()
}

impl Settings {
    /// Validates the flags (a bad value stops `pullwarden run` with a clear message).
    pub fn from_options(o: &SafetyOptions) -> Result<Self, String> {
        for t in &o.preview_service_types {
            if !matches!(t.as_str(), "NodePort" | "LoadBalancer") {
                return Err(format!(
                    "--preview-service-types: {t:?} is not NodePort or LoadBalancer (ExternalName is never allowed)"
                ));
            }
        }
        if o.argocd_allowed_projects.iter().any(|p| p == "default") || o.argocd_project == "default"
        {
            return Err(
                "Argo CD project `default` allows every destination and kind; it is never used for previews"
                    .into(),
            );
        }
        Ok(Settings {
            previews: PreviewSettings {
                namespace_prefix: o.preview_namespace_prefix.clone(),
                namespace_deny: o.preview_namespace_deny.clone(),
                quota_ceiling: pairs("preview-quota-ceiling", &o.preview_quota_ceiling)?,
                container_max: pairs("preview-container-max", &o.preview_container_max)?,
                default_max_previews: o.default_max_previews,
                max_previews_per_namespace: o.max_previews_per_namespace,
                ingress_namespace: o.preview_ingress_namespace.clone(),
                egress_cidrs: o.preview_egress_cidrs.clone(),
                domain: o
                    .preview_domain
                    .clone()
                    .map(|d| d.trim_matches('.').to_ascii_lowercase())
                    .filter(|d| !d.is_empty()),
                ingress_class: o.preview_ingress_class.clone().filter(|c| !c.is_empty()),
                ingress_annotations: o.preview_ingress_annotations.clone(),
                service_types: o.preview_service_types.clone(),
                runtime_classes: o.preview_runtime_classes.clone(),
                probe_address: o.preview_probe_address,
                probe_scheme: o.preview_probe_scheme.clone(),
            },
            argocd: ArgoCdSettings {
                namespace: o.argocd_namespace.clone(),
                project: o.argocd_project.clone(),
                allowed_projects: o.argocd_allowed_projects.clone(),
                destination_server: o.argocd_destination_server.clone(),
            },
            network: NetworkSettings {
                cluster_cidrs: o.cluster_cidrs.clone(),
                allow_cidrs: o.outbound_allow_cidrs.clone(),
                allow_cross_host_api_url: o.allow_cross_host_api_url,
                git_fetch_max_bytes: o.git_fetch_max_bytes,
                git_fetch_max_objects: o.git_fetch_max_objects,
                dns_servers: o.dns_servers.clone(),
                connect_timeout: Duration::from_secs(10),
            },
            health: HealthSettings {
                probe_concurrency: o.health_probe_concurrency.max(1),
                status_interval: o.health_status_interval,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_are_strict() {
        let s = Settings::from_options(&SafetyOptions::default()).unwrap();
        assert_eq!(s.previews.namespace_prefix, "{{tenant}}-");
        assert!(s.previews.ingress_annotations.is_empty());
        assert!(s.previews.service_types.is_empty());
        assert!(
            s.previews
                .quota_ceiling
                .iter()
                .any(|(k, v)| k == "limits.memory" && v == "16Gi")
        );
        assert_eq!(s.argocd.project, "pullwarden-previews");
    }

    #[test]
    fn dns_servers_are_a_list_of_socket_addresses() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            opts: SafetyOptions,
        }
        let parse = |args: &[&str]| {
            <Wrapper as clap::Parser>::try_parse_from(
                std::iter::once("pullwarden").chain(args.iter().copied()),
            )
            .map(|w| Settings::from_options(&w.opts).unwrap().network.dns_servers)
        };
        assert!(
            parse(&[]).unwrap().is_empty(),
            "default: the system resolver"
        );
        assert_eq!(
            parse(&[
                "--dns-server=127.0.0.1:5353,[::1]:53",
                "--dns-server",
                "10.0.0.10:53"
            ])
            .unwrap(),
            vec![
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.10:53".parse().unwrap(),
            ]
        );
        assert!(
            parse(&["--dns-server=10.0.0.10"]).is_err(),
            "the port is required"
        );
    }

    #[test]
    fn project_default_and_external_name_are_refused_as_settings() {
        let o = SafetyOptions {
            argocd_allowed_projects: vec!["default".into()],
            ..SafetyOptions::default()
        };
        assert!(Settings::from_options(&o).is_err());
        let o = SafetyOptions {
            preview_service_types: vec!["ExternalName".into()],
            ..SafetyOptions::default()
        };
        assert!(Settings::from_options(&o).is_err());
    }
}
