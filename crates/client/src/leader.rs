//! Leader election through a `coordination.k8s.io/v1` Lease, with client-go's
//! `leaderelection` semantics: a candidate takes the lease when it is free or its holder has
//! not renewed it for `lease_duration` (measured on the candidate's own clock, from when it
//! last saw the record change, so clocks need not agree); the leader renews every
//! `retry_period` and gives up leadership when it could not renew for `renew_deadline`.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> Result<(), h8s_client::leader::Error> {
//! use h8s_client::leader::{Config, Elector, Outcome};
//! let mut e = Elector::new(client, Config::new("kube-scheduler", "host_1234"));
//! loop {
//!     e.acquire().await?;
//!     match e.hold(async { /* the component */ }).await? {
//!         Outcome::Finished(()) => break,
//!         Outcome::Lost => continue, // stopped; stand again
//!     }
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// The timings and names of one election.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease's name (`kube-controller-manager`, `kube-scheduler`).
    pub lease_name: String,
    /// The Lease's namespace (`kube-system`).
    pub namespace: String,
    /// This candidate's identity, unique among candidates (`hostname_random`).
    pub identity: String,
    /// How long a non-leader waits after the last observed renewal before taking over
    /// (`--leader-elect-lease-duration`, 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership
    /// (`--leader-elect-renew-deadline`, 10 s).
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews
    /// (`--leader-elect-retry-period`, 2 s).
    pub retry_period: Duration,
}

impl Config {
    /// Kubernetes' defaults for lease `name` in `kube-system`.
    pub fn new(name: &str, identity: &str) -> Self {
        Config {
            lease_name: name.to_string(),
            namespace: "kube-system".to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid leader election timings: lease duration {lease:?} must exceed renew deadline {renew:?}, which must exceed retry period {retry:?}")]
    Timings {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
    #[error("leader election identity is empty")]
    NoIdentity,
}

/// How [`Elector::hold`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The future finished while this candidate led; the lease was released.
    Finished(T),
    /// The lease could not be renewed in time (or another holder took it): the future was
    /// dropped.
    Lost,
}

/// One candidate.
pub struct Elector {
    api: Api<Lease>,
    cfg: Config,
    /// The last record seen and when (on this clock) it last changed.
    observed: Option<(LeaseSpec, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, cfg: Config) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    fn check(&self) -> Result<(), Error> {
        let c = &self.cfg;
        if c.identity.is_empty() {
            return Err(Error::NoIdentity);
        }
        if c.lease_duration <= c.renew_deadline || c.renew_deadline <= c.retry_period {
            return Err(Error::Timings {
                lease: c.lease_duration,
                renew: c.renew_deadline,
                retry: c.retry_period,
            });
        }
        Ok(())
    }

    /// Whether this candidate held the lease at its last successful try.
    pub fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|(r, _)| r.holder_identity.as_deref() == Some(self.cfg.identity.as_str()))
    }

    /// Waits until this candidate holds the lease (trying every retry period, jittered).
    pub async fn acquire(&mut self) -> Result<(), Error> {
        self.check()?;
        loop {
            if self.try_acquire_or_renew().await {
                tracing::info!(lease = %self.cfg.lease_name, identity = %self.cfg.identity, "acquired the lease; leading");
                return Ok(());
            }
            tokio::time::sleep(jittered(self.cfg.retry_period)).await;
        }
    }

    /// Runs `work` while renewing the lease. Returns [`Outcome::Lost`] (dropping `work`)
    /// when renewing fails for the renew deadline; releases the lease when `work` ends.
    pub async fn hold<T, F: Future<Output = T>>(&mut self, work: F) -> Result<Outcome<T>, Error> {
        self.check()?;
        tokio::pin!(work);
        let mut last_renew = Instant::now();
        let mut tick = tokio::time::interval(self.cfg.retry_period);
        tick.tick().await;
        loop {
            tokio::select! {
                out = &mut work => {
                    self.release().await;
                    return Ok(Outcome::Finished(out));
                }
                _ = tick.tick() => {
                    let renewed = tokio::time::timeout(
                        self.cfg.renew_deadline.saturating_sub(last_renew.elapsed()),
                        self.try_acquire_or_renew(),
                    )
                    .await
                    .unwrap_or(false);
                    if renewed {
                        last_renew = Instant::now();
                    } else if !self.held_by_other() && last_renew.elapsed() < self.cfg.renew_deadline {
                        continue;
                    } else {
                        tracing::warn!(lease = %self.cfg.lease_name, identity = %self.cfg.identity, "lost the lease; stopping");
                        return Ok(Outcome::Lost);
                    }
                }
            }
        }
    }

    fn held_by_other(&self) -> bool {
        self.observed.as_ref().is_some_and(|(r, _)| {
            r.holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty() && h != self.cfg.identity)
        })
    }

    /// Gives the lease up (client-go's `ReleaseOnCancel`): holder cleared, duration 1 s.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.lease_name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        spec.acquire_time = Some(now());
        match self
            .api
            .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %self.cfg.lease_name, identity = %self.cfg.identity, "released the lease")
            }
            Err(e) => tracing::debug!(error = %e, "releasing the lease failed"),
        }
        self.observed = None;
    }

    /// One attempt (client-go's `tryAcquireOrRenew`); true when this candidate now holds the
    /// lease.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let c = &self.cfg;
        let lease_secs = i32::try_from(c.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let mine = LeaseSpec {
            holder_identity: Some(c.identity.clone()),
            lease_duration_seconds: Some(lease_secs),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(0),
            ..Default::default()
        };
        let current = match self.api.get_opt(&c.lease_name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, lease = %c.lease_name, "reading the lease failed");
                return false;
            }
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(c.lease_name.clone()),
                    namespace: Some(c.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(mine.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = Some((mine, Instant::now()));
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "creating the lease failed");
                    false
                }
            };
        };
        let old = lease.spec.clone().unwrap_or_default();
        // Track when the record last changed, on our own clock.
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(r, _)| !same_record(r, &old));
        if changed {
            self.observed = Some((old.clone(), Instant::now()));
        }
        let observed_at = self
            .observed
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or_else(Instant::now);
        let holder = old.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(old.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let i_hold = holder == c.identity;
        if !holder.is_empty() && !i_hold && observed_at.elapsed() < duration {
            return false; // held by someone else and not expired
        }
        let mut new = mine;
        if i_hold {
            new.acquire_time = old.acquire_time.clone();
            new.lease_transitions = old.lease_transitions;
        } else {
            new.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new.clone());
        // The replace carries the read resourceVersion: a concurrent taker makes it conflict.
        match self
            .api
            .replace(&c.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((new, Instant::now()));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "updating the lease failed");
                false
            }
        }
    }
}

fn same_record(a: &LeaseSpec, b: &LeaseSpec) -> bool {
    a.holder_identity == b.holder_identity
        && a.lease_duration_seconds == b.lease_duration_seconds
        && a.lease_transitions == b.lease_transitions
        && a.renew_time == b.renew_time
        && a.acquire_time == b.acquire_time
}

/// `d` plus up to 20 % (client-go's `wait.Jitter(retryPeriod, 1.2)`).
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 5000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kubernetes_and_jitter_is_bounded() {
        let c = Config::new("kube-scheduler", "me");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert_eq!(c.namespace, "kube-system");
        let j = jittered(Duration::from_secs(2));
        assert!(j >= Duration::from_secs(2) && j <= Duration::from_millis(2400));
    }
}
