//! The outbound guard: which addresses Pullwarden may open a connection to on a tenant's behalf.
//!
//! A tenant chooses the URLs Pullwarden connects to (a Repository's `url`/`apiUrl`, HealthCheck
//! targets, later Plugin endpoints), and Pullwarden attaches credentials and reports what it
//! got back. Without a guard that is a server-side request forgery primitive: the cloud
//! metadata service (instance credentials), the API server, kubelets and other in-cluster
//! services become reachable with Pullwarden's network position.
//!
//! Decision (pure, [`Guard::check_addr`] / [`Guard::check_name`]):
//! - always refused: unspecified (`0.0.0.0/8`, `::`; Linux connects those to the local host),
//!   multicast and broadcast;
//! - refused unless an allow entry *inside* the class lists it: loopback (`127.0.0.0/8`, `::1`),
//!   link-local (`169.254.0.0/16`, `fe80::/10`) and cloud metadata addresses
//!   (`169.254.169.254`, `169.254.170.2`, `fd00:ec2::254`, `100.100.100.200`, `192.0.0.192`) —
//!   so `--outbound-allow-cidrs=0.0.0.0/0` does not open the metadata service, but
//!   `127.0.0.0/8` opens loopback for a development forge;
//! - refused unless any allow entry contains it: `--cluster-cidrs` (skipped by
//!   [`Guard::check_addr_fixed_classes`] for a Service's own endpoints, which the cluster
//!   vouches for; every class above still applies to them);
//! - names: metadata host names are always refused; cluster-internal names (`*.svc`,
//!   `*.cluster.local`, single-label names that resolve through the cluster's DNS search path,
//!   `localhost`) only resolve to addresses that an allow entry lists;
//! - IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::/96`) IPv6 addresses are judged by the
//!   IPv4 address they carry.
//!
//! Enforcement: names are resolved once ([`Guard::resolve`]) and only the checked addresses are
//! returned, so the connection goes to exactly the address that was checked (a DNS answer that
//! changes between check and connect — rebinding — changes nothing). [`GuardResolver`] plugs
//! this into reqwest; IP-literal URLs never reach a resolver, so [`Guard::check_url`] must be
//! called for them (the forge client factory does, and the git proxy checks every target).
//! Redirects: [`redirect_policy`] follows same-origin redirects only; a cross-origin redirect is
//! returned to the caller as the response, so a token never travels to another host.
//! (HealthCheck probes follow redirects across origins, each hop through [`Guard::resolve`],
//! with the spec's headers kept to the first origin: `crate::health::probe`.)
//!
//! Resolver: the system resolver (`getaddrinfo`), or with `--dns-server` only the listed DNS
//! servers ([`Guard::with_dns_servers`], hickory; for air-gapped clusters and tests). Either
//! way its answers are filtered here, for every client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::settings::NetworkSettings;

/// Why an address is sensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    Unspecified,
    Multicast,
    Broadcast,
    Loopback,
    LinkLocal,
    Metadata,
    /// Inside one of `--cluster-cidrs`.
    Cluster,
}

impl AddrClass {
    fn describe(self) -> &'static str {
        match self {
            AddrClass::Unspecified => {
                "an unspecified address (connects to the operator's own host)"
            }
            AddrClass::Multicast => "a multicast address",
            AddrClass::Broadcast => "the broadcast address",
            AddrClass::Loopback => "a loopback address (the operator's own pod)",
            AddrClass::LinkLocal => "a link-local address",
            AddrClass::Metadata => "a cloud metadata service address",
            AddrClass::Cluster => "inside the cluster's CIDRs (--cluster-cidrs)",
        }
    }

    /// The flag that could exempt it, if any.
    fn hint(self, addr: IpAddr) -> String {
        let single = match addr {
            IpAddr::V4(_) => format!("{addr}/32"),
            IpAddr::V6(_) => format!("{addr}/128"),
        };
        match self {
            AddrClass::Unspecified | AddrClass::Multicast | AddrClass::Broadcast => {
                "this is never allowed".into()
            }
            AddrClass::Loopback | AddrClass::LinkLocal | AddrClass::Metadata => {
                format!("the operator can allow it explicitly with --outbound-allow-cidrs={single}")
            }
            AddrClass::Cluster => {
                format!("the operator can exempt it with --outbound-allow-cidrs={single}")
            }
        }
    }
}

/// An outbound connection the guard refused. Its text is safe for status conditions: it names
/// the host, the address and the rule, never a credential or a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The host as written in the URL (or the address).
    pub host: String,
    /// The resolved (or literal) address that was refused; `None` for a refused name.
    pub addr: Option<IpAddr>,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) if addr.to_string() != self.host => write!(
                f,
                "outbound connection to {} ({addr}) refused: {}",
                self.host, self.reason
            ),
            _ => write!(
                f,
                "outbound connection to {} refused: {}",
                self.host, self.reason
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Addresses of cloud metadata services (AWS IMDS v4/v6 and ECS, GCP, Azure, OpenStack share
/// 169.254.169.254; Alibaba; Oracle).
const METADATA_ADDRS: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Host names of metadata services; refused whatever they resolve to.
const METADATA_NAMES: [&str; 6] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The one outbound guard (see the module docs). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    cluster: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// `--dns-server`: resolve through these instead of the system resolver.
    dns: Option<DnsServers>,
}

impl From<&NetworkSettings> for Guard {
    fn from(s: &NetworkSettings) -> Self {
        Guard::new(s.cluster_cidrs.clone(), s.allow_cidrs.clone()).with_dns_servers(&s.dns_servers)
    }
}

/// A DNS client that asks only the configured name servers (UDP, then TCP for a truncated
/// answer); shared by the clones of one guard, so its cache is too (answers are kept for their
/// TTL, as the system resolver would).
#[derive(Clone)]
struct DnsServers {
    servers: Arc<[SocketAddr]>,
    resolver: Arc<hickory_resolver::TokioResolver>,
}

impl fmt::Debug for DnsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DnsServers").field(&self.servers).finish()
    }
}

impl DnsServers {
    fn new(servers: &[SocketAddr]) -> Self {
        use hickory_resolver::config::{
            ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
        };
        let name_servers = servers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = hickory_resolver::TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        // Every address of the name, so the guard sees (and filters) all of them.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // These servers answer for every name; /etc/hosts belongs to the system resolver.
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = builder
            .build()
            .expect("a resolver without encrypted transports always builds");
        DnsServers {
            servers: servers.into(),
            resolver: Arc::new(resolver),
        }
    }

    async fn lookup(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        // A trailing dot: the name is absolute (no search domains are configured anyway).
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(found) => Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
            Err(e) if e.is_no_records_found() => {
                Err("no such name (NXDOMAIN or no address)".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `::ffff:a.b.c.d` and `64:ff9b::a.b.c.d` reach the IPv4 address they carry.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a valid built-in CIDR")
}

/// The fixed class of an address and the range that class covers (an allow entry must sit
/// inside that range to exempt it).
fn fixed_class(addr: IpAddr) -> Option<(AddrClass, Option<IpNet>)> {
    if METADATA_ADDRS.contains(&addr) {
        let single = IpNet::from(addr);
        return Some((AddrClass::Metadata, Some(single)));
    }
    fixed_range_class(addr)
}

/// The class of the range an address is in, metadata addresses included.
fn fixed_class_ignoring_metadata(addr: IpAddr) -> Option<AddrClass> {
    fixed_range_class(addr).map(|(class, _)| class)
}

fn fixed_range_class(addr: IpAddr) -> Option<(AddrClass, Option<IpNet>)> {
    match addr {
        IpAddr::V4(v4) => {
            if v4.octets()[0] == 0 {
                Some((AddrClass::Unspecified, None))
            } else if v4.is_broadcast() {
                Some((AddrClass::Broadcast, None))
            } else if v4.is_multicast() {
                Some((AddrClass::Multicast, None))
            } else if v4.is_loopback() {
                Some((AddrClass::Loopback, Some(net("127.0.0.0/8"))))
            } else if v4.is_link_local() {
                Some((AddrClass::LinkLocal, Some(net("169.254.0.0/16"))))
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some((AddrClass::Unspecified, None))
            } else if v6.is_multicast() {
                Some((AddrClass::Multicast, None))
            } else if v6.is_loopback() {
                Some((AddrClass::Loopback, Some(net("::1/128"))))
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some((AddrClass::LinkLocal, Some(net("fe80::/10"))))
            } else {
                None
            }
        }
    }
}

/// Lowercase, without a trailing dot.
fn normalise_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Names that resolve inside the cluster (or to the operator itself).
fn is_internal_name(name: &str) -> bool {
    !name.contains('.')
        || name.ends_with(".svc")
        || name.ends_with(".cluster.local")
        || name.ends_with(".localhost")
}

impl Guard {
    /// A guard with explicit lists (tests, tools), resolving through the system resolver.
    pub fn new(cluster: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        Guard {
            cluster,
            allow,
            dns: None,
        }
    }

    /// Resolve names through these DNS servers (`ip:port`) instead of the system resolver
    /// (`--dns-server`); an empty list keeps the system resolver.
    pub fn with_dns_servers(mut self, servers: &[SocketAddr]) -> Self {
        self.dns = (!servers.is_empty()).then(|| DnsServers::new(servers));
        self
    }

    /// Whether an allow entry lists `addr` explicitly (inside `within`, when given).
    fn allowed(&self, addr: IpAddr, within: Option<IpNet>) -> bool {
        self.allow.iter().any(|a| {
            let a_contains = a.contains(&addr) || a.contains(&canonical(addr));
            a_contains && within.is_none_or(|w| w.contains(a))
        })
    }

    /// Whether `addr` may be connected to.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), Refusal> {
        self.check_addr_for(&addr.to_string(), addr)
    }

    /// [`Guard::check_addr`] without the `--cluster-cidrs` rule, for addresses the cluster
    /// itself vouches for (the endpoints of a Service, derived from its own selector). Every
    /// fixed class still applies: unspecified, multicast, broadcast, and loopback, link-local and
    /// metadata addresses unless an allow entry inside the class lists them.
    pub fn check_addr_fixed_classes(&self, addr: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(addr);
        match self.fixed_class_verdict(ip) {
            Some(Err(class)) => Err(self.refusal(&addr.to_string(), addr, class)),
            Some(Ok(())) | None => Ok(()),
        }
    }

    /// `None`: no fixed class; else whether the allow list exempts the class it is in.
    fn fixed_class_verdict(&self, ip: IpAddr) -> Option<Result<(), AddrClass>> {
        let (class, range) = fixed_class(ip)?;
        Some(match range {
            Some(range) if self.allowed(ip, Some(range)) => Ok(()),
            _ => Err(class),
        })
    }

    fn refusal(&self, host: &str, addr: IpAddr, class: AddrClass) -> Refusal {
        let ip = canonical(addr);
        // Most metadata services sit in the link-local range; say so (it is the rule people
        // know, and `--outbound-allow-cidrs=169.254.0.0/16` does not open them).
        let link_local = class == AddrClass::Metadata
            && matches!(
                fixed_class_ignoring_metadata(ip),
                Some(AddrClass::LinkLocal)
            );
        Refusal {
            host: host.to_string(),
            addr: Some(addr),
            reason: format!(
                "{ip} is {}{}; {}",
                class.describe(),
                if link_local { " (link-local)" } else { "" },
                class.hint(ip)
            ),
        }
    }

    fn check_addr_for(&self, host: &str, addr: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(addr);
        match self.fixed_class_verdict(ip) {
            Some(Ok(())) => return Ok(()),
            Some(Err(class)) => return Err(self.refusal(host, addr, class)),
            None => {}
        }
        if self.cluster.iter().any(|c| c.contains(&ip)) && !self.allowed(ip, None) {
            return Err(self.refusal(host, addr, AddrClass::Cluster));
        }
        Ok(())
    }

    /// Name rules that hold before any resolution: metadata names are refused outright.
    pub fn check_name(&self, host: &str) -> Result<(), Refusal> {
        let name = normalise_name(host);
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(Refusal {
                host: host.to_string(),
                addr: None,
                reason: format!("{name} is a cloud metadata service name; this is never allowed"),
            });
        }
        Ok(())
    }

    /// The host of `url` when it is an IP literal (checked now: no resolver sees it) or a name
    /// (name rules now, addresses when resolved). Relative or host-less URLs pass: they never
    /// open a connection by themselves.
    pub fn check_url(&self, url: &str) -> Result<(), Refusal> {
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(());
        };
        match parsed.host() {
            Some(url::Host::Ipv4(v4)) => self.check_addr(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check_addr(IpAddr::V6(v6)),
            // Non-special schemes (`tcp://`) keep an IPv4 literal as an opaque host.
            Some(url::Host::Domain(d)) => match d.parse::<IpAddr>() {
                Ok(ip) => self.check_addr(ip),
                Err(_) => self.check_name(d),
            },
            None => Ok(()),
        }
    }

    /// Pure: of the addresses `host` resolved to, those that may be used; a refusal when none
    /// may. Cluster-internal names (see the module docs) keep only explicitly allowed addresses.
    pub fn filter_resolved(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, Refusal> {
        self.check_name(host)?;
        let internal = is_internal_name(&normalise_name(host));
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for sa in addrs {
            // The address class first (the clearer message), then the name rule.
            let verdict = self.check_addr_for(host, sa.ip()).and_then(|()| {
                if internal && !self.allowed(canonical(sa.ip()), None) {
                    Err(Refusal {
                        host: host.to_string(),
                        addr: Some(sa.ip()),
                        reason: format!(
                            "{host} is a cluster-internal or local name; its address {} is not \
                             listed in --outbound-allow-cidrs",
                            sa.ip()
                        ),
                    })
                } else {
                    Ok(())
                }
            });
            match verdict {
                Ok(()) => ok.push(*sa),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        if ok.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| Refusal {
                host: host.to_string(),
                addr: None,
                reason: "the name resolved to no address".into(),
            }));
        }
        Ok(ok)
    }

    /// Resolve `host` once (an IP literal is not resolved) and return only checked addresses,
    /// with `port`. Connect to exactly these.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_addr(ip).map_err(ResolveError::Refused)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        self.check_name(bare).map_err(ResolveError::Refused)?;
        let found: Vec<SocketAddr> = match &self.dns {
            Some(dns) => dns.lookup(bare, port).await,
            None => tokio::net::lookup_host((bare, port))
                .await
                .map(Iterator::collect)
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| ResolveError::Lookup(format!("cannot resolve {bare}: {e}")))?;
        self.filter_resolved(bare, &found)
            .map_err(ResolveError::Refused)
    }
}

/// A failed [`Guard::resolve`].
#[derive(Debug)]
pub enum ResolveError {
    Refused(Refusal),
    Lookup(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Refused(r) => r.fmt(f),
            ResolveError::Lookup(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Refused(r) => Some(r),
            ResolveError::Lookup(_) => None,
        }
    }
}

/// The refusal somewhere in an error's source chain (reqwest wraps the resolver's error).
pub fn find_refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r);
        }
        if let Some(ResolveError::Refused(r)) = err.downcast_ref::<ResolveError>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// reqwest's DNS hook: resolves once through the guard and hands reqwest only the checked
/// addresses, so the connection goes to an address that was checked.
#[derive(Clone, Debug)]
pub struct GuardResolver {
    guard: Arc<Guard>,
}

impl GuardResolver {
    pub fn new(guard: Guard) -> Self {
        GuardResolver {
            guard: Arc::new(guard),
        }
    }
}

impl reqwest::dns::Resolve for GuardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port (or the scheme default) in.
            let addrs = guard
                .resolve(&host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// Pure: whether a redirect from `from` to `to` stays on the same origin (scheme, host, port).
pub fn same_origin(from: &url::Url, to: &url::Url) -> bool {
    from.origin() == to.origin()
}

/// The most redirects followed (same origin only).
pub const MAX_REDIRECTS: usize = 5;

/// Pure: what to do with the `hops`-th redirect (`previous` = URLs visited so far).
pub fn redirect_decision(previous: &[url::Url], to: &url::Url) -> RedirectDecision {
    let Some(first) = previous.first() else {
        return RedirectDecision::Stop;
    };
    if previous.len() > MAX_REDIRECTS {
        return RedirectDecision::TooMany;
    }
    if same_origin(first, to) {
        RedirectDecision::Follow
    } else {
        RedirectDecision::Stop
    }
}

/// See [`redirect_decision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectDecision {
    Follow,
    /// Return the redirect response itself (it is then an error answer, not followed).
    Stop,
    TooMany,
}

/// reqwest policy built from [`redirect_decision`]: same-origin redirects only.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        match redirect_decision(attempt.previous(), attempt.url()) {
            RedirectDecision::Follow => attempt.follow(),
            RedirectDecision::Stop => attempt.stop(),
            RedirectDecision::TooMany => attempt.error("too many redirects"),
        }
    })
}

impl Guard {
    /// A reqwest builder whose every connection goes through this guard: the guarded
    /// resolver, same-origin redirects only, and no environment proxy (a proxy would resolve
    /// and connect on our behalf, past the guard). IP-literal hosts still need
    /// [`Guard::check_url`].
    pub fn reqwest_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(GuardResolver::new(self.clone()))
            .redirect(redirect_policy())
            .no_proxy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard(cluster: &[&str], allow: &[&str]) -> Guard {
        Guard::new(
            cluster.iter().map(|c| c.parse().unwrap()).collect(),
            allow.iter().map(|c| c.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn every_sensitive_class_is_refused_by_default() {
        let g = Guard::default();
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "255.255.255.255",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "169.254.0.1",
            "169.254.169.254",
            "169.254.170.2",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "192.0.0.192",
            // IPv4 carried in IPv6 is judged as IPv4.
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let err = g.check_addr(ip(a)).expect_err(a);
            assert!(err.to_string().contains("refused"), "{a}: {err}");
        }
        for a in [
            "140.82.112.3",
            "10.1.2.3",
            "192.168.1.10",
            "2606:50c0:8000::153",
            "fec0::1",
            "::ffff:140.82.112.3",
        ] {
            assert!(g.check_addr(ip(a)).is_ok(), "{a}");
        }
    }

    #[test]
    fn messages_name_the_class_and_the_flag() {
        let g = Guard::default();
        let e = g.check_addr(ip("::ffff:169.254.169.254")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("169.254.169.254 is a cloud metadata"),
            "{text}"
        );
        assert!(
            text.contains("--outbound-allow-cidrs=169.254.169.254/32"),
            "{text}"
        );
        let e = g.check_addr(ip("127.0.0.1")).unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
        let e = g.check_addr(ip("0.0.0.0")).unwrap_err().to_string();
        assert!(e.contains("never allowed"), "{e}");
    }

    #[test]
    fn cluster_cidrs_are_refused_and_allow_entries_exempt() {
        let g = guard(&["10.96.0.0/12", "fd12::/64"], &["10.96.5.0/24"]);
        assert!(g.check_addr(ip("10.96.0.1")).is_err());
        assert!(g.check_addr(ip("fd12::5")).is_err());
        assert!(g.check_addr(ip("::ffff:10.96.0.1")).is_err());
        assert!(g.check_addr(ip("10.96.5.7")).is_ok(), "allow wins");
        assert!(
            g.check_addr(ip("10.200.0.1")).is_ok(),
            "outside the cluster"
        );
        let e = g.check_addr(ip("10.96.0.1")).unwrap_err().to_string();
        assert!(e.contains("--cluster-cidrs"), "{e}");
    }

    #[test]
    fn loopback_and_link_local_need_an_explicit_entry() {
        // A default route in the allow list does not open loopback or the metadata service.
        let wide = guard(&[], &["0.0.0.0/0", "::/0"]);
        assert!(wide.check_addr(ip("127.0.0.1")).is_err());
        assert!(wide.check_addr(ip("169.254.169.254")).is_err());
        assert!(wide.check_addr(ip("fe80::1")).is_err());
        assert!(wide.check_addr(ip("0.0.0.0")).is_err());
        let lo = guard(&[], &["127.0.0.0/8"]);
        assert!(lo.check_addr(ip("127.0.0.1")).is_ok());
        assert!(lo.check_addr(ip("::ffff:127.0.0.1")).is_ok());
        assert!(
            lo.check_addr(ip("::1")).is_err(),
            "IPv6 loopback not listed"
        );
        assert!(lo.check_addr(ip("169.254.169.254")).is_err());
        // Link-local listed: the metadata address inside it still needs its own entry.
        let ll = guard(&[], &["169.254.0.0/16"]);
        assert!(ll.check_addr(ip("169.254.1.1")).is_ok());
        assert!(ll.check_addr(ip("169.254.169.254")).is_err());
        let md = guard(&[], &["169.254.169.254/32"]);
        assert!(md.check_addr(ip("169.254.169.254")).is_ok());
        // Unspecified and multicast are never allowed.
        let all = guard(&[], &["0.0.0.0/8", "224.0.0.0/4"]);
        assert!(all.check_addr(ip("0.0.0.0")).is_err());
        assert!(all.check_addr(ip("224.0.0.1")).is_err());
    }

    #[test]
    fn names() {
        let g = Guard::default();
        for n in [
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "instance-data.ec2.internal",
        ] {
            assert!(g.check_name(n).is_err(), "{n}");
            assert!(
                g.filter_resolved(n, &["140.82.112.3:443".parse().unwrap()])
                    .is_err(),
                "{n}"
            );
        }
        assert!(g.check_name("github.com").is_ok());
        // Rebinding-style answers: only the checked addresses come back.
        let mixed: Vec<SocketAddr> = vec![
            "169.254.169.254:443".parse().unwrap(),
            "140.82.112.3:443".parse().unwrap(),
        ];
        assert_eq!(
            g.filter_resolved("evil.example", &mixed).unwrap(),
            vec!["140.82.112.3:443".parse::<SocketAddr>().unwrap()]
        );
        let bad: Vec<SocketAddr> = vec!["127.0.0.1:443".parse().unwrap()];
        let e = g.filter_resolved("evil.example", &bad).unwrap_err();
        assert!(e.to_string().contains("evil.example (127.0.0.1)"), "{e}");
        // Cluster-internal names only reach allow-listed addresses.
        let public: Vec<SocketAddr> = vec!["10.0.0.5:443".parse().unwrap()];
        for n in ["kubernetes", "gitea.git.svc", "gitea.git.svc.cluster.local"] {
            assert!(g.filter_resolved(n, &public).is_err(), "{n}");
        }
        let g2 = guard(&[], &["10.0.0.0/24"]);
        assert!(g2.filter_resolved("gitea.git.svc", &public).is_ok());
        assert!(g.filter_resolved("gitlab.example.com", &public).is_ok());
    }

    #[test]
    fn urls_with_ip_literals_are_checked_without_a_resolver() {
        let g = Guard::default();
        assert!(g.check_url("http://169.254.169.254/latest").is_err());
        assert!(g.check_url("http://[::ffff:169.254.169.254]/").is_err());
        assert!(g.check_url("http://127.0.0.1:8080/api").is_err());
        assert!(g.check_url("http://metadata.google.internal/x").is_err());
        assert!(g.check_url("https://api.github.com").is_ok());
        let lo = guard(&[], &["127.0.0.0/8"]);
        assert!(lo.check_url("http://127.0.0.1:8080/api").is_ok());
    }

    #[test]
    fn fixed_classes_hold_for_cluster_exempt_addresses() {
        let g = guard(&["10.96.0.0/12", "10.244.0.0/16"], &[]);
        // The cluster rule is what the exemption skips…
        assert!(g.check_addr(ip("10.244.1.7")).is_err());
        assert!(g.check_addr_fixed_classes(ip("10.244.1.7")).is_ok());
        assert!(g.check_addr_fixed_classes(ip("10.96.0.10")).is_ok());
        assert!(g.check_addr_fixed_classes(ip("192.0.2.10")).is_ok());
        // …and nothing else: a pod cannot publish an endpoint on a fixed class.
        for a in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "169.254.10.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            let e = g.check_addr_fixed_classes(ip(a)).expect_err(a).to_string();
            assert!(e.contains("refused"), "{a}: {e}");
        }
        // The allow list still opens loopback (tests, development), never unspecified.
        let lo = guard(&["10.0.0.0/8"], &["127.0.0.0/8", "0.0.0.0/8"]);
        assert!(lo.check_addr_fixed_classes(ip("127.0.0.1")).is_ok());
        assert!(lo.check_addr_fixed_classes(ip("0.0.0.0")).is_err());
    }

    #[test]
    fn healthcheck_target_urls() {
        // What the HealthCheck controller refuses when it validates `target.url`.
        let g = Guard::default();
        let e = g
            .check_url("http://169.254.169.254/latest/meta-data")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cloud metadata") && e.contains("link-local"),
            "{e}"
        );
        let e = g.check_url("http://0.0.0.0:8080/").unwrap_err().to_string();
        assert!(e.contains("unspecified"), "{e}");
        let e = g.check_url("http://[fe80::1]/").unwrap_err().to_string();
        assert!(e.contains("link-local"), "{e}");
        let e = g
            .check_url("http://[::ffff:169.254.169.254]/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("link-local"), "{e}");
        assert!(g.check_url("http://metadata.google.internal/").is_err());
        assert!(g.check_url("tcp://169.254.169.254:22").is_err());
        assert!(g.check_url("http://10.0.0.5:8080/healthz").is_ok());
        assert!(g.check_url("https://app.example.com/").is_ok());
        assert!(g.check_url("tcp://db.example.com:5432").is_ok());
        let in_cluster = guard(&["10.0.0.0/8"], &[]);
        assert!(
            in_cluster
                .check_url("http://10.0.0.5:8080/healthz")
                .is_err()
        );
    }

    #[tokio::test]
    async fn dns_servers_answer_and_the_guard_checks_the_answer() {
        use crate::net::test_dns::TestDns;
        let dns = TestDns::start(&[]).await;
        let g = guard(&[], &["127.0.0.0/8"]).with_dns_servers(&[dns.addr]);
        assert_eq!(
            g.resolve("ok.test", 8080).await.unwrap(),
            vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        // Also with a trailing dot and in capitals.
        assert_eq!(g.resolve("OK.test.", 1).await.unwrap().len(), 1);
        match g.resolve("evil.test", 80).await {
            Err(ResolveError::Refused(r)) => {
                assert_eq!(r.host, "evil.test");
                assert_eq!(r.addr, Some(ip("169.254.169.254")));
                let text = r.to_string();
                assert!(text.contains("evil.test (169.254.169.254)"), "{text}");
                assert!(text.contains("cloud metadata"), "{text}");
            }
            other => panic!("evil.test: {other:?}"),
        }
        // Rebinding-style answer: only the checked address is handed out.
        assert_eq!(
            g.resolve("mixed.test", 80).await.unwrap(),
            vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        match g.resolve("nosuch.invalid", 80).await {
            Err(ResolveError::Lookup(m)) => {
                assert!(m.starts_with("cannot resolve nosuch.invalid: "), "{m}");
                assert!(m.contains("no such name"), "{m}");
            }
            other => panic!("nosuch.invalid: {other:?}"),
        }
        // Literals and metadata names never reach the DNS server.
        let asked = dns.questions();
        assert!(g.resolve("127.0.0.1", 80).await.is_ok());
        assert!(g.resolve("metadata.google.internal", 80).await.is_err());
        assert_eq!(dns.questions(), asked);
        // Without loopback allowed, ok.test is refused like any loopback answer.
        let strict = Guard::default().with_dns_servers(&[dns.addr]);
        assert!(matches!(
            strict.resolve("ok.test", 80).await,
            Err(ResolveError::Refused(_))
        ));
        // The forge clients' resolver is the same guard: reqwest sees the refusal.
        let client = strict.reqwest_builder().build().unwrap();
        let err = client.get("http://evil.test/x").send().await.unwrap_err();
        assert_eq!(find_refusal(&err).expect("a refusal").host, "evil.test");
    }

    #[tokio::test]
    async fn settings_carry_the_dns_servers_into_the_guard() {
        let mut s = NetworkSettings::default();
        assert!(
            Guard::from(&s).dns.is_none(),
            "default: the system resolver"
        );
        s.dns_servers = vec!["127.0.0.1:5353".parse().unwrap()];
        let g = Guard::from(&s);
        assert_eq!(
            g.dns.as_ref().map(|d| d.servers.to_vec()),
            Some(s.dns_servers.clone())
        );
    }

    #[tokio::test]
    async fn resolve_checks_literals_and_names() {
        let g = Guard::default();
        assert!(matches!(
            g.resolve("127.0.0.1", 80).await,
            Err(ResolveError::Refused(_))
        ));
        assert!(matches!(
            g.resolve("[::1]", 80).await,
            Err(ResolveError::Refused(_))
        ));
        // `localhost` resolves to loopback (or is an internal name): refused either way.
        assert!(matches!(
            g.resolve("localhost", 80).await,
            Err(ResolveError::Refused(_))
        ));
        let lo = guard(&[], &["127.0.0.0/8", "::1/128"]);
        let addrs = lo.resolve("127.0.0.1", 8080).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn reqwest_sees_the_refusal() {
        // A name that resolves to loopback is refused inside reqwest's connector, and the
        // refusal is found in the error chain (that is how forge errors get their category).
        let client = Guard::default().reqwest_builder().build().unwrap();
        let err = client.get("http://localhost:9/x").send().await.unwrap_err();
        let refusal = find_refusal(&err).expect("a refusal in the chain");
        assert_eq!(refusal.host, "localhost");
    }

    #[test]
    fn redirects_follow_the_same_origin_only() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let first = [u("https://api.github.com/repos/o/r")];
        assert_eq!(
            redirect_decision(&first, &u("https://api.github.com/repositories/1")),
            RedirectDecision::Follow
        );
        for other in [
            "https://evil.example/steal",
            "http://api.github.com/repos/o/r",
            "https://api.github.com:8443/x",
            "https://169.254.169.254/latest/meta-data",
        ] {
            assert_eq!(
                redirect_decision(&first, &u(other)),
                RedirectDecision::Stop,
                "{other}"
            );
        }
        let many: Vec<url::Url> = (0..=MAX_REDIRECTS)
            .map(|i| u(&format!("https://h/{i}")))
            .collect();
        assert_eq!(
            redirect_decision(&many, &u("https://h/x")),
            RedirectDecision::TooMany
        );
    }
}
