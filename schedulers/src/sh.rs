//! Source hashing (`net/netfilter/ipvs/ip_vs_sh.c`).
//!
//! A 256-bucket table filled in list order by current weight: a backend of weight `w` takes `w`
//! consecutive buckets (weight 0 and 1 both take one) and the fill wraps around the list until
//! all 256 buckets are assigned; rebuilt on every add, delete and edit. A flow goes to bucket
//! `key(0)` with `key(o) = (o + hash_32(port + fold(saddr), 8)) & 255`, where `port` is the L4
//! source port with the `sh-port` flag (TCP, UDP, SCTP) and 0 otherwise. A backend with weight
//! <= 0 or OVERLOAD is unusable: without `sh-fallback` the pick fails; with it, buckets
//! `key((o + key(0)) % 256)` for `o = 0..255` are tried in turn.

use crate::hash::{fold, hash_32};
use crate::load::usable;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};
use std::sync::Arc;

pub const SH_TAB_BITS: u32 = 8;
const SH_TAB_SIZE: usize = 1 << SH_TAB_BITS;
const SH_TAB_MASK: u32 = (SH_TAB_SIZE as u32) - 1;
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct SourceHashing {
    buckets: Box<[u32; SH_TAB_SIZE]>,
    fallback: bool,
    port: bool,
}

impl SourceHashing {
    /// `fallback` = `sh-fallback` (SCHED1), `port` = `sh-port` (SCHED2).
    pub fn new(fallback: bool, port: bool) -> Self {
        SourceHashing {
            buckets: Box::new([EMPTY; SH_TAB_SIZE]),
            fallback,
            port,
        }
    }

    /// The backend position in each bucket (`None` when the list is empty).
    pub fn buckets(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.buckets
            .iter()
            .map(|&p| (p != EMPTY).then_some(p as usize))
    }

    #[inline]
    fn key(base: u32, offset: u32) -> usize {
        (offset.wrapping_add(base) & SH_TAB_MASK) as usize
    }
}

/// The L4 source port the kernel's `ip_vs_sh_get_port` / `ip_vs_mh_get_port` would read: TCP,
/// UDP and SCTP only, 0 for anything else.
#[inline]
pub(crate) fn l4_source_port(flow: &Flow) -> u16 {
    match flow.proto {
        6 | 17 | 132 => flow.sport,
        _ => 0,
    }
}

impl Scheduler for SourceHashing {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn update(&mut self, backends: &[BackendView], _change: Change) {
        if backends.is_empty() {
            self.buckets.fill(EMPTY);
            return;
        }
        let mut p = 0usize;
        let mut count: i64 = 0;
        for b in self.buckets.iter_mut() {
            *b = p as u32;
            count += 1;
            if count >= crate::load::weight(&backends[p]) {
                p = (p + 1) % backends.len();
                count = 0;
            }
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

impl TablePick for SourceHashing {
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        let port = if self.port { l4_source_port(flow) } else { 0 };
        let base = hash_32(u32::from(port).wrapping_add(fold(&flow.src)), SH_TAB_BITS);
        let ih = Self::key(base, 0);
        let usable_at = |slot: usize| -> Option<Option<usize>> {
            // Outer None: empty bucket. Inner None: a backend that is unusable.
            let pos = self.buckets[slot];
            if pos == EMPTY {
                return None;
            }
            let pos = pos as usize;
            Some(backends.get(pos).filter(|b| usable(load, b)).map(|_| pos))
        };
        if !self.fallback {
            return usable_at(ih).flatten();
        }
        match usable_at(ih)? {
            Some(pos) => Some(pos),
            None => (0..SH_TAB_SIZE as u32).find_map(|o| {
                let roffset = (o + ih as u32) % SH_TAB_SIZE as u32;
                usable_at(Self::key(base, roffset)).flatten()
            }),
        }
    }

    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};
    use crate::NoLoad;

    #[test]
    fn bucket_fill_by_current_weight() {
        // List order R3(1), R2(2), R1(1) -> R3, R2, R2, R1, R3, R2, R2, R1, ...
        let list = vec![be(3, 1), be(2, 2), be(1, 1)];
        let mut s = SourceHashing::new(false, false);
        s.update(&list, Change::Init);
        let ids: Vec<u32> = s.buckets().take(9).map(|p| list[p.unwrap()].id.0).collect();
        assert_eq!(ids, vec![3, 2, 2, 1, 3, 2, 2, 1, 3]);
        // Weight 0 takes one bucket per cycle, like weight 1.
        let list = vec![be(3, 0), be(2, 2)];
        s.update(&list, Change::Edit(0));
        let ids: Vec<u32> = s.buckets().take(6).map(|p| list[p.unwrap()].id.0).collect();
        assert_eq!(ids, vec![3, 2, 2, 3, 2, 2]);
    }

    #[test]
    fn lookup_plain_port_and_fallback() {
        // 4 backends of weight 1: bucket i -> position i % 4.
        let list = vec![be(4, 1), be(3, 1), be(2, 1), be(1, 1)];
        let mut s = SourceHashing::new(false, false);
        s.update(&list, Change::Init);
        // hash_32(0xc0a80001, 8) = 192 -> position 0.
        let f = flow([192, 168, 0, 1], 1234);
        assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), Some(0));

        // With sh-port the port is added before hashing.
        let mut sp = SourceHashing::new(false, true);
        sp.update(&list, Change::Init);
        let want = hash_32(0xc0a8_0001 + 1234, 8) as usize % 4;
        assert_eq!(sp.pick(&f, &list, &NoLoad, Time(0)), Some(want));
        // ICMP has no port.
        let mut icmp = f;
        icmp.proto = 1;
        assert_eq!(sp.pick(&icmp, &list, &NoLoad, Time(0)), Some(0));

        // Unusable home bucket: plain fails, fallback probes key((o + 192) % 256) for o = 0..:
        // o = 0 -> (192 + 192) & 255 = 128 -> position 0 again (unusable), o = 1 -> 129 -> 1.
        let mut load = TestLoad::default();
        load.overload(4, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
        let mut fb = SourceHashing::new(true, false);
        fb.update(&list, Change::Init);
        assert_eq!(fb.pick(&f, &list, &load, Time(0)), Some(1));
        load.overload(3, true);
        assert_eq!(fb.pick(&f, &list, &load, Time(0)), Some(2));
        for id in 1..=4 {
            load.overload(id, true);
        }
        assert_eq!(fb.pick(&f, &list, &load, Time(0)), None);
    }
}
