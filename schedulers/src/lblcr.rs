//! Locality-based least connection with replication (`net/netfilter/ipvs/ip_vs_lblcr.c`).
//!
//! The cache maps each destination address to a *set* of backends (new members at the front,
//! with the time of the last change). On a hit (refreshing last use) the set's weighted least
//! loaded member is chosen: the first member that is not OVERLOAD, still in the service and has
//! a positive weight, replaced by any later non-OVERLOAD member still in the service with
//! `oh(least) * w(m) > oh(m) * w(least)`. If the set has more than one member and has not changed
//! for longer than `lblcr_expiration` (24 h), its most loaded member is removed (the first
//! member with weight > 0, replaced by a later one with weight > 0 and
//! `oh(most) * w(m) < oh(m) * w(most)`; OVERLOAD ignored). The chosen member is used unless it
//! is *busy* (see lblc); otherwise wlc over the service picks a backend, which joins the set.
//! A miss creates the entry with wlc's choice. Collection as lblc.

use crate::lblc::{busy, position_of};
use crate::load::{weight, wlc_pick};
use crate::locality::{CacheEntry, LocalityCache, DEFAULT_EXPIRATION};
use crate::{BackendId, BackendView, Change, Flow, Load, Scheduler, Time};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    set: Vec<BackendId>,
    lastmod: Time,
    lastuse: Time,
}

impl CacheEntry for Entry {
    fn lastuse(&self) -> Time {
        self.lastuse
    }
}

#[derive(Debug, Clone)]
pub struct LocalityLeastConnReplicated {
    cache: LocalityCache<Entry>,
    expiration: u64,
    positions: HashMap<BackendId, usize>,
    /// Weights of backends deleted from the service (the kernel keeps the dest in its trash,
    /// still referenced by sets, with its last weight).
    gone: HashMap<BackendId, u32>,
    previous: Vec<(BackendId, u32)>,
}

impl Default for LocalityLeastConnReplicated {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalityLeastConnReplicated {
    /// lblcr with the default `lblcr_expiration` (24 h).
    pub fn new() -> Self {
        Self::with_expiration(Time(DEFAULT_EXPIRATION))
    }

    /// lblcr with the sysctl `lblcr_expiration` given as a duration.
    pub fn with_expiration(expiration: Time) -> Self {
        LocalityLeastConnReplicated {
            cache: LocalityCache::new(expiration.0),
            expiration: expiration.0,
            positions: HashMap::new(),
            gone: HashMap::new(),
            previous: Vec::new(),
        }
    }

    /// Number of cache entries (for tests and metrics).
    pub fn cache_len(&self) -> usize {
        self.cache.map.len()
    }

    /// The backend set cached for a destination address, front first.
    pub fn cached_set(&self, daddr: &std::net::IpAddr) -> Option<&[BackendId]> {
        self.cache.map.get(daddr).map(|e| e.set.as_slice())
    }
}

/// What a set member looks like: its list position (None once deleted) and weight.
fn member(
    positions: &HashMap<BackendId, usize>,
    gone: &HashMap<BackendId, u32>,
    backends: &[BackendView],
    id: BackendId,
) -> (Option<usize>, i64) {
    match position_of(positions, backends, id) {
        Some(p) => (Some(p), weight(&backends[p])),
        None => (None, i64::from(gone.get(&id).copied().unwrap_or(0) as i32)),
    }
}

impl Scheduler for LocalityLeastConnReplicated {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn update(&mut self, backends: &[BackendView], _change: Change) {
        self.positions.clear();
        self.positions
            .extend(backends.iter().enumerate().map(|(i, b)| (b.id, i)));
        for (id, w) in self.previous.drain(..) {
            if !self.positions.contains_key(&id) {
                self.gone.insert(id, w);
            }
        }
        for b in backends {
            self.gone.remove(&b.id);
        }
        self.previous
            .extend(backends.iter().map(|b| (b.id, b.weight)));
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
        let (positions, gone) = (&self.positions, &self.gone);
        if let Some(e) = self.cache.map.get_mut(&flow.dst) {
            e.lastuse = now;

            // set_min
            let mut least: Option<(usize, i64, i64)> = None;
            for &id in &e.set {
                let l = load.backend_load(id);
                if l.overloaded {
                    continue;
                }
                let (pos, w) = member(positions, gone, backends, id);
                let Some(p) = pos else { continue };
                let doh = i64::from(l.overhead());
                match least {
                    None if w > 0 => least = Some((p, doh, w)),
                    None => {}
                    Some((_, loh, lw)) if loh * w > doh * lw => least = Some((p, doh, w)),
                    Some(_) => {}
                }
            }

            // Drop the most loaded member of a set unchanged for too long.
            if e.set.len() > 1 && now.0 > e.lastmod.0.saturating_add(self.expiration) {
                let mut most: Option<(usize, i64, i64)> = None;
                for (k, &id) in e.set.iter().enumerate() {
                    let (_, w) = member(positions, gone, backends, id);
                    let doh = i64::from(load.backend_load(id).overhead());
                    match most {
                        None if w > 0 => most = Some((k, doh, w)),
                        None => {}
                        Some((_, moh, mw)) if moh * w < doh * mw && w > 0 => {
                            most = Some((k, doh, w))
                        }
                        Some(_) => {}
                    }
                }
                if let Some((k, _, _)) = most {
                    e.set.remove(k);
                    e.lastmod = now;
                }
            }

            if let Some((p, _, _)) = least {
                if !busy(&backends[p], backends, load) {
                    return Some(p);
                }
            }
            let d = wlc_pick(backends, load)?;
            let id = backends[d].id;
            if !e.set.contains(&id) {
                e.set.insert(0, id);
                e.lastmod = now;
            }
            return Some(d);
        }
        let d = wlc_pick(backends, load)?;
        self.cache.map.insert(
            flow.dst,
            Entry {
                set: vec![backends[d].id],
                lastmod: now,
                lastuse: now,
            },
        );
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    const S: u64 = 1_000_000_000;
    const DAY: u64 = 86_400 * S;

    #[test]
    fn set_grows_when_members_are_busy() {
        let list = vec![be(1, 2), be(2, 2), be(3, 2)];
        let mut s = LocalityLeastConnReplicated::new();
        s.update(&list, Change::Init);
        s.started(Time(0));
        let mut load = TestLoad::default();
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &load, Time(S)), Some(0));
        // Member 1 busy (3 > 2, and backend 2 idle): wlc adds backend 2 to the set.
        load.set(1, 3, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(2 * S)), Some(1));
        assert_eq!(s.cached_set(&f.dst).unwrap(), &[BackendId(2), BackendId(1)]);
        // Now the set's least loaded member is used (backend 2, idle), not wlc's overall pick.
        load.set(2, 1, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(3 * S)), Some(1));
        // OVERLOAD members are skipped by set_min: backend 1 is then the only candidate but
        // busy -> wlc over the service -> backend 3 (idle), which joins the set.
        load.overload(2, true);
        assert_eq!(s.pick(&f, &list, &load, Time(4 * S)), Some(2));
        assert_eq!(s.cached_set(&f.dst).unwrap().len(), 3);
    }

    #[test]
    fn most_loaded_member_leaves_after_expiration() {
        let list = vec![be(1, 1), be(2, 1)];
        let mut s = LocalityLeastConnReplicated::new();
        s.update(&list, Change::Init);
        s.started(Time(0));
        let mut load = TestLoad::default();
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        load.set(1, 2, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(S)), Some(1)); // set {2, 1}, lastmod 1 s
                                                                // Keep the entry in use so collection does not drop it; at 1 s + 24 h nothing happens
                                                                // yet (strictly after), just after it the most loaded member (1) is removed.
        load.set(1, 2, 0).set(2, 1, 0);
        for t in (1..DAY / S).step_by(3600) {
            s.pick(&f, &list, &load, Time(t * S));
        }
        assert_eq!(s.cached_set(&f.dst).unwrap().len(), 2);
        s.pick(&f, &list, &load, Time(DAY + S));
        assert_eq!(s.cached_set(&f.dst).unwrap().len(), 2);
        s.pick(&f, &list, &load, Time(DAY + S + 1));
        assert_eq!(s.cached_set(&f.dst).unwrap(), &[BackendId(2)]);
    }

    #[test]
    fn deleted_member_is_skipped_but_remembered() {
        let mut list = vec![be(1, 1), be(2, 1)];
        let mut s = LocalityLeastConnReplicated::new();
        s.update(&list, Change::Init);
        let mut load = TestLoad::default();
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        load.set(1, 2, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(S)), Some(1));
        // Delete backend 2 (position 1): set_min skips it, backend 1 is busy only if another
        // backend is below half weight; alone it is not busy -> used.
        list.remove(1);
        s.update(&list, Change::Remove(1));
        assert_eq!(s.gone.get(&BackendId(2)), Some(&1));
        assert_eq!(s.pick(&f, &list, &load, Time(2 * S)), Some(0));
        // Re-adding it (same id) makes it a live member again.
        list.insert(0, be(2, 1));
        s.update(&list, Change::Add(0));
        assert!(s.gone.is_empty());
        load.set(2, 0, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(3 * S)), Some(0));
        assert_eq!(list[0].id, BackendId(2));
    }
}
