//! A VIP at run time: its listener slot (kept across reloads while the listen address
//! and mode stay the same), whose current config + pool ([`VipState`]) it reads
//! lock-free per connection from the lb's one snapshot (replaced whole, once, per
//! reload), and the connection
//! admission limits (`max_connections`, `max_connections_per_source`) enforced by a
//! [`ConnGuard`] that gives its counts back on drop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge};
use shared::config::{VipConfig, VipMode};
use shared::status::{BackendStatus, VipStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pool::Pool;
use crate::supervisor::Tasks;
use crate::sync::lock;

/// Connection counts over the whole lb, for shutdown draining.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub active: AtomicU64,
    pub idle: Notify,
}

/// The config and pool a VIP serves with right now.
pub struct VipState {
    /// The VIP's (validated) config.
    pub cfg: VipConfig,
    /// Its pool.
    pub pool: Arc<Pool>,
    pub(crate) retries: Counter,
    pub(crate) refused_no_backend: Counter,
    pub(crate) refused_max: Counter,
    pub(crate) refused_per_source: Counter,
}

impl VipState {
    pub(crate) fn new(cfg: VipConfig, pool: Arc<Pool>) -> VipState {
        let vip = cfg.name.clone();
        let refused = |reason: &'static str| metrics::counter!(crate::metrics::REFUSED_TOTAL, "vip" => vip.clone(), "reason" => reason);
        VipState {
            retries: metrics::counter!(crate::metrics::RETRIES_TOTAL, "vip" => vip.clone()),
            refused_no_backend: refused("no_backend"),
            refused_max: refused("max_connections"),
            refused_per_source: refused("max_per_source"),
            cfg,
            pool,
        }
    }

    /// The `/status` view of this VIP.
    pub fn status(&self) -> VipStatus {
        let healthy = self.pool.healthy();
        VipStatus {
            name: self.cfg.name.clone(),
            up: healthy >= self.cfg.min_healthy,
            healthy,
            total: self.pool.backends().len(),
            backends: self
                .pool
                .backends()
                .iter()
                .map(|b| BackendStatus {
                    name: b.name().to_string(),
                    state: b.state_str().to_string(),
                    admin: b.admin().as_str().to_string(),
                    active: b.active(),
                })
                .collect(),
        }
    }
}

/// One VIP's listener and connection counters.
pub struct VipSlot {
    /// The configured listen address.
    pub configured: SocketAddr,
    /// The bound address (differs from `configured` when it asked for port 0).
    pub local: SocketAddr,
    /// Listener kind.
    pub mode: VipMode,
    /// The lb's snapshot, where this slot's current config and pool are
    /// ([`VipSlot::state`]); weak, as the snapshot holds the slot.
    snapshot: Weak<ArcSwap<crate::Snapshot>>,
    active: AtomicU64,
    per_source: Mutex<HashMap<IpAddr, u32>>,
    pub(crate) cancel: CancellationToken,
    /// Cancelled (a latch) once the lb may accept: an upgraded process holds its
    /// inherited listeners closed to clients until its probes have spoken.
    pub(crate) opened: CancellationToken,
    /// The lb's task owner: connection tasks of this VIP are spawned through it.
    pub(crate) tasks: Tasks,
    totals: Arc<Totals>,
    gauge: Gauge,
    /// Connections accepted per data-path worker: `portico_lb_accepted_total{vip,worker}`
    /// and its value here ([`VipSlot::accepted`]).
    accepted: Vec<(Counter, AtomicU64)>,
}

impl VipSlot {
    pub(crate) fn new(
        cfg: &VipConfig,
        local: SocketAddr,
        snapshot: Weak<ArcSwap<crate::Snapshot>>,
        cancel: CancellationToken,
        opened: CancellationToken,
        tasks: Tasks,
        totals: Arc<Totals>,
    ) -> VipSlot {
        let gauge =
            metrics::gauge!(crate::metrics::VIP_CONNECTIONS_ACTIVE, "vip" => cfg.name.clone());
        let accepted = (0..tasks.workers())
            .map(|w| {
                let c = metrics::counter!(crate::metrics::ACCEPTED_TOTAL, "vip" => cfg.name.clone(), "worker" => w.to_string());
                (c, AtomicU64::new(0))
            })
            .collect();
        VipSlot {
            configured: cfg.listen,
            local,
            mode: cfg.mode,
            snapshot,
            active: AtomicU64::new(0),
            per_source: Mutex::new(HashMap::new()),
            cancel,
            opened,
            tasks,
            totals,
            gauge,
            accepted,
        }
    }

    /// Counts a client connection accepted by worker `worker`'s listener (before
    /// admission: refused clients count too), so an operator sees how the kernel
    /// spreads a VIP's connections over the workers.
    pub(crate) fn count_accept(&self, worker: usize) {
        if let Some((c, n)) = self.accepted.get(worker % self.accepted.len().max(1)) {
            c.increment(1);
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Client connections accepted so far by each data-path worker's listener
    /// (one entry without workers).
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .collect()
    }

    /// This slot's current config and pool, from the lb's snapshot; `None` once the
    /// slot is no longer in it (a reload removed the VIP, or the lb is gone), when its
    /// listener stops and its connections go on with the state they started with.
    pub(crate) fn state(&self) -> Option<Arc<VipState>> {
        let snapshot = self.snapshot.upgrade()?;
        let current = snapshot.load();
        current.state_of(self).cloned()
    }

    /// The lb's whole current snapshot (for a reader that needs more than this
    /// slot's [`VipState`] from one load: the L7 proxy's settings); `None` once the
    /// lb is gone.
    pub(crate) fn snapshot(&self) -> Option<Arc<crate::Snapshot>> {
        Some(self.snapshot.upgrade()?.load_full())
    }

    /// Waits until the lb opens; false when the slot was cancelled first.
    pub(crate) async fn wait_open(&self) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = self.opened.cancelled() => true,
        }
    }

    /// Client connections open on this VIP.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }
}

/// Why a client was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` reached.
    MaxConnections,
    /// `max_connections_per_source` reached for this client address.
    PerSource,
}

/// One admitted client connection; dropping it gives back the VIP, per-source and
/// lb-wide counts.
pub(crate) struct ConnGuard {
    slot: Arc<VipSlot>,
    source: Option<IpAddr>,
}

impl ConnGuard {
    /// Admits a connection from `ip` under `cfg`'s limits.
    pub(crate) fn admit(
        slot: &Arc<VipSlot>,
        ip: IpAddr,
        cfg: &VipConfig,
    ) -> Result<ConnGuard, Refusal> {
        // Exact with several workers admitting at once: the VIP's count moves by one
        // compare-and-swap that never goes past the limit (an increment taken back
        // would, for an instant, refuse a client admitted elsewhere at that moment);
        // with a per-source limit the whole decision is made under its lock, so the
        // undo below is seen by no other admission of this VIP.
        let max = cfg.max_connections.map_or(u64::MAX, u64::from);
        let take = || {
            slot.active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .map(|_| ())
                .map_err(|_| Refusal::MaxConnections)
        };
        let source = match cfg.max_connections_per_source {
            Some(per) => {
                let mut map = lock(&slot.per_source);
                take()?;
                let n = map.entry(ip).or_insert(0);
                if *n >= per {
                    if *n == 0 {
                        map.remove(&ip);
                    }
                    slot.active.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::PerSource);
                }
                *n += 1;
                Some(ip)
            }
            None => {
                take()?;
                None
            }
        };
        slot.totals.active.fetch_add(1, Ordering::AcqRel);
        slot.gauge.increment(1.0);
        Ok(ConnGuard {
            slot: Arc::clone(slot),
            source,
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(ip) = self.source {
            let mut map = lock(&self.slot.per_source);
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.slot.gauge.decrement(1.0);
        self.slot.active.fetch_sub(1, Ordering::AcqRel);
        if self.slot.totals.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.slot.totals.idle.notify_waiters();
        }
    }
}
