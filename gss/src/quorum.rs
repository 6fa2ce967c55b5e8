//! The quorum rule, pure: from this node's own view of a site and its peers' views
//! (each with its age), decide the site's health the vantage points agree on, or
//! say that no quorum is reachable and the last agreed state holds (fail-static).
//!
//! A site is down when at least `quorum` fresh votes say down, up when at least
//! `quorum` say up; a view older than `stale_after` does not vote. With the default
//! quorum (a majority of every configured vantage point) the two cannot both hold,
//! so two sides of a cut cannot decide differently. `quorum = 1` is each node
//! deciding alone: its own view, whatever the peers say (availability first).

use std::time::Duration;

/// How votes count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Vantage points configured, this node included.
    pub vantage: usize,
    /// Votes needed to decide (1 = decide alone).
    pub quorum: usize,
    /// Views older than this do not vote.
    pub stale_after: Duration,
}

impl Rule {
    /// The default quorum: a strict majority of `vantage`.
    pub fn majority(vantage: usize) -> usize {
        vantage / 2 + 1
    }
}

/// A peer's published view of one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    /// The vantage point (member id).
    pub voter: String,
    /// Its keepalives' verdict on the site.
    pub up: bool,
    /// Time since this node last heard from the voter.
    pub age: Duration,
    /// The voter's keepalives passing / configured, and its reason text.
    pub detail: String,
}

impl Vote {
    /// Whether the vote counts under `rule`.
    pub fn fresh(&self, rule: &Rule) -> bool {
        self.age <= rule.stale_after
    }
}

/// What the votes decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A quorum agrees on this state.
    Agreed(bool),
    /// No quorum either way: keep this state (the last agreed one, else this node's
    /// own view when nothing was ever agreed).
    FailStatic(bool),
}

/// The count behind a decision, for `explain`, `show sites` and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Fresh votes for up / down, this node's own included.
    pub up: Vec<String>,
    /// Fresh votes for down.
    pub down: Vec<String>,
    /// Voters whose views are older than `stale_after`.
    pub stale: Vec<String>,
    /// Vantage points with no view at all.
    pub missing: usize,
    /// The rule applied.
    pub rule: Rule,
    /// The outcome.
    pub decision: Decision,
}

impl Tally {
    /// The state the site takes under this tally.
    pub fn up(&self) -> bool {
        match self.decision {
            Decision::Agreed(b) | Decision::FailStatic(b) => b,
        }
    }

    /// No quorum was reachable.
    pub fn fail_static(&self) -> bool {
        matches!(self.decision, Decision::FailStatic(_))
    }

    /// One line: `down 2 (dc2-gss, wit) up 1 (dc1-gss) stale 0 missing 0 of 3, quorum 2: agreed down`.
    pub fn text(&self) -> String {
        let names = |v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!(" ({})", v.join(", "))
            }
        };
        let verdict = match self.decision {
            Decision::Agreed(b) if self.rule.quorum <= 1 => {
                format!("{} (quorum 1: this node decides alone)", word(b))
            }
            Decision::Agreed(b) => format!("agreed {}", word(b)),
            Decision::FailStatic(b) => format!(
                "no quorum, fail-static: keeping {} (needs {} matching votes)",
                word(b),
                self.rule.quorum
            ),
        };
        format!(
            "votes: down {}{} up {}{} stale {}{} missing {} of {} vantage points, quorum {}: {verdict}",
            self.down.len(),
            names(&self.down),
            self.up.len(),
            names(&self.up),
            self.stale.len(),
            names(&self.stale),
            self.missing,
            self.rule.vantage,
            self.rule.quorum,
        )
    }
}

fn word(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

/// Counts `own` (this node's view, always fresh) and `peers` under `rule`. `last`
/// is the last state a quorum agreed on, kept when no quorum is reachable.
pub fn decide(rule: &Rule, me: &str, own: bool, peers: &[Vote], last: Option<bool>) -> Tally {
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut stale = Vec::new();
    if own {
        up.push(me.to_string());
    } else {
        down.push(me.to_string());
    }
    for v in peers {
        if !v.fresh(rule) {
            stale.push(v.voter.clone());
        } else if v.up {
            up.push(v.voter.clone());
        } else {
            down.push(v.voter.clone());
        }
    }
    let heard = 1 + peers.len();
    let missing = rule.vantage.saturating_sub(heard);
    let decision = if rule.quorum <= 1 {
        Decision::Agreed(own)
    } else if down.len() >= rule.quorum {
        Decision::Agreed(false)
    } else if up.len() >= rule.quorum {
        Decision::Agreed(true)
    } else {
        Decision::FailStatic(last.unwrap_or(own))
    };
    Tally {
        up,
        down,
        stale,
        missing,
        rule: *rule,
        decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(5);

    fn rule(vantage: usize, quorum: usize) -> Rule {
        Rule {
            vantage,
            quorum,
            stale_after: STALE,
        }
    }

    fn vote(voter: &str, up: bool, age_ms: u64) -> Vote {
        Vote {
            voter: voter.into(),
            up,
            age: Duration::from_millis(age_ms),
            detail: String::new(),
        }
    }

    use Decision::{Agreed, FailStatic};

    /// (case, vantage, quorum, own, peers (voter, up, age ms), last agreed, decision)
    #[allow(clippy::type_complexity)]
    const CASES: &[(
        &str,
        usize,
        usize,
        bool,
        &[(&str, bool, u64)],
        Option<bool>,
        Decision,
    )] = &[
        (
            "three agree up",
            3,
            2,
            true,
            &[("b", true, 0), ("w", true, 0)],
            None,
            Agreed(true),
        ),
        (
            "three agree down",
            3,
            2,
            false,
            &[("b", false, 0), ("w", false, 0)],
            Some(true),
            Agreed(false),
        ),
        (
            "cut: dc2 alone sees dc1 down, outvoted",
            3,
            2,
            false,
            &[("a", true, 100), ("w", true, 100)],
            Some(true),
            Agreed(true),
        ),
        (
            "dc1 stale, witness up, own down: fail-static up",
            3,
            2,
            false,
            &[("a", true, 6_000), ("w", true, 100)],
            Some(true),
            FailStatic(true),
        ),
        (
            "dc1 dies: dc2 and witness see it down",
            3,
            2,
            false,
            &[("a", true, 9_000), ("w", false, 100)],
            Some(true),
            Agreed(false),
        ),
        (
            "own down, one peer down is enough for 2 of 3",
            3,
            2,
            false,
            &[("w", false, 0)],
            Some(true),
            Agreed(false),
        ),
        (
            "own down, nobody else heard: fail-static up",
            3,
            2,
            false,
            &[],
            Some(true),
            FailStatic(true),
        ),
        (
            "own down, both peers stale: fail-static up",
            3,
            2,
            false,
            &[("a", false, 5_001), ("w", false, 7_000)],
            Some(true),
            FailStatic(true),
        ),
        (
            "exactly stale_after still votes",
            3,
            2,
            false,
            &[("w", false, 5_000)],
            Some(true),
            Agreed(false),
        ),
        (
            "two nodes, cut: fail-static on last agreed up",
            2,
            2,
            false,
            &[("a", true, 9_000)],
            Some(true),
            FailStatic(true),
        ),
        (
            "two nodes, cut, last agreed down stays down",
            2,
            2,
            true,
            &[("a", false, 9_000)],
            Some(false),
            FailStatic(false),
        ),
        (
            "two nodes agree down",
            2,
            2,
            false,
            &[("a", false, 0)],
            Some(true),
            Agreed(false),
        ),
        (
            "two nodes disagree: fail-static",
            2,
            2,
            false,
            &[("a", true, 0)],
            Some(true),
            FailStatic(true),
        ),
        (
            "nothing agreed yet: own view",
            3,
            2,
            false,
            &[],
            None,
            FailStatic(false),
        ),
        (
            "quorum 1: own view wins over peers",
            3,
            1,
            false,
            &[("a", true, 0), ("w", true, 0)],
            Some(true),
            Agreed(false),
        ),
        (
            "quorum 1: own up despite peers down",
            2,
            1,
            true,
            &[("a", false, 0)],
            Some(false),
            Agreed(true),
        ),
        (
            "single vantage point, default majority 1",
            1,
            1,
            false,
            &[],
            Some(true),
            Agreed(false),
        ),
        (
            "five points, three down",
            5,
            3,
            true,
            &[
                ("b", false, 0),
                ("c", false, 0),
                ("d", false, 0),
                ("e", true, 0),
            ],
            Some(true),
            Agreed(false),
        ),
        (
            "five points, two down two stale",
            5,
            3,
            false,
            &[
                ("b", false, 0),
                ("c", true, 9_000),
                ("d", true, 9_000),
                ("e", true, 0),
            ],
            Some(true),
            FailStatic(true),
        ),
        (
            "unanimous 3 of 3, one stale",
            3,
            3,
            false,
            &[("b", false, 0), ("c", false, 9_000)],
            Some(true),
            FailStatic(true),
        ),
    ];

    #[test]
    fn table() {
        for (case, vantage, quorum, own, peers, last, want) in CASES {
            let peers: Vec<Vote> = peers.iter().map(|(v, u, a)| vote(v, *u, *a)).collect();
            let t = decide(&rule(*vantage, *quorum), "me", *own, &peers, *last);
            assert_eq!(t.decision, *want, "{case}: {}", t.text());
            assert_eq!(
                t.up.len() + t.down.len() + t.stale.len() + t.missing,
                (*vantage).max(1 + peers.len()),
                "{case}: every vantage point is counted once"
            );
        }
    }

    #[test]
    fn majorities_never_split() {
        // With the default quorum no assignment of votes lets both sides reach it.
        for vantage in 1..=7usize {
            let q = Rule::majority(vantage);
            for down in 0..=vantage {
                let up = vantage - down;
                assert!(!(down >= q && up >= q), "vantage {vantage} down {down}");
            }
        }
        assert_eq!(Rule::majority(2), 2);
        assert_eq!(Rule::majority(3), 2);
        assert_eq!(Rule::majority(4), 3);
    }

    #[test]
    fn text_states_the_arithmetic_and_fail_static() {
        let t = decide(
            &rule(3, 2),
            "dc2",
            false,
            &[vote("dc1", true, 200), vote("wit", true, 300)],
            Some(true),
        );
        assert_eq!(
            t.text(),
            "votes: down 1 (dc2) up 2 (dc1, wit) stale 0 missing 0 of 3 vantage points, quorum 2: agreed up"
        );
        let t = decide(
            &rule(2, 2),
            "dc2",
            false,
            &[vote("dc1", true, 9_000)],
            Some(true),
        );
        assert!(t.fail_static());
        assert_eq!(
            t.text(),
            "votes: down 1 (dc2) up 0 stale 1 (dc1) missing 0 of 2 vantage points, quorum 2: no quorum, fail-static: keeping up (needs 2 matching votes)"
        );
    }
}
