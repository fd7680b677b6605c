//! Applying a new desired state to a running pipeline without disturbing established
//! connections.
//!
//! Identities are stable across applies: a service is its [`ServiceKey`], a backend is
//! (service, address, port). Each keeps its `ServiceId` / `BackendId` for as long as it exists,
//! so the connection table's entries (which store those ids) and its per-backend counts stay
//! valid; a new apply only touches what changed:
//!
//! * a new service gets a fresh id and a scheduler bound as `ipvsadm -A` then one `-a` per
//!   backend would bind it;
//! * a surviving service gets the kernel's scheduler callbacks for what changed, in the order a
//!   sequence of ipvsadm commands would produce them: deletions (`del_dest`), then edits
//!   (`upd_dest`, weight or thresholds), then additions (`add_dest`, each prepended) — so rr/wrr
//!   cursors and sh/mh tables move exactly as IPVS's would for the same commands. A changed
//!   scheduler name rebinds the scheduler (`-E -s`), as does a reordering of surviving
//!   backends that no sequence of commands could produce. Changed flags alone (`-E` with the same
//!   scheduler and another `-b`) keep the scheduler and its state, as `ip_vs_edit_service` does;
//!   only sh and mh read the flags, and their tables depend on the list alone, so they are
//!   rebuilt with the new flags;
//! * a backend added again while its removed self is still known (connections or a template
//!   count against it) is revived with its id, connections and counts, as `ip_vs_add_dest`
//!   revives a deleted dest from the trash;
//! * a removed service or backend is marked removed: never scheduled again, its id kept while
//!   connections refer to it. What happens to those connections is [`RemovedBackends`]: drained
//!   (forwarded until they end — xvs's default), or IPVS's behaviour (`expire_nodest_conn` = 0:
//!   their packets are dropped; = 1: the entry is expired and the packet treated as new).
//!
//! Ids of removed backends are reused once no entry (connection or template) counts against
//! them (and they were removed by an earlier apply, which every worker has installed), so a
//! director that churns backends does not run out of ids.
//!
//! **One state for all workers.** An apply runs once, on the control plane's thread, in
//! [`Shared::apply`]: it produces an immutable [`Snapshot`] (service lookup, backends, each
//! service's backend list and scheduler) that every worker then installs ([`Pipeline::install`],
//! an `Arc` swap and a resize of its traffic counters). sh, dh, mh and maglev are immutable
//! tables in the snapshot, built once per change set with the final list, which workers pick
//! from without a lock; lc, wlc, sed, nq, fo and ovf keep no state between picks (they read the
//! backend list and the shared counts, as the kernel's take no lock), and rr's cursor and wrr's
//! position and current weight are each one atomic word moved by compare-and-swap, so they are
//! picked through without a lock too; any other scheduler is one instance behind a mutex that a
//! worker takes only to schedule a new connection, so lblc / lblcr tables and the twos stream
//! advance once per new connection, whichever worker asks (rr and wrr too, by their swaps). A
//! changed service gets a copy of its scheduler updated off the packet path; an unchanged one
//! keeps its instance. The per-backend counts are one [`BackendCounts`] of atomics, shared by
//! every worker's connection table: each binds in a row of its own and reads the sums of all
//! rows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use xvs_schedulers::{new_scheduler, BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

use super::{BackendRt, BuildError, Pipeline, ServiceRt, Traffic};
use crate::conn::BackendCounts;
use crate::limits::Bucket;
use crate::service::{MarkRule, Service, ServiceId, ServiceKey, ServiceTable};
use crate::BackendId;

/// What happens to the connections of a backend that was removed (or whose service was).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RemovedBackends {
    /// Keep forwarding them to the removed backend until they close or expire; new
    /// connections never go there. Reloads and `-d` lose no established connection.
    #[default]
    Drain,
    /// IPVS with `expire_nodest_conn = 0`: drop their packets (the entries expire by timeout).
    Drop,
    /// IPVS with `expire_nodest_conn = 1`: expire the entry on its next packet and treat the
    /// packet as new (a TCP segment other than SYN is then dropped, and the client retries).
    Expire,
}

/// What an apply changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub services_added: usize,
    pub services_removed: usize,
    pub services_changed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub backends_changed: usize,
}

/// What an apply does with one service of the new state.
enum Plan {
    /// Same scheduler: the kernel's callbacks for what changed.
    Keep(ServiceId),
    /// Another scheduler or flags (`-E -s`): bound anew to the whole list.
    Rebind(ServiceId, Box<dyn Scheduler>),
    /// A new service (`-A`), then its backends (`-a`).
    New(Box<dyn Scheduler>),
}

/// Stable ids of services and backends.
#[derive(Debug, Default, Clone)]
pub(super) struct Registry {
    services: HashMap<ServiceKey, ServiceId>,
    backends: HashMap<(ServiceId, IpAddr, u16), BackendId>,
    /// Removed backends whose ids are not reused yet (the kernel's dest trash).
    trash: HashMap<(ServiceId, IpAddr, u16), BackendId>,
}

/// Whether a scheduler reads its flags (`-b`) when it picks: sh and mh (fallback, port). Other
/// schedulers ignore them, so a flags-only `-E` must not disturb their state.
fn reads_flags(scheduler: &str) -> bool {
    matches!(scheduler, "sh" | "mh")
}

fn view(id: BackendId, b: &BackendRt) -> BackendView {
    BackendView {
        id,
        addr: b.addr,
        port: b.port,
        weight: b.weight,
        last_weight: b.last_weight,
    }
}

/// Bind a fresh scheduler as `ipvsadm -A` followed by one `-a` per backend (in add order);
/// a table-only scheduler with one build.
fn bind_by_adds(s: &mut dyn Scheduler, list: &[BackendView]) {
    if s.table_only() {
        s.update(list, Change::Init);
        return;
    }
    s.update(&[], Change::Init);
    let n = list.len();
    for k in 1..=n {
        s.update(&list[n - k..], Change::Add(0));
    }
}

/// A service's scheduler, shared by every worker: an immutable table (sh, dh, mh, maglev),
/// picked from without a lock; a scheduler without state (lc, wlc, sed, nq, fo, ovf: it reads
/// only the backend list and the shared counts) or whose state a pick changes is one atomic
/// word (rr's cursor, wrr's position and current weight), picked through without a lock; or a
/// scheduler with more state of its own (lblc/lblcr table, twos stream), locked only to
/// schedule a new connection.
#[derive(Debug, Clone)]
pub(super) enum SharedScheduler {
    Table(Arc<dyn TablePick>),
    LockFree(Arc<dyn TablePick>),
    Locked(Arc<Mutex<Box<dyn Scheduler>>>),
}

impl SharedScheduler {
    fn new(s: Box<dyn Scheduler>) -> Self {
        if let Some(t) = s.table() {
            SharedScheduler::Table(t)
        } else if let Some(t) = s.lock_free() {
            SharedScheduler::LockFree(t)
        } else {
            SharedScheduler::Locked(Arc::new(Mutex::new(s)))
        }
    }

    /// Whether the pick depends on the flow and the backend list alone (sh, dh, mh, maglev).
    pub(super) fn is_table(&self) -> bool {
        matches!(self, SharedScheduler::Table(_))
    }

    /// A copy to update for a new backend list (the published one stays as it is).
    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        match self {
            SharedScheduler::Table(t) | SharedScheduler::LockFree(t) => t.to_scheduler(),
            SharedScheduler::Locked(m) => lock(m).clone_box(),
        }
    }

    /// [`Scheduler::pick`].
    #[inline(always)]
    pub(super) fn pick(
        &self,
        flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        now: Time,
    ) -> Option<usize> {
        match self {
            SharedScheduler::Table(t) | SharedScheduler::LockFree(t) => {
                t.pick_table(flow, backends, load)
            }
            SharedScheduler::Locked(m) => lock(m).pick(flow, backends, load, now),
        }
    }
}

/// Lock a mutex whatever a panicking holder left (the state it guards is always whole).
pub(super) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A published desired state: immutable; every worker of a director reads the same one. It
/// fills whole cache lines of its own (64-byte aligned), so no write to memory allocated next
/// to it (a worker's pipeline, say) takes it away from the workers reading it.
#[derive(Debug)]
#[repr(align(64))]
pub struct Snapshot {
    pub(super) services: ServiceTable,
    pub(super) svcs: Vec<ServiceRt>,
    pub(super) backends: Vec<BackendRt>,
    pub(super) vips: Vec<IpAddr>,
    pub(super) mark_rules: Vec<MarkRule>,
    pub(super) registry: Registry,
    /// 0 for the empty state, then +1 per apply.
    generation: u64,
}

impl Snapshot {
    pub(super) fn empty() -> Self {
        Snapshot {
            services: ServiceTable::default(),
            svcs: Vec::new(),
            backends: Vec::new(),
            vips: Vec::new(),
            mark_rules: Vec::new(),
            registry: Registry::default(),
            generation: 0,
        }
    }
}

/// What every worker of one director shares: the per-backend connection counts and the
/// current [`Snapshot`]. Applies are serialised here, on the caller's (control plane's) thread.
/// 64-byte aligned, as [`Snapshot`] is.
#[derive(Debug)]
#[repr(align(64))]
pub struct Shared {
    counts: Arc<BackendCounts>,
    current: Mutex<Arc<Snapshot>>,
}

impl Shared {
    /// An empty state for at most `max_backends` backends (live, or removed with connections),
    /// for one worker.
    pub fn new(max_backends: u32) -> Self {
        Self::with_workers(max_backends, 1)
    }

    /// An empty state for at most `max_backends` backends, whose counts keep a row for each
    /// of `workers` workers (see [`BackendCounts`]).
    pub fn with_workers(max_backends: u32, workers: u16) -> Self {
        Shared {
            counts: Arc::new(BackendCounts::with_workers(max_backends, workers)),
            current: Mutex::new(Arc::new(Snapshot::empty())),
        }
    }

    /// The director's counts (every worker's connections), to read.
    pub fn counts(&self) -> &Arc<BackendCounts> {
        &self.counts
    }

    /// The counts worker `worker`'s connection table binds and unbinds (in its own row).
    pub fn worker_counts(&self, worker: u16) -> Arc<BackendCounts> {
        Arc::new(self.counts.for_worker(worker))
    }

    /// The state last applied.
    pub fn current(&self) -> Arc<Snapshot> {
        lock(&self.current).clone()
    }

    /// The live services and backends of the current state with their connection counts as
    /// they are now (traffic is each worker's: see [`Pipeline::report`]). Cold path.
    pub fn report(&self) -> Vec<ServiceReport> {
        report_of(&self.current(), &self.counts, None)
    }

    /// Most backends the counts can hold.
    pub fn max_backends(&self) -> u32 {
        self.counts.len()
    }

    /// Make `services` (and `marks`) the desired state: the new [`Snapshot`], for every worker
    /// to [`Pipeline::install`]. Nothing changes unless every service's scheduler can be built.
    pub fn apply(
        &self,
        services: &[Service],
        marks: Vec<MarkRule>,
    ) -> Result<(Arc<Snapshot>, ApplyReport), BuildError> {
        let mut current = lock(&self.current);
        let old = current.clone();
        let mut next = Builder {
            counts: &self.counts,
            old: &old,
            registry: old.registry.clone(),
            svcs: old.svcs.clone(),
            backends: old.backends.clone(),
            generation: old.generation + 1,
        };
        let (table, report) = next.apply(services)?;
        let mut vips = Vec::new();
        for s in services {
            if let ServiceKey::Addr { addr, .. } = s.key {
                if !vips.contains(&addr) {
                    vips.push(addr);
                }
            }
        }
        let snap = Arc::new(Snapshot {
            services: ServiceTable::with_ids(&table, marks.clone()),
            svcs: next.svcs,
            backends: next.backends,
            vips,
            mark_rules: marks,
            registry: next.registry,
            generation: next.generation,
        });
        *current = snap.clone();
        Ok((snap, report))
    }
}

/// One apply in progress: the next snapshot's parts, built from the current one's.
struct Builder<'a> {
    counts: &'a BackendCounts,
    old: &'a Snapshot,
    registry: Registry,
    svcs: Vec<ServiceRt>,
    backends: Vec<BackendRt>,
    generation: u64,
}

impl Builder<'_> {
    /// The apply proper; returns the service table's entries and what changed.
    fn apply(
        &mut self,
        services: &[Service],
    ) -> Result<(Vec<(ServiceId, ServiceKey)>, ApplyReport), BuildError> {
        // Everything that can fail, first: schedulers of new or rebound services, id space.
        let mut plans = Vec::with_capacity(services.len());
        for (i, s) in services.iter().enumerate() {
            let build = || {
                new_scheduler(&s.scheduler, &s.sched_flags)
                    .map_err(|error| BuildError::Scheduler { service: i, error })
            };
            plans.push(match self.registry.services.get(&s.key) {
                Some(&sid) => {
                    let rt = &self.svcs[sid.0 as usize];
                    // `ip_vs_edit_service` rebinds only when the scheduler changes.
                    if rt.scheduler_name != s.scheduler
                        || (rt.sched_flags != s.sched_flags && reads_flags(&s.scheduler))
                    {
                        Plan::Rebind(sid, build()?)
                    } else {
                        Plan::Keep(sid)
                    }
                }
                None => Plan::New(build()?),
            });
        }
        // A connection entry holds a service number of 20 bits; numbers are not reused.
        let new_services = plans.iter().filter(|p| matches!(p, Plan::New(_))).count();
        if self.svcs.len() + new_services > crate::conn::MAX_SERVICE as usize + 1 {
            return Err(BuildError::TooManyServices);
        }
        let registry = &self.registry;
        let new_backends: usize = services
            .iter()
            .map(|s| match registry.services.get(&s.key) {
                Some(&sid) => s
                    .backends
                    .iter()
                    .filter(|b| {
                        let key = (sid, b.addr, b.port);
                        !registry.backends.contains_key(&key) && !registry.trash.contains_key(&key)
                    })
                    .count(),
                None => s.backends.len(),
            })
            .sum();
        if new_backends > self.free_backend_ids() {
            return Err(BuildError::TooManyBackends);
        }

        let mut report = ApplyReport::default();
        let mut wanted: HashMap<ServiceKey, ()> = HashMap::new();
        let mut table = Vec::with_capacity(services.len());
        for (s, plan) in services.iter().zip(plans) {
            wanted.insert(s.key, ());
            let (sid, fresh) = match plan {
                Plan::Keep(sid) => (sid, None),
                Plan::Rebind(sid, sched) => (sid, Some(sched)),
                Plan::New(mut scheduler) => {
                    // `ipvsadm -A`: bound to an empty list; the backends follow as `-a`s.
                    let sid = ServiceId(self.svcs.len() as u32);
                    self.registry.services.insert(s.key, sid);
                    self.svcs.push(ServiceRt {
                        key: s.key,
                        persistence: s.persistence,
                        one_packet: s.one_packet,
                        synproxy: s.synproxy,
                        conn_rate: s.conn_rate,
                        views: Vec::new(),
                        scheduler: {
                            scheduler.update(&[], Change::Init);
                            SharedScheduler::new(scheduler)
                        },
                        scheduler_name: s.scheduler.clone(),
                        sched_flags: s.sched_flags,
                        removed: false,
                    });
                    report.services_added += 1;
                    table.push((sid, s.key));
                    self.apply_service(sid, s, None, &mut report);
                    continue;
                }
            };
            table.push((sid, s.key));
            if self.apply_service(sid, s, fresh, &mut report) {
                report.services_changed += 1;
            }
        }
        // Services that are gone: never found again; their backends are removed.
        for sid in 0..self.svcs.len() {
            let rt = &self.svcs[sid];
            if rt.removed || wanted.contains_key(&rt.key) {
                continue;
            }
            report.services_removed += 1;
            let ids: Vec<BackendId> = rt.views.iter().map(|v| v.id).collect();
            for id in ids {
                self.remove_backend(id);
                report.backends_removed += 1;
            }
            let rt = &mut self.svcs[sid];
            rt.views.clear();
            rt.removed = true;
            self.registry.services.remove(&rt.key);
        }
        Ok((table, report))
    }

    /// Bring one (new or surviving) service to its new definition; `fresh` is a scheduler
    /// built for `-E -s`. Returns whether anything about the service changed.
    fn apply_service(
        &mut self,
        sid: ServiceId,
        s: &Service,
        fresh: Option<Box<dyn Scheduler>>,
        report: &mut ApplyReport,
    ) -> bool {
        let mut changed = false;
        {
            let rt = &mut self.svcs[sid.0 as usize];
            changed |= rt.persistence != s.persistence
                || rt.one_packet != s.one_packet
                || rt.synproxy != s.synproxy;
            rt.persistence = s.persistence;
            rt.one_packet = s.one_packet;
            rt.synproxy = s.synproxy;
            if rt.conn_rate != s.conn_rate {
                changed = true;
                rt.conn_rate = s.conn_rate;
            }
        }
        // Ids of the new backends in add order, creating what is new.
        let mut new_ids = Vec::with_capacity(s.backends.len());
        let mut added = Vec::new();
        let mut edited = Vec::new();
        for b in &s.backends {
            let key = (sid, b.addr, b.port);
            match self.registry.backends.get(&key) {
                Some(&id) => {
                    let rt = &mut self.backends[id.0 as usize];
                    if rt.weight != b.weight
                        || rt.u_threshold != b.u_threshold
                        || rt.l_threshold != b.l_threshold
                        || rt.method != b.method
                    {
                        // `__ip_vs_update_dest`: last_weight follows any non-zero weight.
                        if b.weight != 0 {
                            rt.last_weight = b.weight;
                        }
                        rt.weight = b.weight;
                        rt.method = b.method;
                        rt.u_threshold = b.u_threshold;
                        rt.l_threshold = b.l_threshold;
                        edited.push(id);
                    }
                    if rt.conn_rate != b.conn_rate {
                        rt.conn_rate = b.conn_rate;
                        edited.push(id);
                    }
                    new_ids.push(id);
                }
                None => {
                    let rt = BackendRt {
                        addr: b.addr,
                        port: b.port,
                        method: b.method,
                        weight: b.weight,
                        last_weight: b.weight,
                        u_threshold: b.u_threshold,
                        l_threshold: b.l_threshold,
                        conn_rate: b.conn_rate,
                        removed: false,
                        since: self.generation,
                    };
                    // `ip_vs_add_dest`: a deleted dest of this service still in the trash comes
                    // back with its connections and counters (and its traffic totals).
                    let id = match self.registry.trash.remove(&key) {
                        Some(id) if self.backends[id.0 as usize].removed => {
                            let since = self.backends[id.0 as usize].since;
                            self.backends[id.0 as usize] = BackendRt { since, ..rt };
                            id
                        }
                        _ => self.alloc_backend(rt),
                    };
                    self.registry.backends.insert(key, id);
                    new_ids.push(id);
                    added.push(id);
                }
            }
        }
        for &id in edited.iter().chain(added.iter()) {
            let b = &self.backends[id.0 as usize];
            self.counts.set_thresholds(id, b.u_threshold, b.l_threshold);
        }
        // The new list in IPVS order (newest first).
        let target: Vec<BackendView> = new_ids
            .iter()
            .rev()
            .map(|&id| view(id, &self.backends[id.0 as usize]))
            .collect();
        let old: Vec<BackendId> = self.svcs[sid.0 as usize]
            .views
            .iter()
            .map(|v| v.id)
            .collect();
        let removed: Vec<BackendId> = old
            .iter()
            .copied()
            .filter(|id| !new_ids.contains(id))
            .collect();
        for &id in &removed {
            self.remove_backend(id);
        }
        report.backends_added += added.len();
        report.backends_removed += removed.len();
        report.backends_changed += edited.len();
        let list_changed = !added.is_empty() || !removed.is_empty() || !edited.is_empty();
        changed |= list_changed;

        let rt = &mut self.svcs[sid.0 as usize];
        if let Some(mut sched) = fresh {
            // `-E -s` with another scheduler (or sh/mh flags): bound to the whole list anew.
            sched.update(&target, Change::Init);
            changed = true;
            rt.scheduler = SharedScheduler::new(sched);
            rt.scheduler_name = s.scheduler.clone();
            rt.sched_flags = s.sched_flags;
            rt.views = target;
            return changed;
        }
        if rt.sched_flags != s.sched_flags {
            // Flags alone, for a scheduler that ignores them: recorded, its state kept.
            rt.sched_flags = s.sched_flags;
            changed = true;
        }
        if !list_changed && rt.views == target {
            return changed;
        }
        // A copy of the running scheduler, updated here (off the packet path) and published
        // with the new list; workers keep the old one until they install the snapshot.
        let mut sched = rt.scheduler.to_scheduler();
        if sched.table_only() {
            // One build for the whole change set.
            sched.update(&target, Change::Init);
        } else {
            // The kernel's callbacks, one per change: deletions, edits, additions.
            let mut cur: Vec<BackendView> = rt.views.clone();
            for id in &removed {
                if let Some(pos) = cur.iter().position(|v| v.id == *id) {
                    cur.remove(pos);
                    sched.update(&cur, Change::Remove(pos));
                }
            }
            for id in &edited {
                if let Some(pos) = cur.iter().position(|v| v.id == *id) {
                    cur[pos] = target
                        .iter()
                        .find(|v| v.id == *id)
                        .cloned()
                        .unwrap_or(cur[pos].clone());
                    sched.update(&cur, Change::Edit(pos));
                }
            }
            for id in &added {
                if let Some(v) = target.iter().find(|v| v.id == *id) {
                    cur.insert(0, v.clone());
                    sched.update(&cur, Change::Add(0));
                }
            }
            if cur != target {
                // Survivors reordered: no sequence of ipvsadm commands gives this list; rebind.
                bind_by_adds(sched.as_mut(), &target);
            }
        }
        rt.scheduler = SharedScheduler::new(sched);
        rt.views = target;
        changed
    }

    fn remove_backend(&mut self, id: BackendId) {
        if let Some(b) = self.backends.get_mut(id.0 as usize) {
            b.removed = true;
        }
        let keys: Vec<_> = self
            .registry
            .backends
            .iter()
            .filter(|(_, v)| **v == id)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.registry.backends.remove(&k);
            self.registry.trash.insert(k, id);
        }
    }

    /// Whether a removed backend's id can be given to a new backend: it was removed by an
    /// earlier apply (so no worker schedules to it any more) and nothing counts against it.
    fn reusable(&self, id: BackendId) -> bool {
        let i = id.0 as usize;
        self.backends[i].removed
            && self.old.backends.get(i).is_some_and(|b| b.removed)
            && self.counts.active(id) == 0
            && self.counts.inactive(id) == 0
            && self.counts.persistent(id) == 0
    }

    fn free_backend_ids(&self) -> usize {
        let unused = (self.counts.len() as usize).saturating_sub(self.backends.len());
        let reusable = (0..self.backends.len())
            .filter(|&i| self.reusable(BackendId(i as u32)))
            .count();
        unused + reusable
    }

    fn alloc_backend(&mut self, rt: BackendRt) -> BackendId {
        let reuse = (0..self.backends.len()).find(|&i| self.reusable(BackendId(i as u32)));
        match reuse {
            Some(i) => {
                self.registry.trash.retain(|_, v| v.0 as usize != i);
                self.backends[i] = rt;
                self.counts.reset(BackendId(i as u32));
                BackendId(i as u32)
            }
            None => {
                self.backends.push(rt);
                BackendId(self.backends.len() as u32 - 1)
            }
        }
    }
}

impl Pipeline {
    /// Make `services` (and `marks`) the desired state of this pipeline's director
    /// ([`Shared::apply`]) and install it here. Other workers sharing the director must
    /// [`Pipeline::install`] the new snapshot ([`Shared::current`]) themselves.
    pub fn apply(
        &mut self,
        services: &[Service],
        marks: Vec<MarkRule>,
    ) -> Result<ApplyReport, BuildError> {
        let (snap, report) = self.shared.apply(services, marks)?;
        self.install(snap);
        Ok(report)
    }

    /// Start using a snapshot of this pipeline's director: an `Arc` swap and the traffic
    /// counters resized (those of a backend id given to another backend start at zero).
    pub fn install(&mut self, snap: Arc<Snapshot>) {
        self.service_traffic
            .resize(snap.svcs.len(), Traffic::default());
        self.backend_traffic
            .resize(snap.backends.len(), Traffic::default());
        for (i, b) in snap.backends.iter().enumerate() {
            if self
                .snap
                .backends
                .get(i)
                .is_some_and(|o| o.since != b.since)
            {
                self.backend_traffic[i] = Traffic::default();
            }
        }
        // This worker's rate limiters follow the snapshot's rates (a changed rate, or another
        // backend under a reused id, starts a fresh bucket).
        let workers = self.cfg.workers;
        let sync = |limits: &mut Vec<Option<(u32, u64, Bucket)>>,
                    rates: &mut dyn Iterator<Item = (u32, u64)>| {
            let mut n = 0;
            for (i, (rate, since)) in rates.enumerate() {
                n = i + 1;
                if limits.len() <= i {
                    limits.push(None);
                }
                let same = matches!(limits[i], Some((r, s, _)) if r == rate && s == since);
                if !same {
                    limits[i] = (rate > 0).then(|| (rate, since, Bucket::new(rate, workers)));
                }
            }
            limits.truncate(n);
        };
        sync(
            &mut self.svc_limits,
            &mut snap.svcs.iter().map(|s| (s.conn_rate, 0)),
        );
        sync(
            &mut self.backend_limits,
            &mut snap.backends.iter().map(|b| (b.conn_rate, b.since)),
        );
        self.snap = snap;
    }

    /// The state shared with the other workers of this pipeline's director.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The id a backend of a service has now, if it exists.
    pub fn backend_id(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> Option<BackendId> {
        let reg = &self.snap.registry;
        let sid = reg.services.get(service)?;
        reg.backends.get(&(*sid, addr, port)).copied()
    }

    /// The id a service has now, if it exists.
    pub fn service_id(&self, service: &ServiceKey) -> Option<ServiceId> {
        self.snap.registry.services.get(service).copied()
    }
}

/// Counters of one backend as the control plane reads them (cold path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendReport {
    pub addr: IpAddr,
    pub port: u16,
    pub traffic: Traffic,
    pub active: u32,
    pub inactive: u32,
    pub persistent: u32,
}

/// Counters of one live service and its live backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceReport {
    pub key: ServiceKey,
    pub traffic: Traffic,
    /// In IPVS list order.
    pub backends: Vec<BackendReport>,
}

/// The live services of `snap` with their backends' connection counts, and with the traffic
/// totals `(per service index, per backend id)` when given (zero otherwise).
fn report_of(
    snap: &Snapshot,
    counts: &BackendCounts,
    traffic: Option<(&[Traffic], &[Traffic])>,
) -> Vec<ServiceReport> {
    snap.svcs
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.removed)
        .map(|(i, s)| ServiceReport {
            key: s.key,
            traffic: traffic.map_or_else(Traffic::default, |(svc, _)| svc[i]),
            backends: s
                .views
                .iter()
                .map(|v| BackendReport {
                    addr: v.addr,
                    port: v.port,
                    traffic: traffic.map_or_else(Traffic::default, |(_, be)| be[v.id.0 as usize]),
                    active: counts.active(v.id),
                    inactive: counts.inactive(v.id),
                    persistent: counts.persistent(v.id),
                })
                .collect(),
        })
        .collect()
}

impl Pipeline {
    /// Per-service and per-backend counters of the live services (for `xvs ctl -L --stats`,
    /// metrics). Cold path: allocates.
    pub fn report(&self) -> Vec<ServiceReport> {
        report_of(
            &self.snap,
            self.conns.counts(),
            Some((&self.service_traffic, &self.backend_traffic)),
        )
    }

    /// `ipvsadm -Z`: zero the packet, byte and connection totals of one service (and its
    /// backends) or of all.
    pub fn zero_traffic(&mut self, service: Option<&ServiceKey>) {
        for (i, s) in self.snap.svcs.iter().enumerate() {
            if service.is_some_and(|k| *k != s.key) {
                continue;
            }
            self.service_traffic[i] = Traffic::default();
            for v in &s.views {
                self.backend_traffic[v.id.0 as usize] = Traffic::default();
            }
        }
    }

    /// `ipvsadm --set tcp tcpfin udp` (seconds; 0 keeps the current value).
    pub fn set_timeouts(&mut self, tcp: u32, tcpfin: u32, udp: u32) {
        self.conns.set_timeouts(tcp, tcpfin, udp);
    }

    /// `xvs ctl --source-rate`: new connections per second per source prefix, director-wide
    /// (0: no limit), and the prefix lengths. A change starts every prefix with a full bucket;
    /// the same setting again keeps the buckets.
    pub fn set_source_limit(&mut self, rate: u32, prefix_v4: u8, prefix_v6: u8) {
        let d = &self.cfg.defense;
        if (d.source_rate, d.source_prefix_v4, d.source_prefix_v6) == (rate, prefix_v4, prefix_v6) {
            return;
        }
        self.cfg.defense.source_rate = rate;
        self.cfg.defense.source_prefix_v4 = prefix_v4.min(32);
        self.cfg.defense.source_prefix_v6 = prefix_v6.min(128);
        self.source_limit = super::source_limiter(&self.cfg, &self.cfg.defense);
    }
}

impl Pipeline {
    /// Address and port of a backend (live or removed) by id.
    pub fn backend_endpoint(&self, id: BackendId) -> Option<(IpAddr, u16)> {
        self.snap
            .backends
            .get(id.0 as usize)
            .map(|b| (b.addr, b.port))
    }

    /// The key of a service (live or removed) by id.
    pub fn service_key(&self, id: ServiceId) -> Option<ServiceKey> {
        self.snap.svcs.get(id.0 as usize).map(|s| s.key)
    }
}
