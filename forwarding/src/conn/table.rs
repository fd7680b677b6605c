//! The per-worker connection table: slab + two-way index + timing wheel + IPVS entry semantics
//! (`net/netfilter/ipvs/ip_vs_conn.c`: `ip_vs_conn_new`, `ip_vs_conn_expire`,
//! `ip_vs_conn_expire_now`, `ip_vs_conn_del`, `ip_vs_check_template`,
//! `ip_vs_expire_nodest_conn_flush`; `ip_vs_proto_tcp.c`: `set_tcp_state`).
//!
//! Time: `now` (nanoseconds) is reduced to milliseconds; each entry stores its expiry as a
//! wrapping 32-bit millisecond count, compared by signed difference, hence timeouts are capped
//! at 24 days ([`super::state::MAX_TIMEOUT_MS`]). An entry is expired when `now >= expires`.
//!
//! Timing wheel, two levels (Varghese and Lauck, "Hashed and hierarchical timing wheels", SOSP
//! 1987): level 0 has W0 buckets of 8 ms ticks (W0 = capacity / 16, 64..=16384), level 1 has W1
//! buckets of W0 ticks (one level-0 turn each; W0 × W1 ≤ 16384, so a level-1 turn is at most
//! 131 s; W1 ≤ capacity / 8), so that small tables need few bucket heads and entries with long
//! timeouts are not re-queued every level-0 turn. Invariant: a live entry sits in exactly one
//! bucket (or the sweep's pending list), and that bucket comes round at or before the entry's
//! expiry tick. An entry whose expiry tick is less than a level-0 turn ahead of the sweep queues
//! in the level-0 bucket of that tick, else in the level-1 bucket of its turn; when the sweep
//! enters a turn it moves that turn's level-1 bucket to the pending list. A packet that extends
//! the expiry only stores the new time (the invariant still holds); one that shortens it (a
//! state change to a shorter timeout) moves the entry. [`ConnTable::expire`] visits the buckets
//! of the ticks that have fully passed, expires what is due and re-queues the rest by their
//! current expiry tick (a bit per level-0 bucket marks those an entry was queued in since the
//! sweep last took them, so runs of empty buckets pass a word of bits at a time). So the sweep
//! removes an entry at most one tick (8 ms) plus the interval between `expire` calls after its
//! time, and each entry is re-queued at most about twice per level-1 turn. If `expire` is not called for more than a level-0 turn, the sweep skips to the
//! last turn and takes every level-1 bucket (every bucket is still visited, so nothing is lost).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::counts::BackendCounts;
use super::flags::*;
use super::index::Index;
use super::state::{self, sctp, tcp, TcpDir, Timeouts, MAX_TIMEOUT_MS};
use super::{
    BackendId, Conn, ConnId, ConnListing, Direction, Method, NewConn, TemplateKey, Time, Tuple,
};

/// Bits of an entry number in the wheel and free-list links (and of a control link).
const LINK_BITS: u32 = 28;
const LINK_MASK: u32 = (1 << LINK_BITS) - 1;
/// No entry (end of the free list, no controlling template).
const NIL: u32 = LINK_MASK;
const TICK_SHIFT: u32 = 3; // 8 ms
/// Level-0 wheel buckets of a table of at least 256 Ki entries (131 s per turn); smaller tables
/// take a sixteenth of their capacity (rounded up to a power of two), at least 64 buckets.
/// Level-1 buckets: as many as make the two levels cover `MAX_WHEEL` ticks, at most an eighth of
/// the capacity.
const MAX_WHEEL: usize = 1 << 14;
const MIN_WHEEL: usize = 64;
/// Items of the embryonic ring: a sixteenth of the capacity (rounded up to a power of two), at
/// least this many.
const MIN_RING: usize = 64;
/// Largest capacity: entry numbers and the wheel's sentinels must fit the links.
const MAX_CAPACITY: u32 = LINK_MASK - 2 * MAX_WHEEL as u32 - 2;
/// Backend numbers an entry can hold (24 bits).
const BACKEND_MASK: u32 = (1 << 24) - 1;
/// Largest backend number an entry can hold.
pub const MAX_BACKEND: u32 = BACKEND_MASK;
/// Largest service number an entry can hold (20 bits).
pub const MAX_SERVICE: u32 = (1 << 20) - 1;
/// Timeout of a new entry before its first packet is accounted (`ip_vs_conn_new`: 3 s).
const INITIAL_TIMEOUT_MS: u32 = 3_000;
/// Timeout of an entry whose expiry was deferred because it still controls others.
const DEFER_MS: u32 = 60_000;
/// Template key kind bit mixed into the hash.
const KIND_TEMPLATE: u64 = 0x100;
/// Ticks in the wrapping 32-bit millisecond clock.
const TICKS: u64 = 1 << (32 - TICK_SHIFT);

/// Index slots [`ConnTable::prefetch_entry`] looks at from a tuple's home slot for the entry
/// to load (a probe that goes further is rare: the index is at most 80 % full), and the slots
/// [`ConnTable::expire`]'s prefetch follows a removed key's run for.
const PREFETCH_PROBE: usize = 16;
/// Entries of the pending list [`ConnTable::expire`] prefetches at once.
const EXPIRE_PREFETCH: u32 = 8;

/// Bytes of one entry in the slab.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// Sizes fixed at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    /// Maximum number of entries (connections + templates). At most 2^28 − 2^15 − 3.
    pub capacity: u32,
    /// Maximum number of entries with an IPv6 address (≤ capacity); their address blocks are
    /// allocated as they are first needed.
    pub v6_capacity: u32,
    /// Backends are numbered `0..backends` (the snapshot's maximum).
    pub backends: u32,
    /// Hash seed (take it from a random source so flows cannot be aimed at one probe run).
    pub seed: u64,
}

/// One connection or template: 52 bytes, packed.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Entry {
    /// IPv4: client, virtual, backend, FullNAT local (host order). With `POOL`: `[slot, ..]`.
    /// A template keeps its `n_control` in `[3]` (its local address is its backend's).
    addrs: [u32; 4],
    /// cport, vport, dport, lport.
    ports: [u16; 4],
    /// Expiry, wrapping milliseconds.
    expires: u32,
    in_pkts: u32,
    /// A template: its timeout (ms). A connection with `TMO_AUX`: its timeout (ms); else its
    /// owning template's entry number, or `NIL`.
    aux: u32,
    /// Wheel (or free-list) link to the next entry (low 28 bits) | state (high 4 bits).
    nx: u32,
    /// Wheel link to the previous entry (low 28 bits) | service bits 16..20 (high 4 bits).
    pv: u32,
    /// Backend number (low 24 bits) | IP protocol (high 8 bits).
    bp: u32,
    flags: u16,
    /// Service bits 0..16.
    svc: u16,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 52);

impl Entry {
    #[inline]
    fn proto(&self) -> u8 {
        (self.bp >> 24) as u8
    }
    #[inline]
    fn backend(&self) -> u32 {
        self.bp & BACKEND_MASK
    }
    #[inline]
    fn set_backend_proto(&mut self, backend: u32, proto: u8) {
        self.bp = (backend & BACKEND_MASK) | (proto as u32) << 24;
    }
    #[inline]
    fn state(&self) -> u8 {
        (self.nx >> LINK_BITS) as u8
    }
    #[inline]
    fn set_state(&mut self, s: u8) {
        self.nx = (self.nx & LINK_MASK) | (s as u32 & 0xF) << LINK_BITS;
    }
    #[inline]
    fn next(&self) -> u32 {
        self.nx & LINK_MASK
    }
    #[inline]
    fn set_next(&mut self, n: u32) {
        self.nx = (self.nx & !LINK_MASK) | (n & LINK_MASK);
    }
    #[inline]
    fn prev(&self) -> u32 {
        self.pv & LINK_MASK
    }
    #[inline]
    fn set_prev(&mut self, n: u32) {
        self.pv = (self.pv & !LINK_MASK) | (n & LINK_MASK);
    }
    #[inline]
    fn service(&self) -> u32 {
        self.svc as u32 | (self.pv >> LINK_BITS) << 16
    }
    #[inline]
    fn set_service(&mut self, s: u32) {
        self.svc = s as u16;
        self.pv = (self.pv & LINK_MASK) | ((s >> 16) & 0xF) << LINK_BITS;
    }
    /// Entries this template controls (0 for a connection).
    #[inline]
    fn n_control(&self) -> u32 {
        if self.flags & TEMPLATE != 0 {
            self.addrs[3]
        } else {
            0
        }
    }
    /// The owning template's entry number, or `NIL`.
    #[inline]
    fn control(&self) -> u32 {
        if self.flags & (TEMPLATE | TMO_AUX) == 0 {
            self.aux
        } else {
            NIL
        }
    }
}

#[inline]
fn ms32(now: Time) -> u32 {
    (now.0 / 1_000_000) as u32
}

#[inline]
fn is_due(expires: u32, now: u32) -> bool {
    (now.wrapping_sub(expires) as i32) >= 0
}

#[inline]
fn hash(seed: u64, kind: u64, a: u32, ap: u16, b: u32, bp: u16) -> u32 {
    let x = ((a as u64) << 32 | b as u64) ^ seed;
    let y = (ap as u64) << 16 | bp as u64 | kind << 32;
    let h = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ y).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (h >> 32) as u32
}

/// The folded address `i` of an entry (0 client, 1 virtual, 2 backend, 3 local).
#[inline]
fn addr_fold(pool: &[[[u8; 16]; 4]], e: &Entry, i: usize) -> u32 {
    if e.flags & POOL == 0 {
        e.addrs[i]
    } else {
        let Some(o) = pool.get(e.addrs[0] as usize).map(|p| &p[i]) else {
            return 0;
        };
        let v6 = e.flags & if i < 2 { V6 } else { DV6 } != 0;
        if v6 {
            fold16(o)
        } else {
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    }
}

/// The index hash of an entry's inbound (`out` false) or outbound key.
#[inline]
fn key_hash(seed: u64, pool: &[[[u8; 16]; 4]], e: &Entry, out: bool) -> u32 {
    if out {
        hash(
            seed,
            e.proto() as u64,
            addr_fold(pool, e, 2),
            e.ports[2],
            addr_fold(pool, e, 3),
            e.ports[3],
        )
    } else {
        let kind = e.proto() as u64
            | if e.flags & TEMPLATE != 0 {
                KIND_TEMPLATE
            } else {
                0
            };
        hash(
            seed,
            kind,
            addr_fold(pool, e, 0),
            e.ports[0],
            addr_fold(pool, e, 1),
            e.ports[1],
        )
    }
}

/// The addresses and ports an IPv4 entry of `c` stores (client, virtual, backend, local; the
/// local endpoint is the client's unless FullNAT gives one), or `None` when `c` has an IPv6
/// address or its backend or service number does not fit an entry.
#[inline(always)]
fn v4_fields(c: &NewConn) -> Option<([u32; 4], [u16; 4])> {
    if c.backend.0 > BACKEND_MASK || c.service > MAX_SERVICE {
        return None;
    }
    let (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(d)) = (c.client, c.vaddr, c.daddr) else {
        return None;
    };
    let (l, lport) = match (c.method, c.local) {
        (Method::FullNat, Some((IpAddr::V4(l), lport))) => (l, lport),
        (Method::FullNat, Some(_)) => return None,
        _ => (a, c.cport),
    };
    Some((
        [a.to_bits(), b.to_bits(), d.to_bits(), l.to_bits()],
        [c.cport, c.vport, c.dport, lport],
    ))
}

/// Record that an entry's timer was armed with `timeout` from its timeout table (a template
/// stores it; a connection's is the table's for its state from now on).
#[inline]
fn set_timeout(e: &mut Entry, timeout: u32) {
    if e.flags & TEMPLATE != 0 {
        e.aux = timeout;
    } else if e.flags & (TMO_INIT | TMO_AUX) != 0 {
        if e.flags & TMO_AUX != 0 {
            e.aux = NIL;
        }
        e.flags &= !(TMO_INIT | TMO_AUX);
    }
}

#[inline]
fn fold(a: &IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => a.to_bits(),
        IpAddr::V6(a) => fold16(&a.octets()),
    }
}

#[inline]
fn fold16(o: &[u8; 16]) -> u32 {
    let x = u128::from_be_bytes(*o);
    (x as u32) ^ ((x >> 32) as u32) ^ ((x >> 64) as u32) ^ ((x >> 96) as u32)
}

#[inline]
fn octets(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The 16-byte form of an address stored on a side whose family is `v6`.
#[inline]
fn from16(o: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*o))
    } else {
        IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    }
}

#[inline]
fn eq16(stored: &[u8; 16], side_v6: bool, x: &IpAddr) -> bool {
    match x {
        IpAddr::V4(a) => !side_v6 && *stored == a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => side_v6 && *stored == a.octets(),
    }
}

enum Fired {
    Deferred,
    Removed,
}

/// The forwarding fields of an IPv4 connection ([`ConnTable::get_v4`]): the same values as
/// the matching fields of [`Conn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnV4 {
    /// Client, virtual, backend and FullNAT local address (`0.0.0.0` unless FullNAT), as
    /// host-order integers ([`Ipv4Addr::to_bits`]).
    pub addrs: [u32; 4],
    /// cport, vport, dport and FullNAT local port (0 unless FullNAT).
    pub ports: [u16; 4],
    pub backend: BackendId,
    pub service: u32,
    pub method: Method,
}

/// The forwarding fields of an entry with IPv4 addresses only ([`ConnTable::get_v4`]).
#[inline(always)]
fn entry_v4(e: &Entry) -> ConnV4 {
    let method = Method::from_bits(e.flags);
    let mut addrs = e.addrs;
    let mut ports = e.ports;
    if method != Method::FullNat {
        // As `get` reports no local endpoint: keep the unused fields deterministic.
        addrs[3] = 0;
        ports[3] = 0;
    } else if e.flags & TEMPLATE != 0 {
        addrs[3] = addrs[2];
    }
    ConnV4 {
        addrs,
        ports,
        backend: BackendId(e.backend()),
        service: e.service(),
        method,
    }
}

/// A tuple's hash and, after [`ConnTable::prefetch_slot`], its home index slot: see
/// [`ConnTable::slot_hint`]. The default names nothing.
#[derive(Clone, Copy, Debug)]
pub struct SlotHint {
    hash: u32,
    slot: u32,
}

impl SlotHint {
    /// The tuple's hash ([`ConnTable::hash_v4`] for an IPv4 tuple).
    #[inline]
    pub fn hash(&self) -> u32 {
        self.hash
    }
}

impl Default for SlotHint {
    fn default() -> Self {
        SlotHint {
            hash: 0,
            slot: super::index::EMPTY,
        }
    }
}

/// What [`ConnTable::lookup_touch_v4`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchV4 {
    /// The packet's connection, refreshed as `on_packet` would, with its forwarding fields
    /// (what [`ConnTable::get_v4`] returns).
    Steady(ConnId, Direction, ConnV4),
    /// An entry has the tuple but the packet is not one `lookup_touch_v4` handles: nothing
    /// was changed; look it up with `lookup_v4`.
    Other,
    /// No connection.
    Miss,
}

/// The connection table of one worker. See the module documentation of [`super`].
#[derive(Debug)]
pub struct ConnTable {
    entries: Vec<Entry>,
    /// Address blocks of the entries with an IPv6 address, grown on demand up to `v6_capacity`.
    pool: Vec<[[u8; 16]; 4]>,
    pool_free: Vec<u32>,
    v6_capacity: u32,
    free_head: u32,
    len: u32,
    index: Index,
    /// Sentinels of the level-0 buckets, the level-1 buckets and the pending list: (next, prev).
    heads: Vec<(u32, u32)>,
    /// Level-0 buckets (a power of two, `1 << wheel_bits`).
    wheel: usize,
    /// One bit per level-0 bucket, set when an entry is queued there and cleared when the
    /// sweep takes the bucket: a clear bit means the bucket is empty, so the sweep passes runs
    /// of empty buckets a word at a time.
    occupied: Vec<u64>,
    wheel_bits: u32,
    /// Level-1 buckets (a power of two).
    wheel1: usize,
    /// Next wheel tick to visit (ms >> TICK_SHIFT, not wrapped).
    cursor: u64,
    /// Latest tick the sweep was asked to reach (for `check`).
    horizon: u64,
    counts: Arc<BackendCounts>,
    timeouts: Timeouts,
    secure_tcp: bool,
    /// A bare ACK from the backend does not move SYN_RECV / SYNACK to ESTABLISHED.
    strict_handshake: bool,
    seed: u64,
    /// Per-entry bookkeeping of a sync master (empty until [`Self::enable_sync_meta`]).
    sync_meta: Vec<SyncMeta>,
    /// Live embryonic entries (TCP SYN_RECV or SYNACK).
    embryonic: u32,
    /// The embryonic entries in the order they became embryonic (a ring of entry numbers,
    /// `emb_ring.len()` a power of two, a sixteenth of the capacity), from `emb_head` to
    /// `emb_tail` (wrapping positions). An entry has at most one item (`EMB_QUEUED`, kept when
    /// its slot is reused); an item is valid while its entry is live and embryonic, the others
    /// are skipped when they reach the head. An entry that becomes embryonic again while its
    /// old item is still queued keeps that item's place.
    emb_ring: Vec<u32>,
    emb_head: u32,
    emb_tail: u32,
    /// `todrop_entry`'s per-`in_pkts` counters (`ip_vs_conn.c`).
    todrop_counter: [u8; 9],
    /// xorshift state of the random `drop_entry` scan.
    rng: u64,
}

/// Whether a TCP entry in `state` is embryonic: the client's SYN was seen, the handshake not
/// completed (SYN_RECV, or SYNACK under `secure_tcp`).
#[inline]
fn embryonic_state(proto: u8, state: u8) -> bool {
    proto == 6 && matches!(state, tcp::SYN_RECV | tcp::SYNACK)
}

/// What a sync master remembers per entry (`ip_vs_conn`'s `old_state` and `sync_endtime`):
/// see `crate::sync::policy`. Reset when the slot is reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncMeta {
    /// The state when the entry was last sent.
    pub old_state: u8,
    /// Resends of an unchanged end time so far (`sync_retries`).
    pub retries: u8,
    /// The entry's end time (expiry, wrapping ms) when it was last sent; 0 = never.
    pub endtime: u32,
}

/// The fields the sync master's decision reads ([`ConnTable::sync_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncView {
    pub proto: u8,
    pub state: u8,
    pub template: bool,
    pub control: Option<ConnId>,
    pub in_pkts: u32,
    pub timeout_ms: u32,
    pub method: Method,
}

/// A connection or template received from a sync master, resolved against the local services
/// ([`ConnTable::install`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Install {
    pub proto: u8,
    pub template: bool,
    pub client: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// The local backend it binds to, and that backend's service and method (a synced entry
    /// takes the local backend's forwarding method, as `ip_vs_bind_dest` does).
    pub backend: BackendId,
    pub service: u32,
    pub method: Method,
    /// Protocol state as sent (template: NONE / ASSURED).
    pub state: u8,
    /// The master's INACTIVE flag (counted in inactconns, else activeconns).
    pub inactive: bool,
    /// Timeout to arm from now.
    pub timeout_ms: u32,
    /// `in_pkts` after the install (the kernel's backup sets it to `sync_threshold`).
    pub in_pkts: u32,
    /// FullNAT local address and port (a connection handed over by a predecessor process;
    /// the sync protocol has none).
    pub local: Option<(IpAddr, u16)>,
}

/// What [`ConnTable::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// A new entry.
    New(ConnId),
    /// An existing entry for the same backend, updated (state, timeout, INACTIVE).
    Updated(ConnId),
    /// An existing entry for another backend was expired and a new one made (an active
    /// message replaces it).
    Replaced(ConnId),
    /// An existing entry for another backend and an inactive message: the expiry notice of a
    /// connection already replaced, ignored.
    Stale,
    /// No room in the table (or the IPv6 slab).
    Full,
}

impl ConnTable {
    /// Allocate everything the table will ever use, with counts of its own for
    /// `cfg.backends` backends.
    pub fn new(cfg: &ConnConfig) -> Self {
        Self::with_counts(cfg, Arc::new(BackendCounts::new(cfg.backends)))
    }

    /// Allocate everything the table will ever use; `counts` (shared with the other workers'
    /// tables) are bound, unbound and moved by this table's entries (`cfg.backends` is not
    /// used: the counts' own size is).
    pub fn with_counts(cfg: &ConnConfig, counts: Arc<BackendCounts>) -> Self {
        let cap = cfg.capacity.clamp(1, MAX_CAPACITY);
        let v6 = cfg.v6_capacity.min(cap);
        let mut entries = vec![Entry::default(); cap as usize];
        for (i, e) in entries.iter_mut().enumerate() {
            e.set_next(if i + 1 < cap as usize {
                i as u32 + 1
            } else {
                NIL
            });
            e.aux = NIL;
        }
        let pow = (cap as usize).next_power_of_two();
        let wheel = (pow / 16).clamp(MIN_WHEEL, MAX_WHEEL);
        let wheel1 = (MAX_WHEEL / wheel).min(pow / 8).max(1);
        let heads = (0..=wheel + wheel1)
            .map(|b| (cap + b as u32, cap + b as u32))
            .collect();
        ConnTable {
            entries,
            pool: Vec::new(),
            pool_free: Vec::new(),
            v6_capacity: v6,
            free_head: 0,
            len: 0,
            index: Index::new(cap as usize),
            heads,
            occupied: vec![0; wheel.div_ceil(64)],
            wheel,
            wheel_bits: wheel.trailing_zeros(),
            wheel1,
            cursor: 0,
            horizon: 0,
            counts,
            timeouts: Timeouts::default(),
            secure_tcp: false,
            strict_handshake: false,
            sync_meta: Vec::new(),
            seed: cfg.seed,
            embryonic: 0,
            emb_ring: vec![NIL; (pow / 16).max(MIN_RING).min(pow)],
            emb_head: 0,
            emb_tail: 0,
            todrop_counter: [0; 9],
            rng: cfg.seed | 1,
        }
    }

    /// Entries in use (connections and templates).
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Entries holding IPv6 addresses, and the maximum.
    pub fn v6_usage(&self) -> (u32, u32) {
        let used = self.pool.len() - self.pool_free.len();
        (used as u32, self.v6_capacity)
    }

    /// Bytes allocated now, per entry of capacity: entries, index slots, wheel heads, the
    /// embryonic ring and the IPv6 address blocks allocated so far (not the sync master's
    /// [`SyncMeta`]), rounded up.
    pub fn bytes_per_entry(&self) -> usize {
        self.bytes().div_ceil(self.entries.len())
    }

    /// Bytes allocated now by the table (see [`Self::bytes_per_entry`]).
    pub fn bytes(&self) -> usize {
        self.entries.len() * ENTRY_BYTES
            + self.index.slot_count() * 4
            + self.heads.len() * 8
            + self.occupied.len() * 8
            + self.emb_ring.len() * 4
            + self.pool.capacity() * 64
            + self.pool_free.capacity() * 4
    }

    /// Address and length in bytes of the big arrays (entries, index, embryonic ring), so that
    /// the worker can back them with transparent huge pages (`madvise(MADV_HUGEPAGE)` or, as
    /// they are already populated, `MADV_COLLAPSE`): with 4 KiB pages a random lookup in a
    /// large table pays two TLB misses besides its two cache misses. The table itself stays
    /// free of `unsafe`.
    pub fn memory_regions(&self) -> [(usize, usize); 3] {
        [
            (
                self.entries.as_ptr() as usize,
                self.entries.len() * ENTRY_BYTES,
            ),
            self.index.region(),
            (self.emb_ring.as_ptr() as usize, self.emb_ring.len() * 4),
        ]
    }

    /// The per-backend counts (implements [`xvs_schedulers::Load`]).
    pub fn counts(&self) -> &BackendCounts {
        &self.counts
    }

    /// Set a backend's upper/lower thresholds (see [`BackendCounts::set_thresholds`]).
    pub fn set_thresholds(&mut self, backend: BackendId, upper: u32, lower: u32) {
        self.counts.set_thresholds(backend, upper, lower);
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// `ipvsadm --set tcp tcpfin udp` (seconds, 0 keeps). Takes effect at each entry's next
    /// packet, as in IPVS.
    pub fn set_timeouts(&mut self, tcp_secs: u32, tcpfin_secs: u32, udp_secs: u32) {
        self.timeouts.set(tcp_secs, tcpfin_secs, udp_secs);
    }

    /// Replace the whole timeout table (milliseconds; clamped to 24 days).
    pub fn set_timeout_table(&mut self, t: Timeouts) {
        let mut t = t;
        for v in t.tcp.iter_mut().chain(t.sctp.iter_mut()) {
            *v = (*v).min(MAX_TIMEOUT_MS);
        }
        t.udp = t.udp.min(MAX_TIMEOUT_MS);
        t.other = t.other.min(MAX_TIMEOUT_MS);
        self.timeouts = t;
    }

    /// Use the `secure_tcp` transition table (IPVS's defense; off by default).
    pub fn set_secure_tcp(&mut self, on: bool) {
        self.secure_tcp = on;
    }

    /// Whether the `secure_tcp` transition table is in use.
    pub fn secure_tcp(&self) -> bool {
        self.secure_tcp
    }

    /// Strict handshake (an xvs choice; off by default, as in IPVS): a TCP segment from the
    /// backend with ACK and none of SYN, FIN, RST leaves a SYN_RECV or SYNACK entry in its
    /// state instead of moving it to ESTABLISHED, so only the client's ACK completes the
    /// handshake. IPVS's OUT table moves SYN_RECV to ESTABLISHED on such an ACK, which a backend
    /// sends when a SYN is repeated on a half-open connection: a flood that repeats tuples then
    /// pins entries for the ESTABLISHED timeout (900 s).
    pub fn set_strict_handshake(&mut self, on: bool) {
        self.strict_handshake = on;
    }

    /// Live embryonic entries (TCP SYN_RECV or SYNACK).
    pub fn embryonic(&self) -> u32 {
        self.embryonic
    }

    // ---------------------------------------------------------------- hashing and matching

    #[inline]
    fn hash(&self, kind: u64, a: u32, ap: u16, b: u32, bp: u16) -> u32 {
        hash(self.seed, kind, a, ap, b, bp)
    }

    #[inline]
    fn tuple_hash(&self, kind: u64, t: &Tuple) -> u32 {
        self.hash(kind, fold(&t.src), t.sport, fold(&t.dst), t.dport)
    }

    #[inline]
    fn addr(&self, e: &Entry, i: usize) -> IpAddr {
        if e.flags & POOL == 0 {
            IpAddr::V4(Ipv4Addr::from_bits(e.addrs[i]))
        } else {
            let v6 = e.flags & if i < 2 { V6 } else { DV6 } != 0;
            from16(&self.pool[e.addrs[0] as usize][i], v6)
        }
    }

    #[inline]
    fn in_hash(&self, e: &Entry) -> u32 {
        key_hash(self.seed, &self.pool, e, false)
    }

    #[inline]
    fn out_hash(&self, e: &Entry) -> u32 {
        key_hash(self.seed, &self.pool, e, true)
    }

    /// Remove index value `v` (entry number << 1 | direction) hashed under `h`.
    #[inline]
    fn unindex(&mut self, h: u32, v: u32) -> bool {
        let (entries, pool, seed) = (&self.entries, &self.pool, self.seed);
        self.index
            .remove(h, v, |w| match entries.get((w >> 1) as usize) {
                Some(e) => key_hash(seed, pool, e, w & 1 == 1),
                None => 0,
            })
    }

    /// Whether entry `e`'s addresses `i`, `j` equal `a`, `b`.
    #[inline]
    fn addrs_eq(&self, e: &Entry, i: usize, a: &IpAddr, j: usize, b: &IpAddr) -> bool {
        if e.flags & POOL == 0 {
            match (a, b) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    e.addrs[i] == a.to_bits() && e.addrs[j] == b.to_bits()
                }
                _ => false,
            }
        } else {
            let p = &self.pool[e.addrs[0] as usize];
            let v6 = e.flags & if i < 2 { V6 } else { DV6 } != 0;
            eq16(&p[i], v6, a) && eq16(&p[j], v6, b)
        }
    }

    #[inline]
    fn matches(&self, v: u32, t: &Tuple, template: bool) -> bool {
        let Some(e) = self.entries.get((v >> 1) as usize) else {
            return false;
        };
        if e.proto() != t.proto || (e.flags & TEMPLATE != 0) != template {
            return false;
        }
        if v & 1 == 0 {
            e.ports[0] == t.sport && e.ports[1] == t.dport && self.addrs_eq(e, 0, &t.src, 1, &t.dst)
        } else {
            e.ports[2] == t.sport && e.ports[3] == t.dport && self.addrs_eq(e, 2, &t.src, 3, &t.dst)
        }
    }

    /// The timeout (ms) the entry's timer was last armed with: see `TMO_INIT` and `TMO_AUX`.
    #[inline]
    fn timeout_of(&self, e: &Entry) -> u32 {
        if e.flags & (TEMPLATE | TMO_AUX) != 0 {
            e.aux
        } else if e.flags & TMO_INIT != 0 {
            INITIAL_TIMEOUT_MS
        } else {
            self.timeouts.get(e.proto(), e.state())
        }
    }

    // ---------------------------------------------------------------- wheel lists

    #[inline]
    fn next_of(&self, n: u32) -> u32 {
        let cap = self.entries.len() as u32;
        if n < cap {
            self.entries[n as usize].next()
        } else {
            self.heads[(n - cap) as usize].0
        }
    }

    #[inline]
    fn prev_of(&self, n: u32) -> u32 {
        let cap = self.entries.len() as u32;
        if n < cap {
            self.entries[n as usize].prev()
        } else {
            self.heads[(n - cap) as usize].1
        }
    }

    #[inline]
    fn set_next(&mut self, n: u32, v: u32) {
        let cap = self.entries.len() as u32;
        if n < cap {
            self.entries[n as usize].set_next(v);
        } else {
            self.heads[(n - cap) as usize].0 = v;
        }
    }

    #[inline]
    fn set_prev(&mut self, n: u32, v: u32) {
        let cap = self.entries.len() as u32;
        if n < cap {
            self.entries[n as usize].set_prev(v);
        } else {
            self.heads[(n - cap) as usize].1 = v;
        }
    }

    #[inline]
    fn sentinel(&self, bucket: usize) -> u32 {
        self.entries.len() as u32 + bucket as u32
    }

    #[inline]
    fn unlink(&mut self, idx: u32) {
        let n = self.next_of(idx);
        let p = self.prev_of(idx);
        self.set_next(p, n);
        self.set_prev(n, p);
    }

    /// The bucket for an entry expiring at `expires` (see the module documentation).
    #[inline]
    fn bucket(&self, expires: u32) -> usize {
        let tick = (expires >> TICK_SHIFT) as u64;
        let ahead = tick.wrapping_sub(self.cursor) & (TICKS - 1);
        if ahead < self.wheel as u64 || ahead >= TICKS / 2 {
            (tick & (self.wheel as u64 - 1)) as usize
        } else {
            self.wheel + ((tick >> self.wheel_bits) & (self.wheel1 as u64 - 1)) as usize
        }
    }

    /// The sentinel number of the pending list.
    #[inline]
    fn pending(&self) -> u32 {
        self.sentinel(self.wheel + self.wheel1)
    }

    #[inline(always)]
    fn queue(&mut self, idx: u32) {
        let b = self.bucket(self.entries[idx as usize].expires);
        let cap = self.entries.len() as u32;
        let s = cap + b as u32;
        // Linked first in the bucket's list (after its sentinel `s`).
        let Some(&(first, _)) = self.heads.get(b) else {
            return;
        };
        if b < self.wheel {
            if let Some(w) = self.occupied.get_mut(b >> 6) {
                *w |= 1 << (b & 63);
            }
        }
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.set_next(first);
            e.set_prev(s);
        }
        self.set_prev(first, idx);
        self.heads[b].0 = idx;
    }

    /// Move every entry of bucket sentinel `b` to the end of the pending list.
    fn splice_to_pending(&mut self, b: u32) {
        let cap = self.entries.len() as u32;
        let pending = self.pending();
        let (bi, pi) = ((b - cap) as usize, (pending - cap) as usize);
        let Some(&(first, last)) = self.heads.get(bi) else {
            return;
        };
        if first == b {
            return;
        }
        // `first` and `last` are entries; the pending list's tail may be its sentinel.
        let tail = self.heads[pi].1;
        self.set_next(tail, first);
        self.entries[first as usize].set_prev(tail);
        self.entries[last as usize].set_next(pending);
        self.heads[pi].1 = last;
        self.heads[bi] = (b, b);
    }

    /// Set an entry's expiry, moving it in the wheel only when it becomes earlier.
    #[inline(always)]
    fn arm(&mut self, idx: u32, expires: u32) {
        let old = self.entries[idx as usize].expires;
        self.entries[idx as usize].expires = expires;
        if (expires.wrapping_sub(old) as i32) < 0 {
            self.requeue(idx);
        }
    }

    /// [`Self::arm`]'s move to the earlier bucket (rare on the per-packet path: a timeout that
    /// became shorter).
    #[inline(never)]
    fn requeue(&mut self, idx: u32) {
        self.unlink(idx);
        self.queue(idx);
    }

    #[inline]
    fn live(&self, id: ConnId) -> Option<&Entry> {
        self.entries
            .get(id.0 as usize)
            .filter(|e| e.flags & USED != 0)
    }

    // ---------------------------------------------------------------- lookups

    /// Hint that `t` will be looked up soon: loads its home index slot and, when that slot's
    /// fingerprint matches, the entry it names (and an IPv6 entry's address block). Call it for
    /// every tuple of a batch before looking them up: the loads of different tuples overlap
    /// instead of each lookup waiting for two cache misses in turn (`lookup_hit_prefetch32` vs `lookup_hit` in `benches/conn.rs`).
    /// Plain loads, no `unsafe` prefetch instruction.
    #[inline]
    pub fn prefetch(&self, t: &Tuple) {
        let h = self.tuple_hash(t.proto as u64, t);
        let s = self.index.touch(h);
        let word = if let Some(v) = self.index.candidate(h, s) {
            match self.entries.get((v >> 1) as usize) {
                // IPv6: the comparison will read the address block too.
                Some(e) if e.flags & POOL != 0 => self
                    .pool
                    .get(e.addrs[0] as usize)
                    .map_or(0, |p| p[0][15] as u32),
                // First and last words: a 52-byte entry may span two cache lines.
                Some(e) => e.addrs[0] ^ u32::from(e.flags),
                None => 0,
            }
        } else {
            0
        };
        std::hint::black_box(word);
    }

    /// [`Self::prefetch`] in three passes over a batch, so that the loads of the whole batch
    /// are in flight at once (plain loads hold the CPU's reorder window until they complete, so
    /// each loop carries as little else as possible): `slot_hint` for every tuple (the hash, no
    /// memory access), then [`Self::prefetch_slot`] for every hint (loads the home index
    /// slots), then [`Self::prefetch_entry`] (loads the entries the slots name). Pipeline with
    /// batches of 32 at 1 M flows: 169 ns per frame with `prefetch`, 142 ns with two passes,
    /// 128 ns with three.
    #[inline]
    pub fn slot_hint(&self, t: &Tuple) -> SlotHint {
        SlotHint {
            hash: self.tuple_hash(t.proto as u64, t),
            slot: super::index::EMPTY,
        }
    }

    /// [`Self::slot_hint`] for an IPv4 tuple (addresses as host-order `u32`).
    #[inline]
    pub fn slot_hint_v4(&self, proto: u8, src: u32, sport: u16, dst: u32, dport: u16) -> SlotHint {
        SlotHint {
            hash: self.hash(proto as u64, src, sport, dst, dport),
            slot: super::index::EMPTY,
        }
    }

    /// The index hash of an IPv4 tuple (addresses as host-order `u32`), for
    /// [`Self::lookup_touch_v4`].
    #[inline(always)]
    pub fn hash_v4(&self, proto: u8, src: u32, sport: u16, dst: u32, dport: u16) -> u32 {
        self.hash(proto as u64, src, sport, dst, dport)
    }

    /// Second pass of [`Self::slot_hint`]: load the home index slot into the hint.
    #[inline]
    pub fn prefetch_slot(&self, hint: &mut SlotHint) {
        hint.slot = self.index.touch(hint.hash);
    }

    /// Third pass of [`Self::slot_hint`]: load the entry named by the first slot of the
    /// tuple's run (from its home slot, at most 16 slots) whose fingerprint
    /// matches, and an IPv6 entry's address block. Plain loads, no `unsafe`.
    #[inline]
    pub fn prefetch_entry(&self, hint: SlotHint) {
        let SlotHint { hash, slot } = hint;
        let Some(v) = self.index.first_candidate(hash, slot, PREFETCH_PROBE) else {
            return;
        };
        let word = match self.entries.get((v >> 1) as usize) {
            Some(e) if e.flags & POOL != 0 => self
                .pool
                .get(e.addrs[0] as usize)
                .map_or(0, |p| p[0][15] as u32),
            // First and last words: a 52-byte entry may span two cache lines.
            Some(e) => e.addrs[0] ^ u32::from(e.flags),
            None => 0,
        };
        std::hint::black_box(word);
    }

    /// Find the connection a packet belongs to, from either direction. Templates are never
    /// returned. An entry whose time has passed is expired on the spot (as its timer would have
    /// done) and not returned unless that expiry was deferred.
    #[inline]
    pub fn lookup(&mut self, t: &Tuple, now: Time) -> Option<(ConnId, Direction)> {
        let h = self.tuple_hash(t.proto as u64, t);
        let v = self.index.find(h, |v| self.matches(v, t, false))?;
        self.found(v, now)
    }

    /// [`Self::lookup`] for an IPv4 tuple (addresses as host-order `u32`): the same answer, with
    /// integer comparisons instead of `IpAddr` matching on the per-packet path.
    #[inline]
    pub fn lookup_v4(
        &mut self,
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        now: Time,
    ) -> Option<(ConnId, Direction)> {
        let v = self.find_v4::<true>(proto, src, sport, dst, dport)?;
        self.found(v, now)
    }

    /// The index value of the entry an IPv4 tuple names, expired or not. With `EXACT` false,
    /// an entry with an address block (IPv6 or mixed families) whose protocol and ports match
    /// is taken without comparing its addresses (no call in the probe loop): the caller must
    /// then look again with [`Self::lookup_v4`].
    #[inline(always)]
    fn find_v4<const EXACT: bool>(
        &self,
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
    ) -> Option<u32> {
        let h = self.hash(proto as u64, src, sport, dst, dport);
        self.index.find(h, |v| {
            self.v4_matches::<EXACT>(v, proto, src, sport, dst, dport)
        })
    }

    /// [`Self::find_v4`] without `EXACT` for a tuple hashing to `h`, out of line (see
    /// [`Self::lookup_touch_v4`]).
    #[cold]
    #[inline(never)]
    fn find_v4_probe(
        &self,
        h: u32,
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
    ) -> Option<u32> {
        self.index.find(h, |v| {
            self.v4_matches::<false>(v, proto, src, sport, dst, dport)
        })
    }

    /// Whether index value `v` names the non-template entry of this IPv4 tuple (`EXACT`
    /// false: see [`Self::find_v4`]).
    #[inline(always)]
    fn v4_matches<const EXACT: bool>(
        &self,
        v: u32,
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
    ) -> bool {
        let Some(e) = self.entries.get((v >> 1) as usize) else {
            return false;
        };
        if e.proto() != proto || e.flags & TEMPLATE != 0 {
            return false;
        }
        let (a, b) = if v & 1 == 0 { (0, 1) } else { (2, 3) };
        if e.ports[a] != sport || e.ports[b] != dport {
            return false;
        }
        if e.flags & POOL == 0 {
            e.addrs[a] == src && e.addrs[b] == dst
        } else {
            !EXACT || self.matches_mixed_v4(v, proto, src, sport, dst, dport)
        }
    }

    /// [`Self::find_v4`]'s match of an entry with an address block (mixed families: the IPv4
    /// side lives in the block). Out of line: rare, and kept out of the per-packet code.
    #[cold]
    #[inline(never)]
    fn matches_mixed_v4(
        &self,
        v: u32,
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
    ) -> bool {
        let t = Tuple {
            proto,
            src: IpAddr::V4(Ipv4Addr::from_bits(src)),
            sport,
            dst: IpAddr::V4(Ipv4Addr::from_bits(dst)),
            dport,
        };
        self.matches(v, &t, false)
    }

    /// [`Self::lookup_v4`] and, when the packet changes nothing but the entry's timer,
    /// [`Self::on_packet`] in one pass over the entry, without a call (the pipeline's
    /// established-flow path). Such a packet: the entry is live, has IPv4 addresses only, is
    /// not SYN-proxied nor due, its timer does not move earlier, and it is UDP, or TCP in
    /// ESTABLISHED hit by a segment (`tcp_flags`) with ACK and without SYN, FIN and RST —
    /// every transition table, `secure_tcp`'s too, keeps ESTABLISHED then — other than an
    /// outbound one of a NOOUTPUT entry; and `pass` accepts its direction and backend. Then
    /// does what `on_packet` does — timeout from
    /// the state, timer re-armed to `now + timeout`, inbound packets counted, the owning
    /// template marked ASSURED by a UDP reply — and answers [`TouchV4::Steady`] with the
    /// entry's forwarding fields. Otherwise
    /// nothing is changed: [`TouchV4::Miss`] when no entry has the tuple, else
    /// [`TouchV4::Other`] (the caller then calls [`Self::lookup_v4`], which may also expire
    /// the entry, and does the per-packet work itself). `h` is the tuple's hash
    /// ([`Self::hash_v4`], or the hash of its [`Self::slot_hint_v4`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn lookup_touch_v4(
        &mut self,
        h: u32,
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        tcp_flags: u8,
        now: Time,
        pass: impl FnOnce(Direction, BackendId) -> bool,
    ) -> TouchV4 {
        // The home slot first, inline; a probe beyond it (a collision or a displaced key) out
        // of line, so the common lookup has no loop.
        let home = self.index.touch(h);
        let v = if home == super::index::EMPTY {
            return TouchV4::Miss;
        } else if let Some(v) = self
            .index
            .candidate(h, home)
            .filter(|&v| self.v4_matches::<false>(v, proto, src, sport, dst, dport))
        {
            v
        } else {
            match self.find_v4_probe(h, proto, src, sport, dst, dport) {
                Some(v) => v,
                None => return TouchV4::Miss,
            }
        };
        let idx = v >> 1;
        let dir = if v & 1 == 0 {
            Direction::In
        } else {
            Direction::Out
        };
        let now_ms = ms32(now);
        let Some(e) = self.entries.get(idx as usize) else {
            return TouchV4::Other;
        };
        // The state stays: the timeout is that of ESTABLISHED (TCP) or UDP's.
        let timeout = match e.proto() {
            6 if e.state() == tcp::ESTABLISHED
                && tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_FIN | tcp::FLAG_RST | tcp::FLAG_ACK)
                    == tcp::FLAG_ACK
                && (dir == Direction::In || e.flags & NOOUTPUT == 0) =>
            {
                self.timeouts.get(6, tcp::ESTABLISHED)
            }
            17 => self.timeouts.get(17, e.state()),
            _ => return TouchV4::Other,
        };
        let expires = now_ms.wrapping_add(timeout);
        let steady = e.flags & (USED | POOL | TEMPLATE | SYNPROXY) == USED
            && !is_due(e.expires, now_ms)
            && (expires.wrapping_sub(e.expires) as i32) >= 0;
        if !steady {
            return TouchV4::Other;
        }
        if !pass(dir, BackendId(e.backend())) {
            return TouchV4::Other;
        }
        let proto = e.proto();
        let Some(e) = self.entries.get_mut(idx as usize) else {
            return TouchV4::Other;
        };
        if dir == Direction::In {
            e.in_pkts = e.in_pkts.wrapping_add(1);
        }
        set_timeout(e, timeout);
        let control = e.control();
        // `arm` for a timer that does not move earlier: the store alone.
        e.expires = expires;
        let fields = entry_v4(e);
        if proto == 17 && dir == Direction::Out && control != NIL {
            if let Some(ct) = self.entries.get_mut(control as usize) {
                if ct.flags & TEMPLATE != 0 {
                    ct.set_state(state::template::ASSURED);
                }
            }
        }
        TouchV4::Steady(ConnId(idx), dir, fields)
    }

    /// The end of a lookup that found index value `v`: expire the entry if its time has passed.
    #[inline]
    fn found(&mut self, v: u32, now: Time) -> Option<(ConnId, Direction)> {
        let idx = v >> 1;
        let now = ms32(now);
        let e = &self.entries[idx as usize];
        if is_due(e.expires, now) {
            let at = e.expires;
            if let Fired::Removed = self.fire(idx, at, now, false) {
                return None;
            }
        }
        let dir = if v & 1 == 0 {
            Direction::In
        } else {
            Direction::Out
        };
        Some((ConnId(idx), dir))
    }

    /// Find a valid persistence template (IPVS `ip_vs_ct_in_get`). Like [`Self::lookup`], a
    /// template whose time has passed is expired first (kept if it still controls entries).
    /// The timer is not re-armed: call [`Self::rearm`] or insert a connection with this
    /// template as `control`.
    pub fn template_lookup(&mut self, key: &TemplateKey, now: Time) -> Option<ConnId> {
        let t = Tuple {
            proto: key.proto,
            src: key.client,
            sport: 0,
            dst: key.vaddr,
            dport: key.vport,
        };
        let h = self.tuple_hash(key.proto as u64 | KIND_TEMPLATE, &t);
        let v = self
            .index
            .find(h, |v| v & 1 == 0 && self.matches(v, &t, true))?;
        let idx = v >> 1;
        let now = ms32(now);
        let e = &self.entries[idx as usize];
        if is_due(e.expires, now) {
            let at = e.expires;
            if let Fired::Removed = self.fire(idx, at, now, false) {
                return None;
            }
        }
        Some(ConnId(idx))
    }

    // ---------------------------------------------------------------- insertion

    fn alloc(&mut self, need_pool: bool) -> Option<(u32, u32)> {
        if self.free_head == NIL {
            return None;
        }
        let slot = if need_pool { self.alloc_block()? } else { 0 };
        let idx = self.free_head;
        self.free_head = self.entries[idx as usize].next();
        self.len += 1;
        Some((idx, slot))
    }

    /// An IPv6 address block: a freed one, or a new one while fewer than `v6_capacity` exist
    /// (the block array grows by doubling, up to that). `None` when there is no room.
    fn alloc_block(&mut self) -> Option<u32> {
        if let Some(slot) = self.pool_free.pop() {
            return Some(slot);
        }
        let n = self.pool.len();
        if n >= self.v6_capacity as usize {
            return None;
        }
        if n == self.pool.capacity() {
            let more = n.max(16).min(self.v6_capacity as usize - n);
            self.pool.try_reserve_exact(more).ok()?;
            // Room for every block to come back, so `remove` never allocates.
            let want = self.pool.capacity().saturating_sub(self.pool_free.len());
            self.pool_free.try_reserve_exact(want).ok()?;
        }
        self.pool.push([[0; 16]; 4]);
        Some(n as u32)
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        idx: u32,
        slot: u32,
        addrs: [&IpAddr; 4],
        ports: [u16; 4],
        flags: u16,
        proto: u8,
    ) {
        let pool = flags & POOL != 0;
        if pool {
            let p = &mut self.pool[slot as usize];
            for (d, a) in p.iter_mut().zip(addrs.iter()) {
                *d = octets(a);
            }
        }
        if let Some(m) = self.sync_meta.get_mut(idx as usize) {
            *m = SyncMeta::default();
        }
        let e = &mut self.entries[idx as usize];
        // The embryonic ring's mark stays with the slot (see `emb_ring`).
        let queued = e.flags & EMB_QUEUED;
        *e = Entry::default();
        if pool {
            e.addrs = [slot, 0, 0, 0];
        } else {
            for (d, a) in e.addrs.iter_mut().zip(addrs.iter()) {
                *d = match a {
                    IpAddr::V4(a) => a.to_bits(),
                    IpAddr::V6(_) => 0,
                };
            }
        }
        e.ports = ports;
        e.flags = flags | queued;
        e.set_backend_proto(0, proto);
        e.aux = NIL;
    }

    /// Create a connection entry (`ip_vs_conn_new` + `ip_vs_bind_dest`): state NONE, timeout
    /// 3 s, flags = method | INACTIVE (| NOOUTPUT for DR/TUN), counted in the backend's
    /// inactconns, indexed inbound and (NAT/FullNAT) outbound, linked to `c.control` when that
    /// is a live template. `None` when the table or the IPv6 address blocks are full, or the
    /// backend id is outside the counts (or ≥ 2^24) or the service number above
    /// [`MAX_SERVICE`] (the pipeline drops with `TableFull`). The caller then accounts the
    /// packet with [`Self::on_packet`] (or does both with [`Self::open`]).
    ///
    /// The tuples must not already be present (look up first); a duplicate is stored but is only
    /// reachable by handle until the older entry goes.
    pub fn insert(&mut self, c: &NewConn, now: Time) -> Option<ConnId> {
        let idx = self.create(c, ms32(now))?;
        self.queue(idx);
        Some(ConnId(idx))
    }

    /// [`Self::insert`] followed by [`Self::on_packet`] for the connection's first packet
    /// (inbound, `flags` as `on_packet` takes them): the same entry, counts and embryonic
    /// bookkeeping, but the entry is queued in the timing wheel once, at the expiry the packet
    /// sets, instead of at the initial 3 s and then again.
    #[inline]
    pub fn open(&mut self, c: &NewConn, flags: u8, now: Time) -> Option<ConnId> {
        if let (None, Some((addrs, ports))) = (c.control, v4_fields(c)) {
            return self.open_v4(c, addrs, ports, flags, ms32(now));
        }
        let idx = self.create(c, ms32(now))?;
        if let Some((_, exp)) = self.account(idx, Direction::In, flags, now) {
            self.entries[idx as usize].expires = exp;
        }
        self.queue(idx);
        Some(ConnId(idx))
    }

    /// [`Self::open`] of an IPv4 connection without a template (`addrs`, `ports` as the entry
    /// stores them): the entry written once in the state the packet leaves it in, as
    /// `on_packet` would have left it after `insert` — state from the IN (input-only for
    /// NOOUTPUT) transition out of NONE, counted in inactconns and moved to activeconns if that
    /// state is ESTABLISHED, timeout from the timeout table for that state, one inbound
    /// packet, counted as embryonic if it is SYN_RECV / SYNACK.
    #[inline(always)]
    fn open_v4(
        &mut self,
        c: &NewConn,
        addrs: [u32; 4],
        ports: [u16; 4],
        flags: u8,
        now: u32,
    ) -> Option<ConnId> {
        if !self.counts.contains(c.backend) {
            return None;
        }
        let proto = c.proto;
        let out = c.method.replies_through_director();
        let tdir = if out { TcpDir::In } else { TcpDir::InputOnly };
        let (state, active) = match proto {
            6 => {
                let s = state::tcp_next(0, tdir, flags, self.secure_tcp);
                (s, s == tcp::ESTABLISHED)
            }
            132 => {
                let s = state::sctp_next(0, tdir, flags);
                (s, s == sctp::ESTABLISHED)
            }
            _ => (0, false),
        };
        let timeout = self.timeouts.get(proto, state);
        let mut eflags = USED | IN_HASHED | c.method as u16;
        eflags |= if out { OUT_HASHED } else { NOOUTPUT };
        if !active {
            eflags |= INACTIVE;
        }
        let idx = self.free_head;
        let e = self.entries.get_mut(idx as usize)?;
        self.free_head = e.next();
        // The embryonic ring's mark stays with the slot (see `emb_ring`).
        let queued = e.flags & EMB_QUEUED;
        *e = Entry {
            addrs,
            ports,
            expires: now.wrapping_add(timeout),
            in_pkts: 1,
            aux: NIL,
            nx: (state as u32 & 0xF) << LINK_BITS,
            pv: ((c.service >> 16) & 0xF) << LINK_BITS,
            bp: (c.backend.0 & BACKEND_MASK) | (proto as u32) << 24,
            flags: eflags | queued,
            svc: c.service as u16,
        };
        self.link_v4(idx, proto, addrs, ports, out);
        self.counts.bind(c.backend, false);
        if active {
            self.counts.activate(c.backend);
        }
        self.queue(idx);
        if embryonic_state(proto, state) {
            self.embryonic_changed(idx, true);
        }
        Some(ConnId(idx))
    }

    /// [`Self::insert`] without queueing the entry in the timing wheel: its number.
    #[inline(always)]
    fn create(&mut self, c: &NewConn, now: u32) -> Option<u32> {
        if !self.counts.contains(c.backend) || c.backend.0 > BACKEND_MASK || c.service > MAX_SERVICE
        {
            return None;
        }
        let (laddr, lport) = match (c.method, c.local) {
            (Method::FullNat, Some(l)) => l,
            _ => (c.client, c.cport),
        };
        let idx = match v4_fields(c) {
            Some((addrs, ports)) => self.create_v4(c.proto, addrs, ports, c, now)?,
            None => {
                let ports = [c.cport, c.vport, c.dport, lport];
                self.create_pooled(c, [&c.client, &c.vaddr, &c.daddr, &laddr], ports, now)?
            }
        };
        if let Some(ct) = c.control {
            if ct.0 != idx && self.live(ct).is_some_and(|t| t.flags & TEMPLATE != 0) {
                self.entries[idx as usize].aux = ct.0;
                let t = &mut self.entries[ct.0 as usize];
                t.addrs[3] = t.addrs[3].saturating_add(1);
                let exp = now.wrapping_add(t.aux);
                self.arm(ct.0, exp);
            }
        }
        Some(idx)
    }

    /// The bookkeeping of a new IPv4 entry `idx` just written: counted, its sync metadata reset,
    /// its in key (and out key when replies pass the director) in the index.
    #[inline(always)]
    fn link_v4(&mut self, idx: u32, proto: u8, addrs: [u32; 4], ports: [u16; 4], out: bool) {
        self.len += 1;
        if let Some(m) = self.sync_meta.get_mut(idx as usize) {
            *m = SyncMeta::default();
        }
        let seed = self.seed;
        let hi = hash(seed, proto as u64, addrs[0], ports[0], addrs[1], ports[1]);
        self.index.insert(hi, idx << 1);
        if out {
            let ho = hash(seed, proto as u64, addrs[2], ports[2], addrs[3], ports[3]);
            self.index.insert(ho, idx << 1 | 1);
        }
    }

    /// [`Self::create`] of an entry whose four addresses are IPv4: written in one store, its
    /// keys hashed from the integers.
    #[inline(always)]
    fn create_v4(
        &mut self,
        proto: u8,
        addrs: [u32; 4],
        ports: [u16; 4],
        c: &NewConn,
        now: u32,
    ) -> Option<u32> {
        let out = c.method.replies_through_director();
        let flags = USED
            | IN_HASHED
            | INACTIVE
            | TMO_INIT
            | c.method as u16
            | if out { OUT_HASHED } else { NOOUTPUT };
        let idx = self.free_head;
        let e = self.entries.get_mut(idx as usize)?;
        self.free_head = e.next();
        // The embryonic ring's mark stays with the slot (see `emb_ring`).
        let queued = e.flags & EMB_QUEUED;
        *e = Entry {
            addrs,
            ports,
            expires: now.wrapping_add(INITIAL_TIMEOUT_MS),
            in_pkts: 0,
            aux: NIL,
            nx: 0,
            pv: ((c.service >> 16) & 0xF) << LINK_BITS,
            bp: (c.backend.0 & BACKEND_MASK) | (proto as u32) << 24,
            flags: flags | queued,
            svc: c.service as u16,
        };
        self.link_v4(idx, proto, addrs, ports, out);
        self.counts.bind(c.backend, false);
        Some(idx)
    }

    /// [`Self::create`] of an entry with an IPv6 address (its addresses in an address block).
    #[inline(never)]
    fn create_pooled(
        &mut self,
        c: &NewConn,
        addrs: [&IpAddr; 4],
        ports: [u16; 4],
        now: u32,
    ) -> Option<u32> {
        let out = c.method.replies_through_director();
        let v6 = addrs[0].is_ipv6() || addrs[1].is_ipv6();
        let dv6 = addrs[2].is_ipv6() || addrs[3].is_ipv6();
        let mut flags = USED | IN_HASHED | INACTIVE | c.method as u16;
        if v6 {
            flags |= V6;
        }
        if dv6 {
            flags |= DV6;
        }
        if v6 || dv6 {
            flags |= POOL;
        }
        if out {
            flags |= OUT_HASHED;
        } else {
            flags |= NOOUTPUT;
        }
        let (idx, slot) = self.alloc(flags & POOL != 0)?;
        self.fill(idx, slot, addrs, ports, flags, c.proto);
        {
            let e = &mut self.entries[idx as usize];
            e.set_backend_proto(c.backend.0, c.proto);
            e.set_service(c.service);
            e.flags |= TMO_INIT;
            e.expires = now.wrapping_add(INITIAL_TIMEOUT_MS);
        }
        let e = self.entries[idx as usize];
        let hi = self.in_hash(&e);
        self.index.insert(hi, idx << 1);
        if out {
            let ho = self.out_hash(&e);
            self.index.insert(ho, idx << 1 | 1);
        }
        self.counts.bind(c.backend, false);
        Some(idx)
    }

    /// Create a persistence template (IPVS.md §5): keyed by `key`, bound to `backend` at
    /// `daddr:dport` (counted in persistconns), timeout `timeout_secs` (the service's
    /// persistence timeout), armed from `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_template(
        &mut self,
        key: &TemplateKey,
        backend: BackendId,
        daddr: IpAddr,
        dport: u16,
        service: u32,
        method: Method,
        timeout_secs: u32,
        now: Time,
    ) -> Option<ConnId> {
        if !self.counts.contains(backend) || backend.0 > BACKEND_MASK || service > MAX_SERVICE {
            return None;
        }
        let v6 = key.client.is_ipv6() || key.vaddr.is_ipv6();
        let dv6 = daddr.is_ipv6();
        let mut flags = USED | IN_HASHED | TEMPLATE | INACTIVE | method as u16;
        if !method.replies_through_director() {
            flags |= NOOUTPUT;
        }
        if v6 {
            flags |= V6;
        }
        if dv6 {
            flags |= DV6;
        }
        if v6 || dv6 {
            flags |= POOL;
        }
        let (idx, slot) = self.alloc(flags & POOL != 0)?;
        self.fill(
            idx,
            slot,
            [&key.client, &key.vaddr, &daddr, &daddr],
            [0, key.vport, dport, dport],
            flags,
            key.proto,
        );
        let timeout = timeout_secs.saturating_mul(1000).min(MAX_TIMEOUT_MS);
        {
            let e = &mut self.entries[idx as usize];
            e.set_backend_proto(backend.0, key.proto);
            e.set_service(service);
            e.aux = timeout;
            // `[3]` of a template is its n_control.
            e.addrs[3] = 0;
            e.expires = ms32(now).wrapping_add(timeout);
            e.set_state(state::template::NONE);
        }
        let e = self.entries[idx as usize];
        let h = self.in_hash(&e);
        self.index.insert(h, idx << 1);
        self.queue(idx);
        self.counts.bind(backend, true);
        Some(ConnId(idx))
    }

    /// Invalidate a template whose backend is gone or quiesced (`ip_vs_check_template`): it is
    /// no longer found by [`Self::template_lookup`], shows vport/dport 65535 in listings, keeps
    /// its timer and its `control` links, and expires normally.
    pub fn invalidate_template(&mut self, id: ConnId) {
        let Some(e) = self.live(id).copied() else {
            return;
        };
        if e.flags & TEMPLATE == 0 || e.flags & IN_HASHED == 0 {
            return;
        }
        let h = self.in_hash(&e);
        self.unindex(h, id.0 << 1);
        let e = &mut self.entries[id.0 as usize];
        e.flags &= !IN_HASHED;
        e.ports[1] = 0xFFFF;
        e.ports[2] = 0xFFFF;
    }

    /// Re-arm an entry's timer to `now + its timeout` (IPVS `ip_vs_conn_put`), e.g. a template
    /// after it was used for a new connection that could not be created.
    pub fn rearm(&mut self, id: ConnId, now: Time) {
        if let Some(e) = self.live(id) {
            let exp = ms32(now).wrapping_add(self.timeout_of(e));
            self.arm(id.0, exp);
        }
    }

    // ---------------------------------------------------------------- per packet

    /// Account one packet of connection `id` travelling in `dir`: protocol state transition
    /// (`flags`: for TCP the header's flag byte, for SCTP the effective chunk type
    /// ([`state::sctp::effective_chunk`]), ignored otherwise; IN/OUT/input-only table, NOOUTPUT
    /// cleared by the first OUT packet), active/inactive counts moved on a change into or out of
    /// ESTABLISHED, the owning template marked ASSURED, the timeout set from the state and the
    /// timer re-armed to `now + timeout`; inbound packets counted. Returns the new state.
    #[inline]
    pub fn on_packet(&mut self, id: ConnId, dir: Direction, flags: u8, now: Time) -> u8 {
        match self.account(id.0, dir, flags, now) {
            Some((state, exp)) => {
                self.arm(id.0, exp);
                state
            }
            None => 0,
        }
    }

    /// [`Self::on_packet`] on entry `idx` but the re-arming of its timer: the new state and
    /// the expiry to arm. `None` if the entry is not live.
    #[inline(always)]
    fn account(&mut self, idx: u32, dir: Direction, flags: u8, now: Time) -> Option<(u8, u32)> {
        let e = self.entries.get_mut(idx as usize)?;
        if e.flags & USED == 0 {
            return None;
        }
        let mut assure = false;
        let mut emb_change = None;
        let old = e.state();
        let timeout = match e.proto() {
            proto @ (6 | 132) => {
                let mut tdir = match dir {
                    Direction::In => TcpDir::In,
                    Direction::Out => TcpDir::Out,
                };
                if e.flags & NOOUTPUT != 0 {
                    if dir == Direction::Out {
                        e.flags &= !NOOUTPUT;
                    } else {
                        tdir = TcpDir::InputOnly;
                    }
                }
                // The same bookkeeping for both protocols; only the transition table differs.
                let (new, established) = if proto == 6 {
                    let mut next = state::tcp_next(old, tdir, flags, self.secure_tcp);
                    if self.strict_handshake
                        && tdir == TcpDir::Out
                        && flags & (tcp::FLAG_SYN | tcp::FLAG_FIN | tcp::FLAG_RST | tcp::FLAG_ACK)
                            == tcp::FLAG_ACK
                        && matches!(old, tcp::SYN_RECV | tcp::SYNACK)
                    {
                        next = old;
                    }
                    (next, tcp::ESTABLISHED)
                } else {
                    (state::sctp_next(old, tdir, flags), sctp::ESTABLISHED)
                };
                if new != old && e.flags & TEMPLATE == 0 {
                    let b = BackendId(e.backend());
                    if e.flags & INACTIVE == 0 && new != established {
                        e.flags |= INACTIVE;
                        self.counts.deactivate(b);
                    } else if e.flags & INACTIVE != 0 && new == established {
                        e.flags &= !INACTIVE;
                        self.counts.activate(b);
                    }
                    assure = new == established;
                }
                let was = embryonic_state(proto, old);
                let is = embryonic_state(proto, new) && e.flags & TEMPLATE == 0;
                if new != old {
                    e.set_state(new);
                }
                if was != is {
                    emb_change = Some(is);
                }
                self.timeouts.get(proto, new)
            }
            p => {
                assure = p == 17 && dir == Direction::Out;
                self.timeouts.get(p, old)
            }
        };
        if dir == Direction::In {
            e.in_pkts = e.in_pkts.wrapping_add(1);
        }
        set_timeout(e, timeout);
        let control = e.control();
        let state = e.state();
        let exp = ms32(now).wrapping_add(timeout);
        if let Some(is) = emb_change {
            self.embryonic_changed(idx, is);
        }
        if assure && control != NIL {
            if let Some(ct) = self.entries.get_mut(control as usize) {
                if ct.flags & TEMPLATE != 0 {
                    ct.set_state(state::template::ASSURED);
                }
            }
        }
        Some((state, exp))
    }

    /// Mark a live entry as SYN-proxied ([`super::flags::SYNPROXY`]); cleared when the slot is
    /// reused.
    pub fn set_synproxy(&mut self, id: ConnId) {
        if let Some(e) = self.entries.get_mut(id.0 as usize) {
            if e.flags & USED != 0 {
                e.flags |= SYNPROXY;
            }
        }
    }

    /// Whether a live entry is SYN-proxied.
    #[inline]
    pub fn is_synproxy(&self, id: ConnId) -> bool {
        self.live(id).is_some_and(|e| e.flags & SYNPROXY != 0)
    }

    /// Put a live TCP connection into `state` without a packet (the SYN proxy: SYN_SENT when
    /// it opens toward the backend, ESTABLISHED when the backend answers): counts, embryonic
    /// accounting and timeout as [`Self::on_packet`] would do for that state.
    pub fn set_state(&mut self, id: ConnId, new: u8, now: Time) {
        let idx = id.0;
        let Some(e) = self.entries.get_mut(idx as usize) else {
            return;
        };
        if e.flags & (USED | TEMPLATE) != USED || e.proto() != 6 {
            return;
        }
        let b = BackendId(e.backend());
        if e.flags & INACTIVE == 0 && new != tcp::ESTABLISHED {
            e.flags |= INACTIVE;
            self.counts.deactivate(b);
        } else if e.flags & INACTIVE != 0 && new == tcp::ESTABLISHED {
            e.flags &= !INACTIVE;
            self.counts.activate(b);
        }
        let was = embryonic_state(6, e.state());
        let is = embryonic_state(6, new);
        e.set_state(new);
        let timeout = self.timeouts.get(6, new);
        set_timeout(e, timeout);
        let exp = ms32(now).wrapping_add(timeout);
        self.arm(idx, exp);
        if was != is {
            self.embryonic_changed(idx, is);
        }
    }

    // ---------------------------------------------------------------- expiry

    /// The entry's timer fires at `at` (≤ `now`): `ip_vs_conn_expire`. An entry that still
    /// controls others is kept with timeout 60 s, re-armed from `at` (repeatedly if the sweep
    /// is late); else it is removed. `chain` = IPVS's `cp->timeout == 0` deletion (`conn_del`):
    /// the owning template goes too when it has no other entries and is not ASSURED.
    fn fire(&mut self, idx: u32, at: u32, now: u32, chain: bool) -> Fired {
        let e = &mut self.entries[idx as usize];
        if e.n_control() > 0 {
            e.aux = DEFER_MS;
            let late = now.wrapping_sub(at);
            let turns = if (late as i32) < 0 {
                0
            } else {
                late / DEFER_MS
            };
            let exp = at.wrapping_add(DEFER_MS.wrapping_mul(turns + 1));
            e.expires = exp;
            self.unlink(idx);
            self.queue(idx);
            return Fired::Deferred;
        }
        self.remove(idx, chain);
        Fired::Removed
    }

    /// Unhash, unbind and free an entry with no controlled entries.
    fn remove(&mut self, idx: u32, chain: bool) {
        let mut idx = idx;
        let mut chain = chain;
        loop {
            let e = self.entries[idx as usize];
            if e.flags & POOL == 0 {
                // IPv4: the keys' hashes from the entry's integers.
                let seed = self.seed;
                if e.flags & IN_HASHED != 0 {
                    let kind = e.proto() as u64
                        | if e.flags & TEMPLATE != 0 {
                            KIND_TEMPLATE
                        } else {
                            0
                        };
                    let [a, b, ..] = e.addrs;
                    let h = hash(seed, kind, a, e.ports[0], b, e.ports[1]);
                    self.unindex(h, idx << 1);
                }
                if e.flags & OUT_HASHED != 0 {
                    let [.., d, l] = e.addrs;
                    let h = hash(seed, e.proto() as u64, d, e.ports[2], l, e.ports[3]);
                    self.unindex(h, idx << 1 | 1);
                }
            } else {
                if e.flags & IN_HASHED != 0 {
                    let h = self.in_hash(&e);
                    self.unindex(h, idx << 1);
                }
                if e.flags & OUT_HASHED != 0 {
                    let h = self.out_hash(&e);
                    self.unindex(h, idx << 1 | 1);
                }
            }
            self.unlink(idx);
            if e.flags & TEMPLATE == 0 && embryonic_state(e.proto(), e.state()) {
                self.embryonic -= 1;
            }
            self.counts.unbind(
                BackendId(e.backend()),
                e.flags & TEMPLATE != 0,
                e.flags & INACTIVE != 0,
            );
            if e.flags & POOL != 0 {
                self.pool_free.push(e.addrs[0]);
            }
            let slot = &mut self.entries[idx as usize];
            slot.flags &= EMB_QUEUED;
            slot.set_next(self.free_head);
            self.free_head = idx;
            self.len -= 1;
            let ct = e.control();
            if ct == NIL {
                return;
            }
            let Some(t) = self.entries.get_mut(ct as usize) else {
                return;
            };
            if t.flags & (USED | TEMPLATE) != USED | TEMPLATE {
                return;
            }
            t.addrs[3] = t.addrs[3].saturating_sub(1);
            let drop = chain && t.addrs[3] == 0 && t.state() != state::template::ASSURED;
            if !drop {
                return;
            }
            chain = t.control() != NIL;
            idx = ct;
        }
    }

    /// Expire an entry now (`ip_vs_conn_expire_now`): removed, unless it still controls
    /// entries, in which case it is kept 60 s more. Returns true if removed.
    pub fn expire_now(&mut self, id: ConnId, now: Time) -> bool {
        if self.live(id).is_none() {
            return false;
        }
        let now = ms32(now);
        matches!(self.fire(id.0, now, now, false), Fired::Removed)
    }

    /// Delete an entry (`ip_vs_conn_del`): as [`Self::expire_now`], and if the entry had an
    /// owning template that is now unused and not ASSURED, that goes too.
    pub fn delete(&mut self, id: ConnId, now: Time) -> bool {
        let Some(e) = self.live(id) else {
            return false;
        };
        let chain = e.control() != NIL;
        let now = ms32(now);
        matches!(self.fire(id.0, now, now, chain), Fired::Removed)
    }

    /// Advance the expiry sweep to `now`, doing at most about `budget` units of work (one per
    /// entry examined or bucket visited). Returns the number of entries removed. Call it once
    /// per batch (or per idle poll) with a small budget, e.g. 64. While two or more due
    /// entries are pending, what removing the next 8 of them reads is loaded
    /// first (`prefetch_pending`), so that their cache misses overlap.
    pub fn expire(&mut self, now: Time, budget: u32) -> u32 {
        let now_ms = now.0 / 1_000_000;
        let now32 = now_ms as u32;
        let now_tick = now_ms >> TICK_SHIFT;
        let wheel = self.wheel as u64;
        if now_tick > self.cursor + wheel {
            self.cursor = now_tick - wheel;
            // Turns were skipped, and their level-1 buckets with them: take them all.
            for j in 0..self.wheel1 {
                self.splice_to_pending(self.sentinel(self.wheel + j));
            }
        }
        self.horizon = self.horizon.max(now_tick);
        let pending = self.pending();
        let mut work = 0u32;
        let mut removed = 0u32;
        loop {
            // Due entries taken since the last `prefetch_pending` (which loads the next ones).
            let mut taken = EXPIRE_PREFETCH;
            while work < budget {
                let idx = self.next_of(pending);
                if idx == pending {
                    break;
                }
                work += 1;
                let at = self.entries[idx as usize].expires;
                if is_due(at, now32) {
                    if taken == EXPIRE_PREFETCH {
                        taken = 0;
                        // Overlapping needs two entries or more: a lone one is simply taken.
                        if self.next_of(idx) != pending {
                            self.prefetch_pending(now32, EXPIRE_PREFETCH.min(budget - work + 1));
                        }
                    }
                    taken += 1;
                    if let Fired::Removed = self.fire(idx, at, now32, false) {
                        removed += 1;
                    }
                } else {
                    self.unlink(idx);
                    self.queue(idx);
                }
            }
            // The passed ticks, until one brings entries to the pending list: entering a turn,
            // its level-1 bucket; then the bucket of the tick `cursor`. A run of empty level-0
            // buckets (clear bits of `occupied`) is passed in one step, each bucket still
            // counted as one unit of work.
            let pi = self.wheel + self.wheel1;
            while work < budget && self.cursor < now_tick {
                let c = self.cursor;
                let pos = (c & (wheel - 1)) as usize;
                if pos == 0 {
                    let j =
                        self.wheel + ((c >> self.wheel_bits) & (self.wheel1 as u64 - 1)) as usize;
                    self.take_bucket(j);
                }
                let bits = self.occupied.get(pos >> 6).map_or(1, |w| w >> (pos & 63));
                if bits & 1 == 0 && self.heads[pi].0 == pending {
                    // Empty buckets up to the next marked one or the end of this word.
                    let run = if bits == 0 {
                        64 - (pos & 63) as u64
                    } else {
                        u64::from(bits.trailing_zeros())
                    };
                    let n = run.min(now_tick - c).min(u64::from(budget - work));
                    self.cursor = c + n;
                    work += n as u32;
                    continue;
                }
                self.take_bucket(pos);
                if let Some(w) = self.occupied.get_mut(pos >> 6) {
                    *w &= !(1 << (pos & 63));
                }
                self.cursor = c + 1;
                work += 1;
                if self.heads[pi].0 != pending {
                    break;
                }
            }
            if work >= budget || self.heads[pi].0 == pending {
                break;
            }
        }
        removed
    }

    /// Load what removing the first `n` (at most [`EXPIRE_PREFETCH`]) entries of the pending
    /// list will read, for those due at `now` (IPv4 entries that are not templates): the home
    /// index slots of their keys, then the entries named by the slots after each key's in its
    /// run (the backward shift rehashes their keys). Walking the list loads the entries one
    /// after the other, but the loads of the slots, and then of the entries they name,
    /// overlap instead of each removal waiting for its misses in turn (the three passes of
    /// [`Self::slot_hint`]). Plain loads, no `unsafe`; only a hint.
    #[inline(never)]
    fn prefetch_pending(&self, now: u32, n: u32) {
        let pending = self.pending();
        let entries = self.entries.as_slice();
        let seed = self.seed;
        // (hash, index value) of the keys to be removed.
        let mut keys = [(0u32, 0u32); 2 * EXPIRE_PREFETCH as usize];
        let mut k = 0;
        let mut idx = self.next_of(pending);
        for _ in 0..n.min(EXPIRE_PREFETCH) {
            let Some(e) = entries.get(idx as usize) else {
                break;
            };
            if is_due(e.expires, now) && e.flags & (POOL | TEMPLATE) == 0 {
                let [a, b, d, l] = e.addrs;
                let [pa, pb, pd, pl] = e.ports;
                let proto = e.proto() as u64;
                if e.flags & IN_HASHED != 0 {
                    keys[k] = (hash(seed, proto, a, pa, b, pb), idx << 1);
                    k += 1;
                }
                if e.flags & OUT_HASHED != 0 {
                    keys[k] = (hash(seed, proto, d, pd, l, pl), idx << 1 | 1);
                    k += 1;
                }
            }
            idx = e.next();
        }
        let keys = &keys[..k];
        let mut word = 0u32;
        for &(h, _) in keys {
            word ^= self.index.touch(h);
        }
        for &(h, v) in keys {
            self.index.run_after(h, v, PREFETCH_PROBE, |w| {
                word ^= entries.get((w >> 1) as usize).map_or(0, |e| e.addrs[0]);
            });
        }
        std::hint::black_box(word);
    }

    /// Move the entries of bucket `b` (a level-0 or level-1 bucket number) to the pending list.
    #[inline(always)]
    fn take_bucket(&mut self, b: usize) {
        let s = self.sentinel(b);
        if self.heads.get(b).is_some_and(|h| h.0 != s) {
            self.splice_to_pending(s);
        }
    }

    /// One step of `expire_nodest_conn` for a removed backend (IPVS
    /// `ip_vs_expire_nodest_conn_flush`): examine up to `budget` slots from `from`, deleting each
    /// entry bound to `backend` that controls nothing, and its template once that template is
    /// unused. Returns the slot to continue from, or `None` when the whole table was visited.
    pub fn expire_backend(
        &mut self,
        backend: BackendId,
        now: Time,
        from: u32,
        budget: u32,
    ) -> Option<u32> {
        let now32 = ms32(now);
        let cap = self.entries.len() as u32;
        let end = from.saturating_add(budget).min(cap);
        for idx in from.min(cap)..end {
            let e = self.entries[idx as usize];
            if e.flags & USED == 0 || e.backend() != backend.0 || e.n_control() > 0 {
                continue;
            }
            let ct = e.control();
            self.fire(idx, now32, now32, ct != NIL);
            if ct != NIL {
                if let Some(t) = self.entries.get(ct as usize) {
                    if t.flags & USED != 0 && t.n_control() == 0 {
                        let chain = t.control() != NIL;
                        self.fire(ct, now32, now32, chain);
                    }
                }
            }
        }
        (end < cap).then_some(end)
    }

    // ---------------------------------------------------------------- connection sync

    /// Keep the per-entry bookkeeping a sync master needs ([`SyncMeta`]; 8 bytes per entry of
    /// capacity, allocated here once). Idempotent.
    pub fn enable_sync_meta(&mut self) {
        if self.sync_meta.is_empty() {
            self.sync_meta = vec![SyncMeta::default(); self.entries.len()];
        }
    }

    /// The sync master's bookkeeping of a live entry (`None` before
    /// [`Self::enable_sync_meta`]).
    #[inline]
    pub fn sync_meta_mut(&mut self, id: ConnId) -> Option<&mut SyncMeta> {
        self.live(id)?;
        self.sync_meta.get_mut(id.0 as usize)
    }

    /// What the sync master's decision reads of a live entry, without building a [`Conn`].
    #[inline]
    pub fn sync_view(&self, id: ConnId) -> Option<SyncView> {
        let e = self.live(id)?;
        Some(SyncView {
            proto: e.proto(),
            state: e.state(),
            template: e.flags & TEMPLATE != 0,
            control: (e.control() != NIL).then_some(ConnId(e.control())),
            in_pkts: e.in_pkts,
            timeout_ms: self.timeout_of(e),
            method: Method::from_bits(e.flags),
        })
    }

    /// Count one more inbound packet on an entry (a template, when a connection it controls
    /// is considered for sync: the kernel's `atomic_inc_return(&ct->in_pkts)`). Returns the new
    /// count.
    #[inline]
    pub fn bump_in_pkts(&mut self, id: ConnId) -> u32 {
        match self.entries.get_mut(id.0 as usize) {
            Some(e) if e.flags & USED != 0 => {
                e.in_pkts = e.in_pkts.wrapping_add(1);
                e.in_pkts
            }
            _ => 0,
        }
    }

    /// The expiry (wrapping ms) of a live entry.
    #[inline]
    pub fn expires_at(&self, id: ConnId) -> Option<u32> {
        self.live(id).map(|e| e.expires)
    }

    /// Install a connection or template received from a sync master, as the kernel's backup
    /// does (`ip_vs_proc_conn`): an existing non-template entry for the same client and virtual
    /// tuple but another backend is expired and replaced when the message is active (not
    /// INACTIVE), and the message is ignored otherwise (the expiry notice of a replaced
    /// connection); an existing entry for the same backend is updated — its INACTIVE flag (the
    /// backend's active/inactive counts move with it), state, `in_pkts` and timeout; a new entry
    /// is bound to `c.backend` with the master's INACTIVE flag and counted accordingly.
    /// Templates are keyed like [`Self::template_lookup`] (client network, port 0) and count in
    /// persistconns. The state is taken as sent: counts follow the INACTIVE flag only, as on a
    /// kernel backup. Entries made here own no templates (the kernel's backup links none).
    pub fn install(&mut self, c: &Install, now: Time) -> Installed {
        let existing = if c.template {
            let key = TemplateKey {
                proto: c.proto,
                client: c.client,
                vaddr: c.vaddr,
                vport: c.vport,
            };
            self.template_lookup(&key, now)
        } else {
            let t = Tuple {
                proto: c.proto,
                src: c.client,
                sport: c.cport,
                dst: c.vaddr,
                dport: c.vport,
            };
            self.lookup(&t, now)
                .filter(|&(_, dir)| dir == Direction::In)
                .map(|(id, _)| id)
        };
        let mut replaced = false;
        if let Some(id) = existing {
            let e = self.entries[id.0 as usize];
            let same = e.ports[2] == c.dport && self.addr(&e, 2) == c.daddr;
            if !c.template && !same {
                if c.inactive {
                    return Installed::Stale;
                }
                self.expire_now(id, now);
                replaced = true;
            } else {
                self.update_synced(id, c, now);
                return Installed::Updated(id);
            }
        }
        let id = if c.template {
            let key = TemplateKey {
                proto: c.proto,
                client: c.client,
                vaddr: c.vaddr,
                vport: c.vport,
            };
            self.insert_template(
                &key, c.backend, c.daddr, c.dport, c.service, c.method, 0, now,
            )
        } else {
            self.insert(
                &NewConn {
                    proto: c.proto,
                    client: c.client,
                    cport: c.cport,
                    vaddr: c.vaddr,
                    vport: c.vport,
                    daddr: c.daddr,
                    dport: c.dport,
                    local: c.local,
                    backend: c.backend,
                    service: c.service,
                    method: c.method,
                    control: None,
                },
                now,
            )
        };
        let Some(id) = id else {
            return Installed::Full;
        };
        self.update_synced(id, c, now);
        if replaced {
            Installed::Replaced(id)
        } else {
            Installed::New(id)
        }
    }

    /// The update half of [`Self::install`] on a live entry.
    fn update_synced(&mut self, id: ConnId, c: &Install, now: Time) {
        let timeout = c.timeout_ms.min(MAX_TIMEOUT_MS);
        let e = &mut self.entries[id.0 as usize];
        if e.flags & TEMPLATE == 0 {
            let b = BackendId(e.backend());
            if e.flags & INACTIVE != 0 && !c.inactive {
                e.flags &= !INACTIVE;
                self.counts.activate(b);
            } else if e.flags & INACTIVE == 0 && c.inactive {
                e.flags |= INACTIVE;
                self.counts.deactivate(b);
            }
        }
        let e = &mut self.entries[id.0 as usize];
        let template = e.flags & TEMPLATE != 0;
        let was = !template && embryonic_state(e.proto(), e.state());
        let is = !template && embryonic_state(e.proto(), c.state);
        e.set_state(c.state);
        e.in_pkts = c.in_pkts;
        if template {
            e.aux = timeout;
        } else if e.control() == NIL {
            e.flags = (e.flags & !TMO_INIT) | TMO_AUX;
            e.aux = timeout;
        } else {
            // The control link holds the spot: the timer runs out at the synced time, and the
            // timeout reported is the table's for the state.
            e.flags &= !(TMO_INIT | TMO_AUX);
        }
        let exp = ms32(now).wrapping_add(timeout);
        self.arm(id.0, exp);
        if was != is {
            self.embryonic_changed(id.0, is);
        }
    }

    // ---------------------------------------------------------------- flood defence

    /// Entry `idx` became embryonic (`true`) or stopped being so: count it, and queue it in
    /// the ring of embryonic entries. A full ring leaves the entry out of it (it is still
    /// counted and expires normally, but [`Self::evict_embryonic`] cannot choose it).
    #[inline(always)]
    fn embryonic_changed(&mut self, idx: u32, is: bool) {
        if !is {
            self.embryonic -= 1;
            return;
        }
        self.embryonic += 1;
        if self
            .entries
            .get(idx as usize)
            .is_none_or(|e| e.flags & EMB_QUEUED != 0)
        {
            // Its earlier item is still in the ring and stands for it.
            return;
        }
        self.emb_push(idx);
    }

    /// Queue entry `idx` (live, embryonic, without an item) at the tail of the embryonic ring.
    #[inline(never)]
    fn emb_push(&mut self, idx: u32) {
        // Skip a few stale items at the head, so the ring rarely fills.
        for _ in 0..4 {
            if self.emb_head == self.emb_tail || self.emb_valid(self.emb_head) {
                break;
            }
            self.emb_pop();
        }
        let mask = self.emb_ring.len() as u32 - 1;
        if self.emb_tail.wrapping_sub(self.emb_head) > mask {
            return;
        }
        let pos = self.emb_tail;
        self.emb_ring[(pos & mask) as usize] = idx;
        self.entries[idx as usize].flags |= EMB_QUEUED;
        self.emb_tail = pos.wrapping_add(1);
    }

    /// Take the item at the head of the ring: its entry number (the entry is no longer queued).
    fn emb_pop(&mut self) -> u32 {
        let mask = self.emb_ring.len() as u32 - 1;
        let idx = self.emb_ring[(self.emb_head & mask) as usize];
        self.emb_head = self.emb_head.wrapping_add(1);
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.flags &= !EMB_QUEUED;
        }
        idx
    }

    /// Whether ring position `pos` names a live embryonic entry.
    #[inline]
    fn emb_valid(&self, pos: u32) -> bool {
        let mask = self.emb_ring.len() as u32 - 1;
        let idx = self.emb_ring[(pos & mask) as usize];
        self.entries.get(idx as usize).is_some_and(|e| {
            e.flags & (USED | TEMPLATE) == USED && embryonic_state(e.proto(), e.state())
        })
    }

    /// Remove the embryonic entry that became embryonic first (of those in the ring), looking
    /// at no more than `budget` ring items; its owning template is left to its own timer.
    /// Returns whether an entry was removed. The pipeline calls this for a new TCP SYN when
    /// the embryonic entries reach their share of the table or the table is full, so a flood
    /// of SYNs recycles its own entries instead of locking everyone out.
    pub fn evict_embryonic(&mut self, now: Time, budget: u32) -> bool {
        let now = ms32(now);
        for _ in 0..budget {
            if self.emb_head == self.emb_tail {
                return false;
            }
            let valid = self.emb_valid(self.emb_head);
            let idx = self.emb_pop();
            if valid {
                if let Fired::Removed = self.fire(idx, now, now, false) {
                    return true;
                }
            }
        }
        false
    }

    /// One step of IPVS's `drop_entry` defence (`ip_vs_random_dropentry`): look at `slots`
    /// randomly chosen slots of the table and delete (`ip_vs_conn_del`) what the kernel would:
    /// entries that control nothing and are a template not ASSURED, a TCP SYN_RECV / SYNACK or
    /// SCTP INIT1 / INIT entry, or — chosen by [`Self::todrop_entry`] — a TCP / SCTP
    /// ESTABLISHED entry or an entry of another protocol. (The kernel draws 1/32 of its hash
    /// buckets per second; the pipeline draws 1/32 of the slots.) Returns the number deleted.
    pub fn drop_random_entries(&mut self, now: Time, slots: u32) -> u32 {
        let now32 = ms32(now);
        let cap = self.entries.len() as u64;
        let mut dropped = 0;
        for _ in 0..slots {
            // xorshift64
            let mut x = self.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng = x;
            let idx = (((x >> 32) * cap) >> 32) as u32;
            let e = self.entries[idx as usize];
            if e.flags & USED == 0 || e.n_control() > 0 {
                continue;
            }
            let drop = if e.flags & TEMPLATE != 0 {
                e.state() != state::template::ASSURED
            } else {
                match (e.proto(), e.state()) {
                    (6, tcp::SYN_RECV | tcp::SYNACK) => true,
                    (6, tcp::ESTABLISHED) => self.todrop_entry(&e, now32),
                    (6, _) => false,
                    (132, sctp::INIT1 | sctp::INIT) => true,
                    (132, sctp::ESTABLISHED) => self.todrop_entry(&e, now32),
                    (132, _) => false,
                    _ => self.todrop_entry(&e, now32),
                }
            };
            if drop {
                let chain = e.control() != NIL;
                if let Fired::Removed = self.fire(idx, now32, now32, chain) {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// `todrop_entry` (`ip_vs_conn.c`): an entry idle for at least 60 s (since its timer was
    /// last armed) with `in_pkts` = i in 1..=8 is chosen once every i candidates with that
    /// count; entries with 0 or more than 8 inbound packets never are.
    fn todrop_entry(&mut self, e: &Entry, now: u32) -> bool {
        let armed_at = e.expires.wrapping_sub(self.timeout_of(e));
        if (now.wrapping_sub(armed_at) as i32) < 60_000 {
            return false;
        }
        let i = e.in_pkts;
        if i == 0 || i > 8 {
            return false;
        }
        let c = &mut self.todrop_counter[i as usize];
        *c = c.saturating_sub(1);
        if *c > 0 {
            return false;
        }
        *c = i as u8;
        true
    }

    // ---------------------------------------------------------------- reading

    /// A copy of the entry's fields, or `None` for a free slot.
    pub fn get(&self, id: ConnId) -> Option<Conn> {
        let e = self.live(id)?;
        let fullnat = Method::from_bits(e.flags) == Method::FullNat;
        Some(Conn {
            proto: e.proto(),
            client: self.addr(e, 0),
            cport: e.ports[0],
            vaddr: self.addr(e, 1),
            vport: e.ports[1],
            daddr: self.addr(e, 2),
            dport: e.ports[2],
            // A template's local address is its backend's (`[3]` holds its n_control).
            local: fullnat.then(|| {
                let l = if e.flags & TEMPLATE != 0 { 2 } else { 3 };
                (self.addr(e, l), e.ports[l])
            }),
            backend: BackendId(e.backend()),
            service: e.service(),
            method: Method::from_bits(e.flags),
            flags: e.flags & !INTERNAL,
            state: e.state(),
            timeout_ms: self.timeout_of(e),
            control: (e.control() != NIL).then_some(ConnId(e.control())),
            n_control: e.n_control(),
            in_pkts: e.in_pkts,
        })
    }

    /// The forwarding fields of a live entry whose addresses are all IPv4, without building
    /// `IpAddr`s or the rest of a [`Conn`]: what the pipeline needs per packet. `None` for an
    /// entry with an IPv6 address (use [`Self::get`]) or no live entry.
    #[inline(always)]
    pub fn get_v4(&self, id: ConnId) -> Option<ConnV4> {
        let e = self.live(id)?;
        if e.flags & POOL != 0 {
            return None;
        }
        Some(entry_v4(e))
    }

    /// The backend of a live entry.
    #[inline]
    pub fn backend(&self, id: ConnId) -> Option<BackendId> {
        self.live(id).map(|e| BackendId(e.backend()))
    }

    /// The method of a live entry.
    #[inline]
    pub fn method(&self, id: ConnId) -> Option<Method> {
        self.live(id).map(|e| Method::from_bits(e.flags))
    }

    /// Milliseconds until the entry's timer fires (0 if due).
    pub fn expires_in(&self, id: ConnId, now: Time) -> Option<u32> {
        self.live(id).map(|e| {
            let d = e.expires.wrapping_sub(ms32(now)) as i32;
            d.max(0) as u32
        })
    }

    /// Every live entry, in slot order, as `ipvsadm -Lnc` rows. (Cold path: walks the slab.)
    pub fn list(&self, now: Time) -> impl Iterator<Item = ConnListing> + '_ {
        (0..self.entries.len() as u32).filter_map(move |i| {
            let id = ConnId(i);
            let c = self.get(id)?;
            let ms = self.expires_in(id, now).unwrap_or(0);
            Some(ConnListing {
                id,
                proto: c.proto,
                template: c.is_template(),
                expires_secs: ms / 1000,
                state: c.state_name(),
                client: SocketAddr::new(c.client, c.cport),
                virt: SocketAddr::new(c.vaddr, c.vport),
                backend: SocketAddr::new(c.daddr, c.dport),
            })
        })
    }

    /// Check every internal invariant (tests and debugging; O(capacity)). Returns a description
    /// of the first violation.
    pub fn check(&self) -> Result<(), String> {
        let cap = self.entries.len() as u32;
        let mut used = 0u32;
        let mut keys = 0usize;
        let mut n_control = vec![0u32; cap as usize];
        for (i, e) in self.entries.iter().enumerate() {
            if e.flags & USED == 0 {
                continue;
            }
            used += 1;
            let i = i as u32;
            if e.flags & IN_HASHED != 0 {
                keys += 1;
                let h = self.in_hash(e);
                if self.index.find(h, |v| v == i << 1).is_none() {
                    return Err(format!("entry {i} missing from the inbound index"));
                }
            }
            if e.flags & OUT_HASHED != 0 {
                keys += 1;
                let h = self.out_hash(e);
                if self.index.find(h, |v| v == i << 1 | 1).is_none() {
                    return Err(format!("entry {i} missing from the outbound index"));
                }
            }
            if e.control() != NIL {
                match self.entries.get(e.control() as usize) {
                    Some(t) if t.flags & USED != 0 => n_control[e.control() as usize] += 1,
                    _ => return Err(format!("entry {i} controlled by a free slot")),
                }
            }
        }
        if used != self.len {
            return Err(format!("len {} but {used} used slots", self.len));
        }
        let emb = self
            .entries
            .iter()
            .filter(|e| {
                e.flags & (USED | TEMPLATE) == USED && embryonic_state(e.proto(), e.state())
            })
            .count() as u32;
        if emb != self.embryonic {
            return Err(format!(
                "{} embryonic counted but {emb} found",
                self.embryonic
            ));
        }
        if keys != self.index.occupied() {
            return Err(format!(
                "{keys} keys but {} index slots",
                self.index.occupied()
            ));
        }
        let (entries, pool, seed) = (&self.entries, &self.pool, self.seed);
        self.index.check(|w| match entries.get((w >> 1) as usize) {
            Some(e) => key_hash(seed, pool, e, w & 1 == 1),
            None => 0,
        })?;
        for (i, e) in self.entries.iter().enumerate() {
            if e.flags & USED != 0 && e.n_control() != n_control[i] {
                return Err(format!(
                    "entry {i}: n_control {} but {} controlled",
                    e.n_control(),
                    n_control[i]
                ));
            }
        }
        // Wheel: every used entry on exactly one list, each bucket's next visit not after the
        // entry's expiry tick.
        let mut seen = vec![false; cap as usize];
        let mut on_lists = 0u32;
        for b in 0..self.heads.len() {
            let s = self.sentinel(b);
            let mut n = self.next_of(s);
            let mut prev = s;
            while n != s {
                if n >= cap {
                    return Err(format!("bucket {b} links to sentinel {n}"));
                }
                if self.prev_of(n) != prev {
                    return Err(format!("bucket {b}: broken prev link at {n}"));
                }
                let e = &self.entries[n as usize];
                if e.flags & USED == 0 || seen[n as usize] {
                    return Err(format!("bucket {b}: free or repeated entry {n}"));
                }
                seen[n as usize] = true;
                on_lists += 1;
                if b < self.wheel && self.occupied[b >> 6] & (1 << (b & 63)) == 0 {
                    return Err(format!(
                        "bucket {b} holds entries but is not marked occupied"
                    ));
                }
                if b < self.wheel + self.wheel1 {
                    // Next visit of bucket b (level 0: its tick; level 1: the start of its
                    // turn), and the expiry tick, both relative to the cursor (29-bit tick
                    // arithmetic, as the expiry is a wrapping 32-bit ms count).
                    let c = self.cursor;
                    let w0 = self.wheel as u64;
                    let visit = if b < self.wheel {
                        (b as u64).wrapping_sub(c) & (w0 - 1)
                    } else {
                        let j = (b - self.wheel) as u64;
                        let first = (c >> self.wheel_bits) + u64::from(c & (w0 - 1) != 0);
                        let k = j.wrapping_sub(first) & (self.wheel1 as u64 - 1);
                        ((first + k) << self.wheel_bits) - c
                    };
                    let exp = ((e.expires >> TICK_SHIFT) as u64).wrapping_sub(c) & (TICKS - 1);
                    // exp in the upper half: expiry before the cursor (due, after a skip).
                    // A bucket visited later than the expiry is fine only while the sweep is
                    // still catching up to the time it was last given (a lagging cursor after
                    // a skip or a small budget): every tick before that is visited first.
                    let catching_up = c + visit < self.horizon;
                    if exp < TICKS / 2 && visit > exp && !catching_up {
                        return Err(format!(
                            "entry {n} in bucket {b}: visited {visit} ticks ahead, expires {exp}"
                        ));
                    }
                }
                prev = n;
                n = self.next_of(n);
            }
        }
        if on_lists != used {
            return Err(format!("{used} entries but {on_lists} on wheel lists"));
        }
        let mut free = 0u32;
        let mut f = self.free_head;
        while f != NIL && free <= cap {
            if self.entries[f as usize].flags & USED != 0 {
                return Err(format!("used entry {f} on the free list"));
            }
            free += 1;
            f = self.entries[f as usize].next();
        }
        if free + used != cap {
            return Err(format!("{free} free + {used} used != {cap}"));
        }
        // Embryonic ring: each item names an entry marked queued, no entry twice, and every
        // marked entry has an item.
        let mask = self.emb_ring.len() as u32 - 1;
        let items = self.emb_tail.wrapping_sub(self.emb_head);
        if items > mask + 1 {
            return Err(format!("{items} ring items in a ring of {}", mask + 1));
        }
        let mut queued = vec![false; cap as usize];
        for k in 0..items {
            let idx = self.emb_ring[(self.emb_head.wrapping_add(k) & mask) as usize];
            match self.entries.get(idx as usize) {
                Some(e) if e.flags & EMB_QUEUED != 0 && !queued[idx as usize] => {
                    queued[idx as usize] = true;
                }
                _ => return Err(format!("ring item {k}: entry {idx} not queued or repeated")),
            }
        }
        let marked = self
            .entries
            .iter()
            .filter(|e| e.flags & EMB_QUEUED != 0)
            .count() as u32;
        if marked != items {
            return Err(format!(
                "{marked} entries marked queued, {items} ring items"
            ));
        }
        Ok(())
    }
}
