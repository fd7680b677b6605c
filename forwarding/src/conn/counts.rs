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
//! several, each worker's schedulers see their own share (documented approximation).

use xvs_schedulers::{BackendId, Load};

/// Counters of every backend, in arrays sized at start.
#[derive(Clone, Debug)]
pub struct BackendCounts {
    active: Vec<u32>,
    inactive: Vec<u32>,
    persist: Vec<u32>,
    overloaded: Vec<bool>,
    upper: Vec<u32>,
    lower: Vec<u32>,
}

impl BackendCounts {
    /// Counters for backends `0..backends`.
    pub fn new(backends: u32) -> Self {
        let n = backends as usize;
        BackendCounts {
            active: vec![0; n],
            inactive: vec![0; n],
            persist: vec![0; n],
            overloaded: vec![false; n],
            upper: vec![0; n],
            lower: vec![0; n],
        }
    }

    /// How many backends these counters cover.
    pub fn len(&self) -> u32 {
        self.active.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether `id` is within the arrays.
    #[inline]
    pub fn contains(&self, id: BackendId) -> bool {
        (id.0 as usize) < self.active.len()
    }

    /// IPVS `persistconns`: templates bound to this backend.
    pub fn persistent(&self, id: BackendId) -> u32 {
        self.persist.get(id.0 as usize).copied().unwrap_or(0)
    }

    /// The thresholds in force (upper, lower); 0 = none.
    pub fn thresholds(&self, id: BackendId) -> (u32, u32) {
        let i = id.0 as usize;
        (
            self.upper.get(i).copied().unwrap_or(0),
            self.lower.get(i).copied().unwrap_or(0),
        )
    }

    /// Set a backend's thresholds as `__ip_vs_update_dest` does: OVERLOAD is cleared when the
    /// new upper threshold is 0 or above the old one; the counts stay.
    pub fn set_thresholds(&mut self, id: BackendId, upper: u32, lower: u32) {
        let i = id.0 as usize;
        if i >= self.active.len() {
            return;
        }
        if upper == 0 || upper > self.upper[i] {
            self.overloaded[i] = false;
        }
        self.upper[i] = upper;
        self.lower[i] = lower;
    }

    /// Forget a backend's counters (its slot is reused for another backend). Entries still bound
    /// to it must be gone first, or their unbinding will saturate at zero.
    pub fn reset(&mut self, id: BackendId) {
        let i = id.0 as usize;
        if i < self.active.len() {
            self.active[i] = 0;
            self.inactive[i] = 0;
            self.persist[i] = 0;
            self.overloaded[i] = false;
            self.upper[i] = 0;
            self.lower[i] = 0;
        }
    }

    #[inline]
    fn total(&self, i: usize) -> u32 {
        self.active[i].saturating_add(self.inactive[i])
    }

    /// `ip_vs_bind_dest`: a new entry (inactive) or template.
    #[inline]
    pub(crate) fn bind(&mut self, id: BackendId, template: bool) {
        let i = id.0 as usize;
        if i >= self.active.len() {
            return;
        }
        if template {
            self.persist[i] = self.persist[i].saturating_add(1);
        } else {
            self.inactive[i] = self.inactive[i].saturating_add(1);
        }
        if self.upper[i] != 0 && self.total(i) >= self.upper[i] {
            self.overloaded[i] = true;
        }
    }

    /// `ip_vs_unbind_dest`.
    #[inline]
    pub(crate) fn unbind(&mut self, id: BackendId, template: bool, inactive: bool) {
        let i = id.0 as usize;
        if i >= self.active.len() {
            return;
        }
        if template {
            self.persist[i] = self.persist[i].saturating_sub(1);
        } else if inactive {
            self.inactive[i] = self.inactive[i].saturating_sub(1);
        } else {
            self.active[i] = self.active[i].saturating_sub(1);
        }
        let total = self.total(i) as u64;
        if self.lower[i] != 0 {
            if total < self.lower[i] as u64 {
                self.overloaded[i] = false;
            }
        } else if self.upper[i] != 0 {
            if total * 4 < self.upper[i] as u64 * 3 {
                self.overloaded[i] = false;
            }
        } else {
            self.overloaded[i] = false;
        }
    }

    /// A bound entry became active (entered ESTABLISHED).
    #[inline]
    pub(crate) fn activate(&mut self, id: BackendId) {
        let i = id.0 as usize;
        if i < self.active.len() {
            self.inactive[i] = self.inactive[i].saturating_sub(1);
            self.active[i] = self.active[i].saturating_add(1);
        }
    }

    /// A bound entry became inactive (left ESTABLISHED).
    #[inline]
    pub(crate) fn deactivate(&mut self, id: BackendId) {
        let i = id.0 as usize;
        if i < self.active.len() {
            self.active[i] = self.active[i].saturating_sub(1);
            self.inactive[i] = self.inactive[i].saturating_add(1);
        }
    }
}

impl Load for BackendCounts {
    #[inline]
    fn active(&self, id: BackendId) -> u32 {
        self.active.get(id.0 as usize).copied().unwrap_or(0)
    }
    #[inline]
    fn inactive(&self, id: BackendId) -> u32 {
        self.inactive.get(id.0 as usize).copied().unwrap_or(0)
    }
    #[inline]
    fn overloaded(&self, id: BackendId) -> bool {
        self.overloaded.get(id.0 as usize).copied().unwrap_or(false)
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
    fn out_of_range_is_ignored() {
        let mut c = BackendCounts::new(1);
        c.bind(BackendId(7), false);
        c.unbind(BackendId(7), false, false);
        c.set_thresholds(BackendId(7), 1, 1);
        assert_eq!(c.active(BackendId(7)), 0);
        assert!(!c.overloaded(BackendId(7)));
    }
}
