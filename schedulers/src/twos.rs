//! Power of two choices (`net/netfilter/ipvs/ip_vs_twos.c`; Mitzenmacher, "The Power of Two
//! Random Choices", 2001).
//!
//! `T` = the sum of the weights of the backends that are not OVERLOAD and have a positive weight
//! (none: fail). Two numbers `r1, r2` are drawn uniformly from `[0, T]` (the kernel's
//! `get_random_u32_below(T + 1)`; here from a seeded [`RandomSource`], so a run replays). Walking
//! those backends in list order and subtracting each weight, the first backend that drives `r1`
//! to `<= 0` is choice 1 and likewise for `r2`. Choice 2 wins when `w2 * oh1 > w1 * oh2` (C `int`
//! arithmetic, `oh = (active << 8) + inactive`), otherwise choice 1.

use crate::load::{usable, weight};
use crate::rng::{below, RandomSource, SplitMix64};
use crate::{BackendView, Change, Flow, Load, Scheduler, Time};

#[derive(Debug, Clone)]
pub struct PowerOfTwo<R: RandomSource = SplitMix64> {
    rng: R,
}

impl PowerOfTwo<SplitMix64> {
    /// twos drawing from SplitMix64 seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        PowerOfTwo {
            rng: SplitMix64::new(seed),
        }
    }
}

impl<R: RandomSource> PowerOfTwo<R> {
    /// twos drawing from any source of 32-bit words.
    pub fn with_source(rng: R) -> Self {
        PowerOfTwo { rng }
    }
}

impl<R: RandomSource + Clone + 'static> Scheduler for PowerOfTwo<R> {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn update(&mut self, _backends: &[BackendView], _change: Change) {}

    fn pick(
        &mut self,
        _flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        _now: Time,
    ) -> Option<usize> {
        let mut total: i64 = 0;
        let mut any = false;
        for d in backends {
            if usable(load, d) {
                total += weight(d);
                any = true;
            }
        }
        if !any {
            return None;
        }
        // The kernel sums in an `int`; the draw bound is that sum plus one, as a u32.
        let ceil = (total as i32).wrapping_add(1) as u32;
        let mut r1 = i64::from(below(&mut self.rng, ceil) as i32);
        let mut r2 = i64::from(below(&mut self.rng, ceil) as i32);

        let mut c1: Option<(usize, i32, i32)> = None;
        let mut c2: Option<(usize, i32, i32)> = None;
        for (i, d) in backends.iter().enumerate() {
            if !usable(load, d) {
                continue;
            }
            let w = weight(d);
            r1 -= w;
            r2 -= w;
            if r1 <= 0 && c1.is_none() {
                c1 = Some((i, w as i32, load.backend_load(d.id).overhead()));
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some((i, w as i32, load.backend_load(d.id).overhead()));
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        match (c1, c2) {
            (Some((i1, w1, oh1)), Some((i2, w2, oh2))) => {
                if w2.wrapping_mul(oh1) > w1.wrapping_mul(oh2) {
                    Some(i2)
                } else {
                    Some(i1)
                }
            }
            // Unreachable while r <= T; kept total for robustness: the last usable backend is
            // the kernel's initial choice 1.
            (Some((i1, _, _)), None) => Some(i1),
            (None, Some((i2, _, _))) => Some(i2),
            (None, None) => backends.iter().rposition(|d| usable(load, d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    #[derive(Debug, Clone)]
    struct Script(Vec<u32>, usize);
    impl RandomSource for Script {
        fn next_u32(&mut self) -> u32 {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v
        }
    }

    /// A word that `below(ceil)` maps to `r` without rejection.
    fn word_for(r: u32, ceil: u32) -> u32 {
        // mult = ceil * word; we need mult >> 32 == r: take word = ceil((r << 32) / ceil) + small.
        let w = (u64::from(r) << 32).div_ceil(u64::from(ceil)) as u32;
        // Move off the rejection zone at the bottom of each bucket.
        w.saturating_add((u32::MAX / ceil) / 2)
    }

    #[test]
    fn draws_pick_by_cumulative_weight_then_compare_load() {
        // Weights 2, 3: T = 5, draws in [0, 5].
        let list = vec![be(1, 2), be(2, 3)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        for (r1, r2, want_c1, want_c2) in [(0, 0, 0, 0), (2, 3, 0, 1), (3, 5, 1, 1), (5, 1, 1, 0)] {
            let words = vec![word_for(r1, 6), word_for(r2, 6)];
            assert_eq!(below(&mut Script(words.clone(), 0), 6), r1);
            // Idle: oh1 = oh2 = 0 -> choice 1.
            let mut s = PowerOfTwo::with_source(Script(words.clone(), 0));
            assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(want_c1));
            // Load choice 1 only: choice 2 wins when it is a different backend.
            let id1 = list[want_c1].id.0;
            load.set(id1, 1, 0);
            let mut s = PowerOfTwo::with_source(Script(words, 0));
            assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(want_c2));
            load.set(id1, 0, 0);
        }
    }

    #[test]
    fn no_usable_backend_fails_and_seed_replays() {
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.overload(2, true);
        let list = vec![be(1, 0), be(2, 3)];
        assert_eq!(PowerOfTwo::new(1).pick(&f, &list, &load, Time(0)), None);

        let list: Vec<_> = (1..=10).map(|i| be(i, i)).collect();
        let load = TestLoad::default();
        let run = |seed| {
            let mut s = PowerOfTwo::new(seed);
            (0..50)
                .map(|_| s.pick(&f, &list, &load, Time(0)).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
