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
//! Counts are per worker (one table per worker). With one worker they equal the kernel's; with
//! several, the control plane publishes the other workers' sums ([`BackendCounts::set_others`])
//! and every answer and threshold uses own + others, lagging by one publish period.

use xvs_schedulers::{BackendId, BackendLoad, Load};

/// One backend's counters: 32 bytes, so a scheduler reads everything in one cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    active: u32,
    inactive: u32,
    persist: u32,
    /// The other workers' counts, as last published by the control plane.
    others_active: u32,
    others_inactive: u32,
    upper: u32,
    lower: u32,
    overloaded: bool,
}

impl Slot {
    #[inline]
    fn active(&self) -> u32 {
        self.active.saturating_add(self.others_active)
    }
    #[inline]
    fn inactive(&self) -> u32 {
        self.inactive.saturating_add(self.others_inactive)
    }
    /// IPVS `ip_vs_dest_totalconns`: active + inactive (templates excluded).
    #[inline]
    fn total(&self) -> u64 {
        self.active() as u64 + self.inactive() as u64
    }
}

/// Counters of every backend, in an array sized at start.
///
/// Across workers: each worker's table counts its own connections exactly; the control plane
/// may publish the sum of the *other* workers' counts with [`BackendCounts::set_others`]. The
/// [`Load`] answers and the OVERLOAD thresholds then use own + others (exact on one worker).
#[derive(Clone, Debug)]
pub struct BackendCounts {
    slots: Vec<Slot>,
}

impl BackendCounts {
    /// Counters for backends `0..backends`.
    pub fn new(backends: u32) -> Self {
        BackendCounts {
            slots: vec![Slot::default(); backends as usize],
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
    fn slot(&self, id: BackendId) -> Slot {
        self.slots.get(id.0 as usize).copied().unwrap_or_default()
    }

    /// IPVS `persistconns`: templates bound to this backend (this worker's).
    pub fn persistent(&self, id: BackendId) -> u32 {
        self.slot(id).persist
    }

    /// This worker's own (active, inactive) counts, without the other workers' share: what the
    /// control plane sums up to publish to the other workers.
    pub fn own(&self, id: BackendId) -> (u32, u32) {
        let s = self.slot(id);
        (s.active, s.inactive)
    }

    /// Publish the other workers' summed (active, inactive) counts for a backend. OVERLOAD is
    /// not re-evaluated here (IPVS changes it only at bind and unbind).
    pub fn set_others(&mut self, id: BackendId, active: u32, inactive: u32) {
        if let Some(s) = self.slots.get_mut(id.0 as usize) {
            s.others_active = active;
            s.others_inactive = inactive;
        }
    }

    /// The thresholds in force (upper, lower); 0 = none.
    pub fn thresholds(&self, id: BackendId) -> (u32, u32) {
        let s = self.slot(id);
        (s.upper, s.lower)
    }

    /// Set a backend's thresholds as `__ip_vs_update_dest` does: OVERLOAD is cleared when the
    /// new upper threshold is 0 or above the old one; the counts stay.
    pub fn set_thresholds(&mut self, id: BackendId, upper: u32, lower: u32) {
        let Some(s) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        if upper == 0 || upper > s.upper {
            s.overloaded = false;
        }
        s.upper = upper;
        s.lower = lower;
    }

    /// Forget a backend slot's counters (its id is reused for another backend). Entries still
    /// bound to it must be gone first, or their unbinding will saturate at zero.
    pub fn reset(&mut self, id: BackendId) {
        if let Some(s) = self.slots.get_mut(id.0 as usize) {
            *s = Slot::default();
        }
    }

    /// `ip_vs_bind_dest`: a new entry (inactive) or template.
    #[inline]
    pub(crate) fn bind(&mut self, id: BackendId, template: bool) {
        let Some(s) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        if template {
            s.persist = s.persist.saturating_add(1);
        } else {
            s.inactive = s.inactive.saturating_add(1);
        }
        if s.upper != 0 && s.total() >= s.upper as u64 {
            s.overloaded = true;
        }
    }

    /// `ip_vs_unbind_dest`.
    #[inline]
    pub(crate) fn unbind(&mut self, id: BackendId, template: bool, inactive: bool) {
        let Some(s) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        if template {
            s.persist = s.persist.saturating_sub(1);
        } else if inactive {
            s.inactive = s.inactive.saturating_sub(1);
        } else {
            s.active = s.active.saturating_sub(1);
        }
        let total = s.total();
        if s.lower != 0 {
            if total < s.lower as u64 {
                s.overloaded = false;
            }
        } else if s.upper != 0 {
            if total * 4 < s.upper as u64 * 3 {
                s.overloaded = false;
            }
        } else {
            s.overloaded = false;
        }
    }

    /// A bound entry became active (entered ESTABLISHED).
    #[inline]
    pub(crate) fn activate(&mut self, id: BackendId) {
        if let Some(s) = self.slots.get_mut(id.0 as usize) {
            s.inactive = s.inactive.saturating_sub(1);
            s.active = s.active.saturating_add(1);
        }
    }

    /// A bound entry became inactive (left ESTABLISHED).
    #[inline]
    pub(crate) fn deactivate(&mut self, id: BackendId) {
        if let Some(s) = self.slots.get_mut(id.0 as usize) {
            s.active = s.active.saturating_sub(1);
            s.inactive = s.inactive.saturating_add(1);
        }
    }
}

impl Load for BackendCounts {
    #[inline]
    fn active(&self, id: BackendId) -> u32 {
        self.slot(id).active()
    }
    #[inline]
    fn inactive(&self, id: BackendId) -> u32 {
        self.slot(id).inactive()
    }
    #[inline]
    fn overloaded(&self, id: BackendId) -> bool {
        self.slot(id).overloaded
    }
    #[inline]
    fn backend_load(&self, id: BackendId) -> BackendLoad {
        let s = self.slot(id);
        BackendLoad {
            active: s.active(),
            inactive: s.inactive(),
            overloaded: s.overloaded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: BackendId = BackendId(1);

    #[test]
    fn upper_threshold_and_three_quarters_rule() {
        let mut c = BackendCounts::new(2);
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
        let mut c = BackendCounts::new(2);
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
        let mut c = BackendCounts::new(2);
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
    fn other_workers_counts_add_up() {
        let mut c = BackendCounts::new(2);
        c.set_thresholds(B, 10, 0);
        c.bind(B, false);
        c.activate(B);
        c.set_others(B, 4, 4);
        assert_eq!((c.active(B), c.inactive(B)), (5, 4));
        assert_eq!(c.own(B), (1, 0));
        assert!(!c.overloaded(B), "not re-evaluated on publish");
        c.bind(B, false); // 5 + 5 = 10 >= 10
        assert!(c.overloaded(B));
        let l = c.backend_load(B);
        assert_eq!((l.active, l.inactive, l.overloaded), (5, 5, true));
        c.set_others(B, 0, 0);
        c.unbind(B, false, true); // 1 * 4 < 30
        assert!(!c.overloaded(B));
    }

    #[test]
    fn out_of_range_is_ignored() {
        let mut c = BackendCounts::new(1);
        c.bind(BackendId(7), false);
        c.unbind(BackendId(7), false, false);
        c.set_thresholds(BackendId(7), 1, 1);
        assert_eq!(c.active(BackendId(7)), 0);
        assert!(!c.overloaded(BackendId(7)));
    }
}
