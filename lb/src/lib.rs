//! The lb role: one listener per VIP, backend pools with health and admin state,
//! selection algorithms, the L4 proxy and (later) the L7 proxy.
//!
//! [`Lb`] is the supervisor. Its [`supervisor::Tasks`] owns every task it spawns
//! (listeners, checkers, readmission timers, L7 connections) under one root token;
//! every listener is also a child of an "accepting" token, so `stop_accepting`
//! closes the listeners and `shutdown` stops the probes and waits for them. Client
//! connections (L4 and L7) are owned too but run to their end while the lb drains;
//! `shutdown`, called when the drain is over, cuts those still open. The list of VIPs is an [`ArcSwap`] snapshot; each
//! VIP's config + pool another, replaced whole by a reload and read lock-free by the
//! accept loops. See ARCHITECTURE.md for the module map.

pub mod accept_proxy;
pub mod access;
pub mod admin;
pub mod backend;
pub mod balance;
mod checker;
pub mod error;
pub mod http;
pub mod l4;
pub mod metrics;
pub mod outlier;
pub mod pool;
pub mod supervisor;
mod sync;
pub mod vip;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use shared::admin::AdminHandler;
use shared::config::{ProbeConfig, VipConfig, VipMode};
use shared::events::EventLog;
use shared::intent::IntentStore;
use shared::probe::{BuildError, Probe};
use shared::status::VipStatus;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use checker::Checker;
use supervisor::Tasks;

pub use backend::{AdminState, Backend, Health, LastCheck, Lease};
pub use error::{LbError, ProxyError, Side};
/// Kept at the crate root: the fuzz target `greeting` calls `lb::greeting::judge`.
pub use l4::greeting;
pub use pool::Pool;
pub use vip::{VipSlot, VipState};

use vip::Totals;

/// Builds the probe for one backend; [`shared::probe::build`] unless a test injects
/// its own.
pub type ProbeFactory =
    Arc<dyn Fn(&ProbeConfig, SocketAddr) -> Result<Arc<dyn Probe>, BuildError> + Send + Sync>;

/// Options of [`Lb::start_with`].
#[derive(Clone)]
pub struct LbOptions {
    /// How probes are built.
    pub probes: ProbeFactory,
    /// Where admin commands record intent and where backends restore it from
    /// (the process's one store, shared with the gss).
    pub intents: Arc<IntentStore>,
}

impl Default for LbOptions {
    fn default() -> Self {
        LbOptions {
            probes: Arc::new(shared::probe::build),
            intents: Arc::new(IntentStore::memory("local")),
        }
    }
}

/// How long [`Lb::shutdown`] waits for the tasks it owns once they are told to stop.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The running VIPs: each slot with, for an L7 VIP, the proxy serving it
/// (`proxies[i]` serves `slots[i]`). Derefs to the slots, which is all most readers
/// need.
#[derive(Default)]
pub(crate) struct Snapshot {
    slots: Vec<Arc<VipSlot>>,
    proxies: Vec<Option<Arc<http::HttpVip>>>,
    /// One checker per backend of every pool.
    checkers: Vec<Arc<Checker>>,
}

impl Deref for Snapshot {
    type Target = [Arc<VipSlot>];
    fn deref(&self) -> &Self::Target {
        &self.slots
    }
}

impl Snapshot {
    /// The proxy serving the slot of `vip` (by the slot's current config: a reload
    /// may rename a VIP whose listener it keeps).
    fn proxy(&self, vip: &str) -> Option<&Arc<http::HttpVip>> {
        let i = self
            .slots
            .iter()
            .position(|s| s.state.load().cfg.name == vip)?;
        self.proxies.get(i)?.as_ref()
    }
}

pub(crate) struct Inner {
    pub(crate) vips: ArcSwap<Snapshot>,
    pub(crate) events: Arc<EventLog>,
    tasks: Tasks,
    accepting: CancellationToken,
    probes: ProbeFactory,
    pub(crate) intents: Arc<IntentStore>,
    reload_lock: Arc<tokio::sync::Mutex<()>>,
    totals: Arc<Totals>,
}

impl Inner {
    pub(crate) fn slot(&self, vip: &str) -> Option<Arc<VipSlot>> {
        self.vips
            .load()
            .iter()
            .find(|s| s.state.load().cfg.name == vip)
            .cloned()
    }

    pub(crate) fn backend(&self, vip: &str, name: &str) -> Option<Arc<Backend>> {
        let slot = self.slot(vip)?;
        let state = slot.state.load();
        state.pool.get(name).cloned()
    }
}

/// The running lb role.
pub struct Lb {
    inner: Arc<Inner>,
}

/// A probe built for a backend, with its definition.
type NewProbe = (Arc<dyn Probe>, ProbeConfig);

/// Where a planned VIP listens.
enum SlotPlan {
    /// Same address and mode as a running VIP: keep its listener (and its proxy);
    /// an L7 VIP's reloaded settings wait to be committed with the rest.
    Reuse {
        slot: Arc<VipSlot>,
        proxy: Option<Arc<http::HttpVip>>,
        reloaded: Option<Box<http::PreparedReload>>,
    },
    /// A freshly bound listener; L7 VIPs come with their proxy.
    New {
        listener: TcpListener,
        proxy: Option<Arc<http::HttpVip>>,
    },
}

/// A prepared reload of the whole lb (see [`Lb::prepare`]): everything fallible is
/// done; [`Lb::commit`] cannot fail.
pub struct Plan {
    planned: Vec<Planned>,
    /// The snapshot the plan was made against (the reload lock keeps it current).
    old: Arc<Snapshot>,
    _serial: tokio::sync::OwnedMutexGuard<()>,
}

/// What a prepared (not yet applied) reload of one VIP holds.
struct Planned {
    cfg: VipConfig,
    /// Reused slot, or a new listener to start.
    slot: SlotPlan,
    backends: Vec<Arc<Backend>>,
    /// Reused backends with their new config.
    reconfigure: Vec<(Arc<Backend>, shared::config::BackendConfig)>,
    /// Checkers of reused backends, with the new probe when it changed.
    checkers: Vec<(Arc<Checker>, Option<NewProbe>)>,
    /// New backends and their probes.
    fresh: Vec<(Arc<Backend>, NewProbe)>,
}

impl Lb {
    /// Binds every `mode = "tcp"` VIP's listener and starts every backend's checker.
    /// Bind and probe-building errors are returned, not panicked on.
    pub async fn start(vips: &[VipConfig], events: Arc<EventLog>) -> Result<Lb, LbError> {
        Lb::start_with(vips, events, LbOptions::default()).await
    }

    /// As [`Lb::start`], with injected options (tests use their own probes).
    pub async fn start_with(
        vips: &[VipConfig],
        events: Arc<EventLog>,
        options: LbOptions,
    ) -> Result<Lb, LbError> {
        let tasks = Tasks::new();
        let inner = Arc::new(Inner {
            vips: ArcSwap::from_pointee(Snapshot::default()),
            events,
            accepting: tasks.child_token(),
            tasks,
            probes: options.probes,
            intents: options.intents,
            reload_lock: Arc::new(tokio::sync::Mutex::new(())),
            totals: Arc::new(Totals::default()),
        });
        let lb = Lb { inner };
        let plan = lb.prepare(vips).await?;
        lb.commit_with(plan, false);
        Ok(lb)
    }

    /// Every VIP's health for `/status`, config order.
    pub fn status(&self) -> Vec<VipStatus> {
        self.inner
            .vips
            .load()
            .iter()
            .map(|s| s.state.load().status())
            .collect()
    }

    /// Every VIP with its backends for the status page, config order.
    pub fn page(&self) -> Vec<shared::status::VipPage> {
        self.inner
            .vips
            .load()
            .iter()
            .map(|slot| {
                let st = slot.state.load();
                let healthy = st.pool.healthy();
                shared::status::VipPage {
                    name: st.cfg.name.clone(),
                    listen: slot.local.to_string(),
                    mode: st.cfg.mode.as_str().to_string(),
                    up: healthy >= st.cfg.min_healthy,
                    healthy,
                    active: slot.active(),
                    backends: st
                        .pool
                        .backends()
                        .iter()
                        .map(|b| shared::status::BackendPage {
                            name: b.name().to_string(),
                            address: b.address().to_string(),
                            state: b.state_str().to_string(),
                            admin: b.admin().as_str().to_string(),
                            weight: b.weight(),
                            active: b.active(),
                            check: b.last_check().to_string(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The admin-socket handler for the lb commands (`show vips`, `show backends`,
    /// `drain`, `ready`, `maint`, `set weight`, `wait drained`).
    pub fn admin(&self) -> Arc<dyn AdminHandler> {
        Arc::new(admin::LbAdmin::new(Arc::clone(&self.inner)))
    }

    /// Applies a new set of VIPs: adds, removes and changes VIPs and backends. Unchanged
    /// backends (same VIP, name and address) keep health, admin state, weight set by the
    /// operator (unless the config's weight changed) and active counts; established
    /// connections continue; listeners whose address and mode are unchanged stay bound.
    /// On error nothing has changed. [`Lb::prepare`] then [`Lb::commit`].
    pub async fn reload(&self, vips: &[VipConfig]) -> Result<(), LbError> {
        let plan = self.prepare(vips).await?;
        self.commit(plan);
        Ok(())
    }

    /// The fallible half of a reload: binds new listeners, loads certificates and
    /// builds probes, changing nothing that serves. Reloads are serialized: the
    /// returned plan holds the reload lock until it is committed or dropped (dropping
    /// it abandons the reload; listeners bound for it close).
    pub async fn prepare(&self, vips: &[VipConfig]) -> Result<Plan, LbError> {
        let serial = Arc::clone(&self.inner.reload_lock).lock_owned().await;
        let old = self.inner.vips.load_full();
        let mut planned = Vec::with_capacity(vips.len());
        for cfg in vips {
            planned.push(self.plan(cfg, &old).await?);
        }
        Ok(Plan {
            planned,
            old,
            _serial: serial,
        })
    }

    /// The infallible half of a reload: puts a [`Lb::prepare`] result in service.
    pub fn commit(&self, plan: Plan) {
        self.commit_with(plan, true);
    }

    /// Waits until every backend that is probed (every one not in `maint`) has its
    /// first verdict, so a supervisor told "ready" knows the lb routes on known
    /// health. Bounded by the slowest first round (a fifth of the interval of random
    /// spread, then the probe timeout) plus a second: a probe that hangs past its own
    /// timeout must not hold readiness forever. True when every verdict came in.
    pub async fn first_verdicts(&self) -> bool {
        let snapshot = self.inner.vips.load_full();
        let slowest = snapshot
            .iter()
            .map(|s| {
                let t = s.state.load().cfg.probe.timing;
                t.interval / 5 + t.timeout
            })
            .max()
            .unwrap_or_default();
        let pending = || {
            snapshot.checkers.iter().any(|c| {
                let b = c.backend();
                b.admin() != AdminState::Maint && b.last_check() == LastCheck::Pending
            })
        };
        let poll = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
            while pending() {
                tick.tick().await;
            }
        };
        tokio::time::timeout(slowest + std::time::Duration::from_secs(1), poll)
            .await
            .is_ok()
    }

    /// Closes every listener; established connections continue.
    pub fn stop_accepting(&self) {
        self.inner.accepting.cancel();
    }

    /// Client connections open across all VIPs.
    pub fn active_connections(&self) -> u64 {
        self.inner.totals.active.load(Ordering::Acquire)
    }

    /// Waits until no client connection is open, or `timeout`; true when idle.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let totals = &self.inner.totals;
        let wait = async {
            loop {
                let notified = totals.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if totals.active.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Stops listeners and probes, ends the client connections still open (the drain
    /// period is over when this is called) and waits, bounded, for every task the lb
    /// owns to finish.
    pub async fn shutdown(&self) {
        self.inner.tasks.token().cancel();
        let snapshot = self.inner.vips.load_full();
        for proxy in snapshot.proxies.iter().flatten() {
            proxy.abort_connections();
        }
        if !self.inner.tasks.shutdown(SHUTDOWN_WAIT).await {
            tracing::warn!(
                tasks = self.inner.tasks.len(),
                "lb tasks still running after {SHUTDOWN_WAIT:?}"
            );
        }
    }

    /// The tasks the lb owns (listeners, checkers, timers, L7 connections).
    pub fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// The L7 proxy of an `http`/`https` VIP (certificate reloads, tests).
    pub fn http(&self, vip: &str) -> Option<Arc<http::HttpVip>> {
        self.inner.vips.load().proxy(vip).cloned()
    }

    /// The address a VIP's listener is bound to (useful when it asked for port 0).
    pub fn local_addr(&self, vip: &str) -> Option<SocketAddr> {
        self.inner.slot(vip).map(|s| s.local)
    }

    /// A VIP's current pool (the L7 proxy selects from it).
    pub fn pool(&self, vip: &str) -> Option<Arc<Pool>> {
        self.inner
            .slot(vip)
            .map(|s| Arc::clone(&s.state.load().pool))
    }

    /// One backend's runtime state.
    pub fn backend(&self, vip: &str, backend: &str) -> Option<Arc<Backend>> {
        self.inner.backend(vip, backend)
    }

    fn commit_with(&self, plan: Plan, reload: bool) {
        let inner = &self.inner;
        let Plan {
            planned: plans,
            old: old_slots,
            _serial,
        } = plan;
        // Held to the snapshot store: an admin command waits, so it finds either
        // the old backends or the new ones with their intent already restored.
        let intents = inner.intents.lock();
        let mut kept_slots: HashSet<*const VipSlot> = HashSet::new();
        let mut kept_checkers: HashSet<*const Checker> = HashSet::new();
        let mut slots = Vec::with_capacity(plans.len());
        let mut proxies = Vec::with_capacity(plans.len());
        let mut checkers = Vec::new();
        for plan in plans {
            for (b, bcfg) in plan.reconfigure {
                b.reconfigure(&bcfg);
            }
            for (c, probe) in plan.checkers {
                if let Some((probe, probe_cfg)) = probe {
                    c.set_probe(probe, probe_cfg);
                }
                kept_checkers.insert(Arc::as_ptr(&c));
                checkers.push(c);
            }
            for (b, (probe, probe_cfg)) in plan.fresh {
                if reload {
                    b.record_event("added by reload");
                }
                // Before its checker and listener start: a drained backend never
                // takes a connection after a restart.
                b.restore(&intents);
                checkers.push(Checker::start(b, probe, probe_cfg, &inner.tasks));
            }
            let pool = Arc::new(Pool::new(
                &plan.cfg.name,
                plan.cfg.balance,
                plan.cfg.ejection.clone(),
                plan.backends,
                inner.tasks.clone(),
            ));
            let state = VipState::new(plan.cfg.clone(), pool);
            let (slot, proxy) = match plan.slot {
                SlotPlan::Reuse {
                    slot,
                    proxy,
                    reloaded,
                } => {
                    if let (Some(proxy), Some(prepared)) = (&proxy, reloaded) {
                        proxy.commit_reload(*prepared);
                    }
                    slot.state.store(Arc::new(state));
                    kept_slots.insert(Arc::as_ptr(&slot));
                    (slot, proxy)
                }
                SlotPlan::New { listener, proxy } => {
                    let local = listener.local_addr().unwrap_or(plan.cfg.listen);
                    let slot = Arc::new(VipSlot::new(
                        state,
                        local,
                        inner.accepting.child_token(),
                        inner.tasks.clone(),
                        Arc::clone(&inner.totals),
                    ));
                    match &proxy {
                        None => inner
                            .tasks
                            .spawn(l4::tcp::accept_loop(listener, Arc::clone(&slot))),
                        Some(proxy) => inner.tasks.spawn(http::accept_loop(
                            listener,
                            Arc::clone(&slot),
                            Arc::clone(proxy),
                        )),
                    }
                    if reload {
                        inner.events.record(
                            format!("vip {}", plan.cfg.name),
                            format!("listening on {local} (reload)"),
                        );
                    }
                    (slot, proxy)
                }
            };
            proxies.push(proxy);
            slots.push(slot);
        }
        for old in old_slots.iter() {
            if !kept_slots.contains(&Arc::as_ptr(old)) {
                old.cancel.cancel();
            }
        }
        for c in old_slots.checkers.iter() {
            if !kept_checkers.contains(&Arc::as_ptr(c)) {
                c.stop();
                c.backend()
                    .record_event("removed by reload; established connections continue");
            }
        }
        inner.vips.store(Arc::new(Snapshot {
            slots,
            proxies,
            checkers,
        }));
        drop(intents);
    }

    async fn plan(&self, cfg: &VipConfig, old: &Snapshot) -> Result<Planned, LbError> {
        let inner = &self.inner;
        let reuse = old
            .iter()
            .position(|s| s.configured == cfg.listen && s.mode == cfg.mode);
        let old_pool = old
            .iter()
            .map(|s| s.state.load_full())
            .find(|st| st.cfg.name == cfg.name)
            .map(|st| Arc::clone(&st.pool));
        let slot = match reuse {
            Some(i) => {
                let proxy = old.proxies.get(i).cloned().flatten();
                let reloaded = match &proxy {
                    Some(proxy) => Some(Box::new(proxy.prepare_reload(cfg)?)),
                    None => None,
                };
                SlotPlan::Reuse {
                    slot: Arc::clone(&old.slots[i]),
                    proxy,
                    reloaded,
                }
            }
            None => {
                let proxy = match cfg.mode {
                    VipMode::Tcp => None,
                    VipMode::Http | VipMode::Https => {
                        Some(http::HttpVip::new(cfg, inner.tasks.clone())?)
                    }
                };
                let listener =
                    TcpListener::bind(cfg.listen)
                        .await
                        .map_err(|source| LbError::Bind {
                            vip: cfg.name.clone(),
                            addr: cfg.listen,
                            source,
                        })?;
                SlotPlan::New { listener, proxy }
            }
        };
        let build = |b: &shared::config::BackendConfig| {
            (inner.probes)(&cfg.probe, b.address).map_err(|e| LbError::Probe {
                vip: cfg.name.clone(),
                backend: b.name.clone(),
                message: e.to_string(),
            })
        };
        let mut backends = Vec::with_capacity(cfg.backends.len());
        let mut reconfigure = Vec::new();
        let mut checkers = Vec::new();
        let mut fresh = Vec::new();
        for bcfg in &cfg.backends {
            let existing = old_pool
                .as_ref()
                .and_then(|p| p.get(&bcfg.name))
                .filter(|b| b.address() == bcfg.address)
                .cloned();
            match existing {
                Some(b) => {
                    // Every pooled backend has its checker in the snapshot.
                    let checker = old.checkers.iter().find(|c| Arc::ptr_eq(c.backend(), &b));
                    match checker {
                        Some(c) => {
                            let probe = if c.probe_config() != cfg.probe {
                                Some((build(bcfg)?, cfg.probe.clone()))
                            } else {
                                None
                            };
                            checkers.push((Arc::clone(c), probe));
                        }
                        None => fresh.push((Arc::clone(&b), (build(bcfg)?, cfg.probe.clone()))),
                    }
                    reconfigure.push((Arc::clone(&b), bcfg.clone()));
                    backends.push(b);
                }
                None => {
                    let b = Backend::new(&cfg.name, bcfg, Arc::clone(&inner.events));
                    fresh.push((Arc::clone(&b), (build(bcfg)?, cfg.probe.clone())));
                    backends.push(b);
                }
            }
        }
        Ok(Planned {
            cfg: cfg.clone(),
            slot,
            backends,
            reconfigure,
            checkers,
            fresh,
        })
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.inner.tasks.token().cancel();
    }
}
