//! The scheduler suite: every kernel IPVS scheduler, decision for decision, plus Maglev.
//!
//! One trait, [`Scheduler`], shaped like the kernel's `struct ip_vs_scheduler`: the control plane
//! calls [`Scheduler::update`] whenever the backend list of a service changes (the kernel's
//! add_dest / del_dest / upd_dest hooks, where tables such as sh, dh, mh and Maglev are built),
//! and the data path calls [`Scheduler::pick`] for each new connection.
//!
//! Backends are handed over as a slice in **IPVS list order** (newest first: the kernel prepends
//! on add), because every tie-break in IPVS follows that order. `pick` returns a position in that
//! slice. Dynamic per-backend load (active / inactive connections, the OVERLOAD flag) is read
//! through [`Load`], which the connection tables implement.
//!
//! No clocks, no threads, no global randomness: `now` is an argument and `twos` takes a seeded
//! generator, so decisions are reproducible in tests and in `xvs simulate`.
//!
//! # Using a scheduler
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use xvs_schedulers::{new_scheduler, BackendId, BackendView, Change, Flow, NoLoad, SchedFlags, Time};
//!
//! let flags = SchedFlags::parse(Some("mh"), "mh-fallback,mh-port").unwrap();
//! let mut sched = new_scheduler("mh", &flags).unwrap();
//! // IPVS list order: the newest backend first.
//! let backends: Vec<BackendView> = (1..=3u8).rev().map(|i| BackendView {
//!     id: BackendId(u32::from(i)),
//!     addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)),
//!     port: 80,
//!     weight: 1,
//!     last_weight: 1,
//! }).collect();
//! sched.update(&backends, Change::Init);
//! let flow = Flow {
//!     proto: 6,
//!     src: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
//!     sport: 40000,
//!     dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
//!     dport: 80,
//! };
//! let pos = sched.pick(&flow, &backends, &NoLoad, Time(0));
//! assert!(pos.is_some());
//! ```
//!
//! Call [`Scheduler::update`] with [`Change::Init`] once after construction (the kernel's
//! `init_service`), then with `Add` / `Remove` / `Edit` on every change of the backend list, and
//! always pass `pick` the same slice that the last `update` saw: tables (sh, dh, mh, Maglev) and
//! cursors (rr, wrr) hold positions in it. Positions that no longer exist are never indexed
//! (`pick` then answers `None` or skips them), but the decisions are only IPVS's when the two
//! agree.
//!
//! # Connection counts and scheduler state across workers
//!
//! lc, wlc, sed, nq, ovf, twos, lblc and lblcr read `active` / `inactive` counts and the
//! OVERLOAD flag through [`Load`]; rr, wrr, fo, sh, dh, mh and maglev read only OVERLOAD (and
//! weights). The forwarding crate keeps one set of counts for all workers (atomics written only
//! when a connection is bound, unbound or changes between active and inactive, as the kernel's
//! `atomic_t` counts are) and one scheduler instance per service, which every worker locks only
//! to schedule a new connection: lblc / lblcr tables and the twos random stream advance once
//! per new connection whichever worker asks, so N workers decide exactly as one kernel does
//! for the same order of new connections. lc, wlc, sed, nq, fo and ovf keep no state between
//! picks (their types have no fields), rr's state is one cursor and wrr's pick changes only its
//! position and current weight; [`Scheduler::lock_free`] gives their pick through `&self` (rr's
//! cursor, wrr's position and current weight, an atomic word moved by compare-and-swap, so each
//! pick is one step of the kernel's sequence), which workers make without a lock.
//!
//! A scheduler is cloned ([`SchedulerClone::clone_box`]) when its service changes: the control
//! plane updates the clone off the packet path and publishes it. Schedulers whose state is only
//! a table built from the backend list (sh, dh, mh, maglev: [`Scheduler::table`]) are
//! updated once per change set with the final list and published as an immutable
//! [`TablePick`], which workers pick from without any lock.
//!
//! # Deviations from the kernel worth knowing
//!
//! * mh with more backends than table slots (the kernel's `EINVAL`): the table is emptied and
//!   every pick fails until the list shrinks (the kernel keeps its previous table).
//! * lblc / lblcr: the caches reserve room for 4096 destination addresses up front; beyond that
//!   an insert may grow the map (the kernel `kmalloc`s every entry), and every lblcr entry owns
//!   a small `Vec` for its set. Their periodic garbage collection runs lazily inside `pick`,
//!   replaying every 60 s tick due since the last one with the tick's own time, which leaves the
//!   same entries as the kernel's timer would. The timer starts at [`Scheduler::started`] (or at
//!   the first pick). Set members deleted from the service keep the weight they had when they
//!   were removed (the kernel's trashed dest keeps its weight too).
//! * twos draws from a seeded [`RandomSource`] through the kernel's reduction
//!   (`get_random_u32_below`), so its choices are the kernel's for the same random words, but the
//!   words are not the kernel's CSPRNG output.
//! * wrr, like the kernel, may walk the list up to `max weight / gcd` times in one pick when most
//!   backends are OVERLOADed (bounded, at most 65535 passes with ipvsadm's weights).
//! * wrr's lock-free pick ([`Scheduler::lock_free`]) keeps the list position in 32 bits: on a
//!   list of `u32::MAX` backends or more it fails.
//! * The `none` scheduler of ipvsadm is not a scheduler here: a service without one never calls
//!   `pick`.
//! * maglev is not an IPVS scheduler; see its module for how it follows Katran.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::Arc;

mod dh;
mod factory;
mod fo;
pub mod hash;
mod lblc;
mod lblcr;
mod lc;
mod load;
mod locality;
mod maglev;
mod mh;
mod nq;
mod ovf;
pub mod rng;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

pub use dh::DestinationHashing;
pub use factory::{
    new_scheduler, new_scheduler_with, FlagsDisplay, SchedFlags, SchedOptions, SchedulerError,
    SCHEDULER_NAMES,
};
pub use fo::WeightedFailover;
pub use lblc::LocalityLeastConn;
pub use lblcr::LocalityLeastConnReplicated;
pub use lc::LeastConn;
pub use maglev::{
    endpoint_hash as maglev_endpoint_hash, flow_hash as maglev_flow_hash, Maglev,
    KATRAN_JHASH_SEED, MAGLEV_RING_SIZE,
};
pub use mh::{mh_hashkey, MaglevHashing, MH_DEFAULT_TAB_INDEX, MH_HASH1, MH_HASH2, MH_PRIMES};
pub use nq::NeverQueue;
pub use ovf::Overflow;
pub use rng::{RandomSource, SplitMix64};
pub use rr::RoundRobin;
pub use sed::ShortestExpectedDelay;
pub use sh::SourceHashing;
pub use twos::PowerOfTwo;
pub use wlc::WeightedLeastConn;
pub use wrr::WeightedRoundRobin;

/// Bind `scheduler` to a service the way `ipvsadm -A` followed by one `-a` per backend does
/// (and `ipvsadm -R` replaying `-S` output): `Init` on the empty list, then `Add(0)` for each
/// backend from the oldest (the end of `backends`, which is in IPVS list order) to the newest.
/// Only wrr behaves differently from a single `update(backends, Change::Init)` (which is the
/// `-E -s` case): it starts with `cw = 1`, serving every backend once before the weighted
/// rounds. Allocation-free: every intermediate list is a suffix of `backends`.
pub fn init_by_adds(scheduler: &mut dyn Scheduler, backends: &[BackendView]) {
    scheduler.update(&[], Change::Init);
    for k in (0..backends.len()).rev() {
        scheduler.update(&backends[k..], Change::Add(0));
    }
}

/// Identity of a backend in the published snapshot (an index into its backend array).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendId(pub u32);

/// A point in time in nanoseconds since an arbitrary epoch (the worker's clock or a capture's
/// timestamps). Only differences matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Time(pub u64);

impl Time {
    pub const fn from_secs(s: u64) -> Self {
        Time(s * 1_000_000_000)
    }
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms * 1_000_000)
    }
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
}

/// What a scheduler may know about one backend of a service (static configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub id: BackendId,
    pub addr: IpAddr,
    pub port: u16,
    /// Current weight; 0 quiesces (no new connections).
    pub weight: u32,
    /// The last non-zero weight (IPVS `last_weight`, used by mh): set to `weight` when the
    /// backend is added (even if that is 0) and on every edit to a non-zero weight.
    pub last_weight: u32,
}

/// The flow being scheduled, as the kernel's schedulers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// One backend's dynamic state, read at once (see [`Load::backend_load`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendLoad {
    pub active: u32,
    pub inactive: u32,
    pub overloaded: bool,
}

impl BackendLoad {
    /// IPVS `ip_vs_dest_conn_overhead`: `(active << 8) + inactive` as a wrapping C `int`.
    #[inline]
    pub fn overhead(&self) -> i32 {
        (self.active as i32)
            .wrapping_shl(8)
            .wrapping_add(self.inactive as i32)
    }
}

/// Per-backend dynamic state kept by the connection tables.
pub trait Load {
    /// Connections in TCP ESTABLISHED (IPVS `activeconns`).
    fn active(&self, id: BackendId) -> u32;
    /// All other connections (IPVS `inactconns`).
    fn inactive(&self, id: BackendId) -> u32;
    /// IPVS `IP_VS_DEST_F_OVERLOAD`, set and cleared by the upper/lower thresholds.
    fn overloaded(&self, id: BackendId) -> bool;
    /// All three at once. The least-connection loops call this once per backend, so an
    /// implementation that can answer with one lookup should override it.
    #[inline]
    fn backend_load(&self, id: BackendId) -> BackendLoad {
        BackendLoad {
            active: self.active(id),
            inactive: self.inactive(id),
            overloaded: self.overloaded(id),
        }
    }
}

/// A [`Load`] where every backend is idle and nothing is overloaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLoad;

impl Load for NoLoad {
    fn active(&self, _: BackendId) -> u32 {
        0
    }
    fn inactive(&self, _: BackendId) -> u32 {
        0
    }
    fn overloaded(&self, _: BackendId) -> bool {
        false
    }
}

/// The change that led to an [`Scheduler::update`] call, so that schedulers whose cursor reacts
/// to the kind of change (rr, wrr) behave exactly as IPVS does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// First binding to a service that may already hold backends (`-A`, or `-E -s` switching
    /// to this scheduler).
    Init,
    /// The backend now at this list position was added (always position 0: IPVS prepends).
    Add(usize),
    /// The backend that was at this list position (in the list before removal) was deleted.
    Remove(usize),
    /// The backend at this list position was edited (weight, thresholds; even a no-op edit).
    Edit(usize),
}

/// Cloning a boxed scheduler (its whole state: cursors, tables, caches, random stream).
pub trait SchedulerClone {
    fn clone_box(&self) -> Box<dyn Scheduler>;
}

impl<T: Scheduler + Clone + 'static> SchedulerClone for T {
    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
}

/// A load-balancing algorithm behind one interface.
pub trait Scheduler: Send + std::fmt::Debug + SchedulerClone {
    /// The ipvsadm name (`rr`, `wlc`, `mh`, …).
    fn name(&self) -> &'static str;
    /// The backend list changed; `backends` is the new list in IPVS order.
    fn update(&mut self, backends: &[BackendView], change: Change);
    /// Choose a backend for a new connection: a position in `backends`, or `None` when no
    /// backend is eligible (the caller answers as IPVS's `ip_vs_leave` does).
    fn pick(
        &mut self,
        flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        now: Time,
    ) -> Option<usize>;
    /// The time the scheduler was bound to its service (the kernel's `init_service`), for
    /// schedulers with timers (lblc, lblcr garbage collection every 60 s from then on). Without
    /// this call the first `pick`'s `now` is taken instead.
    fn started(&mut self, _now: Time) {}
    /// For a scheduler whose whole state is a table built from the backend list alone (sh,
    /// dh, mh, maglev): a copy of it as an immutable table, which any number of threads can
    /// pick from without a lock (`None` for the others).
    fn table(&self) -> Option<Arc<dyn TablePick>> {
        None
    }
    /// Whether [`Scheduler::table`] gives a table. For such a scheduler any sequence of
    /// `update`s ending with list `L` leaves the same state as one `update(L, Change::Init)`,
    /// so a change set needs one build.
    fn table_only(&self) -> bool {
        false
    }
    /// For a scheduler that keeps no state at all between picks (lc, wlc, sed, nq, fo, ovf:
    /// the kernel's versions take no lock either; they read only the backend list and
    /// [`Load`]), or whose state a pick changes is one word (rr's cursor, wrr's position and
    /// current weight, then an atomic): a copy as a pick
    /// through `&self`, which any number of threads can make at once without a lock (`None`
    /// for the others). Its answers are [`Scheduler::pick`]'s, in the order the picks take
    /// effect.
    fn lock_free(&self) -> Option<Arc<dyn TablePick>> {
        None
    }
}

/// A pick through `&self`, which any number of threads can make at once: a table scheduler's
/// ([`Scheduler::table`]), which only reads its table, or a lock-free one's
/// ([`Scheduler::lock_free`]).
pub trait TablePick: Send + Sync + std::fmt::Debug {
    /// The same answer as [`Scheduler::pick`] (table and lock-free schedulers ignore `now`).
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize>;
    /// A scheduler holding this table (or the lock-free scheduler's state as it is now), to
    /// update for a new backend list.
    fn to_scheduler(&self) -> Box<dyn Scheduler>;
}

/// The [`TablePick`] of a stateless scheduler: a scheduler type without fields (checked when
/// the pick is compiled), so its `&mut self` pick on a copy is the same pick through `&self`.
#[derive(Debug, Clone, Copy)]
struct Stateless<S>(S);

impl<S: Scheduler + Copy + Sync + 'static> TablePick for Stateless<S> {
    #[inline]
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        const {
            assert!(
                std::mem::size_of::<S>() == 0,
                "a stateless scheduler has no fields"
            )
        };
        let mut s = self.0;
        s.pick(flow, backends, load, Time(0))
    }

    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(self.0)
    }
}

/// [`Scheduler::lock_free`] of a scheduler type without fields.
pub(crate) fn stateless<S: Scheduler + Copy + Sync + 'static>(s: &S) -> Arc<dyn TablePick> {
    Arc::new(Stateless(*s))
}
