//! Leader election on a `coordination.k8s.io/v1` Lease, so only one operator
//! replica reconciles. Writes use the Lease's resourceVersion (optimistic
//! concurrency): two candidates can never both win the same term.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;

/// Which Lease to hold and how.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This process's identity, written to `holderIdentity`.
    pub identity: String,
    /// Time after the last renewal at which others may take over.
    pub lease_duration: Duration,
    /// How often the holder renews (and candidates retry).
    pub renew_interval: Duration,
}

/// A Lease handle for one candidate.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderConfig,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// Creates a candidate; nothing is written until [`Elector::try_acquire`].
    pub fn new(client: Client, cfg: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    /// The configuration this elector uses.
    pub fn config(&self) -> &LeaderConfig {
        &self.cfg
    }

    /// Takes or renews the Lease; `Ok(false)` when someone else holds it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = self.cfg.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let held_for =
            SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).into());
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|r| r.0 + held_for < now);
        if !(mine || free || expired) {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::debug!(lease = %self.cfg.name, "lease held by another replica")
                }
                Err(e) => tracing::warn!(error = %e, "lease acquire failed"),
            }
            tokio::time::sleep(self.cfg.renew_interval).await;
        }
    }

    /// Renews forever; returns once the Lease is lost or could not be renewed
    /// for a whole lease duration (another replica may hold it by then).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_interval).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            if last_ok.elapsed() >= self.cfg.lease_duration {
                return;
            }
        }
    }

    /// Gives the Lease up on clean shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "lease release failed");
        }
    }
}
