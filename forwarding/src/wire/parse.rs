//! Frame parsing on the hot path: Ethernet → IP → L4 header fields and offsets.
//!
//! Layers, each with etherparse's per-header slice (no `SlicedPacket`, ~10× slower):
//! * Ethernet II (`Ethernet2HeaderSlice`), then up to two VLAN tags (`SingleVlanHeaderSlice`):
//!   802.1Q (0x8100), QinQ (0x88A8 or the pre-standard 0x9100 outer tag followed by an inner
//!   tag). Any other EtherType than IPv4/IPv6 is [`Parsed::NotIp`] (ARP, LLDP, …: the kernel's).
//! * IPv4 (`Ipv4HeaderSlice`, RFC 791): options allowed; total length ≥ IHL·4 and within the
//!   frame (bytes after it are Ethernet padding and ignored); header checksum verified, like
//!   the kernel's `ip_rcv_core`. Fragments: MF or offset ≠ 0; a later fragment (offset ≠ 0)
//!   has no transport header, so its ports are 0.
//! * IPv6 (`Ipv6HeaderSlice`, RFC 8200 §4): payload length within the frame; extension headers
//!   hop-by-hop (0), routing (43), destination options (60) — length (hdr ext len + 1)·8 —,
//!   fragment (44, 8 bytes) and AH (51, RFC 4302: (payload len + 2)·4) are skipped, at most
//!   [`MAX_EXT_HEADERS`]; ESP (50) and no-next-header (59) end the chain like any upper layer.
//!   A fragment header with offset 0 and M = 0 (an atomic fragment, RFC 6946) is not a fragment.
//! * TCP (`TcpHeaderSlice`): ports, flags; data offset ≥ 5 and the header within the packet.
//!   UDP (`UdpHeaderSlice`): ports; length ≥ 8 and within the packet (unfragmented packets).
//!   SCTP: the ports of the common header (RFC 9260). ICMP / ICMPv6: type, code, and whether it
//!   is an error message (ICMP: 3, 4, 5, 11, 12; ICMPv6: types < 128, RFC 4443).
//!   Other protocols parse with ports 0.
//!
//! The common frame — untagged Ethernet, IPv4 without options, an unfragmented TCP or UDP
//! segment — is first tried by a fixed-offset reader ([`parse`]'s fast path) that checks the
//! same things and builds the same [`Packet`]; anything else, or anything it would reject, goes
//! through the slices above, so errors are always the general path's (unit test
//! `fast_path_agrees` compares the two on random and mutated frames).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice,
    UdpHeaderSlice,
};

use super::{checksum, ethertype, proto, Family, WireError, ETH_LEN, IPV6_LEN, VLAN_LEN};

/// The most IPv6 extension headers [`parse`] skips before giving up with `Malformed`.
pub const MAX_EXT_HEADERS: usize = 8;

/// Fragment status of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Frag {
    /// Not a fragment.
    #[default]
    None,
    /// The first fragment (offset 0, more fragments): carries the transport header.
    First,
    /// A later fragment (offset ≠ 0): no transport header, ports are 0.
    Later,
}

/// What [`parse`] found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An IPv4 or IPv6 packet; fields and offsets in [`Packet`].
    Ip(Packet),
    /// Not IP (ARP, LLDP, …): the pipeline hands it to the kernel.
    NotIp,
    /// IP, but broken: drop and count `err.into()`.
    Invalid(WireError),
}

/// The fields and offsets of one parsed IP packet inside its frame. Offsets are from the start
/// of the frame's data. `Copy`: the pipeline keeps it next to the frame and passes it to the
/// rewrite functions, which keep it up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Offset of the IP header, i.e. the length of the Ethernet header with its VLAN tags.
    pub l3: usize,
    /// VLAN id of the outermost tag (the only tag, or QinQ's service tag).
    pub vlan: Option<u16>,
    /// VLAN id of QinQ's inner (customer) tag.
    pub vlan_inner: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header (after IPv6 extension headers / IPv4 options).
    pub l4: usize,
    /// End of the IP packet in the frame (start of any Ethernet padding).
    pub ip_end: usize,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// TOS byte (IPv4) or traffic class (IPv6), DSCP and ECN.
    pub tos: u8,
    /// IPv4 don't-fragment. Always false for IPv6 (which routers never fragment).
    pub df: bool,
    pub frag: Frag,
    /// Transport ports (TCP, UDP, SCTP); 0 for other protocols and later fragments.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (see [`super::tcp_flags`]); 0 for other protocols.
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type and code; 0 for other protocols.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// An ICMP / ICMPv6 error message (embeds the offending packet, see
    /// [`super::icmp::parse_embedded`]).
    pub icmp_error: bool,
}

impl Packet {
    pub fn family(&self) -> Family {
        Family::of(&self.src)
    }

    pub fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// Length of the IP packet (header and payload, without Ethernet padding).
    pub fn ip_len(&self) -> usize {
        self.ip_end.saturating_sub(self.l3)
    }

    /// True when the transport header is present (not a later fragment).
    pub fn has_l4_header(&self) -> bool {
        self.frag != Frag::Later
    }

    /// True for TCP, UDP and SCTP with a transport header, i.e. when the ports mean something.
    pub fn has_ports(&self) -> bool {
        self.has_l4_header() && matches!(self.proto, proto::TCP | proto::UDP | proto::SCTP)
    }

    /// ICMP or ICMPv6 (by the family of the packet).
    pub fn is_icmp(&self) -> bool {
        match self.family() {
            Family::V4 => self.proto == proto::ICMP,
            Family::V6 => self.proto == proto::ICMPV6,
        }
    }
}

/// Is this ICMPv4 type an error message that embeds the offending datagram?
/// Destination unreachable 3 (incl. frag-needed), source quench 4, redirect 5, time exceeded
/// 11, parameter problem 12 (RFC 792).
pub fn is_icmp4_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// Is this ICMPv6 type an error message? Types 0–127 (RFC 4443 §2.1): destination
/// unreachable 1, packet too big 2, time exceeded 3, parameter problem 4.
pub fn is_icmp6_error(icmp_type: u8) -> bool {
    icmp_type < 128
}

/// Parse one Ethernet frame. Never panics, never allocates.
///
/// (Shaped for speed: every field is computed into a local and the [`Packet`] is built once,
/// at the end; building it early and patching fields made the compiler copy the struct
/// through the stack with store-forwarding stalls, 5× slower.)
pub fn parse(data: &[u8]) -> Parsed {
    match parse_fast_v4(data) {
        Some(p) => Parsed::Ip(p),
        None => parse_general(data),
    }
}

/// The fields of an untagged Ethernet + IPv4 (IHL 5) + TCP / UDP frame that is not a fragment
/// and passes every check of the general path, as plain integers: what [`parse_v4`] reads and
/// the pipeline's established-flow path works on. [`Self::packet`] is the [`Packet`] [`parse`]
/// returns for the same frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastV4 {
    /// Source and destination address (host order).
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub proto: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    /// End of the IP packet in the frame: 14 + total length.
    pub ip_end: u32,
    /// The Ethernet destination address as [`mac_word`](crate::net::mac_word) gives it.
    pub dst_mac: u64,
}

impl FastV4 {
    /// Offset of the IP header.
    pub const L3: usize = ETH_LEN;
    /// Offset of the transport header.
    pub const L4: usize = ETH_LEN + 20;

    /// The [`Packet`] of this frame (what [`parse`] returns for it).
    #[inline]
    pub fn packet(&self) -> Packet {
        Packet {
            l3: Self::L3,
            vlan: None,
            vlan_inner: None,
            src: IpAddr::V4(Ipv4Addr::from_bits(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from_bits(self.dst)),
            proto: self.proto,
            l4: Self::L4,
            ip_end: self.ip_end as usize,
            ttl: self.ttl,
            tos: self.tos,
            df: self.df,
            frag: Frag::None,
            sport: self.sport,
            dport: self.dport,
            tcp_flags: self.tcp_flags,
            icmp_type: 0,
            icmp_code: 0,
            icmp_error: false,
        }
    }
}

/// Untagged Ethernet + IPv4 (IHL 5) + TCP / UDP, not a fragment, with every check of the
/// general path passing; `None` sends the frame to [`parse_general`].
#[inline(always)]
fn parse_fast_v4(data: &[u8]) -> Option<Packet> {
    parse_v4(data).map(|f| f.packet())
}

/// The fixed-offset reader of [`parse`]: the frame's [`FastV4`] fields when it is untagged
/// Ethernet + IPv4 without options + an unfragmented TCP / UDP segment and every check of the
/// general path passes (header checksum, lengths, TCP data offset, UDP length); `None` for
/// anything else.
#[inline(always)]
pub fn parse_v4(data: &[u8]) -> Option<FastV4> {
    const L3: usize = FastV4::L3;
    const L4: usize = FastV4::L4;
    let h: &[u8; L4] = data.get(..L4)?.try_into().ok()?;
    // EtherType IPv4, version 4 with IHL 5, MF clear and fragment offset 0.
    if h[12] != 0x08 || h[13] != 0x00 || h[L3] != 0x45 || h[L3 + 6] & 0x3f != 0 || h[L3 + 7] != 0 {
        return None;
    }
    let total = u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]);
    let ip_end = L3 + usize::from(total);
    let ip: &[u8; 20] = h[L3..L4].try_into().ok()?;
    if total < 20 || ip_end > data.len() || !checksum::verifies_ipv4_header(ip) {
        return None;
    }
    let seg = data.get(L4..ip_end)?;
    let proto = h[L3 + 9];
    let (sport, dport, tcp_flags) = match proto {
        proto::TCP => {
            // Data offset ≥ 5 and the whole header inside the packet.
            let t: &[u8; 20] = seg.get(..20)?.try_into().ok()?;
            let hl = usize::from(t[12] >> 4) * 4;
            if hl < 20 || hl > seg.len() {
                return None;
            }
            (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
                t[13],
            )
        }
        proto::UDP => {
            let u: &[u8; 8] = seg.get(..8)?.try_into().ok()?;
            let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
            if ulen < 8 || ulen > seg.len() {
                return None;
            }
            (
                u16::from_be_bytes([u[0], u[1]]),
                u16::from_be_bytes([u[2], u[3]]),
                0,
            )
        }
        _ => return None,
    };
    let a = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    Some(FastV4 {
        src: a(L3 + 12),
        dst: a(L3 + 16),
        sport,
        dport,
        proto,
        tcp_flags,
        ttl: h[L3 + 8],
        tos: h[L3 + 1],
        df: h[L3 + 6] & 0x40 != 0,
        ip_end: L3 as u32 + u32::from(total),
        // One 8-byte load: the destination and two bytes of the source, masked off.
        dst_mac: u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
            & 0xffff_ffff_ffff,
    })
}

/// [`FastV4::packet`] of a frame [`parse_v4`] accepted and that has not changed since, read
/// again at the same offsets without repeating `parse_v4`'s checks (header checksum, lengths).
/// Of any other frame it reads the same fields at those offsets, whatever they hold; `None` if
/// the frame is too short for them or its protocol byte is neither TCP nor UDP.
#[inline(always)]
pub fn reread_v4(data: &[u8]) -> Option<Packet> {
    const L3: usize = FastV4::L3;
    const L4: usize = FastV4::L4;
    let h: &[u8; L4 + 4] = data.get(..L4 + 4)?.try_into().ok()?;
    let proto = h[L3 + 9];
    let tcp_flags = match proto {
        proto::TCP => *data.get(L4 + 13)?,
        proto::UDP => 0,
        _ => return None,
    };
    let a = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let total = u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]);
    Some(Packet {
        l3: L3,
        vlan: None,
        vlan_inner: None,
        src: IpAddr::V4(Ipv4Addr::from_bits(a(L3 + 12))),
        dst: IpAddr::V4(Ipv4Addr::from_bits(a(L3 + 16))),
        proto,
        l4: L4,
        ip_end: L3 + usize::from(total),
        ttl: h[L3 + 8],
        tos: h[L3 + 1],
        df: h[L3 + 6] & 0x40 != 0,
        frag: Frag::None,
        sport: u16::from_be_bytes([h[L4], h[L4 + 1]]),
        dport: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        tcp_flags,
        icmp_type: 0,
        icmp_code: 0,
        icmp_error: false,
    })
}

/// [`parse`] with etherparse's slices, for every frame.
fn parse_general(data: &[u8]) -> Parsed {
    let Ok(eth) = Ethernet2HeaderSlice::from_slice(data) else {
        return Parsed::Invalid(WireError::Truncated);
    };
    let mut ether_type = eth.ether_type().0;
    let mut l3 = ETH_LEN;
    let mut vlans = Vlans::default();
    // Outer tag (802.1Q, or QinQ S-tag), then an inner tag if the outer was a QinQ tag or
    // the first tag is followed by another C-tag.
    for _ in 0..2 {
        if !matches!(
            ether_type,
            ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD
        ) {
            break;
        }
        let Some(Ok(tag)) = data.get(l3..).map(SingleVlanHeaderSlice::from_slice) else {
            return Parsed::Invalid(WireError::Truncated);
        };
        let id = tag.vlan_identifier().value();
        if vlans.outer.is_none() {
            vlans.outer = Some(id);
        } else {
            vlans.inner = Some(id);
        }
        ether_type = tag.ether_type().0;
        l3 += VLAN_LEN;
    }
    let r = match ether_type {
        ethertype::IPV4 => parse_ipv4(data, l3, vlans),
        ethertype::IPV6 => parse_ipv6(data, l3, vlans),
        _ => return Parsed::NotIp,
    };
    match r {
        Ok(p) => Parsed::Ip(p),
        Err(e) => Parsed::Invalid(e),
    }
}

#[derive(Clone, Copy, Default)]
struct Vlans {
    outer: Option<u16>,
    inner: Option<u16>,
}

/// The transport fields of a [`Packet`].
#[derive(Clone, Copy, Default)]
struct L4Fields {
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    icmp_type: u8,
    icmp_code: u8,
    icmp_error: bool,
}

#[inline(always)]
fn parse_ipv4(data: &[u8], l3: usize, vlans: Vlans) -> Result<Packet, WireError> {
    let rest = data.get(l3..).ok_or(WireError::Truncated)?;
    let ip = Ipv4HeaderSlice::from_slice(rest).map_err(|e| match e {
        etherparse::err::ipv4::HeaderSliceError::Len(_) => WireError::Truncated,
        etherparse::err::ipv4::HeaderSliceError::Content(_) => WireError::Malformed,
    })?;
    let hlen = ip.slice().len();
    let total = usize::from(ip.total_len());
    if total < hlen {
        return Err(WireError::Malformed);
    }
    if total > rest.len() {
        return Err(WireError::Truncated);
    }
    if !checksum::verifies(0, ip.slice()) {
        return Err(WireError::BadIpChecksum);
    }
    let offset = ip.fragments_offset().value();
    let frag = if offset != 0 {
        Frag::Later
    } else if ip.more_fragments() {
        Frag::First
    } else {
        Frag::None
    };
    let l4 = l3 + hlen;
    let ip_end = l3 + total;
    let f = parse_l4(data, ip.protocol().0, true, l4, ip_end, frag)?;
    Ok(Packet {
        l3,
        vlan: vlans.outer,
        vlan_inner: vlans.inner,
        src: IpAddr::V4(Ipv4Addr::from(ip.source())),
        dst: IpAddr::V4(Ipv4Addr::from(ip.destination())),
        proto: ip.protocol().0,
        l4,
        ip_end,
        ttl: ip.ttl(),
        tos: rest[1],
        df: ip.dont_fragment(),
        frag,
        sport: f.sport,
        dport: f.dport,
        tcp_flags: f.tcp_flags,
        icmp_type: f.icmp_type,
        icmp_code: f.icmp_code,
        icmp_error: f.icmp_error,
    })
}

#[inline(always)]
fn parse_ipv6(data: &[u8], l3: usize, vlans: Vlans) -> Result<Packet, WireError> {
    let rest = data.get(l3..).ok_or(WireError::Truncated)?;
    let ip = Ipv6HeaderSlice::from_slice(rest).map_err(|e| match e {
        etherparse::err::ipv6::HeaderSliceError::Len(_) => WireError::Truncated,
        etherparse::err::ipv6::HeaderSliceError::Content(_) => WireError::Malformed,
    })?;
    let ip_end = l3 + IPV6_LEN + usize::from(ip.payload_length());
    if ip_end > data.len() {
        return Err(WireError::Truncated);
    }
    let (next, l4, frag) = skip_ipv6_exts(data, ip.next_header().0, l3 + IPV6_LEN, ip_end)?;
    let f = parse_l4(data, next, false, l4, ip_end, frag)?;
    Ok(Packet {
        l3,
        vlan: vlans.outer,
        vlan_inner: vlans.inner,
        src: IpAddr::V6(Ipv6Addr::from(ip.source())),
        dst: IpAddr::V6(Ipv6Addr::from(ip.destination())),
        proto: next,
        l4,
        ip_end,
        ttl: ip.hop_limit(),
        tos: ip.traffic_class(),
        df: false,
        frag,
        sport: f.sport,
        dport: f.dport,
        tcp_flags: f.tcp_flags,
        icmp_type: f.icmp_type,
        icmp_code: f.icmp_code,
        icmp_error: f.icmp_error,
    })
}

/// Walk IPv6 extension headers from `off` (where a header of type `next` starts) up to `end`.
/// Returns (upper-layer protocol, its offset, fragment status). Shared with the ICMP embedded
/// parse, where `end` is the end of the (truncated) embedded bytes.
pub(crate) fn skip_ipv6_exts(
    data: &[u8],
    mut next: u8,
    mut off: usize,
    end: usize,
) -> Result<(u8, usize, Frag), WireError> {
    let mut frag = Frag::None;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            0 | 43 | 60 => {
                let h = data.get(off..off + 2).filter(|_| off + 2 <= end);
                let h = h.ok_or(WireError::Truncated)?;
                (usize::from(h[1]) + 1) * 8
            }
            proto::AH => {
                let h = data.get(off..off + 2).filter(|_| off + 2 <= end);
                let h = h.ok_or(WireError::Truncated)?;
                (usize::from(h[1]) + 2) * 4
            }
            44 => 8,
            _ => return Ok((next, off, frag)),
        };
        if off + len > end || off + len > data.len() {
            return Err(WireError::Truncated);
        }
        let h = &data[off..off + len];
        if next == 44 {
            let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
            let more = h[3] & 1 != 0;
            if offset != 0 {
                // A later fragment: what follows is payload, not a header.
                return Ok((h[0], off + len, Frag::Later));
            }
            if more {
                frag = Frag::First;
            }
        }
        next = h[0];
        off += len;
    }
    match next {
        0 | 43 | 60 | 44 | proto::AH => Err(WireError::Malformed),
        _ => Ok((next, off, frag)),
    }
}

/// The transport fields from `data[l4..ip_end]` (none for later fragments).
#[inline(always)]
fn parse_l4(
    data: &[u8],
    proto: u8,
    v4: bool,
    l4: usize,
    ip_end: usize,
    frag: Frag,
) -> Result<L4Fields, WireError> {
    let mut f = L4Fields::default();
    if frag == Frag::Later {
        return Ok(f);
    }
    let seg = data.get(l4..ip_end).ok_or(WireError::Truncated)?;
    match proto {
        proto::TCP => {
            let tcp = TcpHeaderSlice::from_slice(seg).map_err(|e| match e {
                etherparse::err::tcp::HeaderSliceError::Len(_) => WireError::Truncated,
                etherparse::err::tcp::HeaderSliceError::Content(_) => WireError::Malformed,
            })?;
            f.sport = tcp.source_port();
            f.dport = tcp.destination_port();
            f.tcp_flags = seg[13];
        }
        proto::UDP => {
            let udp = UdpHeaderSlice::from_slice(seg).map_err(|_| WireError::Truncated)?;
            let ulen = usize::from(udp.length());
            if frag == Frag::None && (ulen < 8 || ulen > seg.len()) {
                return Err(if ulen < 8 {
                    WireError::Malformed
                } else {
                    WireError::Truncated
                });
            }
            f.sport = udp.source_port();
            f.dport = udp.destination_port();
        }
        proto::SCTP => {
            // Common header: src port, dst port, verification tag, CRC32c (12 bytes).
            let h = seg.get(..12).ok_or(WireError::Truncated)?;
            f.sport = u16::from_be_bytes([h[0], h[1]]);
            f.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        proto::ICMP if v4 => {
            let h = seg.get(..8).ok_or(WireError::Truncated)?;
            f.icmp_type = h[0];
            f.icmp_code = h[1];
            f.icmp_error = is_icmp4_error(h[0]);
        }
        proto::ICMPV6 if !v4 => {
            let h = seg.get(..8).ok_or(WireError::Truncated)?;
            f.icmp_type = h[0];
            f.icmp_code = h[1];
            f.icmp_error = is_icmp6_error(h[0]);
        }
        _ => {}
    }
    Ok(f)
}

/// The identification of a fragment's datagram: the IPv4 header's, or the IPv6 fragment
/// header's (found by walking the extension chain). `None` for a frame that is not one.
pub fn frag_id(data: &[u8], p: &Packet) -> Option<u32> {
    if p.frag == Frag::None {
        return None;
    }
    if p.is_v4() {
        return Some(u32::from(u16::from_be_bytes([
            *data.get(p.l3 + 4)?,
            *data.get(p.l3 + 5)?,
        ])));
    }
    let mut next = *data.get(p.l3 + 6)?;
    let mut off = p.l3 + 40;
    for _ in 0..8 {
        match next {
            44 => {
                let b = data.get(off + 4..off + 8)?;
                return Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            0 | 43 | 60 => {
                next = *data.get(off)?;
                off += (usize::from(*data.get(off + 1)?) + 1) * 8;
            }
            51 => {
                next = *data.get(off)?;
                off += (usize::from(*data.get(off + 1)?) + 2) * 4;
            }
            _ => return None,
        }
    }
    None
}

/// The byte range a fragment covers in its datagram's payload: (offset, offset + length of the
/// fragment's data). `None` for a frame that is not a fragment.
pub fn frag_range(data: &[u8], p: &Packet) -> Option<(u32, u32)> {
    if p.frag == Frag::None {
        return None;
    }
    let offset = if p.is_v4() {
        u32::from(u16::from_be_bytes([*data.get(p.l3 + 6)?, *data.get(p.l3 + 7)?]) & 0x1fff) * 8
    } else {
        let mut next = *data.get(p.l3 + 6)?;
        let mut off = p.l3 + 40;
        let mut found = None;
        for _ in 0..8 {
            match next {
                44 => {
                    let b = data.get(off + 2..off + 4)?;
                    found = Some(u32::from(u16::from_be_bytes([b[0], b[1]]) & 0xfff8));
                    break;
                }
                0 | 43 | 60 => {
                    next = *data.get(off)?;
                    off += (usize::from(*data.get(off + 1)?) + 1) * 8;
                }
                51 => {
                    next = *data.get(off)?;
                    off += (usize::from(*data.get(off + 1)?) + 2) * 4;
                }
                _ => return None,
            }
        }
        found?
    };
    let len = u32::try_from(p.ip_end.checked_sub(p.l4)?).ok()?;
    Some((offset, offset + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/UDP DNS query frame (Ethernet, no VLAN): 10.0.2.15:52540 → 10.0.2.3:53,
    /// "example.com A", followed by 4 bytes of Ethernet padding. Assembled by hand; its
    /// checksums (IP 0x0338, UDP 0x0ba8) were computed independently with a Python RFC 1071.
    const DNS_QUERY: [u8; 71 + 4] = [
        0x52, 0x54, 0x00, 0x12, 0x35, 0x02, 0x08, 0x00, 0x27, 0xa5, 0x6e, 0x11, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x39, 0x1f, 0x6b, 0x40, 0x00, 0x40, 0x11, 0x03, 0x38, 0x0a, 0x00, 0x02,
        0x0f, 0x0a, 0x00, 0x02, 0x03, // ipv4 (57 bytes total)
        0xcd, 0x3c, 0x00, 0x35, 0x00, 0x25, 0x0b, 0xa8, // udp
        0x3f, 0x0b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, b'e', b'x',
        b'a', b'm', b'p', b'l', b'e', 0x03, b'c', b'o', b'm', 0x00, 0x00, 0x01, 0x00, 0x01, 0, 0,
        0, 0,
    ];

    fn ip(data: &[u8]) -> Packet {
        match parse(data) {
            Parsed::Ip(p) => p,
            other => panic!("expected IP, got {other:?}"),
        }
    }

    #[test]
    fn captured_udp() {
        let p = ip(&DNS_QUERY);
        assert_eq!(p.l3, 14);
        assert_eq!(p.vlan, None);
        assert_eq!(p.src, IpAddr::from([10, 0, 2, 15]));
        assert_eq!(p.dst, IpAddr::from([10, 0, 2, 3]));
        assert_eq!((p.proto, p.l4, p.ip_end), (proto::UDP, 34, 14 + 57));
        assert_eq!((p.sport, p.dport), (52540, 53));
        assert_eq!((p.ttl, p.tos, p.df, p.frag), (64, 0, true, Frag::None));
        assert!(p.has_ports());
        assert!(!p.icmp_error);
    }

    #[test]
    fn bad_ip_checksum_and_truncation() {
        let mut d = DNS_QUERY;
        d[24] ^= 1;
        assert_eq!(parse(&d), Parsed::Invalid(WireError::BadIpChecksum));
        // Cut inside the IP packet (total length says 57).
        assert_eq!(
            parse(&DNS_QUERY[..70]),
            Parsed::Invalid(WireError::Truncated)
        );
        assert_eq!(
            parse(&DNS_QUERY[..10]),
            Parsed::Invalid(WireError::Truncated)
        );
        // IHL 4.
        let mut d = DNS_QUERY;
        d[14] = 0x44;
        assert_eq!(parse(&d), Parsed::Invalid(WireError::Malformed));
        // IPv6 EtherType with an IPv4 header.
        let mut d = DNS_QUERY;
        d[12] = 0x86;
        d[13] = 0xdd;
        assert_eq!(parse(&d), Parsed::Invalid(WireError::Malformed));
    }

    /// The fast path, when it answers, says exactly what the general path says (and
    /// `reread_v4` of its frame the same); and `parse` equals the general path on every input.
    #[test]
    fn fast_path_agrees() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config::with_cases(20_000));
        let frame = (
            prop::collection::vec(any::<u8>(), 0..90),
            any::<u16>(),
            prop_oneof![Just(6u8), Just(17), Just(1), any::<u8>()],
            (any::<u8>(), any::<u8>()),
            (
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.9),
            ),
            (0usize..100, any::<u8>(), any::<u16>()),
        );
        runner
            .run(
                &frame,
                |(mut d, total, proto, (flags, off), (fix_csum, keep_et, keep_vihl), mutate)| {
                    d.resize(d.len().max(ETH_LEN + 40), 0);
                    let len = d.len();
                    if keep_et {
                        d[12..14].copy_from_slice(&[0x08, 0x00]);
                    }
                    if keep_vihl {
                        d[14] = 0x45;
                    }
                    // Mostly consistent lengths and flags, sometimes not.
                    let total = if total % 4 == 0 {
                        total
                    } else {
                        ((len - ETH_LEN) as u16).saturating_sub(total % 7)
                    };
                    d[16..18].copy_from_slice(&total.to_be_bytes());
                    d[20] = if flags % 3 == 0 { flags } else { flags & 0x40 };
                    d[21] = if off % 3 == 0 { off } else { 0 };
                    d[23] = proto;
                    if proto == 6 && mutate.1 % 4 != 0 {
                        d[34 + 12] = 0x50 + (mutate.1 & 0x30);
                    }
                    if proto == 17 && mutate.1 % 4 != 0 {
                        let ul = (total.saturating_sub(20)).wrapping_sub(mutate.2 % 3);
                        d[38..40].copy_from_slice(&ul.to_be_bytes());
                    }
                    if fix_csum {
                        d[24] = 0;
                        d[25] = 0;
                        let c = checksum::checksum(&d[14..34]);
                        d[24..26].copy_from_slice(&c.to_be_bytes());
                    }
                    if mutate.0 < len && mutate.1 % 5 == 0 {
                        d[mutate.0] ^= mutate.1 | 1;
                    }
                    let general = parse_general(&d);
                    if let Some(p) = parse_fast_v4(&d) {
                        prop_assert_eq!(Parsed::Ip(p), general);
                        // Read again, the accepted frame gives the same packet.
                        prop_assert_eq!(reread_v4(&d), Some(p));
                    }
                    prop_assert_eq!(parse(&d), general);
                    Ok(())
                },
            )
            .unwrap();
        // The captured DNS query takes the fast path.
        assert!(parse_fast_v4(&DNS_QUERY).is_some());
    }

    #[test]
    fn arp_is_not_ip() {
        let mut d = DNS_QUERY;
        d[12] = 0x08;
        d[13] = 0x06;
        assert_eq!(parse(&d), Parsed::NotIp);
    }

    #[test]
    fn vlan_and_qinq() {
        let mut d = Vec::from(&DNS_QUERY[..12]);
        d.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x20, 0x0a]);
        d.extend_from_slice(&DNS_QUERY[12..]);
        let p = ip(&d);
        assert_eq!((p.l3, p.vlan, p.vlan_inner), (22, Some(100), Some(10)));
        assert_eq!((p.sport, p.dport, p.ip_end), (52540, 53, 22 + 57));
        // A tag cut short.
        assert_eq!(parse(&d[..16]), Parsed::Invalid(WireError::Truncated));
    }
}
