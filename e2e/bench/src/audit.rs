//! The kube-apiserver's audit log, read back as request counts per identity, verb and resource.
//!
//! `e2e/scripts/cluster-up.sh` writes it when started with `PULLWARDEN_AUDIT_USERS`: Metadata
//! level (no bodies), only the listed users, one JSON event per line, stages `ResponseStarted`
//! (watches) and `ResponseComplete`. The apiserver's `/metrics` cannot tell callers apart; the
//! audit log can, including impersonation: a request the operator makes *as* the preview user
//! carries the operator in `user` and the preview user in `impersonatedUser`.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

/// One request (all stages of one `auditID` folded together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    /// When the apiserver received it.
    pub at: Timestamp,
    /// The authenticated user.
    pub user: String,
    /// The user it acted as, for impersonated requests.
    pub impersonated: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// `configmaps`, `previewenvironments/status`; the path for non-resource requests (`/api`).
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Response code, when the log has one.
    pub code: Option<u16>,
}

impl ApiRequest {
    /// Whose rights the request used: the impersonated user if any, else the caller.
    pub fn acting_user(&self) -> &str {
        self.impersonated.as_deref().unwrap_or(&self.user)
    }

    /// `"verb resource"`, e.g. `patch namespaces`, `create selfsubjectaccessreviews`.
    pub fn key(&self) -> String {
        format!("{} {}", self.verb, self.resource)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    user: UserInfo,
    #[serde(default)]
    impersonated_user: Option<UserInfo>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<Status>,
    request_received_timestamp: Timestamp,
}

#[derive(Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: Option<u16>,
}

/// Parses an audit log, one request per `auditID` (a watch logs `ResponseStarted` when it opens
/// and `ResponseComplete` when it ends: counted once, as of when it opened). Lines that are not
/// audit events are skipped and counted in the second value.
pub fn parse(text: &str) -> (Vec<ApiRequest>, usize) {
    let mut out: Vec<ApiRequest> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(ev) = serde_json::from_str::<Event>(line) else {
            skipped += 1;
            continue;
        };
        let code = ev.response_status.and_then(|s| s.code);
        if let Some(&i) = index.get(&ev.audit_id) {
            if code.is_some() {
                out[i].code = code;
            }
            continue;
        }
        let (resource, namespace, name) = match ev.object_ref {
            Some(o) if o.resource.is_some() => {
                let mut r = o.resource.unwrap_or_default();
                if let Some(sub) = o.subresource {
                    r = format!("{r}/{sub}");
                }
                (r, o.namespace, o.name)
            }
            _ => (
                ev.request_uri
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None,
                None,
            ),
        };
        index.insert(ev.audit_id, out.len());
        out.push(ApiRequest {
            at: ev.request_received_timestamp,
            user: ev.user.username,
            impersonated: ev
                .impersonated_user
                .map(|u| u.username)
                .filter(|u| !u.is_empty()),
            verb: ev.verb,
            resource,
            namespace,
            name,
            code,
        });
    }
    (out, skipped)
}

/// Counts of one identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityCounts {
    pub total: u64,
    /// `"verb resource"` → count.
    pub requests: BTreeMap<String, u64>,
    /// Response code → count (`none` when the log has none).
    pub codes: BTreeMap<String, u64>,
}

/// Counts `requests` per identity. `identities` maps a label (`operator`) to a user name; a
/// request is filed under the label of its [`ApiRequest::acting_user`], or under the user name
/// itself when it has no label.
pub fn count<'a>(
    requests: impl IntoIterator<Item = &'a ApiRequest>,
    identities: &[(&str, &str)],
) -> BTreeMap<String, IdentityCounts> {
    let mut out: BTreeMap<String, IdentityCounts> = BTreeMap::new();
    for r in requests {
        let who = r.acting_user();
        let label = identities
            .iter()
            .find(|(_, user)| *user == who)
            .map_or(who, |(label, _)| label);
        let c = out.entry(label.to_string()).or_default();
        c.total += 1;
        *c.requests.entry(r.key()).or_default() += 1;
        let code = r.code.map_or_else(|| "none".to_string(), |c| c.to_string());
        *c.codes.entry(code).or_default() += 1;
    }
    out
}

/// The counts as JSON: `{label: {"total": n, "requests": {...}, "codes": {...}}}`.
pub fn to_json(counts: &BTreeMap<String, IdentityCounts>) -> Value {
    counts
        .iter()
        .map(|(label, c)| {
            (
                label.clone(),
                json!({"total": c.total, "requests": c.requests, "codes": c.codes}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "system:serviceaccount:pullwarden-system:pullwarden";

    fn event(id: &str, stage: &str, verb: &str, object: Value, imp: Option<&str>) -> String {
        let mut e = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": id, "stage": stage, "requestURI": "/api/v1/x?watch=true", "verb": verb,
            "user": {"username": OPERATOR, "groups": ["system:serviceaccounts"]},
            "sourceIPs": ["127.0.0.1"], "objectRef": object,
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2026-12-02T11:40:01.123456Z",
            "stageTimestamp": "2026-12-02T11:40:01.223456Z"
        });
        if let Some(u) = imp {
            e["impersonatedUser"] = json!({"username": u, "groups": ["pullwarden:previews"]});
        }
        if object.is_null() {
            e.as_object_mut().unwrap().remove("objectRef");
            e["requestURI"] = json!("/apis?timeout=32s");
        }
        e.to_string()
    }

    #[test]
    fn folds_stages_and_splits_impersonation() {
        let cm =
            json!({"resource": "configmaps", "namespace": "p", "name": "c", "apiVersion": "v1"});
        let status = json!({"resource": "previewenvironments", "subresource": "status",
                            "namespace": "t", "name": "t-pr-1", "apiGroup": "pullwarden.dev"});
        let log = [
            event(
                "w1",
                "ResponseStarted",
                "watch",
                json!({"resource": "pods"}),
                None,
            ),
            event(
                "a",
                "ResponseComplete",
                "patch",
                cm.clone(),
                Some("pullwarden:preview"),
            ),
            event("b", "ResponseComplete", "patch", status, None),
            event(
                "w1",
                "ResponseComplete",
                "watch",
                json!({"resource": "pods"}),
                None,
            ),
            event("c", "ResponseComplete", "get", Value::Null, None),
            "not json".to_string(),
        ]
        .join("\n");
        let (reqs, skipped) = parse(&log);
        assert_eq!(skipped, 1);
        assert_eq!(reqs.len(), 4, "the watch counts once: {reqs:?}");
        assert_eq!(reqs[1].acting_user(), "pullwarden:preview");
        assert_eq!(reqs[1].namespace.as_deref(), Some("p"));
        assert_eq!(reqs[2].key(), "patch previewenvironments/status");
        assert_eq!(reqs[3].key(), "get /apis");
        let at: Timestamp = "2026-12-02T11:40:01.123456Z".parse().unwrap();
        assert!(reqs.iter().all(|r| r.at == at));

        let counts = count(
            &reqs,
            &[("operator", OPERATOR), ("preview", "pullwarden:preview")],
        );
        assert_eq!(counts["operator"].total, 3);
        assert_eq!(counts["operator"].requests["watch pods"], 1);
        assert_eq!(counts["preview"].requests["patch configmaps"], 1);
        assert_eq!(counts["preview"].codes["200"], 1);
        let unlabelled = count(&reqs, &[]);
        assert_eq!(unlabelled[OPERATOR].total, 3);
        assert_eq!(to_json(&counts)["preview"]["total"], 1);
    }
}
