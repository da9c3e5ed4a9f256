//! The pure half of the HealthCheck controller: a spec (with its Secrets read) becomes a
//! [`CheckPlan`] the scheduler can run without touching the API, and a check's in-memory state
//! becomes its status.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secrecy::SecretString;

use crate::api::{
    self, CommonStatus, ConditionStatus, HealthCheck, HealthCheckStatus, HealthState, ProbeResult,
};
use crate::health::probe::{HttpCheck, ProbeKind};
use crate::health::state::{Machine, Thresholds};
use crate::health::window::{Window, format_latency};
use crate::net::Guard;

/// What one check probes, fully resolved except for targets that move (a preview's URL, a
/// Service's endpoints), which are looked up per probe.
#[derive(Clone, Debug)]
pub struct CheckPlan {
    pub uid: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
    pub target: TargetPlan,
    pub kind: ProbeKind,
    pub ca_pem: Option<Arc<Vec<u8>>>,
    pub suspend: bool,
    pub cooldown: Option<Duration>,
}

impl CheckPlan {
    /// `http`, `tcp` or `grpc` (the metric label).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ProbeKind::Http(_) => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Grpc { .. } => "grpc",
        }
    }

    /// Whether a change from `self` to `next` needs a new first probe (the cadence changed);
    /// any other change takes effect at the next probe as scheduled.
    pub fn reschedules(&self, next: &CheckPlan) -> bool {
        self.interval != next.interval || self.suspend != next.suspend || self.uid != next.uid
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPlan {
    /// A fixed URL (`http(s)://` or `tcp://`), path already applied.
    Url(url::Url),
    /// A PreviewEnvironment in the check's namespace: its `status.url`, with `path` for HTTP.
    Preview { name: String, path: Option<String> },
    /// A Service in the check's namespace, through its ready endpoints.
    Service {
        name: String,
        port: u16,
        path: Option<String>,
    },
}

/// Values read from Secrets by the controller.
#[derive(Clone, Debug, Default)]
pub struct SecretInputs {
    pub headers: Vec<(String, SecretString)>,
    pub ca_pem: Option<Vec<u8>>,
}

/// Why a spec cannot be probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The spec is wrong (a human must change it).
    Invalid(String),
    /// The outbound guard refuses a literal target.
    Refused(String),
}

fn parse(field: &str, d: &api::Duration) -> Result<Duration, PlanError> {
    api::parse_duration(field, d).map_err(PlanError::Invalid)
}

/// `a-b` or `a` → inclusive range.
fn status_range(s: &str) -> Result<(u16, u16), PlanError> {
    let bad = || {
        PlanError::Invalid(format!(
            "probe.http.expectStatus: {s:?} is not a code or range"
        ))
    };
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo > hi || !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Header names and values that cannot be sent are refused when the check is applied, not at
/// every probe.
fn header(name: &str, value: &str, field: &str) -> Result<(), PlanError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PlanError::Invalid(format!("{field}: {name:?} is not a valid header name")))?;
    http::HeaderValue::from_str(value).map_err(|_| {
        PlanError::Invalid(format!(
            "{field}: the value of {name:?} is not a valid header value"
        ))
    })?;
    if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
        return Err(PlanError::Invalid(format!(
            "{field}: {name} is set by the probe itself"
        )));
    }
    Ok(())
}

/// Pure: the plan of a check, or why it cannot run.
pub fn plan(
    hc: &HealthCheck,
    secrets: SecretInputs,
    guard: &Guard,
) -> Result<CheckPlan, PlanError> {
    let spec = &hc.spec;
    let interval = parse("interval", &spec.interval)?;
    let timeout = parse("timeout", &spec.timeout)?;
    if interval < Duration::from_secs(1) {
        return Err(PlanError::Invalid("interval must be at least 1s".into()));
    }
    if timeout.is_zero() || timeout > interval {
        return Err(PlanError::Invalid(
            "timeout must be above 0 and not exceed interval".into(),
        ));
    }
    let probe_path = spec.probe.http.as_ref().and_then(|h| h.path.clone());
    let kind = match (&spec.probe.http, &spec.probe.tcp, &spec.probe.grpc) {
        (Some(h), None, None) => {
            let mut expect = Vec::new();
            for s in &h.expect_status {
                expect.push(status_range(s)?);
            }
            if expect.is_empty() {
                expect.push((200, 299));
            }
            for (k, v) in &h.headers {
                header(k, v, "probe.http.headers")?;
            }
            for (k, v) in &secrets.headers {
                use secrecy::ExposeSecret;
                header(k, v.expose_secret(), "probe.http.headersSecretRef")?;
            }
            let max_latency = h
                .max_latency
                .as_ref()
                .map(|d| parse("probe.http.maxLatency", d))
                .transpose()?;
            ProbeKind::Http(HttpCheck {
                method: h.method,
                headers: h
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                secret_headers: secrets.headers,
                expect_status: expect,
                body_contains: h.body_contains.clone(),
                max_latency,
            })
        }
        (None, Some(_), None) => ProbeKind::Tcp,
        (None, None, Some(g)) => ProbeKind::Grpc {
            service: g.service.clone(),
        },
        _ => {
            return Err(PlanError::Invalid(
                "set exactly one of probe.http, probe.tcp or probe.grpc".into(),
            ));
        }
    };
    let t = &spec.target;
    let target = match (&t.url, &t.preview_ref, &t.service) {
        (Some(raw), None, None) => {
            let mut url =
                url::Url::parse(raw).map_err(|e| PlanError::Invalid(format!("target.url: {e}")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(PlanError::Invalid("target.url has no host".into()));
            }
            let tcp = url.scheme() == "tcp";
            match (&kind, tcp) {
                (ProbeKind::Tcp, true) if url.port().is_none() => {
                    return Err(PlanError::Invalid(
                        "target.url: a tcp:// URL needs a port".into(),
                    ));
                }
                (ProbeKind::Tcp, true) => {}
                (ProbeKind::Tcp, false) => {
                    return Err(PlanError::Invalid(
                        "a tcp probe needs a tcp://host:port target.url".into(),
                    ));
                }
                (_, true) => {
                    return Err(PlanError::Invalid(
                        "a tcp:// target.url needs a tcp probe".into(),
                    ));
                }
                _ if !matches!(url.scheme(), "http" | "https") => {
                    return Err(PlanError::Invalid(format!(
                        "target.url: scheme {} is not http, https or tcp",
                        url.scheme()
                    )));
                }
                _ => {}
            }
            if let Some(p) = &probe_path {
                url.set_path(p);
            }
            guard
                .check_url(url.as_str())
                .map_err(|r| PlanError::Refused(r.to_string()))?;
            // `tcp://` is not a special scheme: its host parses as a name even when it is an
            // address, which `check_url` would take for a name to resolve later.
            let bare = url.host_str().unwrap_or_default();
            if let Ok(ip) = bare.trim_start_matches('[').trim_end_matches(']').parse() {
                guard
                    .check_addr(ip)
                    .map_err(|r| PlanError::Refused(r.to_string()))?;
            }
            TargetPlan::Url(url)
        }
        (None, Some(p), None) => TargetPlan::Preview {
            name: p.name.clone(),
            path: probe_path,
        },
        (None, None, Some(s)) => TargetPlan::Service {
            name: s.name.clone(),
            port: s.port,
            path: probe_path.or_else(|| s.path.clone()),
        },
        _ => {
            return Err(PlanError::Invalid(
                "set exactly one of target.url, target.previewRef or target.service".into(),
            ));
        }
    };
    let cooldown = spec
        .alert
        .as_ref()
        .and_then(|a| a.cooldown.as_ref())
        .map(|d| parse("alert.cooldown", d))
        .transpose()?;
    Ok(CheckPlan {
        uid: hc.metadata.uid.clone().unwrap_or_default(),
        interval,
        timeout,
        thresholds: Thresholds {
            failure: spec.failure_threshold,
            success: spec.success_threshold,
            no_data: spec.no_data,
        },
        target,
        kind,
        ca_pem: secrets.ca_pem.map(Arc::new),
        suspend: spec.suspend,
        cooldown,
    })
}

/// The latest probe, as kept in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRecord {
    pub time: Timestamp,
    pub latency: Duration,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The outbound guard refused the target.
    pub refused: bool,
}

/// Pure: the status of a check from the reconcile's conditions and the probe state. A refused
/// target turns `Ready` False (reason `TargetRefused`) until a probe is not refused.
pub fn compose(
    base: &CommonStatus,
    generation: Option<i64>,
    machine: &Machine,
    window: &Window,
    last: Option<&ProbeRecord>,
    now: Timestamp,
) -> HealthCheckStatus {
    let mut common = base.clone();
    if let Some(rec) = last.filter(|r| r.refused) {
        api::set_condition(
            &mut common.conditions,
            api::READY,
            ConditionStatus::False,
            "TargetRefused",
            rec.error
                .clone()
                .unwrap_or_else(|| "the target was refused".into()),
            generation,
            now,
        );
    }
    let figures = window.figures();
    HealthCheckStatus {
        common,
        state: machine.state,
        consecutive_failures: machine.consecutive_failures,
        consecutive_successes: machine.consecutive_successes,
        last_probe: last.map(|r| ProbeResult {
            time: Some(Time(r.time)),
            latency: Some(format_latency(r.latency)),
            status_code: r.status_code,
            error: r.error.clone(),
        }),
        last_transition_time: machine.last_transition.map(Time),
        transitions: machine.transitions,
        availability: figures.as_ref().map(|f| f.availability.clone()),
        latency_p50: figures.as_ref().map(|f| f.p50.clone()),
        latency_p95: figures.as_ref().map(|f| f.p95.clone()),
        latency_p99: figures.as_ref().map(|f| f.p99.clone()),
        window: figures.map(|f| f.window),
    }
}

/// The words of a state for events and the PR.
pub fn state_word(state: HealthState) -> &'static str {
    match state {
        HealthState::Ok => "OK",
        HealthState::Degraded => "Degraded",
        HealthState::Unknown => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::state::Verdict;

    fn hc(spec: serde_json::Value) -> HealthCheck {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "HealthCheck",
            "metadata": {"name": "web", "namespace": "team", "uid": "u1", "generation": 2},
            "spec": spec,
        }))
        .unwrap()
    }

    fn loopback_guard() -> Guard {
        Guard::new(vec![], vec!["127.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn an_http_url_check_is_planned_with_its_path_and_ranges() {
        let p = plan(
            &hc(serde_json::json!({
                "target": {"url": "http://app.example.com:8080/base"},
                "probe": {"http": {"path": "/healthz", "expectStatus": ["200-299", "401"],
                                    "headers": {"X-Probe": "pw"}, "maxLatency": "500ms"}},
                "interval": "10s", "timeout": "2s", "alert": {"cooldown": "5m"}
            })),
            SecretInputs::default(),
            &Guard::default(),
        )
        .unwrap();
        assert_eq!(
            p.target,
            TargetPlan::Url("http://app.example.com:8080/healthz".parse().unwrap())
        );
        let ProbeKind::Http(h) = &p.kind else {
            panic!()
        };
        assert_eq!(h.expect_status, vec![(200, 299), (401, 401)]);
        assert_eq!(h.max_latency, Some(Duration::from_millis(500)));
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!(p.cooldown, Some(Duration::from_secs(300)));
        assert_eq!(p.kind_name(), "http");
        assert_eq!(p.thresholds.failure, 3);
    }

    #[test]
    fn literal_forbidden_targets_are_refused_when_applied() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/",
            "tcp://0.0.0.0:22",
        ] {
            let probe = if url.starts_with("tcp") {
                serde_json::json!({"tcp": {}})
            } else {
                serde_json::json!({"http": {}})
            };
            let err = plan(
                &hc(serde_json::json!({"target": {"url": url}, "probe": probe})),
                SecretInputs::default(),
                &loopback_guard(),
            )
            .unwrap_err();
            assert!(matches!(err, PlanError::Refused(_)), "{url}: {err:?}");
        }
        // Loopback only when the operator allows it.
        let spec =
            serde_json::json!({"target": {"url": "http://127.0.0.1:9/"}, "probe": {"http": {}}});
        assert!(
            plan(
                &hc(spec.clone()),
                SecretInputs::default(),
                &loopback_guard()
            )
            .is_ok()
        );
        assert!(matches!(
            plan(&hc(spec), SecretInputs::default(), &Guard::default()),
            Err(PlanError::Refused(_))
        ));
    }

    #[test]
    fn mismatched_targets_and_bad_values_are_invalid() {
        let cases = [
            serde_json::json!({"target": {"url": "http://a.example/"}, "probe": {"tcp": {}}}),
            serde_json::json!({"target": {"url": "tcp://a.example:5432"}, "probe": {"http": {}}}),
            serde_json::json!({"target": {"url": "tcp://a.example"}, "probe": {"tcp": {}}}),
            serde_json::json!({"target": {"url": "ftp://a.example/"}, "probe": {"http": {}}}),
            serde_json::json!({"target": {"url": "http://a.example/"}, "probe": {"http": {"expectStatus": ["299-200"]}}}),
            serde_json::json!({"target": {"url": "http://a.example/"}, "probe": {"http": {"headers": {"Host": "x"}}}}),
            serde_json::json!({"target": {"url": "http://a.example/"}, "probe": {"http": {}}, "interval": "5s", "timeout": "10s"}),
        ];
        for spec in cases {
            let r = plan(
                &hc(spec.clone()),
                SecretInputs::default(),
                &Guard::default(),
            );
            assert!(matches!(r, Err(PlanError::Invalid(_))), "{spec}: {r:?}");
        }
    }

    #[test]
    fn a_tcp_check_needs_a_tcp_url_with_a_port() {
        let p = plan(
            &hc(serde_json::json!({"target": {"url": "tcp://db.example:5432"}, "probe": {"tcp": {}}})),
            SecretInputs::default(),
            &Guard::default(),
        )
        .unwrap();
        assert!(matches!(p.kind, ProbeKind::Tcp));
        assert_eq!(
            p.target,
            TargetPlan::Url("tcp://db.example:5432".parse().unwrap())
        );
    }

    #[test]
    fn preview_and_service_targets_are_resolved_per_probe() {
        let p = plan(
            &hc(serde_json::json!({"target": {"previewRef": {"name": "pr-7"}}, "probe": {"http": {"path": "/ready"}}})),
            SecretInputs::default(),
            &Guard::default(),
        )
        .unwrap();
        assert_eq!(
            p.target,
            TargetPlan::Preview {
                name: "pr-7".into(),
                path: Some("/ready".into())
            }
        );
        let p = plan(
            &hc(serde_json::json!({"target": {"service": {"name": "api", "port": 9000, "path": "/h"}}, "probe": {"grpc": {"service": "api.v1"}}})),
            SecretInputs::default(),
            &Guard::default(),
        )
        .unwrap();
        assert!(matches!(p.kind, ProbeKind::Grpc { ref service } if service == "api.v1"));
        assert_eq!(
            p.target,
            TargetPlan::Service {
                name: "api".into(),
                port: 9000,
                path: Some("/h".into())
            }
        );
    }

    #[test]
    fn a_refused_probe_turns_ready_false_and_figures_come_from_the_window() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut base = CommonStatus::default();
        api::set_condition(
            &mut base.conditions,
            api::READY,
            ConditionStatus::True,
            "Probing",
            "probing",
            Some(2),
            now,
        );
        let mut m = Machine::default();
        let th = Thresholds {
            failure: 1,
            success: 1,
            no_data: api::NoData::Unknown,
        };
        m.observe(Verdict::Failure, th, now);
        let mut w = Window::default();
        w.record(now, false, Duration::from_millis(3));
        let rec = ProbeRecord {
            time: now,
            latency: Duration::from_millis(3),
            status_code: None,
            error: Some("outbound connection to evil.test (169.254.169.254) refused: …".into()),
            refused: true,
        };
        let st = compose(&base, Some(2), &m, &w, Some(&rec), now);
        let ready = api::find_condition(&st.common.conditions, api::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "TargetRefused")
        );
        assert_eq!(st.state, HealthState::Degraded);
        assert_eq!(st.availability.as_deref(), Some("0%"));
        assert_eq!(st.last_probe.unwrap().latency.as_deref(), Some("3ms"));
        // Not refused: the reconcile's Ready stands.
        let ok = ProbeRecord {
            refused: false,
            ..rec
        };
        let st = compose(&base, Some(2), &m, &w, Some(&ok), now);
        assert!(api::is_condition_true(&st.common.conditions, api::READY));
    }
}
