//! Least connection (`net/netfilter/ipvs/ip_vs_lc.c`).
//!
//! Among backends that are not OVERLOAD and have a positive weight, the one with the smallest
//! overhead `(active << 8) + inactive` wins; strict `<`, so ties go to the earliest backend in
//! list order. Weights other than 0 play no part.

use std::sync::Arc;

use crate::load::weight;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

#[derive(Debug, Default, Clone, Copy)]
pub struct LeastConn;

impl LeastConn {
    pub fn new() -> Self {
        LeastConn
    }
}

impl Scheduler for LeastConn {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn update(&mut self, _backends: &[BackendView], _change: Change) {}

    fn lock_free(&self) -> Option<Arc<dyn TablePick>> {
        Some(crate::stateless(self))
    }

    fn pick(
        &mut self,
        _flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        _now: Time,
    ) -> Option<usize> {
        let mut least: Option<(usize, i32)> = None;
        for (i, d) in backends.iter().enumerate() {
            let l = load.backend_load(d.id);
            if l.overloaded || weight(d) <= 0 {
                continue;
            }
            let doh = l.overhead();
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    #[test]
    fn smallest_overhead_ties_to_first() {
        let list = vec![be(1, 1), be(2, 5), be(3, 1)];
        let f = flow([1, 2, 3, 4], 5);
        let mut s = LeastConn::new();
        let mut load = TestLoad::default();
        // All idle: the first wins.
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        // 1 active = 256 inactive: backend 1 (1 active) vs backend 2 (255 inactive) vs 3 (256).
        load.set(1, 1, 0).set(2, 0, 255).set(3, 0, 256);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        load.set(2, 0, 256);
        // 1 and 2 and 3 all at 256: the first in list order.
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        // Weight is ignored except for 0.
        load.set(1, 0, 300);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
    }

    #[test]
    fn skips_overloaded_and_quiesced() {
        let list = vec![be(1, 0), be(2, 1), be(3, 1)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.set(2, 0, 0).set(3, 0, 10).overload(2, true);
        let mut s = LeastConn::new();
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
        load.overload(3, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
    }
}
