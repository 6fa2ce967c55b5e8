//! One backend's runtime state, shared by the listener hot path, its health checker,
//! the admin socket and `/status`: health from the active checker (`unknown` until the
//! first probe, which counts as in rotation so a fresh start serves at once), the last
//! check's reason, the operator's admin state (`ready`/`drain`/`maint`), a weight
//! settable at run time, active connections (with a [`Notify`] for `wait drained`)
//! and passive-ejection state.
//!
//! Everything the hot path reads is an atomic; locks are only taken on probe results,
//! admin commands and connect failures. A [`Lease`] counts one active connection or
//! request and gives it back on drop, so no exit path can leak the count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use shared::config::{BackendConfig, ProbeConfig};
use shared::events::EventLog;
use shared::health::{spawn_checker, CheckResult, RiseFall, Transition};
use shared::probe::Probe;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Tasks;
use crate::sync::lock;

use crate::balance::backend_key;
use crate::metrics::BackendMetrics;
use crate::outlier::Record;

/// Active-check health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No probe has finished yet (optimistically in rotation).
    Unknown,
    /// Probes pass.
    Up,
    /// Probes fail.
    Down,
}

/// The operator's wish for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// In rotation when healthy.
    Ready,
    /// No new connections; established ones continue; still probed.
    Drain,
    /// Out of rotation and not probed.
    Maint,
}

impl AdminState {
    /// `ready`, `drain` or `maint`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }
}

/// The last active check, as shown in the `checks` column of `show backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastCheck {
    /// No probe finished yet.
    Pending,
    /// The last probe passed.
    Ok,
    /// The last probe failed, with the operator-facing reason.
    Fail(String),
}

impl std::fmt::Display for LastCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastCheck::Pending => f.write_str("pending"),
            LastCheck::Ok => f.write_str("ok"),
            LastCheck::Fail(r) => write!(f, "fail:{r}"),
        }
    }
}

struct CheckerSlot {
    probe: Arc<dyn Probe>,
    probe_cfg: ProbeConfig,
    cancel: Option<CancellationToken>,
}

/// Process-wide origin for the atomic ejection deadline.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// One backend of one VIP.
pub struct Backend {
    vip: String,
    name: String,
    address: SocketAddr,
    key: u64,
    backup: AtomicBool,
    weight: AtomicU32,
    config_weight: AtomicU32,
    health: AtomicU8,
    admin: AtomicU8,
    active: AtomicU64,
    drained: Notify,
    /// Nanoseconds since [`epoch`] until which the backend is ejected (0: never).
    ejected_until: AtomicU64,
    /// Passive-ejection record (the pool reports to it).
    pub(crate) outlier: Record,
    last_check: Mutex<LastCheck>,
    checker: Mutex<CheckerSlot>,
    tasks: Tasks,
    events: Arc<EventLog>,
    pub(crate) metrics: BackendMetrics,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("id", &self.id())
            .field("address", &self.address)
            .field("health", &self.health())
            .field("admin", &self.admin())
            .field("active", &self.active())
            .finish()
    }
}

impl Backend {
    /// A backend in the unknown health state, admin `ready`, checker not started
    /// (see [`Backend::start_checker`]). Its checker runs as a task of `tasks`.
    pub fn new(
        vip: &str,
        cfg: &BackendConfig,
        probe: Arc<dyn Probe>,
        probe_cfg: ProbeConfig,
        events: Arc<EventLog>,
        tasks: Tasks,
    ) -> Arc<Backend> {
        let weight = cfg.weight.max(1);
        let metrics = BackendMetrics::new(vip, &cfg.name);
        metrics.up.set(0.0);
        Arc::new(Backend {
            vip: vip.to_string(),
            name: cfg.name.clone(),
            address: cfg.address,
            key: backend_key(&cfg.name),
            backup: AtomicBool::new(cfg.backup),
            weight: AtomicU32::new(weight),
            config_weight: AtomicU32::new(weight),
            health: AtomicU8::new(0),
            admin: AtomicU8::new(0),
            active: AtomicU64::new(0),
            drained: Notify::new(),
            ejected_until: AtomicU64::new(0),
            outlier: Record::default(),
            last_check: Mutex::new(LastCheck::Pending),
            checker: Mutex::new(CheckerSlot {
                probe,
                probe_cfg,
                cancel: None,
            }),
            tasks,
            events,
            metrics,
        })
    }

    /// The VIP this backend belongs to.
    pub fn vip(&self) -> &str {
        &self.vip
    }

    /// Backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `VIP/BACKEND`, the subject of events and admin commands.
    pub fn id(&self) -> String {
        format!("{}/{}", self.vip, self.name)
    }

    /// Where connections go.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stable hashing key (from the name).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// A standby backend.
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }

    /// Current weight (≥ 1).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Active-check health.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Acquire) {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    fn set_health(&self, h: Health) {
        let v = match h {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Down => 2,
        };
        self.health.store(v, Ordering::Release);
        self.metrics.up.set(if h == Health::Up { 1.0 } else { 0.0 });
    }

    /// Operator state.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Acquire))
    }

    /// Active connections (L4) or in-flight requests (L7).
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// The last active check's outcome.
    pub fn last_check(&self) -> LastCheck {
        lock(&self.last_check).clone()
    }

    /// True while passively ejected.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && nanos_since_epoch(Instant::now()) < until
    }

    pub(crate) fn set_ejected_until(&self, until: Option<Instant>) {
        let v = until.map(nanos_since_epoch).unwrap_or(0);
        self.ejected_until.store(v, Ordering::Release);
    }

    /// New connections may go here: health up or still unknown, admin `ready`, not
    /// ejected.
    pub fn in_rotation(&self) -> bool {
        self.health() != Health::Down && self.admin() == AdminState::Ready && !self.is_ejected()
    }

    /// Counted as healthy for `/status` and `min_healthy`: known up and in rotation.
    pub fn healthy(&self) -> bool {
        self.health() == Health::Up && self.in_rotation()
    }

    /// `up`, `down` or `ejected` as shown by `show backends` and `/status` (a backend
    /// not yet probed shows `down` with checks `pending`).
    pub fn state_str(&self) -> &'static str {
        if self.is_ejected() {
            "ejected"
        } else if self.health() == Health::Up {
            "up"
        } else {
            "down"
        }
    }

    /// Counts one more active connection; the returned lease gives it back on drop.
    pub fn acquire(self: &Arc<Self>, index: usize) -> Lease {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.metrics.active.increment(1.0);
        Lease {
            backend: Arc::clone(self),
            index,
        }
    }

    fn release(&self) {
        self.metrics.active.decrement(1.0);
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Waits until no connection is active; false on timeout. Wakes on the last
    /// release, never polls.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.drained.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Sets the weight (≥ 1, else an error message).
    pub fn set_weight(&self, weight: u32, who: &str) -> Result<(), String> {
        if weight == 0 {
            return Err(format!(
                "weight must be at least 1; use `drain {}` to stop new traffic",
                self.id()
            ));
        }
        let old = self.weight.swap(weight, Ordering::AcqRel);
        if old != weight {
            self.events
                .record(self.id(), format!("weight {old} -> {weight} ({who})"));
        }
        Ok(())
    }

    /// Changes the admin state; `maint` stops the checker, leaving `maint` restarts it
    /// from the unknown state, `ready` also ends a passive ejection.
    pub fn set_admin(self: &Arc<Self>, state: AdminState, who: &str) {
        let old = AdminState::from_u8(self.admin.swap(state.to_u8(), Ordering::AcqRel));
        if state == AdminState::Maint && old != AdminState::Maint {
            self.stop_checker();
        }
        if state == AdminState::Ready && self.outlier.readmit(Instant::now()) {
            self.set_ejected_until(None);
        }
        if old == AdminState::Maint && state != AdminState::Maint {
            self.set_health(Health::Unknown);
            *lock(&self.last_check) = LastCheck::Pending;
            self.start_checker(None);
        }
        if old != state {
            self.events
                .record(self.id(), format!("admin {} ({who})", state.as_str()));
        } else {
            tracing::info!(backend = %self.id(), "admin {} again ({who})", state.as_str());
        }
    }

    /// Starts (or restarts) the active checker, unless in `maint`. `keep` carries a
    /// known health state over (reload), so a restarted checker does not flap it.
    pub fn start_checker(self: &Arc<Self>, keep: Option<bool>) {
        if self.admin() == AdminState::Maint {
            return;
        }
        let mut slot = lock(&self.checker);
        if let Some(old) = slot.cancel.take() {
            old.cancel();
        }
        let token = self.tasks.child_token();
        let timing = slot.probe_cfg.timing;
        let machine = RiseFall::with_state(timing.rise, timing.fall, keep);
        let weak: Weak<Backend> = Arc::downgrade(self);
        let checker = spawn_checker(
            Arc::clone(&slot.probe),
            timing,
            machine,
            token.clone(),
            move |r| {
                if let Some(b) = weak.upgrade() {
                    b.on_check(r);
                }
            },
        );
        // Owned by the supervisor, so shutdown waits for the probe to stop.
        self.tasks.spawn(async move {
            let _ = checker.await;
        });
        slot.cancel = Some(token);
    }

    /// Stops the active checker (maint, removal, shutdown).
    pub fn stop_checker(&self) {
        let mut slot = lock(&self.checker);
        if let Some(t) = slot.cancel.take() {
            t.cancel();
        }
    }

    /// The probe definition currently used.
    pub fn probe_config(&self) -> ProbeConfig {
        lock(&self.checker).probe_cfg.clone()
    }

    /// Applies a reloaded config of the same backend (same name and address): weight
    /// (only when the config's weight changed, so an operator's `set weight` survives
    /// an unrelated reload), backup flag and, when the probe changed, a restarted
    /// checker that keeps the current health.
    pub(crate) fn reconfigure(
        self: &Arc<Self>,
        cfg: &BackendConfig,
        probe: Option<(Arc<dyn Probe>, ProbeConfig)>,
    ) {
        let w = cfg.weight.max(1);
        if self.config_weight.swap(w, Ordering::AcqRel) != w {
            self.weight.store(w, Ordering::Release);
        }
        self.backup.store(cfg.backup, Ordering::Release);
        if let Some((probe, probe_cfg)) = probe {
            {
                let mut slot = lock(&self.checker);
                slot.probe = probe;
                slot.probe_cfg = probe_cfg;
            }
            let keep = match self.health() {
                Health::Up => Some(true),
                Health::Down => Some(false),
                Health::Unknown => None,
            };
            self.start_checker(keep);
        }
    }

    fn on_check(&self, r: &CheckResult) {
        self.metrics.probe_duration.record(r.latency.as_secs_f64());
        if r.ok() {
            self.metrics.probe_ok.increment(1);
        } else {
            self.metrics.probe_fail.increment(1);
        }
        if self.admin() == AdminState::Maint {
            return; // a round that finished as maint cancelled the checker
        }
        let reason = r.error.as_ref().map(|e| e.to_string());
        *lock(&self.last_check) = match &reason {
            None => LastCheck::Ok,
            Some(e) => LastCheck::Fail(e.clone()),
        };
        match r.transition {
            Some(Transition::Up) => {
                self.set_health(Health::Up);
                self.events.record(self.id(), "up");
            }
            Some(Transition::Down) => {
                self.set_health(Health::Down);
                let why = reason.unwrap_or_else(|| "probe failed".to_string());
                self.events.record(self.id(), format!("down: {why}"));
            }
            None => {}
        }
    }

    /// The supervisor this backend's tasks belong to.
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub(crate) fn record_event(&self, message: impl Into<String>) {
        self.events.record(self.id(), message);
    }
}

/// One active connection or request on a backend; dropping it gives the count back
/// (and wakes `wait drained` when it was the last).
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
    index: usize,
}

impl Lease {
    /// The backend this lease counts against.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The backend's index in the pool it was selected from (for exclusion sets).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.release();
    }
}
