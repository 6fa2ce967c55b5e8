//! Backend selection algorithms, free of I/O and of the pool's runtime state so they
//! can be tested exhaustively: smooth weighted round robin (nginx's algorithm),
//! least connections relative to weight (ties broken round robin), and weighted
//! rendezvous hashing of the client address for `source_hash`.
//!
//! Every function takes the *candidate set*: backends already known to be in rotation
//! and not yet tried for this connection. Each candidate carries its index in the pool
//! (the identity returned), its weight, its active connection count and a stable key
//! derived from its name (so hashing does not depend on pool order).

/// One backend eligible for this pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index of the backend in its pool; what the pick returns.
    pub index: usize,
    /// Current weight (≥ 1; a 0 is treated as 1).
    pub weight: u32,
    /// Active connections right now (least_conn).
    pub active: u64,
    /// Stable identity for hashing: [`backend_key`] of the backend's name.
    pub key: u64,
}

/// Smooth weighted round robin state: one running "current weight" per pool index.
///
/// Each pick adds every candidate's weight to its current weight, picks the largest,
/// and subtracts the total from the winner. With weights 5,1,1 this yields
/// `a a b a c a a` rather than `a a a a a b c`: heavy backends are interleaved.
#[derive(Debug, Clone, Default)]
pub struct SmoothWrr {
    current: Vec<i64>,
}

impl SmoothWrr {
    /// State for a pool of `n` backends.
    pub fn new(n: usize) -> Self {
        SmoothWrr {
            current: vec![0; n],
        }
    }

    /// Picks one of `candidates`; `None` when there are none.
    pub fn pick(&mut self, candidates: &[Candidate]) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for c in candidates {
            if c.index >= self.current.len() {
                self.current.resize(c.index + 1, 0);
            }
            let w = i64::from(c.weight.max(1));
            let cur = &mut self.current[c.index];
            *cur += w;
            total += w;
            if best.is_none_or(|(_, b)| *cur > b) {
                best = Some((c.index, *cur));
            }
        }
        let (index, _) = best?;
        self.current[index] -= total;
        Some(index)
    }
}

/// Least connections relative to weight: the candidate minimising `active / weight`.
/// Ties are broken round robin using `turn` (a counter the caller advances per pick),
/// so an idle pool still spreads new connections.
pub fn least_conn(candidates: &[Candidate], turn: usize) -> Option<usize> {
    let load_cmp = |a: &Candidate, b: &Candidate| {
        // a.active / a.weight vs b.active / b.weight without division.
        let lhs = u128::from(a.active) * u128::from(b.weight.max(1));
        let rhs = u128::from(b.active) * u128::from(a.weight.max(1));
        lhs.cmp(&rhs)
    };
    let best = candidates.iter().min_by(|a, b| load_cmp(a, b))?;
    let tied = candidates
        .iter()
        .filter(|c| load_cmp(c, best) == std::cmp::Ordering::Equal)
        .count();
    let nth = turn % tied.max(1);
    candidates
        .iter()
        .filter(|c| load_cmp(c, best) == std::cmp::Ordering::Equal)
        .nth(nth)
        .map(|c| c.index)
}

/// Weighted rendezvous (highest random weight) hashing: every (client, backend) pair
/// gets a score `weight / -ln(u)` with `u` uniform in (0,1) from a hash of both; the
/// highest score wins. Removing one of N backends moves only the clients that were on
/// it (≈1/N), adding one takes ≈1/(N+1) from the others, and a tried-and-failed
/// backend simply yields the client's second choice.
pub fn source_hash(candidates: &[Candidate], client_key: u64) -> Option<usize> {
    candidates
        .iter()
        .map(|c| (c.index, hrw_score(client_key, c.key, c.weight)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

fn hrw_score(client: u64, backend: u64, weight: u32) -> f64 {
    let h = mix64(client ^ mix64(backend));
    // 53 random bits mapped into the open interval (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

/// splitmix64's finaliser: a fast, well-distributed 64-bit mix.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed: stable across runs and platforms (unlike std's
/// `DefaultHasher`, which is only stable within a process).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The hashing key of a backend, from its name (so renumbering a pool moves no one).
pub fn backend_key(name: &str) -> u64 {
    stable_hash(name.as_bytes())
}

/// The hashing key of a client: its IP address only (the port changes per connection).
pub fn client_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => stable_hash(&v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets()),
            None => stable_hash(&v6.octets()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                index: i,
                weight: *w,
                active: 0,
                key: backend_key(&format!("b{i}")),
            })
            .collect()
    }

    #[test]
    fn smooth_wrr_interleaves_like_nginx() {
        let c = cands(&[5, 1, 1]);
        let mut s = SmoothWrr::new(3);
        let seq: Vec<usize> = (0..7).filter_map(|_| s.pick(&c)).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn smooth_wrr_honours_weights_within_one_percent() {
        // Weights 1:2:3 over 6000 picks: exactly 1000/2000/3000 for SWRR (it is
        // deterministic and exact per full cycle); allow 1 % anyway.
        let c = cands(&[1, 2, 3]);
        let mut s = SmoothWrr::new(3);
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            counts[s.pick(&c).expect("pick")] += 1;
        }
        for (i, want) in [1000usize, 2000, 3000].iter().enumerate() {
            let got = counts[i];
            assert!(
                got.abs_diff(*want) <= want / 100,
                "backend {i}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn smooth_wrr_skips_excluded_and_empty() {
        let mut s = SmoothWrr::new(3);
        assert_eq!(s.pick(&[]), None);
        let c: Vec<_> = cands(&[1, 1, 1])
            .into_iter()
            .filter(|c| c.index != 1)
            .collect();
        for _ in 0..10 {
            assert_ne!(s.pick(&c), Some(1));
        }
    }

    #[test]
    fn least_conn_prefers_lowest_load_per_weight() {
        let mut c = cands(&[1, 2, 1]);
        c[0].active = 3;
        c[1].active = 4; // 2 per weight unit
        c[2].active = 1;
        assert_eq!(least_conn(&c, 0), Some(2));
        c[2].active = 5;
        assert_eq!(least_conn(&c, 0), Some(1));
    }

    #[test]
    fn least_conn_breaks_ties_round_robin() {
        let c = cands(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).filter_map(|t| least_conn(&c, t)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(least_conn(&[], 3), None);
    }

    fn client(i: u32) -> u64 {
        client_key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
    }

    #[test]
    fn source_hash_is_sticky_and_balanced() {
        let c = cands(&[1, 1, 1, 1]);
        let mut counts = [0usize; 4];
        for i in 0..8000 {
            let a = source_hash(&c, client(i)).expect("pick");
            assert_eq!(
                source_hash(&c, client(i)),
                Some(a),
                "same client, same node"
            );
            counts[a] += 1;
        }
        // 2000 each expected; allow ±15 %.
        for n in counts {
            assert!((1700..=2300).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn source_hash_removal_moves_about_one_nth() {
        // Removing one of 5 backends must move only its own clients: ≈1/5 of all,
        // asserted ≤ 1/5 + 5 points; and nobody on a surviving backend moves.
        let all = cands(&[1, 1, 1, 1, 1]);
        let without: Vec<_> = all.iter().copied().filter(|c| c.index != 2).collect();
        let n = 10_000;
        let mut moved = 0;
        for i in 0..n {
            let before = source_hash(&all, client(i)).expect("pick");
            let after = source_hash(&without, client(i)).expect("pick");
            if before != after {
                assert_eq!(before, 2, "a client of a surviving backend moved");
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        assert!(frac <= 0.25, "moved {frac}");
        assert!(
            frac >= 0.15,
            "moved {frac} (the removed node had its share)"
        );
    }

    #[test]
    fn source_hash_honours_weights() {
        let c = cands(&[1, 3]);
        let mut heavy = 0;
        let n = 8000;
        for i in 0..n {
            if source_hash(&c, client(i)) == Some(1) {
                heavy += 1;
            }
        }
        let frac = heavy as f64 / n as f64;
        assert!((0.70..=0.80).contains(&frac), "weight 3 of 4 got {frac}");
    }

    #[test]
    fn ipv4_mapped_clients_hash_like_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_key(v4), client_key(mapped));
    }
}
