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
#![forbid(unsafe_code)]

use std::net::IpAddr;

mod rr;

pub use rr::RoundRobin;

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
    /// The last non-zero weight (IPVS `last_weight`, used by mh).
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

/// Per-backend dynamic state kept by the connection tables.
pub trait Load {
    /// Connections in TCP ESTABLISHED (IPVS `activeconns`).
    fn active(&self, id: BackendId) -> u32;
    /// All other connections (IPVS `inactconns`).
    fn inactive(&self, id: BackendId) -> u32;
    /// IPVS `IP_VS_DEST_F_OVERLOAD`, set and cleared by the upper/lower thresholds.
    fn overloaded(&self, id: BackendId) -> bool;
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

/// A load-balancing algorithm behind one interface.
pub trait Scheduler: Send + std::fmt::Debug {
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
}
