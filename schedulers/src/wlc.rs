//! Weighted least connection (`net/netfilter/ipvs/ip_vs_wlc.c`), the ipvsadm default.
//!
//! `least` is the first backend that is not OVERLOAD and has a positive weight; every later
//! non-OVERLOAD backend `d` replaces it when `oh(least) * w(d) > oh(d) * w(least)` in signed
//! 64-bit arithmetic, with `oh = (active << 8) + inactive`. Ties keep the earlier backend, and a
//! weight-0 backend can never win the comparison.

use std::sync::Arc;

use crate::load::wlc_pick;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedLeastConn;

impl WeightedLeastConn {
    pub fn new() -> Self {
        WeightedLeastConn
    }
}

impl Scheduler for WeightedLeastConn {
    fn name(&self) -> &'static str {
        "wlc"
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
        wlc_pick(backends, load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    #[test]
    fn weighted_cross_products_and_ties() {
        // A(w1) oh 256, B(w2) oh 512: 256*2 > 512*1 is false -> tie keeps A.
        let list = vec![be(1, 1), be(2, 2), be(3, 3)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.set(1, 1, 0).set(2, 2, 0).set(3, 3, 0);
        let mut s = WeightedLeastConn::new();
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        // One more inactive on A: 257*2 > 512 -> B; then C: 512*3 > 768*2 false -> B stays.
        load.set(1, 1, 1);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        // C lighter: 512*3 > 767*2 -> C.
        load.set(3, 2, 255);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
    }

    #[test]
    fn first_stage_needs_weight_second_only_not_overloaded() {
        // The first usable is B; A (weight 0, idle) cannot win the comparison later either.
        let list = vec![be(1, 0), be(2, 1), be(3, 0)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.set(2, 5, 0);
        let mut s = WeightedLeastConn::new();
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        load.overload(2, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
    }

    #[test]
    fn overloaded_skipped_in_second_stage() {
        let list = vec![be(1, 1), be(2, 1)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.set(1, 3, 0).overload(2, true);
        let mut s = WeightedLeastConn::new();
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
    }
}
