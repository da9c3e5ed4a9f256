//! Leader election with a `coordination.k8s.io/v1` Lease, so that with several replicas exactly
//! one runs the controllers (the only writer of status and children).
//!
//! Like client-go, expiry is judged by when *this* replica last saw the lease record change,
//! not by the `renewTime` written by another machine, so clock skew between nodes cannot make
//! two replicas leaders. All writes use the lease's `resourceVersion` (optimistic concurrency):
//! of two replicas racing for an expired lease, exactly one write succeeds.
//!
//! Timeline: the leader renews every `retry_period`; if it cannot renew for `renew_deadline` it
//! gives up (the process stops its controllers and exits); a standby takes over once the record
//! has not changed for `lease_duration` (> `renew_deadline`, so the old leader has stopped).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        ElectionConfig {
            lease_name: "pullwarden-leader".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The record as last observed, and when it last changed (local monotonic clock).
#[derive(Clone, Debug)]
pub struct Observed {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub changed_at: Instant,
}

/// Whether `identity` may take (or keep) the lease given what was observed.
pub fn may_acquire(
    observed: Option<&Observed>,
    identity: &str,
    now: Instant,
    lease_duration: Duration,
) -> bool {
    match observed {
        None => true,
        Some(o) => match o.holder.as_deref() {
            None | Some("") => true,
            Some(h) if h == identity => true,
            Some(_) => now.duration_since(o.changed_at) >= lease_duration,
        },
    }
}

/// Campaigns for and holds the lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: ElectionConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone();
        let renew = spec.renew_time.as_ref().map(|t| t.0.to_string());
        let unchanged = self
            .observed
            .as_ref()
            .is_some_and(|o| o.holder == holder && o.renew_time == renew);
        if !unchanged {
            self.observed = Some(Observed {
                holder,
                renew_time: renew,
                changed_at: Instant::now(),
            });
        }
    }

    /// One attempt to acquire or renew. `Ok(true)`: we hold the lease now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15);
        let existing = self.api.get_opt(&self.config.lease_name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        if !may_acquire(
            self.observed.as_ref(),
            &self.config.identity,
            Instant::now(),
            self.config.lease_duration,
        ) {
            return Ok(false);
        }
        let mut spec = lease.spec.clone().unwrap_or_default();
        let was_ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        if !was_ours {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                if !was_ours {
                    info!(identity = %self.config.identity, "acquired leadership");
                }
                Ok(true)
            }
            // Someone else wrote first: they won this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease (or `shutdown` resolves: `false`).
    pub async fn acquire(&mut self, shutdown: impl std::future::Future<Output = ()>) -> bool {
        tokio::pin!(shutdown);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: could not read or write the lease"),
            }
            tokio::select! {
                _ = &mut shutdown => return false,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Renews until renewal fails for `renew_deadline` (leadership lost: returns) — the caller
    /// must stop acting as leader at once.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    warn!("leader election: another replica holds the lease");
                    return;
                }
                Err(e) => warn!(error = %e, "leader election: renewal failed"),
            }
            if last_renewed.elapsed() >= self.config.renew_deadline {
                warn!("leader election: could not renew within the deadline");
                return;
            }
        }
    }

    /// Gives the lease up (on a clean shutdown) so a standby takes over without waiting.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released leadership"),
            Err(e) => warn!(error = %e, "could not release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_judged_by_local_observation() {
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let other = Observed {
            holder: Some("b".into()),
            renew_time: Some("x".into()),
            changed_at: t0,
        };
        assert!(!may_acquire(
            Some(&other),
            "a",
            t0 + Duration::from_secs(14),
            d
        ));
        assert!(may_acquire(
            Some(&other),
            "a",
            t0 + Duration::from_secs(15),
            d
        ));
        assert!(
            may_acquire(Some(&other), "b", t0, d),
            "the holder may always renew"
        );
        let released = Observed {
            holder: None,
            renew_time: None,
            changed_at: t0,
        };
        assert!(may_acquire(Some(&released), "a", t0, d));
        assert!(may_acquire(None, "a", t0, d));
    }
}
