//! Weighted failover (`net/netfilter/ipvs/ip_vs_fo.c`).
//!
//! The non-OVERLOAD backend with the highest weight (> 0) takes every new connection; strict
//! `>`, so ties go to the earliest backend in list order. Connection counts play no part.

use std::sync::Arc;

use crate::load::weight;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedFailover;

impl WeightedFailover {
    pub fn new() -> Self {
        WeightedFailover
    }
}

impl Scheduler for WeightedFailover {
    fn name(&self) -> &'static str {
        "fo"
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
        let mut best: Option<usize> = None;
        let mut hw = 0i64;
        for (i, d) in backends.iter().enumerate() {
            if !load.overloaded(d.id) && weight(d) > hw {
                best = Some(i);
                hw = weight(d);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    #[test]
    fn highest_weight_first_on_ties() {
        let list = vec![be(1, 2), be(2, 5), be(3, 5), be(4, 0)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.set(2, 1000, 1000);
        let mut s = WeightedFailover::new();
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        load.overload(2, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
        load.overload(3, true).overload(1, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
    }
}
