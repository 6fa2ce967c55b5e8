//! Route health injection: the lb announces each VIP's prefixes to the operator's
//! routers over BGP while the VIP is up, and withdraws them when it goes down, when an
//! operator runs `withdraw VIP`, and at shutdown before the listeners close.
//! Announce-only: received routes are ignored; Portico never becomes a router.
//!
//! [`Speaker`] owns it all: the per-VIP admin intent ([`AnnounceIntent`]), the
//! decisions of `announce` for `show bgp`, the published [`Routes`] (a watch channel
//! every session follows) and one task per neighbor (`session`), spawned on the lb's
//! `Tasks`. The announcer task re-decides when woken (admin command, reload,
//! shutdown) and every [`POLL`]: health lives in backend atomics and passive
//! ejections lapse by time without any event, so polling them is the one way that
//! sees every change; a poll reads a few atomics per backend.
//!
//! Modules: `wire` (the codec, over `rustbgpd-wire`), `fsm` (pure session machine),
//! `session` (I/O), `announce` (pure decision).

pub(crate) mod announce;
pub(crate) mod fsm;
pub(crate) mod session;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shared::config::BgpConfig;
use shared::events::EventLog;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::supervisor::Tasks;
use crate::sync::lock;

pub(crate) use announce::{Decision, Reason, Routes, VipView};
pub(crate) use session::{Neighbor, SessionStatus, StatusView};

/// How often the announcer looks at the VIPs' health without being woken. Bounds the
/// delay from a VIP going down to its withdrawal being sent.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// How long shutdown waits for the sessions to send their withdrawals.
const WITHDRAW_SEND_WAIT: Duration = Duration::from_secs(2);

/// The operator's announce intent per VIP: the VIPs taken out of the ECMP set with
/// `withdraw VIP` until `announce VIP`. Kept apart and small so the persistent
/// admin-state file can own it later.
#[derive(Debug, Default)]
pub struct AnnounceIntent {
    withdrawn: Mutex<HashSet<String>>,
}

impl AnnounceIntent {
    /// Marks `vip` withdrawn; true when it changed.
    pub fn withdraw(&self, vip: &str) -> bool {
        lock(&self.withdrawn).insert(vip.to_string())
    }

    /// Clears the mark; true when it changed.
    pub fn announce(&self, vip: &str) -> bool {
        lock(&self.withdrawn).remove(vip)
    }

    /// The VIPs withdrawn by an operator.
    pub fn withdrawn(&self) -> HashSet<String> {
        lock(&self.withdrawn).clone()
    }
}

/// Reads the VIPs (the lb's snapshot) for a decision.
pub(crate) type ViewFn = Box<dyn Fn() -> Vec<VipView> + Send + Sync>;

struct Peer {
    neighbor: Neighbor,
    status: Arc<SessionStatus>,
    cancel: CancellationToken,
}

/// The lb's BGP speaker (see the module doc).
pub struct Speaker {
    routes: watch::Sender<Arc<Routes>>,
    decisions: Mutex<Arc<Vec<Decision>>>,
    /// `withdraw VIP` / `announce VIP`.
    pub intent: AnnounceIntent,
    shutting_down: AtomicBool,
    peers: Mutex<Vec<Peer>>,
    grace: Mutex<Duration>,
    wake: Notify,
    view: OnceLock<ViewFn>,
    announcer: AtomicBool,
    /// One decision at a time: the announcer and shutdown both decide, and each
    /// change must be recorded once.
    deciding: Mutex<()>,
    events: Arc<EventLog>,
    tasks: Tasks,
}

impl Speaker {
    /// A speaker with no neighbors; [`Speaker::configure`] starts them.
    pub fn new(tasks: Tasks, events: Arc<EventLog>) -> Speaker {
        Speaker {
            routes: watch::Sender::new(Arc::new(Routes::new())),
            decisions: Mutex::new(Arc::new(Vec::new())),
            intent: AnnounceIntent::default(),
            shutting_down: AtomicBool::new(false),
            peers: Mutex::new(Vec::new()),
            grace: Mutex::new(Duration::ZERO),
            wake: Notify::new(),
            view: OnceLock::new(),
            announcer: AtomicBool::new(false),
            deciding: Mutex::new(()),
            events,
            tasks,
        }
    }

    /// Where the VIPs are read from; set once, by the lb.
    pub fn set_view(&self, view: ViewFn) {
        let _ = self.view.set(view);
    }

    /// Applies `[bgp]` (start, reload): unchanged neighbors keep their sessions,
    /// removed or changed ones end with a Cease, new ones start. Infallible.
    pub fn configure(self: &Arc<Self>, cfg: Option<&BgpConfig>) {
        let wanted: Vec<Neighbor> = cfg
            .map(|c| {
                c.neighbors
                    .iter()
                    .map(|n| Neighbor {
                        cfg: n.clone(),
                        local_as: c.local_as,
                        router_id: c.router_id,
                    })
                    .collect()
            })
            .unwrap_or_default();
        *lock(&self.grace) = cfg.map(|c| c.withdraw_grace).unwrap_or_default();
        {
            let mut peers = lock(&self.peers);
            peers.retain(|p| {
                let keep = wanted.contains(&p.neighbor);
                if !keep {
                    p.cancel.cancel();
                    self.events
                        .record(format!("bgp {}", p.neighbor.label()), "neighbor removed");
                }
                keep
            });
            for n in wanted {
                if peers.iter().any(|p| p.neighbor == n) {
                    continue;
                }
                let status = Arc::new(SessionStatus::default());
                let cancel = self.tasks.child_token();
                self.tasks.spawn(session::run(
                    n.clone(),
                    self.routes.subscribe(),
                    Arc::clone(&status),
                    cancel.clone(),
                    Arc::clone(&self.events),
                ));
                peers.push(Peer {
                    neighbor: n,
                    status,
                    cancel,
                });
            }
        }
        if cfg.is_some() && !self.announcer.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            let stop = self.tasks.token().clone();
            self.tasks.spawn(async move {
                loop {
                    let woken = me.wake.notified();
                    me.refresh();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = woken => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
            });
        }
        self.wake.notify_one();
    }

    /// Re-decides now (the announcer also does it every [`POLL`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Decides from the current VIPs, records what changed, publishes the routes.
    fn refresh(&self) {
        let Some(view) = self.view.get() else { return };
        let _one = lock(&self.deciding);
        let vips = view();
        let new = announce::decide(
            &vips,
            &self.intent.withdrawn(),
            self.shutting_down.load(Ordering::Acquire),
        );
        let old = std::mem::replace(&mut *lock(&self.decisions), Arc::new(new.clone()));
        for d in &new {
            let before = old.iter().find(|o| o.prefix == d.prefix && o.vip == d.vip);
            let changed = match before {
                Some(o) => o.announced != d.announced,
                None => d.announced,
            };
            metrics::gauge!(m::BGP_PREFIX_ANNOUNCED, "vip" => d.vip.clone(), "prefix" => d.prefix.to_string())
                .set(if d.announced { 1.0 } else { 0.0 });
            if changed {
                self.events.record(
                    format!("vip {}", d.vip),
                    format!(
                        "prefix {} {} ({})",
                        d.prefix,
                        if d.announced {
                            "announced"
                        } else {
                            "withdrawn"
                        },
                        describe(d)
                    ),
                );
            }
        }
        for o in old.iter() {
            if !new.iter().any(|d| d.prefix == o.prefix && d.vip == o.vip) {
                metrics::gauge!(m::BGP_PREFIX_ANNOUNCED, "vip" => o.vip.clone(), "prefix" => o.prefix.to_string())
                    .set(0.0);
                if o.announced && !new.iter().any(|d| d.prefix == o.prefix && d.announced) {
                    self.events.record(
                        format!("vip {}", o.vip),
                        format!("prefix {} withdrawn (removed by reload)", o.prefix),
                    );
                }
            }
        }
        let routes = announce::routes(&new);
        self.routes.send_if_modified(|r| {
            if **r == routes {
                false
            } else {
                *r = Arc::new(routes);
                true
            }
        });
    }

    /// SIGTERM's first step: withdraws every prefix and waits (bounded) until each
    /// established session has sent its withdrawals. Returns the `withdraw_grace` to
    /// wait next, or `None` when no session was established (no router to converge).
    pub async fn withdraw_all(&self) -> Option<Duration> {
        self.shutting_down.store(true, Ordering::Release);
        let statuses: Vec<Arc<SessionStatus>> = lock(&self.peers)
            .iter()
            .map(|p| Arc::clone(&p.status))
            .collect();
        let any_up = statuses
            .iter()
            .any(|s| s.view().state == fsm::State::Established);
        self.refresh();
        let all = futures::future::join_all(statuses.iter().map(|s| s.wait_withdrawn()));
        if tokio::time::timeout(WITHDRAW_SEND_WAIT, all).await.is_err() {
            tracing::warn!("bgp: withdrawals not all sent within {WITHDRAW_SEND_WAIT:?}");
        }
        any_up.then(|| *lock(&self.grace))
    }

    /// `show bgp`: one line per neighbor, then one per prefix.
    pub fn show(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for p in lock(&self.peers).iter() {
            let v = p.status.view();
            lines.push(format!(
                "neighbor {} as {} {} up {} prefixes {} updates {} last_error {}",
                p.neighbor.label(),
                p.neighbor.cfg.remote_as,
                v.state.as_str(),
                v.uptime.map(uptime_secs).unwrap_or_else(|| "-".into()),
                v.advertised,
                v.updates_sent,
                v.last_error.as_deref().unwrap_or("-"),
            ));
        }
        for d in lock(&self.decisions).iter() {
            lines.push(format!(
                "prefix {} vip {} {} {}",
                d.prefix,
                d.vip,
                if d.announced {
                    "announced"
                } else {
                    "withdrawn"
                },
                describe(d)
            ));
        }
        lines
    }

    /// `show vips`' announce field of `vip`: `announced`, `withdrawn` or `-`.
    pub fn vip_state(&self, vip: &str) -> &'static str {
        let decisions = lock(&self.decisions);
        let mine: Vec<&Decision> = decisions
            .iter()
            .filter(|d| d.owners.iter().any(|o| o == vip))
            .collect();
        if mine.is_empty() {
            return "-";
        }
        if mine.iter().all(|d| d.announced) {
            "announced"
        } else {
            "withdrawn"
        }
    }

    /// The session statuses, for tests and metrics.
    pub fn sessions(&self) -> Vec<(String, StatusView)> {
        lock(&self.peers)
            .iter()
            .map(|p| (p.neighbor.label(), p.status.view()))
            .collect()
    }
}

fn uptime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// A decision's reason with the numbers behind it.
fn describe(d: &Decision) -> String {
    match d.reason {
        Reason::VipUp | Reason::VipDown => format!(
            "{}: {} healthy, min_healthy {}",
            d.reason.as_str(),
            d.healthy.0,
            d.healthy.1
        ),
        r => r.as_str().to_string(),
    }
}
