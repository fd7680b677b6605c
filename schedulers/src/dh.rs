//! Destination hashing (`net/netfilter/ipvs/ip_vs_dh.c`).
//!
//! A 256-bucket table maps the packet's destination address to a backend: bucket `i` holds the
//! `i`-th backend cycling through the list (weights ignored), rebuilt when the list changes.
//! A flow goes to bucket `hash_32(fold(daddr), 8)`; the backend there is used if its weight is
//! positive and it is not OVERLOAD, otherwise the pick fails (no fallback).

use crate::hash::{fold, hash_32};
use crate::load::usable;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};
use std::sync::Arc;

/// log2 of the table size (`IP_VS_DH_TAB_BITS`).
pub const DH_TAB_BITS: u32 = 8;
const DH_TAB_SIZE: usize = 1 << DH_TAB_BITS;
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct DestinationHashing {
    buckets: Box<[u32; DH_TAB_SIZE]>,
}

impl Default for DestinationHashing {
    fn default() -> Self {
        Self::new()
    }
}

impl DestinationHashing {
    pub fn new() -> Self {
        DestinationHashing {
            buckets: Box::new([EMPTY; DH_TAB_SIZE]),
        }
    }

    /// The backend position in each bucket (`None` when the list is empty).
    pub fn buckets(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.buckets
            .iter()
            .map(|&p| (p != EMPTY).then_some(p as usize))
    }
}

impl Scheduler for DestinationHashing {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn update(&mut self, backends: &[BackendView], _change: Change) {
        let n = backends.len();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            *b = if n == 0 { EMPTY } else { (i % n) as u32 };
        }
    }

    fn pick(
        &mut self,
        flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        _now: Time,
    ) -> Option<usize> {
        self.pick_table(flow, backends, load)
    }

    fn table(&self) -> Option<Arc<dyn TablePick>> {
        Some(Arc::new(self.clone()))
    }

    fn table_only(&self) -> bool {
        true
    }
}

impl TablePick for DestinationHashing {
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        let idx = hash_32(fold(&flow.dst), DH_TAB_BITS) as usize;
        let pos = self.buckets[idx & (DH_TAB_SIZE - 1)] as usize;
        let b = backends.get(pos)?;
        usable(load, b).then_some(pos)
    }

    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, TestLoad};
    use crate::NoLoad;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn buckets_cycle_through_the_list_and_hash_the_destination() {
        let list = vec![be(1, 5), be(2, 1), be(3, 0)];
        let mut s = DestinationHashing::new();
        s.update(&list, Change::Init);
        let b: Vec<_> = s.buckets().take(5).collect();
        assert_eq!(b, vec![Some(0), Some(1), Some(2), Some(0), Some(1)]);

        // hash_32(0xc0a80001, 8) = 192 -> bucket 192 -> position 192 % 3 = 0.
        let mut f = crate::load::testutil::flow([9, 9, 9, 9], 1);
        f.dst = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), Some(0));
        // The source does not matter.
        f.src = IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1));
        assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), Some(0));
        // OVERLOAD (or weight 0) fails without fallback.
        let mut load = TestLoad::default();
        load.overload(1, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
        // 192 % 2 = 0 with two backends; 193 -> weight-0 backend at position 2 with three.
        f.dst = IpAddr::V4(Ipv4Addr::from(0xc0a8_0001u32 + 1));
        let idx = hash_32(0xc0a8_0002, 8) as usize;
        let want = if list[idx % 3].weight > 0 {
            Some(idx % 3)
        } else {
            None
        };
        assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), want);
    }

    #[test]
    fn empty_list_fails() {
        let mut s = DestinationHashing::new();
        s.update(&[], Change::Init);
        let f = crate::load::testutil::flow([1, 2, 3, 4], 1);
        assert_eq!(s.pick(&f, &[], &NoLoad, Time(0)), None);
    }
}
