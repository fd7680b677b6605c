//! Per-backend connection counts, kept exactly as IPVS keeps them in `struct ip_vs_dest`
//! (`ip_vs_bind_dest` / `ip_vs_unbind_dest` in `net/netfilter/ipvs/ip_vs_conn.c`, state moves in
//! `set_tcp_state`, `ip_vs_proto_tcp.c`).
//!
//! * A new entry is bound inactive (`inactconns + 1`); a persistence template counts in
//!   `persistconns` instead.
//! * A state change into ESTABLISHED moves one count inactive → active, out of it the reverse
//!   (only ESTABLISHED is active).
//! * Removing an entry decrements the counter its INACTIVE flag (or TEMPLATE) names.
//! * OVERLOAD, with `total = active + inactive` (templates excluded): set at bind when
//!   `upper != 0 && total >= upper`; at unbind cleared when `lower != 0 && total < lower`, else
//!   when `upper != 0 && total * 4 < upper * 3` (the 3/4 rule), else unconditionally. It is never
//!   re-evaluated on state changes.
//!
//! One [`BackendCounts`] serves every worker of a director (shared through an `Arc`): the
//! counters are atomics, as the kernel's `atomic_t` counts are, written only when an entry is
//! bound, unbound, or moves between active and inactive — never per packet. Each step is the
//! kernel's own (an atomic increment, then the threshold test on the totals read back), so
//! the counts and OVERLOAD equal one kernel's for the same sequence of connection events.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use xvs_schedulers::{BackendId, BackendLoad, Load};

/// One backend's counters (24 bytes).
#[derive(Debug, Default)]
struct Slot {
    active: AtomicU32,
    inactive: AtomicU32,
    persist: AtomicU32,
    upper: AtomicU32,
    lower: AtomicU32,
    overloaded: AtomicBool,
}

/// `v + 1`, saturating.
fn inc(a: &AtomicU32) {
    let _ = a.fetch_update(Relaxed, Relaxed, |v| v.checked_add(1));
}

/// `v - 1`, saturating at zero.
fn dec(a: &AtomicU32) {
    let _ = a.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
}

impl Slot {
    /// IPVS `ip_vs_dest_totalconns`: active + inactive (templates excluded).
    #[inline]
    fn total(&self) -> u64 {
        u64::from(self.active.load(Relaxed)) + u64::from(self.inactive.load(Relaxed))
    }
}

/// Counters of every backend, in an array sized at start, shared by all workers.
#[derive(Debug)]
pub struct BackendCounts {
    slots: Box<[Slot]>,
}

impl BackendCounts {
    /// Counters for backends `0..backends`.
    pub fn new(backends: u32) -> Self {
        BackendCounts {
            slots: (0..backends).map(|_| Slot::default()).collect(),
        }
    }

    /// How many backends these counters cover.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether `id` is within the array.
    #[inline]
    pub fn contains(&self, id: BackendId) -> bool {
        (id.0 as usize) < self.slots.len()
    }

    #[inline]
    fn slot(&self, id: BackendId) -> Option<&Slot> {
        self.slots.get(id.0 as usize)
    }

    /// IPVS `persistconns`: templates bound to this backend.
    pub fn persistent(&self, id: BackendId) -> u32 {
        self.slot(id).map_or(0, |s| s.persist.load(Relaxed))
    }

    /// The thresholds in force (upper, lower); 0 = none.
    pub fn thresholds(&self, id: BackendId) -> (u32, u32) {
        self.slot(id)
            .map_or((0, 0), |s| (s.upper.load(Relaxed), s.lower.load(Relaxed)))
    }

    /// Set a backend's thresholds as `__ip_vs_update_dest` does: OVERLOAD is cleared when the
    /// new upper threshold is 0 or above the old one; the counts stay.
    pub fn set_thresholds(&self, id: BackendId, upper: u32, lower: u32) {
        let Some(s) = self.slot(id) else {
            return;
        };
        let old = s.upper.swap(upper, Relaxed);
        if upper == 0 || upper > old {
            s.overloaded.store(false, Relaxed);
        }
        s.lower.store(lower, Relaxed);
    }

    /// Forget a backend slot's counters (its id is reused for another backend). Entries still
    /// bound to it must be gone first, or their unbinding will saturate at zero.
    pub fn reset(&self, id: BackendId) {
        if let Some(s) = self.slot(id) {
            s.active.store(0, Relaxed);
            s.inactive.store(0, Relaxed);
            s.persist.store(0, Relaxed);
            s.upper.store(0, Relaxed);
            s.lower.store(0, Relaxed);
            s.overloaded.store(false, Relaxed);
        }
    }

    /// `ip_vs_bind_dest`: a new entry (inactive) or template.
    #[inline]
    pub(crate) fn bind(&self, id: BackendId, template: bool) {
        let Some(s) = self.slot(id) else {
            return;
        };
        if template {
            inc(&s.persist);
        } else {
            inc(&s.inactive);
        }
        let upper = s.upper.load(Relaxed);
        if upper != 0 && s.total() >= u64::from(upper) {
            s.overloaded.store(true, Relaxed);
        }
    }

    /// `ip_vs_unbind_dest`.
    #[inline]
    pub(crate) fn unbind(&self, id: BackendId, template: bool, inactive: bool) {
        let Some(s) = self.slot(id) else {
            return;
        };
        if template {
            dec(&s.persist);
        } else if inactive {
            dec(&s.inactive);
        } else {
            dec(&s.active);
        }
        let total = s.total();
        let (upper, lower) = (s.upper.load(Relaxed), s.lower.load(Relaxed));
        let clear = if lower != 0 {
            total < u64::from(lower)
        } else if upper != 0 {
            total * 4 < u64::from(upper) * 3
        } else {
            true
        };
        if clear {
            s.overloaded.store(false, Relaxed);
        }
    }

    /// A bound entry became active (entered ESTABLISHED).
    #[inline]
    pub(crate) fn activate(&self, id: BackendId) {
        if let Some(s) = self.slot(id) {
            dec(&s.inactive);
            inc(&s.active);
        }
    }

    /// A bound entry became inactive (left ESTABLISHED).
    #[inline]
    pub(crate) fn deactivate(&self, id: BackendId) {
        if let Some(s) = self.slot(id) {
            dec(&s.active);
            inc(&s.inactive);
        }
    }
}

impl Load for BackendCounts {
    #[inline]
    fn active(&self, id: BackendId) -> u32 {
        self.slot(id).map_or(0, |s| s.active.load(Relaxed))
    }
    #[inline]
    fn inactive(&self, id: BackendId) -> u32 {
        self.slot(id).map_or(0, |s| s.inactive.load(Relaxed))
    }
    #[inline]
    fn overloaded(&self, id: BackendId) -> bool {
        self.slot(id).is_some_and(|s| s.overloaded.load(Relaxed))
    }
    #[inline]
    fn backend_load(&self, id: BackendId) -> BackendLoad {
        self.slot(id)
            .map_or(BackendLoad::default(), |s| BackendLoad {
                active: s.active.load(Relaxed),
                inactive: s.inactive.load(Relaxed),
                overloaded: s.overloaded.load(Relaxed),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: BackendId = BackendId(1);

    #[test]
    fn upper_threshold_and_three_quarters_rule() {
        let c = BackendCounts::new(2);
        c.set_thresholds(B, 4, 0);
        for _ in 0..3 {
            c.bind(B, false);
        }
        assert!(!c.overloaded(B));
        c.bind(B, false);
        assert!(c.overloaded(B), "total 4 >= upper 4");
        // 3*4 = 12 < 12? no: stays overloaded.
        c.unbind(B, false, true);
        assert!(c.overloaded(B));
        // 2*4 = 8 < 12: cleared.
        c.unbind(B, false, true);
        assert!(!c.overloaded(B));
    }

    #[test]
    fn lower_threshold_and_templates() {
        let c = BackendCounts::new(2);
        c.set_thresholds(B, 3, 2);
        c.bind(B, true); // templates are not in the total
        c.bind(B, true);
        c.bind(B, true);
        assert!(!c.overloaded(B));
        assert_eq!(c.persistent(B), 3);
        c.bind(B, false);
        c.bind(B, false);
        c.bind(B, false);
        assert!(c.overloaded(B));
        c.unbind(B, false, true); // total 2, not < 2
        assert!(c.overloaded(B));
        c.unbind(B, true, false); // a template unbind still re-evaluates: 2 < 2 false
        assert!(c.overloaded(B));
        c.unbind(B, false, true); // 1 < 2
        assert!(!c.overloaded(B));
    }

    #[test]
    fn threshold_edit_clears_overload_when_raised() {
        let c = BackendCounts::new(2);
        c.set_thresholds(B, 1, 0);
        c.bind(B, false);
        assert!(c.overloaded(B));
        c.set_thresholds(B, 1, 0); // same: stays
        assert!(c.overloaded(B));
        c.set_thresholds(B, 5, 0);
        assert!(!c.overloaded(B));
        c.set_thresholds(B, 1, 0); // lowered: not set until the next bind
        assert!(!c.overloaded(B));
        c.bind(B, false);
        assert!(c.overloaded(B));
    }

    #[test]
    fn two_threads_count_as_one() {
        let c = std::sync::Arc::new(BackendCounts::new(2));
        c.set_thresholds(B, 1000, 0);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        c.bind(B, false);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!((c.active(B), c.inactive(B)), (0, 1000));
        assert!(
            c.overloaded(B),
            "the 1000th bind, on either thread, saw total >= 1000"
        );
    }

    #[test]
    fn out_of_range_is_ignored() {
        let c = BackendCounts::new(1);
        c.bind(BackendId(7), false);
        c.unbind(BackendId(7), false, false);
        c.set_thresholds(BackendId(7), 1, 1);
        assert_eq!(c.active(BackendId(7)), 0);
        assert!(!c.overloaded(BackendId(7)));
    }
}
