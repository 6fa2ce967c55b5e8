//! One site's health: its keepalives' rise/fall verdicts aggregated against `min_up`
//! (a count, or a percentage rounded up), the operator override on top, the failback
//! bookkeeping selection needs (when it came back, whether a manual hold is on), and
//! the measured failover: the time from the first failing keepalive to the site being
//! declared down. [`SiteState`] is plain data driven by the supervisor in `lib.rs`;
//! it returns [`Change`]s and the caller records them in the event log and metrics.

use std::time::{Duration, SystemTime};

use shared::admin::SiteOverride;
use shared::config::{MinUp, SiteConfig};
use tokio::time::Instant;

use crate::quorum::{self, Rule, Tally, Vote};
use crate::select::SiteView;

/// A peer's latest view of this site, as heard.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    /// Member id of the vantage point.
    pub voter: String,
    /// Its verdict.
    pub up: bool,
    /// When this node last heard from it (its views age from there).
    pub heard_at: Instant,
    /// Its passing/total keepalives and reason, as it published them.
    pub detail: String,
}

/// The quorum side of a site in a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Voting {
    /// This node's member id.
    pub me: String,
    /// Vantage points, quorum and staleness.
    pub rule: Rule,
    /// Peers' latest views of this site.
    pub peers: Vec<PeerView>,
    /// The last state a quorum agreed on.
    pub agreed: Option<bool>,
    /// The tally behind the current state.
    pub tally: Option<Tally>,
}

impl Voting {
    /// Counts the votes at `now`.
    pub fn tally(&self, own: bool, now: Instant) -> Tally {
        let votes: Vec<Vote> = self
            .peers
            .iter()
            .map(|p| Vote {
                voter: p.voter.clone(),
                up: p.up,
                age: now.saturating_duration_since(p.heard_at),
                detail: p.detail.clone(),
            })
            .collect();
        quorum::decide(&self.rule, &self.me, own, &votes, self.agreed)
    }
}

/// One keepalive's latest verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveState {
    /// Display name (`smtp 127.0.0.1:2525`, an lb_status URL).
    pub name: String,
    /// Rise/fall state; `None` until its first result.
    pub up: Option<bool>,
    /// The last probe failure's reason, cleared by a pass.
    pub last_error: Option<String>,
}

/// A change of a site's effective state.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The new effective state.
    pub up: bool,
    /// First failing keepalive → site down, when the site went down on health.
    pub detection: Option<Duration>,
    /// Event text without the subject, e.g.
    /// `down: 0/1 keepalives passing (smtp 127.0.0.1:2525: connection refused); detected in 2.1s`.
    pub message: String,
}

/// Health, override and failback state of one site.
#[derive(Debug, Clone)]
pub struct SiteState {
    /// Site name.
    pub name: String,
    /// Aggregation threshold from the config.
    pub min_up: MinUp,
    /// Per keepalive, in config order.
    pub keepalives: Vec<KeepaliveState>,
    /// Operator override (`Down`/`Up`); `None` means health decides.
    pub forced: Option<SiteOverride>,
    /// Effective state (`None` before the first round completes).
    pub up: Option<bool>,
    /// When the effective state last changed (wall clock, for `show sites`).
    pub since: SystemTime,
    /// When the site last came back after being down (failback wait).
    pub recovered_at: Option<Instant>,
    /// Manual failback hold.
    pub held: bool,
    /// The site has been up since this node started. A site that comes up for the
    /// first time (its initial state was down: no keepalive verdict yet, or no
    /// quorum yet) is not recovering from anything, so no failback wait applies;
    /// with one, two sites coming up together at a cold start made the answers
    /// alternate as each one's wait ended.
    pub ever_up: bool,
    /// First failed keepalive result while the site was up (detection timer start).
    pub first_fail_at: Option<Instant>,
    /// When this node's own keepalive verdict last changed (published as `since`).
    pub health_since: SystemTime,
    /// In a cluster: the peers' views and the quorum; `None` decides alone.
    pub voting: Option<Voting>,
}

/// Keepalives that must pass for `total` keepalives under `min_up`.
pub fn needed(min_up: MinUp, total: usize) -> usize {
    match min_up {
        MinUp::Count(n) => n as usize,
        MinUp::Percent(p) => (total * p as usize).div_ceil(100),
    }
}

fn fmt_detect(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl SiteState {
    /// A site in the unknown state, as at cold start.
    pub fn new(cfg: &SiteConfig) -> Self {
        SiteState {
            name: cfg.name.clone(),
            min_up: cfg.min_up,
            keepalives: cfg
                .keepalives
                .iter()
                .map(|k| KeepaliveState {
                    name: k.name.clone(),
                    up: None,
                    last_error: None,
                })
                .collect(),
            forced: None,
            up: None,
            since: SystemTime::now(),
            recovered_at: None,
            held: false,
            ever_up: false,
            first_fail_at: None,
            health_since: SystemTime::now(),
            voting: None,
        }
    }

    /// Keepalives currently passing (rise/fall state up).
    pub fn passing(&self) -> usize {
        self.keepalives
            .iter()
            .filter(|k| k.up == Some(true))
            .count()
    }

    /// Whether every keepalive has reported at least once.
    pub fn reported(&self) -> bool {
        self.keepalives.iter().all(|k| k.up.is_some())
    }

    /// Aggregate health: at least `min_up` keepalives pass.
    pub fn health_up(&self) -> bool {
        self.passing() >= needed(self.min_up, self.keepalives.len())
    }

    /// The health the site takes without an override: this node's own keepalives,
    /// or in a cluster what the vantage points agree on (recording the tally).
    fn decided_health(&mut self, now: Instant) -> bool {
        let own = self.health_up();
        let Some(v) = &mut self.voting else {
            return own;
        };
        let t = v.tally(own, now);
        if let quorum::Decision::Agreed(b) = t.decision {
            v.agreed = Some(b);
        }
        let up = t.up();
        v.tally = Some(t);
        up
    }

    fn target(&mut self, now: Instant) -> bool {
        let health = self.decided_health(now);
        match self.forced {
            Some(SiteOverride::Down) => false,
            Some(SiteOverride::Up) => true,
            _ => health,
        }
    }

    /// Re-counts the votes (peers' views changed or aged) and applies the outcome.
    pub fn reevaluate(&mut self, now: Instant) -> Option<Change> {
        self.up?;
        self.refresh(now, None)
    }

    /// Whether the current state is held without a quorum.
    pub fn fail_static(&self) -> bool {
        self.voting
            .as_ref()
            .and_then(|v| v.tally.as_ref())
            .is_some_and(Tally::fail_static)
    }

    /// Why the site has its health: the keepalives, and in a cluster the vote.
    fn cause_text(&self) -> String {
        match self.voting.as_ref().and_then(|v| v.tally.as_ref()) {
            Some(t) => format!("{}; {}", self.health_text(), t.text()),
            None => self.health_text(),
        }
    }

    /// This node's own keepalive verdict in words (published as the view's reason).
    pub fn health_text(&self) -> String {
        let failing: Vec<String> = self
            .keepalives
            .iter()
            .filter(|k| k.up != Some(true))
            .map(|k| match &k.last_error {
                Some(e) => format!("{}: {e}", k.name),
                None if k.up.is_none() => format!("{}: no result yet", k.name),
                None => format!("{}: recovering", k.name),
            })
            .collect();
        let mut s = format!(
            "{}/{} keepalives passing",
            self.passing(),
            self.keepalives.len()
        );
        if !failing.is_empty() {
            s.push_str(&format!(" ({})", failing.join("; ")));
        }
        s
    }

    /// Feeds one keepalive result: `ok` is the probe's own result, `up` the keepalive's
    /// rise/fall state after it. Returns the site's change, if any.
    pub fn observe(
        &mut self,
        idx: usize,
        ok: bool,
        up: bool,
        error: Option<String>,
        now: Instant,
    ) -> Option<Change> {
        let health_before = self.health_up();
        let k = self.keepalives.get_mut(idx)?;
        k.up = Some(up);
        if ok {
            k.last_error = None;
        } else {
            k.last_error = error;
        }
        if !ok && self.up == Some(true) && self.first_fail_at.is_none() {
            self.first_fail_at = Some(now);
        }
        if ok
            && self
                .keepalives
                .iter()
                .all(|k| k.up == Some(true) && k.last_error.is_none())
        {
            self.first_fail_at = None;
        }
        if self.health_up() != health_before {
            self.health_since = SystemTime::now();
        }
        // Cold start: the state is decided once every keepalive has spoken.
        self.up?;
        self.refresh(now, None)
    }

    /// Decides the initial state after the first keepalive round (or its deadline);
    /// keepalives that never answered count as failing.
    pub fn settle(&mut self) -> Change {
        let up = self.target(Instant::now());
        self.up = Some(up);
        self.since = SystemTime::now();
        self.held = !up;
        self.ever_up = up;
        self.recovered_at = None;
        self.first_fail_at = None;
        Change {
            up,
            detection: None,
            message: format!(
                "{}: {} (initial state)",
                if up { "up" } else { "down" },
                self.cause_text()
            ),
        }
    }

    /// Applies an operator override (`Auto` releases it and any failback hold/wait).
    pub fn set_override(&mut self, o: SiteOverride, now: Instant) -> (String, Option<Change>) {
        let note = match o {
            SiteOverride::Auto => {
                let had = self.forced.take();
                let was_held = self.held || self.recovered_at.is_some();
                self.held = false;
                self.recovered_at = None;
                format!(
                    "override released (was {}){}",
                    had.map(|o| o.as_str()).unwrap_or("none"),
                    if was_held {
                        "; failback hold released"
                    } else {
                        ""
                    }
                )
            }
            other => {
                self.forced = Some(other);
                format!("override {} set by operator", other.as_str())
            }
        };
        let change = self.refresh(now, Some(o));
        if o == SiteOverride::Auto {
            // The operator's release means "use it now": no failback wait after it.
            self.recovered_at = None;
            self.held = self.up == Some(false);
        }
        (note, change)
    }

    fn refresh(&mut self, now: Instant, by: Option<SiteOverride>) -> Option<Change> {
        let target = self.target(now);
        if self.up == Some(target) {
            return None;
        }
        self.up = Some(target);
        self.since = SystemTime::now();
        let cause = match by {
            Some(o) => format!("operator override {}", o.as_str()),
            None => self.cause_text(),
        };
        if target {
            self.recovered_at = self.ever_up.then_some(now);
            self.ever_up = true;
            self.first_fail_at = None;
            Some(Change {
                up: true,
                detection: None,
                message: format!("up: {cause}"),
            })
        } else {
            self.held = true;
            self.recovered_at = None;
            let detection = match by {
                None => self.first_fail_at.take().map(|t| now - t),
                Some(_) => {
                    self.first_fail_at = None;
                    None
                }
            };
            let mut message = format!("down: {cause}");
            if let Some(d) = detection {
                message.push_str(&format!("; detected in {}", fmt_detect(d)));
            }
            Some(Change {
                up: false,
                detection,
                message,
            })
        }
    }

    /// The selection-facing snapshot.
    pub fn view(&self) -> SiteView {
        SiteView {
            up: self.up.unwrap_or(false),
            health_up: self.health_up(),
            forced: self.forced,
            passing: self.passing(),
            total: self.keepalives.len(),
            recovered_at: self.recovered_at,
            held: self.held,
        }
    }

    /// Keeps the health and operator state of `old` (a reload): overrides always, and
    /// keepalive verdicts of keepalives with the same name.
    pub fn inherit(&mut self, old: &SiteState) {
        self.forced = old.forced;
        self.up = old.up;
        self.since = old.since;
        self.recovered_at = old.recovered_at;
        self.held = old.held;
        self.ever_up = old.ever_up;
        self.health_since = old.health_since;
        if let (Some(new), Some(old)) = (&mut self.voting, &old.voting) {
            new.peers = old.peers.clone();
            new.agreed = old.agreed;
            new.tally = old.tally.clone();
        }
        for k in &mut self.keepalives {
            if let Some(o) = old.keepalives.iter().find(|o| o.name == k.name) {
                k.up = o.up;
                k.last_error = o.last_error.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::{KeepaliveConfig, ProbeConfig, ProbeKind};

    fn site(n: usize, min_up: MinUp) -> SiteState {
        SiteState::new(&SiteConfig {
            name: "dc1".into(),
            min_up,
            keepalives: (0..n)
                .map(|i| KeepaliveConfig {
                    name: format!("tcp 127.0.0.1:{}", 2525 + i),
                    address: format!("127.0.0.1:{}", 2525 + i).parse().unwrap(),
                    probe: ProbeConfig::new(ProbeKind::Tcp),
                })
                .collect(),
        })
    }

    #[test]
    fn min_up_count_and_percent_round_up() {
        assert_eq!(needed(MinUp::Count(2), 3), 2);
        assert_eq!(needed(MinUp::Percent(50), 3), 2);
        assert_eq!(needed(MinUp::Percent(34), 3), 2);
        assert_eq!(needed(MinUp::Percent(33), 3), 1);
        assert_eq!(needed(MinUp::Percent(100), 4), 4);
        assert_eq!(needed(MinUp::Percent(0), 4), 0);
    }

    #[test]
    fn aggregates_keepalives_against_min_up() {
        let now = Instant::now();
        let mut s = site(3, MinUp::Percent(50));
        assert!(!s.reported());
        s.observe(0, true, true, None, now);
        s.observe(1, true, true, None, now);
        s.observe(2, false, false, Some("connection refused".into()), now);
        assert!(s.reported());
        let c = s.settle();
        assert!(c.up, "2 of 3 pass, 50 % needs 2");
        assert_eq!(s.passing(), 2);
        let c = s
            .observe(1, false, false, Some("connection refused".into()), now)
            .expect("goes down");
        assert!(!c.up);
        assert!(
            c.message.starts_with("down: 1/3 keepalives passing"),
            "{}",
            c.message
        );
        assert!(c.message.contains("tcp 127.0.0.1:2527: connection refused"));
        assert!(s.held, "going down sets the manual failback hold");
    }

    #[test]
    fn detection_time_runs_from_first_failure() {
        let t0 = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        s.observe(0, true, true, None, t0);
        s.settle();
        assert_eq!(
            s.observe(
                0,
                false,
                true,
                Some("connection refused".into()),
                t0 + Duration::from_millis(100)
            ),
            None,
            "fall not reached"
        );
        let c = s
            .observe(
                0,
                false,
                false,
                Some("connection refused".into()),
                t0 + Duration::from_millis(2200),
            )
            .expect("down");
        assert_eq!(c.detection, Some(Duration::from_millis(2100)));
        assert_eq!(
            c.message,
            "down: 0/1 keepalives passing (tcp 127.0.0.1:2525: connection refused); detected in 2.1s"
        );
        let c = s
            .observe(0, true, true, None, t0 + Duration::from_secs(5))
            .expect("up");
        assert!(c.up);
        assert_eq!(s.recovered_at, Some(t0 + Duration::from_secs(5)));
    }

    /// A site whose initial state was down (no verdict or no quorum yet at the first
    /// round) is not recovering when it first comes up: no failback wait, so two
    /// sites coming up a moment apart at a cold start do not make answers alternate.
    /// Once it has been up, a return after a failure waits as before.
    #[test]
    fn a_first_up_after_an_initial_down_has_no_failback_wait() {
        let t0 = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        s.observe(0, false, false, Some("refused".into()), t0);
        assert!(!s.settle().up);
        let c = s
            .observe(0, true, true, None, t0 + Duration::from_secs(1))
            .expect("up");
        assert!(c.up);
        assert_eq!(
            s.recovered_at, None,
            "never up before: nothing to fail back from"
        );
        s.observe(
            0,
            false,
            false,
            Some("refused".into()),
            t0 + Duration::from_secs(2),
        )
        .expect("down");
        s.observe(0, true, true, None, t0 + Duration::from_secs(3))
            .expect("up again");
        assert_eq!(s.recovered_at, Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn a_transient_failure_resets_the_detection_timer() {
        let t0 = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        s.observe(0, true, true, None, t0);
        s.settle();
        s.observe(0, false, true, Some("x".into()), t0);
        s.observe(0, true, true, None, t0 + Duration::from_secs(1));
        assert_eq!(s.first_fail_at, None);
    }

    #[test]
    fn overrides_win_and_auto_releases_holds() {
        let now = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        s.observe(0, true, true, None, now);
        s.settle();
        let (note, c) = s.set_override(SiteOverride::Down, now);
        assert_eq!(note, "override down set by operator");
        let c = c.expect("down");
        assert_eq!(c.message, "down: operator override down");
        assert_eq!(c.detection, None);
        assert!(!s.view().up && s.view().health_up);
        // Health stays up; the override holds.
        assert_eq!(s.observe(0, true, true, None, now), None);
        let (note, c) = s.set_override(SiteOverride::Auto, now);
        assert!(note.contains("override released (was down)"), "{note}");
        assert!(c.expect("up").up);
        let v = s.view();
        assert!(v.up && !v.held && v.recovered_at.is_none());
        // Forced up while health is down.
        s.observe(0, false, false, Some("refused".into()), now);
        assert!(!s.view().up);
        let (_, c) = s.set_override(SiteOverride::Up, now);
        assert!(c.expect("up").up);
        assert!(s.view().up && !s.view().health_up);
    }

    #[test]
    fn inherit_keeps_overrides_and_verdicts() {
        let now = Instant::now();
        let mut old = site(2, MinUp::Count(1));
        old.observe(0, true, true, None, now);
        old.observe(1, false, false, Some("refused".into()), now);
        old.settle();
        old.set_override(SiteOverride::Down, now);
        let mut new = site(1, MinUp::Count(1));
        new.inherit(&old);
        assert_eq!(new.forced, Some(SiteOverride::Down));
        assert_eq!(new.up, Some(false));
        assert_eq!(new.keepalives[0].up, Some(true));
    }

    fn voting(s: &mut SiteState, quorum: usize, peers: Vec<PeerView>) {
        s.voting = Some(Voting {
            me: "dc2".into(),
            rule: Rule {
                vantage: 3,
                quorum,
                stale_after: Duration::from_secs(3),
            },
            peers,
            agreed: None,
            tally: None,
        });
    }

    fn peer(voter: &str, up: bool, heard_at: Instant) -> PeerView {
        PeerView {
            voter: voter.into(),
            up,
            heard_at,
            detail: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outvoted_down_view_keeps_the_site_up_until_the_peers_go_stale() {
        let t0 = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        voting(
            &mut s,
            2,
            vec![peer("dc1", true, t0), peer("wit", true, t0)],
        );
        s.observe(0, true, true, None, t0);
        assert!(s.settle().up);
        // This node's own keepalive fails: one down vote against two up.
        let c = s.observe(0, false, false, Some("connection refused".into()), t0);
        assert_eq!(c, None, "outvoted");
        assert!(s.view().up && !s.view().health_up);
        // No contact for stale_after: their up votes stop counting; no quorum either
        // way, so the site stays up (fail-static on the last agreed state).
        tokio::time::advance(Duration::from_millis(3001)).await;
        assert_eq!(s.reevaluate(Instant::now()), None);
        assert!(s.fail_static() && s.view().up);
        // The witness is heard again and now sees the site down too: 2 of 3 agree.
        let now = Instant::now();
        s.voting.as_mut().unwrap().peers[1] = peer("wit", false, now);
        let c = s.reevaluate(now).expect("quorum down");
        assert!(!c.up);
        assert!(c.message.contains("agreed down"), "{}", c.message);
        assert!(!s.fail_static());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_view_votes_up_to_stale_after_and_not_a_moment_longer() {
        let t0 = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        voting(&mut s, 2, vec![peer("wit", false, t0)]);
        s.observe(0, false, false, Some("refused".into()), t0);
        assert!(!s.settle().up, "own down + witness down = 2 of 3");
        s.observe(0, true, true, None, t0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(s.reevaluate(Instant::now()), None);
        let t = s.voting.as_ref().unwrap().tally.clone().unwrap();
        assert_eq!(
            t.down,
            vec!["wit".to_string()],
            "exactly stale_after still votes"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        s.reevaluate(Instant::now());
        let t = s.voting.as_ref().unwrap().tally.clone().unwrap();
        assert_eq!(t.stale, vec!["wit".to_string()]);
        assert!(t.fail_static() && !s.view().up, "keeps the agreed down");
    }

    #[test]
    fn quorum_one_is_todays_per_node_rule() {
        let now = Instant::now();
        let mut s = site(1, MinUp::Count(1));
        voting(
            &mut s,
            1,
            vec![peer("dc1", true, now), peer("wit", true, now)],
        );
        s.observe(0, true, true, None, now);
        s.settle();
        let c = s.observe(0, false, false, Some("refused".into()), now);
        assert!(!c.expect("own view decides").up);
    }
}
