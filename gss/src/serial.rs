//! The SOA serial, derived from the config and the answer state, never from a
//! clock, kept across restarts in `state_dir` and agreed across a cluster.
//!
//! The rule ([`next`]): a gss serves the config's `soa.serial` base (1 by default)
//! until its answers first change; every change of the answers (the signature of
//! every name's selection and of the config parts that show in answers) moves the
//! serial past every serial this node and its cluster peers serve, unless a peer
//! already serves these very answers under a newer serial, which is then taken; a
//! re-render with the same answers keeps the serial, except that a peer serving the
//! same answers under a newer serial is followed; a base that is newer (RFC 1982)
//! than the serial so reached replaces it, so an operator can move every node to a
//! chosen serial with one config change. With `state_dir` the (serial, signature)
//! served last is saved ([`SerialFile`]) and is where a restart starts.
//!
//! So the serial always increases when answers change, a restart changes nothing,
//! and gss nodes in one cluster that serve the same answers converge on the same
//! serial within a gossip round even when their histories differ (one saw a flap the
//! other missed, one restarted without its state): each publishes `(serial,
//! signature)` and the newest serial for a signature wins everywhere. Without a
//! cluster, nodes that saw different histories differ by the extra changes until an
//! operator raises `soa.serial` above both. The signature is a std `DefaultHasher`
//! digest, stable for one build, so nodes running different builds (mid-upgrade)
//! only stop following each other's serial for the same answers; each still only
//! increases.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The serial served and the signature of the answers it was served for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The SOA serial.
    pub serial: u32,
    /// The answers' signature (`Zone::signature`).
    pub signature: u64,
}

/// Whether `a` is newer than `b` in RFC 1982 serial arithmetic.
pub fn newer(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// The newer of two serials (RFC 1982).
fn newest(a: u32, b: u32) -> u32 {
    if newer(b, a) {
        b
    } else {
        a
    }
}

/// The serial for answers with `signature`, given what this node served before (if
/// anything), what its cluster peers serve, and the config's base. See the module
/// doc for the rule.
pub fn next(prev: Option<Served>, signature: u64, base: u32, peers: &[Served]) -> u32 {
    let same = peers
        .iter()
        .filter(|q| q.signature == signature)
        .map(|q| q.serial)
        .reduce(newest);
    let mut serial = match prev {
        Some(p) if p.signature == signature => p.serial,
        // Answers changed: a peer that got here first names the serial; otherwise
        // one past everything served anywhere, so no node's next change can land
        // on a serial another node already used for other answers.
        Some(p) => match same.filter(|&s| newer(s, p.serial)) {
            Some(s) => s,
            None => peers
                .iter()
                .map(|q| q.serial)
                .fold(p.serial, newest)
                .wrapping_add(1),
        },
        None => base,
    };
    if let Some(s) = same {
        serial = newest(serial, s);
    }
    newest(serial, base)
}

/// The file's name inside `state_dir`.
pub const FILE_NAME: &str = "gss-serial.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: u32,
    serial: u32,
    /// Hex, so the file reads the same in tools whose numbers are doubles.
    signature: String,
}

/// Where the last served serial is kept: `state_dir/gss-serial.json`, or nowhere.
#[derive(Debug, Clone, Default)]
pub struct SerialFile {
    dir: Option<PathBuf>,
}

impl SerialFile {
    /// A file in `dir`, or none (no `state_dir`: every start is a cold start).
    pub fn new(dir: Option<&Path>) -> SerialFile {
        SerialFile {
            dir: dir.map(Path::to_path_buf),
        }
    }

    /// The saved serial; a missing file is `None`, an unusable one too (with a
    /// warning: the base rule then applies, never a failed start).
    pub fn load(&self) -> Option<Served> {
        let path = self.dir.as_ref()?.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), "saved SOA serial not read: {e}; starting from soa.serial");
                return None;
            }
        };
        match parse(&bytes) {
            Some(s) => Some(s),
            None => {
                tracing::warn!(file = %path.display(), "saved SOA serial is unusable; starting from soa.serial");
                None
            }
        }
    }

    /// Saves `served` (atomically, durably). A failure is logged, not returned: it
    /// costs at most one extra increment after a restart.
    pub fn save(&self, served: Served) {
        let Some(dir) = &self.dir else { return };
        let doc = Doc {
            version: 1,
            serial: served.serial,
            signature: format!("{:016x}", served.signature),
        };
        let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = shared::intent::file::write_atomic(dir, FILE_NAME, &bytes) {
            tracing::warn!(dir = %dir.display(), "SOA serial not saved: {e}");
        }
    }
}

fn parse(bytes: &[u8]) -> Option<Served> {
    let doc: Doc = serde_json::from_slice(bytes).ok()?;
    if doc.version != 1 {
        return None;
    }
    Some(Served {
        serial: doc.serial,
        signature: u64::from_str_radix(&doc.signature, 16).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(serial: u32, signature: u64) -> Option<Served> {
        Some(Served { serial, signature })
    }

    #[test]
    fn base_then_one_per_change() {
        assert_eq!(next(None, 7, 1, &[]), 1);
        assert_eq!(
            next(served(1, 7), 7, 1, &[]),
            1,
            "same answers, same serial"
        );
        assert_eq!(next(served(1, 7), 8, 1, &[]), 2);
        assert_eq!(
            next(served(2, 8), 7, 1, &[]),
            3,
            "back to old answers still increases"
        );
    }

    #[test]
    fn a_newer_base_wins_an_older_one_does_not() {
        assert_eq!(next(served(5, 7), 7, 2026112900, &[]), 2026112900);
        assert_eq!(next(served(2026112905, 7), 8, 2026112900, &[]), 2026112906);
        assert_eq!(next(None, 7, 0, &[]), 0);
    }

    #[test]
    fn increases_across_the_wrap() {
        assert_eq!(next(served(u32::MAX, 1), 2, 0, &[]), 0);
        assert!(newer(0, u32::MAX));
        // A base of 1 is newer than a serial that wrapped to 0.
        assert_eq!(next(served(u32::MAX, 1), 2, 1, &[]), 1);
        // A base exactly half the serial space away is not newer (RFC 1982 leaves
        // it undefined; staying put is the safe reading).
        assert_eq!(next(served(0, 1), 2, (1u32 << 31) + 1, &[]), 1);
    }

    fn at(serial: u32, signature: u64) -> Served {
        Served { serial, signature }
    }

    #[test]
    fn a_node_that_missed_a_flap_follows_the_peer_serving_the_same_answers() {
        // Both served 5 for answers 7; the peer saw 7 -> 8 -> 7 and is at 7.
        assert_eq!(next(served(5, 7), 7, 1, &[at(7, 7)]), 7);
        // The peer's serial for other answers is not followed while answers agree.
        assert_eq!(next(served(5, 7), 7, 1, &[at(9, 8)]), 5);
        // A cold start (no state) with the same answers as the cluster joins it.
        assert_eq!(next(None, 7, 1, &[at(7, 7), at(6, 7)]), 7);
        assert_eq!(next(None, 7, 1, &[at(9, 8)]), 1);
    }

    #[test]
    fn a_change_moves_past_every_serial_in_the_cluster_or_joins_the_first_mover() {
        // Nobody serves the new answers yet: one past the newest anywhere.
        assert_eq!(next(served(5, 7), 8, 1, &[at(9, 3), at(6, 7)]), 10);
        // A peer already moved to these answers at 6: take its serial, so both end
        // on 6 instead of 6 and 7.
        assert_eq!(next(served(5, 7), 8, 1, &[at(6, 8)]), 6);
        // ...but never go back: a peer's older serial for these answers is passed.
        assert_eq!(next(served(5, 7), 8, 1, &[at(4, 8)]), 6);
        // Returning to answers a peer served long ago still increases.
        assert_eq!(next(served(7, 9), 7, 1, &[at(5, 7)]), 8);
    }

    #[test]
    fn every_rule_only_moves_forward() {
        let peers = [at(3, 1), at(12, 2), at(u32::MAX, 3), at(0, 1)];
        for prev in 0..16u32 {
            for sig in 0..4u64 {
                for psig in 0..4u64 {
                    let p = served(prev, psig);
                    let n = next(p, sig, 1, &peers);
                    assert!(n == prev || newer(n, prev), "{prev}/{psig} -> {sig}: {n}");
                    if sig != psig {
                        assert!(newer(n, prev), "a change must increase: {prev} -> {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn file_round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("portico-serial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = SerialFile::new(Some(&dir));
        assert_eq!(f.load(), None);
        let s = Served {
            serial: 42,
            signature: u64::MAX - 3,
        };
        f.save(s);
        assert_eq!(f.load(), Some(s));
        for bad in [
            &b"{\"version\":1,"[..],
            b"{\"version\":2,\"serial\":1,\"signature\":\"0\"}",
            b"{\"version\":1,\"serial\":1,\"signature\":\"zz\"}",
        ] {
            std::fs::write(dir.join(FILE_NAME), bad).unwrap();
            assert_eq!(f.load(), None);
        }
        assert_eq!(SerialFile::new(None).load(), None);
        SerialFile::new(None).save(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
