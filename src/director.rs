//! `xvs run`: the data plane, the workers' pipelines and the control side around them.
//!
//! The configuration file is the desired state at start. `xvs ctl` changes (through
//! [`Director::apply`]) take effect on the running workers at once and stay until the next
//! reload; a reload (SIGHUP or `xvs ctl reload`) re-reads the file, which replaces the running
//! state — runtime changes that are not in the file are discarded, and the reload says how many.
//! Every change is validated first and then published to all workers as one new state; workers
//! take it between two batches, so established connections keep flowing (removed backends
//! drain, see `removed_backends`).
//!
//! **Client steering is fixed at start.** With several workers, which worker owns a client's
//! connections is decided by [`start_steering`] from `[steering]` and the starting services,
//! and kept for the life of the process: a change of services (persistence on or off, VIPs,
//! local addresses) never re-homes an established connection, because a worker holds only the
//! connections it created. The price: a persistent service added later under flow steering (or
//! with a shorter netmask than the address prefix) keeps its persistence templates per worker,
//! so one client network's connections may be scheduled by different workers (logged as a
//! warning); `[steering] clients = "address"` chosen up front avoids it at the cost of spreading
//! by client network only. Changing `[steering]` needs a restart.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xvs_forwarding::conn::ConnListing;
use xvs_forwarding::service::{Service, ServiceKey};
use xvs_forwarding::{Method, Pipeline};

use crate::config::Config;
use crate::control::adaptive::{Adaptive, AdaptivePolicy, Measure};
use crate::control::format::daemon_rule;
use crate::control::health::{BackendHealth, CheckTarget, HealthChecker, HealthEvent, Probe};
use crate::control::metrics::{
    BackendMetrics, Exposition, HealthMetrics, History, Metrics, MetricsServer, ServiceLabels,
    ServiceMetrics, Traffic as MetricTraffic, WorkerMetrics,
};
use crate::control::model::{Listing, RateEstimator, Stats};
use crate::control::quorum::{
    live_weight, run_script, run_script_bounded, QuorumConfig, QuorumState, Transition,
    SHUTDOWN_SCRIPT_TIMEOUT,
};
use crate::control::server::{Director as ControlDirector, Server};
use crate::control::state::{service_name, DesiredState};
use crate::dataplane_config::{IoKind, SteeringConfig, SteeringMode};
use crate::runtime::{attach, Command, Published, Workers};
use crate::sync::daemon::{Daemon, Deliver, SyncOutbox, Table};
use crate::sync::Role;
use crate::systemd::Notifier;
use crate::worker::{steer, ClientSteering, Dataplane, DirectorTargets};
use xvs_forwarding::pipeline::{SyncCounters, SyncRefused};
use xvs_forwarding::sync::SyncConn;

/// Daemons started by a change that is not applied yet (dropped, they stop).
#[derive(Default)]
struct Started {
    master: Option<(Daemon, SyncOutbox)>,
    backup: Option<Daemon>,
}

fn new_cfg(d: &Option<Daemon>) -> crate::sync::DaemonConfig {
    d.as_ref()
        .map(|d| d.config.clone())
        .expect("the daemon was just installed")
}

/// One line about a running daemon for `xvs ctl status`.
fn sync_status(d: &Daemon) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let st = &d.stats;
    let decode: Vec<String> = xvs_forwarding::sync::DecodeError::NAMES
        .iter()
        .zip(st.decode_errors.iter())
        .filter(|(_, n)| n.load(Relaxed) > 0)
        .map(|(name, n)| format!("{name}={}", n.load(Relaxed)))
        .collect();
    format!(
        "sync {}: {} messages {} entries {} queue_full {} socket_errors {} foreign_peer {} undelivered {} bulk requests {} entries {} done {} decode_errors [{}]\n",
        d.config.role.as_str(),
        match d.config.role {
            Role::Master => "sent",
            Role::Backup => "received",
        },
        st.messages.load(Relaxed),
        st.entries.load(Relaxed),
        st.queue_full.load(Relaxed),
        st.socket_errors.load(Relaxed),
        st.foreign_peer.load(Relaxed),
        st.undelivered.load(Relaxed),
        st.bulk_requests.load(Relaxed),
        st.bulk_entries.load(Relaxed),
        st.bulk_done.load(Relaxed),
        decode.join(" ")
    )
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// What the XDP program must steer to the workers, for these services, with the client
/// steering [`start_steering`] chooses for them. The running director keeps the steering it
/// started with (see [`Director`]'s publish).
pub fn targets(cfg: &Config, services: &[Service]) -> DirectorTargets {
    let mut t = DirectorTargets::default();
    let add = |v: &mut Vec<IpAddr>, a: IpAddr| {
        if !v.contains(&a) {
            v.push(a);
        }
    };
    for s in services {
        if let ServiceKey::Addr { addr, .. } = s.key {
            add(&mut t.vips, addr);
        }
        for b in &s.backends {
            if matches!(b.method, Method::Nat | Method::FullNat) {
                add(&mut t.backends, b.addr);
            }
            add(&mut t.next_hops, b.addr);
        }
        // The sorry server is a backend whenever the quorum is lost: known beforehand.
        let sorry = cfg
            .services
            .iter()
            .position(|f| f.key == s.key)
            .and_then(|i| cfg.service_quorum.get(i))
            .and_then(|q| q.sorry.as_ref());
        if let Some(sorry) = sorry {
            let b = &sorry.backend;
            if matches!(b.method, Method::Nat | Method::FullNat) {
                add(&mut t.backends, b.addr);
            }
            add(&mut t.next_hops, b.addr);
        }
    }
    for m in &cfg.marks {
        let host = if m.dst.is_ipv4() { 32 } else { 128 };
        if m.dst_prefix_len == host {
            add(&mut t.vips, m.dst);
        } else if !t.vip_prefixes.contains(&(m.dst, m.dst_prefix_len)) {
            t.vip_prefixes.push((m.dst, m.dst_prefix_len));
        }
    }
    for &a in &cfg.local_addresses {
        add(&mut t.locals, a);
    }
    for r in &cfg.routes {
        if let Some(gw) = r.via {
            add(&mut t.next_hops, gw);
        }
    }
    t.client_steering = start_steering(&cfg.dataplane.steering, services);
    t
}

/// The shortest persistence netmasks (IPv4, IPv6) of `services`, if any is persistent.
fn persistence_prefixes(services: &[Service]) -> (Option<u8>, Option<u8>) {
    let mut v4: Option<u8> = None;
    let mut v6: Option<u8> = None;
    for s in services {
        if let Some(p) = s.persistence {
            let slot = match s.key {
                ServiceKey::Addr { addr, .. } if addr.is_ipv6() => &mut v6,
                ServiceKey::Fwmark { ipv6: true, .. } => &mut v6,
                _ => &mut v4,
            };
            *slot = Some(slot.map_or(p.prefix_len, |x| x.min(p.prefix_len)));
        }
    }
    (v4, v6)
}

/// The client steering for a director starting with `services` (`[steering]`, see
/// [`SteeringConfig`]): `auto` picks address steering with the shortest persistence netmask
/// when a service is persistent (persistence must see all of a client network's connections
/// on one worker), else flow steering.
pub fn start_steering(cfg: &SteeringConfig, services: &[Service]) -> ClientSteering {
    let (p4, p6) = persistence_prefixes(services);
    let address = || ClientSteering::Address {
        v4_prefix: cfg.v4_prefix.or(p4).unwrap_or(32),
        v6_prefix: cfg.v6_prefix.or(p6).unwrap_or(128),
    };
    match cfg.clients {
        SteeringMode::Flow => ClientSteering::Flow,
        SteeringMode::Address => address(),
        SteeringMode::Auto if p4.is_some() || p6.is_some() => address(),
        SteeringMode::Auto => ClientSteering::Flow,
    }
}

/// The persistent services whose persistence `steering` cannot keep exact across workers: all
/// of them under flow steering, those with a shorter netmask than the prefix under address
/// steering (a client network then spans several workers, each with its own templates).
pub fn per_worker_persistence(steering: ClientSteering, services: &[Service]) -> Vec<ServiceKey> {
    services
        .iter()
        .filter_map(|s| {
            let p = s.persistence?;
            let v6 = match s.key {
                ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
                ServiceKey::Fwmark { ipv6, .. } => ipv6,
            };
            let exact = match steering {
                ClientSteering::Flow => false,
                ClientSteering::Address {
                    v4_prefix,
                    v6_prefix,
                } => p.prefix_len >= if v6 { v6_prefix } else { v4_prefix },
            };
            (!exact).then_some(s.key)
        })
        .collect()
}

type BackendKey = (ServiceKey, IpAddr, u16);

struct Inner {
    /// The file as last loaded (interfaces, routes, marks, local addresses…).
    file: Config,
    desired: DesiredState,
    /// Backends their health check found down, and whether the check is quiescent (weight 0)
    /// rather than removing (`false`).
    down: HashMap<BackendKey, bool>,
    /// Whether each checked backend's check is quiescent.
    quiescent: HashMap<BackendKey, bool>,
    /// Weights set by dynamic checks (`exec` with `dynamic = true`), over the configured ones.
    weights: HashMap<BackendKey, u32>,
    /// Adaptive weight state of the services with `[service.adaptive]` (see
    /// `control::adaptive`): a factor per backend over its configured or dynamic weight.
    adaptive: HashMap<ServiceKey, Adaptive<(IpAddr, u16)>>,
    /// Quorum settings and state of the file's services.
    quorum: HashMap<ServiceKey, (QuorumConfig, QuorumState)>,
    health: Option<HealthChecker>,
    /// Health-check service names back to services.
    check_names: HashMap<String, ServiceKey>,
    service_rates: HashMap<ServiceKey, RateEstimator>,
    backend_rates: HashMap<BackendKey, RateEstimator>,
    /// Persistent services last reported as kept per worker (warned once per change).
    per_worker_persistence: Vec<ServiceKey>,
    /// The running sync daemons (what `desired.daemons` asks for, once started).
    master: Option<Daemon>,
    backup: Option<Daemon>,
    /// The announce device's state for `xvs ctl status` (`[announce]`), set by the main loop.
    announce: Option<String>,
}

/// The running director's control side.
pub struct Director {
    config_path: PathBuf,
    started: Instant,
    inner: Mutex<Inner>,
    workers: Workers,
    dataplane: Mutex<Dataplane>,
    /// The client steering chosen at start, kept for the life of the process: changing it
    /// would move established connections to workers that do not hold them (the sync backup
    /// installs each received connection where this puts it).
    steering: ClientSteering,
    /// Totals of the last minutes for the status page.
    history: Mutex<History>,
    /// The announce device (`[announce]`), updated by the main loop, handed over with the
    /// data plane.
    announcer: Mutex<Option<crate::announce::Announcer>>,
    /// The DNS responders (`[[dns]]`), fed the effective services by the main loop.
    dns: Mutex<Vec<crate::dns::server::DnsServer>>,
    /// The HTTP redirect listeners (`[[redirect]]`), fed the effective services by the main
    /// loop.
    redirects: Mutex<Vec<crate::redirect::server::RedirectServer>>,
    /// Set once a successor took the data plane over (`xvs run --takeover`): stop.
    handed_over: AtomicBool,
    /// The successor's connection, held open until this process exits (its end of file tells
    /// the successor that the control socket and the sync ports are free).
    successor: Mutex<Option<UnixStream>>,
}

impl Director {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every checked backend's health state by (check service name, backend).
    fn health_by_backend(inner: &Inner) -> HashMap<(String, SocketAddr), BackendHealth> {
        inner
            .health
            .as_ref()
            .map(|h| {
                h.states()
                    .into_iter()
                    .map(|b| ((b.service.clone(), b.backend), b))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The adaptive policy of service `key` in the file, if it has one.
    fn adaptive_policy(file: &Config, key: &ServiceKey) -> Option<AdaptivePolicy> {
        let i = file.services.iter().position(|f| f.key == *key)?;
        file.service_adaptive.get(i).copied().flatten()
    }

    /// `desired` as the workers run it (and DNS answers and HTTP redirects from it): weights
    /// set by dynamic checks, scaled by the adaptive factors of services with a policy;
    /// backends that failed their health check removed, or at weight 0 when the check is
    /// quiescent; then the sorry server in and the alive backends out while the quorum is lost
    /// (see `control::quorum`).
    fn effective(inner: &Inner, desired: &DesiredState) -> DesiredState {
        let mut e = desired.clone();
        for s in &mut e.services {
            let key = s.key;
            let adaptive =
                Self::adaptive_policy(&inner.file, &key).and_then(|_| inner.adaptive.get(&key));
            for b in &mut s.backends {
                if let Some(&w) = inner.weights.get(&(key, b.addr, b.port)) {
                    b.weight = w;
                }
                if let Some(a) = adaptive {
                    b.weight = a.weight(&(b.addr, b.port), b.weight);
                }
            }
            s.backends
                .retain_mut(|b| match inner.down.get(&(key, b.addr, b.port)) {
                    Some(true) => {
                        b.weight = 0;
                        true
                    }
                    Some(false) => false,
                    None => true,
                });
            if let Some((cfg, st)) = inner.quorum.get(&key) {
                let backends = std::mem::take(&mut s.backends);
                s.backends = st.pool(
                    cfg,
                    backends,
                    |b| !inner.down.contains_key(&(key, b.addr, b.port)),
                    |b| {
                        inner
                            .quiescent
                            .get(&(key, b.addr, b.port))
                            .copied()
                            .unwrap_or(false)
                    },
                );
            }
        }
        e
    }

    /// Re-evaluate the quorum of `new`'s services that the file configures (keepalived's
    /// `update_quorum_state`): log transitions, run `quorum_up` / `quorum_down`; a service that
    /// left `new` while its quorum was up runs `quorum_down`.
    fn update_quorum(inner: &mut Inner, new: &DesiredState) {
        let mut present = std::collections::HashSet::new();
        for s in &new.services {
            let key = s.key;
            let Some(i) = inner.file.services.iter().position(|f| f.key == key) else {
                continue;
            };
            let Some(cfg) = inner.file.service_quorum.get(i).cloned() else {
                continue;
            };
            present.insert(key);
            let live = live_weight(
                s.backends
                    .iter()
                    .map(|b| {
                        let mut b = b.clone();
                        if let Some(&w) = inner.weights.get(&(key, b.addr, b.port)) {
                            b.weight = w;
                        }
                        b
                    })
                    .collect::<Vec<_>>()
                    .iter(),
                |b| !inner.down.contains_key(&(key, b.addr, b.port)),
            );
            let init = !inner.quorum.contains_key(&key);
            let entry = inner
                .quorum
                .entry(key)
                .or_insert_with(|| (cfg.clone(), QuorumState::initial(&cfg, live)));
            entry.0 = cfg;
            let (cfg, st) = entry;
            let Some(t) = st.update(cfg, live, init) else {
                continue;
            };
            let name = service_name(&key);
            let (q, h) = (cfg.quorum, cfg.hysteresis);
            match t {
                Transition::Gained => {
                    tracing::info!(target: "xvs::quorum", service = %name, live,
                        "quorum: {name}: gained (live weight {live} >= {q}+{h})");
                    if let Some(cmd) = &cfg.up_script {
                        run_script(cmd, &name, true);
                    }
                }
                Transition::Lost => {
                    let what = if init {
                        "starting with quorum down"
                    } else {
                        "lost"
                    };
                    let sorry = if st.sorry_in { ", sorry server in" } else { "" };
                    tracing::warn!(target: "xvs::quorum", service = %name, live,
                        "quorum: {name}: {what} (live weight {live} < {q}-{h}{sorry})");
                    if let Some(cmd) = &cfg.down_script {
                        run_script(cmd, &name, false);
                    }
                }
            }
        }
        inner.quorum.retain(|key, (cfg, st)| {
            if present.contains(key) {
                return true;
            }
            if st.up {
                if let Some(cmd) = &cfg.down_script {
                    run_script(cmd, &service_name(key), false);
                }
            }
            false
        });
    }

    /// The health checks of `state`'s backends: a backend's own check from the file, else its
    /// service's check.
    fn check_targets(inner: &mut Inner, state: &DesiredState) -> Vec<CheckTarget> {
        let file = &inner.file;
        let mut out = Vec::new();
        inner.check_names.clear();
        for s in &state.services {
            let name = service_name(&s.key);
            inner.check_names.insert(name.clone(), s.key);
            let file_idx = file.services.iter().position(|f| f.key == s.key);
            let service_check = file_idx.and_then(|i| file.service_checks[i].clone());
            for b in &s.backends {
                let own = file_idx.and_then(|i| {
                    file.checks
                        .iter()
                        .find(|(si, a, p, _)| *si == i && *a == b.addr && *p == b.port)
                        .map(|(_, _, _, spec)| spec.clone())
                });
                let spec = own.or_else(|| {
                    service_check
                        .as_ref()
                        .and_then(|c| c.validate("check").ok().flatten())
                });
                if let Some(spec) = spec {
                    out.push(CheckTarget {
                        service: name.clone(),
                        backend: SocketAddr::new(b.addr, b.port),
                        spec,
                    });
                }
            }
        }
        // The checks of the DNS entries' remote sites, under names no service has.
        for d in &file.dns {
            if let crate::config::DnsSource::Sites(sites) = &d.source {
                for site in sites {
                    if let crate::dns::sites::SiteKind::Remote(Some(c)) = &site.kind {
                        out.push(CheckTarget {
                            service: crate::dns::sites::check_name(&d.zone, &site.name),
                            backend: c.target,
                            spec: c.spec.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// What the DNS responders answer from: the effective services and the states of the
    /// health checks (the remote sites' among them).
    fn dns_inputs(inner: &Inner) -> (Vec<Service>, crate::dns::sites::CheckStates) {
        let mut checks = crate::dns::sites::CheckStates::new();
        if let Some(h) = inner.health.as_ref() {
            for d in &inner.file.dns {
                let crate::config::DnsSource::Sites(sites) = &d.source else {
                    continue;
                };
                for site in sites {
                    if let crate::dns::sites::SiteKind::Remote(Some(c)) = &site.kind {
                        let name = crate::dns::sites::check_name(&d.zone, &site.name);
                        let up = h.is_up(&name, c.target);
                        checks.insert((name, c.target), up);
                    }
                }
            }
        }
        (Self::effective(inner, &inner.desired).services, checks)
    }

    /// A backend's health changed: publish the new effective state.
    fn on_health(&self, ev: HealthEvent) {
        let mut inner = self.lock();
        let Some(&key) = inner.check_names.get(&ev.service) else {
            return;
        };
        let bkey = (key, ev.backend.ip(), ev.backend.port());
        if ev.up {
            inner.down.remove(&bkey);
        } else {
            inner.down.insert(bkey, ev.quiescent);
        }
        if let Some(w) = ev.weight {
            inner.weights.insert(bkey, w);
        }
        let desired = inner.desired.clone();
        if let Err(e) = self.publish(&mut inner, desired) {
            tracing::error!(
                "health: could not publish the change of {}: {e}",
                ev.backend
            );
        }
    }

    /// One step of the adaptive weights (`[service.adaptive]`) of every service whose update
    /// is due at `now`: each backend's factor moves towards what its measured response time
    /// and load call for; when an effective weight changed, the new state is published (the
    /// path `xvs ctl -e -w` takes; configured weights stay as they are). Changes of at least
    /// `log_percent` points are logged.
    fn adapt(&self, now: Instant) {
        let mut inner = self.lock();
        if inner.adaptive.is_empty() && inner.file.service_adaptive.iter().all(Option::is_none) {
            return;
        }
        let policies: Vec<(ServiceKey, AdaptivePolicy)> = inner
            .desired
            .services
            .iter()
            .filter_map(|s| Self::adaptive_policy(&inner.file, &s.key).map(|p| (s.key, p)))
            .collect();
        inner
            .adaptive
            .retain(|k, _| policies.iter().any(|(p, _)| p == k));
        let due: Vec<(ServiceKey, AdaptivePolicy)> = policies
            .into_iter()
            .filter(|(k, p)| inner.adaptive.get(k).is_none_or(|a| a.due(p, now)))
            .collect();
        if due.is_empty() {
            return;
        }
        let health = Self::health_by_backend(&inner);
        let mut changed = false;
        for (key, policy) in due {
            let name = service_name(&key);
            let Some(svc) = inner.desired.service(&key) else {
                continue;
            };
            let backends: Vec<((IpAddr, u16), u32, Measure)> = svc
                .backends
                .iter()
                .map(|b| {
                    let base = inner
                        .weights
                        .get(&(key, b.addr, b.port))
                        .copied()
                        .unwrap_or(b.weight);
                    let m = health
                        .get(&(name.clone(), SocketAddr::new(b.addr, b.port)))
                        .map(|h| Measure {
                            response: h.response_avg,
                            load: h.load,
                        })
                        .unwrap_or_default();
                    ((b.addr, b.port), base, m)
                })
                .collect();
            let changes = inner
                .adaptive
                .entry(key)
                .or_default()
                .update(&policy, now, &backends)
                .unwrap_or_default();
            for c in changes.iter().filter(|c| c.notable) {
                let backend = SocketAddr::new(c.backend.0, c.backend.1);
                let m = backends
                    .iter()
                    .find(|(k, _, _)| *k == c.backend)
                    .map(|(_, _, m)| *m)
                    .unwrap_or_default();
                let response = m.response.map_or_else(
                    || "unknown".to_string(),
                    |r| format!("{:.1} ms", r.as_secs_f64() * 1e3),
                );
                let load = m
                    .load
                    .map_or_else(|| "unknown".to_string(), |l| format!("{l}%"));
                tracing::info!(target: "xvs::adaptive", service = %name, %backend,
                    from = c.from, to = c.to, configured = c.base,
                    "adaptive: backend {backend} of {name}: effective weight {} -> {} of {} ({:.0}%; response {response}, load {load})",
                    c.from, c.to, c.base, c.factor * 100.0);
            }
            changed |= !changes.is_empty();
        }
        if changed {
            let desired = inner.desired.clone();
            if let Err(e) = self.publish(&mut inner, desired) {
                tracing::error!("adaptive: could not publish new weights: {e}");
            }
        }
    }

    /// Point the health checks at `state`'s backends; a backend no longer checked is no longer
    /// down, one that starts down (`initially_down`) or already is down stays out.
    fn sync_checks(inner: &mut Inner, new: &DesiredState) -> Result<usize, String> {
        // Checks follow the backends; a backend no longer checked is no longer down.
        let checks = Self::check_targets(inner, new);
        let checked: std::collections::HashSet<BackendKey> = checks
            .iter()
            .filter_map(|t| {
                inner
                    .check_names
                    .get(&t.service)
                    .map(|k| (*k, t.backend.ip(), t.backend.port()))
            })
            .collect();
        inner.down.retain(|k, _| checked.contains(k));
        // A weight set by a dynamic check lasts while the backend has a dynamic check.
        let dynamic: std::collections::HashSet<BackendKey> = checks
            .iter()
            .filter(|t| matches!(&t.spec.probe, Probe::Exec(e) if e.dynamic))
            .filter_map(|t| {
                inner
                    .check_names
                    .get(&t.service)
                    .map(|k| (*k, t.backend.ip(), t.backend.port()))
            })
            .collect();
        inner.weights.retain(|k, _| dynamic.contains(k));
        let quiescent: HashMap<BackendKey, bool> = checks
            .iter()
            .filter_map(|t| {
                inner
                    .check_names
                    .get(&t.service)
                    .map(|k| ((*k, t.backend.ip(), t.backend.port()), t.spec.quiescent))
            })
            .collect();
        inner.quiescent = quiescent.clone();
        if let Some(h) = inner.health.as_mut() {
            h.set_targets(checks).map_err(|e| e.to_string())?;
            // Backends that start down (`initially_down`) or already are down stay out.
            for st in h.states() {
                if let Some(&k) = inner.check_names.get(&st.service) {
                    let key = (k, st.backend.ip(), st.backend.port());
                    if !st.up {
                        let q = quiescent.get(&key).copied().unwrap_or(false);
                        inner.down.insert(key, q);
                    }
                }
            }
        }
        Ok(inner.check_names.len())
    }

    fn publish(&self, inner: &mut Inner, new: DesiredState) -> Result<(), String> {
        // What the pipelines would refuse, refused here with a clear message, before any worker
        // sees it.
        for s in &new.services {
            xvs_schedulers::new_scheduler(&s.scheduler, &s.sched_flags)
                .map_err(|e| format!("{}: {e}", crate::control::state::service_name(&s.key)))?;
        }
        // Daemons that must (re)start are started first: if one cannot, nothing changes.
        let started = self.start_daemons(inner, &new)?;
        if let Err(e) = self.publish_services(inner, &new) {
            drop(started);
            return Err(e);
        }
        self.switch_daemons(inner, &new, started);
        inner.desired = new;
        Ok(())
    }

    /// Start the daemons `new` asks for that are not running with the same settings.
    fn start_daemons(&self, inner: &Inner, new: &DesiredState) -> Result<Started, String> {
        let mut started = Started::default();
        let settings = inner.file.sync.settings;
        if let Some(d) = new.daemon(Role::Master) {
            if inner.master.as_ref().map(|m| &m.config) != Some(d) {
                let (daemon, outbox) = Daemon::start_master(d.clone(), &settings, self.table())
                    .map_err(|e| error_chain(&e))?;
                started.master = Some((daemon, outbox));
            }
        }
        if let Some(d) = new.daemon(Role::Backup) {
            if inner.backup.as_ref().map(|b| &b.config) != Some(d) {
                let deliver = self.deliver(settings.policy.threshold);
                started.backup =
                    Some(Daemon::start_backup(d.clone(), deliver).map_err(|e| error_chain(&e))?);
            }
        }
        Ok(started)
    }

    /// Make the started daemons current and stop those `new` no longer asks for; the workers
    /// become sync masters (or stop being) with the master daemon.
    fn switch_daemons(&self, inner: &mut Inner, new: &DesiredState, started: Started) {
        let settings = inner.file.sync.settings;
        if let Some((daemon, outbox)) = started.master {
            let r = self
                .workers
                .broadcast(|| Command::SyncMaster(Some((settings.policy, outbox.clone()))));
            if let Err(e) = r {
                eprintln!(
                    "{}xvs: sync master: {e}",
                    crate::systemd::prefix(tracing::Level::WARN)
                );
            }
            if let Some(old) = inner.master.replace(daemon) {
                old.stop();
            }
            eprintln!(
                "xvs: sync master daemon started ({})",
                daemon_rule(&new_cfg(&inner.master))
            );
        } else if new.daemon(Role::Master).is_none() {
            if let Some(old) = inner.master.take() {
                if let Err(e) = self.workers.broadcast(|| Command::SyncMaster(None)) {
                    eprintln!(
                        "{}xvs: sync master: {e}",
                        crate::systemd::prefix(tracing::Level::WARN)
                    );
                }
                old.stop();
                eprintln!("xvs: sync master daemon stopped");
            }
        }
        if let Some(daemon) = started.backup {
            if let Some(old) = inner.backup.replace(daemon) {
                old.stop();
            }
            eprintln!(
                "xvs: sync backup daemon started ({})",
                daemon_rule(&new_cfg(&inner.backup))
            );
        } else if new.daemon(Role::Backup).is_none() {
            if let Some(old) = inner.backup.take() {
                old.stop();
                eprintln!("xvs: sync backup daemon stopped");
            }
        }
    }

    /// Every worker's table as sync entries (for the master's bulk answers), asked a part at a
    /// time so that no worker stalls; a worker that does not answer within 2 s is left out.
    fn table(&self) -> Table {
        let inboxes = self.workers.inboxes();
        Box::new(move || {
            let mut all = Vec::new();
            for inbox in &inboxes {
                let mut from = Some(0);
                while let Some(f) = from {
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    if inbox
                        .send(Command::SyncTable {
                            from: f,
                            slots: crate::runtime::SYNC_TABLE_SLOTS,
                            reply: tx,
                        })
                        .is_err()
                    {
                        break;
                    }
                    match rx.recv_timeout(Duration::from_secs(2)) {
                        Ok((mut part, next)) => {
                            all.append(&mut part);
                            from = next;
                        }
                        Err(_) => break,
                    }
                }
            }
            all
        })
    }

    /// A paused worker's whole table (it answers commands while paused).
    fn worker_table(&self, worker: usize) -> Result<Vec<crate::runtime::TakenConn>, String> {
        let inbox = self
            .workers
            .inboxes()
            .into_iter()
            .nth(worker)
            .ok_or_else(|| format!("no worker {worker}"))?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        inbox
            .send(Command::TakeoverTable(tx))
            .map_err(|e| format!("worker {worker}: {e}"))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| format!("worker {worker} did not send its table"))
    }

    /// The old side of a takeover (see `crate::takeover`): pause the workers, offer the data
    /// plane and the tables, and stop once the successor is ready; resume if it is not.
    fn hand_over(&self, s: &mut UnixStream) -> Result<u32, String> {
        use crate::takeover::{self as tk, Answer, Offer};
        let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
        let refuse = |s: &mut UnixStream, why: String| {
            if let Ok(text) = serde_json::to_vec(&Answer::Refused(why.clone())) {
                let _ = tk::write_frame(s, &text);
            }
            why
        };
        let dp = self.dataplane.lock().unwrap_or_else(|p| p.into_inner());
        let Some((xdp, xsks)) = dp.handover() else {
            return Err(refuse(
                s,
                "takeover needs the AF_XDP data plane; this director runs AF_PACKET (restart it instead)".into(),
            ));
        };
        let Some(sizes) = xsks.first().map(|x| tk::ring_sizes(&x.params)) else {
            return Err(refuse(s, "no worker to hand over".into()));
        };
        let paused_at = std::time::SystemTime::now();
        let t0 = Instant::now();
        let free = dp.pause(Duration::from_secs(2)).map_err(|e| {
            let why = error_chain(&e);
            refuse(s, why)
        })?;
        let paused = t0.elapsed();
        let mut tables = Vec::new();
        for w in 0..self.workers.len() {
            match self.worker_table(w) {
                Ok(t) => tables.push(t),
                Err(e) => {
                    dp.resume();
                    return Err(refuse(s, e));
                }
            }
        }
        let ports = dp.ports();
        let mut offer = Offer {
            version: tk::VERSION,
            pid: std::process::id(),
            xvs_version: env!("CARGO_PKG_VERSION").into(),
            interfaces: ports.iter().map(|p| p.name.clone()).collect(),
            queues: xsks
                .iter()
                .map(|x| x.sockets.first().map_or(0, |s| s.2))
                .collect(),
            sizes,
            links: xdp.links.iter().map(|(i, _)| *i).collect(),
            sockets: xsks
                .iter()
                .map(|x| x.sockets.iter().map(|(_, i, q)| (*i, *q)).collect())
                .collect(),
            free,
            targets: dp.targets().clone(),
            paused_at_ns: tk::unix_ns(paused_at),
            entries: tables.iter().map(|t| t.len() as u64).collect(),
            announce: None,
        };
        let read = t0.elapsed();
        // Held to the end: the main loop does not change the device's addresses meanwhile.
        let announcer = self.announcer.lock().unwrap_or_else(|p| p.into_inner());
        let announce = announcer.as_ref().map(|a| a.handover());
        offer.announce = announce
            .as_ref()
            .map(|(_, name, announced, warm)| tk::AnnounceOffer {
                name: name.clone(),
                announced: announced.clone(),
                warm: *warm,
            });
        let fds = tk::offer_fds(&xdp, &xsks, announce.as_ref().map(|a| a.0));
        let sent = serde_json::to_vec(&Answer::Offer(Box::new(offer)))
            .map_err(|e| e.to_string())
            .and_then(|text| {
                let mut frame = (text.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(&text);
                crate::io::fdpass::send_with_fds(s, &frame, &fds).map_err(|e| e.to_string())
            })
            .and_then(|_| {
                tk::write_frame(s, &tk::encode_table(&tables)).map_err(|e| e.to_string())
            });
        if let Err(e) = sent {
            dp.resume();
            return Err(format!("sending the offer: {e}; forwarding resumes"));
        }
        let offered = t0.elapsed();
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        match tk::read_frame(s) {
            Ok(r) if r == tk::READY => {}
            other => {
                dp.resume();
                let why = match other {
                    Ok(r) => format!("it answered {:?}", String::from_utf8_lossy(&r)),
                    Err(e) => e.to_string(),
                };
                return Err(format!(
                    "the successor did not confirm ({why}); forwarding resumes after {:?}",
                    t0.elapsed()
                ));
            }
        }
        if let Err(e) = tk::write_frame(s, tk::GO) {
            // The successor cannot have started without GO: keep forwarding.
            dp.resume();
            return Err(format!("sending GO: {e}; forwarding resumes"));
        }
        let n: usize = tables.iter().map(Vec::len).sum();
        eprintln!(
            "xvs: takeover: handed the data plane and {n} connection entries over (workers paused in {paused:?}, tables read at {read:?}, offer sent at {offered:?}, GO at {:?}); stopping",
            t0.elapsed()
        );
        self.handed_over.store(true, Ordering::Release);
        Ok(n as u32)
    }

    /// The backup's delivery: each entry to the worker that owns its client's flows.
    fn deliver(&self, threshold: u32) -> Deliver {
        let inboxes = self.workers.inboxes();
        let by = self.steering;
        Box::new(move |conns| {
            let n = inboxes.len();
            let mut per: Vec<Vec<SyncConn>> = vec![Vec::new(); n];
            for c in conns {
                let w = steer::client_owner(by, c.client.ip(), c.client.port(), n);
                per[w].push(c);
            }
            let mut lost = 0;
            for (inbox, conns) in inboxes.iter().zip(per) {
                if conns.is_empty() {
                    continue;
                }
                let k = conns.len() as u64;
                // The inbox is unbounded: only a stopped worker refuses.
                if inbox
                    .send(Command::InstallSynced { conns, threshold })
                    .is_err()
                {
                    lost += k;
                }
            }
            lost
        })
    }

    fn publish_services(&self, inner: &mut Inner, new: &DesiredState) -> Result<(), String> {
        Self::sync_checks(inner, new)?;
        Self::update_quorum(inner, new);
        let effective = Self::effective(inner, new);
        self.workers
            .publish(Published {
                services: effective.services,
                marks: inner.file.marks.clone(),
            })
            .map_err(|e| e.to_string())?;
        if new.timeouts != inner.desired.timeouts {
            let t = new.timeouts;
            self.workers
                .broadcast(|| Command::Timeouts(t.tcp, t.tcpfin, t.udp))
                .map_err(|e| e.to_string())?;
        }
        if new.source_limit != inner.desired.source_limit {
            let l = new.source_limit;
            self.workers
                .broadcast(|| Command::SourceLimit(l.rate, l.prefix_v4, l.prefix_v6))
                .map_err(|e| e.to_string())?;
        }
        let mut t = targets(&inner.file, &new.services);
        t.client_steering = self.steering;
        let per_worker = per_worker_persistence(self.steering, &new.services);
        if per_worker != inner.per_worker_persistence {
            if !per_worker.is_empty() && self.workers.len() > 1 {
                let names: Vec<String> = per_worker.iter().map(service_name).collect();
                tracing::warn!(
                    "persistence of {} is kept per worker: client steering stays {:?} for the life of the process so that no established connection moves (set [steering] clients = \"address\" with a prefix no longer than the netmask, and restart, for exact persistence)",
                    names.join(", "),
                    self.steering
                );
            }
            inner.per_worker_persistence = per_worker;
        }
        if let Ok(mut dp) = self.dataplane.lock() {
            dp.set_targets(&t).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Re-read the configuration file and make it the running state; a summary line.
    pub fn reload_file(&self) -> Result<String, String> {
        let cfg = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        // The DNS responders and redirect listeners before the rest (the order the main loop
        // takes the locks in).
        let mut dns = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        let mut redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.lock();
        if cfg.dataplane.interfaces != inner.file.dataplane.interfaces
            || cfg.dataplane.workers != inner.file.dataplane.workers
            || cfg.dataplane.steering != inner.file.dataplane.steering
        {
            return Err(format!(
                "{}: interfaces, workers and [steering] cannot change on reload (restart xvs)",
                self.config_path.display()
            ));
        }
        // New DNS and redirect listen addresses are bound before anything changes: if one
        // cannot be, the reload is refused whole (the sockets bound so far close with the plans).
        let dns_changed = cfg.dns != inner.file.dns;
        let plan = if dns_changed {
            Some(
                crate::dns::server::plan_reload(&dns, &cfg.dns)
                    .map_err(|e| format!("{}: {}", self.config_path.display(), error_chain(&e)))?,
            )
        } else {
            None
        };
        let redirect_plan = if cfg.redirects != inner.file.redirects {
            Some(
                crate::redirect::server::plan_reload(&redirects, &cfg.redirects)
                    .map_err(|e| format!("{}: {}", self.config_path.display(), error_chain(&e)))?,
            )
        } else {
            None
        };
        let new = DesiredState::from_config(&cfg);
        let from_file = DesiredState::from_config(&inner.file);
        let discarded = inner.desired.diff(&from_file).len();
        let changes = inner.desired.diff(&new);
        let old_file = std::mem::replace(&mut inner.file, cfg);
        if let Err(e) = self.publish(&mut inner, new) {
            inner.file = old_file;
            return Err(e);
        }
        let mut lines = Vec::new();
        if plan.is_some() || redirect_plan.is_some() {
            let (services, checks) = Self::dns_inputs(&inner);
            // Stopping a listener waits for its threads (about one poll period): not while
            // holding the director's state.
            drop(inner);
            if let Some(plan) = plan {
                let (servers, l) = plan.apply(std::mem::take(&mut *dns), &services, &checks);
                *dns = servers;
                lines.extend(l);
            }
            if let Some(plan) = redirect_plan {
                let (servers, l) = plan.apply(std::mem::take(&mut *redirects), &services);
                *redirects = servers;
                lines.extend(l);
            }
        }
        Ok(format!(
            "reloaded {}: {} change(s) applied; runtime changes not in the file are discarded: {}{}",
            self.config_path.display(),
            changes.len(),
            discarded,
            lines.iter().map(|l| format!("; {l}")).collect::<String>()
        ))
    }

    /// Counters of every worker summed, laid out as `ipvsadm -L` shows them.
    fn sum_listing(&self) -> Listing {
        let inner = self.lock();
        let mut l = Listing::from_state(&Self::effective(&inner, &inner.desired));
        // Configured weights and the health checks' measurements beside the effective weights.
        let health = Self::health_by_backend(&inner);
        for s in &mut l.services {
            let name = service_name(&s.key);
            let desired = inner.desired.service(&s.key);
            for b in &mut s.backends {
                if let Some(d) = desired.and_then(|d| {
                    d.backends
                        .iter()
                        .find(|d| d.addr == b.addr && d.port == b.port)
                }) {
                    b.configured_weight = d.weight;
                }
                if let Some(h) = health.get(&(name.clone(), SocketAddr::new(b.addr, b.port))) {
                    b.response = h.response_avg;
                    b.load = h.load;
                }
            }
        }
        for r in self.workers.reports() {
            l.add_report(&r.services);
            l.source_rate_limited += r
                .counters
                .drops
                .get(xvs_forwarding::DropReason::SourceRateLimit);
        }
        l.set_counts(&self.workers.shared().report());
        for s in &mut l.services {
            if let Some(r) = inner.service_rates.get(&s.key) {
                s.rates = r.rates();
            }
            for b in &mut s.backends {
                if let Some(r) = inner.backend_rates.get(&(s.key, b.addr, b.port)) {
                    b.rates = r.rates();
                }
            }
        }
        l
    }

    /// One step of IPVS's rate estimator (every 2 s).
    fn estimate_rates(&self) {
        let l = self.sum_listing();
        let mut inner = self.lock();
        for s in &l.services {
            inner
                .service_rates
                .entry(s.key)
                .or_insert_with(|| RateEstimator::new(s.stats))
                .update(&s.stats);
            for b in &s.backends {
                inner
                    .backend_rates
                    .entry((s.key, b.addr, b.port))
                    .or_insert_with(|| RateEstimator::new(b.stats))
                    .update(&b.stats);
            }
        }
    }
}

impl Director {
    /// What a Prometheus scrape shows.
    fn metrics(&self) -> Metrics {
        let listing = self.sum_listing();
        let desired = self.lock().desired.clone();
        let quorum: HashMap<ServiceKey, bool> = self
            .lock()
            .quorum
            .iter()
            .filter(|(_, (cfg, _))| {
                cfg.sorry.is_some() || cfg.up_script.is_some() || cfg.down_script.is_some()
            })
            .map(|(k, (_, st))| (*k, st.up))
            .collect();
        let health: HashMap<(String, SocketAddr), HealthMetrics> = {
            let inner = self.lock();
            inner
                .health
                .as_ref()
                .map(|h| {
                    h.states()
                        .iter()
                        .map(|b| ((b.service.clone(), b.backend), HealthMetrics::from(b)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let traffic = |st: &Stats, r: &crate::control::model::Rates| MetricTraffic {
            conns: st.conns,
            in_pkts: st.in_pkts,
            out_pkts: st.out_pkts,
            in_bytes: st.in_bytes,
            out_bytes: st.out_bytes,
            cps: r.cps,
            in_pps: r.in_pps,
            out_pps: r.out_pps,
            in_bps: r.in_bps,
            out_bps: r.out_bps,
        };
        let services = listing
            .services
            .iter()
            .map(|s| {
                let name = service_name(&s.key);
                ServiceMetrics {
                    quorum_up: quorum.get(&s.key).copied(),
                    labels: match s.key {
                        ServiceKey::Addr { proto, addr, port } => ServiceLabels::Address {
                            protocol: crate::replay::proto_name(proto).to_ascii_lowercase(),
                            vip: addr,
                            vport: port,
                        },
                        ServiceKey::Fwmark { mark, ipv6 } => ServiceLabels::Fwmark { mark, ipv6 },
                    },
                    traffic: traffic(&s.stats, &s.rates),
                    backends: {
                        let mut backends: Vec<BackendMetrics> = s
                            .backends
                            .iter()
                            .map(|b| BackendMetrics {
                                removed: false,
                                address: b.addr,
                                port: b.port,
                                method: crate::replay::method_name(b.method).to_string(),
                                weight: b.weight,
                                configured_weight: b.configured_weight,
                                active: u64::from(b.active),
                                inactive: u64::from(b.inactive),
                                persistent: u64::from(b.persist),
                                traffic: traffic(&b.stats, &b.rates),
                                health: health
                                    .get(&(name.clone(), SocketAddr::new(b.addr, b.port)))
                                    .copied(),
                            })
                            .collect();
                        // Checked backends that are down and out of the running service.
                        let running = |a: IpAddr, p: u16| {
                            s.backends.iter().any(|b| b.addr == a && b.port == p)
                        };
                        for b in desired
                            .service(&s.key)
                            .map(|d| d.backends.as_slice())
                            .unwrap_or_default()
                        {
                            let h = health.get(&(name.clone(), SocketAddr::new(b.addr, b.port)));
                            if let Some(h) = h.filter(|h| !h.up && !running(b.addr, b.port)) {
                                backends.push(BackendMetrics {
                                    address: b.addr,
                                    port: b.port,
                                    method: crate::replay::method_name(b.method).to_string(),
                                    weight: b.weight,
                                    configured_weight: b.weight,
                                    active: 0,
                                    inactive: 0,
                                    persistent: 0,
                                    traffic: MetricTraffic::default(),
                                    health: Some(*h),
                                    removed: true,
                                });
                            }
                        }
                        backends
                    },
                }
            })
            .collect();
        let stats = self.dataplane.lock().map(|d| d.stats()).unwrap_or_default();
        let workers = self
            .workers
            .reports()
            .iter()
            .enumerate()
            .map(|(i, r)| WorkerMetrics {
                worker: i as u32,
                rx_packets: r.counters.rx,
                tx_packets: r.counters.tx,
                pass_packets: r.counters.pass,
                drops: xvs_forwarding::DropReason::ALL
                    .iter()
                    .map(|d| (d.as_str().to_string(), r.counters.drops.get(*d)))
                    .collect(),
                io_drops: stats.get(i).map_or_else(Vec::new, |s| {
                    s.io.io_drops()
                        .iter()
                        .map(|(k, n)| (k.to_string(), *n))
                        .collect()
                }),
                syscalls: stats.get(i).map_or_else(Vec::new, |s| {
                    s.io.syscalls()
                        .iter()
                        .map(|(k, n)| (k.to_string(), *n))
                        .collect()
                }),
                batching: stats.get(i).map_or_else(Vec::new, |s| {
                    s.io.batching()
                        .iter()
                        .map(|(k, n)| (k.to_string(), *n))
                        .collect()
                }),
                handoff_out: stats.get(i).map_or(0, |s| s.io.handoff_out),
                handoff_in: stats.get(i).map_or(0, |s| s.io.handoff_in),
                icmp_answers: r.counters.icmp_answers,
                busy_ratio: stats.get(i).map_or(0.0, |s| s.busy_ratio()),
                connections: u64::from(r.connections),
                embryonic: u64::from(r.embryonic),
                syn_defense: [
                    ("embryonic_evicted", r.counters.embryonic_evicted),
                    ("drop_entry_deleted", r.counters.defense_dropped),
                    ("synproxy_syn_acks", r.counters.synproxy_syn_acks),
                    ("synproxy_opened", r.counters.synproxy_opened),
                    ("synproxy_established", r.counters.synproxy_established),
                    ("synproxy_released", r.counters.synproxy_released),
                    ("stateless_acks", r.counters.stateless_acks),
                    ("synproxy_syn_resent", r.counters.synproxy_syn_resent),
                    ("synproxy_syn_retried", r.counters.synproxy_syn_retried),
                    ("synproxy_gave_up", r.counters.synproxy_gave_up),
                    ("synproxy_timer_full", r.counters.synproxy_timer_full),
                ]
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            })
            .collect();
        Metrics {
            services,
            workers,
            history: Vec::new(),
            dns: self.dns_status(),
            redirect: self.redirect_status(),
        }
    }

    /// The DNS responders' counters and records.
    fn dns_status(&self) -> Vec<crate::dns::server::DnsStatus> {
        self.dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|d| d.status())
            .collect()
    }

    /// The redirect listeners' counters and backends.
    fn redirect_status(&self) -> Vec<crate::redirect::server::RedirectStatus> {
        self.redirects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.status())
            .collect()
    }
}

impl ControlDirector for Director {
    fn takeover(&self, mut conn: UnixStream) {
        match self.hand_over(&mut conn) {
            Ok(_) => {
                if let Ok(mut slot) = self.successor.lock() {
                    *slot = Some(conn);
                }
            }
            Err(e) => eprintln!("xvs: takeover refused: {e}"),
        }
    }

    fn desired(&self) -> DesiredState {
        self.lock().desired.clone()
    }

    fn apply(&self, new: DesiredState) -> Result<(), String> {
        let mut inner = self.lock();
        self.publish(&mut inner, new)
    }

    fn listing(&self) -> Listing {
        self.sum_listing()
    }

    fn connections(&self) -> Vec<ConnListing> {
        self.workers.connections().unwrap_or_else(|e| {
            eprintln!(
                "{}xvs: connection list incomplete: {e}",
                crate::systemd::prefix(tracing::Level::WARN)
            );
            Vec::new()
        })
    }

    fn zero(&self, service: Option<ServiceKey>) {
        if let Err(e) = self.workers.broadcast(|| Command::Zero(service)) {
            eprintln!(
                "{}xvs: zeroing counters: {e}",
                crate::systemd::prefix(tracing::Level::WARN)
            );
        }
        let mut inner = self.lock();
        match service {
            None => {
                inner.service_rates.clear();
                inner.backend_rates.clear();
            }
            Some(k) => {
                inner.service_rates.remove(&k);
                inner.backend_rates.retain(|(s, _, _), _| *s != k);
            }
        }
    }

    fn file_state(&self) -> DesiredState {
        DesiredState::from_config(&self.lock().file)
    }

    fn reload(&self) -> Result<DesiredState, String> {
        let msg = self.reload_file()?;
        eprintln!("xvs: {msg}");
        Ok(self.lock().desired.clone())
    }

    fn stateless(&self) -> crate::control::model::Stateless {
        crate::control::model::Stateless {
            dns: self.dns_status(),
            redirect: self.redirect_status(),
        }
    }

    fn daemons(&self) -> Vec<(crate::sync::DaemonConfig, u16)> {
        let inner = self.lock();
        [&inner.master, &inner.backup]
            .into_iter()
            .flatten()
            .map(|d| (d.config.clone(), d.maxlen))
            .collect()
    }

    fn status(&self) -> String {
        let reports = self.workers.reports();
        let stats = self.dataplane.lock().map(|d| d.stats()).unwrap_or_default();
        let mut out = format!(
            "xvs {}: up {}s, {} worker(s), config {}\n",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            reports.len(),
            self.config_path.display()
        );
        {
            let inner = self.lock();
            for d in [&inner.master, &inner.backup].into_iter().flatten() {
                out.push_str(&sync_status(d));
            }
            if let Some(a) = &inner.announce {
                out.push_str(a);
                out.push('\n');
            }
            let mut quorum: Vec<String> = inner
                .quorum
                .iter()
                .filter(|(_, (cfg, _))| {
                    cfg.sorry.is_some() || cfg.up_script.is_some() || cfg.down_script.is_some()
                })
                .map(|(k, (cfg, st))| {
                    format!(
                        "quorum {}: {} (quorum {}, hysteresis {}){}\n",
                        service_name(k),
                        if st.up { "up" } else { "down" },
                        cfg.quorum,
                        cfg.hysteresis,
                        if st.sorry_in { ", sorry server in" } else { "" }
                    )
                })
                .collect();
            quorum.sort();
            out.extend(quorum);
        }
        for d in self.dns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&crate::dns::server::format_status(&d.status()));
        }
        for r in self.redirect_status() {
            out.push_str(&crate::redirect::server::format_status(&r));
        }
        let mut sync = SyncCounters::default();
        for r in &reports {
            let s = &r.sync;
            sync.queued += s.queued;
            sync.outbox_full += s.outbox_full;
            sync.skipped_fullnat += s.skipped_fullnat;
            sync.skipped_synproxy += s.skipped_synproxy;
            sync.installed += s.installed;
            sync.updated += s.updated;
            sync.replaced += s.replaced;
            sync.stale += s.stale;
            for (a, b) in sync.refused.iter_mut().zip(s.refused) {
                *a += b;
            }
        }
        if sync != SyncCounters::default() {
            let refused: Vec<String> = SyncRefused::ALL
                .iter()
                .filter(|r| sync.refused[**r as usize] > 0)
                .map(|r| format!("{}={}", r.name(), sync.refused[*r as usize]))
                .collect();
            out.push_str(&format!(
                "sync in workers: queued {} outbox_full {} skipped_fullnat {} skipped_synproxy {} installed {} updated {} replaced {} stale {} refused [{}]\n",
                sync.queued,
                sync.outbox_full,
                sync.skipped_fullnat,
                sync.skipped_synproxy,
                sync.installed,
                sync.updated,
                sync.replaced,
                sync.stale,
                refused.join(" ")
            ));
        }
        for (i, r) in reports.iter().enumerate() {
            let busy = stats.get(i).map_or(0.0, |s| s.busy_ratio());
            let io = stats.get(i).map(|s| s.io.clone()).unwrap_or_default();
            let io_drops: Vec<String> = io
                .io_drops()
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let syscalls: Vec<String> = io
                .syscalls()
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let drops: Vec<String> = r
                .counters
                .drops
                .iter()
                .map(|(d, n)| format!("{}={n}", d.as_str()))
                .collect();
            let per = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"));
            let batching = format!(
                "rx batches {} ({} frames/batch) rounds {} tx {} frames/kick",
                io.rx_batches,
                per(io.frames_per_batch()),
                io.rounds,
                per(io.frames_per_kick()),
            );
            let (round, inbox, inbox_cpu) = stats.get(i).map_or((0.0, 0.0, 0.0), |s| {
                (
                    s.longest_round.as_secs_f64(),
                    s.longest_inbox.as_secs_f64(),
                    s.longest_inbox_cpu.as_secs_f64(),
                )
            });
            out.push_str(&format!(
                "worker {i}: rx {} tx {} (+{} fragments) pass {} drop {} [{}] icmp answers {} connections {} (embryonic {}) busy {:.1}% io drops [{}] syscalls [{}] handoff out {} in {} {} longest round {:.3} ms (inbox {:.3} ms, {:.3} ms CPU) syn defence: embryonic evicted {} stateless acks {} drop_entry deleted {} modes drop_entry={} drop_packet={} secure_tcp={} synproxy: syn-acks {} opened {} established {} released {} syn-resent {} syn-retried {} gave-up {} timer-full {}\n",
                r.counters.rx,
                r.counters.tx,
                r.counters.tx_fragments,
                r.counters.pass,
                r.counters.drops.total(),
                drops.join(" "),
                r.counters.icmp_answers,
                r.connections,
                r.embryonic,
                busy * 100.0,
                io_drops.join(" "),
                syscalls.join(" "),
                io.handoff_out,
                io.handoff_in,
                batching,
                round * 1e3,
                inbox * 1e3,
                inbox_cpu * 1e3,
                r.counters.embryonic_evicted,
                r.counters.stateless_acks,
                r.counters.defense_dropped,
                r.defense.0,
                r.defense.1,
                r.defense.2,
                r.counters.synproxy_syn_acks,
                r.counters.synproxy_opened,
                r.counters.synproxy_established,
                r.counters.synproxy_released,
                r.counters.synproxy_syn_resent,
                r.counters.synproxy_syn_retried,
                r.counters.synproxy_gave_up,
                r.counters.synproxy_timer_full,
            ));
        }
        out
    }
}

/// Run the director until SIGINT or SIGTERM; SIGHUP reloads the configuration.
///
/// With `takeover` (the control socket of a running director), the data plane and connection
/// tables of that director are taken over instead of set up (see `crate::takeover`); the
/// control socket, health checks, metrics and sync daemons start once it has exited.
pub fn run(
    config: &Path,
    io: Option<IoKind>,
    socket: &Path,
    takeover: Option<&Path>,
) -> Result<()> {
    let cfg = Config::load(config)?;
    let mut dp_cfg = cfg.dataplane.clone();
    if let Some(io) = io {
        dp_cfg.io = io;
    }
    if dp_cfg.interfaces.is_empty() {
        anyhow::bail!("{}: no [[interface]] to run on", cfg.file.display());
    }
    // Everything that can fail in building a pipeline fails here, before the data plane starts.
    crate::replay::offline_pipeline(&cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("signal handler")?;

    let nworkers = dp_cfg.workers.len() as u16;
    // One state for all workers: the counts, and the services applied once.
    let shared = Arc::new(
        Pipeline::shared_for(&cfg.live_pipeline_config(0, nworkers), &cfg.services)
            .context("pipeline")?,
    );
    shared
        .apply(&cfg.services, cfg.marks.clone())
        .context("pipeline")?;
    let mut handles = Vec::new();
    let t = targets(&cfg, &cfg.services);
    // The workers' pipelines (connection tables allocated), built before a takeover pauses
    // the running director.
    let mut macs = Vec::new();
    for i in &dp_cfg.interfaces {
        let info = crate::io::sys::interface_info(&i.name)
            .with_context(|| format!("interface {}", i.name))?;
        macs.push(info.mac);
    }
    let mut pipes = Vec::new();
    for w in 0..nworkers {
        let pipe = Pipeline::with_shared(
            cfg.live_pipeline_config(w, nworkers),
            shared.clone(),
            cfg.network(&macs),
        );
        pipes.push(Some(pipe));
    }
    let hp = crate::io::hugepages::stats();
    eprintln!(
        "xvs: huge pages: {} regions ({} MiB) advised, {} refused; AnonHugePages {}",
        hp.advised,
        hp.advised_bytes >> 20,
        hp.failed,
        crate::io::hugepages::anon_huge_pages_kib()
            .map_or("unknown".to_string(), |k| format!("{k} kB"))
    );
    let mut go_at = None;
    let (committed, inherited, mut tables) = match takeover {
        Some(path) => {
            if dp_cfg.io != IoKind::Afxdp {
                anyhow::bail!("--takeover needs the AF_XDP data plane (io = \"afxdp\")");
            }
            let pending = crate::takeover::begin(path, &dp_cfg, &t)
                .with_context(|| format!("takeover of {}", path.display()))?;
            eprintln!(
                "xvs: takeover: offer from pid {} (xvs {}), {} connection entries; ready",
                pending.offer.pid,
                pending.offer.xvs_version,
                pending.tables.iter().map(Vec::len).sum::<usize>()
            );
            let (c, i, tables) = pending
                .commit()
                .with_context(|| format!("takeover of {}", path.display()))?;
            go_at = Some(Instant::now());
            (Some(c), Some(i), tables)
        }
        None => (None, None, Vec::new()),
    };
    let threshold = cfg.sync.settings.policy.threshold;
    let dp = Dataplane::start_with(
        &dp_cfg,
        &t,
        |worker, ports, inbox| {
            let same_macs = ports.iter().map(|p| p.mac).eq(macs.iter().copied());
            let pipe = match pipes.get_mut(worker).and_then(Option::take) {
                Some(p) if same_macs => p,
                _ => Pipeline::with_shared(
                    cfg.live_pipeline_config(worker as u16, nworkers),
                    shared.clone(),
                    cfg.network(&ports.iter().map(|p| p.mac).collect::<Vec<_>>()),
                ),
            };
            // A predecessor's table: installed before the worker takes its first frame (the
            // inbox is drained at the top of each round).
            if let Some(conns) = tables.get_mut(worker).map(std::mem::take) {
                if !conns.is_empty() {
                    let _ = inbox.send(Command::InstallTaken { conns, threshold });
                }
            }
            let (proc, handle) = attach(pipe, inbox);
            handles.push(handle);
            proc
        },
        inherited,
    )
    .context("data plane")?;
    let mut adopted_announce = None;
    if let Some(mut c) = committed {
        adopted_announce = c.announce.take();
        eprintln!(
            "xvs: takeover: workers started {:?} after GO",
            go_at.map(|t| t.elapsed()).unwrap_or_default()
        );
        let gap = crate::takeover::unix_ns(std::time::SystemTime::now())
            .saturating_sub(c.offer.paused_at_ns);
        let pid = c.offer.pid;
        eprintln!(
            "xvs: takeover: forwarding on the handed-over rings {:.1} ms after pid {pid} stopped receiving",
            gap as f64 / 1e6
        );
        let waited = Instant::now();
        if c.wait_predecessor(Duration::from_secs(30)) {
            eprintln!(
                "xvs: takeover: pid {pid} exited {:?} later",
                waited.elapsed()
            );
        } else {
            eprintln!(
                "xvs: takeover: pid {pid} has not closed the connection after 30 s; going on"
            );
        }
    }
    eprintln!(
        "xvs: data plane up: io {} on {} with {} worker(s)",
        dp_cfg.io,
        dp.ports()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        nworkers
    );
    let (health, health_events) = HealthChecker::new();
    let director = Arc::new(Director {
        config_path: config.to_owned(),
        started: Instant::now(),
        inner: Mutex::new(Inner {
            desired: DesiredState::from_config(&cfg),
            down: HashMap::new(),
            quiescent: HashMap::new(),
            weights: HashMap::new(),
            adaptive: HashMap::new(),
            quorum: HashMap::new(),
            health: Some(health),
            check_names: HashMap::new(),
            file: cfg.clone(),
            service_rates: HashMap::new(),
            backend_rates: HashMap::new(),
            per_worker_persistence: Vec::new(),
            master: None,
            backup: None,
            announce: None,
        }),
        workers: Workers::new(handles, shared),
        dataplane: Mutex::new(dp),
        steering: t.client_steering,
        history: Mutex::new(History::default()),
        announcer: Mutex::new(None),
        dns: Mutex::new(Vec::new()),
        redirects: Mutex::new(Vec::new()),
        handed_over: AtomicBool::new(false),
        successor: Mutex::new(None),
    });

    // Start the health checks of the initial state; backends that start down leave it.
    {
        let mut inner = director.lock();
        let per_worker = per_worker_persistence(director.steering, &cfg.services);
        if !per_worker.is_empty() && nworkers > 1 {
            let names: Vec<String> = per_worker.iter().map(service_name).collect();
            tracing::warn!(
                "persistence of {} is kept per worker under client steering {:?} ([steering])",
                names.join(", "),
                director.steering
            );
        }
        inner.per_worker_persistence = per_worker;
        let state = inner.desired.clone();
        Director::sync_checks(&mut inner, &state)
            .map_err(|e| anyhow::anyhow!("health checks: {e}"))?;
        // The quorum of every service is evaluated at start (keepalived's init evaluation).
        Director::update_quorum(&mut inner, &state);
        let quorum_acts = cfg
            .service_quorum
            .iter()
            .any(|q| q.sorry.is_some() || q.down_script.is_some());
        if !inner.down.is_empty() || !state.daemons.is_empty() || quorum_acts {
            // Also starts the sync daemons of the file (none is running yet).
            director
                .publish(&mut inner, state)
                .map_err(|e| anyhow::anyhow!("initial state: {e}"))?;
        }
    }
    let health_thread = {
        let d = director.clone();
        std::thread::Builder::new()
            .name("xvs-health-events".into())
            .spawn(move || {
                for ev in health_events {
                    d.on_health(ev);
                }
            })
            .context("health event thread")?
    };
    let metrics = match cfg.metrics {
        Some(addr) => {
            let d = director.clone();
            let exposition = Exposition {
                node_exporter: cfg.metrics_node_exporter,
            };
            let m = MetricsServer::start_with(addr, exposition, move || {
                let mut m = d.metrics();
                m.history = d.history.lock().map(|h| h.samples()).unwrap_or_default();
                m
            })
            .with_context(|| format!("metrics endpoint {addr}"))?;
            eprintln!("xvs: metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => None,
    };
    let server = Server::start(socket, director.clone())
        .with_context(|| format!("control socket {}", socket.display()))?;
    eprintln!("xvs: control socket {}", server.path().display());
    // Created after everything else is up, so nothing is announced before xvs can serve it;
    // a predecessor's device is continued (one of another name is let go).
    let announcer = match (&cfg.announce, adopted_announce) {
        (Some(name), Some((dev, announced, warm))) if dev.name() == name => {
            Some(crate::announce::Announcer::adopt(dev, announced, warm))
        }
        (Some(name), _) => Some(
            crate::announce::Announcer::start(name)
                .with_context(|| format!("announce device {name}"))?,
        ),
        (None, _) => None,
    };
    *director.announcer.lock().unwrap_or_else(|p| p.into_inner()) = announcer;
    // The DNS responders: started after the data plane, like the announcer, so their answers
    // name backends xvs already serves.
    {
        let mut servers = Vec::new();
        let (services, checks) = Director::dns_inputs(&director.lock());
        for d in &cfg.dns {
            let prepared = crate::dns::server::DnsServer::prepare(d, None)
                .with_context(|| format!("dns zone {}", d.zone))?;
            let server = crate::dns::server::DnsServer::launch(prepared, &services, &checks);
            eprintln!(
                "xvs: dns zone {} on {}",
                d.zone,
                d.listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            servers.push(server);
        }
        *director.dns.lock().unwrap_or_else(|p| p.into_inner()) = servers;
        let mut listeners = Vec::new();
        for r in &cfg.redirects {
            let prepared = crate::redirect::server::RedirectServer::prepare(r)
                .with_context(|| format!("redirect {}", r.name))?;
            let server = crate::redirect::server::RedirectServer::launch(prepared, &services);
            eprintln!(
                "xvs: redirect {} on {}",
                r.name,
                r.listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            listeners.push(server);
        }
        *director.redirects.lock().unwrap_or_else(|p| p.into_inner()) = listeners;
    }
    // The data plane forwards (workers run the published state) and the control socket answers.
    let mut notifier = Notifier::from_env();
    notifier.ready(&format!(
        "forwarding: {} service(s), {} worker(s)",
        cfg.services.len(),
        nworkers
    ));
    let tick = notifier
        .watchdog_every()
        .map_or(crate::announce::PERIOD, |w| {
            w.clamp(Duration::from_millis(1), crate::announce::PERIOD)
        });
    let mut last_rates = Instant::now();
    let mut last_sample = Instant::now();
    while !stop.load(Ordering::Relaxed) && !director.handed_over.load(Ordering::Acquire) {
        let mut slot = director.announcer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = slot.as_mut() {
            let (want, warm) = {
                let inner = director.lock();
                let bulk_done = inner
                    .backup
                    .as_ref()
                    .map(|b| b.stats.bulk_done.load(Ordering::Relaxed) > 0);
                (
                    crate::announce::available_vips(
                        &Director::effective(&inner, &inner.desired).services,
                    ),
                    bulk_done,
                )
            };
            if director.handed_over.load(Ordering::Acquire) {
                break;
            }
            a.update_when_warm(&want, warm);
            director.lock().announce = Some(a.describe());
        }
        drop(slot);
        {
            let servers = director.dns.lock().unwrap_or_else(|p| p.into_inner());
            let listeners = director.redirects.lock().unwrap_or_else(|p| p.into_inner());
            if !servers.is_empty() || !listeners.is_empty() {
                let (services, checks) = Director::dns_inputs(&director.lock());
                for d in servers.iter() {
                    d.update(&services, &checks);
                }
                for r in listeners.iter() {
                    r.update(&services);
                }
            }
        }
        std::thread::sleep(tick);
        notifier.tick();
        if hup.swap(false, Ordering::Relaxed) {
            notifier.reloading();
            match director.reload_file() {
                Ok(msg) => eprintln!("xvs: {msg}"),
                Err(e) => eprintln!(
                    "{}",
                    crate::systemd::line(
                        tracing::Level::WARN,
                        &format!("xvs: reload refused, running state kept: {e}")
                    )
                ),
            }
            notifier.ready("reloaded");
        }
        if last_rates.elapsed() >= Duration::from_secs(2) {
            last_rates = Instant::now();
            director.estimate_rates();
        }
        director.adapt(Instant::now());
        if cfg.metrics.is_some() && last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            let m = director.metrics();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if let Ok(mut h) = director.history.lock() {
                h.record(&m, now);
            }
        }
        if let Some(w) = director.dataplane.lock().ok().and_then(|d| d.dead_worker()) {
            anyhow::bail!("worker {w} died; stopping");
        }
    }
    notifier.stopping();
    eprintln!("xvs: stopping");
    // Withdraw first: the device goes with its addresses (after a takeover it stays: the
    // successor holds it open).
    drop(
        director
            .announcer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
    for d in std::mem::take(&mut *director.dns.lock().unwrap_or_else(|p| p.into_inner())) {
        d.stop();
    }
    for r in std::mem::take(&mut *director.redirects.lock().unwrap_or_else(|p| p.into_inner())) {
        r.stop();
    }
    server.stop();
    // Closed when this function returns, after everything else: then the successor knows the
    // control socket and the sync ports are free.
    let _successor = director.successor.lock().ok().and_then(|mut s| s.take());
    if let Some(m) = metrics {
        m.shutdown();
    }
    {
        let mut inner = director.lock();
        if let Some(d) = inner.master.take() {
            d.stop();
        }
        if let Some(d) = inner.backup.take() {
            d.stop();
        }
    }
    // keepalived's omega: the quorum_down scripts run on shutdown, each given a second; not
    // after a takeover (the successor carries the services on).
    let handed_over = director.handed_over.load(Ordering::Acquire);
    let omega: Vec<(String, String)> = director
        .lock()
        .quorum
        .iter()
        .filter(|(_, (cfg, _))| cfg.omega && !handed_over)
        .filter_map(|(k, (cfg, _))| cfg.down_script.clone().map(|c| (service_name(k), c)))
        .collect();
    for (name, cmd) in omega {
        run_script_bounded(&cmd, &name, SHUTDOWN_SCRIPT_TIMEOUT);
    }
    let checker = director.lock().health.take();
    if let Some(h) = checker {
        h.shutdown();
    }
    let _ = health_thread.join();
    let director = Arc::try_unwrap(director)
        .map_err(|_| anyhow::anyhow!("control threads still hold the director"))?;
    let dp = director
        .dataplane
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    dp.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_forwarding::service::Persistence;

    fn svc(addr: &str, persistence: Option<u8>) -> Service {
        let mut s = Config::parse(
            Path::new("t.toml"),
            &format!(
                "[[service]]\nprotocol = \"tcp\"\nvip = \"{addr}\"\nport = 80\nscheduler = \"rr\"\n"
            ),
        )
        .unwrap()
        .services[0]
            .clone();
        s.persistence = persistence.map(|prefix_len| Persistence {
            timeout: 300,
            prefix_len,
        });
        s
    }

    #[test]
    fn steering_is_chosen_once_from_the_configuration() {
        let plain = [svc("198.18.10.1", None)];
        let persistent = [svc("198.18.10.1", Some(24)), svc("2001:2::1", Some(64))];
        let auto = SteeringConfig::default();
        assert_eq!(start_steering(&auto, &plain), ClientSteering::Flow);
        assert_eq!(
            start_steering(&auto, &persistent),
            ClientSteering::Address {
                v4_prefix: 24,
                v6_prefix: 64
            }
        );
        let address = SteeringConfig {
            clients: SteeringMode::Address,
            v4_prefix: Some(16),
            v6_prefix: None,
        };
        assert_eq!(
            start_steering(&address, &plain),
            ClientSteering::Address {
                v4_prefix: 16,
                v6_prefix: 128
            }
        );
        let flow = SteeringConfig {
            clients: SteeringMode::Flow,
            ..SteeringConfig::default()
        };
        assert_eq!(start_steering(&flow, &persistent), ClientSteering::Flow);
    }

    #[test]
    fn persistence_the_fixed_steering_cannot_keep_exact_is_named() {
        let s = [
            svc("198.18.10.1", Some(24)),
            svc("198.18.10.2", Some(32)),
            svc("198.18.10.3", None),
        ];
        let keys: Vec<ServiceKey> = s.iter().map(|s| s.key).collect();
        assert_eq!(
            per_worker_persistence(ClientSteering::Flow, &s),
            keys[..2].to_vec()
        );
        let by_32 = ClientSteering::Address {
            v4_prefix: 32,
            v6_prefix: 128,
        };
        assert_eq!(per_worker_persistence(by_32, &s), vec![keys[0]]);
        let by_24 = ClientSteering::Address {
            v4_prefix: 24,
            v6_prefix: 128,
        };
        assert!(per_worker_persistence(by_24, &s).is_empty());
    }

    #[test]
    fn steering_section_is_parsed_and_checked() {
        let head = "[[interface]]\nname = \"front\"\nipv4 = \"198.18.1.2\"\n";
        let cfg = Config::parse(
            Path::new("t.toml"),
            &format!("{head}[steering]\nclients = \"address\"\nv4_prefix = 24\n"),
        )
        .unwrap();
        assert_eq!(
            cfg.dataplane.steering,
            SteeringConfig {
                clients: SteeringMode::Address,
                v4_prefix: Some(24),
                v6_prefix: None
            }
        );
        for (bad, field) in [
            ("v4_prefix = 40", "steering.v4_prefix"),
            ("v6_prefix = 0", "steering.v6_prefix"),
            ("clients = \"flow\"\nv4_prefix = 24", "steering"),
        ] {
            let e = Config::parse(Path::new("t.toml"), &format!("{head}[steering]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
