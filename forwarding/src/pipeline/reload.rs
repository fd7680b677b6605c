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
//! them, so a director that churns backends does not run out of ids.

use std::collections::HashMap;
use std::net::IpAddr;

use xvs_schedulers::{new_scheduler, BackendView, Change, Load, Scheduler};

use super::{BackendRt, BuildError, Pipeline, ServiceRt, Traffic};
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
#[derive(Debug, Default)]
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

/// Bind a fresh scheduler as `ipvsadm -A` followed by one `-a` per backend (in add order).
fn bind_by_adds(s: &mut dyn Scheduler, list: &[BackendView]) {
    s.update(&[], Change::Init);
    let n = list.len();
    for k in 1..=n {
        s.update(&list[n - k..], Change::Add(0));
    }
}

impl Pipeline {
    /// Make `services` (and `marks`) the pipeline's desired state. Nothing changes unless every
    /// service's scheduler can be built; established connections keep flowing (see the module
    /// documentation for removed backends).
    pub fn apply(
        &mut self,
        services: &[Service],
        marks: Vec<MarkRule>,
    ) -> Result<ApplyReport, BuildError> {
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
            let (sid, rebind) = match plan {
                Plan::Keep(sid) => (sid, None),
                Plan::Rebind(sid, sched) => (sid, Some(sched)),
                Plan::New(mut scheduler) => {
                    // `ipvsadm -A`: bound to an empty list; the backends follow as `-a`s.
                    scheduler.update(&[], Change::Init);
                    let sid = ServiceId(self.svcs.len() as u32);
                    self.registry.services.insert(s.key, sid);
                    self.svcs.push(ServiceRt {
                        key: s.key,
                        persistence: s.persistence,
                        one_packet: s.one_packet,
                        synproxy: s.synproxy,
                        conn_rate: s.conn_rate,
                        limit: self.bucket(s.conn_rate),
                        views: Vec::new(),
                        scheduler,
                        scheduler_name: s.scheduler.clone(),
                        sched_flags: s.sched_flags,
                        removed: false,
                    });
                    self.service_traffic.push(Traffic::default());
                    report.services_added += 1;
                    table.push((sid, s.key));
                    self.apply_service(sid, s, None, &mut report);
                    continue;
                }
            };
            table.push((sid, s.key));
            if self.apply_service(sid, s, rebind, &mut report) {
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
        self.services = ServiceTable::with_ids(&table, marks.clone());
        self.vips.clear();
        for s in services {
            if let ServiceKey::Addr { addr, .. } = s.key {
                if !self.vips.contains(&addr) {
                    self.vips.push(addr);
                }
            }
        }
        self.mark_rules = marks;
        Ok(report)
    }

    /// Bring one (new or surviving) service to its new definition. Returns whether anything
    /// about it changed.
    fn apply_service(
        &mut self,
        sid: ServiceId,
        s: &Service,
        fresh: Option<Box<dyn Scheduler>>,
        report: &mut ApplyReport,
    ) -> bool {
        let mut changed = false;
        let workers = self.cfg.workers;
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
                rt.limit = (s.conn_rate > 0).then(|| Bucket::new(s.conn_rate, workers));
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
                        rt.limit = (b.conn_rate > 0).then(|| Bucket::new(b.conn_rate, workers));
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
                        limit: self.bucket(b.conn_rate),
                        removed: false,
                    };
                    // `ip_vs_add_dest`: a deleted dest of this service still in the trash comes
                    // back with its connections and counters (and its traffic totals).
                    let id = match self.registry.trash.remove(&key) {
                        Some(id) if self.backends[id.0 as usize].removed => {
                            self.backends[id.0 as usize] = rt;
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
            self.conns.set_thresholds(id, b.u_threshold, b.l_threshold);
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
        changed |= !added.is_empty() || !removed.is_empty() || !edited.is_empty();

        let rt = &mut self.svcs[sid.0 as usize];
        if let Some(mut sched) = fresh {
            // `-E -s` with another scheduler (or sh/mh flags): bound to the whole list anew.
            sched.update(&target, Change::Init);
            changed = true;
            rt.scheduler = sched;
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
        // The kernel's callbacks, one per change: deletions, edits, additions.
        let mut cur: Vec<BackendView> = rt.views.clone();
        for id in &removed {
            if let Some(pos) = cur.iter().position(|v| v.id == *id) {
                cur.remove(pos);
                rt.scheduler.update(&cur, Change::Remove(pos));
            }
        }
        for id in &edited {
            if let Some(pos) = cur.iter().position(|v| v.id == *id) {
                cur[pos] = target
                    .iter()
                    .find(|v| v.id == *id)
                    .cloned()
                    .unwrap_or(cur[pos].clone());
                rt.scheduler.update(&cur, Change::Edit(pos));
            }
        }
        for id in &added {
            if let Some(v) = target.iter().find(|v| v.id == *id) {
                cur.insert(0, v.clone());
                rt.scheduler.update(&cur, Change::Add(0));
            }
        }
        if cur != target {
            // Survivors reordered: no sequence of ipvsadm commands gives this list; rebind.
            bind_by_adds(rt.scheduler.as_mut(), &target);
        }
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

    /// Whether a removed backend's id can be given to a new backend: nothing counts against it.
    fn reusable(&self, id: BackendId) -> bool {
        let c = self.conns.counts();
        self.backends[id.0 as usize].removed
            && c.active(id) == 0
            && c.inactive(id) == 0
            && c.persistent(id) == 0
    }

    fn free_backend_ids(&self) -> usize {
        let unused = (self.cfg.max_backends as usize).saturating_sub(self.backends.len());
        let reusable = (0..self.backends.len())
            .filter(|&i| self.reusable(BackendId(i as u32)))
            .count();
        unused + reusable
    }

    /// The rate limiter of a service or backend with `rate` new connections per second.
    fn bucket(&self, rate: u32) -> Option<Bucket> {
        (rate > 0).then(|| Bucket::new(rate, self.cfg.workers))
    }

    fn alloc_backend(&mut self, rt: BackendRt) -> BackendId {
        let reuse = (0..self.backends.len()).find(|&i| self.reusable(BackendId(i as u32)));
        match reuse {
            Some(i) => {
                self.registry.trash.retain(|_, v| v.0 as usize != i);
                self.backends[i] = rt;
                self.backend_traffic[i] = Traffic::default();
                self.conns.reset_backend(BackendId(i as u32));
                BackendId(i as u32)
            }
            None => {
                self.backends.push(rt);
                self.backend_traffic.push(Traffic::default());
                BackendId(self.backends.len() as u32 - 1)
            }
        }
    }

    /// The id a backend of a service has now, if it exists.
    pub fn backend_id(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> Option<BackendId> {
        let sid = self.registry.services.get(service)?;
        self.registry.backends.get(&(*sid, addr, port)).copied()
    }

    /// The id a service has now, if it exists.
    pub fn service_id(&self, service: &ServiceKey) -> Option<ServiceId> {
        self.registry.services.get(service).copied()
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

impl Pipeline {
    /// Per-service and per-backend counters of the live services (for `xvs ctl -L --stats`,
    /// metrics). Cold path: allocates.
    pub fn report(&self) -> Vec<ServiceReport> {
        let counts = self.conns.counts();
        self.svcs
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.removed)
            .map(|(i, s)| ServiceReport {
                key: s.key,
                traffic: self.service_traffic[i],
                backends: s
                    .views
                    .iter()
                    .map(|v| BackendReport {
                        addr: v.addr,
                        port: v.port,
                        traffic: self.backend_traffic[v.id.0 as usize],
                        active: counts.active(v.id),
                        inactive: counts.inactive(v.id),
                        persistent: counts.persistent(v.id),
                    })
                    .collect(),
            })
            .collect()
    }

    /// `ipvsadm -Z`: zero the packet, byte and connection totals of one service (and its
    /// backends) or of all.
    pub fn zero_traffic(&mut self, service: Option<&ServiceKey>) {
        for (i, s) in self.svcs.iter().enumerate() {
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
}

impl Pipeline {
    /// Address and port of a backend (live or removed) by id.
    pub fn backend_endpoint(&self, id: BackendId) -> Option<(IpAddr, u16)> {
        self.backends.get(id.0 as usize).map(|b| (b.addr, b.port))
    }

    /// The key of a service (live or removed) by id.
    pub fn service_key(&self, id: ServiceId) -> Option<ServiceKey> {
        self.svcs.get(id.0 as usize).map(|s| s.key)
    }
}
