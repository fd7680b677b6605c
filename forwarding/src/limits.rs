//! New-connection rate limits of one worker (issue 16, item 3): per service, per backend and
//! per source prefix, each a token bucket (the classic one: tokens refill at `rate` per second
//! up to a burst of one second's worth; a new connection takes one).
//!
//! Rates are configured for the whole director in connections per second; each of `workers`
//! workers gets `rate / workers` (at least 1), as RSS spreads new connections over them — the
//! same split the ICMP limiter ([`crate::ratelimit`]) uses. Source prefixes (`/24` and `/64` by
//! default) live in a fixed direct-mapped table of [`SOURCE_SLOTS`] buckets keyed by a hash of
//! the masked address; a prefix that lands on a slot held by another takes it over with a full
//! bucket (memory stays bounded; a flood spread over more prefixes than slots is not limited by
//! this, but by the service's limit).

use std::net::IpAddr;

use crate::service::mask_addr;

/// Buckets of the per-source-prefix table.
pub const SOURCE_SLOTS: usize = 4096;

/// A token bucket in milli-tokens (a connection costs 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens per second (this worker's share).
    rate: u32,
    tokens: u64,
    last_ms: Option<u32>,
}

impl Bucket {
    /// A bucket for `rate` connections per second director-wide, shared by `workers`.
    pub fn new(rate: u32, workers: u16) -> Bucket {
        let rate = (rate / u32::from(workers.max(1))).max(1);
        Bucket {
            rate,
            tokens: u64::from(rate) * 1000,
            last_ms: None,
        }
    }

    /// This worker's rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Take a token at `now_ms` if there is one.
    #[inline]
    pub fn allow(&mut self, now_ms: u32) -> bool {
        let cap = u64::from(self.rate) * 1000;
        if let Some(last) = self.last_ms {
            let dt = now_ms.wrapping_sub(last);
            // Time running backwards (or a 24-day gap) refills nothing.
            if (dt as i32) > 0 {
                self.tokens = (self.tokens + u64::from(dt) * u64::from(self.rate)).min(cap);
            }
        }
        self.last_ms = Some(now_ms);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    prefix: Option<IpAddr>,
    bucket: Bucket,
}

/// The per-source-prefix limiter.
#[derive(Clone, Debug)]
pub struct SourceLimiter {
    len_v4: u8,
    len_v6: u8,
    template: Bucket,
    slots: Vec<Slot>,
    seed: u64,
}

impl SourceLimiter {
    /// `rate` new connections per second per source prefix (director-wide), prefixes of
    /// `len_v4` / `len_v6` bits.
    pub fn new(rate: u32, len_v4: u8, len_v6: u8, workers: u16, seed: u64) -> SourceLimiter {
        let template = Bucket::new(rate, workers);
        SourceLimiter {
            len_v4: len_v4.min(32),
            len_v6: len_v6.min(128),
            template,
            slots: vec![
                Slot {
                    prefix: None,
                    bucket: template,
                };
                SOURCE_SLOTS
            ],
            seed,
        }
    }

    /// May `src` open a new connection at `now_ms`?
    pub fn allow(&mut self, src: IpAddr, now_ms: u32) -> bool {
        let len = if src.is_ipv4() {
            self.len_v4
        } else {
            self.len_v6
        };
        let prefix = mask_addr(src, len);
        let folded = match prefix {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let x = a.to_bits();
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        let h = (folded ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (h >> 52) as usize % SOURCE_SLOTS;
        let slot = &mut self.slots[i];
        if slot.prefix != Some(prefix) {
            *slot = Slot {
                prefix: Some(prefix),
                bucket: self.template,
            };
        }
        slot.bucket.allow(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_its_rate_after_a_burst() {
        let mut b = Bucket::new(100, 2);
        assert_eq!(b.rate(), 50);
        // A burst of one second's worth.
        let burst = (0..200).filter(|_| b.allow(1000)).count();
        assert_eq!(burst, 50);
        // Then 50 per second: one every 20 ms.
        let mut ok = 0;
        for ms in 1001..=3000 {
            if b.allow(ms) {
                ok += 1;
            }
        }
        assert_eq!(ok, 100);
        // Time going backwards refills nothing.
        assert!(!b.allow(10));
    }

    #[test]
    fn source_prefixes_have_their_own_buckets() {
        let mut s = SourceLimiter::new(10, 24, 64, 1, 7);
        let a: IpAddr = "198.18.7.1".parse().unwrap();
        let a2: IpAddr = "198.18.7.200".parse().unwrap();
        let b: IpAddr = "198.18.8.1".parse().unwrap();
        let n = (0..20).filter(|_| s.allow(a, 5)).count();
        assert_eq!(n, 10);
        assert!(!s.allow(a2, 5), "same /24");
        assert!(s.allow(b, 5), "another /24");
        let v6: IpAddr = "2001:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:2::ffff:1".parse().unwrap();
        assert_eq!((0..20).filter(|_| s.allow(v6, 5)).count(), 10);
        assert!(!s.allow(v6b, 5), "same /64");
    }
}
