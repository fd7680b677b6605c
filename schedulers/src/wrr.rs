//! Weighted round robin (`net/netfilter/ipvs/ip_vs_wrr.c`).
//!
//! State: the current position `cl` (the list head or a backend), the current weight `cw`, the
//! maximum weight `mw` and the step `di` (the gcd of the positive weights). `mw` is the largest
//! weight reduced by `di - 1`, so that the last pass asks for weight >= 1. A pick continues after
//! `cl` and takes the first non-OVERLOAD backend with weight >= `cw`; at the end of the list `cw`
//! drops by `di` and the walk restarts at the head; when `cw` falls to 0 or below it wraps to
//! `mw`. The `last_pass` / `restarted` / `stop` logic ends the search after every backend was
//! tried for weight >= 1, so a pick fails instead of looping when all are OVERLOADed.
//!
//! Init sets `cw = mw`. Every add / delete / edit moves `cl` back to the head and recomputes `di`
//! and `mw`; `cw` is kept unless it is 0 or above the new `mw` (then `cw = mw`), and is rounded
//! to `(cw / di) * di + 1` when `di > 1`. Hence a service built by `-A` then one `-a` per backend
//! starts with `cw = 1`: one pass over every backend before the weighted rounds.

use crate::hash::gcd;
use crate::load::weight;
use crate::{BackendView, Change, Flow, Load, Scheduler, Time};

#[derive(Debug, Default, Clone)]
pub struct WeightedRoundRobin {
    /// `None` = the list head, `Some(i)` = list position `i`.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

impl WeightedRoundRobin {
    pub fn new() -> Self {
        WeightedRoundRobin {
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
        }
    }

    /// `(cw, mw, di)`, for tests and diagnostics.
    pub fn state(&self) -> (i64, i64, i64) {
        (self.cw, self.mw, self.di)
    }

    fn recompute(&mut self, backends: &[BackendView]) {
        let g = backends
            .iter()
            .map(weight)
            .filter(|&w| w > 0)
            .fold(0u64, |g, w| gcd(g, w as u64));
        self.di = if g == 0 { 1 } else { g as i64 };
        let max = backends.iter().map(weight).fold(0, i64::max);
        self.mw = max - (self.di - 1);
    }
}

impl Scheduler for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn update(&mut self, backends: &[BackendView], change: Change) {
        self.cl = None;
        self.recompute(backends);
        match change {
            Change::Init => self.cw = self.mw,
            Change::Add(_) | Change::Remove(_) | Change::Edit(_) => {
                if self.cw > self.mw || self.cw == 0 {
                    self.cw = self.mw;
                } else if self.di > 1 {
                    self.cw = (self.cw / self.di) * self.di + 1;
                }
            }
        }
    }

    fn pick(
        &mut self,
        _flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        _now: Time,
    ) -> Option<usize> {
        let n = backends.len();
        // A stale cursor (the caller skipped an update) counts as the head.
        let last = self.cl.filter(|&c| c < n);
        if self.mw <= 0 || n == 0 {
            self.cl = last;
            return None;
        }
        let mut pos = last;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        loop {
            let start = pos.map_or(0, |p| p + 1);
            for (i, d) in backends.iter().enumerate().skip(start) {
                if !load.overloaded(d.id) && weight(d) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};
    use crate::NoLoad;

    fn names(s: &mut WeightedRoundRobin, list: &[BackendView], k: usize) -> String {
        let f = flow([1, 2, 3, 4], 1000);
        (0..k)
            .map(|_| match s.pick(&f, list, &NoLoad, Time(0)) {
                Some(i) => (b'A' + (list[i].id.0 as u8)) as char,
                None => '-',
            })
            .collect()
    }

    /// List order A, B, C (A is the newest): ids 0, 1, 2 print as A, B, C.
    fn abc() -> Vec<BackendView> {
        vec![be(0, 4), be(1, 3), be(2, 2)]
    }

    #[test]
    fn bound_to_full_list_starts_at_mw() {
        let list = abc();
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        assert_eq!(s.state(), (4, 4, 1));
        assert_eq!(names(&mut s, &list, 18), "AABABCABCAABABCABC");
    }

    #[test]
    fn built_by_adds_starts_with_a_cw1_pass() {
        // -A then -a C, -a B, -a A: the list grows at the head.
        let full = abc();
        let mut s = WeightedRoundRobin::new();
        s.update(&[], Change::Init);
        assert_eq!(s.state(), (0, 0, 1));
        for k in (0..3).rev() {
            s.update(&full[k..], Change::Add(0));
        }
        assert_eq!(s.state().0, 1);
        assert_eq!(names(&mut s, &full, 12), "ABCAABABCABC");
    }

    #[test]
    fn gcd_step_100_50() {
        let list = vec![be(0, 100), be(1, 50)];
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        assert_eq!(s.state(), (51, 51, 50));
        assert_eq!(names(&mut s, &list, 6), "AABAAB");

        let mut s = WeightedRoundRobin::new();
        s.update(&[], Change::Init);
        s.update(&list[1..], Change::Add(0));
        s.update(&list, Change::Add(0));
        assert_eq!(names(&mut s, &list, 5), "ABAAB");
    }

    #[test]
    fn all_overloaded_fails_and_recovers() {
        let list = abc();
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), Some(0));
        let mut load = TestLoad::default();
        load.overload(0, true).overload(1, true).overload(2, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
        // Only C usable: it is found in the weight >= 1 pass.
        load.overload(2, false);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), Some(2));
    }

    #[test]
    fn weight_zero_quiesces_and_all_zero_fails() {
        let list = vec![be(0, 0), be(1, 2)];
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        assert_eq!(names(&mut s, &list, 4), "BBBB");
        let zero = vec![be(0, 0), be(1, 0)];
        s.update(&zero, Change::Edit(1));
        assert_eq!(names(&mut s, &zero, 2), "--");
    }

    #[test]
    fn edit_restarts_at_head_and_keeps_cw() {
        let mut list = abc();
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        assert_eq!(names(&mut s, &list, 3), "AAB"); // cw is now 3, cl = B
        list[2].weight = 3; // C 2 -> 3: mw stays 4, cw 3 kept, walk from head
        s.update(&list, Change::Edit(2));
        assert_eq!(s.state(), (3, 4, 1));
        assert_eq!(names(&mut s, &list, 3), "ABC");
    }

    #[test]
    fn stale_cursor_does_not_panic() {
        let list = abc();
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        for _ in 0..5 {
            s.pick(&flow([1, 1, 1, 1], 1), &list, &NoLoad, Time(0));
        }
        // The caller shrank the list without telling us.
        let short = &list[..1];
        assert_eq!(
            s.pick(&flow([1, 1, 1, 1], 1), short, &NoLoad, Time(0)),
            Some(0)
        );
    }
}
