//! The webhook ingress's view of Repositories: which objects follow a repository URL, with
//! which webhook secret, and how to poke them.
//!
//! It keeps its own reflector of Repositories (cheap: one watch), so it works the same on every
//! replica. Secrets are read per delivery (a GET by name) rather than watched: watching Secrets
//! would need list/watch on every Secret in the cluster.

use crate::api::{Provider, Repository};
use crate::context::{Context, WEBHOOK_RECEIVED_AT};
use crate::webhook::{
    self, ForgeEvent, ObjectKey, RepositoryDirectory, WebhookCandidate, WebhookSecret,
};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{debug, warn};

/// Repository lookup backed by a reflector store.
#[derive(Clone)]
pub struct KubeDirectory {
    ctx: Context,
    store: Store<Repository>,
}

impl std::fmt::Debug for KubeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDirectory").finish_non_exhaustive()
    }
}

impl KubeDirectory {
    /// Starts the reflector (runs until the process ends) and returns the directory.
    pub fn start(ctx: Context) -> Self {
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
        KubeDirectory { ctx, store }
    }
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
        let mut out = Vec::new();
        for repo in self.store.state() {
            let Some(verification) = &repo.spec.webhook else {
                continue;
            };
            if !provider_matches(forge, repo.spec.provider) {
                continue;
            }
            let Some(url) = webhook::canonicalize_repo_url(&repo.spec.url) else {
                continue;
            };
            if !repository_urls.contains(&url) {
                continue;
            }
            let namespace = repo.namespace().unwrap_or_default();
            match super::refs::secret_key(
                &self.ctx,
                &namespace,
                &verification.secret_ref.name,
                &verification.key,
            )
            .await
            {
                Ok(secret) => out.push(WebhookCandidate {
                    target: ObjectKey::new(namespace, repo.name_any()),
                    secret: WebhookSecret::new(secret),
                }),
                // The Repository controller reports the missing Secret on the object; here the
                // candidate simply cannot verify.
                Err(e) => {
                    debug!(repository = %repo.name_any(), error = %e, "webhook secret unavailable")
                }
            }
        }
        out
    }

    async fn notify(&self, targets: &[ObjectKey], event: &ForgeEvent) {
        let now = jiff::Timestamp::now();
        for t in targets {
            debug!(namespace = %t.namespace, name = %t.name, event = %event.event_name, "webhook accepted");
            if self.ctx.is_leader() {
                self.ctx
                    .triggers
                    .repository_event((t.namespace.clone(), t.name.clone()), now);
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
}
