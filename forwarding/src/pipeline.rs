//! The pipeline: one frame in, one verdict out.
//!
//! The order of decisions follows IPVS's `ip_vs_in_hook` / `ip_vs_out_hook` (`ip_vs_core.c`,
//! ../shared/IPVS.md §1.4–§5):
//!
//! 1. parse (wire layer); non-IP → `Pass`, broken → `Drop(reason)`; input hygiene
//!    (`hygiene`: L2 address and VLAN, IPv4 options, IPv6 extension headers; martian sources
//!    only before a new connection);
//! 2. ICMP errors: the embedded packet's reversed tuple finds the connection; the error is
//!    translated (NAT, FullNAT) and sent to the other side, or passed when it is not ours;
//!    its checksum is verified first, unusable quotes about a service are dropped with their
//!    reason, IPv4 redirects go to the kernel;
//! 3. connection lookup by the packet's tuple, from either direction (one table, two indexes);
//!    a TCP SYN hitting a TIME_WAIT/CLOSE entry that owns nothing is rescheduled
//!    (`conn_reuse_mode`);
//! 4. on a miss: mark rules and service lookup (none → `Pass`), the protocol gate (TCP needs a
//!    SYN without RST), persistence templates or the scheduler, a new entry (full → drop);
//!    no eligible backend → ICMP port unreachable to the client, as `ip_vs_leave` does;
//! 5. state transition and timer re-arm, then the method's rewrite: NAT (DNAT in, SNAT out),
//!    DR (MAC only), TUN (IPIP / IPv6-in-IPv6), FullNAT (both ends); TTL −1 in every mode;
//!    too big with DF → ICMP frag-needed / packet-too-big back to the sender; too big
//!    without DF → IPv4 fragments (`PipelineConfig::fragment`); TTL 1 toward a backend →
//!    ICMP time exceeded from the VIP (rate-limited, `ratelimit`).
//!
//! An untagged IPv4 TCP / UDP frame tries the established-flow path first (`fast.rs`): the same
//! steps on plain integers for a packet of a connection that changes only its timer, with the
//! same outcome; anything it cannot decide continues here at the step where it stopped.
//!
//! A pipeline is one worker's: it owns its connection table, its traffic and drop counters and
//! its timers; `now` comes in with every call. What the workers of one director share is
//! [`Shared`]: the per-backend connection counts (atomics, written on connection events only)
//! and the published [`Snapshot`], whose services' schedulers are immutable tables (sh, dh, mh,
//! maglev), lock-free (lc, wlc, sed, nq, fo, ovf: they read the shared counts; rr: an atomic
//! cursor) or are locked only to schedule a new connection — so N pipelines decide exactly as one kernel does (see
//! `reload`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use xvs_schedulers::{BackendView, Flow, SchedFlags, SchedulerError};

use crate::conn::{
    state::tcp, Conn, ConnConfig, ConnId, ConnTable, ConnV4, Direction, Method, NewConn, SlotHint,
    TemplateKey, Tuple,
};
use crate::defense::{Defense, DefenseConfig};
use crate::hygiene;
use crate::limits::{Bucket, SourceLimiter};
use crate::net::{Hop, LinkV4, Network};
use crate::ratelimit::IcmpLimiter;
use crate::service::{mask_addr, MarkRule, Service, ServiceId, ServiceKey};
use crate::synproxy::cookie::CookieSecret;
use crate::wire;
use crate::wire::icmp::{self, IcmpAnswer, IcmpNat};
use crate::wire::parse::parse_v4;
use crate::wire::rewrite::{self, Link, Tunnel};
use crate::wire::{parse, proto, tcp_flags, Frag, Packet, Parsed, WireError};
use crate::{BackendId, DropCounters, DropReason, Frame, PortId, Time, Verdict};

mod fast;
mod frags;
mod reload;
mod sync;
mod synproxy;

pub use reload::{ApplyReport, BackendReport, RemovedBackends, ServiceReport, Shared, Snapshot};
pub use sync::{Refused as SyncRefused, SyncCounters};

/// Settings of one worker's pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Connection table capacity (connections + persistence templates).
    pub connections: u32,
    /// How many of them may have IPv6 addresses.
    pub v6_connections: u32,
    /// IPVS `conn_reuse_mode` (0 = off; default 1).
    pub conn_reuse_mode: u8,
    /// IPVS `sloppy_tcp`: a TCP packet without SYN (but without RST) may open a connection.
    pub sloppy_tcp: bool,
    /// `ipvsadm --set tcp tcpfin udp` in seconds (0 keeps the default).
    pub timeouts: (u32, u32, u32),
    /// FullNAT source addresses.
    pub local_addresses: Vec<IpAddr>,
    /// This worker's number and the number of workers: FullNAT local ports are partitioned so
    /// that `lport % workers == worker` (replies can then be steered to the right worker).
    pub worker: u16,
    pub workers: u16,
    /// Hash seed of the connection table.
    pub seed: u64,
    /// Most backends (alive, or removed with connections left) the pipeline tracks.
    pub max_backends: u32,
    /// What happens to connections of removed backends.
    pub removed_backends: RemovedBackends,
    /// Where FullNAT local ports start (then handed out in turn, wrapping). A running director
    /// starts at a random port: backends keep TIME_WAIT for (local address, port) pairs after a
    /// restart, and a SYN that lands on one of them is answered with an ACK instead of a
    /// SYN-ACK (the client's sequence numbers do not follow the rewritten tuple), which stalls
    /// the connection. Offline runs start at 1024 so their output is reproducible.
    pub first_local_port: u16,
    /// Fragment IPv4 packets without DF that exceed the egress MTU (`wire::fragment`; the
    /// packet for NAT / DR / FullNAT, the outer packet for TUN): the frame becomes the first
    /// fragment, the others wait for [`Pipeline::drain_fragments`], which the caller must
    /// call after every frame or batch. Off: such packets are dropped (`needs_fragmentation`).
    pub fragment: bool,
    /// SYN-flood and table-pressure defences (IPVS's `drop_entry`, `drop_packet`,
    /// `secure_tcp`, `amemthresh`; the embryonic budget; strict handshake).
    pub defense: DefenseConfig,
    /// Secret of the SYN proxy's cookies (the same for every worker of a director; random in
    /// a running director, fixed offline).
    pub cookie_secret: CookieSecret,
    /// MSS the SYN proxy announces to clients (IPv4; IPv6 20 less).
    pub synproxy_mss: u16,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            connections: 1 << 16,
            v6_connections: 1 << 14,
            conn_reuse_mode: 1,
            sloppy_tcp: false,
            timeouts: (0, 0, 0),
            local_addresses: Vec::new(),
            worker: 0,
            workers: 1,
            seed: 0x5eed_0fc0_ffee,
            max_backends: 4096,
            removed_backends: RemovedBackends::Drain,
            first_local_port: LPORT_MIN as u16,
            fragment: false,
            defense: DefenseConfig::default(),
            cookie_secret: CookieSecret([0x5eed, 0xc00c, 0x1e5, 0x5ec2]),
            synproxy_mss: 1460,
        }
    }
}

/// Why a pipeline could not be built from a configuration.
#[derive(Debug)]
pub enum BuildError {
    Scheduler {
        service: usize,
        error: SchedulerError,
    },
    TooManyBackends,
    /// More services over the director's life than a connection entry can name.
    TooManyServices,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Scheduler { service, error } => write!(f, "service[{service}]: {error}"),
            BuildError::TooManyBackends => write!(f, "more than 2^24 backends"),
            BuildError::TooManyServices => write!(f, "more than 2^20 services created"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Packet and byte counters of a service or backend (ipvsadm `--stats`). A worker writes its
/// own on every frame; each fills a cache line (64-byte aligned), so that a worker's counters
/// share no line with what other workers read (the snapshot's small arrays, allocated nearby).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(align(64))]
pub struct Traffic {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    /// New connections refused by this service's or backend's `conn_rate`.
    pub rate_limited: u64,
}

impl Traffic {
    fn count(&mut self, dir: Direction, bytes: usize) {
        match dir {
            Direction::In => {
                self.in_pkts += 1;
                self.in_bytes += bytes as u64;
            }
            Direction::Out => {
                self.out_pkts += 1;
                self.out_bytes += bytes as u64;
            }
        }
    }

    pub fn add(&mut self, o: &Traffic) {
        self.conns += o.conns;
        self.in_pkts += o.in_pkts;
        self.out_pkts += o.out_pkts;
        self.in_bytes += o.in_bytes;
        self.out_bytes += o.out_bytes;
        self.rate_limited += o.rate_limited;
    }
}

/// Frame counters of one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
///
/// Every received frame ends in exactly one of `tx`, `pass` or one drop reason:
/// `rx == tx + pass + drops.total()`. A frame answered with an ICMP error counts under its
/// drop reason (its own fate) and the answer, transmitted in its place, under `icmp_answers`.
pub struct Counters {
    pub rx: u64,
    /// Frames forwarded (ICMP answers not included).
    pub tx: u64,
    /// Frames handed to the kernel.
    pub pass: u64,
    pub drops: DropCounters,
    /// ICMP errors the director generated and transmitted (port unreachable, too big, time
    /// exceeded), each in place of a frame counted as a drop.
    pub icmp_answers: u64,
    /// ICMP errors not sent because of the rate limit (see [`crate::ratelimit`]).
    pub icmp_rate_limited: u64,
    /// Fragments queued for [`Pipeline::drain_fragments`] (beyond the first fragment, which
    /// is the frame itself and counted in `tx`).
    pub tx_fragments: u64,
    /// Held later fragments whose first fragment did not come in time (see `DropReason::FragmentHeld`).
    pub fragments_expired: u64,
    /// Embryonic TCP entries evicted to make room for a new SYN (the embryonic budget, or a
    /// full table).
    pub embryonic_evicted: u64,
    /// Entries deleted by the `drop_entry` defence.
    pub defense_dropped: u64,
    /// SYN proxy: SYN-ACKs with a cookie sent (one per SYN answered).
    pub synproxy_syn_acks: u64,
    /// SYN proxy: valid cookies, connections opened toward a backend.
    pub synproxy_opened: u64,
    /// SYN proxy: backends that answered (connections translated from then on).
    pub synproxy_established: u64,
    /// SYN proxy: held segments sent on after the backend answered.
    pub synproxy_released: u64,
    /// SYN proxy: SYNs sent to a backend again (the client retransmitted before the backend
    /// answered).
    pub synproxy_syn_resent: u64,
    /// Client segments without an entry routed statelessly after evictions
    /// (`DefenseConfig::stateless_ack_secs`).
    pub stateless_acks: u64,
    /// SYN proxy: SYNs sent to a backend again by the director's own timer (no SYN-ACK within
    /// `DefenseConfig::synproxy_syn_interval_ms`).
    pub synproxy_syn_retried: u64,
    /// SYN proxy: connections given up after the last retry (the client was sent a RST).
    pub synproxy_gave_up: u64,
    /// SYN proxy: connections opened without a retry timer (the timer queue, one entry per
    /// table slot, was full of live timers).
    pub synproxy_timer_full: u64,
}

/// What the pipeline did with the last frame that reached a service (for `xvs replay`,
/// `xvs simulate` and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub service: ServiceId,
    pub backend: BackendId,
    pub method: Method,
    pub direction: Direction,
    /// A connection was created (or, for one-packet scheduling, scheduled) by this frame.
    pub new_conn: bool,
}

/// A backend as the snapshot holds it. Read by every worker for every new connection, so
/// each fills a cache line of its own (64-byte aligned): no worker's writes nearby in the
/// heap take it away from the others.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct BackendRt {
    addr: IpAddr,
    port: u16,
    method: Method,
    weight: u32,
    last_weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    /// New connections per second, director-wide (0: none).
    conn_rate: u32,
    /// Deleted from the desired state; kept while connections refer to it.
    removed: bool,
    /// The generation of the snapshot that gave this id to this backend.
    since: u64,
}

/// A service as the snapshot holds it; 64-byte aligned as [`BackendRt`] is.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct ServiceRt {
    key: ServiceKey,
    persistence: Option<crate::service::Persistence>,
    one_packet: bool,
    synproxy: bool,
    /// New connections per second, director-wide (0: none).
    conn_rate: u32,
    /// Backends in IPVS list order (newest first).
    views: Vec<BackendView>,
    /// Shared by every worker (and by snapshots while the list is unchanged).
    scheduler: reload::SharedScheduler,
    scheduler_name: String,
    sched_flags: SchedFlags,
    /// Deleted from the desired state (never found for new connections).
    removed: bool,
}

/// The forwarding pipeline of one worker. It fills whole cache lines of its own (64-byte
/// aligned): its fields are written on every frame, and whatever another worker reads on every
/// frame (the snapshot, say, or another pipeline) must not share a line with them.
#[derive(Debug)]
#[repr(align(64))]
pub struct Pipeline {
    /// The published state this worker runs.
    snap: Arc<Snapshot>,
    /// What this worker shares with the others of its director.
    shared: Arc<Shared>,
    net: Network,
    conns: ConnTable,
    cfg: PipelineConfig,
    counters: Counters,
    service_traffic: Vec<Traffic>,
    backend_traffic: Vec<Traffic>,
    last: Option<Decision>,
    /// IPv4 identification for TUN outer headers without DF.
    ip_id: u16,
    /// Next FullNAT local port to try.
    lport_cursor: u32,
    /// Each backend's next hop as last resolved, indexed by `BackendId` (grown on first use,
    /// at most `max_backends`): saves the route scan and neighbour lookup per packet.
    hops: Vec<CachedHop>,
    /// Rate limit of the ICMP errors this worker generates.
    icmp_limit: IcmpLimiter,
    /// The last frame was replaced by an ICMP answer; its drop reason.
    answered: Option<DropReason>,
    /// Fragments after the first, waiting for `drain_fragments`: their bytes, and each one's
    /// port and range in them.
    frag_bytes: Vec<u8>,
    frag_frames: Vec<(PortId, std::ops::Range<usize>)>,
    frag_scratch: Vec<std::ops::Range<usize>>,
    /// Connection sync, master side: what to send (`None`: not a master).
    sync_master: Option<Box<sync::Master>>,
    sync_counters: SyncCounters,
    /// Where each recent fragmented datagram went, and later fragments held for their first.
    frags: Box<frags::Frags<Target>>,
    /// IPVS's defence strategies.
    defense: Defense,
    /// Most embryonic TCP entries (`DefenseConfig::embryonic_share` of the table).
    embryonic_max: u32,
    /// When the defence level was last updated (ms), `None` before the first housekeeping.
    defense_at: Option<u32>,
    /// When the embryonic budget last evicted an entry (ms), `None` before the first eviction.
    evicted_at: Option<u32>,
    /// Slots the `drop_entry` scan still has to look at this second.
    drop_scan_left: u32,
    /// The SYN proxy's per-connection state (by connection slot; allocated at the first SYN
    /// to a SYN-proxied service) and held segments.
    proxy: synproxy::Proxy,
    /// New connections per source prefix (`DefenseConfig::source_rate`).
    source_limit: Option<SourceLimiter>,
    /// This worker's rate limiters of each service and backend (by id): the rate and backend
    /// generation they were made for, and the bucket. Kept in step with the snapshot by
    /// [`Self::install`].
    svc_limits: Vec<Option<(u32, u64, Bucket)>>,
    backend_limits: Vec<Option<(u32, u64, Bucket)>>,
    /// Whether frames may take the established-flow path (`fast`); off only to compare.
    fast_path: bool,
    /// Live connections from which `process_batch` prefetches ([`PREFETCH_FROM`]).
    prefetch_from: u32,
}

/// A backend's next hop, valid while the network's generation and the address are unchanged.
#[derive(Clone, Copy, Debug)]
struct CachedHop {
    generation: u64,
    addr: IpAddr,
    hop: Option<Hop>,
    /// The same hop for the established-flow path, when `addr` is IPv4 and the hop untagged.
    fast: Option<FastHop>,
}

impl CachedHop {
    /// Never valid: no network has generation 0.
    const EMPTY: CachedHop = CachedHop {
        generation: 0,
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        hop: None,
        fast: None,
    };
}

/// An untagged next hop toward an IPv4 address, as the established-flow path uses it.
#[derive(Clone, Copy, Debug)]
struct FastHop {
    /// The address (host order).
    addr: u32,
    link: LinkV4,
    /// The IPv4 address of the hop's port (host order), if it has one: a tunnel's outer
    /// source. Ports change only with the whole network, which changes its generation.
    port_v4: Option<u32>,
}

/// The fate of a packet whose connection's backend may have been removed.
enum Gone {
    /// The backend is there.
    No,
    /// Removed; the connection drains: forward.
    Drain,
    /// Removed; drop the packet (IPVS, `expire_nodest_conn = 0`).
    Drop,
    /// Removed; the entry was expired, treat the packet as new (`expire_nodest_conn = 1`).
    Expired,
}

/// `now` in wrapping milliseconds.
#[inline]
fn ms32(now: Time) -> u32 {
    (now.0 / 1_000_000) as u32
}

/// Frames per prefetch round of [`Pipeline::process_batch`] (AF_XDP rings hand out batches of
/// about this size; 32 slots' loads fit in the CPU's miss buffers).
pub const BATCH: usize = 32;

/// Live connections from which [`Pipeline::process_batch`] loads a batch's table slots
/// before processing its frames, unless [`Pipeline::set_batch_prefetch_from`] says otherwise. Each connection's frames touch about three cache lines (its
/// two index slots and its entry), so below this many the table's working set (≤ ~3 MiB) is
/// mostly cache resident and the extra passes cost more instructions than the misses they
/// overlap.
pub const PREFETCH_FROM: u32 = 16_384;

/// The type of the first chunk of an SCTP packet (after the 12-byte common header).
fn first_sctp_chunk(data: &[u8], p: &Packet) -> Option<u8> {
    data.get(p.l4 + 12)
        .copied()
        .filter(|_| p.l4 + 12 < p.ip_end)
}

/// Most fragments [`Pipeline::drain_fragments`] may have to send (a batch of 64 KiB packets
/// on a 1500-byte MTU fits).
const MAX_PENDING_FRAGMENTS: usize = 2048;

/// FullNAT local ports are taken from this range.
const LPORT_MIN: u32 = 1024;
const LPORT_MAX: u32 = 65535;
/// How many local ports a new FullNAT connection may try before giving up.
const LPORT_TRIES: u32 = 64;
/// Slots of the `drop_entry` scan per housekeeping call.
const DROP_SCAN_STEP: u32 = 256;
/// Ring items [`ConnTable::evict_embryonic`] may look at for one new SYN.
const EVICT_BUDGET: u32 = 64;

impl Pipeline {
    /// Build a single worker's pipeline, a director of its own. `services[i]` is
    /// `ServiceId(i)`; its backends get consecutive `BackendId`s in configuration order.
    pub fn new(
        cfg: PipelineConfig,
        services: &[Service],
        mark_rules: Vec<MarkRule>,
        net: Network,
    ) -> Result<Pipeline, BuildError> {
        let shared = Arc::new(Self::shared_for(&cfg, services)?);
        let mut p = Self::with_shared(cfg, shared, net);
        // As `ipvsadm -R` would build it: each service, then its backends one at a time, so
        // `services[i]` is `ServiceId(i)` and backends get consecutive ids in file order.
        p.apply(services, mark_rules)?;
        Ok(p)
    }

    /// The state the workers of one director share, for `services` (room for
    /// `cfg.max_backends` backends, or as many as `services` has if more; a row of counts for
    /// each of `cfg.workers` workers). Apply the services
    /// to it ([`Shared::apply`]) and build each worker with [`Self::with_shared`].
    pub fn shared_for(cfg: &PipelineConfig, services: &[Service]) -> Result<Shared, BuildError> {
        let total: usize = services.iter().map(|s| s.backends.len()).sum();
        // A connection entry holds a backend number of 24 bits.
        let max_backends = u32::try_from(total)
            .ok()
            .map(|t| t.max(cfg.max_backends))
            .filter(|&t| t <= crate::conn::MAX_BACKEND + 1)
            .ok_or(BuildError::TooManyBackends)?;
        Ok(Shared::with_workers(max_backends, cfg.workers))
    }

    /// Build one worker's pipeline of a director whose workers share `shared`; it runs the
    /// director's current snapshot.
    pub fn with_shared(cfg: PipelineConfig, shared: Arc<Shared>, net: Network) -> Pipeline {
        let max_backends = shared.max_backends();
        let mut conns = ConnTable::with_counts(
            &ConnConfig {
                capacity: cfg.connections,
                v6_capacity: cfg.v6_connections.min(cfg.connections),
                backends: max_backends,
                seed: cfg.seed,
            },
            shared.worker_counts(cfg.worker),
        );
        let (t, tf, u) = cfg.timeouts;
        conns.set_timeouts(t, tf, u);
        conns.set_strict_handshake(cfg.defense.strict_handshake);
        // 0: no budget, no eviction (`make_room` is not called).
        let share = u64::from(cfg.defense.embryonic_share.min(100));
        let embryonic_max = (u64::from(conns.capacity()) * share / 100).max(1) as u32;
        let workers = u32::from(cfg.workers.max(1));
        let worker = u32::from(cfg.worker) % workers;
        let snap = shared.current();
        let mut p = Pipeline {
            snap: Arc::new(reload::Snapshot::empty()),
            shared,
            service_traffic: Vec::new(),
            backend_traffic: Vec::new(),
            net,
            conns,
            counters: Counters::default(),
            last: None,
            ip_id: 0,
            lport_cursor: {
                // The first port ≥ first_local_port (in range) in this worker's residue class.
                let start = u32::from(cfg.first_local_port).clamp(LPORT_MIN, LPORT_MAX);
                let mut p = start + (worker + workers - start % workers) % workers;
                if p > LPORT_MAX {
                    p = LPORT_MIN + (worker + workers - LPORT_MIN % workers) % workers;
                }
                p
            },
            hops: Vec::new(),
            icmp_limit: IcmpLimiter::new(cfg.workers),
            answered: None,
            frag_bytes: Vec::new(),
            frag_frames: Vec::new(),
            frag_scratch: Vec::new(),
            sync_master: None,
            sync_counters: SyncCounters::default(),
            frags: Box::new(frags::Frags::new()),
            defense: Defense::new(&cfg.defense),
            embryonic_max,
            defense_at: None,
            drop_scan_left: 0,
            evicted_at: None,
            proxy: synproxy::Proxy::default(),
            source_limit: source_limiter(&cfg, &cfg.defense),
            svc_limits: Vec::new(),
            backend_limits: Vec::new(),
            fast_path: true,
            prefetch_from: PREFETCH_FROM,
            cfg: PipelineConfig {
                max_backends,
                ..cfg
            },
        };
        p.install(snap);
        p
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn service_traffic(&self) -> &[Traffic] {
        &self.service_traffic
    }

    pub fn backend_traffic(&self) -> &[Traffic] {
        &self.backend_traffic
    }

    pub fn connections(&self) -> &ConnTable {
        &self.conns
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The neighbour table is the control plane's to fill.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    /// What happened to the last frame, if it reached a service.
    pub fn last_decision(&self) -> Option<Decision> {
        self.last
    }

    /// The drop reason of the last frame if it was replaced by an ICMP answer (its verdict
    /// then is `Tx` toward the sender).
    pub fn last_answer(&self) -> Option<DropReason> {
        self.answered
    }

    /// Hand every queued fragment (see [`PipelineConfig::fragment`]) to `send`, in order,
    /// with its egress port; the queue is empty afterwards. A frame's further fragments
    /// are to be sent after the frame itself.
    pub fn drain_fragments(&mut self, mut send: impl FnMut(PortId, &[u8])) {
        for (port, r) in self.frag_frames.drain(..) {
            if let Some(b) = self.frag_bytes.get(r) {
                send(port, b);
            }
        }
        self.frag_bytes.clear();
    }

    /// Fragments queued and not yet drained.
    pub fn pending_fragments(&self) -> usize {
        self.frag_frames.len()
    }

    /// Make the frame (a whole IPv4 packet, or an IPv6 one the director built — a tunnel's
    /// outer header — behind its link header) the first of its fragments for `port`'s `mtu`
    /// and queue the others.
    fn fragment(&mut self, frame: &mut Frame, port: PortId, mtu: u16) -> Verdict {
        if self.frag_frames.len() >= MAX_PENDING_FRAGMENTS {
            return Verdict::Drop(DropReason::FragmentQueueFull);
        }
        let Parsed::Ip(p) = parse(frame.data()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let mut ranges = std::mem::take(&mut self.frag_scratch);
        ranges.clear();
        let start = self.frag_bytes.len();
        let r = if p.is_v4() {
            crate::wire::fragment::fragment_v4(
                frame.data(),
                &p,
                mtu,
                &mut self.frag_bytes,
                &mut ranges,
            )
        } else {
            self.ip_id = self.ip_id.wrapping_add(1);
            let id = u32::from(self.ip_id) | u32::from(self.cfg.worker) << 16;
            crate::wire::fragment::fragment_v6(
                frame.data(),
                &p,
                mtu,
                id,
                &mut self.frag_bytes,
                &mut ranges,
            )
        };
        let v = match (r, ranges.first().cloned()) {
            (Ok(()), Some(first)) => {
                let n = first.len();
                // The first fragment is shorter than the frame: it fits in place.
                if n <= frame.len() && frame.set_len(n) {
                    frame.data_mut().copy_from_slice(&self.frag_bytes[first]);
                    for r in &ranges[1..] {
                        self.frag_frames.push((port, r.clone()));
                    }
                    self.counters.tx_fragments += (ranges.len() - 1) as u64;
                    Verdict::Tx(port)
                } else {
                    self.frag_bytes.truncate(start);
                    Verdict::Drop(DropReason::NoHeadroom)
                }
            }
            (Err(e), _) => {
                self.frag_bytes.truncate(start);
                Verdict::Drop(e.drop_reason())
            }
            (Ok(()), None) => Verdict::Drop(DropReason::Malformed),
        };
        self.frag_scratch = ranges;
        v
    }

    /// Periodic work: expire due connections, at most about `budget` units of work; the SYN
    /// proxy's retry timers (SYNs sent again, or RSTs to clients of silent backends, queued
    /// for [`Self::drain_fragments`]).
    pub fn housekeeping(&mut self, now: Time, budget: u32) -> u32 {
        if self.frags.held() > 0 {
            self.counters.fragments_expired += self.frags.expire(ms32(now)) as u64;
        }
        self.defend(now);
        if self.proxy.has_timers() {
            self.synproxy_timers(now);
        }
        self.conns.expire(now, budget)
    }

    /// Once a second, IPVS's `defense_work_handler`: update the defence level from the free
    /// entries of the table and, while `drop_entry` is on, queue a random scan of 1/32 of the
    /// table, done [`DROP_SCAN_STEP`] slots per call so no call takes long.
    fn defend(&mut self, now: Time) {
        let ms = ms32(now);
        let due = self
            .defense_at
            .is_none_or(|t| ms.wrapping_sub(t) as i32 >= 1000);
        if due {
            self.defense_at = Some(ms);
            let free = self.conns.capacity() - self.conns.len();
            if let Some(on) = self.defense.update(free) {
                self.conns.set_secure_tcp(on);
            }
            self.drop_scan_left = if self.defense.dropentry {
                (self.conns.capacity() / 32).max(1)
            } else {
                0
            };
        }
        if self.drop_scan_left > 0 {
            let n = self.drop_scan_left.min(DROP_SCAN_STEP);
            self.drop_scan_left -= n;
            self.counters.defense_dropped += u64::from(self.conns.drop_random_entries(now, n));
        }
    }

    /// The defence strategies' current state (modes as the sysctls would read now).
    pub fn defense(&self) -> &Defense {
        &self.defense
    }

    /// Make room for a new TCP connection: while the embryonic entries are at their budget or
    /// fewer than `need` slots are free, evict the oldest embryonic entry. Returns false when
    /// the budget is reached and nothing could be evicted.
    fn make_room(&mut self, now: Time, need: u32) -> bool {
        for _ in 0..need.max(1) {
            let full = self.conns.capacity() - self.conns.len() < need;
            let over = self.conns.embryonic() >= self.embryonic_max;
            if !full && !over {
                return true;
            }
            if !self.conns.evict_embryonic(now, EVICT_BUDGET) {
                // Over budget with nothing to evict is refused; a full table is left to the
                // insert, which reports it.
                return !over;
            }
            self.counters.embryonic_evicted += 1;
            self.evicted_at = Some(ms32(now));
        }
        true
    }

    /// Turn one frame into a verdict. The frame is rewritten in place (and may grow into its
    /// headroom for TUN); `ingress` is the port it arrived on.
    pub fn process(&mut self, now: Time, ingress: PortId, frame: &mut Frame) -> Verdict {
        self.process_inline(now, ingress, None, frame)
    }

    /// The MAC address word ([`mac_word`](crate::net::mac_word)) frames arriving on `ingress`
    /// must be sent to, 0 for any (not known, or no such port): what the established-flow
    /// path's L2 check compares with.
    #[inline(always)]
    fn port_mac(&self, ingress: PortId) -> u64 {
        self.net.port_mac_word(ingress).unwrap_or(0)
    }

    /// [`Self::process`], inlined into its callers ([`Self::process_batch`]'s loop); `mac`:
    /// [`Self::port_mac`] of `ingress` if the caller has it (else looked up here).
    #[inline(always)]
    fn process_inline(
        &mut self,
        now: Time,
        ingress: PortId,
        mac: Option<u64>,
        frame: &mut Frame,
    ) -> Verdict {
        match parse_v4(frame.data()).filter(|_| self.fast_path) {
            Some(f) => {
                let mac = mac.unwrap_or_else(|| self.port_mac(ingress));
                let h = self.conns.hash_v4(f.proto, f.src, f.sport, f.dst, f.dport);
                self.process_v4(now, ingress, mac, frame, f, h)
            }
            None => self.process_other(now, ingress, frame),
        }
    }

    /// Let frames take the established-flow path (on, the default) or send every frame through
    /// the full pipeline (off). Both give the same verdicts, frames, counters and connection
    /// state (`fast_path_equivalence` in `tests/pipeline_fastpath.rs`); off exists to compare
    /// the two.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// The live connections from which [`Self::process_batch`] loads a batch's table slots
    /// first ([`PREFETCH_FROM`] unless set): 0 always, `u32::MAX` never. Either way the
    /// verdicts, frames, counters and state are the same; only the instructions and the
    /// overlap of cache misses differ.
    pub fn set_batch_prefetch_from(&mut self, live: u32) {
        self.prefetch_from = live;
    }

    /// [`Self::process`] with the ingress port's MAC word looked up by the caller, out of line
    /// for [`Self::process_batch`]'s loop (its own registers).
    #[inline(never)]
    fn process_with_mac(
        &mut self,
        now: Time,
        ingress: PortId,
        mac: u64,
        frame: &mut Frame,
    ) -> Verdict {
        self.process_inline(now, ingress, Some(mac), frame)
    }

    /// `process_v4` out of line for [`Self::process_batch`]'s loop (its own registers).
    #[inline(never)]
    fn process_v4_batched(
        &mut self,
        now: Time,
        ingress: PortId,
        mac: u64,
        frame: &mut Frame,
        f: wire::parse::FastV4,
        h: u32,
    ) -> Verdict {
        self.process_v4(now, ingress, mac, frame, f, h)
    }

    /// [`Self::process`] for a frame the established-flow path's reader does not take.
    #[cold]
    #[inline(never)]
    fn process_other(&mut self, now: Time, ingress: PortId, frame: &mut Frame) -> Verdict {
        let parsed = parse(frame.data());
        self.process_parsed(now, ingress, frame, parsed)
    }

    /// Turn a batch of frames that arrived on `ingress` into verdicts: `verdicts[i]` for
    /// `frames[i]`, for the first `min(frames.len(), verdicts.len())` frames. Same verdicts,
    /// frames, counters and connection state as [`Self::process`] on each frame in order. With
    /// at least [`PREFETCH_FROM`] live connections the connection-table slots of up to [`BATCH`]
    /// frames are loaded first ([`ConnTable::slot_hint`] and its two prefetch passes), so their
    /// cache misses overlap instead of following one another; with fewer, each frame is
    /// [`Self::process`]ed in turn. [`Self::last_decision`] describes the last frame.
    pub fn process_batch(
        &mut self,
        now: Time,
        ingress: PortId,
        frames: &mut [Frame],
        verdicts: &mut [Verdict],
    ) {
        let n = frames.len().min(verdicts.len());
        // Looked up once for the batch (the network changes only with `install`).
        let mac = self.port_mac(ingress);
        if self.conns.len() < self.prefetch_from {
            for (f, v) in frames[..n].iter_mut().zip(verdicts[..n].iter_mut()) {
                *v = self.process_with_mac(now, ingress, mac, f);
            }
            return;
        }
        for (frames, verdicts) in frames[..n]
            .chunks_mut(BATCH)
            .zip(verdicts.chunks_mut(BATCH))
        {
            // The established-flow path's reader first (see `fast`); the other frames are
            // parsed here for their hint only and again when processed (rare frames: IPv6,
            // tagged, ICMP, …).
            let mut fast = [None; BATCH];
            let mut hints = [SlotHint::default(); BATCH];
            for ((f, v4), hint) in frames.iter().zip(fast.iter_mut()).zip(hints.iter_mut()) {
                *v4 = parse_v4(f.data()).filter(|_| self.fast_path);
                *hint = match v4 {
                    Some(f) => self
                        .conns
                        .slot_hint_v4(f.proto, f.src, f.sport, f.dst, f.dport),
                    None => self.other_hint(f.data()),
                };
            }
            // Tight loops of loads, so that many of them are in flight at once (a load that
            // misses holds its place in the CPU's reorder buffer: in the parse loop above, a
            // few frames' misses would fill it): the index slots of the whole batch, then the
            // entries they name.
            for hint in &mut hints[..frames.len()] {
                self.conns.prefetch_slot(hint);
            }
            for hint in &hints[..frames.len()] {
                self.conns.prefetch_entry(*hint);
            }
            // The hash of a `parse_v4` frame's tuple is its hint's; the index slot is loaded
            // again (frames before it may have changed the index).
            for (((f, v), v4), hint) in frames
                .iter_mut()
                .zip(verdicts.iter_mut())
                .zip(&fast)
                .zip(&hints)
            {
                *v = match *v4 {
                    Some(v4) => self.process_v4_batched(now, ingress, mac, f, v4, hint.hash()),
                    None => self.process_other(now, ingress, f),
                };
            }
        }
    }

    /// The slot hint of a frame the established-flow path's reader does not take (nothing
    /// for one without a connection tuple).
    #[cold]
    #[inline(never)]
    fn other_hint(&self, data: &[u8]) -> SlotHint {
        match parse(data) {
            Parsed::Ip(p) if !p.icmp_error && p.has_ports() => self.conns.slot_hint(&Tuple {
                proto: p.proto,
                src: p.src,
                sport: p.sport,
                dst: p.dst,
                dport: p.dport,
            }),
            _ => SlotHint::default(),
        }
    }

    /// [`Self::process`] after the parse.
    #[inline]
    fn process_parsed(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        parsed: Parsed,
    ) -> Verdict {
        self.last = None;
        self.answered = None;
        self.counters.rx += 1;
        let v = self.verdict(now, ingress, frame, parsed);
        self.account(v)
    }

    /// Count a frame's verdict (every frame ends in exactly one of tx, pass or a drop reason;
    /// a frame answered with ICMP counts under its drop reason, the answer as an ICMP answer).
    #[inline(always)]
    fn account(&mut self, v: Verdict) -> Verdict {
        match v {
            Verdict::Tx(_) => match self.answered {
                None => self.counters.tx += 1,
                Some(r) => {
                    self.counters.drops.bump(r);
                    self.counters.icmp_answers += 1;
                }
            },
            Verdict::Pass => self.counters.pass += 1,
            Verdict::Drop(r) => self.counters.drops.bump(r),
        }
        v
    }

    fn verdict(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        parsed: Parsed,
    ) -> Verdict {
        let p = match parsed {
            Parsed::Ip(p) => p,
            Parsed::NotIp => return Verdict::Pass,
            Parsed::Invalid(e) => return Verdict::Drop(e.drop_reason()),
        };
        // Input hygiene (`hygiene`): L2 address and VLAN, IPv4 options, IPv6 extension
        // headers; a few compares for the common frame.
        let port = self.net.port(ingress);
        let port_mac = port.map(|p| p.mac).filter(|m| *m != [0; 6]);
        let vlans = p.vlan.and_then(|_| self.net.vlans(ingress));
        match hygiene::l2(frame.data(), &p, port_mac, vlans) {
            hygiene::L2::Accept => {}
            hygiene::L2::Pass => return Verdict::Pass,
            hygiene::L2::Drop(r) => return Verdict::Drop(r),
        }
        if hygiene::has_options(&p) {
            let checked = if p.is_v4() {
                hygiene::ipv4_options(frame.data(), &p)
            } else {
                hygiene::ipv6_chain(frame.data(), &p)
            };
            if let Err(r) = checked {
                return Verdict::Drop(r);
            }
        }
        if p.proto == proto::UDP
            && !p.is_v4()
            && p.has_l4_header()
            && frame.data().get(p.l4 + 6..p.l4 + 8) == Some(&[0, 0])
            && self.is_service_addr(p.proto, p.dst)
        {
            return Verdict::Drop(DropReason::UdpZeroChecksum);
        }
        if p.icmp_error {
            return self.icmp_error(now, ingress, frame, p);
        }
        if p.frag == Frag::Later && matches!(p.proto, proto::TCP | proto::UDP | proto::SCTP) {
            return self.later_fragment(now, ingress, frame, p);
        }
        if !p.has_ports() {
            // Later fragments of other protocols carry nothing to match a connection with.
            if p.frag == Frag::Later && self.is_service_addr(p.proto, p.dst) {
                return Verdict::Drop(DropReason::Fragment);
            }
            return Verdict::Pass;
        }
        let hit = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let (s, d) = (s.to_bits(), d.to_bits());
                self.conns.lookup_v4(p.proto, s, p.sport, d, p.dport, now)
            }
            _ => {
                let tuple = Tuple {
                    proto: p.proto,
                    src: p.src,
                    sport: p.sport,
                    dst: p.dst,
                    dport: p.dport,
                };
                self.conns.lookup(&tuple, now)
            }
        };
        match hit {
            Some((id, dir)) => self.hit(now, ingress, frame, p, id, dir),
            None => self.new_connection(now, ingress, frame, p),
        }
    }

    /// Records `d` as the last decision and counts `bytes` for its service and backend.
    #[inline(always)]
    fn record(&mut self, d: Decision, bytes: usize) {
        if let Some(t) = self.service_traffic.get_mut(d.service.0 as usize) {
            t.count(d.direction, bytes);
        }
        if let Some(t) = self.backend_traffic.get_mut(d.backend.0 as usize) {
            t.count(d.direction, bytes);
        }
        self.last = Some(d);
    }

    /// A packet that found connection `id` in direction `dir`.
    fn hit(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        id: ConnId,
        dir: Direction,
    ) -> Verdict {
        match dir {
            Direction::Out => {
                if self.conns.is_synproxy(id) {
                    return self.synproxy_conn(now, ingress, frame, p, id, dir);
                }
                self.forward(now, ingress, frame, p, id, dir, false)
            }
            Direction::In => {
                match self.removed_backend(id, now) {
                    Gone::No | Gone::Drain => {}
                    Gone::Drop => return Verdict::Drop(DropReason::BackendGone),
                    Gone::Expired => return self.new_connection(now, ingress, frame, p),
                }
                if self.reuse_port(id, &p, now) {
                    return self.new_connection(now, ingress, frame, p);
                }
                if self.conns.is_synproxy(id) {
                    return self.synproxy_conn(now, ingress, frame, p, id, dir);
                }
                self.forward(now, ingress, frame, p, id, dir, false)
            }
        }
    }

    /// What to do with a packet of connection `id` if its backend was removed.
    #[inline]
    fn removed_backend(&mut self, id: ConnId, now: Time) -> Gone {
        let Some(b) = self.conns.backend(id) else {
            return Gone::No;
        };
        if !self
            .snap
            .backends
            .get(b.0 as usize)
            .is_some_and(|b| b.removed)
        {
            return Gone::No;
        }
        match self.cfg.removed_backends {
            RemovedBackends::Drain => Gone::Drain,
            RemovedBackends::Drop => Gone::Drop,
            RemovedBackends::Expire => {
                self.conns.expire_now(id, now);
                Gone::Expired
            }
        }
    }

    /// IPVS port reuse (`conn_reuse_mode`): a SYN hitting a closed entry that owns nothing
    /// expires it and is scheduled anew. Returns true when the entry was expired.
    #[inline]
    fn reuse_port(&mut self, id: ConnId, p: &Packet, now: Time) -> bool {
        if p.proto != proto::TCP
            || p.tcp_flags & (tcp_flags::SYN | tcp_flags::RST) != tcp_flags::SYN
            || self.cfg.conn_reuse_mode == 0
        {
            return false;
        }
        self.reuse_closed(id, now)
    }

    /// [`Self::reuse_port`] for a SYN: expire the entry if it is closed and owns nothing.
    fn reuse_closed(&mut self, id: ConnId, now: Time) -> bool {
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        let noout = c.flags & crate::conn::flags::NOOUTPUT != 0;
        let reuse = c.control.is_none()
            && (matches!(c.state, tcp::TIME_WAIT | tcp::CLOSE)
                || (c.state == tcp::FIN_WAIT && noout && self.cfg.conn_reuse_mode & 2 != 0));
        if reuse {
            self.conns.expire_now(id, now);
        }
        reuse
    }

    fn is_service_addr(&self, proto: u8, dst: IpAddr) -> bool {
        self.snap.vips.contains(&dst)
            || self.snap.mark_rules.iter().any(|r| {
                r.proto.is_none_or(|p| p == proto)
                    && crate::service::prefix_match(r.dst, r.dst_prefix_len, dst)
            })
    }

    fn new_connection(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
    ) -> Verdict {
        let mark = self.snap.services.mark(p.proto, p.dst, p.dport);
        let Some(sid) = self.snap.services.find(mark, p.proto, p.dst, p.dport) else {
            return Verdict::Pass;
        };
        if let Some(r) = hygiene::martian(&p, &self.snap.vips) {
            return Verdict::Drop(r);
        }
        let svc = &self.snap.svcs[sid.0 as usize];
        let (synproxy, persistent, one_packet) =
            (svc.synproxy, svc.persistence.is_some(), svc.one_packet);
        if p.proto == proto::TCP && synproxy {
            return self.synproxy_new(now, ingress, frame, p, sid);
        }
        // Protocol gate (`tcp_conn_schedule`, `sctp_conn_schedule`): only a SYN without RST
        // opens a TCP connection (with `sloppy_tcp` any packet without RST), only an INIT
        // chunk an SCTP association.
        if p.proto == proto::TCP
            && (p.tcp_flags & tcp_flags::RST != 0
                || (p.tcp_flags & tcp_flags::SYN == 0 && !self.cfg.sloppy_tcp))
        {
            if p.tcp_flags & tcp_flags::RST == 0 {
                if let Some(v) = self.stateless(now, ingress, frame, &p, sid) {
                    return v;
                }
            }
            return Verdict::Drop(DropReason::NoConnection);
        }
        if p.proto == proto::SCTP
            && first_sctp_chunk(frame.data(), &p) != Some(crate::conn::state::sctp::CHUNK_INIT)
        {
            return Verdict::Drop(DropReason::NoConnection);
        }
        // `ip_vs_todrop` (the `drop_packet` defence).
        if self.defense.todrop() {
            return Verdict::Drop(DropReason::DefenseDropPacket);
        }
        // `ip_vs_schedule`: FTP active data from the client side is never scheduled.
        if p.sport == 20 {
            return Verdict::Pass;
        }
        // The embryonic budget: a SYN recycles the oldest half-open entry rather than finding
        // the table full (a persistent service may need a template too).
        if p.proto == proto::TCP && self.cfg.defense.embryonic_share > 0 {
            let need = if persistent { 2 } else { 1 };
            // `make_room`'s own first test, inline: room and under budget needs no call.
            let full = self.conns.capacity() - self.conns.len() < need;
            let over = self.conns.embryonic() >= self.embryonic_max;
            if (full || over) && !self.make_room(now, need) {
                return Verdict::Drop(DropReason::EmbryonicLimit);
            }
        }
        let new = match self.schedule_conn(now, ingress, frame, &p, sid) {
            Ok(n) => n,
            Err(v) => return v,
        };
        let (backend, control) = (new.backend, new.control);
        self.service_traffic[sid.0 as usize].conns += 1;
        self.backend_traffic[backend.0 as usize].conns += 1;
        if one_packet && p.proto == proto::UDP {
            // One-packet scheduling: no entry is kept (IPVS frees it right after the packet).
            self.release_template(control, now);
            if self.sync_master.is_some() {
                // Not sent itself, but its template is considered.
                self.sync_conn(None, control, now);
            }
            let c = Target::from(&one_packet_conn(&new));
            return self.rewrite(now, ingress, frame, p, &c, Direction::In, true);
        }
        // The entry and its first packet's accounting in one step (`insert` + `on_packet`).
        let event = Self::event(frame, &p);
        let Some(id) = self.conns.open(&new, event, now) else {
            self.release_template(control, now);
            return Verdict::Drop(DropReason::TableFull);
        };
        self.forward_accounted(now, ingress, frame, p, id, Direction::In, true)
    }

    /// A client's TCP segment without SYN and without an entry, soon after the embryonic budget
    /// evicted entries: routed without an entry when service `sid` is DR or TUN, has no
    /// persistence and a scheduler that picks by the packet alone
    /// (`DefenseConfig::stateless_ack_secs`). `None`: not eligible (the caller drops it).
    fn stateless(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: &Packet,
        sid: ServiceId,
    ) -> Option<Verdict> {
        let window = self.cfg.defense.stateless_ack_secs.saturating_mul(1000);
        let at = self.evicted_at?;
        if window == 0 || ms32(now).wrapping_sub(at) > window {
            return None;
        }
        let svc = self.snap.svcs.get(sid.0 as usize)?;
        if svc.persistence.is_some() || !svc.scheduler.is_table() {
            return None;
        }
        let flow = Flow {
            proto: p.proto,
            src: p.src,
            sport: p.sport,
            dst: p.dst,
            dport: p.dport,
        };
        let backend = self.pick(sid, &flow, now)?;
        let b = self.snap.backends.get(backend.0 as usize)?;
        if !matches!(b.method, Method::Dr | Method::Tunnel) {
            return None;
        }
        let c = Target {
            service: sid.0,
            backend,
            method: b.method,
            client: p.src,
            cport: p.sport,
            vaddr: p.dst,
            vport: p.dport,
            daddr: b.addr,
            dport: if b.port != 0 { b.port } else { p.dport },
            local: None,
        };
        self.counters.stateless_acks += 1;
        Some(self.rewrite(now, ingress, frame, *p, &c, Direction::In, false))
    }

    /// Choose the backend of a new connection of service `sid` (persistence template or
    /// scheduler; FullNAT local address and port): the entry to insert, or the verdict when
    /// there is none (an ICMP answer, or a drop).
    #[inline(always)]
    fn schedule_conn(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: &Packet,
        sid: ServiceId,
    ) -> Result<NewConn, Verdict> {
        // New-connection rate limits (`limits`): the source prefix, then the service.
        let now_ms = ms32(now);
        if let Some(l) = self.source_limit.as_mut() {
            if !l.allow(p.src, now_ms) {
                return Err(Verdict::Drop(DropReason::SourceRateLimit));
            }
        }
        if let Some(Some((_, _, b))) = self.svc_limits.get_mut(sid.0 as usize) {
            if !b.allow(now_ms) {
                if let Some(t) = self.service_traffic.get_mut(sid.0 as usize) {
                    t.rate_limited += 1;
                }
                return Err(Verdict::Drop(DropReason::ServiceRateLimit));
            }
        }
        let svc = &self.snap.svcs[sid.0 as usize];
        let svc_port = svc.key.port();
        let flow = Flow {
            proto: p.proto,
            src: p.src,
            sport: p.sport,
            dst: p.dst,
            dport: p.dport,
        };
        let (backend, control, dport) = if let Some(pers) = svc.persistence {
            match self.schedule_persistent(sid, &flow, pers, now) {
                Ok(x) => x,
                Err(v) => return Err(self.no_backend(now, ingress, frame, p, svc_port, v)),
            }
        } else {
            if svc.key.fwmark() == 0 && p.dport != svc_port {
                // A port-0 (or FTP-data) match without persistence is not scheduled.
                let r = DropReason::NoBackend;
                return Err(self.no_backend(now, ingress, frame, p, svc_port, r));
            }
            let Some(b) = self.pick(sid, &flow, now) else {
                let r = DropReason::NoBackend;
                return Err(self.no_backend(now, ingress, frame, p, svc_port, r));
            };
            let bport = self.snap.backends[b.0 as usize].port;
            (b, None, if bport != 0 { bport } else { p.dport })
        };
        if let Some(Some((_, _, l))) = self.backend_limits.get_mut(backend.0 as usize) {
            if !l.allow(now_ms) {
                self.release_template(control, now);
                if let Some(t) = self.backend_traffic.get_mut(backend.0 as usize) {
                    t.rate_limited += 1;
                }
                return Err(Verdict::Drop(DropReason::BackendRateLimit));
            }
        }
        let b = &self.snap.backends[backend.0 as usize];
        let (daddr, method) = (b.addr, b.method);
        let local = if method == Method::FullNat {
            match self.alloc_local(p.proto, daddr, dport, now) {
                Some(l) => Some(l),
                None => {
                    self.release_template(control, now);
                    return Err(Verdict::Drop(DropReason::NoLocalPort));
                }
            }
        } else {
            None
        };
        Ok(NewConn {
            proto: p.proto,
            client: p.src,
            cport: p.sport,
            vaddr: p.dst,
            vport: p.dport,
            daddr,
            dport,
            local,
            backend,
            service: sid.0,
            method,
            control,
        })
    }

    /// A template that was found or made for a connection that then could not be created
    /// gets its timer re-armed, as `ip_vs_conn_put(ct)` does.
    fn release_template(&mut self, control: Option<ConnId>, now: Time) {
        if let Some(ct) = control {
            self.conns.rearm(ct, now);
        }
    }

    /// Schedule a new connection: the service's shared scheduler (a table or a lock-free
    /// scheduler without a lock, any other locked for this pick only).
    #[inline(always)]
    fn pick(&self, sid: ServiceId, flow: &Flow, now: Time) -> Option<BackendId> {
        let svc = self.snap.svcs.get(sid.0 as usize)?;
        let i = svc
            .scheduler
            .pick(flow, &svc.views, self.conns.counts(), now)?;
        svc.views.get(i).map(|v| v.id)
    }

    /// `ip_vs_sched_persist`: follow a valid template, or schedule and make one.
    /// Returns the backend, the template and the entry's destination port.
    fn schedule_persistent(
        &mut self,
        sid: ServiceId,
        flow: &Flow,
        pers: crate::service::Persistence,
        now: Time,
    ) -> Result<(BackendId, Option<ConnId>, u16), DropReason> {
        let key = self.snap.svcs[sid.0 as usize].key;
        let svc_port = key.port();
        let snet = mask_addr(flow.src, pers.prefix_len);
        let tkey = if flow.dport == svc_port {
            TemplateKey {
                proto: flow.proto,
                client: snet,
                vaddr: flow.dst,
                vport: if svc_port == 21 { 0 } else { flow.dport },
            }
        } else if key.fwmark() != 0 {
            let m = key.fwmark();
            let vaddr = if flow.dst.is_ipv4() {
                IpAddr::V4(m.into())
            } else {
                IpAddr::V6(u128::from(m).into())
            };
            TemplateKey {
                proto: 0,
                client: snet,
                vaddr,
                vport: 0,
            }
        } else {
            TemplateKey {
                proto: flow.proto,
                client: snet,
                vaddr: flow.dst,
                vport: 0,
            }
        };
        let (backend, ct) = match self.conns.template_lookup(&tkey, now) {
            Some(ct) => match self.conns.backend(ct) {
                Some(b) => (b, ct),
                None => return Err(DropReason::NoBackend),
            },
            None => {
                let b = self.pick(sid, flow, now).ok_or(DropReason::NoBackend)?;
                let rt = &self.snap.backends[b.0 as usize];
                let tport = if flow.dport == svc_port && svc_port != 21 {
                    rt.port
                } else {
                    0
                };
                let ct = self
                    .conns
                    .insert_template(
                        &tkey,
                        b,
                        rt.addr,
                        tport,
                        sid.0,
                        rt.method,
                        pers.timeout,
                        now,
                    )
                    .ok_or(DropReason::TableFull)?;
                (b, ct)
            }
        };
        let bport = self.snap.backends[backend.0 as usize].port;
        let dport = if flow.dport == svc_port && bport != 0 {
            bport
        } else {
            flow.dport
        };
        Ok((backend, Some(ct), dport))
    }

    /// `ip_vs_leave`: no backend. FTP data on a port-21 service passes; otherwise the client
    /// gets an ICMP port unreachable (the frame becomes the answer) and the drop is counted.
    fn no_backend(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: &Packet,
        svc_port: u16,
        reason: DropReason,
    ) -> Verdict {
        if svc_port == 21 && p.dport != 21 {
            return Verdict::Pass;
        }
        self.answer(now, ingress, frame, p, IcmpAnswer::PortUnreachable, reason)
    }

    /// Replace the frame by an ICMP error about it, sent back out of `ingress`; the original
    /// frame's fate is counted as a drop for `reason` (in `process_parsed`, through
    /// `self.answered`), the answer as an ICMP answer. Port unreachable and time exceeded are
    /// rate-limited (`ratelimit`); a limited or impossible answer leaves a plain drop.
    fn answer(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: &Packet,
        kind: IcmpAnswer,
        reason: DropReason,
    ) -> Verdict {
        if !matches!(kind, IcmpAnswer::TooBig { .. })
            && !p.icmp_error
            && !self.icmp_limit.allow(p.src, now)
        {
            self.counters.icmp_rate_limited += 1;
            return Verdict::Drop(reason);
        }
        match icmp::answer(frame, p, kind) {
            Ok(()) => {
                self.answered = Some(reason);
                Verdict::Tx(ingress)
            }
            Err(_) => Verdict::Drop(reason),
        }
    }

    /// FullNAT: a local address and port whose reply tuple is free.
    fn alloc_local(
        &mut self,
        proto: u8,
        daddr: IpAddr,
        dport: u16,
        now: Time,
    ) -> Option<(IpAddr, u16)> {
        let v6 = daddr.is_ipv6();
        let n = self
            .cfg
            .local_addresses
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .count();
        if n == 0 {
            return None;
        }
        let step = u32::from(self.cfg.workers.max(1));
        for _ in 0..LPORT_TRIES {
            let port = self.lport_cursor;
            self.lport_cursor += step;
            if self.lport_cursor > LPORT_MAX {
                self.lport_cursor -= LPORT_MAX + 1 - LPORT_MIN;
                // Keep the residue class: move up to the first port ≥ LPORT_MIN in it.
                while self.lport_cursor < LPORT_MIN {
                    self.lport_cursor += step;
                }
            }
            let which = (port as usize / 7919) % n;
            let laddr = *self
                .cfg
                .local_addresses
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .nth(which)?;
            let reply = Tuple {
                proto,
                src: daddr,
                sport: dport,
                dst: laddr,
                dport: port as u16,
            };
            if self.conns.lookup(&reply, now).is_none() {
                return Some((laddr, port as u16));
            }
        }
        None
    }

    /// Account a packet of connection `id` and forward it by the connection's method.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        id: ConnId,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        let event = Self::event(frame, &p);
        self.conns.on_packet(id, dir, event, now);
        self.forward_accounted(now, ingress, frame, p, id, dir, new_conn)
    }

    /// The state machine's event of packet `p`: TCP flags, or SCTP's chunk type.
    #[inline(always)]
    fn event(frame: &Frame, p: &Packet) -> u8 {
        if p.proto == proto::SCTP {
            crate::conn::state::sctp::chunk_of(frame.data().get(p.l4..p.ip_end).unwrap_or(&[]))
        } else {
            p.tcp_flags
        }
    }

    /// [`Self::forward`] after the packet was accounted to connection `id`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward_accounted(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        id: ConnId,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        if dir == Direction::In && self.sync_master.is_some() {
            self.sync_conn(Some(id), None, now);
        }
        // IPv4 entries without building a whole `Conn` (no IpAddr reconstruction).
        let c = match self.conns.get_v4(id) {
            Some(c) => return self.rewrite_packet_v4(now, ingress, frame, p, &c, dir, new_conn),
            None => match self.conns.get(id) {
                Some(c) => Target::from(&c),
                None => return Verdict::Drop(DropReason::NoConnection),
            },
        };
        self.rewrite(now, ingress, frame, p, &c, dir, new_conn)
    }

    /// Rewrite and send a packet of connection `c`; a first fragment's decision is remembered
    /// for the later fragments of its datagram, and those already held go out after it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn rewrite(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        mut p: Packet,
        c: &Target,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        if p.frag != Frag::First {
            return self.rewrite_frame(now, ingress, frame, &mut p, c, dir, new_conn);
        }
        let key = frags::FragKey::of(frame.data(), &p);
        let range = crate::wire::frag_range(frame.data(), &p);
        let v = self.rewrite_frame(now, ingress, frame, &mut p, c, dir, new_conn);
        if let (Some(key), Some(range)) = (key, range) {
            self.frags.remember(key, range, *c, dir, ms32(now));
            for h in self.frags.release(&key) {
                self.send_held(now, h, c, dir);
            }
        }
        v
    }

    /// A later fragment (TCP, UDP, SCTP): rewritten for its datagram's connection when the
    /// first fragment was seen, else held for it (see `pipeline/frags.rs`).
    fn later_fragment(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        mut p: Packet,
    ) -> Verdict {
        let (Some(key), Some(range)) = (
            frags::FragKey::of(frame.data(), &p),
            crate::wire::frag_range(frame.data(), &p),
        ) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // RFC 1858: a TCP fragment at offset 8 can only be meant to rewrite the TCP flags; and
        // no datagram is longer than 65535 bytes.
        if (p.proto == proto::TCP && range.0 == 8) || range.1 > 65_535 {
            return Verdict::Drop(DropReason::BadFragment);
        }
        let now_ms = ms32(now);
        if let Some((c, dir)) = self.frags.find(&key, now_ms) {
            if self.frags.note(&key, range) == frags::Range::Overlap {
                return Verdict::Drop(DropReason::BadFragment);
            }
            return self.rewrite_frame(now, ingress, frame, &mut p, &c, dir, false);
        }
        let held = frags::Held {
            key,
            ingress,
            until: now_ms.wrapping_add(frags::HOLD_MS),
            bytes: frame.data().to_vec(),
        };
        if self.frags.hold(held) {
            Verdict::Drop(DropReason::FragmentHeld)
        } else {
            Verdict::Drop(DropReason::Fragment)
        }
    }

    /// Rewrite a held fragment for its datagram's connection and queue it with the extra frames
    /// ([`Self::drain_fragments`]).
    fn send_held(&mut self, now: Time, h: frags::Held, c: &Target, dir: Direction) {
        const ROOM: usize = 256;
        if self.frag_frames.len() >= MAX_PENDING_FRAGMENTS {
            self.counters.fragments_expired += 1;
            return;
        }
        let len = h.bytes.len();
        let mut buf = vec![0u8; ROOM + len + 64];
        buf[ROOM..ROOM + len].copy_from_slice(&h.bytes);
        let mut f = Frame::new(&mut buf, ROOM, len);
        let Parsed::Ip(mut p) = parse(f.data()) else {
            self.counters.fragments_expired += 1;
            return;
        };
        if let Verdict::Tx(port) = self.rewrite_frame(now, h.ingress, &mut f, &mut p, c, dir, false)
        {
            let start = self.frag_bytes.len();
            self.frag_bytes.extend_from_slice(f.data());
            self.frag_frames.push((port, start..self.frag_bytes.len()));
            self.counters.tx_fragments += 1;
        } else {
            self.counters.fragments_expired += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rewrite_frame(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: &mut Packet,
        c: &Target,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        let bytes = p.ip_len();
        self.record(
            Decision {
                service: ServiceId(c.service),
                backend: c.backend,
                method: c.method,
                direction: dir,
                new_conn,
            },
            bytes,
        );
        // Where the frame goes: the backend (in) or the client (out).
        let next = match dir {
            Direction::In => c.daddr,
            Direction::Out => c.client,
        };
        let Some(hop) = self.next_hop(c.backend, dir, next) else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        let link = Link {
            src: hop.src_mac,
            dst: hop.dst_mac,
            vlan: hop.vlan,
        };
        // Like `ip_forward`: the hop limit first, then the MTU, and the TTL only then decremented,
        // so ICMP answers quote the packet as it arrived. Toward a backend the sender hears
        // time exceeded from the VIP (`ip_vs_xmit.c` `decrement_ttl`); a reply from a backend
        // whose TTL runs out is dropped (the kernel would answer from its own address).
        if p.ttl <= 1 {
            if dir == Direction::In {
                return self.answer(
                    now,
                    ingress,
                    frame,
                    p,
                    IcmpAnswer::TimeExceeded,
                    DropReason::TtlExceeded,
                );
            }
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        if c.method == Method::Tunnel && dir == Direction::In {
            return self.tunnel(now, ingress, frame, *p, c, &hop, &link);
        }
        // NAT, FullNAT, DR (and the rare reply of a DR/TUN connection): the packet keeps its size.
        let mut fragment = false;
        match rewrite::check_mtu(p, hop.mtu) {
            Ok(()) => {}
            Err(WireError::TooBig { mtu }) => {
                return self.answer(
                    now,
                    ingress,
                    frame,
                    p,
                    IcmpAnswer::TooBig { mtu },
                    DropReason::TooBig,
                );
            }
            // IPv4 without DF (or an ICMP error): the kernel fragments (`ip_fragment`).
            Err(_) => {
                if !self.cfg.fragment || !p.is_v4() {
                    return Verdict::Drop(DropReason::NeedsFragmentation);
                }
                fragment = true;
            }
        }
        let data = frame.data_mut();
        // TTL − 1 and the method's address changes in one pass (`rewrite::forward`).
        let (src, dst) = match (c.method, dir) {
            (Method::Nat, Direction::In) => (None, Some((c.daddr, c.dport))),
            (Method::Nat, Direction::Out) => (Some((c.vaddr, c.vport)), None),
            (Method::FullNat, Direction::In) => match c.local {
                Some(l) => (Some(l), Some((c.daddr, c.dport))),
                None => {
                    if let Err(e) = rewrite::dec_ttl(data, p) {
                        return Verdict::Drop(e.drop_reason());
                    }
                    return Verdict::Drop(DropReason::Unsupported);
                }
            },
            (Method::FullNat, Direction::Out) => {
                (Some((c.vaddr, c.vport)), Some((c.client, c.cport)))
            }
            (Method::Dr | Method::Tunnel, _) => (None, None),
        };
        if let Err(e) = rewrite::forward(data, p, src, dst) {
            return Verdict::Drop(e.drop_reason());
        }
        // Ethernet padding and trailers stay behind (`pskb_trim_rcsum` in `ip_rcv_core`).
        if frame.len() > p.ip_end && !frame.set_len(p.ip_end) {
            return Verdict::Drop(DropReason::Truncated);
        }
        if let Err(e) = rewrite::set_link(frame, p, &link) {
            return Verdict::Drop(e.drop_reason());
        }
        if fragment {
            return self.fragment(frame, hop.port, hop.mtu);
        }
        Verdict::Tx(hop.port)
    }

    /// The next hop towards `addr`: for the backend side (`In`) from the per-backend cache,
    /// resolved again when the network's generation or the backend's address changed.
    #[inline(always)]
    fn next_hop(&mut self, backend: BackendId, dir: Direction, addr: IpAddr) -> Option<Hop> {
        if dir == Direction::Out {
            return self.net.next_hop(addr);
        }
        if let Some(c) = self.hops.get(backend.0 as usize) {
            if c.generation == self.net.generation() && c.addr == addr {
                return c.hop;
            }
        }
        self.resolve_hop(backend, addr)
    }

    /// [`Self::next_hop`] toward a backend whose cached hop is missing or stale: resolve and
    /// cache it.
    #[inline(never)]
    fn resolve_hop(&mut self, backend: BackendId, addr: IpAddr) -> Option<Hop> {
        let generation = self.net.generation();
        let i = backend.0 as usize;
        let hop = self.net.next_hop(addr);
        if i >= self.hops.len() {
            if i >= self.cfg.max_backends as usize {
                return hop;
            }
            // Once per backend id: the cache grows to the highest id seen.
            self.hops.resize(i + 1, CachedHop::EMPTY);
        }
        let fast = match (addr, &hop) {
            (IpAddr::V4(a), Some(h)) => LinkV4::of(h).map(|link| FastHop {
                addr: a.to_bits(),
                link,
                port_v4: match self.net.port_addr(h.port, false) {
                    Some(IpAddr::V4(p)) => Some(p.to_bits()),
                    _ => None,
                },
            }),
            _ => None,
        };
        self.hops[i] = CachedHop {
            generation,
            addr,
            hop,
            fast,
        };
        hop
    }

    #[allow(clippy::too_many_arguments)]
    fn tunnel(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        c: &Target,
        hop: &Hop,
        link: &Link,
    ) -> Verdict {
        let Some(src) = self.net.port_addr(hop.port, c.daddr.is_ipv6()) else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        let tun = Tunnel {
            src,
            dst: c.daddr,
            id: self.ip_id,
            mtu: hop.mtu,
        };
        // The outer header carries the decremented TTL (checked > 1 by the caller).
        let mut outer = p;
        outer.ttl -= 1;
        let mut r = rewrite::encap(frame, &outer, &tun, link);
        // An IPv4 inner packet without DF gets an outer header the kernel fragments
        // (`ip_vs_tunnel_xmit` → `ip_local_out`; over IPv6, `ip6_fragment`, the director being
        // the outer packet's source); an IPv6 inner packet is answered with packet too big.
        let fragment =
            r == Err(WireError::NeedsFragmentation) && self.cfg.fragment && p.is_v4() && !p.df;
        if fragment {
            let unlimited = Tunnel {
                mtu: u16::MAX,
                ..tun
            };
            r = rewrite::encap(frame, &outer, &unlimited, link);
        }
        match r {
            Ok(()) => {
                // Now decrement the inner TTL, at its new place behind the outer header.
                let mut inner = rewrite::inner_after_encap(&p, &tun, link);
                match rewrite::dec_ttl(frame.data_mut(), &mut inner) {
                    Ok(()) if fragment => self.fragment(frame, hop.port, hop.mtu),
                    Ok(()) => Verdict::Tx(hop.port),
                    Err(e) => Verdict::Drop(e.drop_reason()),
                }
            }
            // The frame is unchanged: the answer quotes the packet as it arrived.
            Err(WireError::TooBig { mtu }) => self.answer(
                now,
                ingress,
                frame,
                &p,
                IcmpAnswer::TooBig { mtu },
                DropReason::TooBig,
            ),
            Err(e) => Verdict::Drop(e.drop_reason()),
        }
    }

    /// ICMP errors about tracked connections (`ip_vs_in_icmp` / `ip_vs_out_icmp`).
    fn icmp_error(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        mut p: Packet,
    ) -> Verdict {
        // IPv4 redirects are not errors about a connection: IPVS (`ip_vs_in_icmp`) hands every
        // type but unreachable, source quench and time exceeded to the stack, and so do we
        // (a router ignores redirects; relaying one to a backend would reroute it).
        if p.is_v4() && p.icmp_type == 5 {
            return Verdict::Pass;
        }
        let parsed = icmp::parse_embedded(frame.data(), &p);
        let mut e = match parsed {
            Ok(e) if e.has_ports => e,
            _ => {
                // An unusable quote: dropped when it concerns a service (outer destination a
                // VIP, or a quoted address one), else the kernel's (as before).
                let ours = self.snap.vips.contains(&p.dst)
                    || parsed.is_ok_and(|e| {
                        self.is_service_addr(e.proto, e.src) || self.is_service_addr(e.proto, e.dst)
                    });
                return match hygiene::quote_fault(frame.data(), &p) {
                    Some(r) if ours => Verdict::Drop(r),
                    _ => Verdict::Pass,
                };
            }
        };
        // The embedded packet is one we sent; its reverse is the direction of the error.
        let reversed = Tuple {
            proto: e.proto,
            src: e.dst,
            sport: e.dport,
            dst: e.src,
            dport: e.sport,
        };
        let Some((id, dir)) = self.conns.lookup(&reversed, now) else {
            return if self.is_service_addr(e.proto, e.src) || self.is_service_addr(e.proto, p.dst) {
                Verdict::Drop(DropReason::IcmpNoConnection)
            } else {
                Verdict::Pass
            };
        };
        let Some(c) = self.conns.get(id) else {
            return Verdict::Drop(DropReason::IcmpNoConnection);
        };
        // `ip_vs_in_icmp` verifies the checksum of an error it handles before using it.
        if !hygiene::icmp_checksum_ok(frame.data(), &p) {
            return Verdict::Drop(DropReason::BadIcmpChecksum);
        }
        let nat = match (c.method, dir) {
            // From the client side about a reply we sent: on to the backend.
            (Method::Nat, Direction::In) => IcmpNat {
                outer_dst: Some(c.daddr),
                inner_src: Some((c.daddr, c.dport)),
                ..Default::default()
            },
            (Method::FullNat, Direction::In) => IcmpNat {
                outer_src: c.local.map(|l| l.0),
                outer_dst: Some(c.daddr),
                inner_src: Some((c.daddr, c.dport)),
                inner_dst: c.local,
            },
            // From the backend side about a packet we forwarded: back to the client.
            (Method::Nat, Direction::Out) => IcmpNat {
                outer_src: Some(c.vaddr),
                inner_dst: Some((c.vaddr, c.vport)),
                ..Default::default()
            },
            (Method::FullNat, Direction::Out) => IcmpNat {
                outer_src: Some(c.vaddr),
                outer_dst: Some(c.client),
                inner_src: Some((c.client, c.cport)),
                inner_dst: Some((c.vaddr, c.vport)),
            },
            // DR / TUN: forwarded unchanged by the connection's method.
            (Method::Dr | Method::Tunnel, _) => IcmpNat::default(),
        };
        // A SYN-proxied connection's quoted TCP header in the sequence space of the error's
        // receiver; `translate_error` then recomputes the ICMP checksum over it.
        if e.proto == proto::TCP && self.conns.is_synproxy(id) {
            self.synproxy_quote(frame, &e, id, dir);
        }
        if nat != IcmpNat::default() {
            if let Err(err) = icmp::translate_error(frame.data_mut(), &mut p, &mut e, &nat) {
                return Verdict::Drop(err.drop_reason());
            }
        }
        self.rewrite(now, ingress, frame, p, &Target::from(&c), dir, false)
    }
}

/// What a packet's rewrite needs of its connection: from [`ConnTable::get_v4`] on the
/// per-packet path, or from a whole [`Conn`].
#[derive(Clone, Copy, Debug)]
struct Target {
    service: u32,
    backend: BackendId,
    method: Method,
    client: IpAddr,
    cport: u16,
    vaddr: IpAddr,
    vport: u16,
    daddr: IpAddr,
    dport: u16,
    /// FullNAT local address and port.
    local: Option<(IpAddr, u16)>,
}

impl From<&Conn> for Target {
    #[inline]
    fn from(c: &Conn) -> Target {
        Target {
            service: c.service,
            backend: c.backend,
            method: c.method,
            client: c.client,
            cport: c.cport,
            vaddr: c.vaddr,
            vport: c.vport,
            daddr: c.daddr,
            dport: c.dport,
            local: c.local,
        }
    }
}

impl From<ConnV4> for Target {
    #[inline]
    fn from(c: ConnV4) -> Target {
        let [client, vaddr, daddr, laddr] = c.addrs.map(|a| IpAddr::V4(Ipv4Addr::from_bits(a)));
        Target {
            service: c.service,
            backend: c.backend,
            method: c.method,
            client,
            cport: c.ports[0],
            vaddr,
            vport: c.ports[1],
            daddr,
            dport: c.ports[2],
            local: (c.method == Method::FullNat).then_some((laddr, c.ports[3])),
        }
    }
}

/// The per-source-prefix limiter of `d` (none when its rate is 0).
fn source_limiter(cfg: &PipelineConfig, d: &DefenseConfig) -> Option<SourceLimiter> {
    (d.source_rate > 0).then(|| {
        SourceLimiter::new(
            d.source_rate,
            d.source_prefix_v4,
            d.source_prefix_v6,
            cfg.workers,
            cfg.seed,
        )
    })
}

/// The connection a one-packet-scheduled datagram would have had.
fn one_packet_conn(n: &NewConn) -> Conn {
    Conn {
        proto: n.proto,
        client: n.client,
        cport: n.cport,
        vaddr: n.vaddr,
        vport: n.vport,
        daddr: n.daddr,
        dport: n.dport,
        local: n.local,
        backend: n.backend,
        service: n.service,
        method: n.method,
        flags: 0,
        state: 0,
        timeout_ms: 0,
        control: n.control,
        n_control: 0,
        in_pkts: 1,
    }
}
