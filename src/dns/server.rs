//! The DNS responder's sockets and threads (`[[dns]]`): per listen address one UDP thread and
//! one TCP accept thread (RFC 7766: each message preceded by its two-byte length; several
//! queries per connection; an idle connection closed after [`TCP_IDLE`]), all answering through
//! one shared [`Responder`] (`crate::dns::answer`, the sans-I/O part); UDP answers pass the
//! entry's rate limiter (`crate::dns::rrl`) when it has one. `xvs run` feeds it the
//! available backends of the configured service, or the states of its sites
//! (`crate::dns::sites`), every main-loop period.
//!
//! Reload: [`plan_reload`] binds what a new configuration listens on anew, then
//! [`ReloadPlan::apply`] swaps each entry's configuration under the threads of the addresses it
//! keeps (their sockets stay open), stops the listeners of addresses no longer listed and
//! starts those of the new ones.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use xvs_forwarding::service::Service;
use xvs_schedulers::Time;

use crate::config::{DnsConfig, DnsSource};
use crate::dns::answer::{DnsConfigError, Outcome, Responder, Transport};
use crate::dns::rrl::{truncated, RateLimiter, Verdict};
use crate::dns::sites::{self, CheckStates, SiteStatus};

/// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3 leaves
/// the value to the server; BIND uses 30 s, this is shorter to bound the threads).
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// At most this many TCP connections are served at once per entry; more are closed at accept.
pub const TCP_MAX: usize = 64;
/// How often blocked threads look at their stop flag.
const POLL: Duration = Duration::from_millis(100);

/// The rcodes counted by name, with their RFC 1035/6895 mnemonics.
pub const RCODES: [(u16, &str); 7] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (16, "BADVERS"),
];

/// Errors of starting (or reconfiguring) a responder.
#[derive(Debug, thiserror::Error)]
pub enum DnsServerError {
    #[error("{0}")]
    Config(#[from] DnsConfigError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The query types counted by name; every other type, and a query without one question, is
/// counted as `other`.
pub const QTYPES: [&str; 5] = ["A", "AAAA", "SOA", "ANY", "other"];

/// The index in [`QTYPES`] of a query's type.
fn qtype_index(t: Option<hickory_proto::rr::RecordType>) -> usize {
    use hickory_proto::rr::RecordType;
    match t {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::SOA) => 2,
        Some(RecordType::ANY) => 3,
        _ => 4,
    }
}

/// Counters of one name (or of the queries for no configured name).
#[derive(Debug, Default)]
pub struct NameCounters {
    pub queries: AtomicU64,
    /// Answered queries by type, in [`QTYPES`] order.
    pub qtypes: [AtomicU64; QTYPES.len()],
    /// Answers by rcode, in [`RCODES`] order.
    pub rcodes: [AtomicU64; RCODES.len()],
    pub truncated: AtomicU64,
}

/// A snapshot of one name's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NameStatus {
    /// The name, or `""` for the queries that named no configured name.
    pub name: String,
    pub queries: u64,
    /// (query type, queries) for each of [`QTYPES`].
    #[serde(default)]
    pub qtypes: Vec<(String, u64)>,
    /// (rcode mnemonic, answers) for each counted rcode.
    pub rcodes: Vec<(String, u64)>,
    pub truncated: u64,
    /// The backends answered now (address, weight).
    pub backends: Vec<(IpAddr, u32)>,
}

impl NameStatus {
    /// The name as listings print it: `(other names)` for the queries that named none.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            "(other names)"
        } else {
            &self.name
        }
    }

    /// The answers by rcode that are not zero, as `NOERROR 12`, joined by `sep`; `None` when
    /// nothing was answered.
    pub fn answers(&self, sep: &str) -> Option<String> {
        let v: Vec<String> = self
            .rcodes
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(m, c)| format!("{m} {c}"))
            .collect();
        (!v.is_empty()).then(|| v.join(sep))
    }
}

/// A snapshot of one `[[dns]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsStatus {
    pub zone: String,
    pub listen: Vec<SocketAddr>,
    pub scheduler: String,
    pub names: Vec<NameStatus>,
    /// The entry's sites (`[[dns.site]]`) with whether each is answered now; empty for an
    /// entry of a service's backends or of fixed addresses.
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
    /// Messages dropped without an answer (unparseable, not a query, send failure).
    pub dropped: u64,
    /// UDP answers over the rate limit: dropped, sent truncated (slipped), and sent unlimited
    /// because the limiter's table was full.
    pub rate_limited_dropped: u64,
    pub rate_limited_slipped: u64,
    pub rate_limit_table_full: u64,
}

/// What a reload replaces: the entry's configuration with its responder, counters and rate
/// limiter.
struct Answering {
    cfg: DnsConfig,
    responder: Responder,
    /// One per configured name, then one for the other queries.
    counters: Vec<NameCounters>,
    limiter: Option<RateLimiter>,
    /// The sites as last evaluated (empty unless the entry has sites).
    sites: Vec<SiteStatus>,
}

struct Shared {
    answering: Mutex<Answering>,
    dropped: AtomicU64,
    rl_dropped: AtomicU64,
    rl_slipped: AtomicU64,
    rl_full: AtomicU64,
    tcp_open: AtomicUsize,
    started: Instant,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Answering> {
        self.answering.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rate limiter's verdict for an answer to `client` (always `Send` without a limit).
    fn limit(&self, client: IpAddr) -> Verdict {
        let now = Time(self.started.elapsed().as_nanos() as u64);
        match &mut self.lock().limiter {
            Some(l) => l.check(client, now),
            None => Verdict::Send,
        }
    }

    fn answer(&self, msg: &[u8], client: IpAddr, local: IpAddr, t: Transport) -> Option<Vec<u8>> {
        let now = Time(self.started.elapsed().as_nanos() as u64);
        let mut a = self.lock();
        let (bytes, outcome) = a.responder.respond(msg, client, local, t, now);
        match outcome {
            Outcome::Dropped => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Answered {
                name,
                qtype,
                rcode,
                truncated,
            } => {
                let last = a.counters.len() - 1;
                let c = &a.counters[name.unwrap_or(last).min(last)];
                c.queries.fetch_add(1, Ordering::Relaxed);
                c.qtypes[qtype_index(qtype)].fetch_add(1, Ordering::Relaxed);
                if let Some(k) = RCODES.iter().position(|(r, _)| *r == rcode) {
                    c.rcodes[k].fetch_add(1, Ordering::Relaxed);
                }
                if truncated {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        bytes
    }
}

/// The records of `cfg`'s names now: a service's backends with weight > 0 in `services` (the
/// effective state: backends that failed their check are absent or at weight 0; a service no
/// longer running leaves none), the fixed addresses, or the sites answered now (with every
/// site's state).
fn records(
    cfg: &DnsConfig,
    services: &[Service],
    checks: &CheckStates,
) -> (Vec<(IpAddr, u32)>, Vec<SiteStatus>) {
    match &cfg.source {
        DnsSource::Addresses(list) => (list.clone(), Vec::new()),
        DnsSource::Service(key) => {
            let mut v: Vec<(IpAddr, u32)> = Vec::new();
            for (addr, _, weight) in crate::balance::available_backends(services, key) {
                // Two ports of one address are one record, of the larger weight.
                match v.iter_mut().find(|(a, _)| *a == addr) {
                    Some(e) => e.1 = e.1.max(weight),
                    None => v.push((addr, weight)),
                }
            }
            (v, Vec::new())
        }
        DnsSource::Sites(list) => {
            let st = sites::site_states(&cfg.zone, list, services, checks);
            (sites::records(&st), st)
        }
    }
}

/// A `[[dns]]` entry's configuration checked, with its responder built and the listen
/// addresses it needs bound: nothing running has changed yet ([`DnsServer::launch`] starts it,
/// [`DnsServer::apply`] makes it a running entry's).
pub struct Prepared {
    cfg: DnsConfig,
    responder: Responder,
    bound: Vec<(SocketAddr, UdpSocket, TcpListener)>,
}

/// One listen address's sockets' threads (UDP, TCP accept, TCP connections).
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listener {
    fn start(shared: &Arc<Shared>, addr: SocketAddr, udp: UdpSocket, tcp: TcpListener) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let u = std::thread::spawn(move || udp_loop(&s, &st, &udp));
        let (s, st) = (shared.clone(), stop.clone());
        let t = std::thread::spawn(move || tcp_loop(&s, &st, &tcp));
        Listener {
            addr,
            stop,
            threads: vec![u, t],
        }
    }

    /// Stops the threads and waits for them (at most about one [`POLL`], TCP connections
    /// included); the sockets close with them.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What [`DnsServer::apply`] did to the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relisten {
    /// Listen addresses whose sockets were kept (and kept answering).
    pub kept: usize,
    /// Addresses newly bound.
    pub bound: usize,
    /// Addresses no longer listened on.
    pub closed: usize,
}

/// A running `[[dns]]` entry.
pub struct DnsServer {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("zone", &self.shared.lock().cfg.zone)
            .finish()
    }
}

impl DnsServer {
    /// Builds `cfg`'s responder and binds (UDP and TCP) every listen address that `running`
    /// does not listen on already.
    pub fn prepare(
        cfg: &DnsConfig,
        running: Option<&DnsServer>,
    ) -> Result<Prepared, DnsServerError> {
        let responder = cfg.responder()?;
        let have: HashSet<SocketAddr> = running
            .map(|r| r.listeners.iter().map(|l| l.addr).collect())
            .unwrap_or_default();
        let mut bound = Vec::new();
        for &addr in cfg.listen.iter().filter(|a| !have.contains(a)) {
            let listen = |source| DnsServerError::Listen { addr, source };
            let udp: UdpSocket = bind(addr, Type::DGRAM).map_err(listen)?.into();
            udp.set_read_timeout(Some(POLL)).map_err(listen)?;
            let tcp = bind(addr, Type::STREAM).map_err(listen)?;
            tcp.listen(128).map_err(listen)?;
            let tcp: TcpListener = tcp.into();
            tcp.set_nonblocking(true).map_err(listen)?;
            bound.push((addr, udp, tcp));
        }
        Ok(Prepared {
            cfg: cfg.clone(),
            responder,
            bound,
        })
    }

    /// Binds every listen address (UDP and TCP) and starts the threads. Fixed addresses are
    /// answered at once; a service's backends and sites once [`DnsServer::update`] has run.
    pub fn start(cfg: &DnsConfig) -> Result<DnsServer, DnsServerError> {
        Ok(Self::launch(
            Self::prepare(cfg, None)?,
            &[],
            &CheckStates::new(),
        ))
    }

    /// Starts a prepared entry, its records taken from `services` and `checks` at once.
    pub fn launch(p: Prepared, services: &[Service], checks: &CheckStates) -> DnsServer {
        let Prepared {
            cfg,
            mut responder,
            bound,
        } = p;
        let (recs, sites) = records(&cfg, services, checks);
        for i in 0..cfg.names.len() {
            responder.set_backends(i, &recs);
        }
        let shared = Arc::new(Shared {
            answering: Mutex::new(Answering {
                counters: (0..=cfg.names.len())
                    .map(|_| NameCounters::default())
                    .collect(),
                limiter: (cfg.rate_limit > 0).then(|| RateLimiter::new(cfg.rate_limit, cfg.slip)),
                cfg,
                responder,
                sites,
            }),
            dropped: AtomicU64::new(0),
            rl_dropped: AtomicU64::new(0),
            rl_slipped: AtomicU64::new(0),
            rl_full: AtomicU64::new(0),
            tcp_open: AtomicUsize::new(0),
            started: Instant::now(),
        });
        let listeners = bound
            .into_iter()
            .map(|(addr, udp, tcp)| Listener::start(&shared, addr, udp, tcp))
            .collect();
        DnsServer { shared, listeners }
    }

    /// The entry's configuration.
    pub fn config(&self) -> DnsConfig {
        self.shared.lock().cfg.clone()
    }

    /// Makes a prepared configuration (from [`DnsServer::prepare`] with this server) this
    /// entry's: the listeners of addresses it keeps keep their sockets and threads and answer
    /// from the new configuration from the next query on; those of addresses it no longer
    /// lists stop; the newly bound ones start. Counters of names it keeps are kept (by name),
    /// as is the rate limiter's state while `rate_limit` and `slip` are unchanged. The records
    /// are taken from `services` and `checks` before the first query sees the new names.
    pub fn apply(&mut self, p: Prepared, services: &[Service], checks: &CheckStates) -> Relisten {
        let Prepared {
            cfg,
            mut responder,
            bound,
        } = p;
        let (recs, sites) = records(&cfg, services, checks);
        for i in 0..cfg.names.len() {
            responder.set_backends(i, &recs);
        }
        {
            let mut a = self.shared.lock();
            let a = &mut *a;
            let mut old: Vec<(String, NameCounters)> = a
                .responder
                .names()
                .iter()
                .map(|n| n.name.to_string())
                .chain(std::iter::once(String::new()))
                .zip(std::mem::take(&mut a.counters))
                .collect();
            let mut take = |name: String| {
                old.iter()
                    .position(|(n, _)| *n == name)
                    .map(|k| old.swap_remove(k).1)
                    .unwrap_or_default()
            };
            let mut counters: Vec<NameCounters> = responder
                .names()
                .iter()
                .map(|n| take(n.name.to_string()))
                .collect();
            counters.push(take(String::new()));
            if (cfg.rate_limit, cfg.slip) != (a.cfg.rate_limit, a.cfg.slip) {
                a.limiter =
                    (cfg.rate_limit > 0).then(|| RateLimiter::new(cfg.rate_limit, cfg.slip));
            }
            a.counters = counters;
            a.responder = responder;
            a.sites = sites;
            a.cfg = cfg;
        }
        let listen: HashSet<SocketAddr> = self.shared.lock().cfg.listen.iter().copied().collect();
        let mut r = Relisten::default();
        let (keep, gone): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|l| listen.contains(&l.addr));
        r.kept = keep.len();
        r.closed = gone.len();
        for l in gone {
            l.stop();
        }
        self.listeners = keep;
        for (addr, udp, tcp) in bound {
            self.listeners
                .push(Listener::start(&self.shared, addr, udp, tcp));
            r.bound += 1;
        }
        r
    }

    /// Takes the records from `services` (the effective state) and `checks` (the states of the
    /// sites' health checks); an entry of fixed addresses keeps its own.
    pub fn update(&self, services: &[Service], checks: &CheckStates) {
        let mut a = self.shared.lock();
        if matches!(a.cfg.source, DnsSource::Addresses(_)) {
            return;
        }
        let (recs, sites) = records(&a.cfg, services, checks);
        for i in 0..a.cfg.names.len() {
            a.responder.set_backends(i, &recs);
        }
        a.sites = sites;
    }

    /// The entry's counters and current records.
    pub fn status(&self) -> DnsStatus {
        let a = self.shared.lock();
        let names = a
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| NameStatus {
                name: a
                    .responder
                    .names()
                    .get(i)
                    .map_or(String::new(), |n| n.name.to_string()),
                queries: c.queries.load(Ordering::Relaxed),
                qtypes: QTYPES
                    .iter()
                    .zip(c.qtypes.iter())
                    .map(|(t, n)| (t.to_string(), n.load(Ordering::Relaxed)))
                    .collect(),
                rcodes: RCODES
                    .iter()
                    .zip(c.rcodes.iter())
                    .map(|((_, m), n)| (m.to_string(), n.load(Ordering::Relaxed)))
                    .collect(),
                truncated: c.truncated.load(Ordering::Relaxed),
                backends: a.responder.backends(i),
            })
            .collect();
        DnsStatus {
            zone: a.cfg.zone.clone(),
            listen: a.cfg.listen.clone(),
            scheduler: a.cfg.scheduler.clone(),
            names,
            sites: a.sites.clone(),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            rate_limited_dropped: self.shared.rl_dropped.load(Ordering::Relaxed),
            rate_limited_slipped: self.shared.rl_slipped.load(Ordering::Relaxed),
            rate_limit_table_full: self.shared.rl_full.load(Ordering::Relaxed),
        }
    }

    /// Stops the threads and waits for them (at most about one [`POLL`], TCP connections
    /// included).
    pub fn stop(self) {
        for l in &self.listeners {
            l.stop.store(true, Ordering::Relaxed);
        }
        // Every flag first, then the joins: the listeners wind down together.
        for l in self.listeners {
            for t in l.threads {
                let _ = t.join();
            }
        }
    }
}

/// How a reload changes the running `[[dns]]` entries: each wanted entry takes over the first
/// running entry of the same zone not taken yet (its kept listen addresses keep their sockets),
/// or starts anew; running entries nobody takes stop. Built by [`plan_reload`] with every new
/// listen address already bound, so a reload either binds all it needs or changes nothing.
pub struct ReloadPlan {
    /// (index of the running entry it takes over, or `None` for a new one; the prepared entry).
    entries: Vec<(Option<usize>, Prepared)>,
}

/// Checks `wanted` against `running` and binds what is new (see [`ReloadPlan`]); on an error
/// nothing running has changed and the sockets bound so far are closed.
pub fn plan_reload(
    running: &[DnsServer],
    wanted: &[DnsConfig],
) -> Result<ReloadPlan, DnsServerError> {
    let zones: Vec<String> = running
        .iter()
        .map(|r| r.shared.lock().cfg.zone.clone())
        .collect();
    let mut taken = vec![false; running.len()];
    let mut entries = Vec::new();
    for cfg in wanted {
        let j = (0..running.len()).find(|&j| !taken[j] && zones[j] == cfg.zone);
        if let Some(j) = j {
            taken[j] = true;
        }
        let prepared = DnsServer::prepare(cfg, j.map(|j| &running[j]))?;
        entries.push((j, prepared));
    }
    Ok(ReloadPlan { entries })
}

impl ReloadPlan {
    /// Carries the plan out on `running` (the entries [`plan_reload`] saw, in the same order),
    /// records taken from `services` and `checks`; returns the running entries and one line
    /// per entry saying what happened.
    pub fn apply(
        self,
        running: Vec<DnsServer>,
        services: &[Service],
        checks: &CheckStates,
    ) -> (Vec<DnsServer>, Vec<String>) {
        let mut old: Vec<Option<DnsServer>> = running.into_iter().map(Some).collect();
        let mut lines = Vec::new();
        // Entries nobody takes stop first: their addresses may be another entry's now.
        let taken: HashSet<usize> = self.entries.iter().filter_map(|(j, _)| *j).collect();
        for (j, slot) in old.iter_mut().enumerate() {
            if !taken.contains(&j) {
                if let Some(server) = slot.take() {
                    lines.push(format!(
                        "dns zone {} stopped",
                        server.shared.lock().cfg.zone
                    ));
                    server.stop();
                }
            }
        }
        let mut out = Vec::new();
        for (j, prepared) in self.entries {
            let zone = prepared.cfg.zone.clone();
            match j.and_then(|j| old.get_mut(j).and_then(Option::take)) {
                Some(mut server) => {
                    let r = server.apply(prepared, services, checks);
                    lines.push(format!(
                        "dns zone {zone} reconfigured: {} listener(s) kept, {} bound, {} closed",
                        r.kept, r.bound, r.closed
                    ));
                    out.push(server);
                }
                None => {
                    let server = DnsServer::launch(prepared, services, checks);
                    lines.push(format!("dns zone {zone} started"));
                    out.push(server);
                }
            }
        }
        (out, lines)
    }
}

/// A socket bound to `addr` with SO_REUSEPORT, so that a successor (`xvs run --takeover`)
/// binds the same address while this process still answers.
fn bind(addr: SocketAddr, ty: Type) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn udp_loop(s: &Shared, stop: &AtomicBool, sock: &UdpSocket) {
    let local = sock
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        if let Some(resp) = s.answer(&buf[..n], peer.ip(), local, Transport::Udp) {
            let resp = match s.limit(peer.ip()) {
                Verdict::Send => resp,
                Verdict::TableFull => {
                    s.rl_full.fetch_add(1, Ordering::Relaxed);
                    resp
                }
                Verdict::Drop => {
                    s.rl_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Verdict::Slip => match truncated(&resp) {
                    Some(t) => {
                        s.rl_slipped.fetch_add(1, Ordering::Relaxed);
                        t
                    }
                    None => {
                        s.rl_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                },
            };
            if sock.send_to(&resp, peer).is_err() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn tcp_loop(s: &Arc<Shared>, stop: &Arc<AtomicBool>, listener: &TcpListener) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        conns.retain(|h| !h.is_finished());
        match listener.accept() {
            Ok((stream, peer)) => {
                if s.tcp_open.load(Ordering::Relaxed) >= TCP_MAX {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                s.tcp_open.fetch_add(1, Ordering::Relaxed);
                let (s, stop) = (s.clone(), stop.clone());
                conns.push(std::thread::spawn(move || {
                    tcp_conn(&s, &stop, stream, peer.ip());
                    s.tcp_open.fetch_sub(1, Ordering::Relaxed);
                }));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

/// Reads exactly `buf.len()` bytes; false on EOF, error, stop or [`TCP_IDLE`] without data.
fn read_full(stop: &AtomicBool, stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut got = 0;
    let start = Instant::now();
    while got < buf.len() {
        if stop.load(Ordering::Relaxed) || start.elapsed() > TCP_IDLE {
            return false;
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn tcp_conn(s: &Shared, stop: &AtomicBool, mut stream: TcpStream, client: IpAddr) {
    let local = stream
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_write_timeout(Some(TCP_IDLE)).is_err()
    {
        return;
    }
    let mut msg = vec![0u8; u16::MAX as usize];
    loop {
        let mut len = [0u8; 2];
        if !read_full(stop, &mut stream, &mut len) {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if !read_full(stop, &mut stream, &mut msg[..n]) {
            return;
        }
        let Some(resp) = s.answer(&msg[..n], client, local, Transport::Tcp) else {
            continue;
        };
        let Ok(rlen) = u16::try_from(resp.len()) else {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut out = Vec::with_capacity(resp.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&resp);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

/// The `xvs ctl status` lines of one `[[dns]]` entry: a header, then one line per name (and
/// one for the queries that named no configured name) with its queries, answers by rcode,
/// truncated answers and current records, then one line per site with whether it is answered.
pub fn format_status(st: &DnsStatus) -> String {
    let mut out = format!(
        "dns zone {} on {} ({}), dropped {}, rate-limited {} dropped {} slipped ({} unlimited: table full)\n",
        st.zone,
        st.listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        st.scheduler,
        st.dropped,
        st.rate_limited_dropped,
        st.rate_limited_slipped,
        st.rate_limit_table_full
    );
    for n in &st.names {
        out.push_str(&format!(
            "  dns {}: queries {}, {}, truncated {}",
            n.label(),
            n.queries,
            n.answers(", ").unwrap_or_else(|| "no answers".to_string()),
            n.truncated
        ));
        if !n.name.is_empty() {
            let b: Vec<String> = n
                .backends
                .iter()
                .map(|(a, w)| format!("{a} weight {w}"))
                .collect();
            out.push_str(&format!(
                "; records: {}",
                if b.is_empty() {
                    "none (SERVFAIL)".to_string()
                } else {
                    b.join(", ")
                }
            ));
        }
        out.push('\n');
    }
    for site in &st.sites {
        out.push_str(&format!(
            "  dns site {} {} weight {}: {} ({})\n",
            site.name,
            site.address,
            site.weight,
            if site.up { "answered" } else { "down" },
            site.basis
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    //! Reload on loopback: addresses 127.N.M.1 from the process id (tests of other processes
    //! on this machine use other ones) and a port the kernel just gave out.
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};

    fn addr(k: u8) -> SocketAddr {
        crate::test_support::loopback_addr(k)
    }

    fn cfg(listen: Vec<SocketAddr>, ttl: u32, names: &[&str], record: [u8; 4]) -> DnsConfig {
        DnsConfig {
            zone: "r.test".into(),
            nameserver: "ns.r.test".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            listen,
            ttl,
            negative_ttl: ttl,
            answers: 1,
            scheduler: "rr".into(),
            source: DnsSource::Addresses(vec![(IpAddr::from(record), 1)]),
            client_networks: Vec::new(),
            rate_limit: 0,
            slip: 2,
        }
    }

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    /// (TTL, address) of the first answer over UDP; `None` when nothing comes back.
    fn ask_udp(to: SocketAddr, name: &str) -> Option<(u32, RData)> {
        let s = UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.send_to(&query(name), to).ok()?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        m.answers.first().map(|a| (a.ttl, a.data.clone()))
    }

    fn ask_tcp(c: &mut TcpStream, name: &str) -> (u32, RData) {
        let q = query(name);
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        c.write_all(&out).unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut msg).unwrap();
        let m = Message::from_vec(&msg).unwrap();
        (m.answers[0].ttl, m.answers[0].data.clone())
    }

    fn a(d: [u8; 4]) -> RData {
        RData::A(hickory_proto::rr::rdata::A(d.into()))
    }

    #[test]
    fn reload_keeps_unchanged_listeners_binds_new_ones_and_refuses_what_cannot_bind() {
        let (a1, a2) = (addr(1), addr(2));
        let first = cfg(vec![a1], 5, &["w.r.test"], [198, 18, 50, 1]);
        let server = DnsServer::start(&first).unwrap();
        let mut running = vec![server];
        assert_eq!(ask_udp(a1, "w.r.test."), Some((5, a([198, 18, 50, 1]))));
        let mut tcp = TcpStream::connect(a1).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(ask_tcp(&mut tcp, "w.r.test."), (5, a([198, 18, 50, 1])));

        // TTL, names and records change, a second address is added: a1 keeps its sockets
        // (the open TCP connection is answered from the new configuration), a2 answers.
        let second = cfg(vec![a1, a2], 9, &["w.r.test", "x.r.test"], [198, 18, 50, 2]);
        let plan = plan_reload(&running, std::slice::from_ref(&second)).unwrap();
        let (r, lines) = plan.apply(running, &[], &CheckStates::new());
        running = r;
        assert_eq!(
            lines,
            ["dns zone r.test reconfigured: 1 listener(s) kept, 1 bound, 0 closed"]
        );
        assert_eq!(ask_tcp(&mut tcp, "x.r.test."), (9, a([198, 18, 50, 2])));
        assert_eq!(ask_udp(a1, "w.r.test."), Some((9, a([198, 18, 50, 2]))));
        assert_eq!(ask_udp(a2, "x.r.test."), Some((9, a([198, 18, 50, 2]))));
        // The counters of a name kept carry on: 2 before, 2 after.
        let st = running[0].status();
        let w = st.names.iter().find(|n| n.name == "w.r.test.").unwrap();
        assert_eq!(w.queries, 3);
        assert_eq!(st.listen, vec![a1, a2]);

        // An address that cannot be bound (not on this host): refused, nothing changed.
        let unbindable = SocketAddr::from(([198, 18, 255, 254], a1.port()));
        let third = cfg(vec![a2, unbindable], 11, &["w.r.test"], [198, 18, 50, 3]);
        match plan_reload(&running, std::slice::from_ref(&third)) {
            Err(DnsServerError::Listen { addr, .. }) => assert_eq!(addr, unbindable),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("{unbindable} bound"),
        }
        assert_eq!(ask_udp(a1, "w.r.test."), Some((9, a([198, 18, 50, 2]))));

        // a1 dropped: its listener closes (no answer there, the TCP connection ends), a2 stays.
        let fourth = cfg(vec![a2], 11, &["w.r.test"], [198, 18, 50, 3]);
        let plan = plan_reload(&running, std::slice::from_ref(&fourth)).unwrap();
        let (r, lines) = plan.apply(running, &[], &CheckStates::new());
        running = r;
        assert_eq!(
            lines,
            ["dns zone r.test reconfigured: 1 listener(s) kept, 0 bound, 1 closed"]
        );
        assert_eq!(ask_udp(a1, "w.r.test."), None);
        let mut rest = Vec::new();
        assert_eq!(tcp.read_to_end(&mut rest).ok(), Some(0), "closed by xvs");
        assert_eq!(ask_udp(a2, "w.r.test."), Some((11, a([198, 18, 50, 3]))));

        // Another zone in its place: the old entry stops, the new one starts on the address.
        let mut other = cfg(vec![a2], 3, &["w.s.test"], [198, 18, 50, 4]);
        other.zone = "s.test".into();
        let plan = plan_reload(&running, std::slice::from_ref(&other)).unwrap();
        let (r, lines) = plan.apply(running, &[], &CheckStates::new());
        assert_eq!(
            lines,
            ["dns zone r.test stopped", "dns zone s.test started"]
        );
        assert_eq!(ask_udp(a2, "w.s.test."), Some((3, a([198, 18, 50, 4]))));
        for s in r {
            s.stop();
        }
    }
}
