//! State shared by every repository client of one credential on one API base.
//!
//! [`super::ForgeClients`] keeps one [`CredentialState`] per (api base, credential fingerprint,
//! CA): the [`Budget`] (quota view + ETag cache), the [`Transport`] (so a GitHub App mints one
//! installation token, not one per repository), the credential's own login (needed to recognise
//! our sticky comments) and the per-PR locks that make sticky-comment upserts race-free inside
//! this process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde::de::DeserializeOwned;

use super::budget::{ApiRequest, ApiResponse, Budget, Transport};
use super::error::ForgeError;
use crate::net::Guard;

/// The `id` of what a write created (a comment, a deployment, a check run).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct IdJson {
    pub id: u64,
}

pub(crate) const USER_AGENT: &str = concat!("pullwarden/", env!("CARGO_PKG_VERSION"));

pub(crate) struct CredentialState {
    pub budget: Arc<Budget>,
    pub transport: Arc<dyn Transport>,
    /// Login of the credential's user, resolved once.
    pub identity: tokio::sync::OnceCell<String>,
    sticky_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last body this process wrote per sticky comment (see `forge::sticky`).
    sticky_bodies: Mutex<HashMap<String, (super::types::CommentId, String)>>,
}

/// Sticky comments remembered per credential before the memory starts over.
const STICKY_BODIES_MAX: usize = 10_000;

impl fmt::Debug for CredentialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialState")
            .field("budget", &self.budget)
            .field("identity", &self.identity.get())
            .finish()
    }
}

impl CredentialState {
    pub fn new(budget: Arc<Budget>, transport: Arc<dyn Transport>) -> Self {
        CredentialState {
            budget,
            transport,
            identity: tokio::sync::OnceCell::new(),
            sticky_locks: Mutex::new(HashMap::new()),
            sticky_bodies: Mutex::new(HashMap::new()),
        }
    }

    fn bodies(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (super::types::CommentId, String)>> {
        self.sticky_bodies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The comment and body this process last wrote under `key`.
    pub fn sticky_body(&self, key: &str) -> Option<(super::types::CommentId, String)> {
        self.bodies().get(key).cloned()
    }

    pub fn remember_sticky(&self, key: String, id: super::types::CommentId, body: String) {
        let mut bodies = self.bodies();
        if bodies.len() >= STICKY_BODIES_MAX && !bodies.contains_key(&key) {
            bodies.clear();
        }
        bodies.insert(key, (id, body));
    }

    pub fn forget_sticky(&self, key: &str) {
        self.bodies().remove(key);
    }

    pub fn forget_all_sticky(&self) {
        self.bodies().clear();
    }

    /// Serialise find-then-create of one sticky comment so two reconciles cannot both create.
    pub async fn sticky_lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self
                .sticky_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Drop locks nobody holds so the map stays as small as the set of in-flight upserts.
            locks.retain(|_, m| Arc::strong_count(m) > 1);
            locks.entry(key).or_default().clone()
        };
        m.lock_owned().await
    }

    pub async fn execute(&self, req: &ApiRequest) -> Result<ApiResponse, ForgeError> {
        self.budget.execute(self.transport.as_ref(), req).await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        url: &str,
        endpoint: &'static str,
    ) -> Result<T, ForgeError> {
        self.execute(&ApiRequest::get(url, endpoint)).await?.json()
    }

    pub async fn get_all<T: DeserializeOwned>(
        &self,
        url: &str,
        endpoint: &'static str,
    ) -> Result<Vec<T>, ForgeError> {
        self.budget
            .get_all_items(self.transport.as_ref(), url, endpoint)
            .await
    }

    pub async fn get_pages(
        &self,
        url: &str,
        endpoint: &'static str,
    ) -> Result<Vec<ApiResponse>, ForgeError> {
        self.budget
            .get_all(self.transport.as_ref(), url, endpoint)
            .await
    }

    /// Creates or edits a comment (`{"body": …}`) and returns its id: the one comment write
    /// of every provider's sticky-comment calls.
    pub async fn send_comment(
        &self,
        method: Method,
        url: &str,
        endpoint: &'static str,
        body: &str,
        idempotent: bool,
    ) -> Result<super::CommentId, ForgeError> {
        let created: IdJson = self
            .send(
                method,
                url,
                endpoint,
                serde_json::json!({ "body": body }),
                idempotent,
            )
            .await?;
        Ok(super::CommentId(created.id))
    }

    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        endpoint: &'static str,
        body: serde_json::Value,
        idempotent: bool,
    ) -> Result<T, ForgeError> {
        self.execute(&ApiRequest::write(method, url, endpoint, body, idempotent))
            .await?
            .json()
    }

    /// A write whose response body we do not need (some return 204 or an empty body).
    pub async fn send_unit(
        &self,
        method: Method,
        url: &str,
        endpoint: &'static str,
        body: serde_json::Value,
        idempotent: bool,
    ) -> Result<(), ForgeError> {
        self.execute(&ApiRequest::write(method, url, endpoint, body, idempotent))
            .await
            .map(|_| ())
    }
}

/// `base` + `path` + query (values form-encoded).
pub(crate) fn api_url(base: &str, path: &str, query: &[(&str, &str)]) -> String {
    let mut url = format!("{}{}", base.trim_end_matches('/'), path);
    if !query.is_empty() {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            ser.append_pair(k, v);
        }
        url.push('?');
        url.push_str(&ser.finish());
    }
    url
}

/// A reqwest client with our timeouts, user agent and optional private CA (added to, never
/// replacing, the system roots; TLS verification is never disabled). With a guard, every
/// connection goes through it (`crate::net`); redirects are followed on the same origin only
/// either way, so a credential header never reaches another host.
pub(crate) fn http_client(
    guard: Option<&Guard>,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::Client, ForgeError> {
    let builder = match guard {
        Some(g) => g.reqwest_builder(),
        None => reqwest::Client::builder().redirect(crate::net::redirect_policy()),
    };
    let mut builder = builder
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .user_agent(USER_AGENT);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            ForgeError::invalid_config(format!("caSecretRef does not hold PEM certificates: {e}"))
        })?;
        if certs.is_empty() {
            return Err(ForgeError::invalid_config(
                "caSecretRef holds no PEM certificate",
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| ForgeError::invalid_config(format!("cannot build HTTP client: {e}")))
}

/// Map a reqwest transport error: a guard refusal is `OutboundRefused` (nothing was sent);
/// everything else on the wire is worth a retry.
pub(crate) fn reqwest_error(e: &reqwest::Error) -> ForgeError {
    if let Some(refusal) = crate::net::find_refusal(e) {
        return ForgeError::refused(refusal);
    }
    if e.is_builder() {
        ForgeError::invalid_config(format!("bad request: {e}"))
    } else if e.is_timeout() {
        ForgeError::transient(format!("timeout: {e}"))
    } else {
        ForgeError::transient(format!("connection error: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls() {
        assert_eq!(
            api_url(
                "https://api.github.com/",
                "/repos/o/r/pulls",
                &[("state", "open"), ("per_page", "100")]
            ),
            "https://api.github.com/repos/o/r/pulls?state=open&per_page=100"
        );
        assert_eq!(
            api_url(
                "https://h/api/v4",
                "/projects/a%2Fb",
                &[("environment", "pr 1/x")]
            ),
            "https://h/api/v4/projects/a%2Fb?environment=pr+1%2Fx"
        );
    }

    #[test]
    fn rejects_bad_ca() {
        let e = http_client(None, Some(b"not a cert"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.category(), "InvalidConfig");
    }
}
