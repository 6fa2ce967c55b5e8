//! The RFC 4271 session state machine of one neighbor, without I/O: states, the
//! checks on the peer's OPEN, the negotiated hold time, and the hold, keepalive and
//! reconnect timers as deadlines the session task sleeps until. Announce-only and
//! always the connecting side, so there is no Active state and no collision
//! resolution: a router that also dials us is refused by the kernel (we do not
//! listen).

use std::time::Duration;

use tokio::time::Instant;

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; waiting for the reconnect deadline.
    Idle,
    /// TCP connect in progress.
    Connect,
    /// Our OPEN sent, waiting for theirs.
    OpenSent,
    /// OPENs exchanged, waiting for their KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

impl State {
    /// The spelling of `show bgp`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::OpenSent => "opensent",
            State::OpenConfirm => "openconfirm",
            State::Established => "established",
        }
    }
}

/// A NOTIFICATION to send, and why (RFC 4271 §4.5, RFC 6608 subcodes for FSM errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notify {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// For `show bgp`.
    pub reason: String,
}

impl Notify {
    fn new(code: u8, subcode: u8, reason: impl Into<String>) -> Self {
        Notify {
            code,
            subcode,
            reason: reason.into(),
        }
    }

    /// Cease / administrative shutdown: we are stopping or the neighbor was removed.
    pub(crate) fn admin_shutdown() -> Self {
        Notify::new(6, 2, "administrative shutdown")
    }
}

/// What the peer's OPEN says, as far as the checks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerOpen {
    /// BGP version.
    pub version: u8,
    /// Its AS (from the 4-octet capability when present).
    pub asn: u32,
    /// Hold time it proposes, seconds.
    pub hold: u16,
    /// Its BGP identifier.
    pub id: std::net::Ipv4Addr,
}

/// What a timer asks for when its deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Nothing heard for the hold time: send NOTIFICATION 4/0, reset.
    HoldExpired,
    /// Time for our KEEPALIVE.
    SendKeepalive,
}

/// First reconnect delay after a failure.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest reconnect delay: a router back from a reboot is peered within this.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// RFC 4271's "large" hold time while waiting for the peer's OPEN.
pub(crate) const OPEN_HOLD: Duration = Duration::from_secs(240);

/// One neighbor's machine.
#[derive(Debug)]
pub(crate) struct Fsm {
    state: State,
    /// The hold time we offer.
    local_hold: Duration,
    /// Negotiated hold time (zero: no keepalives, no hold timer).
    hold: Duration,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
}

impl Fsm {
    /// A machine that offers `local_hold` (0 or at least 3 s, checked by the config).
    pub(crate) fn new(local_hold: Duration) -> Self {
        Fsm {
            state: State::Idle,
            local_hold,
            hold: local_hold,
            hold_at: None,
            keepalive_at: None,
            failures: 0,
        }
    }

    /// Current state.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Negotiated hold time (the keepalive and expiry timers are derived from it;
    /// read by the transition tests).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> Duration {
        self.hold
    }

    /// The hold time we offer, in whole seconds, for our OPEN.
    pub(crate) fn local_hold_secs(&self) -> u16 {
        u16::try_from(self.local_hold.as_secs()).unwrap_or(u16::MAX)
    }

    /// A TCP connect starts.
    pub(crate) fn connecting(&mut self) {
        self.state = State::Connect;
        self.hold_at = None;
        self.keepalive_at = None;
    }

    /// Connected and our OPEN is sent: wait for theirs under the large hold time.
    pub(crate) fn open_sent(&mut self, now: Instant) {
        self.state = State::OpenSent;
        self.hold_at = Some(now + OPEN_HOLD);
        self.keepalive_at = None;
    }

    /// Checks the peer's OPEN and negotiates the hold time; on success the session
    /// sends its KEEPALIVE at once (the keepalive deadline is `now`).
    pub(crate) fn open_received(
        &mut self,
        open: PeerOpen,
        expected_as: u32,
        now: Instant,
    ) -> Result<(), Notify> {
        if self.state != State::OpenSent {
            return Err(self.unexpected("OPEN"));
        }
        if open.version != 4 {
            return Err(Notify::new(
                2,
                1,
                format!("unsupported BGP version {}", open.version),
            ));
        }
        if open.asn != expected_as {
            return Err(Notify::new(
                2,
                2,
                format!("peer AS {} is not the configured {expected_as}", open.asn),
            ));
        }
        if open.id.is_unspecified() {
            return Err(Notify::new(2, 3, "BGP identifier 0.0.0.0"));
        }
        if open.hold == 1 || open.hold == 2 {
            return Err(Notify::new(
                2,
                6,
                format!("unacceptable hold time {} s", open.hold),
            ));
        }
        self.hold = self
            .local_hold
            .min(Duration::from_secs(u64::from(open.hold)));
        self.state = State::OpenConfirm;
        self.restart_hold(now);
        self.keepalive_at = (!self.hold.is_zero()).then_some(now);
        Ok(())
    }

    /// A KEEPALIVE from the peer: in OpenConfirm it establishes the session.
    pub(crate) fn keepalive_received(&mut self, now: Instant) -> Result<(), Notify> {
        match self.state {
            State::OpenConfirm => {
                self.state = State::Established;
                self.failures = 0;
            }
            State::Established => {}
            _ => return Err(self.unexpected("KEEPALIVE")),
        }
        self.restart_hold(now);
        Ok(())
    }

    /// An UPDATE or ROUTE-REFRESH from the peer: only valid once established.
    pub(crate) fn update_received(&mut self, now: Instant) -> Result<(), Notify> {
        if self.state != State::Established {
            return Err(self.unexpected("UPDATE"));
        }
        self.restart_hold(now);
        Ok(())
    }

    /// We sent a KEEPALIVE (or an UPDATE, which also tells the peer we are alive):
    /// the next is due a third of the hold time later.
    pub(crate) fn sent(&mut self, now: Instant) {
        if !self.hold.is_zero() && self.keepalive_at.is_some() {
            self.keepalive_at = Some(now + self.hold / 3);
        }
    }

    /// The earliest timer deadline, if any runs.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.hold_at, self.keepalive_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer due at `now`, hold expiry first.
    pub(crate) fn poll(&self, now: Instant) -> Option<Timer> {
        if self.hold_at.is_some_and(|t| t <= now) {
            return Some(Timer::HoldExpired);
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            return Some(Timer::SendKeepalive);
        }
        None
    }

    /// The hold timer's NOTIFICATION.
    pub(crate) fn hold_expired(&self) -> Notify {
        Notify::new(4, 0, format!("hold timer expired ({:?})", self.hold))
    }

    /// The session ended (error, NOTIFICATION, closed connection): back to Idle.
    /// Returns how long to wait before the next connect: `BACKOFF_BASE` doubled per
    /// consecutive failure up to `BACKOFF_CAP`, times `jitter` (drawn by the caller
    /// from 0.75..1.25 so replicas restarted together do not reconnect in step),
    /// never above the cap.
    pub(crate) fn reset(&mut self, jitter: f64) -> Duration {
        self.state = State::Idle;
        self.hold_at = None;
        self.keepalive_at = None;
        self.hold = self.local_hold;
        self.failures = self.failures.saturating_add(1);
        backoff(self.failures, jitter)
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_at = (!self.hold.is_zero()).then(|| now + self.hold);
    }

    fn unexpected(&self, what: &str) -> Notify {
        // RFC 6608: 1 = unexpected in OpenSent, 2 = in OpenConfirm, 3 = in Established.
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        Notify::new(
            5,
            subcode,
            format!("unexpected {what} in {}", self.state.as_str()),
        )
    }
}

/// The delay before attempt `failures + 1`.
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    base.mul_f64(jitter.clamp(0.5, 1.5)).min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn open(hold: u16) -> PeerOpen {
        PeerOpen {
            version: 4,
            asn: 65000,
            hold,
            id: Ipv4Addr::new(192, 0, 2, 1),
        }
    }

    /// Drives a machine to Established at `now` with the peer offering `peer_hold`.
    fn established(local: u64, peer_hold: u16) -> Fsm {
        let mut f = Fsm::new(Duration::from_secs(local));
        f.connecting();
        f.open_sent(Instant::now());
        f.open_received(open(peer_hold), 65000, Instant::now())
            .unwrap();
        if peer_hold != 0 {
            assert_eq!(f.poll(Instant::now()), Some(Timer::SendKeepalive));
            f.sent(Instant::now());
        }
        f.keepalive_received(Instant::now()).unwrap();
        assert_eq!(f.state(), State::Established);
        f
    }

    #[tokio::test(start_paused = true)]
    async fn hold_timer_expires_after_the_negotiated_hold_time() {
        let mut f = established(9, 30);
        assert_eq!(f.hold(), Duration::from_secs(9), "the lower offer wins");
        // Our keepalives do not keep the peer alive: only what we hear does.
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(f.poll(Instant::now()), Some(Timer::SendKeepalive));
            f.sent(Instant::now());
        }
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert_eq!(f.poll(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(f.poll(Instant::now()), Some(Timer::HoldExpired));
        assert_eq!((f.hold_expired().code, f.hold_expired().subcode), (4, 0));
        // A KEEPALIVE heard in time restarts it.
        let mut f = established(9, 9);
        tokio::time::advance(Duration::from_secs(8)).await;
        f.keepalive_received(Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        f.sent(Instant::now());
        assert_ne!(f.poll(Instant::now()), Some(Timer::HoldExpired));
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_go_every_third_of_the_hold_time() {
        let mut f = established(30, 90);
        assert_eq!(f.hold(), Duration::from_secs(30));
        let start = Instant::now();
        let mut sent_at = Vec::new();
        while sent_at.len() < 4 {
            let next = f.next_deadline().unwrap();
            tokio::time::sleep_until(next).await;
            match f.poll(Instant::now()) {
                Some(Timer::SendKeepalive) => {
                    sent_at.push(Instant::now() - start);
                    f.sent(Instant::now());
                    f.keepalive_received(Instant::now()).unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let want: Vec<Duration> = (1..=4).map(|i| Duration::from_secs(10 * i)).collect();
        assert_eq!(sent_at, want);
    }

    #[tokio::test(start_paused = true)]
    async fn hold_time_zero_runs_no_timers() {
        let f = established(9, 0);
        assert_eq!(f.hold(), Duration::ZERO);
        assert_eq!(f.next_deadline(), None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(f.poll(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_wait_is_bounded_by_the_large_hold_time() {
        let mut f = Fsm::new(Duration::from_secs(9));
        f.connecting();
        f.open_sent(Instant::now());
        tokio::time::advance(OPEN_HOLD).await;
        assert_eq!(f.poll(Instant::now()), Some(Timer::HoldExpired));
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let mut f = Fsm::new(Duration::from_secs(9));
        let delays: Vec<u64> = (0..8).map(|_| f.reset(1.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(1, 0.75), Duration::from_millis(750));
        assert_eq!(backoff(2, 1.25), Duration::from_millis(2500));
        assert_eq!(backoff(9, 1.25), BACKOFF_CAP, "jitter never passes the cap");
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_CAP);
        // Established resets the count.
        let mut f = established(9, 9);
        assert_eq!(f.reset(1.0), Duration::from_secs(1));
    }

    #[test]
    fn bad_opens_get_their_notification_codes() {
        let now = Instant::now();
        let check = |o: PeerOpen, want: (u8, u8)| {
            let mut f = Fsm::new(Duration::from_secs(9));
            f.connecting();
            f.open_sent(now);
            let n = f.open_received(o, 65000, now).unwrap_err();
            assert_eq!((n.code, n.subcode), want, "{}", n.reason);
        };
        check(
            PeerOpen {
                version: 3,
                ..open(9)
            },
            (2, 1),
        );
        check(
            PeerOpen {
                asn: 65001,
                ..open(9)
            },
            (2, 2),
        );
        check(
            PeerOpen {
                id: Ipv4Addr::UNSPECIFIED,
                ..open(9)
            },
            (2, 3),
        );
        check(open(2), (2, 6));
        // Messages out of order are FSM errors (RFC 6608 subcodes).
        let mut f = Fsm::new(Duration::from_secs(9));
        f.connecting();
        f.open_sent(now);
        assert_eq!(f.update_received(now).unwrap_err().code, 5);
        let n = f.keepalive_received(now).unwrap_err();
        assert_eq!((n.code, n.subcode), (5, 1));
        let mut f = established(9, 9);
        let n = f.open_received(open(9), 65000, now).unwrap_err();
        assert_eq!((n.code, n.subcode), (5, 3));
        assert_eq!(
            (
                Notify::admin_shutdown().code,
                Notify::admin_shutdown().subcode
            ),
            (6, 2)
        );
    }
}
