//! A VIP's pool: its backends in config order, the balancing state, and the selection
//! API shared by the L4 and L7 proxies.
//!
//! [`Pool::select`] picks a backend for one connection or request given the client
//! address and the backends already tried for it, and returns a [`Lease`] that counts
//! the connection as active until dropped. Primaries are chosen first; backups only
//! when no primary remains (none in rotation, or every one already tried). The caller
//! reports the outcome with [`Pool::report_failure`] / [`Pool::report_success`],
//! which feed passive ejection ([`crate::outlier`]).
//!
//! A pool is immutable apart from its backends' atomics and the round-robin state; a
//! reload builds a new pool reusing the `Arc<Backend>`s of unchanged backends and the
//! VIP swaps it in whole.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shared::config::{Balance, EjectionConfig};
use tokio::time::Instant;

use crate::backend::{Backend, Lease};
use crate::balance::{self, Candidate, SmoothWrr};
use crate::outlier::FailureOutcome;
use crate::supervisor::Tasks;
use crate::sync::lock;

/// The backends of one VIP and how to choose among them.
pub struct Pool {
    vip: String,
    balance: Balance,
    ejection: EjectionConfig,
    backends: Vec<Arc<Backend>>,
    wrr: Mutex<SmoothWrr>,
    turn: AtomicUsize,
    /// Owner of the readmission timers.
    tasks: Tasks,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("vip", &self.vip)
            .field("balance", &self.balance)
            .field("backends", &self.backends)
            .finish()
    }
}

impl Pool {
    /// A pool over `backends` (config order).
    pub fn new(
        vip: &str,
        balance: Balance,
        ejection: EjectionConfig,
        backends: Vec<Arc<Backend>>,
        tasks: Tasks,
    ) -> Pool {
        let n = backends.len();
        Pool {
            vip: vip.to_string(),
            balance,
            ejection,
            backends,
            wrr: Mutex::new(SmoothWrr::new(n)),
            turn: AtomicUsize::new(0),
            tasks,
        }
    }

    /// The VIP name.
    pub fn vip(&self) -> &str {
        &self.vip
    }

    /// The selection algorithm.
    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// Every backend, config order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backend named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// Backends up and in rotation (for `/status` and `min_healthy`).
    pub fn healthy(&self) -> usize {
        self.backends.iter().filter(|b| b.healthy()).count()
    }

    /// Active connections over all backends.
    pub fn active(&self) -> u64 {
        self.backends.iter().map(|b| b.active()).sum()
    }

    /// The candidate set for a pick: in-rotation primaries not in `exclude`, or, when
    /// there are none, in-rotation backups not in `exclude`.
    pub fn candidates(&self, exclude: &[usize]) -> Vec<Candidate> {
        let pick = |backup: bool| -> Vec<Candidate> {
            self.backends
                .iter()
                .enumerate()
                .filter(|(i, b)| b.is_backup() == backup && !exclude.contains(i) && b.in_rotation())
                .map(|(i, b)| Candidate {
                    index: i,
                    weight: b.weight(),
                    active: b.active(),
                    key: b.key(),
                })
                .collect()
        };
        let primaries = pick(false);
        if primaries.is_empty() {
            pick(true)
        } else {
            primaries
        }
    }

    /// Picks a backend for a connection/request from `client`, skipping the pool
    /// indices in `exclude` (already tried), and counts it active. `None` when no
    /// backend is left.
    pub fn select(&self, client: IpAddr, exclude: &[usize]) -> Option<Lease> {
        let candidates = self.candidates(exclude);
        let index = match self.balance {
            Balance::RoundRobin => lock(&self.wrr).pick(&candidates),
            Balance::LeastConn => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                balance::least_conn(&candidates, turn)
            }
            Balance::SourceHash => balance::source_hash(&candidates, balance::client_key(client)),
        }?;
        let backend = self.backends.get(index)?;
        Some(backend.acquire(index))
    }

    /// A connection or request to the lease's backend succeeded.
    pub fn report_success(&self, lease: &Lease) {
        lease.backend().metrics.connections.increment(1);
        lease.backend().outlier.success();
    }

    /// A connection or request to the lease's backend failed (connect refused or timed
    /// out; for L7 a 5xx or gateway failure). May eject it; returns what happened.
    pub fn report_failure(&self, lease: &Lease) -> FailureOutcome {
        let backend = lease.backend();
        let now = Instant::now();
        let others_ejected = self
            .backends
            .iter()
            .filter(|b| !Arc::ptr_eq(b, backend) && b.is_ejected())
            .count();
        let (outcome, until) =
            backend
                .outlier
                .failure(&self.ejection, now, others_ejected, self.backends.len());
        if let FailureOutcome::Ejected(_) = outcome {
            backend.set_ejected_until(until);
        }
        match outcome {
            FailureOutcome::Ejected(time) => {
                backend.metrics.ejections.increment(1);
                backend.record_event(format!(
                    "ejected for {}: {} consecutive failures",
                    humantime_short(time),
                    self.ejection.consecutive_failures
                ));
                schedule_readmit_event(&self.tasks, Arc::clone(backend), now + time);
            }
            FailureOutcome::CapReached => {
                tracing::warn!(
                    backend = %backend.id(),
                    "not ejected: {} % of the pool is already ejected",
                    self.ejection.max_percent
                );
            }
            FailureOutcome::Counted | FailureOutcome::AlreadyEjected => {}
        }
        outcome
    }
}

fn humantime_short(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Records `readmitted` when the ejection ends (ejection itself needs no timer: the
/// deadline is checked on every pick).
fn schedule_readmit_event(tasks: &Tasks, backend: Arc<Backend>, until: Instant) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let stop = tasks.child_token();
    tasks.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(until) => {}
        }
        let still = backend.outlier.is_ejected(Instant::now());
        if !still && !backend.is_ejected() {
            backend.record_event("readmitted after ejection");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AdminState;
    use shared::config::BackendConfig;
    use shared::events::EventLog;
    use std::time::Duration;

    fn pool(balance: Balance, specs: &[(&str, u32, bool)]) -> Pool {
        let events = Arc::new(EventLog::default());
        let backends = specs
            .iter()
            .enumerate()
            .map(|(i, (name, weight, backup))| {
                let cfg = BackendConfig {
                    name: name.to_string(),
                    address: format!("127.0.0.1:{}", 10_000 + i).parse().expect("addr"),
                    weight: *weight,
                    backup: *backup,
                };
                Backend::new("v", &cfg, events.clone())
            })
            .collect();
        Pool::new(
            "v",
            balance,
            EjectionConfig {
                consecutive_failures: 2,
                base_time: Duration::from_secs(30),
                max_time: Duration::from_secs(300),
                max_percent: 50,
                reset_after: Duration::from_secs(60),
            },
            backends,
            Tasks::new(),
        )
    }

    fn ip() -> IpAddr {
        "127.0.0.1".parse().expect("ip")
    }

    #[test]
    fn weights_honoured_through_the_pool() {
        let p = pool(
            Balance::RoundRobin,
            &[("a", 1, false), ("b", 2, false), ("c", 3, false)],
        );
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            let lease = p.select(ip(), &[]).expect("pick");
            counts[lease.index()] += 1;
        }
        assert_eq!(counts, [1000, 2000, 3000]);
        assert_eq!(p.active(), 0, "leases gave their counts back");
    }

    #[test]
    fn backups_only_when_no_primary_in_rotation() {
        let p = pool(
            Balance::RoundRobin,
            &[("a", 1, false), ("b", 1, false), ("s", 5, true)],
        );
        for _ in 0..100 {
            assert_ne!(p.select(ip(), &[]).expect("pick").backend().name(), "s");
        }
        p.backends()[0].set_admin(AdminState::Drain, "test");
        for _ in 0..100 {
            assert_eq!(p.select(ip(), &[]).expect("pick").backend().name(), "b");
        }
        // Every primary tried: the backup is the retry target.
        assert_eq!(p.select(ip(), &[1]).expect("pick").backend().name(), "s");
        p.backends()[1].set_admin(AdminState::Drain, "test");
        for _ in 0..10 {
            assert_eq!(p.select(ip(), &[]).expect("pick").backend().name(), "s");
        }
        assert!(p.select(ip(), &[2]).is_none());
    }

    #[test]
    fn least_conn_counts_leases() {
        let p = pool(Balance::LeastConn, &[("a", 1, false), ("b", 1, false)]);
        let first = p.select(ip(), &[]).expect("pick");
        let second = p.select(ip(), &[]).expect("pick");
        assert_ne!(first.index(), second.index());
        let held = first;
        drop(second);
        for _ in 0..10 {
            let l = p.select(ip(), &[]).expect("pick");
            assert_ne!(l.index(), held.index(), "the busy backend is avoided");
        }
    }

    #[tokio::test]
    async fn failures_eject_within_max_percent() {
        let p = pool(Balance::RoundRobin, &[("a", 1, false), ("b", 1, false)]);
        let a = p.select(ip(), &[1]).expect("a");
        assert_eq!(p.report_failure(&a), FailureOutcome::Counted);
        assert!(matches!(p.report_failure(&a), FailureOutcome::Ejected(_)));
        assert!(p.backends()[0].is_ejected());
        assert_eq!(p.backends()[0].state_str(), "ejected");
        for _ in 0..10 {
            assert_eq!(p.select(ip(), &[]).expect("pick").index(), 1);
        }
        let b = p.select(ip(), &[]).expect("b");
        p.report_failure(&b);
        assert_eq!(
            p.report_failure(&b),
            FailureOutcome::CapReached,
            "50 % of 2 is 1"
        );
        assert!(!p.backends()[1].is_ejected());
        // The operator's `ready` readmits.
        p.backends()[0].set_admin(AdminState::Ready, "test");
        assert!(!p.backends()[0].is_ejected());
    }

    #[tokio::test]
    async fn wait_drained_wakes_on_last_release() {
        let p = pool(Balance::RoundRobin, &[("a", 1, false)]);
        let lease = p.select(ip(), &[]).expect("pick");
        let b = Arc::clone(lease.backend());
        assert!(!b.wait_drained(Duration::from_millis(50)).await);
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.wait_drained(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(lease);
        assert!(waiter.await.expect("join"));
    }
}
