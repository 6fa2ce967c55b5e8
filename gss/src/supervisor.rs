//! The supervisor: owns the health state, every task the role spawns and the one
//! published [`Snapshot`].
//!
//! [`Gss::start`] runs one keepalive checker per keepalive (rise/fall from `shared`),
//! waits for the first round (bounded by the probe timeouts) so it never answers from
//! an unknown state, renders the answers ([`crate::zone`]) and only then opens its
//! port ([`crate::server`]). Every keepalive result goes through [`Core`], which
//! aggregates it per site ([`crate::site`]), re-runs selection ([`crate::select`])
//! when a site changes and publishes a new snapshot. A timer task re-renders when a
//! failback wait ends. Checkers, the timer and the fast-path table renders all run
//! on one `TaskTracker` under one `CancellationToken`; [`Gss::shutdown`] cancels them
//! and waits (bounded) for them and for the server's connections and UDP threads.
//!
//! A reload is [`Gss::prepare`] (everything that can fail: zone template, probes of
//! changed sites) then [`Gss::commit`] (cannot fail; one snapshot swap).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use shared::admin::SiteOverride;
use shared::cluster::{Cluster, ClusterView};
use shared::config::{GssConfig, GssRole, KeepaliveConfig, SiteConfig};
use shared::events::EventLog;
use shared::handover::{Inherited, SocketEntry};
use shared::health::{spawn_checker, CheckResult, RiseFall};
use shared::intent::{Entry, IntentStore, Intents, Key, SiteIntent, Value};
use shared::probe::{BuildError, Probe};
use shared::status::{SitePage, SiteStatus};
use std::os::fd::OwnedFd;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{GssError, OverrideError};
use crate::metrics::{KeepaliveMetrics, SiteMetrics};
use crate::quorum::Rule;
use crate::select::{self, HealthView};
use crate::serial::{SerialFile, Served};
use crate::server::DnsServer;
use crate::site::{Change, PeerView, SiteState, Voting};
use crate::snapshot::Snapshot;
use crate::udp::UdpMode;
use crate::zone::{render, render_after, ZoneTemplate};

/// A checked gss config waiting to be committed (see [`Gss::prepare`]).
pub struct Plan {
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

/// How long [`Gss::shutdown`] waits for the role's tasks, connections and threads.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

struct SiteTask {
    cancel: CancellationToken,
    /// Kept with the checkers so the site's gauge is registered once.
    metrics: SiteMetrics,
    generation: u64,
}

struct State {
    tpl: Arc<ZoneTemplate>,
    sites: Vec<SiteState>,
    tasks: HashMap<String, SiteTask>,
    generation: u64,
    settled: bool,
    /// The serial and signature served last (at start: what was saved, if any).
    served: Option<Served>,
    /// What the cluster's other gss nodes serve (their `serial` keys), which the
    /// serial follows so nodes with the same answers serve the same serial.
    peer_serials: Vec<Served>,
    /// The `serial` key this node published last.
    published_serial: Option<Served>,
}

/// A site's view as this node publishes it to the cluster (`view/<site>`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct PublishedView {
    up: bool,
    /// Unix seconds of the verdict's last change.
    since: u64,
    passing: usize,
    total: usize,
    reason: String,
}

fn view_key(site: &str) -> String {
    format!("view/{site}")
}

/// The key under which a serving gss publishes `SERIAL SIGNATURE_HEX`.
const SERIAL_KEY: &str = "serial";

fn parse_serial(v: &str) -> Option<Served> {
    let (serial, signature) = v.split_once(' ')?;
    Some(Served {
        serial: serial.parse().ok()?,
        signature: u64::from_str_radix(signature, 16).ok()?,
    })
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The supervisor shared by checkers, the timer, the admin handler and [`Gss`]. The
/// mutex holds the writer's state (site state machines, checker tasks); readers use
/// the published [`Snapshot`].
pub struct Core {
    state: Mutex<State>,
    snap: Arc<ArcSwap<Snapshot>>,
    events: Arc<EventLog>,
    probes: ProbeFactory,
    /// Where overrides are recorded and restored from.
    intents: Arc<IntentStore>,
    /// Where the served serial is kept across restarts.
    serial_file: SerialFile,
    wake: Notify,
    /// Told when a reload replaced the signatures, so the re-sign wait starts over.
    resign_wake: Notify,
    reported: Notify,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The cluster this node votes in (or, as a witness, publishes to).
    cluster: Option<Arc<Cluster>>,
    role: GssRole,
}

impl Core {
    /// The quorum rule of `gss` in this node's cluster; `None` when it decides alone
    /// (no cluster) or only publishes (a witness).
    fn rule(&self, gss: &GssConfig) -> Option<Rule> {
        let c = self.cluster.as_ref()?;
        if self.role != GssRole::Server {
            return None;
        }
        let cc = c.config();
        let vantage = cc.vantage_points().count().max(1);
        Some(Rule {
            vantage,
            quorum: gss
                .quorum
                .map(|q| q as usize)
                .unwrap_or_else(|| Rule::majority(vantage)),
            stale_after: cc.stale_after,
        })
    }

    /// A fresh site state, voting when this gss serves DNS in a cluster.
    fn new_site(&self, site: &SiteConfig, gss: &GssConfig) -> SiteState {
        let mut s = SiteState::new(site);
        if let (Some(rule), Some(c)) = (self.rule(gss), &self.cluster) {
            s.voting = Some(Voting {
                me: c.config().node.clone(),
                rule,
                peers: Vec::new(),
                agreed: None,
                tally: None,
            });
        }
        s
    }

    /// Publishes this node's own verdict on `s` once every keepalive has spoken (a
    /// node that does not know yet casts no vote).
    fn publish_view(&self, s: &SiteState) {
        let Some(c) = &self.cluster else { return };
        if !s.reported() {
            return;
        }
        let v = PublishedView {
            up: s.health_up(),
            since: unix_ms(s.health_since) / 1000,
            passing: s.passing(),
            total: s.keepalives.len(),
            reason: s.health_text(),
        };
        c.publish(
            &view_key(&s.name),
            serde_json::to_string(&v).unwrap_or_default(),
        );
    }

    /// Peers' views changed or aged: re-count every site's votes and record vote
    /// changes, decisions and fail-static transitions. (Peers' overrides arrive as
    /// intent, through [`Core::apply_shared`].)
    fn on_cluster(&self, view: &ClusterView) {
        let Some(cluster) = &self.cluster else { return };
        let cc = cluster.config();
        let mut st = self.lock();
        if self.role == GssRole::Witness {
            return;
        }
        let now = Instant::now();
        let mut events: Vec<(String, String)> = Vec::new();
        let mut changes: Vec<(String, Change)> = Vec::new();
        let settled = st.settled;
        for s in st.sites.iter_mut() {
            let key = view_key(&s.name);
            let Some(v) = &mut s.voting else { continue };
            let peers: Vec<PeerView> = view
                .members
                .iter()
                .filter(|m| !m.is_self && cc.vantage_points().any(|c| c.id == m.id))
                .filter_map(|m| {
                    let heard_at = m.last_contact?;
                    let pv: PublishedView = serde_json::from_str(m.keys.get(&key)?).ok()?;
                    Some(PeerView {
                        voter: m.id.clone(),
                        up: pv.up,
                        heard_at,
                        detail: format!(
                            "{}/{} keepalives passing: {}",
                            pv.passing, pv.total, pv.reason
                        ),
                    })
                })
                .collect();
            for p in &peers {
                let before = v.peers.iter().find(|o| o.voter == p.voter).map(|o| o.up);
                if before != Some(p.up) {
                    events.push((
                        s.name.clone(),
                        format!(
                            "vote: {} sees it {} ({})",
                            p.voter,
                            if p.up { "up" } else { "down" },
                            p.detail
                        ),
                    ));
                }
            }
            v.peers = peers;
            let stale_before: Vec<String> = v
                .tally
                .as_ref()
                .map(|t| t.stale.clone())
                .unwrap_or_default();
            let fs_before = s.fail_static();
            if settled {
                if let Some(c) = s.reevaluate(now) {
                    changes.push((s.name.clone(), c));
                }
            }
            let Some(t) = s.voting.as_ref().and_then(|v| v.tally.clone()) else {
                continue;
            };
            for voter in &t.stale {
                if !stale_before.contains(voter) {
                    events.push((s.name.clone(), format!("vote: {voter}'s view is older than stale_after and no longer counts; {}", t.text())));
                }
            }
            for voter in &stale_before {
                if !t.stale.contains(voter) {
                    events.push((
                        s.name.clone(),
                        format!(
                            "vote: {voter}'s view is fresh again and counts; {}",
                            t.text()
                        ),
                    ));
                }
            }
            if t.fail_static() != fs_before {
                crate::metrics::set_fail_static(&s.name, t.fail_static());
                events.push((
                    s.name.clone(),
                    if t.fail_static() {
                        format!("fail-static: {}", t.text())
                    } else {
                        format!("quorum reached: {}", t.text())
                    },
                ));
            }
            for voter in cc.vantage_points() {
                let vote = if t.up.contains(&voter.id) {
                    1
                } else if t.down.contains(&voter.id) {
                    0
                } else {
                    -1
                };
                crate::metrics::set_vote(&s.name, &voter.id, vote);
            }
        }
        // Peers' serials: a node serving the same answers under a newer serial is
        // followed (see `serial::next`).
        let peer_serials: Vec<Served> = view
            .members
            .iter()
            .filter(|m| !m.is_self)
            .filter_map(|m| parse_serial(m.keys.get(SERIAL_KEY)?))
            .collect();
        let serials_moved = peer_serials != st.peer_serials;
        st.peer_serials = peer_serials;
        for (site, msg) in events {
            self.events.record(site, msg);
        }
        if changes.is_empty() {
            if serials_moved {
                self.rerender(&mut st, false);
            }
            return;
        }
        for (site, c) in changes {
            self.apply_change(&mut st, &site, c);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        shared::sync::lock(&self.state)
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

    /// Renders the zone for the current health and publishes one snapshot: a new
    /// zone when the answers changed (or `force`), recording an event per name whose
    /// answer moved, else the same zone under the new health view.
    fn rerender(&self, st: &mut State, force: bool) {
        // Health changed: the failback timer recomputes its deadline either way.
        self.wake.notify_one();
        let view = Core::view(st);
        let current = self.snap.load_full();
        let prev = &current.zone;
        // The serial follows what was served (or saved before a restart), not the
        // unserved placeholder zone of a cold start.
        let next = render_after(
            st.tpl.clone(),
            &view,
            Instant::now(),
            st.served,
            &st.peer_serials,
        );
        if next.signature == prev.signature && next.serial == prev.serial && !force {
            self.snap.store(Arc::new(current.with_view(view)));
            self.publish_serial(st, prev.served());
            return;
        }
        let mut changes: Vec<(String, String)> = Vec::new();
        // By name, once: a search of the old outcomes per name made a change of
        // 100,000 names quadratic.
        let previous: HashMap<&str, &Vec<String>> =
            prev.outcomes.iter().map(|(n, b)| (n.as_str(), b)).collect();
        for (name, now) in &next.outcomes {
            let before = previous.get(name.as_str()).copied();
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
        if let Some(s) = &next.tpl.signatures {
            crate::metrics::signatures_expiry().set(s.earliest_expiry as f64);
        }
        let served = next.served();
        let next = Arc::new(Snapshot::new(next, view));
        self.snap.store(next.clone());
        self.fill_table(next);
        if st.served != Some(served) {
            st.served = Some(served);
            self.serial_file.save(served);
        }
        self.publish_serial(st, served);
        if st.settled {
            for (name, msg) in changes {
                self.events.record(name, format!("{msg}; serial {serial}"));
            }
        }
    }

    /// Tells the cluster's other gss nodes which serial this node serves for which
    /// answers (a witness serves none).
    fn publish_serial(&self, st: &mut State, served: Served) {
        let Some(c) = &self.cluster else { return };
        if self.role == GssRole::Witness || st.published_serial == Some(served) {
            return;
        }
        st.published_serial = Some(served);
        c.publish(
            SERIAL_KEY,
            format!("{} {:x}", served.serial, served.signature),
        );
    }

    fn apply_change(&self, st: &mut State, site: &str, change: Change) {
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
        let before = s.view();
        let change = s.observe(
            idx,
            r.ok(),
            r.up,
            r.error.as_ref().map(|e| e.to_string()),
            Instant::now(),
        );
        self.publish_view(s);
        if !settled {
            if st.sites.iter().all(SiteState::reported) {
                self.reported.notify_waiters();
            }
            return;
        }
        match change {
            Some(c) => self.apply_change(&mut st, site, c),
            None if st
                .sites
                .iter()
                .any(|s| s.name == site && s.view() != before) =>
            {
                // Passing counts moved without a site change: same answers, new view.
                let current = self.snap.load();
                self.snap
                    .store(Arc::new(current.with_view(Core::view(&st))));
            }
            None => {}
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
        for (idx, (k, probe)) in cfg.keepalives.iter().zip(probes).enumerate() {
            let timing = k.probe.timing;
            let machine =
                RiseFall::with_state(timing.rise, timing.fall, known.get(idx).copied().flatten());
            let core = Arc::downgrade(self);
            let site = cfg.name.clone();
            let counters = KeepaliveMetrics::new(&cfg.name, &k.name);
            let checker = spawn_checker(probe, timing, machine, cancel.clone(), move |r| {
                if let Some(core) = core.upgrade() {
                    core.on_result(&site, generation, idx, r, &counters);
                }
            });
            // `shared` spawns the checker; the tracker owns waiting for it.
            self.tasks.spawn(async move {
                if let Err(e) = checker.await {
                    tracing::warn!(error = %e, "gss keepalive checker ended abnormally");
                }
            });
        }
        if let Some(old) = st.tasks.insert(
            cfg.name.clone(),
            SiteTask {
                cancel,
                metrics: SiteMetrics::new(&cfg.name),
                generation,
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

    /// Applies an operator override, recorded as intent first (the state file when
    /// `state_dir` is set): if it cannot be recorded nothing changes.
    pub fn set_override(
        &self,
        site: &str,
        o: SiteOverride,
        who: &str,
    ) -> Result<(), OverrideError> {
        if !self.lock().sites.iter().any(|s| s.name == site) {
            return Err(OverrideError::UnknownSite(site.to_string()));
        }
        let state = match o {
            SiteOverride::Down => SiteIntent::Down,
            SiteOverride::Up => SiteIntent::Up,
            SiteOverride::Auto => SiteIntent::Auto,
        };
        // Lock order: the intent store, then the state (as in `commit`).
        self.intents
            .record(Key::Site(site.to_string()), Value::Site { state }, |_| {
                self.apply_override(site, o, who)
            })
            .map_err(|e| OverrideError::Intent(e.to_string()))?
    }

    fn apply_override(&self, site: &str, o: SiteOverride, who: &str) -> Result<(), OverrideError> {
        let mut st = self.lock();
        let Some(s) = st.sites.iter_mut().find(|s| s.name == site) else {
            return Err(OverrideError::UnknownSite(site.to_string()));
        };
        let (note, change) = s.set_override(o, Instant::now());
        self.events.record(site, format!("{note} ({who})"));
        match change {
            Some(c) => self.apply_change(&mut st, site, c),
            // `auto` may release a failback hold without a state change.
            None => self.rerender(&mut st, false),
        }
        Ok(())
    }

    /// Applies a peer's winning override (handed over by the fleet loop, under the
    /// intent store's lock, already recorded there): as a local command, but not
    /// recorded again. A site this config does not have keeps it in the store.
    pub fn apply_shared(&self, key: &Key, entry: &Entry) {
        let (Key::Site(site), Value::Site { state }) = (key, entry.value) else {
            return;
        };
        let o = match state {
            SiteIntent::Down => SiteOverride::Down,
            SiteIntent::Up => SiteOverride::Up,
            SiteIntent::Auto => SiteOverride::Auto,
        };
        let mut st = self.lock();
        let Some(s) = st.sites.iter_mut().find(|s| s.name == *site) else {
            return;
        };
        let (note, change) = s.set_override(o, Instant::now());
        self.events.record(
            site.as_str(),
            format!("{note} (shared by peer {})", entry.origin()),
        );
        match change {
            Some(c) => self.apply_change(&mut st, site, c),
            None => self.rerender(&mut st, false),
        }
    }

    /// `show sites` lines; in a cluster each site's line ends with the quorum
    /// outcome and is followed by one indented line per vantage point.
    pub fn show_sites(&self) -> Vec<String> {
        let st = self.lock();
        let mut lines = Vec::new();
        for s in &st.sites {
            let mut line = format!(
                "{} {} {} {}/{} since {}",
                s.name,
                if s.up == Some(true) { "up" } else { "down" },
                s.forced.map(|o| o.as_str()).unwrap_or("-"),
                s.passing(),
                s.keepalives.len(),
                humantime::format_rfc3339_seconds(s.since)
            );
            if let Some(t) = s.voting.as_ref().and_then(|v| v.tally.as_ref()) {
                line.push_str(if t.fail_static() {
                    " fail-static"
                } else {
                    " quorum"
                });
            }
            lines.push(line);
            lines.extend(Core::vantage_lines(s).into_iter().map(|l| format!("  {l}")));
        }
        lines
    }

    /// The quorum arithmetic and each vantage point's view of `s`, empty outside a
    /// cluster.
    fn vantage_lines(s: &SiteState) -> Vec<String> {
        let Some(v) = &s.voting else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut lines = Vec::new();
        if let Some(t) = &v.tally {
            lines.push(t.text());
        }
        lines.push(format!(
            "vantage {} (this node): {} ({}), age 0.0s",
            v.me,
            if s.health_up() { "up" } else { "down" },
            s.health_text()
        ));
        for p in &v.peers {
            let age = now.saturating_duration_since(p.heard_at);
            lines.push(format!(
                "vantage {}: {} ({}), age {:.1}s{}",
                p.voter,
                if p.up { "up" } else { "down" },
                p.detail,
                age.as_secs_f64(),
                if age > v.rule.stale_after {
                    " STALE, not counted"
                } else {
                    ""
                }
            ));
        }
        lines
    }

    /// `explain`'s per-site vote lines for `site`.
    pub fn vote_lines(&self, site: &str) -> Vec<String> {
        let st = self.lock();
        st.sites
            .iter()
            .find(|s| s.name == site)
            .map(Core::vantage_lines)
            .unwrap_or_default()
    }

    /// `show cluster` lines, when this gss is in a cluster.
    pub fn show_cluster(&self) -> Option<Vec<String>> {
        self.cluster.as_ref().map(|c| c.show())
    }

    /// Sites for the status page.
    pub fn page_sites(&self) -> Vec<SitePage> {
        let st = self.lock();
        st.sites
            .iter()
            .map(|s| SitePage {
                name: s.name.clone(),
                up: s.up == Some(true),
                override_state: s.forced.map(|o| o.as_str().to_string()),
                passing: s.passing(),
                keepalives: s.keepalives.len(),
                since: humantime::format_rfc3339_seconds(s.since).to_string(),
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

    /// What the gss serves now: zone, config and health view, published together.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }

    /// Renders `snap`'s fast-path table off the caller's thread when there is a
    /// runtime (the switch is already visible through the full path). A snapshot
    /// replaced by another zone before its turn comes is skipped (flapping costs no
    /// wasted renders).
    fn fill_table(&self, snap: Arc<Snapshot>) {
        if tokio::runtime::Handle::try_current().is_err() {
            snap.fill_table();
            return;
        }
        let current = self.snap.clone();
        self.tasks.spawn_blocking(move || {
            if current.load().same_table(&snap) {
                snap.fill_table();
            }
        });
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

/// Options of [`Gss::start_with`].
#[derive(Clone)]
pub struct GssOptions {
    /// How keepalive probes are built.
    pub probes: ProbeFactory,
    /// Where site overrides are recorded and restored from (the process's one
    /// store, shared with the lb).
    pub intents: Arc<IntentStore>,
    /// Where the SOA serial is kept across restarts; `None`: each start serves the
    /// config's `soa.serial` until answers change.
    pub state_dir: Option<std::path::PathBuf>,
    /// The cluster whose quorum decides sites (and where views are published).
    pub cluster: Option<Arc<Cluster>>,
    /// DNS sockets handed over by the process this one upgrades.
    pub inherited: Option<Arc<Inherited>>,
}

impl Default for GssOptions {
    fn default() -> Self {
        GssOptions {
            probes: default_probes(),
            intents: Arc::new(IntentStore::memory("local")),
            state_dir: None,
            cluster: None,
            inherited: None,
        }
    }
}

/// A running gss.
pub struct Gss {
    core: Arc<Core>,
    server: tokio::sync::Mutex<Option<DnsServer>>,
    addr: SocketAddr,
}

impl Gss {
    /// Starts the gss with the real probes (`shared::probe::build`).
    pub async fn start(cfg: &GssConfig, events: Arc<EventLog>) -> Result<Gss, GssError> {
        Gss::start_with_probes(cfg, events, default_probes()).await
    }

    /// Starts the gss with `probes` building each keepalive's probe: checkers first,
    /// then (after the first round, bounded) the DNS port. Overrides last as long
    /// as the process ([`Gss::start_with`] keeps them in a state file).
    pub async fn start_with_probes(
        cfg: &GssConfig,
        events: Arc<EventLog>,
        probes: ProbeFactory,
    ) -> Result<Gss, GssError> {
        let options = GssOptions {
            probes,
            ..GssOptions::default()
        };
        Gss::start_with(cfg, events, options).await
    }

    /// Starts the gss as a member of `cluster`: its views are published and, unless it
    /// is a witness, sites are decided by the quorum of vantage points. A witness
    /// opens no DNS port.
    pub async fn start_in_cluster(
        cfg: &GssConfig,
        events: Arc<EventLog>,
        probes: ProbeFactory,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Gss, GssError> {
        let options = GssOptions {
            probes,
            cluster,
            ..GssOptions::default()
        };
        Gss::start_with(cfg, events, options).await
    }

    /// As [`Gss::start_with_probes`] with every option: overrides recorded in
    /// `intents` (and those it holds for this config's sites in force for the first
    /// answer), the SOA serial kept in `state_dir`, the cluster it votes in, and the
    /// DNS sockets a predecessor handed over (binary upgrade; the DNS port opens, as
    /// always, only after the first keepalive round).
    pub async fn start_with(
        cfg: &GssConfig,
        events: Arc<EventLog>,
        options: GssOptions,
    ) -> Result<Gss, GssError> {
        let GssOptions {
            probes,
            intents,
            state_dir,
            cluster,
            inherited,
        } = options;
        let inherited = inherited.as_deref();
        crate::metrics::describe();
        let serial_file = SerialFile::new(state_dir.as_deref());
        let served = serial_file.load();
        let tpl = Arc::new(ZoneTemplate::new(cfg)?);
        let initial = render(tpl.clone(), &HealthView::default(), Instant::now(), None);
        let core = Arc::new(Core {
            intents,
            serial_file,
            state: Mutex::new(State {
                served,
                tpl,
                sites: Vec::new(),
                tasks: HashMap::new(),
                generation: 0,
                settled: false,
                peer_serials: Vec::new(),
                published_serial: None,
            }),
            snap: Arc::new(ArcSwap::from_pointee(Snapshot::new(
                initial,
                HealthView::default(),
            ))),
            events,
            probes,
            wake: Notify::new(),
            resign_wake: Notify::new(),
            reported: Notify::new(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cluster: cluster.clone(),
            role: cfg.role,
        });
        {
            let saved = core.intents.lock();
            let sites = cfg
                .sites
                .iter()
                .map(|s| {
                    let mut site = core.new_site(s, cfg);
                    restore_override(&mut site, s, &saved, &core.events);
                    site
                })
                .collect();
            drop(saved);
            core.lock().sites = sites;
        }
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
            core.rerender(&mut st, true);
            for (name, c) in changes {
                if let Some(t) = st.tasks.get(&name) {
                    t.metrics.set_up(c.up);
                }
                core.events.record(name, c.message);
            }
            for (name, summaries) in &core.snap.load().zone.outcomes {
                core.events
                    .record(name.clone(), format!("answers {} (initial)", summaries[0]));
            }
            for s in &st.sites {
                core.publish_view(s);
            }
        }
        if let Some(c) = &cluster {
            core.tasks.spawn(cluster_loop(
                Arc::downgrade(&core),
                c.watch(),
                core.cancel.clone(),
            ));
        }
        if cfg.role == GssRole::Witness {
            tracing::info!(zone = %cfg.zone, "gss witness: probing and publishing views, answering no DNS");
            core.tasks
                .spawn(timer_loop(Arc::downgrade(&core), core.cancel.clone()));
            return Ok(Gss {
                core,
                server: tokio::sync::Mutex::new(None),
                addr: cfg.listen,
            });
        }
        let server = match DnsServer::bind_inherited(
            cfg.listen,
            core.snap.clone(),
            UdpMode::default(),
            core.cancel.clone(),
            inherited,
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
        core.tasks
            .spawn(timer_loop(Arc::downgrade(&core), core.cancel.clone()));
        core.tasks.spawn(resign_task(core.clone()));
        Ok(Gss {
            core,
            server: tokio::sync::Mutex::new(Some(server)),
            addr,
        })
    }

    /// The address the DNS server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A duplicate of the DNS sockets for a handover to an upgraded process.
    pub async fn handover_sockets(&self) -> std::io::Result<Vec<(SocketEntry, OwnedFd)>> {
        match self.server.lock().await.as_ref() {
            Some(s) => s.handover_sockets(),
            None => Ok(Vec::new()),
        }
    }

    /// Every site's effective state and override, for `/status`.
    pub fn status(&self) -> Vec<SiteStatus> {
        self.core.status()
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
        let plan = self.prepare(cfg)?;
        self.commit(plan);
        Ok(())
    }

    /// The fallible half of [`Gss::reload`] (zone template, probes of changed sites),
    /// changing nothing, so the binary can check every role before touching any.
    pub fn prepare(&self, cfg: &GssConfig) -> Result<Plan, GssError> {
        let tpl = Arc::new(ZoneTemplate::new(cfg)?);
        let old_sites: Vec<SiteConfig> = self.core.lock().tpl.cfg.sites.clone();
        let mut built = HashMap::new();
        for s in &cfg.sites {
            if !old_sites.contains(s) {
                built.insert(s.name.clone(), self.core.build_probes(s)?);
            }
        }
        Ok(Plan {
            cfg: cfg.clone(),
            tpl,
            built,
        })
    }

    /// Puts a [`Gss::prepare`] result in service; cannot fail. Readers see the new
    /// config, zone and health in one snapshot swap.
    pub fn commit(&self, plan: Plan) {
        let Plan {
            cfg,
            tpl,
            mut built,
        } = plan;
        let cfg = &cfg;
        // Lock order: the intent store, then the state (as in `set_override`).
        let saved = self.core.intents.lock();
        let mut st = self.core.lock();
        if cfg.listen != st.tpl.cfg.listen {
            tracing::warn!(old = %st.tpl.cfg.listen, new = %cfg.listen, "gss.listen changed; restart to move the DNS port");
        }
        if cfg.role != self.core.role {
            tracing::warn!("gss.role changed; restart to switch between server and witness");
        }
        let mut sites = Vec::with_capacity(cfg.sites.len());
        for s in &cfg.sites {
            let old = st.sites.iter().find(|o| o.name == s.name).cloned();
            match (old, built.remove(&s.name)) {
                (Some(old), None) => sites.push(old),
                (old, Some(probes)) => {
                    let mut fresh = self.core.new_site(s, cfg);
                    if old.is_none() {
                        restore_override(&mut fresh, s, &saved, &self.core.events);
                    }
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
                (None, None) => {
                    let mut fresh = self.core.new_site(s, cfg);
                    restore_override(&mut fresh, s, &saved, &self.core.events);
                    sites.push(fresh);
                }
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
        // A changed `quorum` applies to unchanged sites too.
        if let Some(rule) = self.core.rule(cfg) {
            for v in sites.iter_mut().filter_map(|s| s.voting.as_mut()) {
                v.rule = rule;
            }
        }
        st.sites = sites;
        st.tpl = tpl;
        self.core.rerender(&mut st, true);
        self.core.resign_wake.notify_one();
        drop(st);
        drop(saved);
        self.core.events.record("gss", "config reloaded");
    }

    /// Stops the checkers, the timer and the DNS server, and waits (at most
    /// [`SHUTDOWN_WAIT`]) for every task, connection and UDP thread to end.
    pub async fn shutdown(&self) {
        self.core.cancel.cancel();
        self.core.tasks.close();
        let server = self.server.lock().await.take();
        let wait = async {
            if let Some(server) = server {
                server.shutdown().await;
            }
            self.core.tasks.wait().await;
        };
        if tokio::time::timeout(SHUTDOWN_WAIT, wait).await.is_err() {
            tracing::warn!(
                "gss: tasks still running {SHUTDOWN_WAIT:?} after shutdown; leaving them"
            );
        }
    }
}

impl Drop for Gss {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}

impl Core {
    /// Re-makes every signature at `unix` seconds off the runtime's threads, then
    /// publishes the re-signed template (unless a reload replaced it meanwhile: the
    /// reload signed its own).
    async fn resign(self: &Arc<Self>, unix: u64) {
        let tpl = self.lock().tpl.clone();
        let old = tpl.clone();
        let made = tokio::task::spawn_blocking(move || old.resigned(unix)).await;
        let Ok(Some(new)) = made else {
            return;
        };
        let mut st = self.lock();
        if !Arc::ptr_eq(&st.tpl, &tpl) {
            return;
        }
        let summary = new
            .signatures
            .as_ref()
            .map(|s| (s.count, s.earliest_expiry))
            .unwrap_or_default();
        st.tpl = Arc::new(new);
        self.rerender(&mut st, true);
        drop(st);
        self.events.record(
            "dnssec",
            format!(
                "re-signed: {} signatures, earliest expiry {}",
                summary.0,
                crate::zone::unix_time_text(summary.1)
            ),
        );
    }
}

/// Re-makes the signatures before they expire ([`crate::dnssec::resign_loop`]).
async fn resign_task(core: Arc<Core>) {
    let current = || {
        let st = core.lock();
        let sigs = st.tpl.signatures.as_ref()?;
        let keys = st.tpl.keys.as_ref()?;
        Some((sigs.earliest_expiry, keys.timing.refresh))
    };
    crate::dnssec::resign_loop(
        crate::zone::unix_now,
        current,
        |unix| {
            let core = core.clone();
            async move {
                core.resign(unix).await;
                true
            }
        },
        &core.resign_wake,
        core.cancel.clone(),
    )
    .await;
}

/// Follows the cluster view: every refresh (several per gossip interval) re-counts
/// the votes, so a view crossing `stale_after` stops voting within one refresh.
async fn cluster_loop(
    core: std::sync::Weak<Core>,
    mut rx: tokio::sync::watch::Receiver<ClusterView>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        let view = rx.borrow_and_update().clone();
        let Some(c) = core.upgrade() else { return };
        c.on_cluster(&view);
    }
}

/// Puts the override recorded for a site, if any, on its fresh state (an `auto`
/// intent is no override). A site that is renamed away keeps its intent in
/// the store, inert, until a site of that name comes back.
fn restore_override(s: &mut SiteState, cfg: &SiteConfig, saved: &Intents, events: &EventLog) {
    if let Some(e) = saved.get(&Key::Site(cfg.name.clone())) {
        s.forced = match e.value {
            Value::Site {
                state: SiteIntent::Down,
            } => Some(SiteOverride::Down),
            Value::Site {
                state: SiteIntent::Up,
            } => Some(SiteOverride::Up),
            _ => None,
        };
        if let Some(o) = s.forced {
            events.record(
                &cfg.name,
                format!("override {} restored (set on {})", o.as_str(), e.origin()),
            );
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
            let mut st = c.lock();
            c.rerender(&mut st, false);
        }
    }
}
