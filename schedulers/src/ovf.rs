//! Overflow connection (`net/netfilter/ipvs/ip_vs_ovf.c`).
//!
//! Keeps sending to the highest-weight backend until its active connections exceed its weight,
//! then overflows to the next. A backend is skipped when OVERLOAD, weight 0 or
//! `active > weight` (equal is still eligible); among the rest the highest weight wins, ties to
//! the earliest in list order. Inactive connections (and so all UDP) are not counted.

use std::sync::Arc;

use crate::load::weight;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

#[derive(Debug, Default, Clone, Copy)]
pub struct Overflow;

impl Overflow {
    pub fn new() -> Self {
        Overflow
    }
}

impl Scheduler for Overflow {
    fn name(&self) -> &'static str {
        "ovf"
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
            let w = weight(d);
            let l = load.backend_load(d.id);
            if l.overloaded || i64::from(l.active as i32) > w || w == 0 {
                continue;
            }
            if best.is_none() || w > hw {
                best = Some(i);
                hw = w;
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
    fn overflows_when_active_exceeds_weight() {
        let list = vec![be(1, 1), be(2, 3), be(3, 3)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        let mut s = Overflow::new();
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        // active == weight is still eligible; inactive is ignored.
        load.set(2, 3, 900);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        load.set(2, 4, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
        load.set(3, 4, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        load.set(1, 2, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
    }
}
