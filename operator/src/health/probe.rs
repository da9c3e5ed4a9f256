//! Probe execution: one HTTP, TCP or gRPC health probe against a target, through the outbound
//! guard ([`crate::net::Guard`]).
//!
//! STUB: the interface is fixed; the executor is being written (issue 13).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::api::HttpMethod;
use crate::net::Guard;

/// One probe, fully resolved by the controller: no Kubernetes lookups happen while probing.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    pub kind: ProbeKind,
    pub target: ProbeTarget,
    /// The whole probe (resolve, connect, TLS, request, bounded body read).
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum ProbeKind {
    Http(HttpCheck),
    Tcp,
    /// `grpc.health.v1.Health/Check` for `service` ("" = the whole server).
    Grpc {
        service: String,
    },
}

#[derive(Clone, Debug)]
pub struct HttpCheck {
    pub method: HttpMethod,
    /// Literal headers, then the Secret's; both sent to the target's origin only.
    pub headers: Vec<(String, String)>,
    pub secret_headers: Vec<(String, SecretString)>,
    /// Inclusive ranges of accepted status codes.
    pub expect_status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    /// Time to response headers above this is a failure.
    pub max_latency: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// `http(s)://host[:port]/path` for http and grpc (https = TLS), `tcp://host:port` for tcp.
    pub url: url::Url,
    /// Service endpoints listed by the controller: connect to these instead of resolving the
    /// URL's host (which then only names the Host header and TLS server name).
    pub pinned: Option<PinnedAddrs>,
    /// PEM CA certificates trusted in addition to the system roots.
    pub ca_pem: Option<Arc<Vec<u8>>>,
}

#[derive(Clone, Debug)]
pub struct PinnedAddrs {
    pub addrs: Vec<SocketAddr>,
    /// Endpoints the endpoint-slice controller derived from the Service's own selector: exempt
    /// from `--cluster-cidrs` (still subject to every fixed class: loopback, link-local,
    /// metadata…). Hand-written EndpointSlices get the full guard.
    pub cluster_exempt: bool,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOutcome {
    pub success: bool,
    pub latency: Duration,
    /// Final HTTP status (after redirects), when there was one.
    pub status_code: Option<u16>,
    /// Why it failed: safe for status (never a header value; at most a short excerpt of an
    /// answer).
    pub error: Option<String>,
    /// The outbound guard refused the target (or a redirect hop).
    pub refused: bool,
}

/// Limits of every probe.
#[derive(Clone, Debug)]
pub struct ProbeLimits {
    /// Most body bytes read (for `bodyContains`); more is not read.
    pub max_body_bytes: usize,
    pub max_redirects: usize,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            max_body_bytes: 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// Runs probes. Cheap to clone; shared by every check.
#[derive(Clone, Debug)]
pub struct Prober {
    guard: Guard,
    limits: ProbeLimits,
}

impl Prober {
    pub fn new(guard: Guard, limits: ProbeLimits) -> Self {
        Prober { guard, limits }
    }

    /// Runs one probe; never panics, never exceeds `req.timeout` by more than scheduling noise.
    pub async fn probe(&self, req: &ProbeRequest) -> ProbeOutcome {
        let _ = (&self.guard, &self.limits);
        let _ = req;
        ProbeOutcome {
            success: false,
            latency: Duration::ZERO,
            status_code: None,
            error: Some("probing is not implemented yet".into()),
            refused: false,
        }
    }
}
