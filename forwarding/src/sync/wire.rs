//! The IPVS sync datagram: encoding (version 1) and decoding (versions 1 and 0), byte for byte
//! as `net/netfilter/ipvs/ip_vs_sync.c` builds and accepts it, plus xvs's own messages in a
//! form the kernel ignores. All multi-byte fields are big-endian unless said otherwise.
//!
//! **Version 1 header** (`struct ip_vs_sync_mesg`, 8 bytes):
//! `reserved u8 = 0 | syncid u8 | size u16 | nr_conns u8 | version u8 = 1 | spare u16 = 0`.
//! `size` is the whole datagram's length. Then `nr_conns` entries, each starting on a 4-byte
//! boundary (zero padding between entries, none after the last one, padding counted in `size`):
//!
//! ```text
//!  0 type u8 (bit 0: IPv6)   1 protocol u8   2 ver_size u16 = version (4 bits, 0) << 12 | size
//!  4 flags u32 (HASHED cleared)              8 state u16   10 cport  12 vport  14 dport (u16)
//! 16 fwmark u32             20 timeout u32 (seconds)
//! 24 caddr, vaddr, daddr    (IPv4: 3 × 4 bytes, entry 36 bytes; IPv6: 3 × 16 bytes, 72 bytes)
//! then options: type u8, len u8 (≥ 1), data — 1 SEQ_DATA (24 bytes: in_seq then out_seq, each
//! init_seq, delta, previous_delta u32), 2 PE_DATA (≤ 255), 3 PE_NAME (≤ 16); type bit 0x40
//! marks an option a receiver may ignore when it does not know it.
//! ```
//! An entry's `size` covers the fixed part and its options, without padding.
//!
//! **Version 0** (`sync_version=0`, IPv4 only): header `nr_conns u8 | syncid u8 | size u16`,
//! entries of 24 bytes: `reserved u8 | protocol u8 | cport, vport, dport u16 | caddr, vaddr,
//! daddr u32 | flags u16 | state u16`, each followed by 24 bytes of sequence data when its flags
//! have a SEQ bit. The kernel copies that sequence data as its in-memory `struct ip_vs_seq` pair,
//! so it travels in the master's byte order and the receiving kernel reads it in its own:
//! [`decode`] reads it in this host's byte order, as a kernel backup on this machine would.
//!
//! **Which format**: the receiver (`ip_vs_process_message`) drops datagrams shorter than 4
//! bytes, whose `size` is not their length, or whose syncid differs from its own when its own
//! is not 0. A datagram is version 1 when byte 0 is 0, the version byte is 1 and the spare
//! field 0; anything else is read as version 0 (byte 0 then counts the entries). Version-1
//! entries are processed one by one: an entry that breaks the framing (too short, overrunning,
//! unknown entry version, bad type, bad or duplicate option) drops the rest of the datagram
//! while the entries before it stay installed; an entry with an unknown mandatory option is
//! skipped alone. [`decode`] mirrors that: what it decoded before an error stays in the output
//! vector, and the `skipped` field of [`Decoded::V1`] counts the entries skipped alone. Trailing
//! bytes after the last entry are ignored, as the kernel ignores them. Protocol and state range
//! checks are left to the installer, as the kernel does them while installing.
//!
//! **xvs messages** (not in the kernel protocol, e.g. bulk resync):
//!
//! ```text
//!  0  0             (v0 nr_conns / v1 reserved)   1  syncid   2  size u16 = datagram length
//!  4  0             (v1 nr_conns)                 5  0 (v1 version: not 1)   6  0 u16 (spare)
//!  8  "XVS"         11 extension version = 1      12 message type            13 0 0 0 (reserved)
//! 16  node u64      the requester (BulkRequest) or the node the answer was for (BulkDone)
//! 24  entries u32   (BulkDone only)
//! ```
//! Message types: 1 = [`XvsMessage::BulkRequest`] (24 bytes), 2 = [`XvsMessage::BulkDone`]
//! (28 bytes). A kernel receiver passes the header checks (the size is right; the syncid is the
//! sender's), sees version ≠ 1 and takes the version-0 path with byte 0 = 0 entries: nothing
//! happens and nothing is logged. [`decode`] recognises them by byte 0 = 0 (not version 1) and
//! the magic at byte 8; an unknown extension version, type or length is a [`DecodeError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{flags, SyncConn};

/// Length of the version-0 header (`struct ip_vs_sync_mesg_v0`), the shortest datagram accepted.
pub const V0_HEADER_LEN: usize = 4;
/// Length of the version-1 header (`struct ip_vs_sync_mesg`).
pub const HEADER_LEN: usize = 8;
/// The version byte of version-1 messages (`SYNC_PROTO_VER`).
pub const SYNC_PROTO_VER: u8 = 1;
/// Fixed part of an IPv4 version-1 entry (`struct ip_vs_sync_v4`).
pub const V4_ENTRY_LEN: usize = 36;
/// Fixed part of an IPv6 version-1 entry (`struct ip_vs_sync_v6`).
pub const V6_ENTRY_LEN: usize = 72;
/// A version-0 entry (`struct ip_vs_sync_conn_v0`).
pub const V0_ENTRY_LEN: usize = 24;
/// The sequence data after a version-0 entry (`struct ip_vs_sync_conn_options`).
pub const V0_SEQ_LEN: usize = 24;
/// Most entries one message can count (`nr_conns` is one byte).
pub const MAX_ENTRIES: usize = 255;

/// Option type: sequence-adjustment data.
pub const OPT_SEQ_DATA: u8 = 1;
/// Option type: persistence-engine data.
pub const OPT_PE_DATA: u8 = 2;
/// Option type: persistence-engine name.
pub const OPT_PE_NAME: u8 = 3;
/// Option type bit: the receiver may ignore the option when it does not know the type.
pub const OPT_F_PARAM: u8 = 0x40;

/// Magic after the header of xvs messages.
pub const XVS_MAGIC: [u8; 3] = *b"XVS";
/// The xvs extension version [`encode_xvs`] writes and [`decode`] accepts.
pub const XVS_EXT_VERSION: u8 = 1;

const STYPE_F_INET6: u8 = 1;
const SVER_SHIFT: u16 = 12;
const SVER_MASK: u16 = 0x0fff;
const SEQ_DATA_LEN: usize = 24;
/// `IP_VS_PENAME_MAXLEN`.
const PE_NAME_MAXLEN: usize = 16;

const XVS_BULK_REQUEST: u8 = 1;
const XVS_BULK_DONE: u8 = 2;
const XVS_BODY: usize = 16;
const XVS_BULK_REQUEST_LEN: usize = 24;
const XVS_BULK_DONE_LEN: usize = 28;

/// What one datagram was, when [`decode`] accepted its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A version-1 message. `count` is the header's entry count; every entry was processed:
    /// `count - skipped` were appended to the output.
    V1 {
        syncid: u8,
        count: u8,
        /// Entries skipped alone because they carried an option that is neither known nor
        /// marked optional (the kernel: "BACKUP, Unknown mandatory param").
        skipped: u8,
    },
    /// A version-0 message; all `count` entries were appended to the output.
    V0 { syncid: u8, count: u8 },
    /// An xvs message (no entries).
    Xvs { syncid: u8, msg: XvsMessage },
}

/// xvs-only messages (not part of the kernel protocol), e.g. for bulk resync. Their format
/// (module documentation) makes a kernel receiver ignore them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XvsMessage {
    /// "Send me your whole table": a director that (re)starts asks its peers. `node`
    /// identifies the requester (random per process).
    BulkRequest { node: u64 },
    /// Sent after the last message of a bulk answer to `node`: how many entries were sent.
    BulkDone { node: u64, entries: u32 },
}

/// Why [`decode`] rejected a datagram or stopped in it. Entries decoded before the error stay
/// in the output vector. Each kind names the kernel's log message it mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 4-byte version-0 header ("BACKUP, message header too short").
    #[error("datagram shorter than the 4-byte sync header")]
    TooShort,
    /// The header's size field is not the datagram's length ("BACKUP, bogus message size").
    #[error("size field differs from the datagram length")]
    SizeMismatch,
    /// Another sync id than ours, and ours is not 0 ("BACKUP, Ignoring syncid = %d").
    #[error("message for another sync id")]
    ForeignSyncid,
    /// Fewer than 36 bytes left where the header count promises another version-1 entry
    /// ("BACKUP, Dropping buffer, too small").
    #[error("datagram ends before the next entry")]
    EntryTooShort,
    /// A version-1 entry's size runs past the datagram ("BACKUP, Dropping buffer, msg > buffer").
    #[error("entry size runs past the datagram")]
    EntryOverrun,
    /// A version-1 entry's version nibble is not 0 ("BACKUP, Dropping buffer, Unknown version").
    #[error("unknown entry version {0}")]
    EntryVersion(u8),
    /// Entry type with bits other than the IPv6 bit and without it (`ip_vs_proc_sync_conn`
    /// error -10).
    #[error("unknown entry type {0:#x}")]
    EntryType(u8),
    /// The entry's size is smaller than the fixed part of its family (error -20).
    #[error("entry size smaller than its fixed part")]
    EntrySize,
    /// Fewer than 2 bytes left in the entry for an option header (error -30).
    #[error("option header truncated")]
    OptionTruncated,
    /// An option of length 0 or running past its entry (error -40).
    #[error("option length 0 or past the entry")]
    OptionLength,
    /// A sequence-data option that is not 24 bytes ("BACKUP, bogus conn options length",
    /// error -50).
    #[error("sequence option not 24 bytes")]
    SeqOptionLength,
    /// A known option twice in one entry ("found twice", errors -50, -60, -70); the value is
    /// the option type without the optional bit.
    #[error("option {0} found twice")]
    DuplicateOption(u8),
    /// A persistence-engine name longer than 16 bytes ("bogus par.data len > 16", error -70).
    #[error("persistence-engine name longer than 16 bytes")]
    PeNameLength,
    /// The datagram ends inside a version-0 entry ("BACKUP v0, bogus conn").
    #[error("datagram ends inside a version-0 entry")]
    V0EntryTruncated,
    /// The datagram ends inside a version-0 entry's sequence data ("BACKUP v0, Dropping buffer
    /// bogus conn options").
    #[error("datagram ends inside version-0 sequence data")]
    V0SeqTruncated,
    /// An xvs message of an extension version this build does not know (xvs only).
    #[error("unknown xvs extension version {0}")]
    XvsVersion(u8),
    /// An xvs message of a type this build does not know (xvs only).
    #[error("unknown xvs message type {0}")]
    XvsType(u8),
    /// An xvs message whose length does not fit its type (xvs only).
    #[error("xvs message length does not fit its type")]
    XvsLength,
}

impl DecodeError {
    /// Every kind's [`name`](Self::name), in [`index`](Self::index) order (for counter arrays).
    pub const NAMES: [&'static str; 18] = [
        "too_short",
        "size_mismatch",
        "foreign_syncid",
        "entry_too_short",
        "entry_overrun",
        "entry_version",
        "entry_type",
        "entry_size",
        "option_truncated",
        "option_length",
        "seq_option_length",
        "duplicate_option",
        "pe_name_length",
        "v0_entry_truncated",
        "v0_seq_truncated",
        "xvs_version",
        "xvs_type",
        "xvs_length",
    ];

    /// The kind's position in [`NAMES`](Self::NAMES) (values carried by a kind are ignored).
    pub const fn index(&self) -> usize {
        match self {
            DecodeError::TooShort => 0,
            DecodeError::SizeMismatch => 1,
            DecodeError::ForeignSyncid => 2,
            DecodeError::EntryTooShort => 3,
            DecodeError::EntryOverrun => 4,
            DecodeError::EntryVersion(_) => 5,
            DecodeError::EntryType(_) => 6,
            DecodeError::EntrySize => 7,
            DecodeError::OptionTruncated => 8,
            DecodeError::OptionLength => 9,
            DecodeError::SeqOptionLength => 10,
            DecodeError::DuplicateOption(_) => 11,
            DecodeError::PeNameLength => 12,
            DecodeError::V0EntryTruncated => 13,
            DecodeError::V0SeqTruncated => 14,
            DecodeError::XvsVersion(_) => 15,
            DecodeError::XvsType(_) => 16,
            DecodeError::XvsLength => 17,
        }
    }

    /// A short snake_case name for per-reason drop counters.
    pub const fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ne32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ipv4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn ipv6(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, port)),
        IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0)),
    }
}

/// Decode one datagram. `local_syncid`: the backup's sync id (0 accepts any). Appends the
/// entries to `out`, also those decoded before an error (the kernel has installed those when it
/// drops the rest of a datagram).
pub fn decode(
    buf: &[u8],
    local_syncid: u8,
    out: &mut Vec<SyncConn>,
) -> Result<Decoded, DecodeError> {
    if buf.len() < V0_HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    if usize::from(be16(buf, 2)) != buf.len() {
        return Err(DecodeError::SizeMismatch);
    }
    let syncid = buf[1];
    if local_syncid != 0 && syncid != local_syncid {
        return Err(DecodeError::ForeignSyncid);
    }
    // A 4..7-byte datagram has no version byte: the kernel reads stale buffer bytes there; it
    // is read as version 0 here, which is what a zeroed buffer gives.
    let v1 = buf.len() >= HEADER_LEN
        && buf[0] == 0
        && buf[5] == SYNC_PROTO_VER
        && buf[6] == 0
        && buf[7] == 0;
    if v1 {
        decode_v1(buf, syncid, out)
    } else if buf[0] == 0 && buf.len() >= 12 && buf[8..11] == XVS_MAGIC {
        decode_xvs(buf).map(|msg| Decoded::Xvs { syncid, msg })
    } else {
        decode_v0(buf, syncid, out)
    }
}

fn decode_v1(buf: &[u8], syncid: u8, out: &mut Vec<SyncConn>) -> Result<Decoded, DecodeError> {
    let count = buf[4];
    let mut skipped = 0u8;
    let mut next = HEADER_LEN;
    for _ in 0..count {
        let p = next;
        // The kernel checks room for an IPv4 entry here, whatever the entry's family.
        if p + V4_ENTRY_LEN > buf.len() {
            return Err(DecodeError::EntryTooShort);
        }
        let ver_size = be16(buf, p + 2);
        let size = usize::from(ver_size & SVER_MASK);
        let end = p + size;
        if end > buf.len() {
            return Err(DecodeError::EntryOverrun);
        }
        if ver_size >> SVER_SHIFT != 0 {
            return Err(DecodeError::EntryVersion((ver_size >> SVER_SHIFT) as u8));
        }
        match decode_v1_entry(buf, p, end)? {
            Some(c) => out.push(c),
            None => skipped += 1,
        }
        next = p + ((size + 3) & !3);
    }
    Ok(Decoded::V1 {
        syncid,
        count,
        skipped,
    })
}

/// One version-1 entry at `buf[p..end]` (`end` ≤ `buf.len()`, `p + 36` ≤ `buf.len()`).
/// `Ok(None)`: skipped alone (unknown mandatory option).
fn decode_v1_entry(buf: &[u8], p: usize, end: usize) -> Result<Option<SyncConn>, DecodeError> {
    let typ = buf[p];
    let v6 = typ & STYPE_F_INET6 != 0;
    if !v6 && typ != 0 {
        return Err(DecodeError::EntryType(typ));
    }
    let fixed = if v6 { V6_ENTRY_LEN } else { V4_ENTRY_LEN };
    if p + fixed > end {
        return Err(DecodeError::EntrySize);
    }
    let mut seq = None;
    let mut has_pe = false;
    let mut seen = 0u8; // bit (type - 1) per known option type
    let mut q = p + fixed;
    while q < end {
        if q + 2 > end {
            return Err(DecodeError::OptionTruncated);
        }
        let ptype = buf[q];
        let plen = usize::from(buf[q + 1]);
        q += 2;
        if plen == 0 || q + plen > end {
            return Err(DecodeError::OptionLength);
        }
        let kind = ptype & !OPT_F_PARAM;
        match kind {
            OPT_SEQ_DATA | OPT_PE_DATA | OPT_PE_NAME => {
                if kind == OPT_SEQ_DATA && plen != SEQ_DATA_LEN {
                    return Err(DecodeError::SeqOptionLength);
                }
                if kind == OPT_PE_NAME && plen > PE_NAME_MAXLEN {
                    return Err(DecodeError::PeNameLength);
                }
                let bit = 1u8 << (kind - 1);
                if seen & bit != 0 {
                    return Err(DecodeError::DuplicateOption(kind));
                }
                seen |= bit;
                match kind {
                    OPT_SEQ_DATA => {
                        let s = |i: usize| be32(buf, q + 4 * i);
                        seq = Some([(s(0), s(1), s(2)), (s(3), s(4), s(5))]);
                    }
                    OPT_PE_DATA => has_pe = true,
                    _ => {}
                }
            }
            _ if ptype & OPT_F_PARAM == 0 => return Ok(None),
            _ => {}
        }
        q += plen;
    }
    let (caddr, vaddr, daddr): (IpAddr, IpAddr, IpAddr) = if v6 {
        (
            ipv6(buf, p + 24).into(),
            ipv6(buf, p + 40).into(),
            ipv6(buf, p + 56).into(),
        )
    } else {
        (
            ipv4(buf, p + 24).into(),
            ipv4(buf, p + 28).into(),
            ipv4(buf, p + 32).into(),
        )
    };
    let timeout = be32(buf, p + 20);
    Ok(Some(SyncConn {
        protocol: buf[p + 1],
        flags: be32(buf, p + 4),
        state: be16(buf, p + 8),
        client: sock(caddr, be16(buf, p + 10)),
        virt: sock(vaddr, be16(buf, p + 12)),
        dest: sock(daddr, be16(buf, p + 14)),
        fwmark: be32(buf, p + 16),
        timeout: (timeout != 0).then_some(timeout),
        seq,
        has_pe,
    }))
}

fn decode_v0(buf: &[u8], syncid: u8, out: &mut Vec<SyncConn>) -> Result<Decoded, DecodeError> {
    let count = buf[0];
    let mut p = V0_HEADER_LEN;
    for _ in 0..count {
        if p + V0_ENTRY_LEN > buf.len() {
            return Err(DecodeError::V0EntryTruncated);
        }
        let fl = u32::from(be16(buf, p + 20));
        let seq = if fl & flags::SEQ_MASK != 0 {
            if p + V0_ENTRY_LEN + V0_SEQ_LEN > buf.len() {
                return Err(DecodeError::V0SeqTruncated);
            }
            let s = |i: usize| ne32(buf, p + V0_ENTRY_LEN + 4 * i);
            Some([(s(0), s(1), s(2)), (s(3), s(4), s(5))])
        } else {
            None
        };
        out.push(SyncConn {
            protocol: buf[p + 1],
            flags: fl,
            state: be16(buf, p + 22),
            client: SocketAddr::V4(SocketAddrV4::new(ipv4(buf, p + 8), be16(buf, p + 2))),
            virt: SocketAddr::V4(SocketAddrV4::new(ipv4(buf, p + 12), be16(buf, p + 4))),
            dest: SocketAddr::V4(SocketAddrV4::new(ipv4(buf, p + 16), be16(buf, p + 6))),
            fwmark: 0,
            timeout: None,
            seq,
            has_pe: false,
        });
        p += V0_ENTRY_LEN + if seq.is_some() { V0_SEQ_LEN } else { 0 };
    }
    Ok(Decoded::V0 { syncid, count })
}

fn decode_xvs(buf: &[u8]) -> Result<XvsMessage, DecodeError> {
    let version = buf[11];
    if version != XVS_EXT_VERSION {
        return Err(DecodeError::XvsVersion(version));
    }
    if buf.len() < XVS_BODY {
        return Err(DecodeError::XvsLength);
    }
    let node = || u64::from(be32(buf, 16)) << 32 | u64::from(be32(buf, 20));
    match buf[12] {
        XVS_BULK_REQUEST if buf.len() == XVS_BULK_REQUEST_LEN => {
            Ok(XvsMessage::BulkRequest { node: node() })
        }
        XVS_BULK_DONE if buf.len() == XVS_BULK_DONE_LEN => Ok(XvsMessage::BulkDone {
            node: node(),
            entries: be32(buf, 24),
        }),
        XVS_BULK_REQUEST | XVS_BULK_DONE => Err(DecodeError::XvsLength),
        t => Err(DecodeError::XvsType(t)),
    }
}

/// Builds version-1 messages of at most `max_len` bytes (the kernel's `sync_maxlen`, header
/// included), as the kernel's master fills its sync buffers: entries in push order, each
/// 4-byte aligned, [`flags::HASHED`] cleared, the sequence option when [`SyncConn::seq`] is
/// set, timeout `None` sent as 0; [`SyncConn::has_pe`] is not encoded (xvs sends no
/// persistence-engine data).
#[derive(Clone, Debug)]
pub struct Encoder {
    syncid: u8,
    max_len: usize,
    buf: Vec<u8>,
    count: u8,
}

impl Encoder {
    /// An empty message for `syncid`.
    pub fn new(syncid: u8, max_len: usize) -> Self {
        let mut e = Encoder {
            syncid,
            max_len,
            buf: Vec::new(),
            count: 0,
        };
        e.reset();
        e
    }

    fn reset(&mut self) {
        self.buf = Vec::with_capacity(self.max_len.clamp(HEADER_LEN, 1 << 16));
        self.buf
            .extend_from_slice(&[0, self.syncid, 0, 0, 0, SYNC_PROTO_VER, 0, 0]);
        self.count = 0;
    }

    /// Appends the entry; false when it does not fit in `max_len` or the message already holds
    /// 255 entries (then call [`finish`](Self::finish) and push again). An empty encoder takes
    /// any entry whatever `max_len` (as the kernel sizes a new buffer for at least one entry),
    /// so false from an empty encoder means the entry cannot be encoded at all: its addresses
    /// mix IPv4 and IPv6.
    pub fn push(&mut self, c: &SyncConn) -> bool {
        let v6 = match (c.client, c.virt, c.dest) {
            (SocketAddr::V4(_), SocketAddr::V4(_), SocketAddr::V4(_)) => false,
            (SocketAddr::V6(_), SocketAddr::V6(_), SocketAddr::V6(_)) => true,
            _ => return false,
        };
        if usize::from(self.count) >= MAX_ENTRIES {
            return false;
        }
        let fixed = if v6 { V6_ENTRY_LEN } else { V4_ENTRY_LEN };
        let len = fixed + if c.seq.is_some() { 2 + SEQ_DATA_LEN } else { 0 };
        let pad = (4 - self.buf.len() % 4) % 4;
        if self.count > 0 && self.buf.len() + pad + len > self.max_len {
            return false;
        }
        let b = &mut self.buf;
        b.resize(b.len() + pad, 0);
        b.push(if v6 { STYPE_F_INET6 } else { 0 });
        b.push(c.protocol);
        b.extend_from_slice(&(len as u16 & SVER_MASK).to_be_bytes());
        b.extend_from_slice(&(c.flags & !flags::HASHED).to_be_bytes());
        b.extend_from_slice(&c.state.to_be_bytes());
        b.extend_from_slice(&c.client.port().to_be_bytes());
        b.extend_from_slice(&c.virt.port().to_be_bytes());
        b.extend_from_slice(&c.dest.port().to_be_bytes());
        b.extend_from_slice(&c.fwmark.to_be_bytes());
        b.extend_from_slice(&c.timeout.unwrap_or(0).to_be_bytes());
        for a in [c.client, c.virt, c.dest] {
            match a {
                SocketAddr::V4(a) => b.extend_from_slice(&a.ip().octets()),
                SocketAddr::V6(a) => b.extend_from_slice(&a.ip().octets()),
            }
        }
        if let Some(seq) = c.seq {
            b.push(OPT_SEQ_DATA);
            b.push(SEQ_DATA_LEN as u8);
            for (init, delta, prev) in seq {
                b.extend_from_slice(&init.to_be_bytes());
                b.extend_from_slice(&delta.to_be_bytes());
                b.extend_from_slice(&prev.to_be_bytes());
            }
        }
        self.count += 1;
        true
    }

    /// Entries in the current message.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// No entry in the current message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The current message's length in bytes, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The finished datagram (size and count filled in); the encoder is empty again afterwards.
    /// An empty encoder gives the 8-byte header with count 0, which a kernel backup accepts and
    /// ignores.
    pub fn finish(&mut self) -> Vec<u8> {
        let len = self.buf.len() as u16; // ≤ 8 + 255 × (98 + 3) bytes
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self.buf[4] = self.count;
        let out = std::mem::take(&mut self.buf);
        self.reset();
        out
    }
}

/// The datagram for an xvs-only message (format in the module documentation).
pub fn encode_xvs(syncid: u8, msg: &XvsMessage) -> Vec<u8> {
    let mut b = vec![0, syncid, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&XVS_MAGIC);
    b.push(XVS_EXT_VERSION);
    match *msg {
        XvsMessage::BulkRequest { node } => {
            b.extend_from_slice(&[XVS_BULK_REQUEST, 0, 0, 0]);
            b.extend_from_slice(&node.to_be_bytes());
        }
        XvsMessage::BulkDone { node, entries } => {
            b.extend_from_slice(&[XVS_BULK_DONE, 0, 0, 0]);
            b.extend_from_slice(&node.to_be_bytes());
            b.extend_from_slice(&entries.to_be_bytes());
        }
    }
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn4(seq: bool) -> SyncConn {
        SyncConn {
            protocol: 6,
            flags: flags::MASQ | if seq { flags::SEQ_MASK } else { 0 },
            state: 1,
            client: "198.18.0.1:40000".parse().unwrap(),
            virt: "198.18.1.1:80".parse().unwrap(),
            dest: "198.18.2.1:8080".parse().unwrap(),
            fwmark: 0,
            timeout: Some(900),
            seq: seq.then_some([(1, 2, 3), (4, 5, 6)]),
            has_pe: false,
        }
    }

    #[test]
    fn names_follow_index() {
        let all = [
            DecodeError::TooShort,
            DecodeError::SizeMismatch,
            DecodeError::ForeignSyncid,
            DecodeError::EntryTooShort,
            DecodeError::EntryOverrun,
            DecodeError::EntryVersion(3),
            DecodeError::EntryType(2),
            DecodeError::EntrySize,
            DecodeError::OptionTruncated,
            DecodeError::OptionLength,
            DecodeError::SeqOptionLength,
            DecodeError::DuplicateOption(1),
            DecodeError::PeNameLength,
            DecodeError::V0EntryTruncated,
            DecodeError::V0SeqTruncated,
            DecodeError::XvsVersion(9),
            DecodeError::XvsType(9),
            DecodeError::XvsLength,
        ];
        assert_eq!(all.len(), DecodeError::NAMES.len());
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.name(), DecodeError::NAMES[i]);
        }
        let mut names = DecodeError::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DecodeError::NAMES.len());
    }

    #[test]
    fn padding_between_entries_not_after_the_last() {
        let mut e = Encoder::new(1, 1472);
        assert!(e.push(&conn4(true))); // 62 bytes: 8 + 62 = 70
        assert_eq!(e.len(), 70);
        assert!(e.push(&conn4(false))); // 2 bytes of padding, then 36
        assert_eq!(e.len(), 108);
        assert!(e.push(&conn4(true))); // aligned already: 108 + 62
        assert_eq!(e.len(), 170);
        let m = e.finish();
        assert_eq!(m.len(), 170);
        assert_eq!(&m[70..72], &[0, 0]);
        assert_eq!(be16(&m, 2), 170);
        assert_eq!(m[4], 3);
        assert!(e.is_empty());
        assert_eq!(e.len(), HEADER_LEN);
    }

    #[test]
    fn max_len_counts_header_and_padding() {
        // Header 8 + 62 = 70; a 36-byte entry needs 2 bytes of padding: 108.
        let mut e = Encoder::new(1, 107);
        assert!(e.push(&conn4(true)));
        assert!(!e.push(&conn4(false)));
        assert_eq!(e.count(), 1);
        let mut e = Encoder::new(1, 108);
        assert!(e.push(&conn4(true)));
        assert!(e.push(&conn4(false)));
    }

    #[test]
    fn first_entry_always_fits_and_count_caps_at_255() {
        let mut e = Encoder::new(1, 0);
        assert!(e.push(&conn4(false)));
        assert!(!e.push(&conn4(false)));
        let mut e = Encoder::new(1, 65507);
        for _ in 0..255 {
            assert!(e.push(&conn4(false)));
        }
        assert!(!e.push(&conn4(false)));
        let m = e.finish();
        assert_eq!(m[4], 255);
        assert_eq!(m.len(), 8 + 255 * 36);
    }

    #[test]
    fn mixed_families_are_refused() {
        let mut c = conn4(false);
        c.dest = "[2001:2::1]:80".parse().unwrap();
        let mut e = Encoder::new(1, 1472);
        assert!(!e.push(&c));
        assert!(e.is_empty());
    }

    #[test]
    fn hashed_is_cleared() {
        let mut c = conn4(false);
        c.flags |= flags::HASHED;
        let mut e = Encoder::new(1, 1472);
        assert!(e.push(&c));
        let m = e.finish();
        assert_eq!(be32(&m, HEADER_LEN + 4), flags::MASQ);
    }

    #[test]
    fn header_only_message_decodes_empty() {
        let m = Encoder::new(4, 1472).finish();
        let mut out = Vec::new();
        assert_eq!(
            decode(&m, 4, &mut out),
            Ok(Decoded::V1 {
                syncid: 4,
                count: 0,
                skipped: 0
            })
        );
        assert!(out.is_empty());
    }
}
