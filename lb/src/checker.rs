//! A backend's active health checker, a piece apart from the [`Backend`] it probes:
//! it holds the backend and the probe, runs as a task of the lb's supervisor, and
//! writes its findings into the backend's atomics (health, last check). It follows
//! the backend's admin state: in `maint` it stops probing, and after `maint` it
//! starts over from the unknown state. A reload that changes the probe restarts it
//! with the backend's known health, so the restart does not flap it.

use std::sync::{Arc, Mutex};

use shared::config::ProbeConfig;
use shared::health::{spawn_checker, CheckResult, RiseFall, Transition};
use shared::probe::Probe;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::{AdminState, Backend, Health, LastCheck};
use crate::supervisor::Tasks;
use crate::sync::lock;

/// The checker of one backend.
pub(crate) struct Checker {
    backend: Arc<Backend>,
    probe: Mutex<(Arc<dyn Probe>, ProbeConfig)>,
    /// Wakes the task to restart with a new probe.
    reprobe: Notify,
    stop: CancellationToken,
}

/// Why a probing run ended.
enum Restart {
    /// Stopped (removal, shutdown).
    Stop,
    /// The backend moved into (or, quickly, in and out of) `maint`.
    Maint,
    /// The probe changed.
    Probe,
}

impl Checker {
    /// Starts probing `backend` with `probe` as a task of `tasks`; `initial` is the
    /// rise/fall state to start from (a predecessor's verdict after an upgrade, so a
    /// healthy backend needs `fall` failures to go down, as it would have).
    pub(crate) fn start(
        backend: Arc<Backend>,
        probe: Arc<dyn Probe>,
        probe_cfg: ProbeConfig,
        initial: Option<bool>,
        tasks: &Tasks,
    ) -> Arc<Checker> {
        let checker = Arc::new(Checker {
            backend,
            probe: Mutex::new((probe, probe_cfg)),
            reprobe: Notify::new(),
            stop: tasks.child_token(),
        });
        tasks.spawn(Arc::clone(&checker).run(initial));
        checker
    }

    /// The backend probed.
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The probe definition currently used.
    pub(crate) fn probe_config(&self) -> ProbeConfig {
        lock(&self.probe).1.clone()
    }

    /// Swaps the probe (reload); the running round is cancelled and probing restarts
    /// keeping the backend's known health.
    pub(crate) fn set_probe(&self, probe: Arc<dyn Probe>, probe_cfg: ProbeConfig) {
        *lock(&self.probe) = (probe, probe_cfg);
        self.reprobe.notify_one();
    }

    /// Stops probing for good (removal by reload; shutdown cancels the root instead).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    async fn run(self: Arc<Self>, initial: Option<bool>) {
        let mut maint = self.backend.watch_maint();
        let mut keep = initial;
        loop {
            // Not probed in maint; leaving it starts over from unknown. Marked seen
            // before the state is read, so a move into maint after the read still
            // wakes the run below.
            loop {
                maint.borrow_and_update();
                if self.backend.admin() != AdminState::Maint {
                    break;
                }
                keep = None;
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    r = maint.changed() => if r.is_err() { return },
                }
            }
            let (probe, cfg) = lock(&self.probe).clone();
            let round = self.stop.child_token();
            let machine = RiseFall::with_state(cfg.timing.rise, cfg.timing.fall, keep);
            let backend = Arc::clone(&self.backend);
            let probing = spawn_checker(probe, cfg.timing, machine, round.clone(), move |r| {
                observe(&backend, r)
            });
            let why = tokio::select! {
                _ = self.stop.cancelled() => Restart::Stop,
                r = maint.changed() => if r.is_err() { Restart::Stop } else { Restart::Maint },
                _ = self.reprobe.notified() => Restart::Probe,
            };
            round.cancel();
            let _ = probing.await;
            keep = match why {
                Restart::Stop => return,
                Restart::Maint => None,
                Restart::Probe => match self.backend.health() {
                    Health::Up => Some(true),
                    Health::Down => Some(false),
                    Health::Unknown => None,
                },
            };
        }
    }
}

/// One probe result: metrics, the last check, and health transitions with their
/// events.
fn observe(backend: &Backend, r: &CheckResult) {
    let m = &backend.metrics;
    m.probe_duration.record(r.latency.as_secs_f64());
    if r.ok() {
        m.probe_ok.increment(1);
    } else {
        m.probe_fail.increment(1);
    }
    if backend.admin() == AdminState::Maint {
        return; // a round that finished as maint is cancelled
    }
    let reason = r.error.as_ref().map(|e| e.to_string());
    backend.set_last_check(match &reason {
        None => LastCheck::Ok,
        Some(e) => LastCheck::Fail(e.clone()),
    });
    match r.transition {
        Some(Transition::Up) => {
            backend.set_health(Health::Up);
            backend.record_event("up");
        }
        Some(Transition::Down) => {
            backend.set_health(Health::Down);
            let why = reason.unwrap_or_else(|| "probe failed".to_string());
            backend.record_event(format!("down: {why}"));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::{BackendConfig, ProbeKind};
    use shared::events::EventLog;
    use shared::probe::ProbeFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Passes and counts its rounds.
    struct Counting(Arc<AtomicUsize>);
    impl Probe for Counting {
        fn check(&self) -> ProbeFuture<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    fn backend() -> Arc<Backend> {
        let cfg = BackendConfig {
            name: "b".to_string(),
            address: "127.0.0.1:10000".parse().expect("addr"),
            weight: 1,
            backup: false,
        };
        Backend::new("v", &cfg, Arc::new(EventLog::default()))
    }

    fn probe_cfg() -> ProbeConfig {
        let mut p = ProbeConfig::new(ProbeKind::Tcp);
        p.timing.interval = Duration::from_secs(1);
        p.timing.timeout = Duration::from_millis(500);
        p
    }

    #[tokio::test(start_paused = true)]
    async fn maint_pauses_probing_and_leaving_it_starts_over() {
        let tasks = Tasks::new();
        let b = backend();
        let rounds = Arc::new(AtomicUsize::new(0));
        let _checker = Checker::start(
            Arc::clone(&b),
            Arc::new(Counting(Arc::clone(&rounds))),
            probe_cfg(),
            None,
            &tasks,
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(b.health(), Health::Up);
        assert!(rounds.load(Ordering::SeqCst) >= 3);

        b.set_admin(AdminState::Maint, "test");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let frozen = rounds.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), frozen, "not probed in maint");

        b.set_admin(AdminState::Ready, "test");
        assert_eq!(b.health(), Health::Unknown);
        assert_eq!(b.last_check(), LastCheck::Pending);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(rounds.load(Ordering::SeqCst) > frozen, "probing again");
        assert_eq!(b.health(), Health::Up, "a fresh machine reports up again");

        // In and out of maint before the checker runs: still a fresh start.
        b.set_admin(AdminState::Maint, "test");
        b.set_admin(AdminState::Ready, "test");
        assert_eq!(b.health(), Health::Unknown);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(b.health(), Health::Up);

        assert!(tasks.shutdown(Duration::from_secs(1)).await);
        assert!(tasks.is_empty(), "the checker ended with the shutdown");
    }

    /// After an upgrade the successor's checker starts from the predecessor's
    /// verdict: an up backend whose probes now fail goes down after `fall` failures,
    /// not at the first one.
    #[tokio::test(start_paused = true)]
    async fn a_carried_verdict_is_where_rise_and_fall_start() {
        let tasks = Tasks::new();
        let b = backend();
        b.set_health(Health::Up);
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cfg = probe_cfg();
        let fall = cfg.timing.fall;
        assert!(fall >= 2, "the test needs a fall above one");
        let _checker = Checker::start(
            Arc::clone(&b),
            Arc::new(shared::testing::SwitchProbe(Arc::clone(&up))),
            cfg,
            Some(true),
            &tasks,
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while b.last_check() == LastCheck::Pending {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("a first verdict");
        assert_eq!(b.health(), Health::Up, "one failure is not a fall");
        tokio::time::sleep(Duration::from_secs(u64::from(fall) + 1)).await;
        assert_eq!(b.health(), Health::Down, "fall failures are");
        assert!(tasks.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_probe_keeps_the_known_health() {
        let tasks = Tasks::new();
        let b = backend();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let checker = Checker::start(
            Arc::clone(&b),
            Arc::new(shared::testing::SwitchProbe(Arc::clone(&up))),
            probe_cfg(),
            None,
            &tasks,
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(b.health(), Health::Up);
        // The new probe fails once: with rise/fall 2 (the default) a kept `up`
        // survives one failure; a fresh machine would go down at once.
        let mut cfg = probe_cfg();
        cfg.timing.rise = 2;
        cfg.timing.fall = 2;
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        checker.set_probe(
            Arc::new(shared::testing::SwitchProbe(Arc::clone(&failing))),
            cfg.clone(),
        );
        assert_eq!(checker.probe_config(), cfg);
        // One round: the first comes within interval/5, the next not before 0.9 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(b.last_check(), LastCheck::Fail("connection refused".into()));
        assert_eq!(b.health(), Health::Up, "one failure does not flap it");
        checker.stop();
        assert!(tasks.shutdown(Duration::from_secs(1)).await);
    }
}
