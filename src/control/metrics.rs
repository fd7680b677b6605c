//! Prometheus metrics: the text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>) rendered from a plain data
//! model ([`Metrics`]) that the runtime fills, and a tiny HTTP server ([`MetricsServer`]) that
//! answers `GET /metrics` with a fresh rendering on every scrape, `GET /status.json` with the
//! same model as JSON (with [`History`]'s samples), and `GET /` / `GET /status` with a
//! self-updating HTML status page (`status.html`: no external assets; it polls `status.json`
//! every second and plots the last five minutes on canvases).
//!
//! Families (every name starts with `xvs_`; counters end in `_total`):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `xvs_service_connections_total` | counter | service |
//! | `xvs_service_packets_total`, `xvs_service_bytes_total` | counter | service, `direction` = in/out |
//! | `xvs_service_connections_per_second` | gauge | service |
//! | `xvs_service_packets_per_second`, `xvs_service_bytes_per_second` | gauge | service, direction |
//! | `xvs_service_quorum_up` | gauge (1/0) | service; only with a sorry server or quorum scripts |
//! | `xvs_backend_weight` | gauge | backend, `kind` = effective (what the workers run) / configured |
//! | `xvs_backend_response_seconds` | gauge | backend; checked backends once a probe succeeded: smoothed response time |
//! | `xvs_backend_load_percent` | gauge | backend; only while the backend's check reads a load figure |
//! | `xvs_backend_active_connections`, `xvs_backend_inactive_connections`, `xvs_backend_persistent_connections` | gauge | backend |
//! | `xvs_backend_connections_total`, `xvs_backend_packets_total`, `xvs_backend_bytes_total` | counter | backend (+ direction) |
//! | `xvs_backend_connections_per_second`, `xvs_backend_packets_per_second`, `xvs_backend_bytes_per_second` | gauge | backend (+ direction) |
//! | `xvs_backend_up` | gauge (1/0) | backend; only checked backends |
//! | `xvs_backend_health_transitions_total` | counter | backend; only checked backends |
//! | `xvs_backend_health_checks_total` | counter | backend, `result` = ok/failed |
//! | `xvs_worker_rx_packets_total`, `xvs_worker_tx_packets_total`, `xvs_worker_pass_packets_total` | counter | `worker` |
//! | `xvs_worker_drops_total` | counter | worker, `reason` (DropReason::as_str) |
//! | `xvs_worker_io_drops_total` | counter | worker, `reason` = tx_ring_full/tx_bad_port/rx_bad_desc/handoff_full/xsk_no_buffer/xsk_rx_ring_full |
//! | `xvs_worker_syscalls_total` | counter | worker, `call` = sendto/recvfrom/poll |
//! | `xvs_worker_batching_total` | counter | worker, `event` = rx_batches (batches of ≥ 1 frame)/rounds (loop rounds) |
//! | `xvs_worker_handoff_packets_total` | counter | worker, `direction` = out/in |
//! | `xvs_worker_icmp_answers_total` | counter | worker |
//! | `xvs_worker_busy_ratio` | gauge (0..1) | worker |
//! | `xvs_worker_connections` | gauge | worker |
//! | `xvs_worker_embryonic_connections` | gauge | worker; only when non-zero |
//! | `xvs_worker_syn_defense_total` | counter | worker, `event` (embryonic_evicted, drop_entry_deleted, synproxy_*); only non-zero |
//! | `xvs_dns_queries_total` | counter | `zone`, `name` (`""`: queries for no configured name), `type` (A, AAAA, SOA, ANY, other) |
//! | `xvs_dns_answers_total` | counter | zone, name, `rcode` (NOERROR, NXDOMAIN, …) |
//! | `xvs_dns_truncated_total` | counter | zone, name: UDP answers sent with TC |
//! | `xvs_dns_records` | gauge | zone, name: backends answered now (weight > 0) |
//! | `xvs_dns_site_up` | gauge | zone, `site`, `address`: 1 while the site is answered (`[[dns.site]]`) |
//! | `xvs_dns_dropped_total` | counter | zone: messages dropped without an answer |
//! | `xvs_dns_rate_limited_total` | counter | zone, `action` = dropped/slipped/table_full |
//! | `xvs_redirect_requests_total` | counter | `redirect` (the entry's name) |
//! | `xvs_redirect_redirects_total` | counter | redirect, `address`, `port`: redirects to that backend |
//! | `xvs_redirect_errors_total` | counter | redirect, `kind` = bad_request/unavailable/connection/refused/internal |
//! | `xvs_redirect_backends` | gauge | redirect: backends redirected to now (weight > 0) |
//! | `xvs_redirect_persistent_clients` | gauge | redirect: clients remembered for persistence |
//!
//! Service labels: `protocol` (tcp/udp/sctp), `vip`, `vport` — or `fwmark` and `family`
//! (ipv4/ipv6) for a firewall-mark service. Backend labels: the service's plus `address`, `port`
//! and `method` (nat/dr/tun/fullnat). Rates are the IPVS estimates (`ipvsadm --rate`); the
//! `_total` counters are there for `rate()` in PromQL.
//!
//! With [`Exposition::node_exporter`] (config `[metrics] node_exporter_compat`, on by default) the
//! series of node_exporter's IPVS collector follow xvs's own: see [`render_node_exporter`].
//!
//! The text format is written by hand rather than through a client library: it is a few lines
//! of `name{labels} value`, the model is rebuilt from the director's listing on each scrape
//! (no long-lived registry to keep in step), and tests check it with promtool.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The status page (`/` and `/status`): one self-contained HTML file that polls `/status.json`.
pub const STATUS_HTML: &str = include_str!("status.html");

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Everything one scrape shows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub services: Vec<ServiceMetrics>,
    pub workers: Vec<WorkerMetrics>,
    /// Totals sampled once a second over the last [`HISTORY_LEN`] seconds, oldest first, for the
    /// status page's plots (`/status.json` only; not part of the exposition).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistorySample>,
    /// The DNS responders (`[[dns]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<crate::dns::server::DnsStatus>,
    /// The HTTP redirect listeners (`[[redirect]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirect: Vec<crate::redirect::server::RedirectStatus>,
}

/// How many one-second samples [`History`] keeps: five minutes.
pub const HISTORY_LEN: usize = 300;

/// Director-wide totals at one moment (rates are the IPVS estimates).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct HistorySample {
    /// Seconds since the Unix epoch.
    pub t: f64,
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
    pub active: u64,
    pub inactive: u64,
    /// Pipeline and I/O drops per second since the previous sample.
    pub drops_per_sec: f64,
}

/// The last [`HISTORY_LEN`] samples of a director's totals.
#[derive(Debug, Default)]
pub struct History {
    samples: std::collections::VecDeque<HistorySample>,
    last_drops: Option<(f64, u64)>,
}

impl History {
    /// Add a sample of `m` taken at `t` (seconds since the Unix epoch).
    pub fn record(&mut self, m: &Metrics, t: f64) {
        let mut s = HistorySample {
            t,
            ..Default::default()
        };
        for svc in &m.services {
            s.cps += svc.traffic.cps;
            s.in_pps += svc.traffic.in_pps;
            s.out_pps += svc.traffic.out_pps;
            s.in_bps += svc.traffic.in_bps;
            s.out_bps += svc.traffic.out_bps;
            for b in &svc.backends {
                s.active += b.active;
                s.inactive += b.inactive;
            }
        }
        let drops: u64 = m
            .workers
            .iter()
            .flat_map(|w| w.drops.iter().chain(w.io_drops.iter()))
            .map(|(_, n)| *n)
            .fold(0u64, |a, n| a.saturating_add(n));
        if let Some((t0, d0)) = self.last_drops {
            if t > t0 {
                s.drops_per_sec = drops.saturating_sub(d0) as f64 / (t - t0);
            }
        }
        self.last_drops = Some((t, drops));
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<HistorySample> {
        self.samples.iter().copied().collect()
    }
}

/// How a service is named in labels.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServiceMetrics {
    pub labels: ServiceLabels,
    pub traffic: Traffic,
    pub backends: Vec<BackendMetrics>,
    /// The quorum state (`None`: the service has no sorry server or quorum scripts).
    pub quorum_up: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BackendMetrics {
    pub address: IpAddr,
    pub port: u16,
    /// "nat", "dr", "tun" or "fullnat".
    pub method: String,
    /// The weight the workers run.
    pub weight: u32,
    /// The weight of the running configuration (before health, dynamic and adaptive weights).
    pub configured_weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub persistent: u64,
    pub traffic: Traffic,
    /// `None` when the backend has no health check.
    pub health: Option<HealthMetrics>,
    /// Down by its health check and taken out of the service (not `quiescent`): only its
    /// health families are exported (`weight` is the configured one), and no node_exporter
    /// series, as keepalived removes such a backend from IPVS.
    pub removed: bool,
}

/// A checked backend's health (from [`crate::control::health::BackendHealth`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HealthMetrics {
    pub up: bool,
    pub transitions: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// When the state last changed (or checking started), seconds since the Unix epoch.
    pub since_unix: u64,
    /// Smoothed response time of the successful probes, microseconds.
    pub response_us: Option<u64>,
    /// The load figure the backend reports, percent.
    pub load: Option<u8>,
}

impl From<&crate::control::health::BackendHealth> for HealthMetrics {
    fn from(h: &crate::control::health::BackendHealth) -> Self {
        HealthMetrics {
            up: h.up,
            transitions: h.transitions,
            checks_ok: h.checks_ok,
            checks_failed: h.checks_failed,
            since_unix: h
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            response_us: h
                .response_avg
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            load: h.load,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct WorkerMetrics {
    pub worker: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames handed to the kernel.
    pub pass_packets: u64,
    /// Drops by reason (`DropReason::as_str`, every reason or only the non-zero ones).
    pub drops: Vec<(String, u64)>,
    /// Frames lost in the I/O layer by reason (`IoCounters::io_drops`: a full TX ring, a
    /// verdict for a missing port, a bad descriptor, a full handoff inbox or pool, and the
    /// kernel's AF_XDP drops: no fill-ring buffer, a full rx ring).
    pub io_drops: Vec<(String, u64)>,
    /// System calls of the worker's I/O by name (`IoCounters::syscalls`: sendto, recvfrom, poll).
    pub syscalls: Vec<(String, u64)>,
    /// How the worker's I/O batched by name (`IoCounters::batching`: rx_batches, rounds).
    pub batching: Vec<(String, u64)>,
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
    /// stateless_acks, synproxy_syn_resent, synproxy_syn_retried, synproxy_gave_up, synproxy_timer_full); zero
    /// ones are not exported.
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

/// Which families a rendering holds besides xvs's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exposition {
    /// Also the families of node_exporter's IPVS collector ([`render_node_exporter`]).
    pub node_exporter: bool,
}

/// Render `m` in the text exposition format 0.0.4: xvs's own families only. Families with no
/// sample are left out.
pub fn render(m: &Metrics) -> String {
    render_with(m, Exposition::default())
}

/// Render `m` with the families `e` asks for: xvs's own, then node_exporter's.
pub fn render_with(m: &Metrics, e: Exposition) -> String {
    let mut out = render_xvs(m);
    if e.node_exporter {
        out.push_str(&render_node_exporter(m));
    }
    out
}

/// The series node_exporter's IPVS collector (`collector/ipvs_linux.go`, default labels) exports
/// from `/proc/net/ip_vs_stats` and `/proc/net/ip_vs`, with its names, types, help texts and label
/// values, so that dashboards and alerts written for kernel IPVS read xvs unchanged:
///
/// - `node_ipvs_connections_total`, `node_ipvs_incoming_packets_total`,
///   `node_ipvs_outgoing_packets_total`, `node_ipvs_incoming_bytes_total`,
///   `node_ipvs_outgoing_bytes_total`: counters without labels, the sums over every service
///   (the kernel's are global counters, which also keep what deleted services counted).
/// - `node_ipvs_backend_connections_active`, `node_ipvs_backend_connections_inactive`,
///   `node_ipvs_backend_weight`: gauges per backend with `local_address`, `local_port`,
///   `remote_address`, `remote_port`, `proto`, `local_mark`, valued as procfs parses the
///   kernel's table: `proto` "TCP"/"UDP"/"SCTP" and `local_mark` "" for an address service;
///   for a firewall-mark service `proto` "FWM", `local_mark` the mark as the kernel prints it
///   (`%08X`), `local_address` "" and `local_port` "0".
pub fn render_node_exporter(m: &Metrics) -> String {
    let mut total = Traffic::default();
    for s in &m.services {
        let t = &s.traffic;
        total.conns += t.conns;
        total.in_pkts += t.in_pkts;
        total.out_pkts += t.out_pkts;
        total.in_bytes += t.in_bytes;
        total.out_bytes += t.out_bytes;
    }
    let mut out = String::new();
    for (name, help, v) in [
        (
            "node_ipvs_connections_total",
            "The total number of connections made.",
            total.conns,
        ),
        (
            "node_ipvs_incoming_packets_total",
            "The total number of incoming packets.",
            total.in_pkts,
        ),
        (
            "node_ipvs_outgoing_packets_total",
            "The total number of outgoing packets.",
            total.out_pkts,
        ),
        (
            "node_ipvs_incoming_bytes_total",
            "The total amount of incoming data.",
            total.in_bytes,
        ),
        (
            "node_ipvs_outgoing_bytes_total",
            "The total amount of outgoing data.",
            total.out_bytes,
        ),
    ] {
        let mut f = Family::new(name, Kind::Counter, help);
        f.add(&[], Value::Int(v));
        f.write(&mut out);
    }
    let mut active = Family::new(
        "node_ipvs_backend_connections_active",
        Kind::Gauge,
        "The current active connections by local and remote address.",
    );
    let mut inactive = Family::new(
        "node_ipvs_backend_connections_inactive",
        Kind::Gauge,
        "The current inactive connections by local and remote address.",
    );
    let mut weight = Family::new(
        "node_ipvs_backend_weight",
        Kind::Gauge,
        "The current backend weight by local and remote address.",
    );
    for s in &m.services {
        let (local_address, local_port, proto, local_mark) = match &s.labels {
            ServiceLabels::Address {
                protocol,
                vip,
                vport,
            } => (
                vip.to_string(),
                vport.to_string(),
                protocol.to_ascii_uppercase(),
                String::new(),
            ),
            ServiceLabels::Fwmark { mark, .. } => (
                String::new(),
                "0".to_string(),
                "FWM".to_string(),
                format!("{mark:08X}"),
            ),
        };
        for b in s.backends.iter().filter(|b| !b.removed) {
            let p = [
                ("local_address", local_address.clone()),
                ("local_port", local_port.clone()),
                ("remote_address", b.address.to_string()),
                ("remote_port", b.port.to_string()),
                ("proto", proto.clone()),
                ("local_mark", local_mark.clone()),
            ];
            active.add(&p, Value::Int(b.active));
            inactive.add(&p, Value::Int(b.inactive));
            weight.add(&p, Value::Int(u64::from(b.weight)));
        }
    }
    for f in [&active, &inactive, &weight] {
        f.write(&mut out);
    }
    out
}

fn render_xvs(m: &Metrics) -> String {
    let mut service = TrafficFamilies::service();
    let mut backend = TrafficFamilies::backend();
    let mut weight = Family::new(
        "xvs_backend_weight",
        Kind::Gauge,
        "Backend weight: effective (what the workers run: after health, dynamic and adaptive weights; 0: quiesced) or configured.",
    );
    let mut response = Family::new(
        "xvs_backend_response_seconds",
        Kind::Gauge,
        "Health check response time, smoothed over the successful probes.",
    );
    let mut load = Family::new(
        "xvs_backend_load_percent",
        Kind::Gauge,
        "Load figure the backend reports to its health check (0 idle, 100 saturated).",
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
    let mut quorum = Family::new(
        "xvs_service_quorum_up",
        Kind::Gauge,
        "Quorum state (keepalived's): 1 up, 0 down (sorry server in, if any).",
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
    let mut syscalls = Family::new(
        "xvs_worker_syscalls_total",
        Kind::Counter,
        "System calls made by the worker's I/O (sendto = TX kick, recvfrom = RX wakeup, poll = idle wait), by call.",
    );
    let mut batching = Family::new(
        "xvs_worker_batching_total",
        Kind::Counter,
        "Receive batches handed to the processor (rx_batches, each of at least one frame) and worker loop rounds (rounds).",
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
        if let Some(q) = s.quorum_up {
            quorum.add(&sp, Value::Int(u64::from(q)));
        }
        for b in &s.backends {
            let bp = backend_pairs(&s.labels, b);
            if !b.removed {
                weight.add(
                    &with(&bp, "kind", "effective"),
                    Value::Int(u64::from(b.weight)),
                );
                weight.add(
                    &with(&bp, "kind", "configured"),
                    Value::Int(u64::from(b.configured_weight)),
                );
                active.add(&bp, Value::Int(b.active));
                inactive.add(&bp, Value::Int(b.inactive));
                persistent.add(&bp, Value::Int(b.persistent));
                backend.add(&bp, &b.traffic);
            }
            if let Some(h) = &b.health {
                up.add(&bp, Value::Int(u64::from(h.up)));
                transitions.add(&bp, Value::Int(h.transitions));
                checks.add(&with(&bp, "result", "ok"), Value::Int(h.checks_ok));
                checks.add(&with(&bp, "result", "failed"), Value::Int(h.checks_failed));
                if let Some(us) = h.response_us {
                    response.add(&bp, Value::Float(us as f64 / 1e6));
                }
                if let Some(l) = h.load {
                    load.add(&bp, Value::Int(u64::from(l)));
                }
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
        for (call, n) in &w.syscalls {
            syscalls.add(&with(&wp, "call", call), Value::Int(*n));
        }
        for (event, n) in &w.batching {
            batching.add(&with(&wp, "event", event), Value::Int(*n));
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

    let mut dns_queries = Family::new(
        "xvs_dns_queries_total",
        Kind::Counter,
        "DNS queries answered, by name (\"\": names not configured) and query type (A, AAAA, SOA, ANY; other: any other type or no single question).",
    );
    let mut dns_answers = Family::new(
        "xvs_dns_answers_total",
        Kind::Counter,
        "DNS answers by name and rcode.",
    );
    let mut dns_truncated = Family::new(
        "xvs_dns_truncated_total",
        Kind::Counter,
        "DNS answers sent over UDP with TC set (too large), by name.",
    );
    let mut dns_records = Family::new(
        "xvs_dns_records",
        Kind::Gauge,
        "Backends a DNS name answers now (weight above 0).",
    );
    let mut dns_site_up = Family::new(
        "xvs_dns_site_up",
        Kind::Gauge,
        "1 while a DNS site ([[dns.site]]) is answered: its service has an available backend, or its check passes.",
    );
    let mut dns_dropped = Family::new(
        "xvs_dns_dropped_total",
        Kind::Counter,
        "DNS messages dropped without an answer (unparseable, not a query, send failure).",
    );
    let mut dns_limited = Family::new(
        "xvs_dns_rate_limited_total",
        Kind::Counter,
        "UDP DNS answers over the rate limit: dropped, sent truncated (slipped), or sent because the limiter's table was full.",
    );
    for d in &m.dns {
        let zp = [("zone", d.zone.clone())];
        dns_dropped.add(&zp, Value::Int(d.dropped));
        for (action, n) in [
            ("dropped", d.rate_limited_dropped),
            ("slipped", d.rate_limited_slipped),
            ("table_full", d.rate_limit_table_full),
        ] {
            dns_limited.add(&with(&zp, "action", action), Value::Int(n));
        }
        for site in &d.sites {
            let sp = with(
                &with(&zp, "site", &site.name),
                "address",
                &site.address.to_string(),
            );
            dns_site_up.add(&sp, Value::Int(u64::from(site.up)));
        }
        for n in &d.names {
            let np = with(&zp, "name", &n.name);
            for (qtype, c) in &n.qtypes {
                dns_queries.add(&with(&np, "type", qtype), Value::Int(*c));
            }
            for (rcode, c) in &n.rcodes {
                dns_answers.add(&with(&np, "rcode", rcode), Value::Int(*c));
            }
            dns_truncated.add(&np, Value::Int(n.truncated));
            if !n.name.is_empty() {
                let live = n.backends.iter().filter(|(_, w)| *w > 0).count();
                dns_records.add(&np, Value::Int(live as u64));
            }
        }
    }

    let mut rd_requests = Family::new(
        "xvs_redirect_requests_total",
        Kind::Counter,
        "HTTP requests answered by a redirect listener (redirect, 400 or 503).",
    );
    let mut rd_redirects = Family::new(
        "xvs_redirect_redirects_total",
        Kind::Counter,
        "HTTP redirects sent, by backend.",
    );
    let mut rd_errors = Family::new(
        "xvs_redirect_errors_total",
        Kind::Counter,
        "Redirect listener errors: 400 answers, 503 answers, connection errors, connections refused at the limit, 500 answers.",
    );
    let mut rd_backends = Family::new(
        "xvs_redirect_backends",
        Kind::Gauge,
        "Backends a redirect listener sends clients to now (weight above 0).",
    );
    let mut rd_persistent = Family::new(
        "xvs_redirect_persistent_clients",
        Kind::Gauge,
        "Clients a redirect listener remembers for persistence.",
    );
    for r in &m.redirect {
        let rp = [("redirect", r.name.clone())];
        rd_requests.add(&rp, Value::Int(r.requests));
        for (kind, n) in [
            ("bad_request", r.bad_requests),
            ("unavailable", r.unavailable),
            ("connection", r.connection_errors),
            ("refused", r.refused),
            ("internal", r.internal_errors),
        ] {
            rd_errors.add(&with(&rp, "kind", kind), Value::Int(n));
        }
        for b in &r.backends {
            let bp = with(
                &with(&rp, "address", &b.addr.to_string()),
                "port",
                &b.port.to_string(),
            );
            rd_redirects.add(&bp, Value::Int(b.redirects));
        }
        let live = r.backends.iter().filter(|b| b.weight > 0).count();
        rd_backends.add(&rp, Value::Int(live as u64));
        rd_persistent.add(&rp, Value::Int(r.persistent_clients as u64));
    }

    let mut out = String::new();
    service.write(&mut out);
    for f in [&quorum, &weight, &active, &inactive, &persistent] {
        f.write(&mut out);
    }
    backend.write(&mut out);
    for f in [
        &up,
        &transitions,
        &checks,
        &response,
        &load,
        &rx,
        &tx,
        &pass,
        &drops,
        &io_drops,
        &syscalls,
        &batching,
        &handoff,
        &icmp,
        &busy,
        &conns,
        &embryonic,
        &syn_defense,
        &dns_queries,
        &dns_answers,
        &dns_truncated,
        &dns_records,
        &dns_site_up,
        &dns_dropped,
        &dns_limited,
        &rd_requests,
        &rd_redirects,
        &rd_errors,
        &rd_backends,
        &rd_persistent,
    ] {
        f.write(&mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------------------------

/// The `/metrics` endpoint on its own thread. Every `GET /metrics` (query string ignored) calls
/// the provider and answers 200 with [`CONTENT_TYPE`]; `GET /status.json` answers the provider's
/// [`Metrics`] as JSON; `GET /` and `GET /status` the status page ([`STATUS_HTML`]); `HEAD` the
/// same without body; anything else 404 (a provider that panics: 500). Each connection on its
/// own thread (at most 8 at once; more are closed), each bounded by a 2 s read/write timeout, so a
/// slow client delays no scrape. Dropping the server stops it too.
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
        F: Fn() -> Metrics + Send + Sync + 'static,
    {
        MetricsServer::start_with(addr, Exposition::default(), provider)
    }

    /// [`MetricsServer::start`] rendering the families `exposition` asks for.
    pub fn start_with<F>(
        addr: SocketAddr,
        exposition: Exposition,
        provider: F,
    ) -> io::Result<MetricsServer>
    where
        F: Fn() -> Metrics + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("xvs-metrics".into())
            .spawn(move || serve(listener, flag, exposition, provider))?;
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

/// Connections served at once; one more is closed at once (the scraper retries).
const MAX_CONNECTIONS: usize = 8;

fn serve<F: Fn() -> Metrics + Send + Sync + 'static>(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    exposition: Exposition,
    provider: F,
) {
    let provider = Arc::new(provider);
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                clients.retain(|h| !h.is_finished());
                if clients.len() >= MAX_CONNECTIONS {
                    tracing::debug!(target: "xvs::metrics", %peer, "metrics: too many connections, closed");
                    continue;
                }
                let p = provider.clone();
                let spawned = std::thread::Builder::new()
                    .name("xvs-metrics-client".into())
                    .spawn(move || {
                        if let Err(e) = answer(stream, exposition, p.as_ref()) {
                            tracing::debug!(target: "xvs::metrics", %peer, error = %e, "metrics: request failed");
                        }
                    });
                match spawned {
                    Ok(h) => clients.push(h),
                    Err(e) => {
                        tracing::warn!(target: "xvs::metrics", error = %e, "metrics: no thread for a connection")
                    }
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
    // Each connection ends within its 2 s read/write timeouts.
    for h in clients {
        let _ = h.join();
    }
}

fn answer<F: Fn() -> Metrics>(
    mut stream: TcpStream,
    exposition: Exposition,
    provider: &F,
) -> io::Result<()> {
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
    if (method == "GET" || head) && (path == "/" || path == "/status") {
        return respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            STATUS_HTML.as_bytes(),
            !head,
        );
    }
    if (method == "GET" || head) && path == "/status.json" {
        let json = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serde_json::to_vec(&provider())
        }));
        return match json {
            Ok(Ok(body)) => respond(&mut stream, "200 OK", "application/json", &body, !head),
            _ => respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                b"status provider failed\n",
                !head,
            ),
        };
    }
    if (method == "GET" || head) && path == "/metrics" {
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            render_with(&provider(), exposition)
        }));
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
            b"not found: try /metrics, /status or /status.json\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_five_minutes_and_computes_drop_rates() {
        let mut h = History::default();
        let mut m = Metrics {
            workers: vec![WorkerMetrics {
                drops: vec![("a".into(), 10)],
                io_drops: vec![("b".into(), 5)],
                ..Default::default()
            }],
            ..Default::default()
        };
        h.record(&m, 100.0);
        m.workers[0].drops[0].1 = 40;
        h.record(&m, 102.0);
        let s = h.samples();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].drops_per_sec, 0.0);
        assert_eq!(s[1].drops_per_sec, 15.0);
        for i in 0..400 {
            h.record(&m, 103.0 + f64::from(i));
        }
        let s = h.samples();
        assert_eq!(s.len(), HISTORY_LEN);
        assert_eq!(s[0].t, 103.0 + 100.0);
        assert_eq!(s.last().unwrap().t, 502.0);
    }
}
