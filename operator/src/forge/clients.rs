//! The client factory shared by all controllers.
//!
//! Flow: `client(kind, coords, creds, ca)` first puts the API base through the outbound guard
//! (when the factory has one, see [`ForgeClients::with_guard`]: IP literals are checked here,
//! names when the guarded resolver resolves them), then computes the credential key
//! `kind | api base | keyed hash(credential) | sha256(CA)` (never the secret itself), reuses or
//! creates the [`CredentialState`] (budget + transport) for that key, and returns a cached
//! per-repository client bound to it. Every controller asking with the same credential therefore
//! shares one quota view, one ETag cache and one GitHub App installation token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Forge;
use super::budget::{Budget, BudgetConfig, Transport};
use super::coords::RepoCoordinates;
use super::credentials::Credentials;
use super::error::ForgeError;
use super::generic::GitForge;
use super::gitea::{GiteaForge, GiteaTransport};
use super::github::{GithubForge, GithubTransport};
use super::gitlab::{GitlabForge, GitlabTransport};
use super::metrics::ForgeMetrics;
use super::shared::CredentialState;
use super::types::ForgeKind;
use crate::net::Guard;

/// Credentials kept at once; beyond it the least recently used (a rotated Secret's old
/// fingerprint, a deleted Repository's token) is dropped together with its clients.
const MAX_CREDENTIALS: usize = 256;
const MAX_CLIENTS: usize = 4_096;

struct CredentialEntry {
    state: Arc<CredentialState>,
    github: Option<Arc<GithubTransport>>,
    last_used: u64,
}

#[derive(Default)]
struct Caches {
    credentials: HashMap<String, CredentialEntry>,
    clients: HashMap<String, (String, Arc<dyn Forge>)>,
    tick: u64,
}

struct Inner {
    metrics: ForgeMetrics,
    config: BudgetConfig,
    /// The outbound guard every client connects through; `None` only for tools and tests
    /// against a loopback forge (the operator always sets it, see `Context::new`).
    guard: Option<Guard>,
    caches: Mutex<Caches>,
}

/// Cheaply cloneable handle to the shared client and budget caches.
#[derive(Clone)]
pub struct ForgeClients {
    inner: Arc<Inner>,
}

impl fmt::Debug for ForgeClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caches = self.caches();
        f.debug_struct("ForgeClients")
            .field("credentials", &caches.credentials.len())
            .field("clients", &caches.clients.len())
            .finish()
    }
}

impl ForgeClients {
    /// A factory without the outbound guard (tools and tests); the operator uses
    /// [`Self::with_guard`].
    pub fn new(metrics: ForgeMetrics, config: BudgetConfig) -> Self {
        Self::build(metrics, config, None)
    }

    /// A factory whose every client (API and plain git) connects through `guard`.
    pub fn with_guard(metrics: ForgeMetrics, config: BudgetConfig, guard: Guard) -> Self {
        Self::build(metrics, config, Some(guard))
    }

    fn build(metrics: ForgeMetrics, config: BudgetConfig, guard: Option<Guard>) -> Self {
        ForgeClients {
            inner: Arc::new(Inner {
                metrics,
                config,
                guard,
                caches: Mutex::new(Caches::default()),
            }),
        }
    }

    /// The outbound guard of this factory, if any.
    pub fn guard(&self) -> Option<&Guard> {
        self.inner.guard.as_ref()
    }

    pub fn metrics(&self) -> &ForgeMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.inner.config
    }

    /// Forgets the sticky-comment bodies this process wrote. Called when it becomes leader: while
    /// it stood by, another replica may have edited those comments.
    pub fn forget_written_comments(&self) {
        for entry in self.caches().credentials.values() {
            entry.state.forget_all_sticky();
        }
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.inner
            .caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of distinct credential budgets alive (observability and tests).
    pub fn budget_count(&self) -> usize {
        self.caches().credentials.len()
    }

    /// A client for `coords` authenticated with `creds`; cached per credential and repository.
    pub fn client(
        &self,
        kind: ForgeKind,
        coords: &RepoCoordinates,
        creds: Credentials,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Arc<dyn Forge>, ForgeError> {
        if coords.kind != kind {
            return Err(ForgeError::invalid_config(format!(
                "repository coordinates were parsed for {} but a {kind} client was requested",
                coords.kind
            )));
        }
        let guard = self.inner.guard.as_ref();
        if kind == ForgeKind::Git {
            // No HTTP API, hence no budget: every call is a git protocol round-trip.
            return Ok(Arc::new(GitForge::new(
                coords.clone(),
                creds,
                ca_pem,
                guard.cloned(),
            )));
        }
        if let Some(g) = guard {
            g.check_url(&coords.api_base)
                .map_err(|r| ForgeError::refused(&r))?;
        }
        let ca_fp = ca_pem
            .as_deref()
            .map(|c| hex::encode(Sha256::digest(c)))
            .unwrap_or_default();
        let cred_key = format!("{kind}|{}|{}|{ca_fp}", coords.api_base, creds.fingerprint());
        let client_key = format!("{cred_key}|{}", coords.canonical_url());

        let mut caches = self.caches();
        caches.tick += 1;
        let tick = caches.tick;
        if let Some(entry) = caches.credentials.get_mut(&cred_key) {
            entry.last_used = tick;
        }
        if let Some((_, client)) = caches.clients.get(&client_key) {
            return Ok(client.clone());
        }

        if !caches.credentials.contains_key(&cred_key) {
            let budget = Arc::new(Budget::new(
                kind,
                &creds.fingerprint(),
                self.inner.config.clone(),
                self.inner.metrics.clone(),
            ));
            let (transport, github): (Arc<dyn Transport>, Option<Arc<GithubTransport>>) = match kind
            {
                ForgeKind::Github => {
                    let t = Arc::new(GithubTransport::new(
                        &coords.api_base,
                        &creds,
                        ca_pem.as_deref(),
                        &self.inner.config,
                        guard,
                    )?);
                    (t.clone(), Some(t))
                }
                ForgeKind::Gitlab => (
                    Arc::new(GitlabTransport::new(
                        &coords.api_base,
                        &creds,
                        ca_pem.as_deref(),
                        &self.inner.config,
                        guard,
                    )?),
                    None,
                ),
                ForgeKind::Gitea => (
                    Arc::new(GiteaTransport::new(
                        &coords.api_base,
                        &creds,
                        ca_pem.as_deref(),
                        &self.inner.config,
                        guard,
                    )?),
                    None,
                ),
                ForgeKind::Git => return Err(git_has_no_api()),
            };
            if caches.credentials.len() >= MAX_CREDENTIALS {
                let oldest = caches
                    .credentials
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    caches.credentials.remove(&oldest);
                    caches.clients.retain(|_, (ck, _)| *ck != oldest);
                }
            }
            caches.credentials.insert(
                cred_key.clone(),
                CredentialEntry {
                    state: Arc::new(CredentialState::new(budget, transport)),
                    github,
                    last_used: tick,
                },
            );
        }
        let entry = &caches.credentials[&cred_key];
        let state = entry.state.clone();
        let client: Arc<dyn Forge> = match kind {
            ForgeKind::Github => {
                let transport = entry.github.clone().ok_or_else(|| {
                    ForgeError::invalid_config("GitHub credential state without a GitHub transport")
                })?;
                Arc::new(GithubForge::new(coords.clone(), state, transport, creds))
            }
            ForgeKind::Gitlab => Arc::new(GitlabForge::new(coords.clone(), state, creds)),
            ForgeKind::Gitea => Arc::new(GiteaForge::new(coords.clone(), state, creds)),
            ForgeKind::Git => return Err(git_has_no_api()),
        };
        if caches.clients.len() >= MAX_CLIENTS {
            // Clients are cheap to rebuild; the budgets they point to survive.
            caches.clients.clear();
        }
        caches
            .clients
            .insert(client_key, (cred_key, client.clone()));
        Ok(client)
    }
}

/// The `Git` kind is served before any budget is built; kept as an error, not a panic.
fn git_has_no_api() -> ForgeError {
    ForgeError::invalid_config("provider git has no HTTP API client")
}
