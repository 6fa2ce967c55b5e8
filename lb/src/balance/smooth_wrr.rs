//! Smooth weighted round robin (nginx's algorithm), for `balance = "round_robin"`.

use super::Candidate;

/// Smooth weighted round robin state: one running "current weight" per pool index.
///
/// Each pick adds every candidate's weight to its current weight, picks the largest,
/// and subtracts the total from the winner. With weights 5,1,1 this yields
/// `a a b a c a a` rather than `a a a a a b c`: heavy backends are interleaved.
#[derive(Debug, Clone, Default)]
pub(crate) struct SmoothWrr {
    current: Vec<i64>,
}

impl SmoothWrr {
    /// State for a pool of `n` backends.
    pub(crate) fn new(n: usize) -> Self {
        SmoothWrr {
            current: vec![0; n],
        }
    }

    /// Picks one of `candidates`; `None` when there are none.
    pub(crate) fn pick(&mut self, candidates: &[Candidate]) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::cands;

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
}
