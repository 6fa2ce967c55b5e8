//! The gss role: an authoritative DNS server for the delegated zone whose answers
//! follow the aggregate health of each site.
//!
//! [`Gss::start`] runs one keepalive checker per keepalive (rise/fall from `shared`),
//! waits for the first round (bounded by the probe timeouts) so it never answers from
//! an unknown state, renders the answers ([`answers`]) and only then opens its port
//! ([`server`], with UDP answered by [`fastpath`] from pre-rendered bytes parsed and
//! patched by [`wire`]). Every keepalive result goes through the supervisor ([`Core`]), which
//! aggregates it per site ([`site`]), re-runs selection ([`select`]) when a site
//! changes and swaps the rendered zone whole. A timer task re-renders when a failback
//! wait ends. Operators act through [`admin`].

pub mod admin;
pub mod answers;
pub mod edns;
pub mod fastpath;
pub mod lookup;
pub mod metrics;
pub mod pktinfo;
pub mod select;
pub mod server;
pub mod site;
pub mod tcp;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use shared::admin::{AdminHandler, SiteOverride};
use shared::config::{GssConfig, KeepaliveConfig, SiteConfig};
use shared::events::EventLog;
use shared::health::{spawn_checker, CheckResult, RiseFall};
use shared::probe::{BuildError, Probe};
use shared::status::SiteStatus;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::answers::{render, Zone, ZoneTemplate};
use crate::metrics::KeepaliveMetrics;
use crate::select::HealthView;
use crate::server::DnsServer;

use crate::site::{Change, SiteState};

/// Why the gss could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum GssError {
    /// The gss part of the config cannot be served (bad static rdata, names outside
    /// the zone...).
    #[error("gss config: {0}")]
    Config(String),
    /// A keepalive probe could not be built.
    #[error("site {site}: keepalive {keepalive}: {reason}")]
    Probe {
        /// Site name.
        site: String,
        /// Keepalive display name.
        keepalive: String,
        /// The probe builder's reason.
        reason: String,
    },
    /// The DNS port could not be bound.
    #[error("gss cannot listen on {0}: {1}")]
    Bind(SocketAddr, String),
}

/// Why an operator override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// No site has this name.
    #[error("no site {0:?}; `show sites` lists them")]
    UnknownSite(String),
}

/// A checked gss config waiting to be committed (see [`Gss::prepare_reload`]).
pub struct PreparedReload {
    cfg: GssConfig,
    tpl: Arc<ZoneTemplate>,
    built: HashMap<String, Vec<Arc<dyn Probe>>>,
}

/// Builds the probe for a keepalive; the default uses `shared::probe::build`, tests
/// pass their own.
pub type ProbeFactory =
    Arc<dyn Fn(&KeepaliveConfig) -> Result<Arc<dyn Probe>, BuildError> + Send + Sync>;

/// The factory used by [`Gss::start`].
pub fn default_probes() -> ProbeFactory {
    Arc::new(|k: &KeepaliveConfig| shared::probe::build(&k.probe, k.address))
}

/// Extra wait beyond the slowest keepalive's first-round bound at cold start.
const COLD_START_SLACK: Duration = Duration::from_millis(300);

struct SiteTask {
    cancel: CancellationToken,
    /// Kept with the checkers so the site's gauge is registered once.
    metrics: crate::metrics::SiteMetrics,
    generation: u64,
    handles: Vec<JoinHandle<()>>,
}

struct State {
    tpl: Arc<ZoneTemplate>,
    sites: Vec<SiteState>,
    tasks: HashMap<String, SiteTask>,
    generation: u64,
    settled: bool,
}

/// The supervisor shared by checkers, the timer, the admin handler and [`Gss`].
pub struct Core {
    state: Mutex<State>,
    zone: Arc<ArcSwap<Zone>>,
    events: Arc<EventLog>,
    probes: ProbeFactory,
    wake: Notify,
    reported: Notify,
    cancel: CancellationToken,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view(st: &State) -> HealthView {
        HealthView {
            sites: st
                .sites
                .iter()
                .map(|s| (s.name.clone(), s.view()))
                .collect(),
        }
    }

    /// Renders the zone for the current health; stores it when the answers changed (or
    /// `force`), recording an event per name whose answer moved.
    fn rerender(&self, st: &State, force: bool) {
        // Health changed: the failback timer recomputes its deadline either way.
        self.wake.notify_one();
        let view = Core::view(st);
        let prev = self.zone.load_full();
        let next = render(st.tpl.clone(), &view, Instant::now(), Some(&prev));
        if next.signature == prev.signature && !force {
            return;
        }
        let mut changes: Vec<(String, String)> = Vec::new();
        for (name, now) in &next.outcomes {
            let before = prev
                .outcomes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b);
            for (i, s) in now.iter().enumerate() {
                let was = before.and_then(|b| b.get(i));
                if was == Some(s) {
                    continue;
                }
                let what = if i == 0 {
                    "answers".to_string()
                } else {
                    format!("answers for client rule #{i}")
                };
                let was = was.map(String::as_str).unwrap_or("nothing");
                changes.push((name.clone(), format!("{what} now {s} (was {was})")));
            }
        }
        let serial = next.serial;
        let next = Arc::new(next);
        self.zone.store(next.clone());
        prepare_fast(next, self.zone.clone());
        if st.settled {
            for (name, msg) in changes {
                self.events.record(name, format!("{msg}; serial {serial}"));
            }
        }
    }

    fn apply_change(&self, st: &State, site: &str, change: Change) {
        let t0 = Instant::now();
        self.rerender(st, false);
        let switched = t0.elapsed();
        if let Some(t) = st.tasks.get(site) {
            t.metrics.set_up(change.up);
        }
        if let Some(d) = change.detection {
            crate::metrics::failover_detection().record(d.as_secs_f64());
        }
        self.events.record(
            site,
            format!(
                "{}; answers switched {:.1}ms later",
                change.message,
                switched.as_secs_f64() * 1000.0
            ),
        );
    }

    fn on_result(
        &self,
        site: &str,
        generation: u64,
        idx: usize,
        r: &CheckResult,
        counters: &KeepaliveMetrics,
    ) {
        counters.record(r.ok());
        let mut st = self.lock();
        if st.tasks.get(site).map(|t| t.generation) != Some(generation) {
            return;
        }
        let settled = st.settled;
        let Some(s) = st.sites.iter_mut().find(|s| s.name == site) else {
            return;
        };
        let change = s.observe(
            idx,
            r.ok(),
            r.up,
            r.error.as_ref().map(|e| e.to_string()),
            Instant::now(),
        );
        if !settled {
            if st.sites.iter().all(SiteState::reported) {
                self.reported.notify_waiters();
            }
            return;
        }
        if let Some(c) = change {
            self.apply_change(&st, site, c);
        }
    }

    /// Starts the checkers of `cfg`'s keepalives, keeping verdicts from `state`.
    fn spawn_site(self: &Arc<Self>, st: &mut State, cfg: &SiteConfig, probes: Vec<Arc<dyn Probe>>) {
        st.generation += 1;
        let generation = st.generation;
        let cancel = self.cancel.child_token();
        let known: Vec<Option<bool>> = st
            .sites
            .iter()
            .find(|s| s.name == cfg.name)
            .map(|s| s.keepalives.iter().map(|k| k.up).collect())
            .unwrap_or_default();
        let mut handles = Vec::with_capacity(probes.len());
        for (idx, (k, probe)) in cfg.keepalives.iter().zip(probes).enumerate() {
            let timing = k.probe.timing;
            let machine =
                RiseFall::with_state(timing.rise, timing.fall, known.get(idx).copied().flatten());
            let core = Arc::downgrade(self);
            let site = cfg.name.clone();
            let counters = KeepaliveMetrics::new(&cfg.name, &k.name);
            handles.push(spawn_checker(
                probe,
                timing,
                machine,
                cancel.clone(),
                move |r| {
                    if let Some(core) = core.upgrade() {
                        core.on_result(&site, generation, idx, r, &counters);
                    }
                },
            ));
        }
        if let Some(old) = st.tasks.insert(
            cfg.name.clone(),
            SiteTask {
                cancel,
                metrics: crate::metrics::SiteMetrics::new(&cfg.name),
                generation,
                handles,
            },
        ) {
            old.cancel.cancel();
        }
    }

    fn build_probes(&self, cfg: &SiteConfig) -> Result<Vec<Arc<dyn Probe>>, GssError> {
        cfg.keepalives
            .iter()
            .map(|k| {
                (self.probes)(k).map_err(|e| GssError::Probe {
                    site: cfg.name.clone(),
                    keepalive: k.name.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Applies an operator override.
    pub fn set_override(
        &self,
        site: &str,
        o: SiteOverride,
        who: &str,
    ) -> Result<(), OverrideError> {
        let mut st = self.lock();
        let Some(s) = st.sites.iter_mut().find(|s| s.name == site) else {
            return Err(OverrideError::UnknownSite(site.to_string()));
        };
        let (note, change) = s.set_override(o, Instant::now());
        self.events.record(site, format!("{note} ({who})"));
        match change {
            Some(c) => self.apply_change(&st, site, c),
            // `auto` may release a failback hold without a state change.
            None => self.rerender(&st, false),
        }
        Ok(())
    }

    /// `show sites` lines.
    pub fn show_sites(&self) -> Vec<String> {
        let st = self.lock();
        st.sites
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} {}/{} since {}",
                    s.name,
                    if s.up == Some(true) { "up" } else { "down" },
                    s.forced.map(|o| o.as_str()).unwrap_or("-"),
                    s.passing(),
                    s.keepalives.len(),
                    humantime::format_rfc3339_seconds(s.since)
                )
            })
            .collect()
    }

    /// Site states for `/status`.
    pub fn status(&self) -> Vec<SiteStatus> {
        let st = self.lock();
        st.sites
            .iter()
            .map(|s| SiteStatus {
                name: s.name.clone(),
                up: s.up == Some(true),
                override_state: s.forced.map(|o| o.as_str().to_string()),
            })
            .collect()
    }

    /// The current rendered zone.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.load_full()
    }

    /// The config the current zone was rendered from, and the health view now.
    pub fn snapshot(&self) -> (Arc<ZoneTemplate>, HealthView) {
        let st = self.lock();
        (st.tpl.clone(), Core::view(&st))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let st = self.lock();
        let view = Core::view(&st);
        let now = Instant::now();
        st.tpl
            .cfg
            .names
            .iter()
            .filter_map(|n| select::next_deadline(n, &view, now))
            .min()
    }
}

/// A running gss.
pub struct Gss {
    core: Arc<Core>,
    server: tokio::sync::Mutex<Option<DnsServer>>,
    addr: SocketAddr,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl Gss {
    /// Starts the gss with the real probes (`shared::probe::build`).
    pub async fn start(cfg: &GssConfig, events: Arc<EventLog>) -> Result<Gss, GssError> {
        Gss::start_with_probes(cfg, events, default_probes()).await
    }

    /// Starts the gss with `probes` building each keepalive's probe: checkers first,
    /// then (after the first round, bounded) the DNS port.
    pub async fn start_with_probes(
        cfg: &GssConfig,
        events: Arc<EventLog>,
        probes: ProbeFactory,
    ) -> Result<Gss, GssError> {
        crate::metrics::describe();
        let tpl = Arc::new(ZoneTemplate::new(cfg)?);
        let initial = render(tpl.clone(), &HealthView::default(), Instant::now(), None);
        let core = Arc::new(Core {
            state: Mutex::new(State {
                tpl,
                sites: cfg.sites.iter().map(SiteState::new).collect(),
                tasks: HashMap::new(),
                generation: 0,
                settled: false,
            }),
            zone: Arc::new(ArcSwap::from_pointee(initial)),
            events,
            probes,
            wake: Notify::new(),
            reported: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let mut built = Vec::with_capacity(cfg.sites.len());
        for s in &cfg.sites {
            built.push(core.build_probes(s)?);
        }
        {
            let mut st = core.lock();
            for (s, p) in cfg.sites.iter().zip(built) {
                core.spawn_site(&mut st, s, p);
            }
        }
        // Cold start: wait for every keepalive's first verdict, bounded by the first
        // round's worst case (initial spread of interval/5, then the timeout).
        let bound = cfg
            .sites
            .iter()
            .flat_map(|s| s.keepalives.iter())
            .map(|k| k.probe.timing.interval / 5 + k.probe.timing.timeout)
            .max()
            .unwrap_or_default()
            + COLD_START_SLACK;
        let deadline = Instant::now() + bound;
        loop {
            let notified = core.reported.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if core.lock().sites.iter().all(SiteState::reported) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("gss: not every keepalive answered its first round in {bound:?}; treating the silent ones as failing");
                break;
            }
        }
        {
            let mut st = core.lock();
            let mut changes = Vec::new();
            for s in st.sites.iter_mut() {
                changes.push((s.name.clone(), s.settle()));
            }
            st.settled = true;
            core.rerender(&st, true);
            for (name, c) in changes {
                if let Some(t) = st.tasks.get(&name) {
                    t.metrics.set_up(c.up);
                }
                core.events.record(name, c.message);
            }
            for (name, summaries) in &core.zone.load().outcomes {
                core.events
                    .record(name.clone(), format!("answers {} (initial)", summaries[0]));
            }
        }
        let server = match DnsServer::bind(
            cfg.listen,
            core.zone.clone(),
            server::UdpMode::default(),
            core.cancel.clone(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                core.cancel.cancel();
                return Err(e);
            }
        };
        let addr = server.local_addr();
        tracing::info!(%addr, zone = %cfg.zone, "gss serving");
        let timer = tokio::spawn(timer_loop(Arc::downgrade(&core), core.cancel.clone()));
        Ok(Gss {
            core,
            server: tokio::sync::Mutex::new(Some(server)),
            addr,
            timer: Mutex::new(Some(timer)),
        })
    }

    /// The address the DNS server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every site's effective state and override, for `/status`.
    pub fn status(&self) -> Vec<SiteStatus> {
        self.core.status()
    }

    /// The admin handler for `show sites`, `site ...` and `explain`.
    pub fn admin(&self) -> Arc<dyn AdminHandler> {
        Arc::new(admin::GssAdmin::new(self.core.clone()))
    }

    /// The supervisor (for tests and in-process inspection).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Applies a new config: sites whose config is unchanged keep their checkers and
    /// state; changed sites restart their checkers but keep overrides and the verdicts
    /// of keepalives with the same name; names and records are re-rendered. A change
    /// of `listen` needs a restart (logged).
    pub async fn reload(&self, cfg: &GssConfig) -> Result<(), GssError> {
        let prepared = self.prepare_reload(cfg)?;
        self.commit_reload(prepared);
        Ok(())
    }

    /// The fallible half of [`Gss::reload`] (zone template, probes of changed sites),
    /// changing nothing, so the binary can check every role before touching any.
    pub fn prepare_reload(&self, cfg: &GssConfig) -> Result<PreparedReload, GssError> {
        let tpl = Arc::new(ZoneTemplate::new(cfg)?);
        let old_sites: Vec<SiteConfig> = self.core.lock().tpl.cfg.sites.clone();
        let mut built = HashMap::new();
        for s in &cfg.sites {
            if !old_sites.contains(s) {
                built.insert(s.name.clone(), self.core.build_probes(s)?);
            }
        }
        Ok(PreparedReload {
            cfg: cfg.clone(),
            tpl,
            built,
        })
    }

    /// Puts a [`Gss::prepare_reload`] result in service; cannot fail.
    pub fn commit_reload(&self, prepared: PreparedReload) {
        let PreparedReload {
            cfg,
            tpl,
            mut built,
        } = prepared;
        let cfg = &cfg;
        let mut st = self.core.lock();
        if cfg.listen != st.tpl.cfg.listen {
            tracing::warn!(old = %st.tpl.cfg.listen, new = %cfg.listen, "gss.listen changed; restart to move the DNS port");
        }
        let mut sites = Vec::with_capacity(cfg.sites.len());
        for s in &cfg.sites {
            let old = st.sites.iter().find(|o| o.name == s.name).cloned();
            match (old, built.remove(&s.name)) {
                (Some(old), None) => sites.push(old),
                (old, Some(probes)) => {
                    let mut fresh = SiteState::new(s);
                    match &old {
                        Some(o) => fresh.inherit(o),
                        None => {
                            // A new site starts from its first results, like a cold
                            // start, but must not block serving: settle it now.
                            fresh.settle();
                        }
                    }
                    // spawn_site reads verdicts from st.sites by name.
                    if let Some(slot) = st.sites.iter_mut().find(|o| o.name == s.name) {
                        *slot = fresh.clone();
                    } else {
                        st.sites.push(fresh.clone());
                    }
                    self.core.spawn_site(&mut st, s, probes);
                    sites.push(fresh);
                }
                (None, None) => sites.push(SiteState::new(s)),
            }
        }
        for gone in st
            .sites
            .iter()
            .filter(|o| !cfg.sites.iter().any(|s| s.name == o.name))
            .map(|o| o.name.clone())
            .collect::<Vec<_>>()
        {
            if let Some(t) = st.tasks.remove(&gone) {
                t.cancel.cancel();
            }
            self.core.events.record(gone, "removed by reload");
        }
        st.sites = sites;
        st.tpl = tpl;
        self.core.rerender(&st, true);
        drop(st);
        self.core.events.record("gss", "config reloaded");
    }

    /// Stops the checkers, the timer and the DNS server.
    pub async fn shutdown(&self) {
        self.core.cancel.cancel();
        if let Some(server) = self.server.lock().await.take() {
            server.shutdown().await;
        }
        let timer = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = timer {
            let _ = t.await;
        }
        let handles: Vec<JoinHandle<()>> = {
            let mut st = self.core.lock();
            st.tasks
                .values_mut()
                .flat_map(|t| t.handles.drain(..))
                .collect()
        };
        for h in handles {
            let _ = h.await;
        }
    }
}

impl Drop for Gss {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}

/// Renders the fast path's table of a zone just stored, off the caller's thread when
/// there is a runtime (the switch is already visible through the hickory path). A
/// zone replaced before its turn comes is skipped (flapping costs no wasted renders).
fn prepare_fast(zone: Arc<Zone>, current: Arc<ArcSwap<Zone>>) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(move || {
                if Arc::ptr_eq(&current.load(), &zone) {
                    zone.fast_table();
                }
            });
        }
        Err(_) => {
            zone.fast_table();
        }
    }
}

/// Re-renders when a failback wait ends (no health event marks that moment).
async fn timer_loop(core: std::sync::Weak<Core>, cancel: CancellationToken) {
    loop {
        let Some(c) = core.upgrade() else { return };
        let deadline = c
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let fired = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = c.wake.notified() => false,
            _ = tokio::time::sleep_until(deadline) => true,
        };
        if fired {
            let st = c.lock();
            c.rerender(&st, false);
        }
    }
}
