//! A hybrid logical clock: wall-clock milliseconds plus a logical counter, with the
//! node id as the last tie-break, so every timestamp a fleet issues is unique and
//! totally ordered, stays close to real time (an operator can read it), and never
//! goes backwards on one node even when its wall clock steps back (NTP, a VM
//! restored from a snapshot). Pure: the caller passes the wall clock in, so the
//! rules are tested without a clock.

use serde::{Deserialize, Serialize};

/// One timestamp. Ordered by `ms`, then `logical`, then `node`: two nodes that stamp
/// in the same millisecond with the same counter still order the same way
/// everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Physical part: unix milliseconds (the largest this node has seen).
    pub ms: u64,
    /// Logical part: orders events within one `ms`.
    pub logical: u32,
    /// The node that issued the stamp (the intent's origin).
    pub node: String,
}

/// The clock of one node: the last `(ms, logical)` it issued or observed.
#[derive(Debug, Clone)]
pub struct Hlc {
    node: String,
    ms: u64,
    logical: u32,
}

impl Hlc {
    /// A clock for `node` that has seen nothing yet.
    pub fn new(node: impl Into<String>) -> Self {
        Hlc {
            node: node.into(),
            ms: 0,
            logical: 0,
        }
    }

    /// This clock's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A new timestamp, later than every one this clock issued or observed, given
    /// the wall clock `wall_ms`. A wall clock behind the last stamp (it stepped back)
    /// keeps the last physical part and counts up the logical one; a counter at its
    /// limit moves the physical part on by one millisecond instead of wrapping.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        if wall_ms > self.ms {
            self.ms = wall_ms;
            self.logical = 0;
        } else if self.logical == u32::MAX {
            self.ms = self.ms.saturating_add(1);
            self.logical = 0;
        } else {
            self.logical += 1;
        }
        Timestamp {
            ms: self.ms,
            logical: self.logical,
            node: self.node.clone(),
        }
    }

    /// Takes in a timestamp seen elsewhere (a peer's intent, the state file at
    /// start), so that the next [`Hlc::now`] is later than it.
    pub fn observe(&mut self, seen: &Timestamp) {
        if (seen.ms, seen.logical) > (self.ms, self.logical) {
            self.ms = seen.ms;
            self.logical = seen.logical;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_wall_clock_when_it_moves_forward() {
        let mut c = Hlc::new("a");
        let t1 = c.now(1000);
        let t2 = c.now(2000);
        assert_eq!((t1.ms, t1.logical), (1000, 0));
        assert_eq!((t2.ms, t2.logical), (2000, 0));
        assert!(t2 > t1);
    }

    #[test]
    fn same_millisecond_counts_up() {
        let mut c = Hlc::new("a");
        let t1 = c.now(1000);
        let t2 = c.now(1000);
        assert_eq!((t2.ms, t2.logical), (1000, 1));
        assert!(t2 > t1);
    }

    #[test]
    fn monotonic_when_the_wall_clock_steps_back() {
        let mut c = Hlc::new("a");
        let t1 = c.now(5000);
        let t2 = c.now(1000);
        let t3 = c.now(4999);
        assert!(t2 > t1 && t3 > t2, "{t1:?} {t2:?} {t3:?}");
        assert_eq!(t3.ms, 5000, "the physical part never goes back");
        // Once the wall clock passes the old stamps it is followed again.
        let t4 = c.now(6000);
        assert_eq!((t4.ms, t4.logical), (6000, 0));
    }

    #[test]
    fn observed_stamps_are_overtaken() {
        let mut c = Hlc::new("a");
        let peer = Timestamp {
            ms: 9000,
            logical: 7,
            node: "b".into(),
        };
        c.observe(&peer);
        let t = c.now(100);
        assert!(t > peer, "{t:?} after {peer:?}");
        assert_eq!((t.ms, t.logical), (9000, 8));
        // An older observation changes nothing.
        c.observe(&Timestamp {
            ms: 1,
            logical: 0,
            node: "c".into(),
        });
        assert!(c.now(100) > t);
    }

    #[test]
    fn counter_at_its_limit_moves_the_millisecond_on() {
        let mut c = Hlc::new("a");
        c.observe(&Timestamp {
            ms: 10,
            logical: u32::MAX,
            node: "b".into(),
        });
        let t = c.now(0);
        assert_eq!((t.ms, t.logical), (11, 0));
    }

    #[test]
    fn node_breaks_ties() {
        let mut a = Hlc::new("a");
        let mut b = Hlc::new("b");
        let (ta, tb) = (a.now(1000), b.now(1000));
        assert!(tb > ta);
        assert_ne!(ta, tb);
    }
}
