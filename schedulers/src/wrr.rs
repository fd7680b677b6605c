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
//!
//! Shared by several workers ([`Scheduler::lock_free`]), the state a pick changes (`cl` and
//! `cw`) is one atomic word; `mw` and `di` change only on update, which builds a new shared
//! scheduler. A pick reads the word, computes the kernel's next pick from it (a failing pick
//! moves `cl` and `cw` too) and stores the result with a compare-and-swap from the value it
//! read, starting over from the new value when another worker's pick took effect first. Each
//! pick that takes effect is then one step of the sequence a single kernel would produce, in
//! the order of the swaps. The word holds `cw` as an `i32` (the kernel's `int`: weights are
//! read as `int`, so `mw` and every stored `cw` fit) and `cl` as a `u32` whose largest value is
//! the head; a scheduler whose `cw`, `mw` or `di` does not fit an `i32` has no lock-free pick,
//! and a lock-free pick on a list of `u32::MAX` backends or more fails.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::hash::gcd;
use crate::load::weight;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

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

    fn lock_free(&self) -> Option<Arc<dyn TablePick>> {
        i32::try_from(self.mw).ok()?;
        i32::try_from(self.di).ok()?;
        Some(Arc::new(SharedWeightedRoundRobin {
            state: AtomicU64::new(encode(self.cl, self.cw)?),
            mw: self.mw,
            di: self.di,
        }))
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

/// `cl` in the word's high half: this value is the list head.
const HEAD: u32 = u32::MAX;

/// `(cl, cw)` as one word: `cl` in the high 32 bits (the head as [`HEAD`]), `cw` as an `i32` in
/// the low 32 bits. `None` when a position is [`HEAD`] or above, or `cw` does not fit an `i32`.
fn encode(cl: Option<usize>, cw: i64) -> Option<u64> {
    let cl = match cl {
        None => HEAD,
        Some(i) => u32::try_from(i).ok().filter(|&i| i != HEAD)?,
    };
    let cw = i32::try_from(cw).ok()?;
    Some(u64::from(cl) << 32 | u64::from(cw as u32))
}

/// The `(cl, cw)` of a word made by [`encode`].
fn decode(state: u64) -> (Option<usize>, i64) {
    let cl = (state >> 32) as u32;
    let cw = i64::from(state as u32 as i32);
    ((cl != HEAD).then_some(cl as usize), cw)
}

/// wrr with `cl` and `cw` in one atomic word, picked through `&self` (see the module header).
#[derive(Debug)]
struct SharedWeightedRoundRobin {
    state: AtomicU64,
    mw: i64,
    di: i64,
}

impl SharedWeightedRoundRobin {
    fn scheduler(&self, state: u64) -> WeightedRoundRobin {
        let (cl, cw) = decode(state);
        WeightedRoundRobin {
            cl,
            cw,
            mw: self.mw,
            di: self.di,
        }
    }
}

impl TablePick for SharedWeightedRoundRobin {
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        // Every position of such a list is below `HEAD`, so `cl` after a pick is encoded.
        if backends.len() > HEAD as usize {
            return None;
        }
        let mut seen = self.state.load(Relaxed);
        loop {
            let mut wrr = self.scheduler(seen);
            let picked = wrr.pick(flow, backends, load, Time(0));
            // After a pick `cw` is the value read, `mw`, or one of the values between them,
            // all `i32`s; `None` is not reached.
            let next = encode(wrr.cl, wrr.cw)?;
            if next == seen {
                // The state read is the state after this pick.
                return picked;
            }
            // The strong compare-and-swap fails only when the word is no longer `seen`, that
            // is when another worker's pick took effect since it was read: each retry follows
            // a pick that completed. A word that changed and came back to `seen` in between
            // gives the same next step, which is computed from the word alone.
            match self.state.compare_exchange(seen, next, Relaxed, Relaxed) {
                Ok(_) => return picked,
                Err(now) => seen = now,
            }
        }
    }

    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(self.scheduler(self.state.load(Relaxed)))
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

    /// xorshift64: the random stream of the tests below.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// A weight drawn from small ones, multiples of 50 (gcd steps), 0, and one beyond the
    /// kernel's `int` (read as negative). (Weights near `i32::MAX` with every backend
    /// OVERLOADed make a pick walk the list `mw / di` times: `state_word_bounds` covers them.)
    fn any_weight(x: &mut u64) -> u32 {
        match next(x) % 8 {
            0 => 0,
            1 => 50 * (1 + (next(x) % 4) as u32),
            2 => 3_000_000_000,
            _ => 1 + (next(x) % 6) as u32,
        }
    }

    /// The lock-free pick gives the locked pick's answers and leaves its state, pick after pick,
    /// over random weights, OVERLOAD patterns and updates; each update is made as the control
    /// plane makes it: on the shared scheduler's state ([`TablePick::to_scheduler`]), then a
    /// new shared scheduler from the result.
    #[test]
    fn lock_free_follows_pick_through_updates() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let n = 1 + (next(&mut x) % 6) as usize;
            let mut list: Vec<BackendView> =
                (0..n as u32).map(|i| be(i, any_weight(&mut x))).collect();
            let mut fresh = n as u32;
            let mut s = WeightedRoundRobin::new();
            if round % 2 == 0 {
                s.update(&list, Change::Init);
            } else {
                crate::init_by_adds(&mut s, &list);
            }
            let mut t = s.lock_free().expect("weights fit an int");
            let f = flow([10, 0, 0, 1], 1000);
            for k in 0..300 {
                if next(&mut x).is_multiple_of(40) {
                    let change = match next(&mut x) % 3 {
                        0 => {
                            list.insert(0, be(fresh, any_weight(&mut x)));
                            fresh += 1;
                            Change::Add(0)
                        }
                        1 if list.len() > 1 => {
                            let pos = (next(&mut x) % list.len() as u64) as usize;
                            list.remove(pos);
                            Change::Remove(pos)
                        }
                        _ => {
                            let pos = (next(&mut x) % list.len() as u64) as usize;
                            list[pos].weight = any_weight(&mut x);
                            Change::Edit(pos)
                        }
                    };
                    s.update(&list, change);
                    let mut u = t.to_scheduler();
                    u.update(&list, change);
                    t = u.lock_free().expect("weights fit an int");
                }
                let mut load = TestLoad::default();
                let all = next(&mut x).is_multiple_of(10);
                for b in &list {
                    load.overload(b.id.0, all || next(&mut x).is_multiple_of(4));
                }
                let want = s.pick(&f, &list, &load, Time(0));
                assert_eq!(
                    want,
                    t.pick_table(&f, &list, &load),
                    "round {round} pick {k}"
                );
                assert_eq!(
                    format!("{s:?}"),
                    format!("{:?}", t.to_scheduler()),
                    "round {round} pick {k}"
                );
            }
        }
    }

    /// Two threads picking from one shared scheduler at once: together they get the first
    /// picks of the sequence of one scheduler, each exactly as often, and leave its state.
    #[test]
    fn concurrent_picks_are_the_first_of_the_sequence() {
        let list = vec![be(0, 5), be(1, 3), be(2, 7), be(3, 2), be(4, 4)];
        let mut load = TestLoad::default();
        load.overload(3, true);
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        let t = s.lock_free().expect("small weights");
        let per_thread = 20_000;
        let start = std::sync::Barrier::new(2);
        let mut got = [0usize; 6];
        std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| {
                        let f = flow([10, 0, 0, 2], 2000);
                        start.wait();
                        (0..per_thread)
                            .map(|_| t.pick_table(&f, &list, &load))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in hs {
                for p in h.join().expect("picking thread") {
                    got[p.unwrap_or(5)] += 1;
                }
            }
        });
        let mut want = [0usize; 6];
        let f = flow([10, 0, 0, 2], 2000);
        for _ in 0..2 * per_thread {
            want[s.pick(&f, &list, &load, Time(0)).unwrap_or(5)] += 1;
        }
        assert_eq!(got, want);
        assert_eq!(format!("{s:?}"), format!("{:?}", t.to_scheduler()));
    }

    /// The word's bounds: positions below `HEAD` and `cw` in an `i32` round-trip; a state
    /// outside them gives no lock-free pick.
    #[test]
    fn state_word_bounds() {
        for (cl, cw) in [
            (None, 0),
            (Some(0), 1),
            (Some(HEAD as usize - 1), i64::from(i32::MAX)),
            (None, i64::from(i32::MIN)),
        ] {
            assert_eq!(encode(cl, cw).map(decode), Some((cl, cw)));
        }
        assert_eq!(encode(Some(HEAD as usize), 1), None);
        assert_eq!(encode(None, i64::from(i32::MAX) + 1), None);
        let s = WeightedRoundRobin {
            cl: None,
            cw: 1,
            mw: i64::from(i32::MAX) + 1,
            di: 1,
        };
        assert!(s.lock_free().is_none());
        // gcd i32::MAX (u32::MAX reads as -1): di = i32::MAX, mw = 1.
        let list = vec![be(0, i32::MAX as u32), be(1, u32::MAX)];
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        assert_eq!(s.state(), (1, 1, i64::from(i32::MAX)));
        let t = s.lock_free().expect("di is an int");
        let f = flow([1, 1, 1, 1], 1);
        assert_eq!(t.pick_table(&f, &list, &NoLoad), Some(0));
        assert_eq!(t.pick_table(&f, &list, &NoLoad), Some(0));
        // mw = i32::MAX: cw counts down from it.
        let list = vec![be(0, i32::MAX as u32), be(1, 1)];
        let mut s = WeightedRoundRobin::new();
        s.update(&list, Change::Init);
        assert_eq!(s.state(), (i64::from(i32::MAX), i64::from(i32::MAX), 1));
        let t = s.lock_free().expect("mw is an int");
        for _ in 0..5 {
            assert_eq!(t.pick_table(&f, &list, &NoLoad), Some(0));
            assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), Some(0));
        }
        assert_eq!(format!("{s:?}"), format!("{:?}", t.to_scheduler()));
    }
}
