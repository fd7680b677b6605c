//! Per-backend connection counts, kept exactly as IPVS keeps them in `struct ip_vs_dest`
//! (`ip_vs_bind_dest` / `ip_vs_unbind_dest` in `net/netfilter/ipvs/ip_vs_conn.c`, state moves in
//! `set_tcp_state`, `ip_vs_proto_tcp.c`).
//!
//! * A new entry is bound inactive (`inactconns + 1`); a persistence template counts in
//!   `persistconns` instead.
//! * A state change into ESTABLISHED moves one count inactive → active, out of it the reverse
//!   (only ESTABLISHED is active).
//! * Removing an entry decrements the counter its INACTIVE flag (or TEMPLATE) names.
//! * OVERLOAD, with `total = active + inactive` (templates excluded): set at bind when
//!   `upper != 0 && total >= upper`; at unbind cleared when `lower != 0 && total < lower`, else
//!   when `upper != 0 && total * 4 < upper * 3` (the 3/4 rule), else unconditionally. It is never
//!   re-evaluated on state changes.
//!
//! **One director, several workers.** The counts are the director's: every worker's scheduler
//! reads every worker's connections. They are kept in rows, one per worker (16-byte cells, 4
//! backends to a 64-byte cache line, each row an allocation of whole lines) and a shared row:
//! a worker's connection table binds, unbinds and moves counts in its own row only, and a
//! count is read as the sum over the rows. The kernel keeps one `atomic_t` per counter, which
//! every CPU writes; here no cache line is written by two workers, and a worker's row, having
//! one writer, is written with plain loads and stores: a new connection on one worker neither
//! takes the line of the counter away from the other nor stalls on a locked instruction
//! while the other holds the line (the costs `benches/scaling.rs` measures). The thresholds
//! and the OVERLOAD flag are one per backend, written only on a threshold edit or when
//! OVERLOAD changes. A worker's row belongs to the first handle made for that worker
//! ([`BackendCounts::for_worker`]); any other handle writes the shared row with atomic
//! read-modify-writes, and reads include the shared row only once it has been written. A flag
//! spares the common case the meta lines: until a threshold is set anywhere, a bind or unbind
//! touches its own row only and OVERLOAD reads as clear.
//!
//! What is still shared, and costs: a scheduler that reads counts (lc, wlc, …) reads the other
//! workers' rows on every pick, so a worker whose row changed since (a connection bound or
//! unbound there) has to hand that cache line over — one transfer per new connection on each
//! side while both workers open connections, which is what exactness requires: a pick must see
//! every bind that happened before it, on any worker.
//!
//! Why the sums decide as the kernel's counters do:
//! * A row is written by one handle (a worker's row) or only atomically (the shared row), and
//!   counts that table's entries, so each row is ≥ 0 and the wrapping sum of the rows is the
//!   number of the director's entries in that state; a decrement saturates at zero as the
//!   single counter did before (entries still bound after a [`BackendCounts::reset`]).
//! * A scheduler reading the sum while another worker binds sees that bind or not, as a
//!   kernel scheduler reading `atomic_read(&dest->inactconns)` while another CPU binds does.
//! * The OVERLOAD test after a bind is the kernel's (the increment, then the total read back).
//!   With a threshold set, the increment is a sequentially consistent read-modify-write and
//!   the reads of the total are sequentially consistent, so of two binds on two workers the
//!   later one in that order reads both increments (the store-buffer race in which each
//!   misses the other's cannot happen), as the later of two `atomic_inc`s on one counter
//!   does: the bind that brings the total to `upper` sets OVERLOAD, whichever worker makes
//!   it. Unbinds with a threshold likewise.
//! * OVERLOAD is written only when it changes (set when clear, cleared when set), which leaves
//!   the same flag as the kernel's unconditional writes.

use std::sync::atomic::{
    AtomicBool, AtomicU32, Ordering,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;

use xvs_schedulers::{BackendId, BackendLoad, Load};

/// One worker's counters of one backend (16 bytes).
#[derive(Debug, Default)]
struct Cell {
    active: AtomicU32,
    inactive: AtomicU32,
    persist: AtomicU32,
    _pad: u32,
}

/// Backends per cache line of a row.
const PER_LINE: usize = 4;

/// Four backends' cells of one row: one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line([Cell; PER_LINE]);

/// A backend's thresholds and OVERLOAD flag (one for all workers; 16 bytes).
#[derive(Debug, Default)]
struct Meta {
    upper: AtomicU32,
    lower: AtomicU32,
    overloaded: AtomicBool,
}

/// Four backends' [`Meta`]: one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct MetaLine([Meta; PER_LINE]);

/// `v + 1` as a sequentially consistent read-modify-write (see the module header).
#[inline]
fn inc_sc(a: &AtomicU32) {
    a.fetch_add(1, SeqCst);
}

/// `v - 1`, saturating at zero, as a sequentially consistent read-modify-write.
#[inline]
fn dec_sc(a: &AtomicU32) {
    let _ = a.fetch_update(SeqCst, Relaxed, |v| v.checked_sub(1));
}

/// The counters of every backend, in rows sized at start. Every part read on the packet path
/// (this header, the meta lines, the rows) is in cache lines of its own, so no write elsewhere
/// in the heap (another worker's counters, say) takes them away from a reader.
#[derive(Debug)]
#[repr(align(64))]
struct Rows {
    meta: Box<[MetaLine]>,
    /// `shards` rows (one per worker, then the shared row) of a line per 4 backends, each its
    /// own allocation.
    lines: Box<[Arc<[Line]>]>,
    /// Whether worker `w`'s row has its handle (one per worker row).
    claimed: Box<[AtomicBool]>,
    /// The shared row has been written (until then reads skip it).
    shared_used: AtomicBool,
    /// Some backend has had a threshold set. Until then OVERLOAD is clear everywhere and a
    /// bind or unbind has no threshold to test, so it skips the meta lines.
    thresholds: AtomicBool,
    backends: usize,
    shards: usize,
}

impl Rows {
    /// Backend `id`'s thresholds and flag. The last line's entries past the array are never
    /// set (every write to a threshold checks the id), so they read as no threshold and
    /// OVERLOAD clear.
    #[inline]
    fn meta(&self, id: BackendId) -> Option<&Meta> {
        let i = id.0 as usize;
        Some(&self.meta.get(i / PER_LINE)?.0[i % PER_LINE])
    }

    /// Backend `id`'s cell in row `shard`.
    #[inline]
    fn cell(&self, shard: usize, id: BackendId) -> Option<&Cell> {
        let i = id.0 as usize;
        if i >= self.backends {
            return None;
        }
        Some(&self.lines.get(shard)?.get(i / PER_LINE)?.0[i % PER_LINE])
    }

    /// The sum over the rows of one counter of backend `id` (0 outside the array).
    #[inline]
    fn sum(&self, id: BackendId, f: impl Fn(&Cell) -> &AtomicU32, order: Ordering) -> u32 {
        self.cells(id, order)
            .fold(0u32, |sum, c| sum.wrapping_add(f(c).load(order)))
    }

    /// Backend `id`'s cell in every row that has been written (none outside the array): the
    /// workers' rows, and the shared row once a handle wrote it.
    #[inline]
    fn cells(&self, id: BackendId, order: Ordering) -> impl Iterator<Item = &Cell> {
        let i = id.0 as usize;
        let rows = if i >= self.backends {
            0
        } else if self.shared_used.load(order) {
            self.shards
        } else {
            self.shards - 1
        };
        self.lines[..rows.min(self.lines.len())]
            .iter()
            .filter_map(move |r| r.get(i / PER_LINE))
            .map(move |l| &l.0[i % PER_LINE])
    }

    /// IPVS `ip_vs_dest_totalconns`: active + inactive (templates excluded), read after a
    /// bind or unbind (sequentially consistent).
    #[inline]
    fn total(&self, id: BackendId) -> u64 {
        u64::from(self.sum(id, |c| &c.active, SeqCst))
            + u64::from(self.sum(id, |c| &c.inactive, SeqCst))
    }
}

/// Counters of every backend, in an array sized at start, shared by all workers of a
/// director: each handle binds in a row ([`BackendCounts::for_worker`]) and reads the sums of
/// all rows. A handle fills a cache line of its own (it is read on every count operation).
#[derive(Debug)]
#[repr(align(64))]
pub struct BackendCounts {
    rows: Arc<Rows>,
    /// This handle's row: its number and its lines.
    shard: usize,
    own: Arc<[Line]>,
    /// [`Rows::backends`] again, at hand for [`Self::contains`].
    backends: usize,
    /// The row is this handle's alone (a worker's row it claimed): its counters are written
    /// with plain loads and stores, which never stall the worker the way a locked
    /// read-modify-write does while another worker holds the line. Otherwise (the shared row)
    /// every change is an atomic read-modify-write.
    exclusive: bool,
}

impl BackendCounts {
    /// Counters for backends `0..backends`, for one worker (this handle's row is its own, see
    /// [`Self::for_worker`]).
    pub fn new(backends: u32) -> Self {
        Self::with_workers(backends, 1).for_worker(0)
    }

    /// Counters for backends `0..backends`, with a row for each of `workers` workers (see
    /// [`Self::for_worker`]) and a shared row, which this handle binds in.
    pub fn with_workers(backends: u32, workers: u16) -> Self {
        let workers = usize::from(workers.max(1));
        let shards = workers + 1;
        let per_row = (backends as usize).div_ceil(PER_LINE);
        let rows = Arc::new(Rows {
            meta: (0..per_row).map(|_| MetaLine::default()).collect(),
            backends: backends as usize,
            lines: (0..shards)
                .map(|_| (0..per_row).map(|_| Line::default()).collect())
                .collect(),
            claimed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            thresholds: AtomicBool::new(false),
            shared_used: AtomicBool::new(false),
            shards,
        });
        BackendCounts {
            own: rows.lines[workers].clone(),
            backends: rows.backends,
            rows,
            shard: workers,
            exclusive: false,
        }
    }

    /// A handle on the same counters for worker `worker`: it binds in that worker's row,
    /// which is then its alone until it is dropped (its binds must come from one thread at a
    /// time: the connection table that owns it). Should the row already have a handle
    /// (two pipelines built for one worker number) or `worker` have no row, the handle binds
    /// in the shared row instead, which every such handle writes atomically: the counts stay
    /// exact either way.
    pub fn for_worker(&self, worker: u16) -> BackendCounts {
        let w = usize::from(worker);
        let exclusive = self
            .rows
            .claimed
            .get(w)
            .is_some_and(|c| !c.swap(true, SeqCst));
        let shard = if exclusive { w } else { self.rows.shards - 1 };
        BackendCounts {
            rows: self.rows.clone(),
            shard,
            // `shard` is a worker's row or the last: always a row.
            own: self.rows.lines[shard].clone(),
            backends: self.backends,
            exclusive,
        }
    }

    /// Backend `id`'s cell in this handle's row. An id past the array but within its last
    /// line gets that line's spare cell, which no read looks at ([`Rows::cells`] checks the
    /// id); beyond it, nothing.
    #[inline]
    fn own_cell(&self, id: BackendId) -> Option<&Cell> {
        let i = id.0 as usize;
        Some(&self.own.get(i / PER_LINE)?.0[i % PER_LINE])
    }

    /// Backend `id`'s thresholds and flag, and its cell in this handle's row.
    #[inline]
    fn own(&self, id: BackendId) -> Option<(&Meta, &Cell)> {
        Some((self.rows.meta(id)?, self.own_cell(id)?))
    }

    /// `v + 1` on a counter of this handle's row (a count cannot reach 2^32: it counts
    /// entries of tables of fewer slots).
    #[inline]
    fn inc(&self, a: &AtomicU32) {
        if self.exclusive {
            a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
        } else {
            self.shared_row_used();
            a.fetch_add(1, SeqCst);
        }
    }

    /// Before a write to the shared row: make the reads include it.
    #[inline]
    fn shared_row_used(&self) {
        if !self.exclusive && !self.rows.shared_used.load(Relaxed) {
            self.rows.shared_used.store(true, SeqCst);
        }
    }

    /// `v - 1`, saturating at zero, on a counter of this handle's row.
    #[inline]
    fn dec(&self, a: &AtomicU32) {
        if self.exclusive {
            let v = a.load(Relaxed);
            if v > 0 {
                a.store(v - 1, Relaxed);
            }
        } else {
            self.shared_row_used();
            let _ = a.fetch_update(SeqCst, Relaxed, |v| v.checked_sub(1));
        }
    }

    /// How many backends these counters cover.
    pub fn len(&self) -> u32 {
        self.rows.backends as u32
    }

    pub fn is_empty(&self) -> bool {
        self.rows.backends == 0
    }

    /// Whether `id` is within the array.
    #[inline]
    pub fn contains(&self, id: BackendId) -> bool {
        (id.0 as usize) < self.backends
    }

    /// IPVS `persistconns`: templates bound to this backend.
    pub fn persistent(&self, id: BackendId) -> u32 {
        self.rows.sum(id, |c| &c.persist, Relaxed)
    }

    /// The thresholds in force (upper, lower); 0 = none.
    pub fn thresholds(&self, id: BackendId) -> (u32, u32) {
        self.rows
            .meta(id)
            .map_or((0, 0), |m| (m.upper.load(Relaxed), m.lower.load(Relaxed)))
    }

    /// Set a backend's thresholds as `__ip_vs_update_dest` does: OVERLOAD is cleared when the
    /// new upper threshold is 0 or above the old one; the counts stay.
    pub fn set_thresholds(&self, id: BackendId, upper: u32, lower: u32) {
        let Some(m) = self.rows.meta(id).filter(|_| self.contains(id)) else {
            return;
        };
        if (upper != 0 || lower != 0) && !self.rows.thresholds.load(Relaxed) {
            self.rows.thresholds.store(true, SeqCst);
        }
        let old = m.upper.swap(upper, Relaxed);
        if upper == 0 || upper > old {
            m.overloaded.store(false, Relaxed);
        }
        m.lower.store(lower, Relaxed);
    }

    /// Forget a backend's counters in every row (its id is reused for another backend).
    /// Entries still bound to it must be gone first, or their unbinding will saturate at zero.
    pub fn reset(&self, id: BackendId) {
        let Some(m) = self.rows.meta(id) else {
            return;
        };
        for shard in 0..self.rows.shards {
            if let Some(c) = self.rows.cell(shard, id) {
                c.active.store(0, Relaxed);
                c.inactive.store(0, Relaxed);
                c.persist.store(0, Relaxed);
            }
        }
        m.upper.store(0, Relaxed);
        m.lower.store(0, Relaxed);
        m.overloaded.store(false, Relaxed);
    }

    /// `ip_vs_bind_dest`: a new entry (inactive) or template.
    #[inline]
    pub(crate) fn bind(&self, id: BackendId, template: bool) {
        if !self.rows.thresholds.load(Relaxed) {
            if let Some(c) = self.own_cell(id) {
                self.inc(if template { &c.persist } else { &c.inactive });
            }
            return;
        }
        let Some((m, c)) = self.own(id) else {
            return;
        };
        let a = if template { &c.persist } else { &c.inactive };
        let upper = m.upper.load(Relaxed);
        if upper == 0 {
            self.inc(a);
        } else {
            self.bind_upper(id, m, a, upper);
        }
    }

    /// [`Self::bind`] with an upper threshold: the increment, then the total read back, both
    /// sequentially consistent.
    #[cold]
    #[inline(never)]
    fn bind_upper(&self, id: BackendId, m: &Meta, a: &AtomicU32, upper: u32) {
        self.shared_row_used();
        inc_sc(a);
        if self.rows.total(id) >= u64::from(upper) && !m.overloaded.load(Relaxed) {
            m.overloaded.store(true, Relaxed);
        }
    }

    /// `ip_vs_unbind_dest`.
    #[inline]
    pub(crate) fn unbind(&self, id: BackendId, template: bool, inactive: bool) {
        if !self.rows.thresholds.load(Relaxed) {
            if let Some(c) = self.own_cell(id) {
                self.dec(if template {
                    &c.persist
                } else if inactive {
                    &c.inactive
                } else {
                    &c.active
                });
            }
            return;
        }
        let Some((m, c)) = self.own(id) else {
            return;
        };
        let a = if template {
            &c.persist
        } else if inactive {
            &c.inactive
        } else {
            &c.active
        };
        let (upper, lower) = (m.upper.load(Relaxed), m.lower.load(Relaxed));
        if upper == 0 && lower == 0 {
            self.dec(a);
            if m.overloaded.load(Relaxed) {
                m.overloaded.store(false, Relaxed);
            }
        } else {
            self.unbind_thresholds(id, m, a, upper, lower);
        }
    }

    /// [`Self::unbind`] with a threshold: the decrement, then the total read back, both
    /// sequentially consistent.
    #[cold]
    #[inline(never)]
    fn unbind_thresholds(&self, id: BackendId, m: &Meta, a: &AtomicU32, upper: u32, lower: u32) {
        self.shared_row_used();
        dec_sc(a);
        let total = self.rows.total(id);
        let clear = if lower != 0 {
            total < u64::from(lower)
        } else {
            total * 4 < u64::from(upper) * 3
        };
        if clear && m.overloaded.load(Relaxed) {
            m.overloaded.store(false, Relaxed);
        }
    }

    /// A bound entry became active (entered ESTABLISHED).
    #[inline]
    pub(crate) fn activate(&self, id: BackendId) {
        if let Some((_, c)) = self.own(id) {
            self.dec(&c.inactive);
            self.inc(&c.active);
        }
    }

    /// A bound entry became inactive (left ESTABLISHED).
    #[inline]
    pub(crate) fn deactivate(&self, id: BackendId) {
        if let Some((_, c)) = self.own(id) {
            self.dec(&c.active);
            self.inc(&c.inactive);
        }
    }
}

impl Drop for BackendCounts {
    /// Give a worker's row back (a later handle for that worker may claim it).
    fn drop(&mut self) {
        if self.exclusive {
            if let Some(c) = self.rows.claimed.get(self.shard) {
                c.store(false, SeqCst);
            }
        }
    }
}

impl Load for BackendCounts {
    #[inline]
    fn active(&self, id: BackendId) -> u32 {
        self.rows.sum(id, |c| &c.active, Relaxed)
    }
    #[inline]
    fn inactive(&self, id: BackendId) -> u32 {
        self.rows.sum(id, |c| &c.inactive, Relaxed)
    }
    #[inline]
    fn overloaded(&self, id: BackendId) -> bool {
        self.rows.thresholds.load(Relaxed)
            && self
                .rows
                .meta(id)
                .is_some_and(|m| m.overloaded.load(Relaxed))
    }
    #[inline]
    fn backend_load(&self, id: BackendId) -> BackendLoad {
        let (mut active, mut inactive) = (0u32, 0u32);
        for c in self.rows.cells(id, Relaxed) {
            active = active.wrapping_add(c.active.load(Relaxed));
            inactive = inactive.wrapping_add(c.inactive.load(Relaxed));
        }
        BackendLoad {
            active,
            inactive,
            overloaded: self.overloaded(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: BackendId = BackendId(1);

    #[test]
    fn upper_threshold_and_three_quarters_rule() {
        let c = BackendCounts::new(2);
        c.set_thresholds(B, 4, 0);
        for _ in 0..3 {
            c.bind(B, false);
        }
        assert!(!c.overloaded(B));
        c.bind(B, false);
        assert!(c.overloaded(B), "total 4 >= upper 4");
        // 3*4 = 12 < 12? no: stays overloaded.
        c.unbind(B, false, true);
        assert!(c.overloaded(B));
        // 2*4 = 8 < 12: cleared.
        c.unbind(B, false, true);
        assert!(!c.overloaded(B));
    }

    #[test]
    fn lower_threshold_and_templates() {
        let c = BackendCounts::new(2);
        c.set_thresholds(B, 3, 2);
        c.bind(B, true); // templates are not in the total
        c.bind(B, true);
        c.bind(B, true);
        assert!(!c.overloaded(B));
        assert_eq!(c.persistent(B), 3);
        c.bind(B, false);
        c.bind(B, false);
        c.bind(B, false);
        assert!(c.overloaded(B));
        c.unbind(B, false, true); // total 2, not < 2
        assert!(c.overloaded(B));
        c.unbind(B, true, false); // a template unbind still re-evaluates: 2 < 2 false
        assert!(c.overloaded(B));
        c.unbind(B, false, true); // 1 < 2
        assert!(!c.overloaded(B));
    }

    #[test]
    fn threshold_edit_clears_overload_when_raised() {
        let c = BackendCounts::new(2);
        c.set_thresholds(B, 1, 0);
        c.bind(B, false);
        assert!(c.overloaded(B));
        c.set_thresholds(B, 1, 0); // same: stays
        assert!(c.overloaded(B));
        c.set_thresholds(B, 5, 0);
        assert!(!c.overloaded(B));
        c.set_thresholds(B, 1, 0); // lowered: not set until the next bind
        assert!(!c.overloaded(B));
        c.bind(B, false);
        assert!(c.overloaded(B));
    }

    #[test]
    fn two_threads_count_as_one() {
        // One handle on the shared row, written from two threads.
        let c = std::sync::Arc::new(BackendCounts::with_workers(2, 2));
        c.set_thresholds(B, 1000, 0);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        c.bind(B, false);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!((c.active(B), c.inactive(B)), (0, 1000));
        assert!(
            c.overloaded(B),
            "the 1000th bind, on either thread, saw total >= 1000"
        );
    }

    #[test]
    fn out_of_range_is_ignored() {
        let c = BackendCounts::new(1);
        c.bind(BackendId(7), false);
        c.unbind(BackendId(7), false, false);
        c.set_thresholds(BackendId(7), 1, 1);
        assert_eq!(c.active(BackendId(7)), 0);
        assert!(!c.overloaded(BackendId(7)));
    }

    #[test]
    fn rows_of_two_workers_sum() {
        let c = BackendCounts::with_workers(6, 2);
        let w1 = c.for_worker(1);
        c.bind(B, false);
        w1.bind(B, false);
        w1.activate(B);
        w1.bind(B, true);
        for h in [&c, &w1] {
            assert_eq!((h.active(B), h.inactive(B), h.persistent(B)), (1, 1, 1));
            assert_eq!(h.backend_load(B).overhead(), 257);
        }
        // A row's decrement saturates at zero: worker 0 has no active entry to unbind.
        c.unbind(B, false, false);
        assert_eq!((w1.active(B), w1.inactive(B)), (1, 1));
        w1.unbind(B, false, false);
        c.unbind(B, false, true);
        w1.unbind(B, true, false);
        assert_eq!((c.active(B), c.inactive(B), c.persistent(B)), (0, 0, 0));
        // A third worker shares a row and still counts.
        let w2 = c.for_worker(2);
        w2.bind(B, false);
        assert_eq!(w1.inactive(B), 1);
        w2.reset(B);
        assert_eq!(w1.inactive(B), 0);
    }

    #[test]
    fn ids_past_the_array_touch_no_row() {
        // 2 backends in rows of one line each: id 5 would fall in worker 1's line.
        let c = BackendCounts::with_workers(2, 2);
        let w1 = c.for_worker(1);
        for id in [BackendId(5), BackendId(2), BackendId(u32::MAX)] {
            c.bind(id, false);
            c.activate(id);
            c.unbind(id, false, true);
            c.deactivate(id);
            c.reset(id);
            assert_eq!((c.active(id), c.inactive(id), c.persistent(id)), (0, 0, 0));
        }
        for b in [BackendId(0), B] {
            assert_eq!((w1.active(b), w1.inactive(b)), (0, 0));
        }
    }

    #[test]
    fn threshold_counts_every_workers_row() {
        let c = BackendCounts::with_workers(2, 2);
        let w1 = c.for_worker(1);
        c.set_thresholds(B, 3, 2);
        c.bind(B, false);
        w1.bind(B, false);
        assert!(!c.overloaded(B));
        w1.bind(B, false);
        assert!(
            c.overloaded(B) && w1.overloaded(B),
            "total 3 >= 3 over both rows"
        );
        c.unbind(B, false, true); // total 2, not < 2
        assert!(w1.overloaded(B));
        w1.unbind(B, false, true); // 1 < 2
        assert!(!c.overloaded(B));
    }

    /// Two workers bind at the same moment, each in its row: the later bind reads both
    /// increments, so the one that makes the total reach `upper` sets OVERLOAD.
    #[test]
    fn concurrent_binds_in_two_rows_set_overload() {
        let barrier = std::sync::Barrier::new(2);
        for _ in 0..300 {
            let c = BackendCounts::with_workers(2, 2);
            c.set_thresholds(B, 2, 0);
            let hs = [c.for_worker(0), c.for_worker(1)];
            std::thread::scope(|s| {
                for h in &hs {
                    let b = &barrier;
                    s.spawn(move || {
                        b.wait();
                        h.bind(B, false);
                    });
                }
            });
            assert_eq!(c.inactive(B), 2);
            assert!(c.overloaded(B));
        }
    }

    #[test]
    fn a_workers_row_has_one_handle() {
        let c = BackendCounts::with_workers(2, 2);
        let first = c.for_worker(0);
        let second = c.for_worker(0); // the shared row
        let past = c.for_worker(9); // no such worker: the shared row
        assert!(first.exclusive && !second.exclusive && !past.exclusive);
        assert_eq!(second.shard, past.shard);
        first.bind(B, false);
        second.bind(B, false);
        past.bind(B, false);
        first.activate(B);
        assert_eq!((c.active(B), c.inactive(B)), (1, 2));
        drop(first);
        let again = c.for_worker(0);
        assert!(again.exclusive, "the row is free again");
        again.unbind(B, false, false);
        second.unbind(B, false, true);
        past.unbind(B, false, true);
        assert_eq!((c.active(B), c.inactive(B)), (0, 0));
    }
}
