//! Seeded randomness for `twos`.
//!
//! The kernel draws from its CSPRNG with `get_random_u32_below(ceil)` (`drivers/char/random.c`:
//! Lemire's multiply-shift with rejection of the biased low region). xvs keeps that reduction but
//! takes the 32-bit words from a [`RandomSource`] handed in, so a run is reproducible from its
//! seed. The default source is SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom
//! number generators", OOPSLA 2014), which is tiny, fast and has no bad seeds.

/// A stream of uniformly distributed 32-bit words.
pub trait RandomSource: Send + std::fmt::Debug {
    fn next_u32(&mut self) -> u32;
}

/// SplitMix64, seeded; each call yields the high half of the next 64-bit output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// The kernel's `__get_random_u32_below(ceil)`: uniform in `[0, ceil)`; `ceil == 0` yields a
/// raw word, as in the kernel.
pub fn below(rng: &mut dyn RandomSource, ceil: u32) -> u32 {
    let mut mult = u64::from(ceil) * u64::from(rng.next_u32());
    if (mult as u32) < ceil {
        let bound = ceil.wrapping_neg() % ceil;
        while (mult as u32) < bound {
            mult = u64::from(ceil) * u64::from(rng.next_u32());
        }
    }
    (mult >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_outputs() {
        // First outputs of SplitMix64 seeded with 0 (published reference values).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn below_stays_in_range_and_is_reproducible() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for ceil in [1u32, 2, 3, 7, 100, 65_536, u32::MAX] {
            for _ in 0..100 {
                let x = below(&mut a, ceil);
                assert!(x < ceil);
                assert_eq!(x, below(&mut b, ceil));
            }
        }
    }

    #[derive(Debug)]
    struct Fixed(Vec<u32>, usize);
    impl RandomSource for Fixed {
        fn next_u32(&mut self) -> u32 {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v
        }
    }

    #[test]
    fn below_is_multiply_shift_with_rejection() {
        // ceil 3: bound = 2^32 % 3 = 1. Word 0 gives mult 0, whose low half 0 < 1: rejected.
        let mut r = Fixed(vec![0, u32::MAX], 0);
        assert_eq!(below(&mut r, 3), 2);
        assert_eq!(r.1, 2);
        // A word in the top third maps to 2, the bottom third to 0, without rejection.
        let mut r = Fixed(vec![0x8000_0000], 0);
        assert_eq!(below(&mut r, 3), 1);
    }
}
