//! Shortest expected delay (`net/netfilter/ipvs/ip_vs_sed.c`).
//!
//! wlc with the overhead `active + 1` (inactive connections ignored): the expected delay of a
//! new connection on backend `d` is `(active(d) + 1) / w(d)`. Same two-stage loop and signed
//! 64-bit cross products as wlc, ties to the earlier backend.

use std::sync::Arc;

use crate::load::weighted_least;
use crate::{BackendLoad, BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

/// `ip_vs_sed_dest_overhead`: `activeconns + 1` as a C `int`.
#[inline]
pub(crate) fn sed_overhead(l: &BackendLoad) -> i64 {
    i64::from((l.active as i32).wrapping_add(1))
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ShortestExpectedDelay;

impl ShortestExpectedDelay {
    pub fn new() -> Self {
        ShortestExpectedDelay
    }
}

impl Scheduler for ShortestExpectedDelay {
    fn name(&self) -> &'static str {
        "sed"
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
        weighted_least(backends, load, sed_overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};

    #[test]
    fn expected_delay_ignores_inactive() {
        let list = vec![be(1, 1), be(2, 3)];
        let f = flow([1, 2, 3, 4], 5);
        let mut load = TestLoad::default();
        let mut s = ShortestExpectedDelay::new();
        // Idle: (0+1)*3 > (0+1)*1 -> B, the heavier one, even when idle.
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
        // B with 2 active: 1*3 > 3*1 false -> tie keeps A.
        load.set(2, 2, 0).set(1, 0, 1000);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(0));
        load.set(2, 1, 0);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(1));
    }
}
