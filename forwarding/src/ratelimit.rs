//! Rate limit of the ICMP errors the director generates, after the kernel's
//! (`net/ipv4/icmp.c`: `icmp_global_allow` / `icmp_global_consume`, `icmpv4_xrlim_allow`;
//! `net/ipv6/icmp.c`: `icmpv6_xrlim_allow`; `net/ipv4/inetpeer.c`: `inet_peer_xrlim_allow`).
//!
//! Two token buckets must both allow a message, time in milliseconds from `now` (the kernel
//! counts jiffies; HZ = 1000 makes them the same):
//! * **global** (`icmp_msgs_per_sec` = 1000, `icmp_msgs_burst` = 50): the credit is refilled
//!   by `per_sec · elapsed / 1000` (elapsed capped at one second) only once at least 20 ms
//!   (HZ/50) have passed since the last refill, and capped at the burst; a message takes one
//!   credit. The kernel takes a random 0–2 credits (CVE-2020-25705, so the limiter cannot be
//!   used as a side channel); xvs takes exactly one, so that runs are reproducible. The kernel's
//!   bucket is per network namespace; the pipeline gives each worker `1/workers` of the rate
//!   and burst (at least 1), so all workers together stay within it.
//! * **per destination** (`icmp_ratelimit` = 1000 ms, `XRLIM_BURST_FACTOR` = 6): each
//!   destination's tokens grow by the elapsed milliseconds up to 6 · 1000; a message costs
//!   1000. A destination seen for the first time starts full, as a fresh `inet_peer` does
//!   (its `rate_last` is set 60 s in the past). The kernel keeps one `inet_peer` per address
//!   in a tree it garbage-collects; xvs keeps a fixed direct-mapped table of [`PEERS`]
//!   entries (hashed address): a colliding address takes the slot over with a full bucket.
//!   That bounds memory; the global bucket still bounds the total rate. IPv6 uses the same
//!   1000 ms (the kernel scales `icmpv6_time` by the route's prefix length, which for the
//!   host routes of clients is 1000 ms).
//!
//! What is limited follows the kernel's `icmp_ratemask` (0x1818: destination unreachable,
//! source quench, time exceeded, parameter problem) minus PMTU discovery: IPv4
//! fragmentation-needed and ICMPv6 packet-too-big are never limited.

use std::net::IpAddr;

use crate::Time;

/// Entries of the per-destination table.
pub const PEERS: usize = 1024;
/// `icmp_ratelimit`: milliseconds of tokens one message costs.
pub const RATELIMIT_MS: u64 = 1000;
/// `XRLIM_BURST_FACTOR`.
pub const BURST_FACTOR: u64 = 6;
/// `icmp_msgs_per_sec`, `icmp_msgs_burst`.
pub const MSGS_PER_SEC: u64 = 1000;
pub const MSGS_BURST: u64 = 50;

#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    addr: Option<IpAddr>,
    tokens: u64,
    last_ms: u64,
}

/// The ICMP rate limiter of one worker.
#[derive(Clone, Debug)]
pub struct IcmpLimiter {
    per_sec: u64,
    burst: u64,
    credit: u64,
    stamp_ms: Option<u64>,
    peers: Vec<Peer>,
}

impl IcmpLimiter {
    /// The limiter of one of `workers` workers: `1/workers` of the kernel's global rate and
    /// burst (at least 1 each), the full per-destination limit.
    pub fn new(workers: u16) -> IcmpLimiter {
        let w = u64::from(workers.max(1));
        let burst = (MSGS_BURST / w).max(1);
        IcmpLimiter {
            per_sec: (MSGS_PER_SEC / w).max(1),
            burst,
            credit: burst,
            stamp_ms: None,
            peers: vec![Peer::default(); PEERS],
        }
    }

    /// May an ICMP error be sent to `dst` at `now`? Takes the tokens when it may.
    pub fn allow(&mut self, dst: IpAddr, now: Time) -> bool {
        let now_ms = now.0 / 1_000_000;
        if !self.global_allow(now_ms) {
            return false;
        }
        let slot = &mut self.peers[slot_of(dst)];
        if slot.addr != Some(dst) {
            *slot = Peer {
                addr: Some(dst),
                tokens: BURST_FACTOR * RATELIMIT_MS,
                last_ms: now_ms,
            };
        }
        let tokens =
            (slot.tokens + now_ms.saturating_sub(slot.last_ms)).min(BURST_FACTOR * RATELIMIT_MS);
        slot.last_ms = now_ms;
        if tokens >= RATELIMIT_MS {
            slot.tokens = tokens - RATELIMIT_MS;
            self.credit -= 1;
            true
        } else {
            slot.tokens = tokens;
            false
        }
    }

    /// `icmp_global_allow`: refill (at most once per 20 ms) and check for a credit.
    fn global_allow(&mut self, now_ms: u64) -> bool {
        let stamp = *self.stamp_ms.get_or_insert(now_ms);
        let delta = now_ms.saturating_sub(stamp).min(1000);
        if delta >= 1000 / 50 {
            let incr = self.per_sec * delta / 1000;
            if incr > 0 {
                self.stamp_ms = Some(now_ms);
                self.credit = (self.credit + incr).min(self.burst);
            }
        }
        self.credit > 0
    }
}

fn slot_of(a: IpAddr) -> usize {
    let x = match a {
        IpAddr::V4(a) => u64::from(a.to_bits()),
        IpAddr::V6(a) => {
            let b = a.to_bits();
            (b as u64) ^ ((b >> 64) as u64).rotate_left(17)
        }
    };
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % PEERS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    #[test]
    fn per_destination_burst_then_one_per_second() {
        let mut l = IcmpLimiter::new(1);
        let a: IpAddr = "198.18.100.5".parse().unwrap();
        let b: IpAddr = "198.18.100.6".parse().unwrap();
        let t0 = 10_000;
        // A fresh destination has a burst of 6.
        let sent = (0..10).filter(|_| l.allow(a, ms(t0))).count();
        assert_eq!(sent, 6);
        // Another destination is not affected.
        assert!(l.allow(b, ms(t0)));
        // 999 ms later still nothing, at 1000 ms one more.
        assert!(!l.allow(a, ms(t0 + 999)));
        assert!(l.allow(a, ms(t0 + 1000)));
        assert!(!l.allow(a, ms(t0 + 1001)));
    }

    #[test]
    fn global_bucket_caps_all_destinations() {
        let mut l = IcmpLimiter::new(1);
        let t0 = 5_000;
        let sent = (0..200u32)
            .filter(|i| l.allow(IpAddr::from([198, 18, (i >> 8) as u8, *i as u8]), ms(t0)))
            .count();
        assert_eq!(sent as u64, MSGS_BURST);
        // Refilled at 1000/s, but only after 20 ms.
        assert!(!l.allow("198.19.0.1".parse().unwrap(), ms(t0 + 19)));
        let sent = (0..200u32)
            .filter(|i| l.allow(IpAddr::from([198, 19, 1, *i as u8]), ms(t0 + 30)))
            .count();
        assert_eq!(sent, 30);
        // Two workers share the global budget.
        let mut half = IcmpLimiter::new(2);
        let sent = (0..200u32)
            .filter(|i| half.allow(IpAddr::from([198, 18, 2, *i as u8]), ms(t0)))
            .count();
        assert_eq!(sent as u64, MSGS_BURST / 2);
    }
}
