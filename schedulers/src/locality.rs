//! The destination-address cache shared by lblc and lblcr, with the kernel's garbage collection
//! (`ip_vs_lblc_check_expire` / `ip_vs_lblcr_check_expire`).
//!
//! The kernel keeps entries in 1024 buckets (`hash_32(fold(daddr), 10)`) and runs a timer every
//! 60 s from `init_service` on. Every 30th run (a counter starting at 1, bumped by runs that find
//! at most 16384 entries) drops all entries idle for at least the expiration (sysctl
//! `lblc_expiration` / `lblcr_expiration`, default 24 h) and resets the counter. Otherwise, when
//! there are more than 16384 entries, it walks the buckets from the one after `rover`, dropping
//! entries idle for at least 6 min, until `goal = min((entries - 16384) * 4 / 3, 8192)` entries
//! are gone (checked after each bucket); `rover` is left at the bucket where it stopped.
//!
//! Here the map is a `HashMap`, and the timer is replayed lazily: before each pick, every tick
//! whose time has come runs with its own time as "now". Nothing else touches the cache between
//! ticks, so the result is the kernel's. The partial sweep visits expired entries in the
//! kernel's bucket order, so the same entries survive when the goal cuts the sweep short.

use crate::hash::{fold, hash_32};
use crate::Time;
use std::collections::HashMap;
use std::net::IpAddr;

pub(crate) const TAB_BITS: u32 = 10;
pub(crate) const TAB_SIZE: u32 = 1 << TAB_BITS;
pub(crate) const MAX_SIZE: usize = (TAB_SIZE as usize) * 16;
pub(crate) const CHECK_EXPIRE_INTERVAL: u64 = 60_000_000_000;
pub(crate) const ENTRY_TIMEOUT: u64 = 6 * 60_000_000_000;
pub(crate) const DEFAULT_EXPIRATION: u64 = 24 * 3600 * 1_000_000_000;
pub(crate) const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
/// Entries reserved up front, so that ordinary operation does not allocate per insert.
const INITIAL_CAPACITY: usize = 4096;

pub(crate) trait CacheEntry {
    fn lastuse(&self) -> Time;
}

#[derive(Debug, Clone)]
pub(crate) struct LocalityCache<E> {
    pub map: HashMap<IpAddr, E>,
    next_tick: Option<Time>,
    counter: u32,
    rover: u32,
    expiration: u64,
    scratch: Vec<(u32, IpAddr)>,
}

/// The kernel's bucket of a destination address.
#[inline]
pub(crate) fn bucket(addr: &IpAddr) -> u32 {
    hash_32(fold(addr), TAB_BITS)
}

#[inline]
fn before(now: Time, t: Time, plus: u64) -> bool {
    now.0 < t.0.saturating_add(plus)
}

impl<E: CacheEntry> LocalityCache<E> {
    pub fn new(expiration: u64) -> Self {
        LocalityCache {
            map: HashMap::with_capacity(INITIAL_CAPACITY),
            next_tick: None,
            counter: 1,
            rover: 0,
            expiration,
            scratch: Vec::new(),
        }
    }

    /// `init_service`: the first tick comes 60 s after `now`.
    pub fn start(&mut self, now: Time) {
        self.next_tick = Some(Time(now.0.saturating_add(CHECK_EXPIRE_INTERVAL)));
    }

    /// Replay every timer tick due at `now`.
    pub fn advance(&mut self, now: Time) {
        let mut next = match self.next_tick {
            Some(t) => t,
            None => {
                self.start(now);
                return;
            }
        };
        while now >= next {
            if self.map.is_empty() {
                // Ticks on an empty cache only move the counter (period 30): skip ahead.
                let k = (now.0 - next.0) / CHECK_EXPIRE_INTERVAL + 1;
                self.counter = ((u64::from(self.counter) - 1 + k) % 30) as u32 + 1;
                next = Time(
                    next.0
                        .saturating_add(k.saturating_mul(CHECK_EXPIRE_INTERVAL)),
                );
                break;
            }
            self.tick(next);
            next = Time(next.0.saturating_add(CHECK_EXPIRE_INTERVAL));
        }
        self.next_tick = Some(next);
    }

    fn tick(&mut self, now: Time) {
        // The kernel tests `counter % 30 == 0`; the counter only ever runs 1..=30.
        if self.counter >= COUNT_FOR_FULL_EXPIRATION {
            let exp = self.expiration;
            self.map.retain(|_, e| before(now, e.lastuse(), exp));
            self.counter = 1;
            return;
        }
        let entries = self.map.len();
        if entries <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let mut goal = ((entries - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2) as i64;
        let rover = self.rover;
        self.scratch.clear();
        self.scratch.extend(
            self.map
                .iter()
                .filter(|(_, e)| !before(now, e.lastuse(), ENTRY_TIMEOUT))
                .map(|(a, _)| ((bucket(a).wrapping_sub(rover + 1)) % TAB_SIZE, *a)),
        );
        // Bucket order from rover + 1; within a bucket the kernel drops every expired entry.
        self.scratch.sort_unstable_by_key(|(off, _)| *off);
        let mut i = 0;
        while i < self.scratch.len() {
            let off = self.scratch[i].0;
            while i < self.scratch.len() && self.scratch[i].0 == off {
                self.map.remove(&self.scratch[i].1);
                goal -= 1;
                i += 1;
            }
            if goal <= 0 {
                self.rover = (rover + 1 + off) % TAB_SIZE;
                break;
            }
        }
    }

    #[cfg(test)]
    pub fn counter(&self) -> u32 {
        self.counter
    }

    #[cfg(test)]
    pub fn rover(&self) -> u32 {
        self.rover
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[derive(Debug, Clone)]
    struct E(Time);
    impl CacheEntry for E {
        fn lastuse(&self) -> Time {
            self.0
        }
    }

    const S: u64 = 1_000_000_000;

    fn addr(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i))
    }

    #[test]
    fn full_expiration_every_30th_tick() {
        let mut c: LocalityCache<E> = LocalityCache::new(DEFAULT_EXPIRATION);
        c.start(Time(0));
        c.map.insert(addr(1), E(Time(0)));
        c.map.insert(addr(2), E(Time(3600 * S)));
        // Ticks at 60, 120, ..., counter 1 -> 30 after 29 ticks; the 30th tick (t = 1800 s) is a
        // full check, but nothing is a day old yet.
        c.advance(Time(1800 * S));
        assert_eq!(c.counter(), 1);
        assert_eq!(c.map.len(), 2);
        // Full checks every 30 ticks (1800 s): the one at 86400 s drops addr(1), idle exactly
        // 86400 s, and keeps addr(2), idle 82800 s; the one at 90000 s drops addr(2).
        c.advance(Time(86_399 * S));
        assert_eq!(c.map.len(), 2);
        c.advance(Time(86_400 * S));
        assert_eq!(c.map.len(), 1);
        assert!(c.map.contains_key(&addr(2)));
        c.advance(Time(89_999 * S));
        assert_eq!(c.map.len(), 1);
        c.advance(Time(90_000 * S));
        assert!(c.map.is_empty());
    }

    #[test]
    fn empty_cache_fast_forward_matches_ticking() {
        let mut a: LocalityCache<E> = LocalityCache::new(DEFAULT_EXPIRATION);
        a.start(Time(0));
        a.advance(Time(60 * S * 1000 + 5));
        let mut b: LocalityCache<E> = LocalityCache::new(DEFAULT_EXPIRATION);
        b.start(Time(0));
        let mut counter = 1u32;
        for _ in 0..1000 {
            counter = if counter == 30 { 1 } else { counter + 1 };
        }
        b.advance(Time(60 * S * 1000 + 5));
        assert_eq!(a.counter(), counter);
        assert_eq!(b.counter(), counter);
        assert_eq!(a.next_tick, Some(Time(60 * S * 1001)));
    }

    #[test]
    fn partial_sweep_stops_at_goal_in_bucket_order() {
        let mut c: LocalityCache<E> = LocalityCache::new(DEFAULT_EXPIRATION);
        c.start(Time(0));
        // MAX_SIZE + 3 entries: goal = 3 * 4 / 3 = 4. Old ones (idle >= 6 min at the first
        // tick): 10 entries; fresh ones: the rest.
        let n = MAX_SIZE as u32 + 3;
        for i in 0..n {
            let t = if i < 10 { Time(0) } else { Time(50 * S) };
            c.map.insert(addr(i), E(t));
        }
        // Ticks at 60..=360 s: only the one at 360 s finds idle >= 360 s entries.
        c.advance(Time(359 * S));
        assert_eq!(c.map.len(), n as usize);
        c.advance(Time(360 * S));
        // Expected: walk buckets from rover + 1 = 1, drop whole buckets until 4 are gone.
        let mut old: Vec<(u32, u32)> = (0..10)
            .map(|i| ((bucket(&addr(i)) + 1023) % 1024, i))
            .collect();
        old.sort();
        let mut gone = 0;
        let mut last_bucket = 0;
        let mut dropped = vec![];
        let mut k = 0;
        while k < old.len() && gone < 4 {
            let b = old[k].0;
            while k < old.len() && old[k].0 == b {
                dropped.push(old[k].1);
                gone += 1;
                k += 1;
            }
            last_bucket = (b + 1) % 1024;
        }
        assert_eq!(c.map.len(), n as usize - dropped.len());
        for i in 0..10 {
            assert_eq!(
                c.map.contains_key(&addr(i)),
                !dropped.contains(&i),
                "entry {i}"
            );
        }
        assert_eq!(c.rover(), last_bucket);
        // The counter does not move on sweep ticks (all six found more than MAX_SIZE entries).
        assert_eq!(c.counter(), 1);
    }
}
