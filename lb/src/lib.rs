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
//! accept loops. With `[bgp]`, the speaker in [`bgp`] announces each healthy VIP's
//! prefixes to the routers. See ARCHITECTURE.md for the module map.

mod accept_proxy;
mod access;
mod admin;
mod backend;
mod balance;
mod bgp;
mod checker;
mod error;
pub mod http;
mod l4;
pub mod metrics;
mod outlier;
mod pool;
mod supervisor;
mod sync;
mod vip;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use shared::admin::AdminHandler;
use shared::config::{ProbeConfig, VipConfig, VipMode};
use shared::events::EventLog;
use shared::handover::{Carried, CarriedBackend, Inherited, SocketEntry, SocketKind};
use shared::intent::IntentStore;
use shared::probe::{BuildError, Probe};
use shared::status::VipStatus;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use checker::Checker;
use supervisor::Tasks;

pub use backend::{AdminState, Backend, Health, LastCheck, Lease};
/// Kept at the crate root: the fuzz target `bgp_message` calls its framing and decoder.
pub use bgp::wire as bgp_wire;
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
    /// Listening sockets and state handed over by the process this one upgrades.
    pub inherited: Option<Arc<Inherited>>,
    /// Start with listeners held closed to clients until [`Lb::open`] (an upgrade
    /// accepts only once its probes have spoken).
    pub hold_accept: bool,
    /// Where admin commands record intent and where backends restore it from
    /// (the process's one store, shared with the gss).
    pub intents: Arc<IntentStore>,
    /// The replicas of this pod, when `[cluster]` names one: commands wait for their
    /// acknowledgements, `show backends` and `wait drained` count them.
    pub fleet: Option<Arc<shared::fleet::Fleet>>,
    /// Data-path workers: with more than one, each is a thread with a
    /// single-threaded runtime and each VIP has one `SO_REUSEPORT` listening socket
    /// per worker, accepted on that worker (see [`supervisor`]); with one (the
    /// default), listeners run on the caller's runtime and no thread is started.
    pub workers: usize,
}

impl Default for LbOptions {
    fn default() -> Self {
        LbOptions {
            probes: Arc::new(shared::probe::build),
            inherited: None,
            hold_accept: false,
            intents: Arc::new(IntentStore::memory("local")),
            fleet: None,
            workers: 1,
        }
    }
}

/// How long [`Lb::shutdown`] waits for the tasks it owns once they are told to stop.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The running VIPs: each slot with its config and pool (`states[i]` is
/// `slots[i]`'s) and, for an L7 VIP, the proxy serving it (`proxies[i]`). A reload
/// replaces the whole snapshot with one store, so every reader (the accept loops
/// included, through [`VipSlot::state`]) sees every VIP on the old config or every
/// VIP on the new one. Derefs to the slots.
#[derive(Default)]
pub(crate) struct Snapshot {
    slots: Vec<Arc<VipSlot>>,
    states: Vec<Arc<VipState>>,
    proxies: Vec<Option<Arc<http::HttpVip>>>,
    /// An L7 VIP's reloadable proxy settings (certificates, TLS, headers, backend
    /// client), swapped with its state (`http[i]` is `slots[i]`'s).
    http: Vec<Option<Arc<http::Settings>>>,
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
        let i = self.position(vip)?;
        self.proxies.get(i)?.as_ref()
    }

    /// The index of the VIP called `vip`.
    fn position(&self, vip: &str) -> Option<usize> {
        self.states.iter().position(|st| st.cfg.name == vip)
    }

    /// Each slot with its state.
    pub(crate) fn with_states(&self) -> impl Iterator<Item = (&Arc<VipSlot>, &Arc<VipState>)> {
        self.slots.iter().zip(self.states.iter())
    }

    /// The state of `slot`, if it is one of this snapshot's.
    pub(crate) fn state_of(&self, slot: &VipSlot) -> Option<&Arc<VipState>> {
        self.states.get(self.index_of(slot)?)
    }

    /// An L7 `slot`'s state and proxy settings, both from this snapshot.
    pub(crate) fn l7_of(&self, slot: &VipSlot) -> Option<(Arc<VipState>, Arc<http::Settings>)> {
        let i = self.index_of(slot)?;
        let settings = self.http.get(i)?.as_ref()?;
        Some((Arc::clone(self.states.get(i)?), Arc::clone(settings)))
    }

    fn index_of(&self, slot: &VipSlot) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| std::ptr::eq(Arc::as_ptr(s), slot))
    }
}

pub(crate) struct Inner {
    pub(crate) vips: Arc<ArcSwap<Snapshot>>,
    pub(crate) events: Arc<EventLog>,
    tasks: Tasks,
    accepting: CancellationToken,
    probes: ProbeFactory,
    pub(crate) intents: Arc<IntentStore>,
    /// Set only when this node's pod has other replicas.
    pub(crate) fleet: Option<Arc<shared::fleet::Fleet>>,
    reload_lock: Arc<tokio::sync::Mutex<()>>,
    totals: Arc<Totals>,
    /// Cancelled once listeners may accept (see [`LbOptions::hold_accept`]).
    opened: CancellationToken,
    /// A duplicate of each VIP listener's descriptor, for handing over to an
    /// upgraded process; dropped with the listener (reload removal,
    /// `stop_accepting`) so a closed VIP refuses instead of queueing.
    listen_fds: std::sync::Mutex<Vec<(SocketEntry, OwnedFd)>>,
    /// What the predecessor handed over, consumed by the first prepare.
    inherited: std::sync::Mutex<Option<Arc<Inherited>>>,
    /// Route announcements; idle until `[bgp]` is configured.
    pub(crate) bgp: Arc<bgp::Speaker>,
}

impl Inner {
    pub(crate) fn slot(&self, vip: &str) -> Option<Arc<VipSlot>> {
        let snap = self.vips.load();
        snap.slots.get(snap.position(vip)?).cloned()
    }

    pub(crate) fn backend(&self, vip: &str, name: &str) -> Option<Arc<Backend>> {
        let snap = self.vips.load();
        snap.states
            .get(snap.position(vip)?)?
            .pool
            .get(name)
            .cloned()
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
    /// Same address and mode as a running VIP: keep its listeners (and its proxy).
    Reuse {
        slot: Arc<VipSlot>,
        proxy: Option<Arc<http::HttpVip>>,
    },
    /// Freshly bound (or inherited) listening sockets, one per data-path worker at
    /// least (more when a predecessor with more workers handed them over), each with
    /// a duplicate of its descriptor for a later handover; L7 VIPs come with their
    /// proxy. Registered with a runtime only in the accept loop, on its worker.
    New {
        listeners: Vec<std::net::TcpListener>,
        proxy: Option<Arc<http::HttpVip>>,
        fds: Vec<OwnedFd>,
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
    /// An L7 VIP's proxy settings, new or reloaded: they go into the snapshot with
    /// the pool, so connections see both change at once.
    http: Option<http::Settings>,
    backends: Vec<Arc<Backend>>,
    /// Reused backends with their new config.
    reconfigure: Vec<(Arc<Backend>, shared::config::BackendConfig)>,
    /// Checkers of reused backends, with the new probe when it changed.
    checkers: Vec<(Arc<Checker>, Option<NewProbe>)>,
    /// New backends, their probes and the verdict to start from.
    fresh: Vec<(Arc<Backend>, NewProbe, Option<bool>)>,
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
        let tasks = Tasks::with_workers(options.workers).map_err(|source| LbError::Workers {
            workers: options.workers,
            source,
        })?;
        let opened = CancellationToken::new();
        if !options.hold_accept {
            opened.cancel();
        }
        let inner = Arc::new(Inner {
            vips: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            events: Arc::clone(&events),
            accepting: tasks.child_token(),
            bgp: Arc::new(bgp::Speaker::new(tasks.clone(), Arc::clone(&events))),
            tasks,
            probes: options.probes,
            intents: options.intents,
            fleet: options.fleet.filter(|f| f.scope().has_peers()),
            reload_lock: Arc::new(tokio::sync::Mutex::new(())),
            totals: Arc::new(Totals::default()),
            opened,
            listen_fds: std::sync::Mutex::new(Vec::new()),
            inherited: std::sync::Mutex::new(options.inherited),
        });
        let weak = Arc::downgrade(&inner);
        inner.bgp.set_view(Box::new(move || {
            let Some(inner) = weak.upgrade() else {
                return Vec::new();
            };
            let snapshot = inner.vips.load();
            snapshot
                .states
                .iter()
                .map(|st| bgp::VipView {
                    name: st.cfg.name.clone(),
                    healthy: st.pool.healthy(),
                    min_healthy: st.cfg.min_healthy,
                    announce: st.cfg.announce.clone(),
                })
                .collect()
        }));
        if inner.tasks.workers() > 1 {
            tracing::info!(
                workers = inner.tasks.workers(),
                "lb data path: one single-threaded runtime per worker"
            );
        }
        let lb = Lb { inner };
        let plan = lb.prepare(vips).await?;
        lb.commit_with(plan, false);
        *sync::lock(&lb.inner.inherited) = None;
        Ok(lb)
    }

    /// Every VIP's health for `/status`, config order.
    pub fn status(&self) -> Vec<VipStatus> {
        self.inner
            .vips
            .load()
            .states
            .iter()
            .map(|st| st.status())
            .collect()
    }

    /// Every VIP with its backends for the status page, config order.
    pub fn page(&self) -> Vec<shared::status::VipPage> {
        self.inner
            .vips
            .load()
            .with_states()
            .map(|(slot, st)| {
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
            .states
            .iter()
            .map(|st| {
                let t = st.cfg.probe.timing;
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

    /// Applies `[bgp]` (at start and after each committed reload): sessions of
    /// unchanged neighbors continue, others start or end. Infallible.
    pub fn configure_bgp(&self, cfg: Option<&shared::config::BgpConfig>) {
        self.inner.bgp.configure(cfg);
    }

    /// The first step of a graceful stop: withdraws every announced prefix and waits
    /// until the sessions have sent the withdrawals. Returns the `withdraw_grace` to
    /// wait before closing listeners, `None` when no router session was established.
    pub async fn withdraw_routes(&self) -> Option<std::time::Duration> {
        self.inner.bgp.withdraw_all().await
    }

    /// The BGP speaker (tests, `show bgp`).
    pub fn bgp(&self) -> &Arc<bgp::Speaker> {
        &self.inner.bgp
    }

    /// Closes every listener; established connections continue.
    pub fn stop_accepting(&self) {
        self.inner.accepting.cancel();
        sync::lock(&self.inner.listen_fds).clear();
    }

    /// Lets held listeners accept (see [`LbOptions::hold_accept`]).
    pub fn open(&self) {
        self.inner.opened.cancel();
    }

    /// A duplicate of every open VIP listener, described for a handover to an
    /// upgraded process (empty once the lb stopped accepting).
    pub fn handover_sockets(&self) -> std::io::Result<Vec<(SocketEntry, OwnedFd)>> {
        sync::lock(&self.inner.listen_fds)
            .iter()
            .map(|(e, fd)| Ok((e.clone(), fd.try_clone()?)))
            .collect()
    }

    /// Every backend's health, admin state and weight, for a successor to start from.
    pub fn carried(&self) -> Carried {
        let mut backends = Vec::new();
        for st in self.inner.vips.load().states.iter() {
            for b in st.pool.backends() {
                backends.push(CarriedBackend {
                    vip: b.vip().to_string(),
                    backend: b.name().to_string(),
                    health: match b.health() {
                        Health::Up => Some(true),
                        Health::Down => Some(false),
                        Health::Unknown => None,
                    },
                    admin: b.admin().as_str().to_string(),
                    weight: b.weight(),
                });
            }
        }
        Carried {
            backends,
            ..Carried::default()
        }
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

    /// Re-reads an HTTPS VIP's certificate, key and OCSP files (same paths) so
    /// renewed certificates are served to new handshakes; open connections keep
    /// theirs. On an error the old certificates stay in use.
    pub fn reload_certs(&self, vip: &str) -> Result<(), http::SetupError> {
        let snapshot = self.inner.vips.load();
        let certs = snapshot
            .position(vip)
            .and_then(|i| snapshot.http.get(i)?.as_ref()?.certs().cloned())
            .ok_or_else(|| http::SetupError::NotHttps(vip.to_string()))?;
        certs.reload().map_err(|source| http::SetupError::Certs {
            vip: vip.to_string(),
            source,
        })
    }

    /// The address a VIP's listener is bound to (useful when it asked for port 0).
    pub fn local_addr(&self, vip: &str) -> Option<SocketAddr> {
        self.inner.slot(vip).map(|s| s.local)
    }

    /// Client connections a VIP's listeners accepted, per data-path worker (index =
    /// worker; one entry when the lb has no workers); also the metric
    /// `portico_lb_accepted_total{vip,worker}`.
    pub fn accepted(&self, vip: &str) -> Option<Vec<u64>> {
        self.inner.slot(vip).map(|s| s.accepted())
    }

    /// The data-path workers the lb runs (1: none, all on the caller's runtime).
    pub fn workers(&self) -> usize {
        self.inner.tasks.workers()
    }

    /// A VIP's current pool (the L7 proxy selects from it).
    pub fn pool(&self, vip: &str) -> Option<Arc<Pool>> {
        let snap = self.inner.vips.load();
        Some(Arc::clone(&snap.states.get(snap.position(vip)?)?.pool))
    }

    /// One backend's runtime state.
    pub fn backend(&self, vip: &str, backend: &str) -> Option<Arc<Backend>> {
        self.inner.backend(vip, backend)
    }

    /// Applies a peer's winning intent entry (handed over by the fleet loop, under
    /// the store's lock) to the running backend it names; a backend this config
    /// does not have keeps it in the store until a reload brings it.
    pub fn apply_shared(&self, key: &shared::intent::Key, entry: &shared::intent::Entry) {
        use shared::intent::Key;
        let (Key::BackendAdmin { vip, backend } | Key::BackendWeight { vip, backend }) = key else {
            return;
        };
        if let Some(b) = self.inner.backend(vip, backend) {
            b.apply_intent(entry, &format!("shared by peer {}", entry.origin()));
        }
    }

    /// Every backend's progress, as published to the other replicas of the pod.
    pub fn fleet_progress(&self) -> Vec<(String, String, shared::fleet::Applied)> {
        let intents = self.inner.intents.snapshot();
        let mut out = Vec::new();
        for st in self.inner.vips.load().states.iter() {
            for b in st.pool.backends() {
                out.push((
                    st.cfg.name.clone(),
                    b.name().to_string(),
                    admin::applied(b, &intents),
                ));
            }
        }
        out
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
        let mut states = Vec::with_capacity(plans.len());
        let mut proxies = Vec::with_capacity(plans.len());
        let mut http_settings = Vec::with_capacity(plans.len());
        // New listeners start accepting once the snapshot naming their slots is in.
        let mut listeners = Vec::new();
        let mut checkers = Vec::new();
        let mut new_fds = Vec::new();
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
            for (b, (probe, probe_cfg), initial) in plan.fresh {
                if reload {
                    b.record_event("added by reload");
                }
                // Before its checker and listener start: a drained backend never
                // takes a connection after a restart. Carried state (an upgrade) was
                // applied when the backend was planned; intent from the state file
                // comes second and wins where they differ.
                b.restore(&intents);
                checkers.push(Checker::start(b, probe, probe_cfg, initial, &inner.tasks));
            }
            let pool = Arc::new(Pool::new(
                &plan.cfg.name,
                plan.cfg.balance,
                plan.cfg.ejection.clone(),
                plan.backends,
                inner.tasks.clone(),
            ));
            let state = Arc::new(VipState::new(plan.cfg.clone(), pool));
            http_settings.push(plan.http.map(Arc::new));
            let (slot, proxy) = match plan.slot {
                SlotPlan::Reuse { slot, proxy } => {
                    kept_slots.insert(Arc::as_ptr(&slot));
                    (slot, proxy)
                }
                SlotPlan::New {
                    listeners: sockets,
                    proxy,
                    fds,
                } => {
                    let local = sockets
                        .first()
                        .and_then(|l| l.local_addr().ok())
                        .unwrap_or(plan.cfg.listen);
                    for fd in fds {
                        let entry = SocketEntry {
                            role: "vip".to_string(),
                            kind: SocketKind::Tcp,
                            configured: plan.cfg.listen,
                            local,
                        };
                        new_fds.push((entry, fd));
                    }
                    let slot = Arc::new(VipSlot::new(
                        &plan.cfg,
                        local,
                        Arc::downgrade(&inner.vips),
                        inner.accepting.child_token(),
                        inner.opened.clone(),
                        inner.tasks.clone(),
                        Arc::clone(&inner.totals),
                    ));
                    listeners.push((sockets, Arc::clone(&slot), proxy.clone()));
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
            states.push(state);
        }
        {
            let mut fds = sync::lock(&inner.listen_fds);
            for old in old_slots.iter() {
                if !kept_slots.contains(&Arc::as_ptr(old)) {
                    old.cancel.cancel();
                    fds.retain(|(e, _)| e.configured != old.configured);
                }
            }
            if !inner.accepting.is_cancelled() {
                fds.extend(new_fds);
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
            states,
            proxies,
            http: http_settings,
            checkers,
        }));
        for (sockets, slot, proxy) in listeners {
            // Socket i is accepted on worker i (modulo: a predecessor with more
            // workers handed over more sockets, and each must keep being accepted
            // on, or the clients the kernel queues on it would wait forever).
            for (i, socket) in sockets.into_iter().enumerate() {
                let worker = i % inner.tasks.workers();
                let (slot, proxy) = (Arc::clone(&slot), proxy.clone());
                inner.tasks.spawn_on_worker(worker, async move {
                    if !slot.wait_open().await {
                        return;
                    }
                    // A socket bound while the lb held its listeners closed listens
                    // only now (on one already listening this is a no-op), and is
                    // registered here, on the worker's own runtime.
                    let listening = socket2::SockRef::from(&socket).listen(LISTEN_BACKLOG);
                    let listener = match listening.and_then(|()| TcpListener::from_std(socket)) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(vip = %slot.local, worker, "listener: {e}");
                            return;
                        }
                    };
                    match proxy {
                        None => l4::tcp::accept_loop(listener, slot, worker).await,
                        Some(proxy) => http::accept_loop(listener, slot, proxy, worker).await,
                    }
                });
            }
        }
        drop(intents);
        inner.bgp.wake();
    }

    async fn plan(&self, cfg: &VipConfig, old: &Snapshot) -> Result<Planned, LbError> {
        let inner = &self.inner;
        let reuse = old
            .iter()
            .position(|s| s.configured == cfg.listen && s.mode == cfg.mode);
        let old_pool = old
            .states
            .iter()
            .find(|st| st.cfg.name == cfg.name)
            .map(|st| Arc::clone(&st.pool));
        let mut http_settings = None;
        let slot = match reuse {
            Some(i) => {
                let proxy = old.proxies.get(i).cloned().flatten();
                let running = old.http.get(i).and_then(|s| s.as_deref());
                http_settings = match (&proxy, running) {
                    (Some(proxy), Some(running)) => Some(proxy.prepare(cfg, running)?),
                    _ => None,
                };
                SlotPlan::Reuse {
                    slot: Arc::clone(&old.slots[i]),
                    proxy,
                }
            }
            None => {
                let proxy = match cfg.mode {
                    VipMode::Tcp => None,
                    VipMode::Http | VipMode::Https => {
                        let (proxy, settings) = http::HttpVip::new(cfg, inner.tasks.clone())?;
                        http_settings = Some(settings);
                        Some(proxy)
                    }
                };
                let bind_err = |source| LbError::Bind {
                    vip: cfg.name.clone(),
                    addr: cfg.listen,
                    source,
                };
                let inherited = sync::lock(&inner.inherited)
                    .as_ref()
                    .map(|i| i.take_tcp_all("vip", cfg.listen))
                    .unwrap_or_default();
                let listeners = listen_sockets(
                    cfg.listen,
                    inherited,
                    inner.tasks.workers(),
                    inner.opened.is_cancelled(),
                )
                .map_err(bind_err)?;
                let fds = listeners
                    .iter()
                    .filter_map(|l| l.as_fd().try_clone_to_owned().ok())
                    .collect();
                SlotPlan::New {
                    listeners,
                    proxy,
                    fds,
                }
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
                        None => {
                            fresh.push((Arc::clone(&b), (build(bcfg)?, cfg.probe.clone()), None))
                        }
                    }
                    reconfigure.push((Arc::clone(&b), bcfg.clone()));
                    backends.push(b);
                }
                None => {
                    let b = Backend::new(&cfg.name, bcfg, Arc::clone(&inner.events));
                    let initial = self.carry_over(&b);
                    fresh.push((Arc::clone(&b), (build(bcfg)?, cfg.probe.clone()), initial));
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
            http: http_settings,
        })
    }
}

impl Lb {
    /// Applies what a predecessor knew of `b` (same VIP, name and address): admin
    /// state, weight and health; returns the verdict its checker starts from.
    fn carry_over(&self, b: &Backend) -> Option<bool> {
        let inherited = sync::lock(&self.inner.inherited).clone()?;
        let c = inherited
            .carried
            .backends
            .iter()
            .find(|c| c.vip == b.vip() && c.backend == b.name())?;
        let admin = match c.admin.as_str() {
            "drain" => AdminState::Drain,
            "maint" => AdminState::Maint,
            _ => AdminState::Ready,
        };
        if admin != AdminState::Ready {
            b.set_admin(admin, "carried over by the upgrade");
        }
        if c.weight != b.weight() {
            let _ = b.set_weight(c.weight, "carried over by the upgrade");
        }
        match c.health {
            Some(true) => b.set_health(Health::Up),
            Some(false) => b.set_health(Health::Down),
            None => {}
        }
        c.health
    }
}

/// A VIP's listening sockets: those a predecessor handed over (`inherited`, all of
/// them: a `SO_REUSEPORT` socket closed would reset the clients queued on it), else
/// one bound on `configured`; then more bound beside the first (same bound address,
/// so port 0 gets one port) until there is one per data-path worker. An inherited
/// socket from a Portico that did not set `SO_REUSEPORT` gets it now, which lets
/// the new ones join its group; if one still cannot be bound, the workers share the
/// sockets there are (duplicates of the same socket: one accept queue) rather than
/// fail an upgrade.
///
/// With `listen_now` false (the lb holds its listeners closed until [`Lb::open`]),
/// sockets bound beside handed-over ones are not listening yet: the accept loop
/// calls `listen` once the lb opens. A successor's new sockets must not join a
/// handed-over group before it takes over: the kernel would queue clients on them
/// while its probes run, and reset those clients if it then failed to start. (A new
/// VIP's own sockets listen at once, as a single listener always did: its clients
/// wait in the backlog until the lb opens.)
fn listen_sockets(
    configured: SocketAddr,
    inherited: Vec<std::net::TcpListener>,
    workers: usize,
    listen_now: bool,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let handed_over = !inherited.is_empty();
    let mut sockets = inherited;
    for s in &sockets {
        let _ = socket2::SockRef::from(s).set_reuse_port(true);
    }
    if sockets.is_empty() {
        sockets.push(bind_socket(configured, true)?);
    }
    // Only sockets joining a handed-over group wait; a group of our own takes no
    // one else's clients.
    let listen_now = listen_now || !handed_over;
    let local = sockets[0].local_addr()?;
    while sockets.len() < workers {
        match bind_socket(local, listen_now) {
            Ok(l) => sockets.push(l),
            Err(e) if handed_over => {
                tracing::warn!(
                    "{local}: cannot open a listening socket per worker beside the \
                     {} handed over ({e}); the workers share them",
                    sockets.len()
                );
                let shared = sockets.len();
                while sockets.len() < workers {
                    let dup = sockets[sockets.len() % shared].try_clone()?;
                    sockets.push(dup);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(sockets)
}

/// Binds a VIP's listening socket with `IP_FREEBIND`/`IPV6_FREEBIND`, so a replica
/// can start before its VIP address is on the host (anycast setups put the VIP on a
/// loopback or dummy interface, sometimes after the balancer starts), with
/// `SO_REUSEADDR` as `TcpListener::bind` does, and with `SO_REUSEPORT`: each
/// data-path worker has its own socket on the VIP's address and the kernel spreads
/// new connections over them. The socket is non-blocking and not yet registered
/// with a runtime. (A second process binding the same address with `SO_REUSEPORT`
/// and the same user would share it, as with HAProxy and NGINX `reuseport`; one
/// that does not set it still gets "address in use".)
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_socket(addr, true)
}

/// The backlog of a VIP's listening sockets.
const LISTEN_BACKLOG: i32 = 1024;

/// As [`bind_listener`]; with `listen` false the socket is bound but not yet
/// listening (see [`listen_sockets`]).
fn bind_socket(addr: SocketAddr, listen: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv4() {
        socket.set_freebind(true)?;
    } else {
        socket.set_freebind_ipv6(true)?;
    }
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(LISTEN_BACKLOG)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.inner.tasks.token().cancel();
        self.inner.tasks.stop_workers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VIP on an address the host does not have (TEST-NET-1) still binds: without
    /// IP_FREEBIND the kernel refuses it with EADDRNOTAVAIL.
    #[tokio::test]
    async fn a_vip_binds_on_an_address_not_on_the_host() {
        let addr: SocketAddr = "192.0.2.77:0".parse().unwrap();
        let plain = std::net::TcpListener::bind(addr);
        assert!(
            plain.is_err(),
            "192.0.2.77 must not be on this host for the test to mean anything"
        );
        let l = bind_listener(addr).expect("freebind lets the VIP bind");
        assert_eq!(l.local_addr().unwrap().ip(), addr.ip());
        let v6: SocketAddr = "[2001:db8::77]:0".parse().unwrap();
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let l = bind_listener(v6).expect("IPV6_FREEBIND lets the VIP bind");
            assert_eq!(l.local_addr().unwrap().ip(), v6.ip());
        }
    }
}
