//! The connection table of one worker: every connection IPVS would hold in `ip_vs_conn_tab`,
//! findable from both directions, with IPVS's state machine, per-backend counts, persistence
//! templates and expiry.
//!
//! Design (see `table.rs` for the details):
//! * **Storage**: a slab of 52-byte packed entries sized at start, with a free list threaded
//!   through the unused entries; no allocation after [`ConnTable::new`] for IPv4. An IPv4
//!   entry holds its four addresses, ports, expiry, `in_pkts`, backend (24 bits), service (20
//!   bits), protocol, state, flags and wheel links; the timeout is not stored but taken from
//!   the timeout table for the entry's protocol and state (a template's, and a synced entry's
//!   until its next packet, is stored in place of the control link it does not have). An entry
//!   with any IPv6 address keeps its four addresses in a 64-byte address block, allocated on
//!   demand up to `ConnConfig::v6_capacity`, so IPv4 connections do not pay for IPv6 (IPv6
//!   connection: 52 + 64 bytes + index).
//! * **Index**: open addressing with 4-byte slots (entry number + direction, and a fingerprint
//!   of the hash in the bits above) for the inbound tuple (client → virtual) and, for NAT and
//!   FullNAT, the outbound tuple of the reply (backend → client, or backend → local address).
//!   Sized for ≤ 80 % load even when every connection has both keys (10 bytes per connection of
//!   capacity). Together: ≤ 64 bytes per IPv4 connection of capacity.
//! * **Expiry**: each entry carries its expiry time (milliseconds); a two-level hashed timing
//!   wheel of 8 ms ticks (up to 16384 buckets, 131 s per turn) with intrusive doubly linked
//!   lists finds due entries with amortised O(1) work per call to [`ConnTable::expire`].
//!   Re-arming on a packet only stores the new expiry time (the entry moves buckets lazily when
//!   its bucket comes round), so the per-packet cost is one store. Lookups compare the expiry
//!   with `now` exactly, so an entry whose time has passed is never returned even if the sweep
//!   has not reached it.
//! * **Counts**: [`BackendCounts`] implements [`xvs_schedulers::Load`]; schedulers read it
//!   directly via [`ConnTable::counts`]. The tables of all workers share one
//!   ([`ConnTable::with_counts`]), so the counts are the director's, not one worker's.
//!
//! One-packet scheduling (OPS, UDP services with the ONEPACKET flag): the pipeline does not
//! insert such connections at all, as IPVS frees them right after their packet; nothing here
//! needs to know about them.
//!
//! Per batch of frames, a worker should `prefetch` every tuple first and then process the
//! frames: at 1 M random flows this cut the table's share of a packet about threefold here.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use xvs_forwarding::conn::*;
//!
//! let mut table = ConnTable::new(&ConnConfig { capacity: 1024, v6_capacity: 64, backends: 4, seed: 1 });
//! let ip = |d| IpAddr::V4(Ipv4Addr::new(198, 18, 0, d));
//! let now = Time::from_secs(1);
//! // A SYN from the client: no connection yet, so the pipeline schedules and inserts one.
//! let syn = Tuple { proto: 6, src: ip(1), sport: 40000, dst: ip(100), dport: 80 };
//! assert_eq!(table.lookup(&syn, now), None);
//! let id = table
//!     .insert(
//!         &NewConn {
//!             proto: 6, client: ip(1), cport: 40000, vaddr: ip(100), vport: 80,
//!             daddr: ip(200), dport: 8080, local: None, backend: BackendId(2), service: 0,
//!             method: Method::Nat, control: None,
//!         },
//!         now,
//!     )
//!     .expect("room in the table"); // else: Verdict::Drop(DropReason::TableFull)
//! table.on_packet(id, Direction::In, state::tcp::FLAG_SYN, now);
//! // The backend's SYN-ACK comes back through the director (NAT): found from the other side.
//! let reply = Tuple { proto: 6, src: ip(200), sport: 8080, dst: ip(1), dport: 40000 };
//! assert_eq!(table.lookup(&reply, now), Some((id, Direction::Out)));
//! table.on_packet(id, Direction::Out, state::tcp::FLAG_SYN | state::tcp::FLAG_ACK, now);
//! table.on_packet(id, Direction::In, state::tcp::FLAG_ACK, now);
//! assert_eq!(table.get(id).unwrap().state_name(), "ESTABLISHED");
//! use xvs_schedulers::Load;
//! assert_eq!(table.counts().active(BackendId(2)), 1);
//! // Periodically (e.g. once per batch): expire what is due, a bounded amount of work.
//! table.expire(now, 64);
//! ```

mod counts;
mod index;
pub mod state;
mod table;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use counts::BackendCounts;
pub use state::{state_name, Timeouts};
pub use table::{
    ConnConfig, ConnTable, ConnV4, Install, Installed, SlotHint, SyncMeta, SyncView, TouchV4,
    ENTRY_BYTES, MAX_BACKEND, MAX_SERVICE,
};
pub use xvs_schedulers::{BackendId, Time};

/// How a connection's packets reach its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Method {
    /// Masquerading: destination rewritten to the backend, replies come back through the director.
    #[default]
    Nat = 0,
    /// Direct routing: only the MAC changes; replies bypass the director.
    Dr = 1,
    /// IP-in-IP (or IPv6-in-IPv6) tunnel; replies bypass the director.
    Tunnel = 2,
    /// Full NAT: source rewritten to a local address too; replies come back to that address.
    FullNat = 3,
}

impl Method {
    #[inline]
    pub(crate) fn from_bits(b: u16) -> Method {
        match b & flags::METHOD_MASK {
            1 => Method::Dr,
            2 => Method::Tunnel,
            3 => Method::FullNat,
            _ => Method::Nat,
        }
    }

    /// Whether the replies pass through the director (and so get an outbound index entry).
    #[inline]
    pub fn replies_through_director(self) -> bool {
        matches!(self, Method::Nat | Method::FullNat)
    }
}

/// Entry flags (xvs's own bit values; the IPVS names they mirror are given).
pub mod flags {
    /// The [`Method`](super::Method) in the low bits.
    pub const METHOD_MASK: u16 = 0x0007;
    /// `IP_VS_CONN_F_INACTIVE`: counted in inactconns (every state but TCP ESTABLISHED).
    pub const INACTIVE: u16 = 0x0008;
    /// `IP_VS_CONN_F_NOOUTPUT`: no reply seen through the director (DR, TUN); TCP input uses
    /// the input-only table. Cleared by the first outbound packet.
    pub const NOOUTPUT: u16 = 0x0010;
    /// `IP_VS_CONN_F_TEMPLATE`: a persistence template.
    pub const TEMPLATE: u16 = 0x0020;
    /// Reachable by its inbound tuple (cleared when a template is invalidated).
    pub const IN_HASHED: u16 = 0x0040;
    /// Reachable by its outbound tuple (NAT, FullNAT).
    pub const OUT_HASHED: u16 = 0x0080;
    /// Client side (client, virtual) is IPv6.
    pub const V6: u16 = 0x0100;
    /// Backend side (backend, local) is IPv6.
    pub const DV6: u16 = 0x0200;
    /// Addresses are stored in the IPv6 address slab.
    pub(crate) const POOL: u16 = 0x0400;
    /// Slot in use.
    pub(crate) const USED: u16 = 0x0800;
    /// A SYN-proxied connection (the director completed the client's handshake itself; the
    /// pipeline keeps its sequence-number translation beside the table).
    pub const SYNPROXY: u16 = 0x1000;
    /// The entry has an item in the ring of embryonic entries (kept across reuse of the slot).
    pub(crate) const EMB_QUEUED: u16 = 0x2000;
    /// The timeout is the initial 3 s (no packet accounted yet).
    pub(crate) const TMO_INIT: u16 = 0x4000;
    /// The timeout is stored in the entry (a synced one); without this flag or `TMO_INIT` it
    /// is the timeout table's for the entry's protocol and state.
    pub(crate) const TMO_AUX: u16 = 0x8000;
    /// The bits internal to the table, not shown in [`Conn::flags`](super::Conn::flags).
    pub(crate) const INTERNAL: u16 = POOL | USED | EMB_QUEUED | TMO_INIT | TMO_AUX;
}

/// Handle of a connection entry: its slot number. Valid until the entry is removed (expiry,
/// [`ConnTable::expire_now`], a lookup that finds it expired); do not keep it across calls
/// into the table that may remove entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// The direction a packet travels relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → virtual service (matched the inbound tuple).
    In,
    /// Backend → client or local address (matched the outbound tuple).
    Out,
}

/// A packet's addressing as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol number (6 TCP, 17 UDP, …).
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// What the pipeline knows about a new connection when it inserts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    pub proto: u8,
    pub client: IpAddr,
    pub cport: u16,
    /// The packet's destination (for fwmark and port-0 services the real destination).
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// FullNAT local address and port; `None` otherwise (the outbound tuple of a NAT reply is
    /// then backend → client).
    pub local: Option<(IpAddr, u16)>,
    pub backend: BackendId,
    /// Index of the service in the snapshot.
    pub service: u32,
    pub method: Method,
    /// Owning persistence template, if any (its `n_control` goes up and its timer is re-armed,
    /// as `ip_vs_sched_persist` does with `ip_vs_control_add` + `ip_vs_conn_put(ct)`).
    pub control: Option<ConnId>,
}

/// Key of a persistence template (IPVS.md §5): (proto, client network, 0, vaddr, vport); for
/// fwmark services proto 0 and the mark as the address, port 0. The pipeline computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub proto: u8,
    /// Client address masked with the service's netmask.
    pub client: IpAddr,
    pub vaddr: IpAddr,
    pub vport: u16,
}

/// A copy of one entry's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub proto: u8,
    pub client: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// FullNAT local address and port.
    pub local: Option<(IpAddr, u16)>,
    pub backend: BackendId,
    pub service: u32,
    pub method: Method,
    /// See [`flags`].
    pub flags: u16,
    /// TCP state ([`state::tcp`]), 0 for other protocols, [`state::template`] for templates.
    pub state: u8,
    /// Current timeout in milliseconds.
    pub timeout_ms: u32,
    pub control: Option<ConnId>,
    pub n_control: u32,
    /// Inbound packets seen (IPVS `in_pkts`).
    pub in_pkts: u32,
}

impl Conn {
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }
    pub fn is_active(&self) -> bool {
        self.flags & (flags::INACTIVE | flags::TEMPLATE) == 0
    }
    pub fn state_name(&self) -> &'static str {
        state_name(self.proto, self.state, self.is_template())
    }
}

/// One row of `ipvsadm -Lnc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnListing {
    pub id: ConnId,
    pub proto: u8,
    pub template: bool,
    /// Whole seconds until expiry (0 if due).
    pub expires_secs: u32,
    pub state: &'static str,
    pub client: SocketAddr,
    pub virt: SocketAddr,
    pub backend: SocketAddr,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        132 => "SCTP",
        0 => "IP",
        1 => "ICMP",
        58 => "ICMPv6",
        _ => "UNK",
    }
}

impl fmt::Display for ConnListing {
    /// `"%-3s %-6s %-11s %-18s %-18s %s"` as ipvsadm prints it (expire as `mm:ss`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = format!(
            "{:02}:{:02}",
            self.expires_secs / 60,
            self.expires_secs % 60
        );
        write!(
            f,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            proto_name(self.proto),
            exp,
            self.state,
            self.client.to_string(),
            self.virt.to_string(),
            self.backend
        )
    }
}
