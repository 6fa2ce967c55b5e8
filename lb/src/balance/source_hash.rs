//! Weighted rendezvous hashing of the client address, for `balance = "source_hash"`.

use super::{mix64, Candidate};

/// Weighted rendezvous (highest random weight) hashing: every (client, backend) pair
/// gets a score `weight / -ln(u)` with `u` uniform in (0,1) from a hash of both; the
/// highest score wins. Removing one of N backends moves only the clients that were on
/// it (≈1/N), adding one takes ≈1/(N+1) from the others, and a tried-and-failed
/// backend simply yields the client's second choice.
pub(crate) fn source_hash(candidates: &[Candidate], client_key: u64) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::client_key;
    use crate::balance::tests::cands;
    use std::net::{IpAddr, Ipv4Addr};

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
}
