//! The webhook ingress's view of Repositories: which objects follow a repository URL, with
//! which webhook secret, and how to poke them: a sync-worthy event asks for a Repository sync
//! (and records the delivery time for `status.lastEventTime`); a finished check only names its
//! head SHA to the controllers waiting on checks ([`crate::context::Triggers::head_checks_finished`]).
//!
//! It keeps its own reflector of Repositories (cheap: one watch), so it works the same on every
//! replica. Secrets are read by name rather than watched (watching would need list/watch on
//! every Secret in the cluster), and the work one delivery can cause is bounded *before* any
//! I/O, because deliveries are unauthenticated until a candidate's secret verifies them:
//! - only Repositories that are not suspended, have `spec.webhook`, the delivering forge as
//!   provider and the payload's URL are candidates;
//! - at most [`CandidateLimits::max_candidates`] of them are looked up, chosen by
//!   [`fair_selection`]: recently verified Repositories first, then round-robin across
//!   namespaces (oldest first within and across them), so decoy Repositories that a tenant
//!   points at someone else's URL, in however many objects, cannot crowd out the real one;
//! - each webhook Secret read (also a missing or refused one) is cached for
//!   [`CandidateLimits::secret_cache_ttl`], so a flood of deliveries costs no more API reads
//!   than one delivery per TTL; a rotated secret takes effect within the TTL (the forge
//!   redelivers refused deliveries, and polling covers the gap);
//! - a Secret is used only when it opted in ([`refs::secret_opted_in`]); otherwise that
//!   candidate cannot verify (the Repository controller reports the Secret on the object).

use super::refs;
use crate::api::{Provider, Repository};
use crate::context::{Context, GateHint, HeadEvent, WEBHOOK_RECEIVED_AT};
use crate::webhook::limits::BoundedLru;
use crate::webhook::{
    self, CandidateLimits, ForgeEvent, ObjectKey, RepositoryDirectory, WebhookCandidate,
    WebhookSecret,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long a Repository counts as "recently verified" for [`fair_selection`].
const VERIFIED_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Repositories remembered as verified (least recently verified are forgotten).
const VERIFIED_CAPACITY: usize = 4096;

/// Which key of which Secret holds a Repository's webhook secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// A Repository following the delivery's URL, before its secret is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follower {
    pub target: ObjectKey,
    pub secret: SecretRef,
    /// A delivery verified with its secret recently.
    pub verified_recently: bool,
    /// `metadata.creationTimestamp` in seconds (objects without one sort last).
    pub created: Option<i64>,
}

impl Follower {
    /// Preferred first: recently verified, then older, then by name.
    fn rank(&self) -> (bool, i64, &str) {
        (
            !self.verified_recently,
            self.created.unwrap_or(i64::MAX),
            &self.target.name,
        )
    }
}

/// At most `limit` followers: each namespace's followers in [`Follower::rank`] order, taken
/// round-robin over the namespaces (ordered by their best follower, then name). Pure.
pub fn fair_selection(followers: Vec<Follower>, limit: usize) -> Vec<Follower> {
    let mut by_namespace: BTreeMap<String, Vec<Follower>> = BTreeMap::new();
    for follower in followers {
        by_namespace
            .entry(follower.target.namespace.clone())
            .or_default()
            .push(follower);
    }
    let mut queues: Vec<Vec<Follower>> = by_namespace
        .into_values()
        .map(|mut queue| {
            queue.sort_by(|a, b| a.rank().cmp(&b.rank()));
            // Popped from the back.
            queue.reverse();
            queue
        })
        .collect();
    // Each queue is non-empty; its best follower is at the back.
    queues.sort_by(|a, b| {
        let (a, b) = (&a[a.len() - 1], &b[b.len() - 1]);
        (a.rank(), &a.target.namespace).cmp(&(b.rank(), &b.target.namespace))
    });
    let mut selected = Vec::with_capacity(limit.min(64));
    while selected.len() < limit && queues.iter().any(|q| !q.is_empty()) {
        for queue in &mut queues {
            if selected.len() == limit {
                break;
            }
            if let Some(follower) = queue.pop() {
                selected.push(follower);
            }
        }
    }
    selected
}

/// A cached Secret read: the secret, or `None` when it cannot be used (missing, not opted in,
/// no such key).
#[derive(Clone, Debug)]
struct CachedSecret {
    read_at: Instant,
    secret: Option<WebhookSecret>,
}

/// Repository lookup backed by a reflector store.
#[derive(Clone)]
pub struct KubeDirectory {
    ctx: Context,
    store: Store<Repository>,
    limits: CandidateLimits,
    secrets: Arc<Mutex<BoundedLru<SecretRef, CachedSecret>>>,
    verified: Arc<Mutex<BoundedLru<ObjectKey, Instant>>>,
}

impl std::fmt::Debug for KubeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDirectory")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No await and no partial update under these locks: a poisoned one is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KubeDirectory {
    /// Starts the reflector (runs until the process ends) and returns the directory.
    pub fn start(ctx: Context, limits: CandidateLimits) -> Self {
        let api: Api<Repository> = match &ctx.config.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        let (store, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        tokio::spawn(async move {
            stream
                .for_each(|event| async move {
                    if let Err(e) = event {
                        debug!(error = %e, "webhook directory watch");
                    }
                })
                .await;
        });
        KubeDirectory {
            ctx,
            store,
            secrets: Arc::new(Mutex::new(BoundedLru::new(limits.secret_cache_capacity))),
            verified: Arc::new(Mutex::new(BoundedLru::new(VERIFIED_CAPACITY))),
            limits,
        }
    }

    /// Every Repository that may verify a delivery from `forge` about one of `urls`.
    fn followers(&self, forge: webhook::Forge, urls: &[String], now: Instant) -> Vec<Follower> {
        let verified = lock(&self.verified);
        self.store
            .state()
            .iter()
            .filter(|repo| !repo.spec.suspend && provider_matches(forge, repo.spec.provider))
            .filter_map(|repo| {
                let verification = repo.spec.webhook.as_ref()?;
                let url = webhook::canonicalize_repo_url(&repo.spec.url)?;
                if !urls.contains(&url) {
                    return None;
                }
                let namespace = repo.namespace().unwrap_or_default();
                let target = ObjectKey::new(namespace.clone(), repo.name_any());
                let verified_recently = verified
                    .peek(&target)
                    .is_some_and(|at| now.saturating_duration_since(*at) < VERIFIED_MEMORY);
                Some(Follower {
                    secret: SecretRef {
                        namespace,
                        name: verification.secret_ref.name.clone(),
                        key: verification.key.clone(),
                    },
                    verified_recently,
                    created: repo
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                    target,
                })
            })
            .collect()
    }

    /// The secret of `secret_ref`, from the cache when read within the TTL.
    async fn secret(&self, secret_ref: &SecretRef, now: Instant) -> Option<WebhookSecret> {
        let cached = lock(&self.secrets).get_mut(secret_ref).cloned();
        if let Some(cached) = cached
            && now.saturating_duration_since(cached.read_at) < self.limits.secret_cache_ttl
        {
            return cached.secret;
        }
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &secret_ref.namespace);
        let secret = match api.get_opt(&secret_ref.name).await {
            Ok(found) => usable_secret(found, secret_ref),
            Err(e) => {
                // Not cached: the next delivery tries again.
                debug!(namespace = %secret_ref.namespace, name = %secret_ref.name, error = %e, "webhook secret unavailable");
                return None;
            }
        };
        lock(&self.secrets).insert(
            secret_ref.clone(),
            CachedSecret {
                read_at: now,
                secret: secret.clone(),
            },
        );
        secret
    }
}

/// The webhook secret in a read Secret, if it may be used.
fn usable_secret(found: Option<Secret>, secret_ref: &SecretRef) -> Option<WebhookSecret> {
    let SecretRef {
        namespace, name, ..
    } = secret_ref;
    let Some(secret) = found else {
        debug!(%namespace, %name, "webhook secret not found");
        return None;
    };
    if refs::secret_opted_in(&secret).is_err() {
        warn!(%namespace, %name, "webhook secret ignored: it lacks the label pullwarden.dev/credentials=true");
        return None;
    }
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&secret_ref.key))
        .map(|value| value.0.clone());
    if bytes.is_none() {
        debug!(%namespace, %name, key = %secret_ref.key, "webhook secret has no such key");
    }
    bytes.map(WebhookSecret::new)
}

fn provider_matches(forge: webhook::Forge, provider: Provider) -> bool {
    matches!(
        (forge, provider),
        (webhook::Forge::Github, Provider::Github)
            | (webhook::Forge::Gitlab, Provider::Gitlab)
            | (webhook::Forge::Gitea, Provider::Gitea)
    )
}

#[async_trait::async_trait]
impl RepositoryDirectory for KubeDirectory {
    async fn candidates(
        &self,
        forge: webhook::Forge,
        repository_urls: &[String],
    ) -> Vec<WebhookCandidate> {
        let now = Instant::now();
        let followers = self.followers(forge, repository_urls, now);
        let total = followers.len();
        let selected = fair_selection(followers, self.limits.max_candidates);
        if selected.len() < total {
            debug!(
                total,
                selected = selected.len(),
                "more Repositories follow this repository than are tried per delivery"
            );
        }
        let secrets =
            futures::future::join_all(selected.iter().map(|f| self.secret(&f.secret, now))).await;
        selected
            .into_iter()
            .zip(secrets)
            .filter_map(|(follower, secret)| {
                Some(WebhookCandidate {
                    target: follower.target,
                    secret: secret?,
                })
            })
            .collect()
    }

    fn verified(&self, targets: &[ObjectKey]) {
        let now = Instant::now();
        let mut verified = lock(&self.verified);
        for target in targets {
            verified.insert(target.clone(), now);
        }
    }

    async fn notify(&self, targets: &[ObjectKey], event: &ForgeEvent) {
        let now = jiff::Timestamp::now();
        for t in targets {
            debug!(namespace = %t.namespace, name = %t.name, event = %event.event_name, "webhook accepted");
            if self.ctx.is_leader() {
                self.ctx
                    .triggers
                    .repository_event((t.namespace.clone(), t.name.clone()), now);
                if event.pull_request.is_some() {
                    self.ctx.triggers.gates(GateHint {
                        namespace: t.namespace.clone(),
                        repository: t.name.clone(),
                    });
                }
            } else {
                // A standby has no controllers: hand the hint to the leader through the object.
                let api: Api<Repository> = Api::namespaced(self.ctx.client.clone(), &t.namespace);
                let patch = serde_json::json!({"metadata": {"annotations": {WEBHOOK_RECEIVED_AT: now.to_string()}}});
                if let Err(e) = api
                    .patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    warn!(namespace = %t.namespace, name = %t.name, error = %e, "could not forward a webhook to the leader");
                }
            }
        }
    }

    fn head_checks_finished(&self, targets: &[ObjectKey], event: &ForgeEvent, sha: &str) {
        if !self.ctx.is_leader() {
            // The previews waiting on this head run on the leader, which also re-reads checks
            // on its own schedule; forwarding would cost a Repository write per check.
            debug!(event = %event.event_name, sha, "finished check on a standby: left to the leader's own re-check");
            return;
        }
        for t in targets {
            debug!(namespace = %t.namespace, name = %t.name, event = %event.event_name, sha, "check finished");
            self.ctx.triggers.head_checks_finished(HeadEvent {
                namespace: t.namespace.clone(),
                repository: t.name.clone(),
                sha: sha.to_owned(),
            });
            self.ctx.triggers.gates(GateHint {
                namespace: t.namespace.clone(),
                repository: t.name.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(ns: &str, name: &str, created: i64) -> Follower {
        Follower {
            target: ObjectKey::new(ns, name),
            secret: SecretRef {
                namespace: ns.into(),
                name: format!("{name}-hook"),
                key: "secret".into(),
            },
            verified_recently: false,
            created: Some(created),
        }
    }

    fn names(selected: &[Follower]) -> Vec<String> {
        selected.iter().map(|f| f.target.to_string()).collect()
    }

    #[test]
    fn decoys_in_one_namespace_cannot_crowd_out_another_namespace() {
        // 50 decoys created *before* the real Repository, all in one namespace.
        let mut followers: Vec<Follower> = (0..50)
            .map(|i| follower("attacker", &format!("decoy-{i:02}"), i))
            .collect();
        followers.push(follower("team", "real", 1000));
        let selected = fair_selection(followers, 8);
        assert_eq!(selected.len(), 8);
        assert_eq!(
            names(&selected[..2]),
            ["attacker/decoy-00", "team/real"],
            "one per namespace per round"
        );
    }

    #[test]
    fn round_robin_over_namespaces_oldest_first() {
        let followers = vec![
            follower("b", "b2", 20),
            follower("a", "a1", 5),
            follower("c", "c1", 1),
            follower("b", "b1", 2),
            follower("a", "a2", 30),
        ];
        assert_eq!(
            names(&fair_selection(followers.clone(), 10)),
            ["c/c1", "b/b1", "a/a1", "b/b2", "a/a2"]
        );
        assert_eq!(names(&fair_selection(followers, 2)), ["c/c1", "b/b1"]);
        assert!(fair_selection(Vec::new(), 8).is_empty());
    }

    #[test]
    fn recently_verified_repositories_come_first_even_behind_many_namespaces() {
        // Decoys in twenty namespaces, all older than the real Repository.
        let mut followers: Vec<Follower> = (0..20)
            .map(|i| follower(&format!("ns-{i:02}"), "decoy", i))
            .collect();
        let mut real = follower("team", "real", 1000);
        followers.push(real.clone());
        let selected = fair_selection(followers.clone(), 8);
        assert!(!names(&selected).contains(&"team/real".to_owned()));
        // Once one delivery verified with its secret, it is always tried.
        real.verified_recently = true;
        followers.pop();
        followers.push(real);
        let selected = fair_selection(followers, 8);
        assert_eq!(names(&selected[..1]), ["team/real"]);
    }

    fn secret(labels: &[(&str, &str)], type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hook", "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
            "type": type_,
            "data": data.iter().map(|(k, v)| (k.to_string(), base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v))).collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn only_opted_in_secrets_with_the_key_are_used() {
        let r = SecretRef {
            namespace: "team".into(),
            name: "hook".into(),
            key: "secret".into(),
        };
        let opted = [("pullwarden.dev/credentials", "true")];
        let got = |s: Option<Secret>| usable_secret(s, &r).map(|s| s.expose().to_vec());
        assert_eq!(
            got(Some(secret(&opted, None, &[("secret", "s3")]))),
            Some(b"s3".to_vec())
        );
        assert_eq!(
            got(Some(secret(
                &[],
                Some("pullwarden.dev/credentials"),
                &[("secret", "s3")]
            ))),
            Some(b"s3".to_vec())
        );
        assert_eq!(got(Some(secret(&[], None, &[("secret", "s3")]))), None);
        assert_eq!(
            got(Some(secret(
                &[("pullwarden.dev/credentials", "yes")],
                None,
                &[("secret", "s3")]
            ))),
            None
        );
        assert_eq!(
            got(Some(secret(
                &opted,
                Some("kubernetes.io/service-account-token"),
                &[("secret", "s3")]
            ))),
            None,
            "service-account tokens never qualify"
        );
        assert_eq!(got(Some(secret(&opted, None, &[("other", "s3")]))), None);
        assert_eq!(got(None), None);
    }
}
