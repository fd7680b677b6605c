//! Prometheus metrics: the text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>) rendered from a plain data
//! model ([`Metrics`]) that the runtime fills, and a tiny HTTP server ([`MetricsServer`]) that
//! answers `GET /metrics` with a fresh rendering on every scrape.
//!
//! Families (every name starts with `xvs_`; counters end in `_total`):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `xvs_service_connections_total` | counter | service |
//! | `xvs_service_packets_total`, `xvs_service_bytes_total` | counter | service, `direction` = in/out |
//! | `xvs_service_connections_per_second` | gauge | service |
//! | `xvs_service_packets_per_second`, `xvs_service_bytes_per_second` | gauge | service, direction |
//! | `xvs_backend_weight` | gauge | backend |
//! | `xvs_backend_active_connections`, `xvs_backend_inactive_connections`, `xvs_backend_persistent_connections` | gauge | backend |
//! | `xvs_backend_connections_total`, `xvs_backend_packets_total`, `xvs_backend_bytes_total` | counter | backend (+ direction) |
//! | `xvs_backend_connections_per_second`, `xvs_backend_packets_per_second`, `xvs_backend_bytes_per_second` | gauge | backend (+ direction) |
//! | `xvs_backend_up` | gauge (1/0) | backend; only checked backends |
//! | `xvs_backend_health_transitions_total` | counter | backend; only checked backends |
//! | `xvs_backend_health_checks_total` | counter | backend, `result` = ok/failed |
//! | `xvs_worker_rx_packets_total`, `xvs_worker_tx_packets_total`, `xvs_worker_pass_packets_total` | counter | `worker` |
//! | `xvs_worker_drops_total` | counter | worker, `reason` (DropReason::as_str) |
//! | `xvs_worker_io_drops_total` | counter | worker, `reason` = tx_ring_full/tx_bad_port/rx_bad_desc/handoff_full |
//! | `xvs_worker_handoff_packets_total` | counter | worker, `direction` = out/in |
//! | `xvs_worker_icmp_answers_total` | counter | worker |
//! | `xvs_worker_busy_ratio` | gauge (0..1) | worker |
//! | `xvs_worker_connections` | gauge | worker |
//! | `xvs_worker_embryonic_connections` | gauge | worker; only when non-zero |
//! | `xvs_worker_syn_defense_total` | counter | worker, `event` (embryonic_evicted, drop_entry_deleted, synproxy_*); only non-zero |
//!
//! Service labels: `protocol` (tcp/udp/sctp), `vip`, `vport` — or `fwmark` and `family`
//! (ipv4/ipv6) for a firewall-mark service. Backend labels: the service's plus `address`, `port`
//! and `method` (nat/dr/tun/fullnat). Rates are the IPVS estimates (`ipvsadm --rate`).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Everything one scrape shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub services: Vec<ServiceMetrics>,
    pub workers: Vec<WorkerMetrics>,
}

/// How a service is named in labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceLabels {
    /// `protocol` is "tcp", "udp" or "sctp".
    Address {
        protocol: String,
        vip: IpAddr,
        vport: u16,
    },
    Fwmark {
        mark: u32,
        ipv6: bool,
    },
}

/// Totals since start (or the last `xvs ctl -Z`) and per-second rate estimates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceMetrics {
    pub labels: ServiceLabels,
    pub traffic: Traffic,
    pub backends: Vec<BackendMetrics>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendMetrics {
    pub address: IpAddr,
    pub port: u16,
    /// "nat", "dr", "tun" or "fullnat".
    pub method: String,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub persistent: u64,
    pub traffic: Traffic,
    /// `None` when the backend has no health check.
    pub health: Option<HealthMetrics>,
}

/// A checked backend's health (from [`crate::control::health::BackendHealth`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthMetrics {
    pub up: bool,
    pub transitions: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
}

impl From<&crate::control::health::BackendHealth> for HealthMetrics {
    fn from(h: &crate::control::health::BackendHealth) -> Self {
        HealthMetrics {
            up: h.up,
            transitions: h.transitions,
            checks_ok: h.checks_ok,
            checks_failed: h.checks_failed,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerMetrics {
    pub worker: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames handed to the kernel.
    pub pass_packets: u64,
    /// Drops by reason (`DropReason::as_str`, every reason or only the non-zero ones).
    pub drops: Vec<(String, u64)>,
    /// Frames lost in the I/O layer by reason (`IoCounters::io_drops`: a full TX ring, a
    /// verdict for a missing port, a bad descriptor, a full handoff inbox or pool).
    pub io_drops: Vec<(String, u64)>,
    /// Frames handed to the worker owning their connection, and received from other workers.
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// ICMP errors the worker generated, each in place of a frame counted in `drops`.
    pub icmp_answers: u64,
    /// Busy time / wall time over the last interval, 0..=1.
    pub busy_ratio: f64,
    /// Entries in the worker's connection table.
    pub connections: u64,
    /// Half-open TCP entries among them.
    pub embryonic: u64,
    /// SYN-flood defence events by name (embryonic_evicted, drop_entry_deleted,
    /// synproxy_syn_acks, synproxy_opened, synproxy_established, synproxy_released,
    /// synproxy_syn_resent); zero ones are not exported.
    pub syn_defense: Vec<(String, u64)>,
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A sample value: integers print exactly, floats as Prometheus expects (`NaN`, `+Inf`).
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Escape a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escape HELP text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `{a="1",b="2"}` from pairs (empty string for no labels).
fn labels(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    s.push('}');
    s
}

fn service_pairs(l: &ServiceLabels) -> Vec<(&'static str, String)> {
    match l {
        ServiceLabels::Address {
            protocol,
            vip,
            vport,
        } => vec![
            ("protocol", protocol.clone()),
            ("vip", vip.to_string()),
            ("vport", vport.to_string()),
        ],
        ServiceLabels::Fwmark { mark, ipv6 } => vec![
            ("fwmark", mark.to_string()),
            ("family", if *ipv6 { "ipv6" } else { "ipv4" }.to_string()),
        ],
    }
}

fn backend_pairs(s: &ServiceLabels, b: &BackendMetrics) -> Vec<(&'static str, String)> {
    let mut p = service_pairs(s);
    p.push(("address", b.address.to_string()));
    p.push(("port", b.port.to_string()));
    p.push(("method", b.method.clone()));
    p
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(String, Value)>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, pairs: &[(&str, String)], v: Value) {
        self.samples.push((labels(pairs), v));
    }

    fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        for (l, v) in &self.samples {
            let _ = writeln!(out, "{}{l} {v}", self.name);
        }
    }
}

fn with(pairs: &[(&'static str, String)], k: &'static str, v: &str) -> Vec<(&'static str, String)> {
    let mut p = pairs.to_vec();
    p.push((k, v.to_string()));
    p
}

/// Traffic families for one level (`service` or `backend`).
struct TrafficFamilies {
    conns: Family,
    packets: Family,
    bytes: Family,
    cps: Family,
    pps: Family,
    bps: Family,
}

impl TrafficFamilies {
    fn service() -> Self {
        TrafficFamilies {
            conns: Family::new(
                "xvs_service_connections_total",
                Kind::Counter,
                "Connections scheduled by the service.",
            ),
            packets: Family::new(
                "xvs_service_packets_total",
                Kind::Counter,
                "Packets of the service by direction (in: client to backend).",
            ),
            bytes: Family::new(
                "xvs_service_bytes_total",
                Kind::Counter,
                "Bytes of the service by direction (in: client to backend).",
            ),
            cps: Family::new(
                "xvs_service_connections_per_second",
                Kind::Gauge,
                "New connections per second (IPVS rate estimate).",
            ),
            pps: Family::new(
                "xvs_service_packets_per_second",
                Kind::Gauge,
                "Packets per second by direction (IPVS rate estimate).",
            ),
            bps: Family::new(
                "xvs_service_bytes_per_second",
                Kind::Gauge,
                "Bytes per second by direction (IPVS rate estimate).",
            ),
        }
    }

    fn backend() -> Self {
        TrafficFamilies {
            conns: Family::new(
                "xvs_backend_connections_total",
                Kind::Counter,
                "Connections scheduled to the backend.",
            ),
            packets: Family::new(
                "xvs_backend_packets_total",
                Kind::Counter,
                "Packets of the backend by direction (in: client to backend).",
            ),
            bytes: Family::new(
                "xvs_backend_bytes_total",
                Kind::Counter,
                "Bytes of the backend by direction (in: client to backend).",
            ),
            cps: Family::new(
                "xvs_backend_connections_per_second",
                Kind::Gauge,
                "New connections per second (IPVS rate estimate).",
            ),
            pps: Family::new(
                "xvs_backend_packets_per_second",
                Kind::Gauge,
                "Packets per second by direction (IPVS rate estimate).",
            ),
            bps: Family::new(
                "xvs_backend_bytes_per_second",
                Kind::Gauge,
                "Bytes per second by direction (IPVS rate estimate).",
            ),
        }
    }

    fn add(&mut self, p: &[(&'static str, String)], t: &Traffic) {
        let i = |v: u64| Value::Int(v);
        self.conns.add(p, i(t.conns));
        self.packets.add(&with(p, "direction", "in"), i(t.in_pkts));
        self.packets
            .add(&with(p, "direction", "out"), i(t.out_pkts));
        self.bytes.add(&with(p, "direction", "in"), i(t.in_bytes));
        self.bytes.add(&with(p, "direction", "out"), i(t.out_bytes));
        self.cps.add(p, i(t.cps));
        self.pps.add(&with(p, "direction", "in"), i(t.in_pps));
        self.pps.add(&with(p, "direction", "out"), i(t.out_pps));
        self.bps.add(&with(p, "direction", "in"), i(t.in_bps));
        self.bps.add(&with(p, "direction", "out"), i(t.out_bps));
    }

    fn write(&self, out: &mut String) {
        for f in [
            &self.conns,
            &self.packets,
            &self.bytes,
            &self.cps,
            &self.pps,
            &self.bps,
        ] {
            f.write(out);
        }
    }
}

/// Render `m` in the text exposition format 0.0.4. Families with no sample are left out.
pub fn render(m: &Metrics) -> String {
    let mut service = TrafficFamilies::service();
    let mut backend = TrafficFamilies::backend();
    let mut weight = Family::new(
        "xvs_backend_weight",
        Kind::Gauge,
        "Configured weight (0: quiesced).",
    );
    let mut active = Family::new(
        "xvs_backend_active_connections",
        Kind::Gauge,
        "Established connections (IPVS activeconns).",
    );
    let mut inactive = Family::new(
        "xvs_backend_inactive_connections",
        Kind::Gauge,
        "Connections in other states (IPVS inactconns).",
    );
    let mut persistent = Family::new(
        "xvs_backend_persistent_connections",
        Kind::Gauge,
        "Persistence templates (IPVS persistconns).",
    );
    let mut up = Family::new(
        "xvs_backend_up",
        Kind::Gauge,
        "Health check state: 1 up, 0 down.",
    );
    let mut transitions = Family::new(
        "xvs_backend_health_transitions_total",
        Kind::Counter,
        "Health state changes (up to down and down to up).",
    );
    let mut checks = Family::new(
        "xvs_backend_health_checks_total",
        Kind::Counter,
        "Health check probes by result.",
    );
    let mut rx = Family::new(
        "xvs_worker_rx_packets_total",
        Kind::Counter,
        "Frames received by the worker.",
    );
    let mut tx = Family::new(
        "xvs_worker_tx_packets_total",
        Kind::Counter,
        "Frames transmitted by the worker.",
    );
    let mut pass = Family::new(
        "xvs_worker_pass_packets_total",
        Kind::Counter,
        "Frames handed to the kernel by the worker.",
    );
    let mut icmp = Family::new(
        "xvs_worker_icmp_answers_total",
        Kind::Counter,
        "ICMP errors generated by the worker, each in place of a dropped frame.",
    );
    let mut drops = Family::new(
        "xvs_worker_drops_total",
        Kind::Counter,
        "Frames dropped by the worker, by reason.",
    );
    let mut io_drops = Family::new(
        "xvs_worker_io_drops_total",
        Kind::Counter,
        "Frames lost in the worker's I/O (rings, cross-worker handoff), by reason.",
    );
    let mut handoff = Family::new(
        "xvs_worker_handoff_packets_total",
        Kind::Counter,
        "Frames handed to the worker owning their connection (out) or received from another worker (in).",
    );
    let mut busy = Family::new(
        "xvs_worker_busy_ratio",
        Kind::Gauge,
        "Share of the worker's time spent processing frames (0 to 1).",
    );
    let mut conns = Family::new(
        "xvs_worker_connections",
        Kind::Gauge,
        "Entries in the worker's connection table.",
    );
    let mut embryonic = Family::new(
        "xvs_worker_embryonic_connections",
        Kind::Gauge,
        "Half-open TCP entries (SYN_RECV, SYNACK) in the worker's connection table.",
    );
    let mut syn_defense = Family::new(
        "xvs_worker_syn_defense_total",
        Kind::Counter,
        "SYN-flood defence events of the worker (evictions, drop_entry deletions, SYN proxy stages), by event.",
    );

    for s in &m.services {
        let sp = service_pairs(&s.labels);
        service.add(&sp, &s.traffic);
        for b in &s.backends {
            let bp = backend_pairs(&s.labels, b);
            weight.add(&bp, Value::Int(u64::from(b.weight)));
            active.add(&bp, Value::Int(b.active));
            inactive.add(&bp, Value::Int(b.inactive));
            persistent.add(&bp, Value::Int(b.persistent));
            backend.add(&bp, &b.traffic);
            if let Some(h) = &b.health {
                up.add(&bp, Value::Int(u64::from(h.up)));
                transitions.add(&bp, Value::Int(h.transitions));
                checks.add(&with(&bp, "result", "ok"), Value::Int(h.checks_ok));
                checks.add(&with(&bp, "result", "failed"), Value::Int(h.checks_failed));
            }
        }
    }
    for w in &m.workers {
        let wp = [("worker", w.worker.to_string())];
        rx.add(&wp, Value::Int(w.rx_packets));
        tx.add(&wp, Value::Int(w.tx_packets));
        pass.add(&wp, Value::Int(w.pass_packets));
        for (reason, n) in &w.drops {
            drops.add(&with(&wp, "reason", reason), Value::Int(*n));
        }
        for (reason, n) in &w.io_drops {
            io_drops.add(&with(&wp, "reason", reason), Value::Int(*n));
        }
        handoff.add(&with(&wp, "direction", "out"), Value::Int(w.handoff_out));
        handoff.add(&with(&wp, "direction", "in"), Value::Int(w.handoff_in));
        icmp.add(&wp, Value::Int(w.icmp_answers));
        busy.add(&wp, Value::Float(w.busy_ratio));
        conns.add(&wp, Value::Int(w.connections));
        if w.embryonic > 0 {
            embryonic.add(&wp, Value::Int(w.embryonic));
        }
        for (event, n) in w.syn_defense.iter().filter(|(_, n)| *n > 0) {
            syn_defense.add(&with(&wp, "event", event), Value::Int(*n));
        }
    }

    let mut out = String::new();
    service.write(&mut out);
    for f in [&weight, &active, &inactive, &persistent] {
        f.write(&mut out);
    }
    backend.write(&mut out);
    for f in [
        &up,
        &transitions,
        &checks,
        &rx,
        &tx,
        &pass,
        &drops,
        &io_drops,
        &handoff,
        &icmp,
        &busy,
        &conns,
        &embryonic,
        &syn_defense,
    ] {
        f.write(&mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------------------------

/// The `/metrics` endpoint on its own thread. Every `GET /metrics` (query string ignored) calls
/// the provider and answers 200 with [`CONTENT_TYPE`]; `HEAD /metrics` the same without body;
/// anything else 404 (a provider that panics: 500). One connection at a time, each bounded by a
/// 2 s read/write timeout. Dropping the server stops it too.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// How often the idle accept loop looks for the stop flag.
const POLL: Duration = Duration::from_millis(20);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST: usize = 8 << 10;

impl MetricsServer {
    /// Bind `addr` (port 0: any free port, see [`MetricsServer::local_addr`]) and serve.
    pub fn start<F>(addr: SocketAddr, provider: F) -> io::Result<MetricsServer>
    where
        F: Fn() -> Metrics + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("xvs-metrics".into())
            .spawn(move || serve(listener, flag, provider))?;
        tracing::info!(target: "xvs::metrics", %addr, "metrics: serving http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            handle: Some(handle),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for the thread (at most one request's timeout).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn serve<F: Fn() -> Metrics>(listener: TcpListener, stop: Arc<AtomicBool>, provider: F) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = answer(stream, &provider) {
                    tracing::debug!(target: "xvs::metrics", %peer, error = %e, "metrics: request failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(target: "xvs::metrics", error = %e, "metrics: accept failed");
                std::thread::sleep(POLL * 5);
            }
        }
    }
}

fn answer<F: Fn() -> Metrics>(mut stream: TcpStream, provider: &F) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > MAX_REQUEST || started.elapsed() > IO_TIMEOUT {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
                true,
            );
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let head = method == "HEAD";
    if (method == "GET" || head) && path == "/metrics" {
        let rendered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render(&provider())));
        match rendered {
            Ok(body) => respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes(), !head),
            Err(_) => respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                b"metrics provider failed\n",
                !head,
            ),
        }
    } else {
        respond(
            &mut stream,
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found: try /metrics\n",
            !head,
        )
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}
