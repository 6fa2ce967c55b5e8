//! One backend's runtime state, shared by the listener hot path, its health checker,
//! the admin socket and `/status`: health from the active checker (`unknown` until the
//! first probe, which counts as in rotation so a fresh start serves at once), the last
//! check's reason, the operator's admin state (`ready`/`drain`/`maint`), a weight
//! settable at run time, active connections (with a [`Notify`] for `wait drained`)
//! and passive-ejection state. The checker that probes it ([`crate::checker`]), its
//! outlier record's rules ([`crate::outlier`]) and its metric handles
//! ([`crate::metrics`]) are pieces of their own; this module imports none of the
//! proxies.
//!
//! Everything the hot path reads is an atomic; locks are only taken on probe results,
//! admin commands and connect failures. A [`Lease`] counts one active connection or
//! request and gives it back on drop, so no exit path can leak the count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shared::config::BackendConfig;
use shared::events::EventLog;
use shared::intent::{AdminIntent, Entry, Intents, Key, Value};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

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

    /// The intent that records this state.
    pub fn intent(self) -> AdminIntent {
        match self {
            AdminState::Ready => AdminIntent::Ready,
            AdminState::Drain => AdminIntent::Drain,
            AdminState::Maint => AdminIntent::Maint,
        }
    }

    fn from_intent(i: AdminIntent) -> Self {
        match i {
            AdminIntent::Ready => AdminState::Ready,
            AdminIntent::Drain => AdminState::Drain,
            AdminIntent::Maint => AdminState::Maint,
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
    /// Counts moves into and out of `maint`, for the checker (which pauses in
    /// `maint` and starts over after it).
    maint_tx: watch::Sender<u64>,
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
    /// A backend in the unknown health state, admin `ready`. Nothing probes it until
    /// a [`crate::checker::Checker`] is started for it.
    pub fn new(vip: &str, cfg: &BackendConfig, events: Arc<EventLog>) -> Arc<Backend> {
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
            maint_tx: watch::Sender::new(0),
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

    /// The config's weight (what `weight` in the file says, ≥ 1).
    pub fn config_weight(&self) -> u32 {
        self.config_weight.load(Ordering::Relaxed)
    }

    /// The intent key of this backend's admin state.
    pub fn admin_key(&self) -> Key {
        Key::BackendAdmin {
            vip: self.vip.clone(),
            backend: self.name.clone(),
        }
    }

    /// The intent key of this backend's operator weight.
    pub fn weight_key(&self) -> Key {
        Key::BackendWeight {
            vip: self.vip.clone(),
            backend: self.name.clone(),
        }
    }

    /// Applies the intent recorded for this backend (admin state, operator
    /// weight), if any: at start, and when a reload brings the backend (back) into
    /// service.
    pub(crate) fn restore(&self, intents: &Intents) {
        for key in [self.admin_key(), self.weight_key()] {
            if let Some(e) = intents.get(&key) {
                self.apply_intent(e, &format!("restored, set on {}", e.origin()));
            }
        }
    }

    /// Applies one intent entry. An operator weight set while the config said
    /// another weight than it says now is stale: the config changed since, and a
    /// config change of the weight wins (as it does on a reload), so it is skipped
    /// with an event.
    pub fn apply_intent(&self, entry: &Entry, who: &str) {
        match entry.value {
            Value::Admin { state } => {
                let state = AdminState::from_intent(state);
                if state != self.admin() {
                    self.set_admin(state, who);
                }
            }
            Value::Weight {
                weight,
                config_weight,
            } => {
                let now = self.config_weight();
                if config_weight != now {
                    self.record_event(format!(
                        "operator weight {weight} not applied: it was set when the config's weight was {config_weight}, the config now says {now}"
                    ));
                } else if let Err(e) = self.set_weight(weight, who) {
                    tracing::warn!(backend = %self.id(), "stored weight not applied: {e}");
                }
            }
            Value::Vip { .. } | Value::Site { .. } => {}
        }
    }

    /// Active-check health.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Acquire) {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub(crate) fn set_health(&self, h: Health) {
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

    /// Changes the admin state; `maint` pauses the checker, leaving `maint` restarts
    /// it from the unknown state, `ready` also ends a passive ejection.
    pub fn set_admin(&self, state: AdminState, who: &str) {
        let old = AdminState::from_u8(self.admin.swap(state.to_u8(), Ordering::AcqRel));
        if state == AdminState::Ready && self.outlier.readmit(Instant::now()) {
            self.set_ejected_until(None);
        }
        if old == AdminState::Maint && state != AdminState::Maint {
            self.set_health(Health::Unknown);
            *lock(&self.last_check) = LastCheck::Pending;
        }
        if (old == AdminState::Maint) != (state == AdminState::Maint) {
            self.maint_tx.send_modify(|n| *n += 1);
        }
        if old != state {
            self.events
                .record(self.id(), format!("admin {} ({who})", state.as_str()));
        } else {
            tracing::info!(backend = %self.id(), "admin {} again ({who})", state.as_str());
        }
    }

    /// Applies a reloaded config of the same backend (same name and address): weight
    /// (only when the config's weight changed, so an operator's `set weight` survives
    /// an unrelated reload) and backup flag. A changed probe is the checker's business.
    pub(crate) fn reconfigure(&self, cfg: &BackendConfig) {
        let w = cfg.weight.max(1);
        if self.config_weight.swap(w, Ordering::AcqRel) != w {
            self.weight.store(w, Ordering::Release);
        }
        self.backup.store(cfg.backup, Ordering::Release);
    }

    /// Moves into and out of `maint`, for the checker.
    pub(crate) fn watch_maint(&self) -> watch::Receiver<u64> {
        self.maint_tx.subscribe()
    }

    /// Records the last active check's outcome.
    pub(crate) fn set_last_check(&self, check: LastCheck) {
        *lock(&self.last_check) = check;
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
