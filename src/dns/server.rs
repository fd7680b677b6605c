//! The DNS responder's sockets and threads (`[[dns]]`): per listen address one UDP thread and
//! one TCP accept thread (RFC 7766: each message preceded by its two-byte length; several
//! queries per connection; an idle connection closed after [`TCP_IDLE`]), all answering through
//! one shared [`Responder`] (`crate::dns::answer`, the sans-I/O part); UDP answers pass the
//! entry's rate limiter (`crate::dns::rrl`) when it has one. `xvs run` feeds it the
//! available backends of the configured service every main-loop period.

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

/// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3 leaves
/// the value to the server; BIND uses 30 s, this is shorter to bound the threads).
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// At most this many TCP connections are served at once per entry; more are closed at accept.
pub const TCP_MAX: usize = 64;
/// How often blocked threads look at the stop flag.
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

/// Errors of starting a responder.
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

/// Counters of one name (or of the queries for no configured name).
#[derive(Debug, Default)]
pub struct NameCounters {
    pub queries: AtomicU64,
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
    /// (rcode mnemonic, answers) for each counted rcode.
    pub rcodes: Vec<(String, u64)>,
    pub truncated: u64,
    /// The backends answered now (address, weight).
    pub backends: Vec<(IpAddr, u32)>,
}

/// A snapshot of one `[[dns]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsStatus {
    pub zone: String,
    pub listen: Vec<SocketAddr>,
    pub scheduler: String,
    pub names: Vec<NameStatus>,
    /// Messages dropped without an answer (unparseable, not a query, send failure).
    pub dropped: u64,
    /// UDP answers over the rate limit: dropped, sent truncated (slipped), and sent unlimited
    /// because the limiter's table was full.
    pub rate_limited_dropped: u64,
    pub rate_limited_slipped: u64,
    pub rate_limit_table_full: u64,
}

struct Shared {
    cfg: DnsConfig,
    responder: Mutex<Responder>,
    /// One per configured name, then one for the other queries.
    counters: Vec<NameCounters>,
    dropped: AtomicU64,
    limiter: Option<Mutex<RateLimiter>>,
    rl_dropped: AtomicU64,
    rl_slipped: AtomicU64,
    rl_full: AtomicU64,
    tcp_open: AtomicUsize,
    started: Instant,
    stop: AtomicBool,
}

impl Shared {
    /// The rate limiter's verdict for an answer to `client` (always `Send` without a limit).
    fn limit(&self, client: IpAddr) -> Verdict {
        match &self.limiter {
            Some(l) => {
                let now = Time(self.started.elapsed().as_nanos() as u64);
                l.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .check(client, now)
            }
            None => Verdict::Send,
        }
    }

    fn answer(&self, msg: &[u8], client: IpAddr, local: IpAddr, t: Transport) -> Option<Vec<u8>> {
        let now = Time(self.started.elapsed().as_nanos() as u64);
        let (bytes, outcome) = self
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .respond(msg, client, local, t, now);
        match outcome {
            Outcome::Dropped => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Answered {
                name,
                rcode,
                truncated,
            } => {
                let c = &self.counters[name.unwrap_or(self.counters.len() - 1)];
                c.queries.fetch_add(1, Ordering::Relaxed);
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

/// A running `[[dns]]` entry.
pub struct DnsServer {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("zone", &self.shared.cfg.zone)
            .finish()
    }
}

impl DnsServer {
    /// Binds every listen address (UDP and TCP) and starts the threads. Fixed addresses are
    /// answered at once; a service's backends once [`DnsServer::update`] has run.
    pub fn start(cfg: &DnsConfig) -> Result<DnsServer, DnsServerError> {
        let mut responder = cfg.responder()?;
        if let DnsSource::Addresses(list) = &cfg.source {
            for i in 0..cfg.names.len() {
                responder.set_backends(i, list);
            }
        }
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            responder: Mutex::new(responder),
            counters: (0..=cfg.names.len())
                .map(|_| NameCounters::default())
                .collect(),
            dropped: AtomicU64::new(0),
            limiter: (cfg.rate_limit > 0)
                .then(|| Mutex::new(RateLimiter::new(cfg.rate_limit, cfg.slip))),
            rl_dropped: AtomicU64::new(0),
            rl_slipped: AtomicU64::new(0),
            rl_full: AtomicU64::new(0),
            tcp_open: AtomicUsize::new(0),
            started: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let mut sockets = Vec::new();
        for &addr in &cfg.listen {
            let listen = |source| DnsServerError::Listen { addr, source };
            let udp: UdpSocket = bind(addr, Type::DGRAM).map_err(listen)?.into();
            udp.set_read_timeout(Some(POLL)).map_err(listen)?;
            let tcp = bind(addr, Type::STREAM).map_err(listen)?;
            tcp.listen(128).map_err(listen)?;
            let tcp: TcpListener = tcp.into();
            tcp.set_nonblocking(true).map_err(listen)?;
            sockets.push((udp, tcp));
        }
        let mut threads = Vec::new();
        for (udp, tcp) in sockets {
            let s = shared.clone();
            threads.push(std::thread::spawn(move || udp_loop(&s, &udp)));
            let s = shared.clone();
            threads.push(std::thread::spawn(move || tcp_loop(&s, &tcp)));
        }
        Ok(DnsServer { shared, threads })
    }

    /// Takes the records of a service-backed entry from `services` (the effective state:
    /// backends that failed their check are absent or at weight 0). A service no longer
    /// configured leaves no backend (SERVFAIL).
    pub fn update(&self, services: &[Service]) {
        let DnsSource::Service(key) = &self.shared.cfg.source else {
            return;
        };
        let mut healthy: Vec<(IpAddr, u32)> = Vec::new();
        for (addr, _, weight) in crate::balance::available_backends(services, key) {
            // Two ports of one address are one record, of the larger weight.
            match healthy.iter_mut().find(|(a, _)| *a == addr) {
                Some(e) => e.1 = e.1.max(weight),
                None => healthy.push((addr, weight)),
            }
        }
        let mut r = self
            .shared
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for i in 0..self.shared.cfg.names.len() {
            r.set_backends(i, &healthy);
        }
    }

    /// The entry's counters and current records.
    pub fn status(&self) -> DnsStatus {
        let r = self
            .shared
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let names = self
            .shared
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| NameStatus {
                name: r
                    .names()
                    .get(i)
                    .map_or(String::new(), |n| n.name.to_string()),
                queries: c.queries.load(Ordering::Relaxed),
                rcodes: RCODES
                    .iter()
                    .zip(c.rcodes.iter())
                    .map(|((_, m), n)| (m.to_string(), n.load(Ordering::Relaxed)))
                    .collect(),
                truncated: c.truncated.load(Ordering::Relaxed),
                backends: r.backends(i),
            })
            .collect();
        DnsStatus {
            zone: self.shared.cfg.zone.clone(),
            listen: self.shared.cfg.listen.clone(),
            scheduler: self.shared.cfg.scheduler.clone(),
            names,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            rate_limited_dropped: self.shared.rl_dropped.load(Ordering::Relaxed),
            rate_limited_slipped: self.shared.rl_slipped.load(Ordering::Relaxed),
            rate_limit_table_full: self.shared.rl_full.load(Ordering::Relaxed),
        }
    }

    /// Stops the threads and waits for them (at most about one [`POLL`], TCP connections
    /// included).
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
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

fn udp_loop(s: &Shared, sock: &UdpSocket) {
    let local = sock
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let mut buf = [0u8; 4096];
    while !s.stop.load(Ordering::Relaxed) {
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

fn tcp_loop(s: &Arc<Shared>, listener: &TcpListener) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !s.stop.load(Ordering::Relaxed) {
        conns.retain(|h| !h.is_finished());
        match listener.accept() {
            Ok((stream, peer)) => {
                if s.tcp_open.load(Ordering::Relaxed) >= TCP_MAX {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                s.tcp_open.fetch_add(1, Ordering::Relaxed);
                let s = s.clone();
                conns.push(std::thread::spawn(move || {
                    tcp_conn(&s, stream, peer.ip());
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
fn read_full(s: &Shared, stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut got = 0;
    let start = Instant::now();
    while got < buf.len() {
        if s.stop.load(Ordering::Relaxed) || start.elapsed() > TCP_IDLE {
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

fn tcp_conn(s: &Shared, mut stream: TcpStream, client: IpAddr) {
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
        if !read_full(s, &mut stream, &mut len) {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if !read_full(s, &mut stream, &mut msg[..n]) {
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
/// truncated answers and current records.
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
        let rcodes: Vec<String> = n
            .rcodes
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(m, c)| format!("{m} {c}"))
            .collect();
        let name = if n.name.is_empty() {
            "(other names)"
        } else {
            &n.name
        };
        out.push_str(&format!(
            "  dns {name}: queries {}, {}, truncated {}",
            n.queries,
            if rcodes.is_empty() {
                "no answers".to_string()
            } else {
                rcodes.join(", ")
            },
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
    out
}
