//! Locality-based least connection (`net/netfilter/ipvs/ip_vs_lblc.c`).
//!
//! A cache maps each packet **destination** address to the backend that served it last. On a
//! hit (which refreshes the entry's last use) the cached backend is kept if it is still in the
//! service, has a positive weight and is not *busy*: `active > weight` while some backend of the
//! service has `active * 2 < weight`. OVERLOAD is not consulted on a hit. Otherwise wlc over the
//! whole service decides and the cache entry is (re)pointed at its choice. Entries idle too long
//! are dropped by the periodic collection described in `locality.rs`.

use crate::load::{weight, wlc_pick};
use crate::locality::{CacheEntry, LocalityCache, DEFAULT_EXPIRATION};
use crate::{BackendId, BackendView, Change, Flow, Load, Scheduler, Time};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    dest: BackendId,
    lastuse: Time,
}

impl CacheEntry for Entry {
    fn lastuse(&self) -> Time {
        self.lastuse
    }
}

#[derive(Debug, Clone)]
pub struct LocalityLeastConn {
    cache: LocalityCache<Entry>,
    positions: HashMap<BackendId, usize>,
}

impl Default for LocalityLeastConn {
    fn default() -> Self {
        Self::new()
    }
}

/// `is_overloaded` of lblc / lblcr: more active connections than weight while another backend
/// of the service is below half its weight.
pub(crate) fn busy(b: &BackendView, backends: &[BackendView], load: &dyn Load) -> bool {
    i64::from(load.active(b.id) as i32) > weight(b)
        && backends
            .iter()
            .any(|d| i64::from((load.active(d.id) as i32).wrapping_mul(2)) < weight(d))
}

/// The list position of backend `id`, through the map built at the last update, checked
/// against the slice (and searched if the caller passed a different list).
pub(crate) fn position_of(
    positions: &HashMap<BackendId, usize>,
    backends: &[BackendView],
    id: BackendId,
) -> Option<usize> {
    match positions.get(&id) {
        Some(&p) if backends.get(p).is_some_and(|b| b.id == id) => Some(p),
        _ => backends.iter().position(|b| b.id == id),
    }
}

impl LocalityLeastConn {
    /// lblc with the default `lblc_expiration` (24 h).
    pub fn new() -> Self {
        Self::with_expiration(Time(DEFAULT_EXPIRATION))
    }

    /// lblc with the sysctl `lblc_expiration` given as a duration.
    pub fn with_expiration(expiration: Time) -> Self {
        LocalityLeastConn {
            cache: LocalityCache::new(expiration.0),
            positions: HashMap::new(),
        }
    }

    /// Number of cache entries (for tests and metrics).
    pub fn cache_len(&self) -> usize {
        self.cache.map.len()
    }
}

impl Scheduler for LocalityLeastConn {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn update(&mut self, backends: &[BackendView], _change: Change) {
        self.positions.clear();
        self.positions
            .extend(backends.iter().enumerate().map(|(i, b)| (b.id, i)));
    }

    fn started(&mut self, now: Time) {
        self.cache.start(now);
    }

    fn pick(
        &mut self,
        flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        now: Time,
    ) -> Option<usize> {
        self.cache.advance(now);
        if let Some(e) = self.cache.map.get_mut(&flow.dst) {
            e.lastuse = now;
            if let Some(p) = position_of(&self.positions, backends, e.dest) {
                let b = &backends[p];
                if weight(b) > 0 && !busy(b, backends, load) {
                    return Some(p);
                }
            }
        }
        let d = wlc_pick(backends, load)?;
        let id = backends[d].id;
        self.cache
            .map
            .entry(flow.dst)
            .and_modify(|e| {
                if e.dest != id {
                    // The kernel replaces the entry: new dest, last use now.
                    e.dest = id;
                    e.lastuse = now;
                }
            })
            .or_insert(Entry {
                dest: id,
                lastuse: now,
            });
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};
    use std::net::IpAddr;

    const S: u64 = 1_000_000_000;

    fn to(f: &mut Flow, dst: &str) {
        f.dst = dst.parse::<IpAddr>().unwrap();
    }

    #[test]
    fn sticks_to_cached_backend_until_busy() {
        let list = vec![be(1, 2), be(2, 2)];
        let mut s = LocalityLeastConn::new();
        s.update(&list, Change::Init);
        s.started(Time(0));
        let mut load = TestLoad::default();
        let mut f = flow([1, 1, 1, 1], 1);
        to(&mut f, "20.0.0.1");
        // Miss: wlc, all idle -> first.
        assert_eq!(s.pick(&f, &list, &load, Time(S)), Some(0));
        // Hit: kept although backend 1 is now more loaded than 2 (wlc would pick 2).
        load.set(1, 2, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(2 * S)), Some(0));
        // OVERLOAD is ignored on a hit.
        load.overload(1, true);
        assert_eq!(s.pick(&f, &list, &load, Time(3 * S)), Some(0));
        load.overload(1, false);
        // Busy: active 3 > weight 2 and backend 2 has 0*2 < 2 -> reschedule by wlc -> 2.
        load.set(1, 3, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(4 * S)), Some(1));
        // The entry now points at backend 2.
        load.set(1, 0, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(5 * S)), Some(1));
        // Another destination address has its own entry.
        to(&mut f, "20.0.0.2");
        assert_eq!(s.pick(&f, &list, &load, Time(6 * S)), Some(0));
        assert_eq!(s.cache_len(), 2);
    }

    #[test]
    fn busy_needs_a_less_loaded_backend() {
        let list = vec![be(1, 2), be(2, 2)];
        let mut s = LocalityLeastConn::new();
        s.update(&list, Change::Init);
        let mut load = TestLoad::default();
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        // Both above weight: nobody is below half, so the cached backend stays.
        load.set(1, 5, 0).set(2, 1, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(S)), Some(0));
    }

    #[test]
    fn quiesced_or_removed_cached_backend_is_replaced() {
        let mut list = vec![be(1, 1), be(2, 1)];
        let mut s = LocalityLeastConn::new();
        s.update(&list, Change::Init);
        let load = TestLoad::default();
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        list[0].weight = 0;
        s.update(&list, Change::Edit(0));
        assert_eq!(s.pick(&f, &list, &load, Time(S)), Some(1));
        // Remove backend 2: the entry's backend is gone -> wlc over what is left -> none usable.
        list.remove(1);
        s.update(&list, Change::Remove(1));
        assert_eq!(s.pick(&f, &list, &load, Time(2 * S)), None);
    }

    #[test]
    fn entries_expire_after_a_day_idle() {
        let list = vec![be(1, 1), be(2, 1)];
        let mut s = LocalityLeastConn::new();
        s.update(&list, Change::Init);
        s.started(Time(0));
        let mut load = TestLoad::default();
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        load.set(1, 1, 0);
        // Full check at 86400 s drops the entry (idle 86400 s): the next pick is a fresh wlc.
        assert_eq!(s.pick(&f, &list, &load, Time(86_399 * S)), Some(0));
        // Touched at 86399 s, so the 86400 s check keeps it; 172800 s drops it.
        assert_eq!(s.pick(&f, &list, &load, Time(172_800 * S)), Some(1));
        assert_eq!(s.cache_len(), 1);
    }
}
