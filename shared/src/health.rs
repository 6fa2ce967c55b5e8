//! Active health: the pure rise/fall state machine ([`RiseFall`]) and the task that
//! drives a probe on a jittered interval and feeds it ([`spawn_checker`]).
//!
//! The decision is kept apart from the timer so it can be tested without I/O, and the
//! checker runs on tokio's clock so time-driven tests can use a paused clock.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ProbeTiming;
use crate::probe::{Probe, ProbeError};

/// A change of health state reported by [`RiseFall::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Became healthy (or was first found healthy).
    Up,
    /// Became unhealthy (or was first found unhealthy).
    Down,
}

/// Rise/fall hysteresis over a stream of probe results.
///
/// The state starts unknown; the first result decides it outright (so a fresh start
/// neither waits `rise` probes nor trusts an unprobed target), after which `rise`
/// consecutive successes are needed to go up and `fall` consecutive failures to go
/// down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    run: u32,
}

impl RiseFall {
    /// A machine in the unknown state.
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            run: 0,
        }
    }

    /// A machine that keeps a known state, so a reload does not flap a backend.
    pub fn with_state(rise: u32, fall: u32, up: Option<bool>) -> Self {
        RiseFall {
            up,
            ..RiseFall::new(rise, fall)
        }
    }

    /// Feeds one probe result; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        match self.up {
            None => {
                self.up = Some(ok);
                self.run = 0;
                Some(if ok { Transition::Up } else { Transition::Down })
            }
            Some(up) if up == ok => {
                self.run = 0;
                None
            }
            Some(_) => {
                self.run += 1;
                let needed = if ok { self.rise } else { self.fall };
                if self.run >= needed {
                    self.up = Some(ok);
                    self.run = 0;
                    Some(if ok { Transition::Up } else { Transition::Down })
                } else {
                    None
                }
            }
        }
    }

    /// Current state: `None` until the first result.
    pub fn state(&self) -> Option<bool> {
        self.up
    }

    /// Consecutive results against the current state so far (progress to a flip).
    pub fn pending(&self) -> u32 {
        self.run
    }

    /// The hysteresis parameters.
    pub fn params(&self) -> (u32, u32) {
        (self.rise, self.fall)
    }
}

/// What one probe round produced, handed to the checker's owner.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The failure, if the probe failed (its `Display` is the operator-facing reason).
    pub error: Option<ProbeError>,
    /// How long the conversation took (up to the timeout).
    pub latency: Duration,
    /// The transition this result caused.
    pub transition: Option<Transition>,
    /// The state after this result.
    pub up: bool,
}

impl CheckResult {
    /// True when the probe itself passed.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Adds ±10 % jitter so probes of many targets do not fire in lockstep.
pub fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.1;
    let delta = rand::thread_rng().gen_range(-spread..=spread);
    Duration::from_secs_f64((interval.as_secs_f64() + delta).max(0.001))
}

/// The grid probe starts are aligned to: at most 10 ms, and a sixteenth of the
/// interval for short intervals. Probes due within one slot start together on one
/// wake-up of the process instead of one wake-up each: 1,000 backends probed every
/// second cost at most 100 wake-ups a second, not 1,000 (each wake-up is two context
/// switches, which cost more than the connect they start). The slots stay spread
/// over the interval, so there is no burst.
pub fn slot(interval: Duration) -> Duration {
    (interval / 16).clamp(Duration::from_micros(100), Duration::from_millis(10))
}

/// `t` rounded up to the next multiple of `slot` (on a grid shared by every
/// checker of the process, so checkers due in one slot wake together).
pub fn on_grid(t: Instant, slot: Duration) -> Instant {
    // Any fixed point will do; a time before it (another runtime's paused clock)
    // is left as it is.
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = t.saturating_duration_since(epoch).as_nanos();
    let q = slot.as_nanos().max(1);
    let up = (q - since % q) % q;
    t + Duration::from_nanos(u64::try_from(up).unwrap_or(0))
}

/// Runs one probe bounded by `timeout`, turning an overrun into [`ProbeError::Timeout`].
pub async fn run_once(probe: &dyn Probe, timeout: Duration) -> (Result<(), ProbeError>, Duration) {
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, probe.check()).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    };
    (result, start.elapsed())
}

/// Spawns the task that probes `probe` every `timing.interval` (jittered) until
/// `cancel` fires, feeding `machine` and calling `on_result` after every round.
///
/// The first round starts after a random delay of up to a fifth of the interval, which
/// spreads a freshly started fleet of checkers without delaying the first verdict much.
pub fn spawn_checker<F>(
    probe: Arc<dyn Probe>,
    timing: ProbeTiming,
    mut machine: RiseFall,
    cancel: CancellationToken,
    mut on_result: F,
) -> JoinHandle<()>
where
    F: FnMut(&CheckResult) + Send + 'static,
{
    tokio::spawn(async move {
        let slot = slot(timing.interval);
        let first = timing.interval.as_secs_f64() / 5.0;
        let delay = Duration::from_secs_f64(rand::thread_rng().gen_range(0.0..=first));
        // One cancellation waiter and one timer for the checker's life, re-armed
        // each round (timeout, then the next start) instead of registered anew
        // twice per check: with thousands of backends that is most of a check's
        // user-space cost besides the connect itself.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let timer = tokio::time::sleep_until(on_grid(Instant::now() + delay, slot));
        tokio::pin!(timer);
        tokio::select! {
            _ = &mut cancelled => return,
            _ = &mut timer => {}
        }
        loop {
            let round_start = Instant::now();
            timer.as_mut().reset(round_start + timing.timeout);
            let result = tokio::select! {
                biased;
                _ = &mut cancelled => return,
                r = probe.check() => r,
                _ = &mut timer => Err(ProbeError::Timeout(timing.timeout)),
            };
            let latency = round_start.elapsed();
            let transition = machine.observe(result.is_ok());
            let check = CheckResult {
                error: result.err(),
                latency,
                transition,
                up: machine.state().unwrap_or(false),
            };
            on_result(&check);
            timer
                .as_mut()
                .reset(on_grid(round_start + jittered(timing.interval), slot));
            tokio::select! {
                _ = &mut cancelled => return,
                _ = &mut timer => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeFuture;
    use crate::testing::SwitchProbe;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn probe_starts_share_slots_and_stay_within_one() {
        let slot = slot(Duration::from_secs(1));
        assert_eq!(slot, Duration::from_millis(10));
        assert_eq!(
            super::slot(Duration::from_millis(80)),
            Duration::from_millis(5)
        );
        // The grid's origin is set by its first use.
        let _ = on_grid(Instant::now(), slot);
        let base = Instant::now();
        let mut starts = std::collections::BTreeSet::new();
        for i in 0..1000u64 {
            let t = base + Duration::from_micros(i * 997);
            let g = on_grid(t, slot);
            assert!(g >= t && g - t < slot, "moved by {:?}", g - t);
            assert_eq!(on_grid(g, slot), g, "a grid point stays put");
            starts.insert(g);
        }
        // ~1 s of starts, one per ms before: now one per 10 ms slot.
        assert!(starts.len() <= 101, "{} distinct starts", starts.len());
    }

    #[test]
    fn first_result_decides() {
        let mut m = RiseFall::new(2, 3);
        assert_eq!(m.state(), None);
        assert_eq!(m.observe(false), Some(Transition::Down));
        let mut m = RiseFall::new(2, 3);
        assert_eq!(m.observe(true), Some(Transition::Up));
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut m = RiseFall::new(2, 3);
        m.observe(true);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None, "a success resets the run");
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some(Transition::Down));
        assert_eq!(m.state(), Some(false));
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut m = RiseFall::with_state(2, 1, Some(false));
        assert_eq!(m.observe(true), None);
        assert_eq!(m.pending(), 1);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), Some(Transition::Up));
        assert_eq!(m.observe(true), None);
    }

    #[test]
    fn zero_parameters_are_treated_as_one() {
        let mut m = RiseFall::with_state(0, 0, Some(true));
        assert_eq!(m.observe(false), Some(Transition::Down));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(1));
            assert!(d >= Duration::from_millis(899) && d <= Duration::from_millis(1101));
        }
    }

    struct Hang;
    impl Probe for Hang {
        fn check(&self) -> ProbeFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checker_marks_down_within_interval_times_fall() {
        let flag = Arc::new(AtomicBool::new(true));
        let timing = ProbeTiming {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = spawn_checker(
            Arc::new(SwitchProbe(flag.clone())),
            timing,
            RiseFall::new(2, 2),
            cancel.clone(),
            move |r| {
                let _ = tx.send((Instant::now(), r.clone()));
            },
        );
        let (_, first) = rx.recv().await.expect("first round");
        assert_eq!(first.transition, Some(Transition::Up));
        flag.store(false, Ordering::SeqCst);
        let killed = Instant::now();
        let down_at = loop {
            let (at, r) = rx.recv().await.expect("round");
            if r.transition == Some(Transition::Down) {
                assert_eq!(r.error, Some(ProbeError::Refused));
                break at;
            }
        };
        let bound = timing.interval.mul_f64(1.1) * timing.fall + timing.timeout;
        assert!(
            down_at - killed <= bound,
            "{:?} > {bound:?}",
            down_at - killed
        );
        flag.store(true, Ordering::SeqCst);
        let mut oks = 0;
        loop {
            let (_, r) = rx.recv().await.expect("round");
            assert!(r.ok());
            oks += 1;
            if r.transition == Some(Transition::Up) {
                break;
            }
        }
        assert_eq!(oks, 2, "comes back after exactly `rise` good probes");
        cancel.cancel();
        task.await.expect("checker ends on cancel");
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_probe_times_out_with_reason() {
        let timing = ProbeTiming {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let _task = spawn_checker(
            Arc::new(Hang),
            timing,
            RiseFall::new(1, 1),
            cancel.clone(),
            move |r| {
                let _ = tx.send(r.clone());
            },
        );
        let r = rx.recv().await.expect("round");
        assert_eq!(r.transition, Some(Transition::Down));
        assert_eq!(
            r.error.map(|e| e.to_string()).as_deref(),
            Some("timeout after 500ms")
        );
        cancel.cancel();
    }
}
