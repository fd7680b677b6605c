//! Never queue (`net/netfilter/ipvs/ip_vs_nq.c`).
//!
//! Over backends that are not OVERLOAD and have a positive weight, in list order: the first one
//! with no active connection is taken at once; otherwise the result is sed's (overhead
//! `active + 1`, `oh(least) * w(d) > oh(d) * w(least)` in signed 64 bits, ties to the earlier).

use std::sync::Arc;

use crate::load::weight;
use crate::sed::sed_overhead;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

#[derive(Debug, Default, Clone, Copy)]
pub struct NeverQueue;

impl NeverQueue {
    pub fn new() -> Self {
        NeverQueue
    }
}

impl Scheduler for NeverQueue {
    fn name(&self) -> &'static str {
        "nq"
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
        let mut least: Option<(usize, i64, i64)> = None;
        for (i, d) in backends.iter().enumerate() {
            let l = load.backend_load(d.id);
            if l.overloaded || weight(d) <= 0 {
                continue;
            }
            if l.active == 0 {
                return Some(i);
            }
            let doh = sed_overhead(&l);
            let dw = weight(d);
            if least.is_none_or(|(_, loh, lw)| loh * dw > doh * lw) {
                least = Some((i, doh, dw));
            }
        }
        least.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    #[test]
    fn idle_backend_wins_at_once() {
        let list = vec![be(1, 1), be(2, 10), be(3, 1)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        load.set(1, 1, 0).set(2, 1, 0);
        let mut s = NeverQueue::new();
        // C is idle (active 0) even though B has a far better expected delay.
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
        // Inactive connections do not count as queued.
        load.set(3, 0, 500);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
        // Nobody idle: sed decides, (1+1)*10 > (1+1)*1 -> B.
        load.set(3, 4, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        // An idle but quiesced or overloaded backend is skipped.
        let list2 = vec![be(1, 0), be(2, 1)];
        load.set(1, 0, 0).overload(2, true);
        assert_eq!(s.pick(&f, &list2, &load, Time(0)), None);
    }
}
