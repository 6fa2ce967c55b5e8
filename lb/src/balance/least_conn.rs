//! Least connections relative to weight, for `balance = "least_conn"`.

use super::Candidate;

/// Least connections relative to weight: the candidate minimising `active / weight`.
/// Ties are broken round robin using `turn` (a counter the caller advances per pick),
/// so an idle pool still spreads new connections.
pub(crate) fn least_conn(candidates: &[Candidate], turn: usize) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::cands;

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
}
