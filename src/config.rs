//! The TOML configuration: the desired state of the director.
//!
//! It is parsed with serde (unknown fields rejected), then validated field by field; every error
//! names the file, the field (as a path like `service[2].backend[0].weight`) and the reason.
//! The validated [`Config`] converts into the forwarding core's types.
//!
//! ```toml
//! [[interface]]
//! name = "xvs0"
//! mac = "02:00:00:00:00:01"     # read from the interface by `xvs run` when omitted
//! ipv4 = "198.18.0.2"
//! mtu = 1500
//! vlans = [100, 200]           # 802.1Q VLAN ids accepted tagged on this interface (default none)
//! egress_vlan = 100            # tag frames sent on it with this id (one of `vlans`; default untagged)
//!
//! [[route]]
//! dst = "0.0.0.0/0"
//! via = "198.18.0.1"
//! interface = "xvs0"
//!
//! [[service]]
//! protocol = "tcp"              # tcp | udp | sctp; or `fwmark = 7` instead of protocol/vip/port
//! vip = "198.18.0.100"
//! port = 80                     # 0 = every port
//! scheduler = "wrr"
//! flags = ""                    # ipvsadm -b text, e.g. "sh-fallback,sh-port"
//! persistence = 300             # seconds; omit for none
//! netmask = 32                  # persistence client prefix length
//! one_packet = false
//! synproxy = false              # TCP, nat/fullnat backends: answer SYNs with SYN cookies
//! quorum = 1                    # minimum live weight (keepalived's quorum); default 1
//! hysteresis = 0                # lost below quorum - hysteresis, gained at quorum + hysteresis
//! quorum_up = "/etc/xvs/up.sh"  # /bin/sh -c on a gain (optional)
//! quorum_down = "/etc/xvs/down.sh"  # /bin/sh -c on a loss (optional)
//! omega = false                 # true: quorum_down also runs on shutdown
//!
//! [service.sorry_server]        # optional: in (weight 1) while the quorum is lost
//! address = "198.19.0.99"
//! port = 80
//! method = "nat"                # default dr
//! inhibit = false               # true: out by weight 0 rather than removal
//!
//! [service.adaptive]           # optional: weights follow measured load (control::adaptive)
//! reference_ms = 50             # response time that keeps the full weight
//! min_percent = 10              # bounds, % of the configured weight
//! max_percent = 100
//! damping = 0.5                 # share of the distance to the target per update
//! max_step_percent = 25         # largest step per update
//! interval_ms = 1000            # update interval
//!
//! [[service.backend]]
//! address = "198.19.0.11"
//! port = 80
//! weight = 1
//! method = "nat"                # nat | dr | tun | fullnat
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use xvs_forwarding::defense::DefenseConfig;
use xvs_forwarding::net::{Mac, Network, Port, PortVlans, Route};
use xvs_forwarding::pipeline::RemovedBackends;
use xvs_forwarding::service::{
    Backend, MarkRule, Persistence, Service, ServiceKey, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};
use xvs_forwarding::synproxy::cookie::CookieSecret;
use xvs_forwarding::{Method, PipelineConfig, PortId};
use xvs_schedulers::SchedFlags;

use crate::control::adaptive::{AdaptiveConfig, AdaptivePolicy};
use crate::control::health::{CheckConfig, CheckSpec, Probe};
use crate::control::quorum::{QuorumConfig, SorryServer};
use crate::dataplane_config::{
    AfXdpConfig, DataplaneConfig, InterfaceConfig, IoKind, PacketConfig, SteeringConfig,
    WorkerConfig, XdpMode,
};
use crate::sync::{DaemonConfig, Role, SyncConfig, SyncSettings};

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: PathBuf,
        field: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Data plane: I/O backend (`afxdp` | `packet`), XDP attach mode, workers, ring sizes.
    pub io: Option<IoKind>,
    pub xdp_mode: Option<XdpMode>,
    #[serde(default, rename = "worker")]
    pub workers: Option<Vec<WorkerConfig>>,
    pub afxdp: Option<AfXdpConfig>,
    pub packet: Option<PacketConfig>,
    pub log_interval_secs: Option<u64>,
    pub neighbour_refresh_ms: Option<u64>,
    pub idle_wait_ms: Option<i32>,
    pub steering: Option<SteeringConfig>,
    #[serde(default)]
    pub director: DirectorSection,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceSection>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
    #[serde(default, rename = "neighbour")]
    pub neighbours: Vec<NeighbourSection>,
    #[serde(default, rename = "mark")]
    pub marks: Vec<MarkSection>,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSection>,
    #[serde(default)]
    pub fullnat: FullNatSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub sync: SyncSection,
    #[serde(default)]
    pub defense: DefenseSection,
    #[serde(default)]
    pub announce: AnnounceSection,
    /// DNS load balancing (`crate::dns`).
    #[serde(default, rename = "dns")]
    pub dns: Vec<DnsSection>,
    /// HTTP redirect (`crate::redirect`).
    #[serde(default, rename = "redirect")]
    pub redirects: Vec<RedirectSection>,
}

/// `[[redirect]]`: an HTTP/1.1 listener answering every request with `code` (302 or 307) to
/// `scheme://host:port` + the request's path and query, the backend chosen by `scheduler`
/// (rr, wrr, sh, mh) over the available backends of `[[service]]` number `service` (0-based;
/// health checks and weights apply). `host` is the backend's address unless a
/// `[[redirect.host]]` names it; `port` is the backend's unless given. `persistence` (seconds)
/// sends a client back to the backend it got last.
///
/// ```toml
/// [[redirect]]
/// name = "web"
/// listen = ["198.18.0.1:80"]
/// service = 0
/// scheduler = "wrr"
/// code = 302
/// scheme = "http"
/// persistence = 300
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSection {
    /// The entry's name in listings and metrics; default its first listen address.
    pub name: Option<String>,
    pub listen: Vec<std::net::SocketAddr>,
    pub service: usize,
    #[serde(default = "default_dns_scheduler")]
    pub scheduler: String,
    #[serde(default = "default_redirect_code")]
    pub code: u16,
    #[serde(default = "default_redirect_scheme")]
    pub scheme: crate::redirect::decide::Scheme,
    pub port: Option<u16>,
    #[serde(default)]
    pub persistence: u32,
    #[serde(default, rename = "host")]
    pub hosts: Vec<RedirectHostSection>,
}

/// `[[redirect.host]]`: the host name written in redirects to the backend at `address`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectHostSection {
    pub address: IpAddr,
    pub name: String,
}

fn default_redirect_code() -> u16 {
    302
}

fn default_redirect_scheme() -> crate::redirect::decide::Scheme {
    crate::redirect::decide::Scheme::Http
}

/// A validated `[[redirect]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    pub name: String,
    pub listen: Vec<std::net::SocketAddr>,
    pub service: ServiceKey,
    pub scheduler: String,
    pub rules: crate::redirect::decide::Rules,
}

/// `[[dns]]`: an authoritative DNS responder for names of `zone`, answering A/AAAA records
/// chosen by `scheduler` (rr, wrr, sh, mh) over the available backends of one `[[service]]`
/// (`service`: its 0-based index in configuration order, or its name as xvs prints it, e.g.
/// `"TCP 198.18.0.100:80"`; health checks and weights apply), over `address` entries with
/// weights, or over `site` entries: whole VIPs (`crate::dns::sites`).
///
/// ```toml
/// [[dns]]
/// zone = "lb.example"
/// names = ["www.lb.example"]
/// listen = ["198.18.0.1:53"]
/// ttl = 20
/// answers = 1
/// scheduler = "wrr"
/// service = 0
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    pub zone: String,
    /// The SOA's primary name server (default `ns.<zone>`).
    pub nameserver: Option<String>,
    pub names: Vec<String>,
    pub listen: Vec<std::net::SocketAddr>,
    #[serde(default = "default_dns_ttl")]
    pub ttl: u32,
    /// TTL of negative answers (the SOA minimum, RFC 2308); default `ttl`.
    pub negative_ttl: Option<u32>,
    #[serde(default = "default_dns_answers")]
    pub answers: usize,
    #[serde(default = "default_dns_scheduler")]
    pub scheduler: String,
    pub service: Option<ServiceRef>,
    #[serde(default, rename = "address")]
    pub addresses: Vec<DnsAddressSection>,
    /// Sites: VIPs of local services or of other sites (`crate::dns::sites`).
    #[serde(default, rename = "site")]
    pub sites: Vec<DnsSiteSection>,
    /// Client networks answered from preferred addresses (`crate::dns::answer::ClientNetwork`).
    #[serde(default, rename = "client_network")]
    pub client_networks: Vec<DnsClientNetworkSection>,
    /// UDP answers a second per client /24 (IPv6: /56); 0 (default): no limit
    /// (`crate::dns::rrl`).
    #[serde(default)]
    pub rate_limit: u32,
    /// Every `slip`-th limited answer is sent truncated, the others dropped; default 2.
    #[serde(default = "default_dns_slip")]
    pub slip: u32,
}

fn default_dns_slip() -> u32 {
    2
}

/// `[[dns.client_network]]`: clients in `prefix` (their address or their EDNS Client Subnet)
/// get the `prefer` addresses (or the addresses of the sites of these names) while one of them
/// is available.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsClientNetworkSection {
    pub prefix: String,
    pub prefer: Vec<String>,
}

/// A service named in the configuration: its 0-based index among the `[[service]]` sections,
/// or its name as xvs prints it (`"TCP 198.18.0.100:80"`, `"UDP [2001:2::1]:53"`, `"FWM 7"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ServiceRef {
    Index(usize),
    Name(String),
}

/// `[[dns.site]]`: one site's VIP as a record. Give `service` (a local service: answered while
/// it has an available backend) or `address` (a local VIP, answered while one of its services
/// has an available backend; or another site's VIP, answered while its `check` passes, always
/// without one).
///
/// ```toml
/// [[dns.site]]
/// name = "eu"                 # optional; client networks may prefer a site by name
/// service = 0                 # or "TCP 198.18.0.100:80"
/// weight = 2
///
/// [[dns.site]]
/// name = "us"
/// address = "198.19.0.100"    # another director's VIP
/// port = 80                   # what the check probes (or its connect_port)
/// check = { type = "http", path = "/", interval_ms = 2000 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSiteSection {
    pub name: Option<String>,
    pub service: Option<ServiceRef>,
    pub address: Option<IpAddr>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    pub port: Option<u16>,
    pub check: Option<CheckConfig>,
}

/// `[[dns.address]]`: a fixed record with its weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsAddressSection {
    pub address: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_dns_ttl() -> u32 {
    30
}

fn default_dns_answers() -> usize {
    1
}

fn default_dns_scheduler() -> String {
    "wrr".to_string()
}

/// Where a `[[dns]]` entry takes its records from.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsSource {
    /// The backends with weight > 0 of this service (the effective state, after checks).
    Service(ServiceKey),
    /// Fixed addresses with weights.
    Addresses(Vec<(IpAddr, u32)>),
    /// Whole VIPs (`crate::dns::sites`).
    Sites(Vec<crate::dns::sites::DnsSite>),
}

/// A validated `[[dns]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub zone: String,
    pub nameserver: String,
    pub names: Vec<String>,
    pub listen: Vec<std::net::SocketAddr>,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub answers: usize,
    pub scheduler: String,
    pub source: DnsSource,
    pub client_networks: Vec<crate::dns::answer::ClientNetwork>,
    /// UDP answers a second per client network (0: no limit) and the slip.
    pub rate_limit: u32,
    pub slip: u32,
}

impl DnsConfig {
    /// A responder for this entry (its names added, no backends yet).
    pub fn responder(
        &self,
    ) -> Result<crate::dns::answer::Responder, crate::dns::answer::DnsConfigError> {
        let mut r =
            crate::dns::answer::Responder::new(&self.zone, &self.nameserver, self.negative_ttl)?;
        r.set_client_networks(self.client_networks.clone());
        for n in &self.names {
            r.add_name(n, self.ttl, self.answers, &self.scheduler)?;
        }
        Ok(r)
    }
}

/// `[announce]`: the VIPs with an available backend, as host addresses on a TUN device that
/// `xvs run` owns (and the kernel deletes when it dies), for the director's BGP speaker to
/// announce (`crate::announce`, examples/bird/).
///
/// ```toml
/// [announce]
/// interface = "xvs-vips"
/// ```
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnnounceSection {
    /// Name of the TUN device to create; omit for no announcing.
    pub interface: Option<String>,
}

/// `[defense]`: SYN-flood and table-pressure defences of every worker
/// (`xvs_forwarding::defense`). The IPVS sysctls keep their names and modes (0 off, 1 automatic,
/// 3 always); `amemthresh` counts free connection-table entries of a worker (IPVS: free memory
/// pages).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DefenseSection {
    #[serde(default)]
    pub drop_entry: u8,
    #[serde(default)]
    pub drop_packet: u8,
    #[serde(default)]
    pub secure_tcp: u8,
    #[serde(default = "default_amemthresh")]
    pub amemthresh: u32,
    #[serde(default = "default_am_droprate")]
    pub am_droprate: u32,
    /// Largest share of a worker's table, in percent, for half-open TCP entries (1–100; 0: no
    /// budget and no eviction, as IPVS).
    #[serde(default = "default_embryonic_share")]
    pub embryonic_share: u8,
    /// Only the client's ACK completes a handshake (a bare ACK from the backend does not).
    #[serde(default = "default_true")]
    pub strict_handshake: bool,
    /// New connections per second per source prefix, director-wide (0: no limit).
    #[serde(default)]
    pub source_rate: u32,
    #[serde(default = "default_prefix_v4")]
    pub source_prefix_v4: u8,
    #[serde(default = "default_prefix_v6")]
    pub source_prefix_v6: u8,
    /// Seconds after an eviction during which a DR/TUN client segment without an entry is
    /// routed by a table scheduler without one (0: never).
    #[serde(default = "default_stateless_ack_secs")]
    pub stateless_ack_secs: u32,
    /// SYN proxy: SYNs sent to a silent backend again before the client is reset.
    #[serde(default = "default_syn_retries")]
    pub synproxy_syn_retries: u8,
    /// SYN proxy: milliseconds between those SYNs (at least 1).
    #[serde(default = "default_syn_interval_ms")]
    pub synproxy_syn_interval_ms: u32,
}

impl Default for DefenseSection {
    fn default() -> Self {
        let d = DefenseConfig::default();
        DefenseSection {
            drop_entry: d.drop_entry,
            drop_packet: d.drop_packet,
            secure_tcp: d.secure_tcp,
            amemthresh: d.amemthresh,
            am_droprate: d.am_droprate,
            embryonic_share: d.embryonic_share,
            strict_handshake: d.strict_handshake,
            source_rate: d.source_rate,
            source_prefix_v4: d.source_prefix_v4,
            source_prefix_v6: d.source_prefix_v6,
            stateless_ack_secs: d.stateless_ack_secs,
            synproxy_syn_retries: d.synproxy_syn_retries,
            synproxy_syn_interval_ms: d.synproxy_syn_interval_ms,
        }
    }
}

fn default_stateless_ack_secs() -> u32 {
    DefenseConfig::default().stateless_ack_secs
}
fn default_syn_retries() -> u8 {
    DefenseConfig::default().synproxy_syn_retries
}
fn default_syn_interval_ms() -> u32 {
    DefenseConfig::default().synproxy_syn_interval_ms
}
fn default_prefix_v4() -> u8 {
    DefenseConfig::default().source_prefix_v4
}
fn default_prefix_v6() -> u8 {
    DefenseConfig::default().source_prefix_v6
}
fn default_amemthresh() -> u32 {
    DefenseConfig::default().amemthresh
}
fn default_am_droprate() -> u32 {
    DefenseConfig::default().am_droprate
}
fn default_embryonic_share() -> u8 {
    DefenseConfig::default().embryonic_share
}

impl From<DefenseSection> for DefenseConfig {
    fn from(d: DefenseSection) -> Self {
        DefenseConfig {
            drop_entry: d.drop_entry,
            drop_packet: d.drop_packet,
            secure_tcp: d.secure_tcp,
            amemthresh: d.amemthresh,
            am_droprate: d.am_droprate,
            embryonic_share: d.embryonic_share,
            strict_handshake: d.strict_handshake,
            source_rate: d.source_rate,
            source_prefix_v4: d.source_prefix_v4,
            source_prefix_v6: d.source_prefix_v6,
            stateless_ack_secs: d.stateless_ack_secs,
            synproxy_syn_retries: d.synproxy_syn_retries,
            synproxy_syn_interval_ms: d.synproxy_syn_interval_ms,
        }
    }
}

/// `[sync]`: connection sync (the kernel's sync sysctls and the daemons to start).
///
/// ```toml
/// [sync]
/// threshold = [3, 50]        # sync_threshold: send at packet 3, then every 50th
/// refresh_period = 0         # sync_refresh_period (seconds; 0 = off)
/// retries = 0                # sync_retries (0..3)
/// persist_mode = false       # sync_persist_mode
/// qlen_max = 65536           # entries waiting to be sent before new ones are dropped
/// flush_ms = 2000            # a partly filled message leaves after this long
///
/// [sync.master]              # ipvsadm --start-daemon master
/// interface = "eth0"
/// syncid = 7
/// group = "224.0.0.81"       # or an IPv6 group
/// port = 8848
/// ttl = 1
/// maxlen = 1472              # message payload limit (default: from the MTU)
/// peers = ["198.18.1.2"]     # unicast to these instead of multicast
///
/// [sync.backup]              # ipvsadm --start-daemon backup (same fields but ttl)
/// interface = "eth0"
/// ```
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    pub threshold: Option<[u32; 2]>,
    pub refresh_period: Option<u32>,
    pub retries: Option<u8>,
    pub persist_mode: Option<bool>,
    pub qlen_max: Option<usize>,
    pub flush_ms: Option<u64>,
    pub master: Option<DaemonSection>,
    pub backup: Option<DaemonSection>,
}

/// `[sync.master]` / `[sync.backup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    pub interface: String,
    #[serde(default)]
    pub syncid: u8,
    pub group: Option<IpAddr>,
    pub port: Option<u16>,
    pub ttl: Option<u8>,
    pub maxlen: Option<u16>,
    #[serde(default)]
    pub peers: Vec<String>,
}

/// `[metrics]`: where the Prometheus exposition is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// e.g. `"127.0.0.1:9100"`; omit for no metrics endpoint.
    pub address: Option<std::net::SocketAddr>,
    /// Also export node_exporter's IPVS series (`node_ipvs_*`); default true.
    #[serde(default = "default_true")]
    pub node_exporter_compat: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            address: None,
            node_exporter_compat: true,
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorSection {
    /// Connection table capacity per worker.
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Connections of a removed backend: `drain` (forwarded until they end; default), `drop`
    /// (IPVS with `expire_nodest_conn = 0`) or `expire` (IPVS with `expire_nodest_conn = 1`).
    #[serde(default)]
    pub removed_backends: RemovedBackendsSetting,
    /// IPVS `conn_reuse_mode` (bit 1: reschedule SYNs hitting TIME_WAIT/CLOSE entries).
    #[serde(default = "default_conn_reuse_mode")]
    pub conn_reuse_mode: u8,
    /// IPVS `sloppy_tcp`: any TCP packet without RST may open a connection, not only a SYN, so
    /// a director that receives the middle of a flow (ECMP moved it here) schedules it. With a
    /// scheduler that maps a flow to the same backend on every director (mh, sh, dh) the flow
    /// continues where it was.
    #[serde(default)]
    pub sloppy_tcp: bool,
}

impl Default for DirectorSection {
    fn default() -> Self {
        DirectorSection {
            connections: default_connections(),
            removed_backends: RemovedBackendsSetting::default(),
            conn_reuse_mode: default_conn_reuse_mode(),
            sloppy_tcp: false,
        }
    }
}

/// The TOML spelling of [`RemovedBackends`].
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RemovedBackendsSetting {
    #[default]
    Drain,
    Drop,
    Expire,
}

impl From<RemovedBackendsSetting> for RemovedBackends {
    fn from(s: RemovedBackendsSetting) -> Self {
        match s {
            RemovedBackendsSetting::Drain => RemovedBackends::Drain,
            RemovedBackendsSetting::Drop => RemovedBackends::Drop,
            RemovedBackendsSetting::Expire => RemovedBackends::Expire,
        }
    }
}

fn default_connections() -> u32 {
    1 << 20
}
fn default_conn_reuse_mode() -> u8 {
    1
}

/// `ipvsadm --set tcp tcpfin udp` (seconds; IPVS defaults).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    #[serde(default = "default_tcp")]
    pub tcp: u32,
    #[serde(default = "default_tcpfin")]
    pub tcpfin: u32,
    #[serde(default = "default_udp")]
    pub udp: u32,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        TimeoutSection {
            tcp: default_tcp(),
            tcpfin: default_tcpfin(),
            udp: default_udp(),
        }
    }
}
fn default_tcp() -> u32 {
    900
}
fn default_tcpfin() -> u32 {
    120
}
fn default_udp() -> u32 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u16>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// VLAN ids (1–4094) whose tagged frames are accepted.
    #[serde(default)]
    pub vlans: Vec<u16>,
    /// VLAN id to tag transmitted frames with (one of `vlans`).
    pub egress_vlan: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub dst: String,
    pub via: Option<IpAddr>,
    pub interface: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourSection {
    pub address: IpAddr,
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkSection {
    pub mark: u32,
    pub protocol: Option<String>,
    pub dst: String,
    #[serde(default)]
    pub ports: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub protocol: Option<String>,
    pub vip: Option<IpAddr>,
    pub port: Option<u16>,
    pub fwmark: Option<u32>,
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    #[serde(default)]
    pub flags: String,
    pub persistence: Option<u32>,
    pub netmask: Option<u8>,
    #[serde(default)]
    pub one_packet: bool,
    /// SYN proxy (TCP services whose backends are all nat or fullnat).
    #[serde(default)]
    pub synproxy: bool,
    /// New connections per second, director-wide (0: no limit).
    #[serde(default)]
    pub conn_rate: u32,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendSection>,
    /// Health check of every backend of the service (a backend's own `check` overrides it).
    pub check: Option<CheckConfig>,
    /// Minimum live weight (sum of the weights of the backends up); default 1.
    pub quorum: Option<u32>,
    /// Lost below `quorum - hysteresis`, gained at `quorum + hysteresis`; default 0.
    pub hysteresis: Option<u32>,
    /// Command (`/bin/sh -c`) run when the quorum is gained.
    pub quorum_up: Option<String>,
    /// Command (`/bin/sh -c`) run when the quorum is lost.
    pub quorum_down: Option<String>,
    /// Run `quorum_down` when the director shuts down.
    #[serde(default)]
    pub omega: bool,
    /// The backend put in while the quorum is lost.
    pub sorry_server: Option<SorrySection>,
    /// Effective weights that follow the backends' measured response time and load.
    pub adaptive: Option<AdaptiveConfig>,
}

/// `[service.sorry_server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SorrySection {
    pub address: IpAddr,
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_method")]
    pub method: String,
    /// Taken out by setting its weight to 0 rather than removing it.
    #[serde(default)]
    pub inhibit: bool,
}

fn default_scheduler() -> String {
    "wlc".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub address: IpAddr,
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub u_threshold: u32,
    #[serde(default)]
    pub l_threshold: u32,
    /// New connections per second, director-wide (0: no limit).
    #[serde(default)]
    pub conn_rate: u32,
    pub check: Option<CheckConfig>,
}

fn default_weight() -> u32 {
    1
}
fn default_method() -> String {
    // ipvsadm's default forwarding method is direct routing (-g).
    "dr".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FullNatSection {
    /// Director-owned source addresses for FullNAT connections towards backends.
    #[serde(default)]
    pub local_addresses: Vec<IpAddr>,
}

/// The SYN proxy's cookie secret of this process: random, drawn once, the same for every
/// worker (a client's SYN and ACK may be handled by different workers after a reload).
fn cookie_secret() -> CookieSecret {
    use std::hash::{BuildHasher, Hasher};
    static SECRET: std::sync::OnceLock<CookieSecret> = std::sync::OnceLock::new();
    *SECRET.get_or_init(|| {
        let mut k = [0u64; 4];
        for (i, w) in k.iter_mut().enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            *w = h.finish();
        }
        CookieSecret(k)
    })
}

/// A validated configuration, in the forwarding core's terms.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub connections: u32,
    pub removed_backends: RemovedBackends,
    pub conn_reuse_mode: u8,
    pub sloppy_tcp: bool,
    pub timeouts: TimeoutSection,
    /// Interfaces in configuration order; `PortId(i)` is `interfaces[i]`. A missing MAC is
    /// all-zero until the data plane reads it from the interface.
    pub ports: Vec<Port>,
    /// Whether the MAC of each port was given in the file.
    pub mac_given: Vec<bool>,
    /// The VLANs of each port.
    pub vlans: Vec<PortVlans>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<(IpAddr, Mac)>,
    pub marks: Vec<MarkRule>,
    pub services: Vec<Service>,
    pub local_addresses: Vec<IpAddr>,
    /// The data plane's part (interfaces, workers, I/O backend).
    pub dataplane: DataplaneConfig,
    /// Each service's own `[service.check]` (backends added at run time get it), by service.
    pub service_checks: Vec<Option<CheckConfig>>,
    /// Each service's quorum and sorry server, by service.
    pub service_quorum: Vec<QuorumConfig>,
    /// Each service's adaptive weight policy (`[service.adaptive]`), by service.
    pub service_adaptive: Vec<Option<AdaptivePolicy>>,
    /// The health check of each checked backend: (service index, backend address, port, check).
    pub checks: Vec<(usize, IpAddr, u16, CheckSpec)>,
    /// Prometheus endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[metrics] node_exporter_compat`: node_exporter's IPVS series beside xvs's own.
    pub metrics_node_exporter: bool,
    /// Connection sync.
    pub sync: SyncConfig,
    /// SYN-flood defences.
    pub defense: DefenseConfig,
    /// The announce device's name (`[announce] interface`).
    pub announce: Option<String>,
    /// DNS load balancing entries.
    pub dns: Vec<DnsConfig>,
    /// HTTP redirect entries.
    pub redirects: Vec<RedirectConfig>,
}

impl Config {
    /// The settings of worker `worker`'s pipeline.
    pub fn pipeline_config(&self, worker: u16, workers: u16) -> PipelineConfig {
        PipelineConfig {
            connections: self.connections,
            v6_connections: self.connections,
            removed_backends: self.removed_backends,
            conn_reuse_mode: self.conn_reuse_mode,
            sloppy_tcp: self.sloppy_tcp,
            timeouts: (self.timeouts.tcp, self.timeouts.tcpfin, self.timeouts.udp),
            local_addresses: self.local_addresses.clone(),
            worker,
            workers,
            defense: self.defense,
            ..PipelineConfig::default()
        }
    }

    /// The settings of a live worker's pipeline: as [`Config::pipeline_config`], fragmenting
    /// too-big IPv4 packets without DF (the worker sends the extra fragments), with a random
    /// hash seed and a random first FullNAT local port (see `PipelineConfig::first_local_port`).
    pub fn live_pipeline_config(&self, worker: u16, workers: u16) -> PipelineConfig {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        PipelineConfig {
            seed: random,
            cookie_secret: cookie_secret(),
            first_local_port: 1024 + ((random >> 32) % (65536 - 1024)) as u16,
            // The worker sends the fragments after the first (`FrameProcessor::extra_frames`).
            fragment: true,
            ..self.pipeline_config(worker, workers)
        }
    }

    /// The forwarding core's network view: ports (with `macs` where the file gave none, e.g.
    /// read from the interfaces), routes and the static neighbours.
    pub fn network(&self, macs: &[Mac]) -> Network {
        let ports = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut p = p.clone();
                if !self.mac_given[i] {
                    if let Some(m) = macs.get(i) {
                        p.mac = *m;
                    }
                }
                p
            })
            .collect();
        let mut net = Network::new(ports, self.routes.clone());
        for (i, v) in self.vlans.iter().enumerate() {
            if *v != PortVlans::default() {
                net.set_vlans(PortId(i as u16), v.clone());
            }
        }
        for &(addr, mac) in &self.neighbours {
            net.set_neighbour(addr, mac);
        }
        net
    }

    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate configuration text (`file` only names it in errors).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        validate(file, raw)
    }
}

struct Check<'a> {
    file: &'a Path,
}

impl Check<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parse `addr/len` (a bare address is a host prefix).
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.trim().parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        Some(l) => l.trim().parse::<u8>().ok().filter(|&l| l <= max)?,
        None => max,
    };
    Some((addr, len))
}

pub fn parse_protocol(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(PROTO_TCP),
        "udp" => Some(PROTO_UDP),
        "sctp" => Some(PROTO_SCTP),
        _ => None,
    }
}

pub fn parse_method(s: &str) -> Option<Method> {
    match s.to_ascii_lowercase().as_str() {
        "nat" | "masq" | "m" => Some(Method::Nat),
        "dr" | "route" | "g" => Some(Method::Dr),
        "tun" | "tunnel" | "ipip" | "i" => Some(Method::Tunnel),
        "fullnat" | "fnat" => Some(Method::FullNat),
        _ => None,
    }
}

fn validate_sync(c: &Check<'_>, raw: &SyncSection) -> Result<SyncConfig, ConfigError> {
    let mut settings = SyncSettings::default();
    if let Some([threshold, period]) = raw.threshold {
        // The kernel's rule for the sysctl: 0 <= threshold < period, or period 0.
        if period != 0 && threshold >= period {
            return Err(c.err(
                "sync.threshold",
                "the first value must be below the second (or the second 0)",
            ));
        }
        settings.policy.threshold = threshold;
        settings.policy.period = period;
    }
    if let Some(r) = raw.refresh_period {
        settings.policy.refresh_period_ms = r
            .checked_mul(1000)
            .ok_or_else(|| c.err("sync.refresh_period", "too large"))?;
    }
    if let Some(r) = raw.retries {
        if r > 3 {
            return Err(c.err("sync.retries", "must be 0 to 3"));
        }
        settings.policy.retries = r;
    }
    if let Some(p) = raw.persist_mode {
        settings.policy.persist_mode = p;
    }
    if let Some(q) = raw.qlen_max {
        if q == 0 {
            return Err(c.err("sync.qlen_max", "must be at least 1"));
        }
        settings.qlen_max = q;
    }
    if let Some(ms) = raw.flush_ms {
        if ms == 0 {
            return Err(c.err("sync.flush_ms", "must be at least 1"));
        }
        settings.flush = std::time::Duration::from_millis(ms);
    }
    let daemon = |role: Role, d: &DaemonSection| -> Result<DaemonConfig, ConfigError> {
        let f = |n: &str| format!("sync.{}.{n}", role.as_str());
        if d.interface.is_empty() || d.interface.len() > 15 {
            return Err(c.err(
                f("interface"),
                "must be 1 to 15 characters (an interface name)",
            ));
        }
        let mut cfg = DaemonConfig::new(role, d.interface.clone());
        cfg.syncid = d.syncid;
        if let Some(g) = d.group {
            if !g.is_multicast() {
                return Err(c.err(f("group"), format!("{g} is not a multicast address")));
            }
            cfg.group = g;
        }
        if let Some(p) = d.port {
            if p == 0 {
                return Err(c.err(f("port"), "must not be 0"));
            }
            cfg.port = p;
        }
        if let Some(t) = d.ttl {
            if t == 0 {
                return Err(c.err(f("ttl"), "must be 1 to 255"));
            }
            cfg.ttl = t;
        }
        if let Some(m) = d.maxlen {
            if m < 8 + 72 {
                return Err(c.err(f("maxlen"), "must hold a header and an IPv6 entry (80)"));
            }
            cfg.maxlen = Some(m);
        }
        for (i, p) in d.peers.iter().enumerate() {
            let (addr, port) = crate::control::ipvsadm::parse_addr_port(p).ok_or_else(|| {
                c.err(
                    format!("{}[{i}]", f("peers")),
                    format!("{p:?} is not an address[:port]"),
                )
            })?;
            cfg.peers
                .push(std::net::SocketAddr::new(addr, port.unwrap_or(cfg.port)));
        }
        Ok(cfg)
    };
    Ok(SyncConfig {
        settings,
        master: raw
            .master
            .as_ref()
            .map(|d| daemon(Role::Master, d))
            .transpose()?,
        backup: raw
            .backup
            .as_ref()
            .map(|d| daemon(Role::Backup, d))
            .transpose()?,
    })
}

/// The service `r` names.
fn resolve_service<'s>(
    c: &Check<'_>,
    field: &str,
    r: &ServiceRef,
    services: &'s [Service],
) -> Result<&'s Service, ConfigError> {
    match r {
        ServiceRef::Index(s) => services.get(*s).ok_or_else(|| {
            c.err(
                field,
                format!("no service[{s}] ({} service(s) configured)", services.len()),
            )
        }),
        ServiceRef::Name(n) => services
            .iter()
            .find(|s| crate::control::state::service_name(&s.key).eq_ignore_ascii_case(n.trim()))
            .ok_or_else(|| c.err(field, format!("no service named {n:?}"))),
    }
}

/// The `[[dns.site]]` entries of `[[dns]]` number `i`.
fn validate_sites(
    c: &Check<'_>,
    i: usize,
    d: &DnsSection,
    services: &[Service],
) -> Result<Vec<crate::dns::sites::DnsSite>, ConfigError> {
    use crate::dns::sites::{DnsSite, SiteCheck, SiteKind};
    let mut out: Vec<DnsSite> = Vec::new();
    for (k, s) in d.sites.iter().enumerate() {
        let f = |x: &str| format!("dns[{i}].site[{k}].{x}");
        let is_vip = |a: IpAddr| {
            services
                .iter()
                .any(|s| matches!(s.key, ServiceKey::Addr { addr, .. } if addr == a))
        };
        let (address, kind) = match (&s.service, s.address) {
            (Some(r), None) => {
                let svc = resolve_service(c, &f("service"), r, services)?;
                match svc.key {
                    ServiceKey::Addr { addr, .. } => (addr, SiteKind::Service(svc.key)),
                    ServiceKey::Fwmark { .. } => {
                        return Err(
                            c.err(f("service"), "a firewall-mark service has no VIP to answer")
                        )
                    }
                }
            }
            (None, Some(a)) if is_vip(a) => (a, SiteKind::Vip),
            (None, Some(a)) => {
                let check = match &s.check {
                    None => None,
                    Some(cfg) => cfg
                        .validate(&f("check"))
                        .map_err(|e| c.err(e.field, e.reason))?
                        .map(|spec| {
                            let port = s.port.or(spec.connect_port).ok_or_else(|| {
                                c.err(
                                    f("port"),
                                    "the port the check probes (or check.connect_port)",
                                )
                            })?;
                            Ok(Box::new(SiteCheck {
                                target: std::net::SocketAddr::new(a, port),
                                spec,
                            }))
                        })
                        .transpose()?,
                };
                (a, SiteKind::Remote(check))
            }
            _ => return Err(c.err(
                f("service"),
                "give either service (a local service) or address (a local VIP or another site's)",
            )),
        };
        if s.port.is_some() && s.check.is_none() {
            return Err(c.err(f("port"), "is what a check probes: give check too"));
        }
        if s.check.is_some() && !matches!(kind, SiteKind::Remote(_)) {
            return Err(c.err(
                f("check"),
                format!(
                    "{address} is a local VIP: it is answered while its service has an \
                     available backend (a check is for another site's VIP)"
                ),
            ));
        }
        if out.iter().any(|o| o.address == address) {
            return Err(c.err(f("address"), format!("{address} is listed twice")));
        }
        let name = match &s.name {
            Some(n) if n.trim().is_empty() => return Err(c.err(f("name"), "empty")),
            Some(n) => n.clone(),
            None => address.to_string(),
        };
        out.push(DnsSite {
            name,
            address,
            weight: s.weight,
            kind,
        });
    }
    Ok(out)
}

fn validate_dns(
    c: &Check<'_>,
    raw: &[DnsSection],
    services: &[Service],
) -> Result<Vec<DnsConfig>, ConfigError> {
    let mut out: Vec<DnsConfig> = Vec::new();
    let mut listens = HashSet::new();
    for (i, d) in raw.iter().enumerate() {
        let f = |n: &str| format!("dns[{i}].{n}");
        if d.names.is_empty() {
            return Err(c.err(f("names"), "at least one name"));
        }
        if d.listen.is_empty() {
            return Err(c.err(f("listen"), "at least one address:port"));
        }
        for l in &d.listen {
            if !listens.insert(*l) {
                return Err(c.err(f("listen"), format!("{l} is listed twice")));
            }
        }
        if d.answers == 0 || d.answers > 64 {
            return Err(c.err(f("answers"), "must be 1 to 64"));
        }
        let zone = d.zone.trim_end_matches('.').to_string();
        let source = match (&d.service, d.addresses.is_empty(), d.sites.is_empty()) {
            (Some(s), true, true) => {
                DnsSource::Service(resolve_service(c, &f("service"), s, services)?.key)
            }
            (None, false, true) => {
                DnsSource::Addresses(d.addresses.iter().map(|a| (a.address, a.weight)).collect())
            }
            (None, true, false) => DnsSource::Sites(validate_sites(c, i, d, services)?),
            _ => {
                return Err(c.err(
                    f("service"),
                    "give one of service (a [[service]] index or name), address entries or \
                     site entries",
                ))
            }
        };
        let site_names: Vec<(&str, IpAddr)> = match &source {
            DnsSource::Sites(sites) => sites.iter().map(|s| (s.name.as_str(), s.address)).collect(),
            _ => Vec::new(),
        };
        let mut client_networks = Vec::new();
        for (k, n) in d.client_networks.iter().enumerate() {
            let f = |x: &str| format!("dns[{i}].client_network[{k}].{x}");
            let (prefix, len) = parse_prefix(&n.prefix)
                .ok_or_else(|| c.err(f("prefix"), format!("{:?} is not a prefix", n.prefix)))?;
            if n.prefer.is_empty() {
                return Err(c.err(f("prefer"), "at least one address"));
            }
            let mut prefer = Vec::new();
            for p in &n.prefer {
                let named: Vec<IpAddr> = site_names
                    .iter()
                    .filter(|(name, _)| name == p)
                    .map(|(_, a)| *a)
                    .collect();
                if !named.is_empty() {
                    prefer.extend(named);
                } else if let Ok(a) = p.parse::<IpAddr>() {
                    prefer.push(a);
                } else {
                    return Err(c.err(
                        f("prefer"),
                        format!("{p:?} is neither an address nor the name of a site"),
                    ));
                }
            }
            client_networks.push(crate::dns::answer::ClientNetwork {
                prefix,
                len,
                prefer,
            });
        }
        let cfg = DnsConfig {
            client_networks,
            rate_limit: d.rate_limit,
            slip: d.slip,
            nameserver: d.nameserver.clone().unwrap_or_else(|| format!("ns.{zone}")),
            zone,
            names: d.names.clone(),
            listen: d.listen.clone(),
            ttl: d.ttl,
            negative_ttl: d.negative_ttl.unwrap_or(d.ttl),
            answers: d.answers,
            scheduler: d.scheduler.clone(),
            source,
        };
        let r = cfg
            .responder()
            .map_err(|e| c.err(f("names"), e.to_string()))?;
        let mut seen = HashSet::new();
        for n in r.names() {
            if !seen.insert(n.name.clone()) {
                return Err(c.err(f("names"), format!("{} is listed twice", n.name)));
            }
        }
        out.push(cfg);
    }
    Ok(out)
}

fn validate_redirects(
    c: &Check<'_>,
    raw: &[RedirectSection],
    dns: &[DnsConfig],
    services: &[Service],
) -> Result<Vec<RedirectConfig>, ConfigError> {
    // A redirect listener's TCP port may not be a DNS responder's (which listens on TCP too).
    let mut listens: HashSet<std::net::SocketAddr> =
        dns.iter().flat_map(|d| d.listen.iter().copied()).collect();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let f = |n: &str| format!("redirect[{i}].{n}");
        if r.listen.is_empty() {
            return Err(c.err(f("listen"), "at least one address:port"));
        }
        for l in &r.listen {
            if !listens.insert(*l) {
                return Err(c.err(
                    f("listen"),
                    format!("{l} is already a [[dns]] or [[redirect]] listen address"),
                ));
            }
        }
        let name = r.name.clone().unwrap_or_else(|| r.listen[0].to_string());
        if name.is_empty() || name.chars().any(|ch| ch.is_control() || ch == '"') {
            return Err(c.err(f("name"), format!("{name:?} is not a usable name")));
        }
        if !names.insert(name.clone()) {
            return Err(c.err(f("name"), format!("{name:?} is used twice")));
        }
        let service = match services.get(r.service) {
            Some(svc) => svc.key,
            None => {
                return Err(c.err(
                    f("service"),
                    format!(
                        "no service[{}] ({} service(s) configured)",
                        r.service,
                        services.len()
                    ),
                ))
            }
        };
        if !crate::balance::STATELESS_SCHEDULERS.contains(&r.scheduler.as_str()) {
            return Err(c.err(
                f("scheduler"),
                crate::balance::NotStateless(r.scheduler.clone()).to_string(),
            ));
        }
        if !matches!(r.code, 302 | 307) {
            return Err(c.err(f("code"), format!("{} is not 302 or 307", r.code)));
        }
        if r.port == Some(0) {
            return Err(c.err(f("port"), "must be 1 to 65535"));
        }
        let mut hosts = Vec::new();
        for (k, h) in r.hosts.iter().enumerate() {
            // A host is a reg-name or IP literal without a port (RFC 3986 §3.2.2).
            let ok = h.name.parse::<http::uri::Authority>().is_ok_and(|a| {
                a.port().is_none() && !a.as_str().contains('@') && !a.as_str().is_empty()
            });
            if !ok {
                return Err(c.err(
                    format!("redirect[{i}].host[{k}].name"),
                    format!("{:?} is not a host name", h.name),
                ));
            }
            if hosts.iter().any(|(a, _)| *a == h.address) {
                return Err(c.err(
                    format!("redirect[{i}].host[{k}].address"),
                    format!("{} is listed twice", h.address),
                ));
            }
            hosts.push((h.address, h.name.clone()));
        }
        out.push(RedirectConfig {
            name,
            listen: r.listen.clone(),
            service,
            scheduler: r.scheduler.clone(),
            rules: crate::redirect::decide::Rules {
                code: r.code,
                scheme: r.scheme,
                port: r.port,
                hosts,
                persistence: r.persistence,
            },
        });
    }
    Ok(out)
}

fn validate(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let c = Check { file };
    if raw.director.connections == 0 {
        return Err(c.err("director.connections", "must be at least 1"));
    }

    let mut ports = Vec::new();
    let mut mac_given = Vec::new();
    let mut vlans = Vec::new();
    let mut names = HashSet::new();
    for (i, it) in raw.interfaces.iter().enumerate() {
        let f = |n: &str| format!("interface[{i}].{n}");
        if it.name.is_empty() || it.name.len() > 15 {
            return Err(c.err(f("name"), "must be 1 to 15 characters (an interface name)"));
        }
        if !names.insert(it.name.clone()) {
            return Err(c.err(f("name"), format!("interface {:?} listed twice", it.name)));
        }
        let mac = match &it.mac {
            Some(m) => parse_mac(m)
                .ok_or_else(|| c.err(f("mac"), format!("{m:?} is not a MAC address")))?,
            None => [0; 6],
        };
        let mtu = it.mtu.unwrap_or(1500);
        if mtu < 576 {
            return Err(c.err(f("mtu"), format!("{mtu} is below 576")));
        }
        ports.push(Port {
            name: it.name.clone(),
            mac,
            mtu,
            v4: it.ipv4,
            v6: it.ipv6,
        });
        mac_given.push(it.mac.is_some());
        let mut seen = HashSet::new();
        for (j, &id) in it.vlans.iter().enumerate() {
            if !(1..=4094).contains(&id) {
                return Err(c.err(
                    f(&format!("vlans[{j}]")),
                    format!("{id} is not a VLAN id (1 to 4094)"),
                ));
            }
            if !seen.insert(id) {
                return Err(c.err(f(&format!("vlans[{j}]")), format!("{id} listed twice")));
            }
        }
        if let Some(id) = it.egress_vlan {
            if !it.vlans.contains(&id) {
                return Err(c.err(
                    f("egress_vlan"),
                    format!("{id} is not one of the interface's vlans"),
                ));
            }
        }
        vlans.push(PortVlans {
            ingress: it.vlans.clone(),
            egress: it.egress_vlan,
        });
    }
    let port_of = |name: &str| {
        ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u16))
    };

    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let f = |n: &str| format!("route[{i}].{n}");
        let (dst, prefix_len) = parse_prefix(&r.dst)
            .ok_or_else(|| c.err(f("dst"), format!("{:?} is not an address/prefix", r.dst)))?;
        if let Some(via) = r.via {
            if via.is_ipv4() != dst.is_ipv4() {
                return Err(c.err(f("via"), "gateway and destination families differ"));
            }
        }
        let port = port_of(&r.interface).ok_or_else(|| {
            c.err(
                f("interface"),
                format!("no [[interface]] named {:?}", r.interface),
            )
        })?;
        routes.push(Route {
            dst,
            prefix_len,
            via: r.via,
            port,
        });
    }

    let mut neighbours = Vec::new();
    for (i, n) in raw.neighbours.iter().enumerate() {
        let mac = parse_mac(&n.mac).ok_or_else(|| {
            c.err(
                format!("neighbour[{i}].mac"),
                format!("{:?} is not a MAC address", n.mac),
            )
        })?;
        neighbours.push((n.address, mac));
    }

    let mut marks = Vec::new();
    for (i, m) in raw.marks.iter().enumerate() {
        let f = |n: &str| format!("mark[{i}].{n}");
        if m.mark == 0 {
            return Err(c.err(f("mark"), "mark 0 means no mark"));
        }
        let proto = match &m.protocol {
            Some(p) => {
                Some(parse_protocol(p).ok_or_else(|| c.err(f("protocol"), "must be tcp or udp"))?)
            }
            None => None,
        };
        let (dst, dst_prefix_len) = parse_prefix(&m.dst)
            .ok_or_else(|| c.err(f("dst"), format!("{:?} is not an address/prefix", m.dst)))?;
        let ports = match &m.ports {
            None => (0, u16::MAX),
            Some(p) => parse_port_range(p)
                .ok_or_else(|| c.err(f("ports"), format!("{p:?} is not PORT or LOW-HIGH")))?,
        };
        marks.push(MarkRule {
            proto,
            dst,
            dst_prefix_len,
            ports,
            mark: m.mark,
        });
    }

    let mut services = Vec::new();
    let mut service_checks = Vec::new();
    let mut service_quorum = Vec::new();
    let mut service_adaptive = Vec::new();
    let mut checks = Vec::new();
    let mut keys = HashSet::new();
    for (i, s) in raw.services.iter().enumerate() {
        let f = |n: &str| format!("service[{i}].{n}");
        let key = match (s.fwmark, &s.protocol, s.vip) {
            (Some(mark), None, None) => {
                if mark == 0 {
                    return Err(c.err(f("fwmark"), "mark 0 means no mark"));
                }
                if s.port.is_some() {
                    return Err(c.err(f("port"), "a fwmark service has no port"));
                }
                ServiceKey::Fwmark { mark, ipv6: s.ipv6 }
            }
            (None, Some(p), Some(vip)) => {
                let proto = parse_protocol(p).ok_or_else(|| {
                    c.err(f("protocol"), format!("{p:?}: must be tcp, udp or sctp"))
                })?;
                ServiceKey::Addr {
                    proto,
                    addr: vip,
                    port: s.port.unwrap_or(0),
                }
            }
            (Some(_), _, _) => {
                return Err(c.err(
                    f("fwmark"),
                    "give either fwmark or protocol + vip, not both",
                ))
            }
            (None, None, _) => return Err(c.err(f("protocol"), "missing (or give fwmark)")),
            (None, Some(_), None) => return Err(c.err(f("vip"), "missing")),
        };
        if !keys.insert(key) {
            return Err(c.err(f("vip"), "the same service is defined twice"));
        }
        let sched_flags = if s.flags.is_empty() {
            SchedFlags::NONE
        } else {
            SchedFlags::parse(Some(&s.scheduler), &s.flags)
                .map_err(|e| c.err(f("flags"), e.to_string()))?
        };
        if let Err(e) = xvs_schedulers::new_scheduler(&s.scheduler, &sched_flags) {
            return Err(c.err(f("scheduler"), e.to_string()));
        }
        let ipv6 = match key {
            ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => ipv6,
        };
        let max_len = if ipv6 { 128 } else { 32 };
        let persistence = match (s.persistence, s.netmask) {
            (Some(t), m) => {
                if t == 0 {
                    return Err(c.err(f("persistence"), "must be at least 1 second"));
                }
                let prefix_len = m.unwrap_or(max_len);
                if prefix_len == 0 || prefix_len > max_len {
                    return Err(c.err(f("netmask"), format!("must be 1..={max_len}")));
                }
                Some(Persistence {
                    timeout: t,
                    prefix_len,
                })
            }
            (None, Some(_)) => return Err(c.err(f("netmask"), "only with persistence")),
            (None, None) => None,
        };
        if s.one_packet
            && !matches!(
                key,
                ServiceKey::Addr {
                    proto: PROTO_UDP,
                    ..
                } | ServiceKey::Fwmark { .. }
            )
        {
            return Err(c.err(f("one_packet"), "one-packet scheduling is for UDP services"));
        }
        let mut backends = Vec::new();
        let mut seen = HashSet::new();
        for (j, b) in s.backends.iter().enumerate() {
            let f = |n: &str| format!("service[{i}].backend[{j}].{n}");
            let method = parse_method(&b.method).ok_or_else(|| {
                c.err(
                    f("method"),
                    format!("{:?}: must be nat, dr, tun or fullnat", b.method),
                )
            })?;
            if b.weight > 65535 {
                return Err(c.err(f("weight"), format!("{} is above 65535", b.weight)));
            }
            if b.l_threshold > b.u_threshold && b.u_threshold != 0 {
                return Err(c.err(f("l_threshold"), "is above u_threshold"));
            }
            if b.address.is_ipv6() != ipv6 && method != Method::Tunnel {
                return Err(c.err(
                    f("address"),
                    "address family differs from the service's (only tun allows that)",
                ));
            }
            let port = match (method, key) {
                // IPVS forces the service port for DR/TUN (the packet is not rewritten).
                (Method::Dr | Method::Tunnel, ServiceKey::Addr { port, .. }) => {
                    if b.port != 0 && b.port != port {
                        return Err(c.err(
                            f("port"),
                            format!("dr/tun cannot change the port (service port is {port})"),
                        ));
                    }
                    port
                }
                _ => b.port,
            };
            if !seen.insert((b.address, port)) {
                return Err(c.err(f("address"), "backend listed twice in this service"));
            }
            let merged = CheckConfig::merged(s.check.as_ref(), b.check.as_ref());
            if let Some(check) = merged {
                let field = if b.check.is_some() {
                    format!("service[{i}].backend[{j}].check")
                } else {
                    format!("service[{i}].check")
                };
                if let Some(spec) = check
                    .validate(&field)
                    .map_err(|e| c.err(e.field, e.reason))?
                {
                    checks.push((i, b.address, port, spec));
                }
            }
            backends.push(Backend {
                addr: b.address,
                port,
                weight: b.weight,
                method,
                u_threshold: b.u_threshold,
                l_threshold: b.l_threshold,
                conn_rate: b.conn_rate,
            });
        }
        if s.synproxy {
            if !matches!(
                key,
                ServiceKey::Addr {
                    proto: PROTO_TCP,
                    ..
                }
            ) {
                return Err(c.err(f("synproxy"), "the SYN proxy is for TCP vip:port services"));
            }
            if backends
                .iter()
                .any(|b: &Backend| !b.method.replies_through_director())
            {
                return Err(c.err(
                    f("synproxy"),
                    "the SYN proxy needs nat or fullnat backends (replies through the director)",
                ));
            }
        }
        service_checks.push(s.check.clone());
        let quorum = s.quorum.unwrap_or(crate::control::quorum::DEFAULT_QUORUM);
        if quorum == 0 {
            return Err(c.err(f("quorum"), "must be at least 1"));
        }
        let hysteresis = s.hysteresis.unwrap_or(0);
        for (name, v) in [("quorum_up", &s.quorum_up), ("quorum_down", &s.quorum_down)] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(c.err(f(name), "empty command"));
            }
        }
        let sorry = match &s.sorry_server {
            None => None,
            Some(ss) => {
                let f = |n: &str| format!("service[{i}].sorry_server.{n}");
                let method = parse_method(&ss.method).ok_or_else(|| {
                    c.err(
                        f("method"),
                        format!("{:?}: must be nat, dr, tun or fullnat", ss.method),
                    )
                })?;
                if ss.address.is_ipv6() != ipv6 && method != Method::Tunnel {
                    return Err(c.err(
                        f("address"),
                        "address family differs from the service's (only tun allows that)",
                    ));
                }
                let port = match (method, key) {
                    (Method::Dr | Method::Tunnel, ServiceKey::Addr { port, .. }) => {
                        if ss.port != 0 && ss.port != port {
                            return Err(c.err(
                                f("port"),
                                format!("dr/tun cannot change the port (service port is {port})"),
                            ));
                        }
                        port
                    }
                    _ => ss.port,
                };
                if s.synproxy && !method.replies_through_director() {
                    return Err(c.err(
                        f("method"),
                        "the SYN proxy needs a nat or fullnat sorry server (replies through the director)",
                    ));
                }
                Some(SorryServer {
                    backend: Backend {
                        addr: ss.address,
                        port,
                        weight: 1,
                        method,
                        u_threshold: 0,
                        l_threshold: 0,
                        conn_rate: 0,
                    },
                    inhibit: ss.inhibit,
                })
            }
        };
        let adaptive = match &s.adaptive {
            None => None,
            Some(a) => {
                let p = a
                    .validate()
                    .map_err(|e| c.err(format!("service[{i}].adaptive.{}", e.field), e.reason))?;
                let own: Vec<&CheckSpec> = checks
                    .iter()
                    .filter(|(si, _, _, _)| *si == i)
                    .map(|(_, _, _, spec)| spec)
                    .collect();
                if own.is_empty() {
                    return Err(c.err(
                        f("adaptive"),
                        "no backend of the service has a health check to measure it",
                    ));
                }
                let loads = own
                    .iter()
                    .any(|spec| matches!(&spec.probe, Probe::Http(h) if h.load_path.is_some()));
                if p.reference.is_none() && !loads {
                    return Err(c.err(
                        f("adaptive"),
                        "nothing to follow: set reference_ms, or load_path in an http check",
                    ));
                }
                Some(p)
            }
        };
        service_adaptive.push(adaptive);
        service_quorum.push(QuorumConfig {
            quorum,
            hysteresis,
            sorry,
            up_script: s.quorum_up.clone(),
            down_script: s.quorum_down.clone(),
            omega: s.omega,
        });
        services.push(Service {
            key,
            scheduler: s.scheduler.clone(),
            sched_flags,
            persistence,
            one_packet: s.one_packet,
            synproxy: s.synproxy,
            conn_rate: s.conn_rate,
            backends,
        });
    }

    let uses_fullnat = services
        .iter()
        .any(|s| s.backends.iter().any(|b| b.method == Method::FullNat))
        || service_quorum.iter().any(|q| {
            q.sorry
                .as_ref()
                .is_some_and(|s| s.backend.method == Method::FullNat)
        });
    if uses_fullnat && raw.fullnat.local_addresses.is_empty() {
        return Err(c.err(
            "fullnat.local_addresses",
            "fullnat backends need at least one local address",
        ));
    }

    let defaults = DataplaneConfig::new(&[]);
    let dataplane = DataplaneConfig {
        io: raw.io.unwrap_or(defaults.io),
        xdp_mode: raw.xdp_mode.unwrap_or(defaults.xdp_mode),
        interfaces: ports
            .iter()
            .map(|p| InterfaceConfig {
                name: p.name.clone(),
            })
            .collect(),
        workers: raw.workers.clone().unwrap_or(defaults.workers),
        afxdp: raw.afxdp.clone().unwrap_or(defaults.afxdp),
        packet: raw.packet.clone().unwrap_or(defaults.packet),
        log_interval_secs: raw.log_interval_secs.unwrap_or(defaults.log_interval_secs),
        neighbour_refresh_ms: raw
            .neighbour_refresh_ms
            .unwrap_or(defaults.neighbour_refresh_ms),
        idle_wait_ms: raw.idle_wait_ms.unwrap_or(defaults.idle_wait_ms),
        steering: raw.steering.unwrap_or(defaults.steering),
    };
    if !dataplane.interfaces.is_empty() {
        dataplane.validate().map_err(|e| c.err(e.field, e.reason))?;
    }

    let sync = validate_sync(&c, &raw.sync)?;
    let d = &raw.defense;
    for (name, v) in [
        ("drop_entry", d.drop_entry),
        ("drop_packet", d.drop_packet),
        ("secure_tcp", d.secure_tcp),
    ] {
        if v > 3 {
            return Err(c.err(format!("defense.{name}"), "must be 0, 1, 2 or 3"));
        }
    }
    if d.source_prefix_v4 > 32 || d.source_prefix_v6 > 128 {
        return Err(c.err(
            "defense.source_prefix_v4/v6",
            "prefix lengths are at most 32 / 128",
        ));
    }
    if d.embryonic_share > 100 {
        return Err(c.err(
            "defense.embryonic_share",
            "must be 0 (off) to 100 (percent)",
        ));
    }
    if d.am_droprate == 0 {
        return Err(c.err("defense.am_droprate", "must be at least 1"));
    }
    if !(1..=60_000).contains(&d.synproxy_syn_interval_ms) {
        return Err(c.err(
            "defense.synproxy_syn_interval_ms",
            "must be 1 to 60000 (milliseconds)",
        ));
    }
    let announce = match &raw.announce.interface {
        Some(n) if n.is_empty() || n.len() >= 16 || n.contains(['/', ' ', '\0']) => {
            return Err(c.err(
                "announce.interface",
                format!("{n:?} is not an interface name (1-15 characters, no '/' or space)"),
            ))
        }
        other => other.clone(),
    };
    let dns = validate_dns(&c, &raw.dns, &services)?;
    let redirects = validate_redirects(&c, &raw.redirects, &dns, &services)?;
    Ok(Config {
        defense: raw.defense.into(),
        dataplane,
        service_checks,
        service_quorum,
        service_adaptive,
        checks,
        sync,
        metrics: raw.metrics.address,
        metrics_node_exporter: raw.metrics.node_exporter_compat,
        file: file.to_owned(),
        connections: raw.director.connections,
        removed_backends: raw.director.removed_backends.into(),
        conn_reuse_mode: raw.director.conn_reuse_mode,
        sloppy_tcp: raw.director.sloppy_tcp,
        announce,
        dns,
        redirects,
        timeouts: raw.timeouts,
        ports,
        mac_given,
        vlans,
        routes,
        neighbours,
        marks,
        services,
        local_addresses: raw.fullnat.local_addresses,
    })
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some((a, b))
        }
        None => {
            let p = s.trim().parse().ok()?;
            Some((p, p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[interface]]
name = "xvs0"
mac = "02:00:00:00:00:01"
ipv4 = "198.18.0.2"

[[route]]
dst = "0.0.0.0/0"
via = "198.18.0.1"
interface = "xvs0"

[[service]]
protocol = "tcp"
vip = "198.18.0.100"
port = 80
scheduler = "wrr"

[[service.backend]]
address = "198.19.0.11"
port = 8080
weight = 2
method = "nat"

[[service.backend]]
address = "198.19.0.12"
method = "dr"
"#;

    const DNS: &str = r#"
[[dns]]
zone = "lb.example."
names = ["www.lb.example", "api.lb.example"]
listen = ["198.18.0.2:53"]
ttl = 20
answers = 2
scheduler = "sh"
service = 0
"#;

    #[test]
    fn dns_section_converts() {
        let c = Config::parse(Path::new("x.toml"), &format!("{GOOD}{DNS}")).unwrap();
        let d = &c.dns[0];
        assert_eq!(d.zone, "lb.example");
        assert_eq!(d.nameserver, "ns.lb.example");
        assert_eq!((d.ttl, d.negative_ttl, d.answers), (20, 20, 2));
        assert_eq!(d.source, DnsSource::Service(c.services[0].key));
        assert_eq!(d.responder().unwrap().names().len(), 2);
        let fixed = DNS.replace(
            "service = 0",
            "[[dns.address]]\naddress = \"198.18.5.1\"\nweight = 4\n\
             [[dns.client_network]]\nprefix = \"203.0.113.0/24\"\nprefer = [\"198.18.5.1\"]",
        );
        let c = Config::parse(Path::new("x.toml"), &format!("{GOOD}{fixed}")).unwrap();
        assert_eq!(
            c.dns[0].source,
            DnsSource::Addresses(vec![("198.18.5.1".parse().unwrap(), 4)])
        );
        assert_eq!(c.dns[0].client_networks[0].len, 24);
        let e = err(&format!(
            "{GOOD}{}",
            DNS.replace(
                "service = 0",
                "service = 0\n[[dns.client_network]]\nprefix = \"203.0.113.0/33\"\nprefer = []"
            )
        ));
        assert_eq!(
            e,
            "x.toml: dns[0].client_network[0].prefix: \"203.0.113.0/33\" is not a prefix"
        );
    }

    const REDIRECT: &str = r#"
[[redirect]]
name = "web"
listen = ["198.18.0.2:80"]
service = 0
code = 307
scheme = "https"
port = 8443
persistence = 60
[[redirect.host]]
address = "198.19.0.11"
name = "www1.lb.example"
"#;

    #[test]
    fn redirect_section_converts() {
        let c = Config::parse(Path::new("x.toml"), &format!("{GOOD}{REDIRECT}")).unwrap();
        let r = &c.redirects[0];
        assert_eq!(r.name, "web");
        assert_eq!(r.service, c.services[0].key);
        assert_eq!(r.scheduler, "wrr");
        assert_eq!(
            r.rules,
            crate::redirect::decide::Rules {
                code: 307,
                scheme: crate::redirect::decide::Scheme::Https,
                port: Some(8443),
                hosts: vec![("198.19.0.11".parse().unwrap(), "www1.lb.example".into())],
                persistence: 60,
            }
        );
        let plain = "[[redirect]]\nlisten = [\"198.18.0.2:8080\"]\nservice = 0\n";
        let c = Config::parse(Path::new("x.toml"), &format!("{GOOD}{plain}")).unwrap();
        let r = &c.redirects[0];
        assert_eq!((r.name.as_str(), r.rules.code), ("198.18.0.2:8080", 302));
        assert_eq!(r.rules.scheme, crate::redirect::decide::Scheme::Http);
    }

    #[test]
    fn redirect_section_errors() {
        let bad = |from: &str, to: &str| err(&format!("{GOOD}{}", REDIRECT.replace(from, to)));
        assert_eq!(
            bad("service = 0", "service = 2"),
            "x.toml: redirect[0].service: no service[2] (1 service(s) configured)"
        );
        assert_eq!(
            bad("code = 307", "code = 301"),
            "x.toml: redirect[0].code: 301 is not 302 or 307"
        );
        assert_eq!(
            bad("code = 307", "scheduler = \"wlc\""),
            "x.toml: redirect[0].scheduler: scheduler \"wlc\" cannot choose without connection counts (use one of rr, wrr, sh, mh)"
        );
        assert_eq!(
            bad("www1.lb.example", "www1.lb.example:80"),
            "x.toml: redirect[0].host[0].name: \"www1.lb.example:80\" is not a host name"
        );
        assert_eq!(
            bad("port = 8443", "port = 0"),
            "x.toml: redirect[0].port: must be 1 to 65535"
        );
        assert!(bad("scheme = \"https\"", "scheme = \"ftp\"").contains("unknown variant"));
        let twice = format!(
            "{GOOD}{DNS}{}",
            REDIRECT.replace("198.18.0.2:80\"", "198.18.0.2:53\"")
        );
        assert_eq!(
            err(&twice),
            "x.toml: redirect[0].listen: 198.18.0.2:53 is already a [[dns]] or [[redirect]] listen address"
        );
        assert_eq!(
            bad("listen = [\"198.18.0.2:80\"]", "listen = []"),
            "x.toml: redirect[0].listen: at least one address:port"
        );
    }

    #[test]
    fn dns_section_errors() {
        let bad = |from: &str, to: &str| err(&format!("{GOOD}{}", DNS.replace(from, to)));
        assert_eq!(
            bad("service = 0", "service = 3"),
            "x.toml: dns[0].service: no service[3] (1 service(s) configured)"
        );
        assert_eq!(
            bad("\"sh\"", "\"wlc\""),
            "x.toml: dns[0].names: scheduler \"wlc\" cannot choose DNS answers (use one of rr, wrr, sh, mh)"
        );
        assert_eq!(
            bad("api.lb.example", "api.example.org"),
            "x.toml: dns[0].names: name api.example.org. is not under the zone lb.example."
        );
        assert_eq!(
            bad("api.lb.example", "WWW.lb.example"),
            "x.toml: dns[0].names: www.lb.example. is listed twice"
        );
        assert_eq!(
            bad("answers = 2", "answers = 0"),
            "x.toml: dns[0].answers: must be 1 to 64"
        );
        assert!(bad("service = 0", "").contains("give one of service"));
        assert_eq!(
            bad("service = 0", "service = \"UDP 198.18.0.100:80\""),
            "x.toml: dns[0].service: no service named \"UDP 198.18.0.100:80\""
        );
        assert!(bad("names = [", "names = [\"a..b\", ").contains("not a valid DNS name"));
    }

    #[test]
    fn dns_sites_convert() {
        use crate::dns::sites::SiteKind;
        let sites = r#"
[[dns.site]]
name = "eu"
service = "tcp 198.18.0.100:80"
weight = 3

[[dns.site]]
address = "198.18.0.100"
name = "eu-again"

[[dns.site]]
name = "us"
address = "198.18.9.1"
port = 80
check = { type = "tcp", interval_ms = 500 }

[[dns.site]]
name = "ap"
address = "2001:2::9"

[[dns.client_network]]
prefix = "203.0.113.0/24"
prefer = ["us", "198.18.7.7"]
"#;
        let text = format!("{GOOD}{}", DNS.replace("service = 0\n", sites));
        // Two sites of one address are refused; with the second one gone the entry converts.
        let e = err(&text);
        assert_eq!(
            e,
            "x.toml: dns[0].site[1].address: 198.18.0.100 is listed twice"
        );
        let text = text.replace(
            "[[dns.site]]\naddress = \"198.18.0.100\"\nname = \"eu-again\"\n",
            "",
        );
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        let DnsSource::Sites(s) = &c.dns[0].source else {
            panic!("{:?}", c.dns[0].source)
        };
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].name.as_str(), s[0].weight), ("eu", 3));
        assert_eq!(s[0].kind, SiteKind::Service(c.services[0].key));
        assert_eq!(s[0].address, "198.18.0.100".parse::<IpAddr>().unwrap());
        match &s[1].kind {
            SiteKind::Remote(Some(check)) => {
                assert_eq!(check.target, "198.18.9.1:80".parse().unwrap())
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s[2].kind, SiteKind::Remote(None));
        assert_eq!(s[2].name, "ap");
        // A site's name stands for its address in a client network.
        assert_eq!(
            c.dns[0].client_networks[0].prefer,
            vec![
                "198.18.9.1".parse::<IpAddr>().unwrap(),
                "198.18.7.7".parse().unwrap()
            ]
        );
        // A local VIP given by address; a check on it is refused.
        let vip = DNS.replace(
            "service = 0\n",
            "[[dns.site]]\naddress = \"198.18.0.100\"\n",
        );
        let c = Config::parse(Path::new("x.toml"), &format!("{GOOD}{vip}")).unwrap();
        let DnsSource::Sites(s) = &c.dns[0].source else {
            panic!()
        };
        assert_eq!(
            (s[0].kind.clone(), s[0].name.as_str()),
            (SiteKind::Vip, "198.18.0.100")
        );
        let bad = |from: &str, to: &str| err(&text.replace(from, to));
        assert!(err(&format!(
            "{GOOD}{}",
            vip.replace("100\"\n", "100\"\nport = 80\ncheck = { type = \"tcp\" }\n")
        ))
        .contains("dns[0].site[0].check: 198.18.0.100 is a local VIP"));
        assert_eq!(
            bad("port = 80\ncheck", "check"),
            "x.toml: dns[0].site[1].port: the port the check probes (or check.connect_port)"
        );
        assert_eq!(
            bad("\"us\", \"198", "\"nowhere\", \"198"),
            "x.toml: dns[0].client_network[0].prefer: \"nowhere\" is neither an address nor \
             the name of a site"
        );
        assert!(
            bad("name = \"ap\"\naddress = \"2001:2::9\"", "name = \"ap\"")
                .contains("dns[0].site[2].service: give either service")
        );
        assert!(bad(
            "service = \"tcp",
            "service = 0\naddress = \"198.18.0.1\"\n#"
        )
        .contains("dns[0].site[0].service: give either service"));
        assert!(bad("interval_ms = 500", "interval_ms = 0").contains("dns[0].site[1].check"));
        assert_eq!(
            bad("check = { type = \"tcp\", interval_ms = 500 }", ""),
            "x.toml: dns[0].site[1].port: is what a check probes: give check too"
        );
        // A site list beside a service is refused.
        assert!(bad(
            "[[dns.site]]\nname = \"eu\"",
            "service = 0\n[[dns.site]]\nname = \"eu\""
        )
        .contains("give one of service"));
    }

    #[test]
    fn good_config_converts() {
        let c = Config::parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(c.ports[0].mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(c.routes[0].prefix_len, 0);
        let s = &c.services[0];
        assert_eq!(s.backends[0].port, 8080);
        assert_eq!(s.backends[1].port, 80, "DR takes the service port");
        assert_eq!(s.backends[1].weight, 1);
        assert_eq!(c.timeouts.tcp, 900);
    }

    #[test]
    fn node_exporter_series_default_on_and_can_be_turned_off() {
        let c = Config::parse(Path::new("x.toml"), GOOD).unwrap();
        assert!(c.metrics_node_exporter, "no [metrics] section");
        let on = format!("{GOOD}\n[metrics]\naddress = \"127.0.0.1:9100\"\n");
        let c = Config::parse(Path::new("x.toml"), &on).unwrap();
        assert!(c.metrics_node_exporter);
        let off = format!("{on}node_exporter_compat = false\n");
        let c = Config::parse(Path::new("x.toml"), &off).unwrap();
        assert!(!c.metrics_node_exporter);
    }

    fn err(text: &str) -> String {
        Config::parse(Path::new("x.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defense_section_defaults_and_checks() {
        let c = Config::parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(c.defense, DefenseConfig::default());
        assert_eq!(c.pipeline_config(0, 1).defense.embryonic_share, 50);
        let text = format!(
            "{GOOD}\n[defense]\ndrop_entry = 1\nsecure_tcp = 3\namemthresh = 4096\nembryonic_share = 20\nstrict_handshake = false\n"
        );
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(
            (
                c.defense.drop_entry,
                c.defense.secure_tcp,
                c.defense.amemthresh
            ),
            (1, 3, 4096)
        );
        assert_eq!(c.defense.embryonic_share, 20);
        assert!(!c.defense.strict_handshake);
        let e = err(&format!("{GOOD}\n[defense]\ndrop_packet = 4\n"));
        assert!(e.contains("defense.drop_packet"), "{e}");
        let e = err(&format!("{GOOD}\n[defense]\nembryonic_share = 101\n"));
        assert!(e.contains("defense.embryonic_share"), "{e}");
        let text = format!(
            "{GOOD}\n[defense]\nsynproxy_syn_retries = 5\nsynproxy_syn_interval_ms = 250\n"
        );
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        let d = c.pipeline_config(0, 1).defense;
        assert_eq!(
            (d.synproxy_syn_retries, d.synproxy_syn_interval_ms),
            (5, 250)
        );
        let e = err(&format!(
            "{GOOD}\n[defense]\nsynproxy_syn_interval_ms = 0\n"
        ));
        assert!(e.contains("defense.synproxy_syn_interval_ms"), "{e}");
        // Rate limits and the SYN proxy.
        let text = GOOD
            .replace(
                "scheduler = \"wrr\"\n",
                "scheduler = \"wrr\"\nconn_rate = 5000\nsynproxy = true\n",
            )
            .replace("weight = 2\n", "weight = 2\nconn_rate = 300\n")
            .replace("method = \"dr\"", "method = \"nat\"")
            + "\n[defense]\nsource_rate = 50\nsource_prefix_v4 = 16\n";
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        let s = &c.services[0];
        assert!(s.synproxy);
        assert_eq!((s.conn_rate, s.backends[0].conn_rate), (5000, 300));
        assert_eq!(
            (c.defense.source_rate, c.defense.source_prefix_v4),
            (50, 16)
        );
        // The SYN proxy refuses DR backends.
        let text = GOOD.replace(
            "scheduler = \"wrr\"\n",
            "scheduler = \"wrr\"\nsynproxy = true\n",
        );
        let e = err(&text);
        assert!(
            e.contains("synproxy") && e.contains("nat or fullnat"),
            "{e}"
        );
    }

    #[test]
    fn health_checks_merge_service_and_backend_sections() {
        let text = GOOD.replace(
            "scheduler = \"wrr\"\n",
            "scheduler = \"wrr\"\n[service.check]\ntype = \"http\"\npath = \"/health\"\ninterval_ms = 1000\n",
        )
        .replace(
            "method = \"dr\"\n",
            "method = \"dr\"\n[service.backend.check]\ntype = \"tcp\"\n",
        );
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(c.checks.len(), 2);
        assert_eq!(c.checks[0].1, "198.19.0.11".parse::<IpAddr>().unwrap());
        assert!(c.service_checks[0].is_some());
        let bad = text.replace("interval_ms = 1000", "interval_ms = 0");
        let e = Config::parse(Path::new("x.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml: service[0].check.interval_ms"), "{e}");
    }

    #[test]
    fn adaptive_section_is_checked() {
        let c = Config::parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(c.service_adaptive, vec![None]);
        let checked = GOOD.replace(
            "scheduler = \"wrr\"\n",
            "scheduler = \"wrr\"\n[service.check]\ntype = \"http\"\nload_path = \"/load\"\n[service.adaptive]\nreference_ms = 40\nmin_percent = 20\ninterval_ms = 500\n",
        );
        let c = Config::parse(Path::new("x.toml"), &checked).unwrap();
        let p = c.service_adaptive[0].expect("policy");
        assert_eq!(p.reference, Some(std::time::Duration::from_millis(40)));
        assert_eq!((p.min, p.max), (0.2, 1.0));
        assert_eq!(p.interval, std::time::Duration::from_millis(500));
        // Load alone is enough to follow.
        assert!(Config::parse(
            Path::new("x.toml"),
            &checked.replace("reference_ms = 40\n", "")
        )
        .is_ok());
        let e = err(&checked.replace("min_percent = 20", "min_percent = 0"));
        assert!(
            e.starts_with("x.toml: service[0].adaptive.min_percent"),
            "{e}"
        );
        let e = err(&checked.replace("interval_ms = 500", "interval_ms = 500\nspeed = 3"));
        assert!(e.contains("speed"), "{e}");
        let e = err(&checked
            .replace("reference_ms = 40\n", "")
            .replace("load_path = \"/load\"\n", ""));
        assert!(
            e.starts_with("x.toml: service[0].adaptive: nothing to follow"),
            "{e}"
        );
        let e = err(&checked.replace(
            "[service.check]\ntype = \"http\"\nload_path = \"/load\"\n",
            "",
        ));
        assert!(
            e.starts_with("x.toml: service[0].adaptive: no backend"),
            "{e}"
        );
        let e = err(&checked.replace("load_path = \"/load\"", "load_path = \"load\""));
        assert!(e.starts_with("x.toml: service[0].check.load_path"), "{e}");
    }

    #[test]
    fn quorum_and_sorry_server() {
        let c = Config::parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(c.service_quorum[0], QuorumConfig::default());
        let text = GOOD.replace(
            "scheduler = \"wrr\"\n",
            "scheduler = \"wrr\"\nquorum = 3\nhysteresis = 1\nquorum_up = \"logger up\"\nquorum_down = \"logger down\"\nomega = true\n[service.sorry_server]\naddress = \"198.19.0.99\"\nmethod = \"dr\"\ninhibit = true\n",
        );
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        let q = &c.service_quorum[0];
        assert_eq!((q.quorum, q.hysteresis, q.omega), (3, 1, true));
        assert_eq!(q.up_script.as_deref(), Some("logger up"));
        assert_eq!(q.down_script.as_deref(), Some("logger down"));
        let sorry = q.sorry.as_ref().unwrap();
        assert_eq!(sorry.backend.port, 80, "DR takes the service port");
        assert_eq!((sorry.backend.weight, sorry.inhibit), (1, true));
        let bad = text.replace("quorum = 3", "quorum = 0");
        assert!(err(&bad).starts_with("x.toml: service[0].quorum"));
        let bad = text.replace("address = \"198.19.0.99\"", "address = \"2001:2::99\"");
        assert!(err(&bad).starts_with("x.toml: service[0].sorry_server.address"));
    }

    #[test]
    fn announce_and_sloppy_tcp() {
        let c = Config::parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!((c.announce.clone(), c.sloppy_tcp), (None, false));
        assert!(!c.pipeline_config(0, 1).sloppy_tcp);
        let text =
            format!("[announce]\ninterface = \"xvs-vips\"\n[director]\nsloppy_tcp = true\n{GOOD}");
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(c.announce.as_deref(), Some("xvs-vips"));
        assert!(c.pipeline_config(0, 1).sloppy_tcp);
        for bad in ["", "a/b", "with space", "sixteen-chars-xx"] {
            let text = format!("[announce]\ninterface = \"{bad}\"\n{GOOD}");
            let e = Config::parse(Path::new("x.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("x.toml: announce.interface"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn vlans_reach_the_network() {
        let text = GOOD.replace(
            "ipv4 = \"198.18.0.2\"\n",
            "ipv4 = \"198.18.0.2\"\nvlans = [100, 200]\negress_vlan = 200\n",
        );
        let c = Config::parse(Path::new("x.toml"), &text).unwrap();
        let net = c.network(&[]);
        let v = net.vlans(PortId(0)).unwrap();
        assert_eq!((v.ingress.clone(), v.egress), (vec![100, 200], Some(200)));
        for (bad, field) in [
            (
                "vlans = [0]",
                "interface[0].vlans[0]: 0 is not a VLAN id (1 to 4094)",
            ),
            (
                "vlans = [4095]",
                "interface[0].vlans[0]: 4095 is not a VLAN id (1 to 4094)",
            ),
            ("vlans = [7, 7]", "interface[0].vlans[1]: 7 listed twice"),
            (
                "vlans = [7]\negress_vlan = 8",
                "interface[0].egress_vlan: 8 is not one of the interface's vlans",
            ),
        ] {
            let text = GOOD.replace(
                "ipv4 = \"198.18.0.2\"\n",
                &format!("ipv4 = \"198.18.0.2\"\n{bad}\n"),
            );
            assert_eq!(err(&text), format!("x.toml: {field}"));
        }
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let e = err(&GOOD.replace("weight = 2", "weight = 70000"));
        assert_eq!(
            e,
            "x.toml: service[0].backend[0].weight: 70000 is above 65535"
        );
        let e = err(&GOOD.replace("\"nat\"", "\"carrier-pigeon\""));
        assert!(
            e.starts_with("x.toml: service[0].backend[0].method:"),
            "{e}"
        );
        let e = err(&GOOD.replace("scheduler = \"wrr\"", "scheduler = \"nope\""));
        assert!(e.starts_with("x.toml: service[0].scheduler:"), "{e}");
        let e = err(&GOOD.replace("interface = \"xvs0\"", "interface = \"eth9\""));
        assert!(
            e.contains("route[0].interface: no [[interface]] named \"eth9\""),
            "{e}"
        );
        let e = err(&GOOD.replace("port = 80\n", "port = 80\nbogus = 1\n"));
        assert!(e.starts_with("x.toml: ") && e.contains("bogus"), "{e}");
        let e = err(&GOOD.replace("mac = \"02:00:00:00:00:01\"", "mac = \"02:00\""));
        assert!(e.contains("interface[0].mac"), "{e}");
        let e = err(&GOOD.replace("method = \"dr\"", "method = \"dr\"\nport = 81"));
        assert!(
            e.contains("backend[1].port: dr/tun cannot change the port"),
            "{e}"
        );
        let e = err(&GOOD.replace("method = \"dr\"", "method = \"fullnat\""));
        assert!(e.contains("fullnat.local_addresses"), "{e}");
    }
}
