//! Passive ejection (outlier detection), pure: the L4 proxy reports failed and
//! successful connects, the L7 proxy reports 5xx/gateway failures, and this decides.
//!
//! `consecutive_failures` failures in a row eject a backend for `base_time`; each
//! further ejection doubles that, up to `max_time`; once the backend has stayed out of
//! trouble for `reset_after` since its last ejection ended, the doubling starts over.
//! The pool never has more than `max_percent` of its backends ejected at once (floor:
//! a pool of one is never ejected, since ejecting its only node helps nobody). Every
//! function takes `now` so tests need no sleeping.

use std::sync::Mutex;
use std::time::Duration;

use shared::config::EjectionConfig;
use tokio::time::Instant;

use crate::sync::lock;

/// One backend's passive-ejection state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outlier {
    consecutive: u32,
    ejected_until: Option<Instant>,
    /// Ejections in the current doubling run.
    ejections: u32,
    /// When the most recent ejection ended (or will end).
    last_end: Option<Instant>,
}

/// One backend's [`Outlier`] record as the pool and the admin commands share it:
/// every read and change is one short critical section here, so no caller holds
/// the lock (the hot path reads only the backend's atomic deadline).
#[derive(Debug, Default)]
pub(crate) struct Record(Mutex<Outlier>);

impl Record {
    /// A success clears the failure run.
    pub(crate) fn success(&self) {
        lock(&self.0).record_success();
    }

    /// Counts a failure; with the outcome, the end of the ejection it started.
    pub(crate) fn failure(
        &self,
        cfg: &EjectionConfig,
        now: Instant,
        others_ejected: usize,
        pool_size: usize,
    ) -> (FailureOutcome, Option<Instant>) {
        let mut o = lock(&self.0);
        let outcome = o.record_failure(cfg, now, others_ejected, pool_size);
        (outcome, o.ejected_until(now))
    }

    /// Ends an ejection early (the operator's `ready`); true when there was one.
    pub(crate) fn readmit(&self, now: Instant) -> bool {
        let mut o = lock(&self.0);
        let ejected = o.is_ejected(now);
        if ejected {
            o.readmit(now);
        }
        ejected
    }

    /// True while ejected.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.0).is_ejected(now)
    }
}

/// What a reported failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; not (yet) ejected.
    Counted,
    /// Ejected for this long.
    Ejected(Duration),
    /// Would have been ejected, but the pool is at its `max_percent` limit.
    CapReached,
    /// Already ejected; nothing changes.
    AlreadyEjected,
}

/// How many of `pool_size` backends may be ejected at once.
pub(crate) fn max_ejected(pool_size: usize, max_percent: u32) -> usize {
    pool_size * (max_percent.min(100) as usize) / 100
}

impl Outlier {
    /// A backend with a clean record.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Outlier::default()
    }

    /// True while ejected.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    /// When the current ejection ends, if ejected.
    pub(crate) fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.ejected_until.filter(|t| now < *t)
    }

    /// A successful connect/request: the failure run ends.
    pub(crate) fn record_success(&mut self) {
        self.consecutive = 0;
    }

    /// A failed connect/request. `ejected_now` is how many backends of the pool are
    /// currently ejected (this one excluded), `pool_size` how many it has.
    pub(crate) fn record_failure(
        &mut self,
        cfg: &EjectionConfig,
        now: Instant,
        ejected_now: usize,
        pool_size: usize,
    ) -> FailureOutcome {
        if self.is_ejected(now) {
            return FailureOutcome::AlreadyEjected;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if cfg.consecutive_failures == 0 || self.consecutive < cfg.consecutive_failures {
            return FailureOutcome::Counted;
        }
        if ejected_now + 1 > max_ejected(pool_size, cfg.max_percent) {
            return FailureOutcome::CapReached;
        }
        if self
            .last_end
            .is_some_and(|end| now >= end + cfg.reset_after)
        {
            self.ejections = 0;
        }
        let factor = 1u32.checked_shl(self.ejections.min(31)).unwrap_or(u32::MAX);
        let time = cfg
            .base_time
            .checked_mul(factor)
            .unwrap_or(cfg.max_time)
            .min(cfg.max_time);
        self.ejections = self.ejections.saturating_add(1);
        self.consecutive = 0;
        let until = now + time;
        self.ejected_until = Some(until);
        self.last_end = Some(until);
        FailureOutcome::Ejected(time)
    }

    /// Ends an ejection early (operator `ready`, or a reload); the doubling history
    /// is kept.
    pub(crate) fn readmit(&mut self, now: Instant) {
        if self.is_ejected(now) {
            self.ejected_until = Some(now);
            self.last_end = Some(now);
        }
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EjectionConfig {
        EjectionConfig {
            consecutive_failures: 3,
            base_time: Duration::from_secs(10),
            max_time: Duration::from_secs(60),
            max_percent: 50,
            reset_after: Duration::from_secs(120),
        }
    }

    fn fail_n(o: &mut Outlier, n: u32, now: Instant) -> FailureOutcome {
        let mut last = FailureOutcome::Counted;
        for _ in 0..n {
            last = o.record_failure(&cfg(), now, 0, 4);
        }
        last
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut o = Outlier::new();
        assert_eq!(fail_n(&mut o, 2, t0), FailureOutcome::Counted);
        o.record_success();
        assert_eq!(
            fail_n(&mut o, 2, t0),
            FailureOutcome::Counted,
            "success reset the run"
        );
        assert!(!o.is_ejected(t0));
        assert_eq!(
            o.record_failure(&cfg(), t0, 0, 4),
            FailureOutcome::Ejected(Duration::from_secs(10))
        );
        assert!(o.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!o.is_ejected(t0 + Duration::from_secs(10)));
        assert_eq!(
            o.record_failure(&cfg(), t0 + Duration::from_secs(1), 0, 4),
            FailureOutcome::AlreadyEjected
        );
    }

    #[test]
    fn ejection_time_doubles_up_to_the_cap() {
        let mut now = Instant::now();
        let mut o = Outlier::new();
        let mut times = Vec::new();
        for _ in 0..5 {
            match fail_n(&mut o, 3, now) {
                FailureOutcome::Ejected(t) => times.push(t.as_secs()),
                other => panic!("{other:?}"),
            }
            // Fails again right after being readmitted (well within reset_after).
            now = o.ejected_until(now).expect("ejected") + Duration::from_secs(1);
        }
        assert_eq!(times, [10, 20, 40, 60, 60]);
    }

    #[test]
    fn doubling_resets_after_a_healthy_period() {
        let t0 = Instant::now();
        let mut o = Outlier::new();
        assert_eq!(
            fail_n(&mut o, 3, t0),
            FailureOutcome::Ejected(Duration::from_secs(10))
        );
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(
            fail_n(&mut o, 3, t1),
            FailureOutcome::Ejected(Duration::from_secs(20))
        );
        // Ejection ended at t1+20; healthy for reset_after (120 s) after that.
        let t2 = t1 + Duration::from_secs(20 + 120);
        assert_eq!(
            fail_n(&mut o, 3, t2),
            FailureOutcome::Ejected(Duration::from_secs(10))
        );
    }

    #[test]
    fn never_more_than_max_percent_ejected() {
        let now = Instant::now();
        assert_eq!(max_ejected(4, 50), 2);
        assert_eq!(max_ejected(2, 50), 1);
        assert_eq!(max_ejected(1, 50), 0);
        assert_eq!(max_ejected(3, 100), 3);
        let mut o = Outlier::new();
        for _ in 0..2 {
            o.record_failure(&cfg(), now, 2, 4);
        }
        assert_eq!(
            o.record_failure(&cfg(), now, 2, 4),
            FailureOutcome::CapReached
        );
        assert!(!o.is_ejected(now));
        // Once another is readmitted there is room.
        assert!(matches!(
            o.record_failure(&cfg(), now, 1, 4),
            FailureOutcome::Ejected(_)
        ));
        // A pool of one is never ejected at 50 %.
        let mut solo = Outlier::new();
        for _ in 0..10 {
            assert_ne!(
                std::mem::discriminant(&solo.record_failure(&cfg(), now, 0, 1)),
                std::mem::discriminant(&FailureOutcome::Ejected(Duration::ZERO))
            );
        }
    }

    #[test]
    fn readmit_ends_ejection_but_keeps_doubling() {
        let t0 = Instant::now();
        let mut o = Outlier::new();
        fail_n(&mut o, 3, t0);
        o.readmit(t0 + Duration::from_secs(1));
        assert!(!o.is_ejected(t0 + Duration::from_secs(1)));
        assert_eq!(
            fail_n(&mut o, 3, t0 + Duration::from_secs(2)),
            FailureOutcome::Ejected(Duration::from_secs(20))
        );
    }

    #[test]
    fn zero_threshold_disables_ejection() {
        let now = Instant::now();
        let mut o = Outlier::new();
        let c = EjectionConfig {
            consecutive_failures: 0,
            ..cfg()
        };
        for _ in 0..100 {
            assert_eq!(o.record_failure(&c, now, 0, 4), FailureOutcome::Counted);
        }
    }
}
