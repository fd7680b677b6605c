//! In-place rewrites for the forwarding methods, with incremental checksum updates.
//!
//! Following the kernel's `ip_vs_xmit.c` and the `*_dnat_handler` / `*_snat_handler` of
//! `ip_vs_proto_{tcp,udp}.c`:
//! * [`set_src`] / [`set_dst`] (NAT in: dst := backend; NAT out: src := VIP; FullNAT: both):
//!   the IPv4 header checksum is patched with RFC 1624 (`csum_replace4`), the TCP / UDP
//!   checksum for the pseudo-header address and the port (`inet_proto_csum_replace4/2`,
//!   `…replace16` for IPv6), the ICMPv6 checksum for the pseudo-header address.
//!   **UDP checksum 0**: like IPVS (`udp_snat_handler`), a full checksum is computed when the
//!   whole datagram is in the frame (not a fragment); a first fragment keeps 0. A checksum
//!   that comes out 0 is sent as 0xFFFF (RFC 768). SCTP: the CRC32c does not cover the
//!   addresses; after a port change it is recomputed over the whole packet (IPVS's
//!   `sctp_nat_csum`), which needs the whole packet: a port change on a fragmented SCTP
//!   packet is refused (`Fragment`). Later fragments only get the address change (their
//!   ports live in the first fragment, whose checksum carries the whole update).
//! * [`dec_ttl`]: TTL / hop limit − 1 with the IPv4 checksum patched (`ip_decrease_ttl`);
//!   `TtlExceeded` when it is ≤ 1, as `ip_vs_xmit.c` sends time-exceeded then.
//! * [`set_link`]: a new Ethernet header, with or without one 802.1Q tag; the frame grows or
//!   shrinks at the front (`Frame::push_front` / `pull_front`).
//! * [`encap`]: TUN as `ip_vs_tunnel_xmit` / `ip_vs_tunnel_xmit_v6` do it: outer IPv4 (IHL 5,
//!   protocol 4 for inner IPv4, 41 for inner IPv6) or outer IPv6 (next header 41 / 4);
//!   TTL = inner TTL, TOS = inner TOS with ECN CE mapped to ECT(0) (`INET_ECN_encapsulate`),
//!   DF = inner DF (always set for inner IPv6), ID 0 when DF is set. Oversize packets that may
//!   not be fragmented report `TooBig { mtu: mtu − outer header }` (`ip_vs_tunnel_xmit`'s
//!   `__mtu_check_toobig_v6` / frag-needed path).
//! * [`check_mtu`]: the same test for NAT / DR, where nothing is added.
//! * [`forward`]: [`dec_ttl`] and the NAT / FullNAT endpoint changes in one pass, with an IPv4
//!   TCP / UDP fast path that updates each checksum once (what the pipeline calls per packet).

use std::net::{IpAddr, Ipv4Addr};

use super::checksum::{self, update128, update16, update32};
use super::parse::{Frag, Packet};
use super::{ethertype, proto, Family, WireError, ETH_LEN, IPV4_LEN, IPV6_LEN, VLAN_LEN};
use crate::frame::Frame;

/// The Ethernet header to put in front of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    /// One 802.1Q tag with this VLAN id (PCP 0), or none.
    pub vlan: Option<u16>,
}

impl Link {
    /// Length of this Ethernet header.
    pub fn len(&self) -> usize {
        ETH_LEN + if self.vlan.is_some() { VLAN_LEN } else { 0 }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Write the header into `out` (exactly `self.len()` bytes) for an IP packet of `family`.
    fn write(&self, out: &mut [u8], family: Family) {
        let et = match family {
            Family::V4 => ethertype::IPV4,
            Family::V6 => ethertype::IPV6,
        };
        out[0..6].copy_from_slice(&self.dst);
        out[6..12].copy_from_slice(&self.src);
        match self.vlan {
            Some(id) => {
                out[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                out[14..16].copy_from_slice(&(id & 0x0fff).to_be_bytes());
                out[16..18].copy_from_slice(&et.to_be_bytes());
            }
            None => out[12..14].copy_from_slice(&et.to_be_bytes()),
        }
    }
}

/// The outer header of a TUN encapsulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// Outer source (the director's address toward the backend) and destination (the
    /// backend). Both of the same family; it may differ from the inner packet's.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification used when DF is clear (the caller's per-worker counter).
    pub id: u16,
    /// MTU of the egress route: the whole outer IP packet must fit.
    pub mtu: u16,
}

/// Check that `p`'s offsets lie inside `data` and are ordered; the rewrites rely on it.
fn check(data: &[u8], p: &Packet) -> Result<(), WireError> {
    let hlen = match p.family() {
        Family::V4 => IPV4_LEN,
        Family::V6 => IPV6_LEN,
    };
    if p.l3.checked_add(hlen).is_some_and(|h| h <= p.l4)
        && p.l4 <= p.ip_end
        && p.ip_end <= data.len()
    {
        Ok(())
    } else {
        Err(WireError::Truncated)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Set the source address and port (NAT out: src := VIP:vport; FullNAT in: src := local
/// address:port). The port is ignored for packets without ports (ICMP, later fragments).
pub fn set_src(data: &mut [u8], p: &mut Packet, addr: IpAddr, port: u16) -> Result<(), WireError> {
    set_endpoint(data, p, Side::Src, addr, port)
}

/// Set the destination address and port (NAT in: dst := backend; FullNAT out: dst := client).
pub fn set_dst(data: &mut [u8], p: &mut Packet, addr: IpAddr, port: u16) -> Result<(), WireError> {
    set_endpoint(data, p, Side::Dst, addr, port)
}

/// Set both endpoints (FullNAT).
pub fn set_src_dst(
    data: &mut [u8],
    p: &mut Packet,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
) -> Result<(), WireError> {
    // Check both before changing anything, so an error leaves the frame untouched.
    if Family::of(&src.0) != p.family() || Family::of(&dst.0) != p.family() {
        return Err(WireError::Unsupported);
    }
    set_endpoint(data, p, Side::Src, src.0, src.1)?;
    set_endpoint(data, p, Side::Dst, dst.0, dst.1)
}

fn set_endpoint(
    data: &mut [u8],
    p: &mut Packet,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> Result<(), WireError> {
    check(data, p)?;
    if Family::of(&p.dst) != p.family() || Family::of(&addr) != p.family() {
        return Err(WireError::Unsupported);
    }
    let (old_addr, old_port) = match side {
        Side::Src => (p.src, p.sport),
        Side::Dst => (p.dst, p.dport),
    };
    let sctp_crc = p.has_ports() && port != old_port && p.proto == proto::SCTP;
    if sctp_crc && (p.frag != Frag::None || p.l4 + 12 > p.ip_end) {
        return Err(if p.frag != Frag::None {
            WireError::Fragment
        } else {
            WireError::Truncated
        });
    }
    // Where the L4 checksum lives and whether it covers the pseudo-header.
    let l4_check = if p.frag == Frag::Later {
        None
    } else {
        match p.proto {
            proto::TCP => Some(16),
            proto::UDP => Some(6),
            proto::ICMPV6 if !p.is_v4() => Some(2),
            _ => None,
        }
    };
    if let Some(off) = l4_check {
        if p.l4 + off + 2 > p.ip_end {
            return Err(WireError::Truncated);
        }
    }
    if p.has_ports() && p.l4 + 4 > p.ip_end {
        return Err(WireError::Truncated);
    }
    let udp_zero = p.proto == proto::UDP && l4_check.is_some() && {
        let o = p.l4 + 6;
        data[o] == 0 && data[o + 1] == 0
    };
    let mut l4sum = match l4_check {
        Some(off) if !udp_zero => {
            let o = p.l4 + off;
            Some(u16::from_be_bytes([data[o], data[o + 1]]))
        }
        _ => None,
    };
    // Addresses.
    match (old_addr, addr) {
        (IpAddr::V4(old), IpAddr::V4(new)) => {
            let (old, new) = (old.octets(), new.octets());
            let a = p.l3 + if side == Side::Src { 12 } else { 16 };
            data[a..a + 4].copy_from_slice(&new);
            let c = p.l3 + 10;
            let ipsum = update32(u16::from_be_bytes([data[c], data[c + 1]]), old, new);
            data[c..c + 2].copy_from_slice(&ipsum.to_be_bytes());
            l4sum = l4sum.map(|s| update32(s, old, new));
        }
        (IpAddr::V6(old), IpAddr::V6(new)) => {
            let (old, new) = (old.octets(), new.octets());
            let a = p.l3 + if side == Side::Src { 8 } else { 24 };
            data[a..a + 16].copy_from_slice(&new);
            l4sum = l4sum.map(|s| update128(s, old, new));
        }
        _ => return Err(WireError::Unsupported),
    }
    // Port.
    if p.has_ports() {
        let o = p.l4 + if side == Side::Src { 0 } else { 2 };
        data[o..o + 2].copy_from_slice(&port.to_be_bytes());
        l4sum = l4sum.map(|s| update16(s, old_port, port));
    }
    match side {
        Side::Src => {
            p.src = addr;
            if p.has_ports() {
                p.sport = port;
            }
        }
        Side::Dst => {
            p.dst = addr;
            if p.has_ports() {
                p.dport = port;
            }
        }
    }
    // L4 checksum.
    if let (Some(off), Some(mut s)) = (l4_check, l4sum) {
        if p.proto == proto::UDP {
            s = checksum::udp_fixup(s);
        }
        let o = p.l4 + off;
        data[o..o + 2].copy_from_slice(&s.to_be_bytes());
    } else if sctp_crc {
        // Checked above: the common header is inside the packet.
        let _ = checksum::sctp_fix(&mut data[p.l4..p.ip_end]);
    } else if udp_zero && p.frag == Frag::None {
        let s = l4_full_checksum(data, p, 6);
        let o = p.l4 + 6;
        data[o..o + 2].copy_from_slice(&checksum::udp_fixup(s).to_be_bytes());
    }
    Ok(())
}

/// The NAT / FullNAT forwarding rewrite in one call: TTL − 1 ([`dec_ttl`]), then the source
/// endpoint ([`set_src`]) if `src` is given, then the destination ([`set_dst`]) if `dst` is.
/// The bytes, `p` and the errors are exactly those of the separate calls in that order.
///
/// IPv4 TCP and UDP packets that are not fragments (and, for UDP, carry a checksum) take a fast
/// path: 32-bit address arithmetic and a single RFC 1624 update per checksum, the changed words
/// of TTL, addresses and ports summed first and folded once. Incremental updates compose (the
/// one's-complement sum is associative, and a fold is zero only for an all-zero sum), so the
/// result is bit for bit that of the sequential updates (`forward_matches_sequential` in
/// `tests/wire_forward.rs`). Everything else takes the general functions.
pub fn forward(
    data: &mut [u8],
    p: &mut Packet,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) -> Result<(), WireError> {
    let v4 = |e: Option<(IpAddr, u16)>| match e {
        None => Some(None),
        Some((IpAddr::V4(a), port)) => Some(Some((a, port))),
        Some((IpAddr::V6(_), _)) => None,
    };
    if let (Some(s4), Some(d4)) = (v4(src), v4(dst)) {
        if forward_v4_fast(data, p, s4, d4) {
            return Ok(());
        }
    }
    dec_ttl(data, p)?;
    match (src, dst) {
        (Some(s), Some(d)) => set_src_dst(data, p, s, d),
        (Some((a, port)), None) => set_src(data, p, a, port),
        (None, Some((a, port))) => set_dst(data, p, a, port),
        (None, None) => Ok(()),
    }
}

/// The fast path of [`forward`]; false (nothing changed) when the packet does not qualify.
#[inline]
fn forward_v4_fast(
    data: &mut [u8],
    p: &mut Packet,
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
) -> bool {
    if !matches!((p.src, p.dst), (IpAddr::V4(_), IpAddr::V4(_)))
        || p.frag != Frag::None
        || p.l3.checked_add(IPV4_LEN).is_none_or(|h| h > p.l4)
    {
        return false;
    }
    let bits = |e: Option<(Ipv4Addr, u16)>| e.map(|(a, port)| (a.to_bits(), port));
    let (l3, l4, end) = (p.l3, p.l4, p.ip_end);
    if !forward_v4(data, l3, l4, end, bits(src), bits(dst)) {
        return false;
    }
    p.ttl = data[l3 + 8];
    if let Some((a, port)) = src {
        p.src = IpAddr::V4(a);
        p.sport = port;
    }
    if let Some((a, port)) = dst {
        p.dst = IpAddr::V4(a);
        p.dport = port;
    }
    true
}

/// [`forward`] for an unfragmented IPv4 TCP or UDP packet (UDP with a checksum) on plain
/// integers: the IP header at `l3` (at least 20 bytes before `l4`), the transport header at
/// `l4`, the packet ending at `end`; protocol, TTL, addresses and ports are read from the
/// headers. TTL − 1, then `src` and `dst` (host-order address, port) written, each checksum
/// updated once (RFC 1624: the changed words of TTL, addresses and ports summed, folded once).
/// False, with nothing changed, when the packet does not qualify (another protocol, TTL ≤ 1,
/// the checksum field outside the packet or the packet outside `data`, a UDP checksum of 0):
/// the caller takes [`forward`]'s general path.
#[inline(always)]
pub fn forward_v4(
    data: &mut [u8],
    l3: usize,
    l4: usize,
    end: usize,
    src: Option<(u32, u16)>,
    dst: Option<(u32, u16)>,
) -> bool {
    // What `check` and `set_endpoint` require, plus the checksum field inside the packet.
    if l3.checked_add(IPV4_LEN).is_none_or(|h| h > l4) || end > data.len() || l4 > end {
        return false;
    }
    let (head, seg) = data[..end].split_at_mut(l4);
    let Some(Ok(ip)) = head
        .get_mut(l3..l3 + IPV4_LEN)
        .map(<&mut [u8; IPV4_LEN]>::try_from)
    else {
        return false;
    };
    match ip[9] {
        proto::TCP => match seg.get_mut(..18).map(<&mut [u8; 18]>::try_from) {
            Some(Ok(t)) => forward_v4_at(ip, t, false, src, dst),
            _ => false,
        },
        proto::UDP => match seg.get_mut(..8).map(<&mut [u8; 8]>::try_from) {
            Some(Ok(u)) => forward_v4_at(ip, u, true, src, dst),
            _ => false,
        },
        _ => false,
    }
}

/// [`forward_v4`] for a frame [`parse_v4`](super::parse::parse_v4) accepted (untagged
/// Ethernet, IPv4 without options at offset 14, the transport header at 34 and inside the
/// packet), `tcp` telling its protocol (TCP, else UDP): the protocol and lengths are those the
/// parser checked, not read again. The same bytes as [`forward_v4`]; false with nothing
/// changed when the frame is shorter than the transport header's checksum field, the TTL is
/// ≤ 1 or a UDP checksum is 0.
#[inline(always)]
pub fn forward_parsed_v4(
    data: &mut [u8],
    tcp: bool,
    src: Option<(u32, u16)>,
    dst: Option<(u32, u16)>,
) -> bool {
    if tcp {
        v4_headers::<18>(data).is_some_and(|(ip, t)| forward_v4_at(ip, t, false, src, dst))
    } else {
        v4_headers::<8>(data).is_some_and(|(ip, u)| forward_v4_at(ip, u, true, src, dst))
    }
}

/// The IPv4 header and the transport header's first `N` bytes of an untagged frame (options
/// excluded by the caller), or `None` when the frame is shorter.
#[inline(always)]
fn v4_headers<const N: usize>(data: &mut [u8]) -> Option<(&mut [u8; IPV4_LEN], &mut [u8; N])> {
    let (head, l4) = data
        .get_mut(..ETH_LEN + IPV4_LEN + N)?
        .split_at_mut(ETH_LEN + IPV4_LEN);
    Some((
        <&mut [u8; IPV4_LEN]>::try_from(&mut head[ETH_LEN..]).ok()?,
        <&mut [u8; N]>::try_from(l4).ok()?,
    ))
}

/// [`forward_v4`] on the IPv4 header `ip` and the transport header's first `N` bytes `l4`,
/// its checksum in the last two. The sums are taken over the words as they lie in memory
/// (the one's-complement sum does not depend on byte order, RFC 1071 §2(B)): only the new
/// values are put in that order.
#[inline(always)]
fn forward_v4_at<const N: usize>(
    ip: &mut [u8; IPV4_LEN],
    l4: &mut [u8; N],
    udp: bool,
    src: Option<(u32, u16)>,
    dst: Option<(u32, u16)>,
) -> bool {
    let w16 = |b: &[u8], o: usize| u64::from(u16::from_ne_bytes([b[o], b[o + 1]]));
    let w32 =
        |b: &[u8], o: usize| u64::from(u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
    let l4_old = w16(l4, N - 2);
    if ip[8] <= 1 || (udp && l4_old == 0) {
        return false;
    }
    // TTL − 1 (TTL ≥ 2): the TTL / protocol word m becomes m − 0x100, so ~m + m' = 0xFEFF.
    let mut ip_acc = (w16(ip, 10) ^ 0xffff) + u64::from(u16::from_ne_bytes([0xfe, 0xff]));
    let mut l4_acc = l4_old ^ 0xffff;
    ip[8] -= 1;
    let mut set = |a: u32, port: u16, ao: usize, po: usize| {
        let (a, port) = (a.to_be_bytes(), port.to_be_bytes());
        let delta = (w32(ip, ao) ^ 0xffff_ffff) + u64::from(u32::from_ne_bytes(a));
        ip_acc += delta;
        l4_acc += delta + (w16(l4, po) ^ 0xffff) + u64::from(u16::from_ne_bytes(port));
        ip[ao..ao + 4].copy_from_slice(&a);
        l4[po..po + 2].copy_from_slice(&port);
    };
    if let Some((a, port)) = src {
        set(a, port, 12, 0);
    }
    if let Some((a, port)) = dst {
        set(a, port, 16, 2);
    }
    ip[10..12].copy_from_slice(&(!checksum::fold64(ip_acc)).to_ne_bytes());
    let mut s = !checksum::fold64(l4_acc);
    if udp {
        s = checksum::udp_fixup(s);
    }
    l4[N - 2..].copy_from_slice(&s.to_ne_bytes());
    true
}

/// Full TCP / UDP / ICMPv6 checksum of `p`'s transport packet (the checksum field at
/// `p.l4 + field` is treated as zero). The caller has checked `p`'s offsets.
fn l4_full_checksum(data: &mut [u8], p: &Packet, field: usize) -> u16 {
    let o = p.l4 + field;
    data[o] = 0;
    data[o + 1] = 0;
    let seg = &data[p.l4..p.ip_end];
    let acc = pseudo(p, seg.len());
    checksum::checksum_with(acc, seg)
}

/// The pseudo-header sum of `p` for a transport packet of `len` bytes.
pub(crate) fn pseudo(p: &Packet, len: usize) -> u64 {
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_v4(s.octets(), d.octets(), p.proto, len as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(s.octets(), d.octets(), p.proto, len as u32)
        }
        _ => 0,
    }
}

/// Decrement the TTL / hop limit. `TtlExceeded` (frame untouched) when it is ≤ 1.
pub fn dec_ttl(data: &mut [u8], p: &mut Packet) -> Result<(), WireError> {
    check(data, p)?;
    if p.ttl <= 1 {
        return Err(WireError::TtlExceeded);
    }
    match p.family() {
        Family::V4 => {
            let t = p.l3 + 8;
            let old = u16::from_be_bytes([data[t], data[t + 1]]);
            data[t] = data[t].wrapping_sub(1);
            let new = u16::from_be_bytes([data[t], data[t + 1]]);
            let c = p.l3 + 10;
            let s = update16(u16::from_be_bytes([data[c], data[c + 1]]), old, new);
            data[c..c + 2].copy_from_slice(&s.to_be_bytes());
            p.ttl = data[t];
        }
        Family::V6 => {
            let t = p.l3 + 7;
            data[t] = data[t].wrapping_sub(1);
            p.ttl = data[t];
        }
    }
    Ok(())
}

/// Replace the Ethernet header (and any VLAN tags) by `link`. The frame grows or shrinks at
/// the front; `p`'s offsets and VLAN fields are updated.
pub fn set_link(frame: &mut Frame, p: &mut Packet, link: &Link) -> Result<(), WireError> {
    if p.l3 > p.l4 || p.l4 > p.ip_end || p.ip_end > frame.len() {
        return Err(WireError::Truncated);
    }
    let old = p.l3;
    let new = link.len();
    if new == old {
        // The usual case (untagged in, untagged out): overwrite in place.
        let Some(h) = frame.data_mut().get_mut(..new) else {
            return Err(WireError::Truncated);
        };
        link.write(h, p.family());
        p.vlan = link.vlan;
        p.vlan_inner = None;
        return Ok(());
    }
    if new > old {
        if !frame.push_front(new - old) {
            return Err(WireError::NoHeadroom);
        }
    } else if !frame.pull_front(old - new) {
        return Err(WireError::Truncated);
    }
    link.write(&mut frame.data_mut()[..new], p.family());
    p.l4 = p.l4 - old + new;
    p.ip_end = p.ip_end - old + new;
    p.l3 = new;
    p.vlan = link.vlan;
    p.vlan_inner = None;
    Ok(())
}

/// Swap the Ethernet source and destination addresses (answers sent back where they came from).
pub fn swap_macs(data: &mut [u8]) -> Result<(), WireError> {
    let h = data.get_mut(..12).ok_or(WireError::Truncated)?;
    let (a, b) = h.split_at_mut(6);
    a.swap_with_slice(b);
    Ok(())
}

/// The NAT / DR MTU test (`ip_vs_xmit.c` `ensure_mtu_is_adequate`): an IPv4 packet with DF
/// or any IPv6 packet larger than `mtu` → `TooBig { mtu }` (the sender is told); IPv4 without
/// DF, or an ICMP error → `NeedsFragmentation` (the caller fragments, see `wire::fragment`).
pub fn check_mtu(p: &Packet, mtu: u16) -> Result<(), WireError> {
    if p.ip_len() <= usize::from(mtu) {
        return Ok(());
    }
    if p.icmp_error || (p.is_v4() && !p.df) {
        Err(WireError::NeedsFragmentation)
    } else {
        Err(WireError::TooBig { mtu })
    }
}

/// ECN on encapsulation (RFC 6040 "normal mode", the kernel's `INET_ECN_encapsulate`): the
/// outer TOS is the inner one, except that CE becomes ECT(0).
pub fn outer_tos(inner: u8) -> u8 {
    // Both ECN bits set (CE, 0b11): clear the low one (ECT(0), 0b10); else unchanged.
    inner ^ (inner & (inner >> 1) & 1)
}

/// Where [`encap`] puts the inner packet: `p` with its offsets moved behind `link` and the
/// outer header of `tun`'s family (and no VLAN fields). Use it to patch the inner packet after
/// encapsulating, e.g. `dec_ttl(frame.data_mut(), &mut inner_after_encap(&p, &tun, &link))`.
pub fn inner_after_encap(p: &Packet, tun: &Tunnel, link: &Link) -> Packet {
    let outer = match Family::of(&tun.src) {
        Family::V4 => IPV4_LEN,
        Family::V6 => IPV6_LEN,
    };
    let front = link.len() + outer;
    Packet {
        l3: front,
        l4: front.saturating_add(p.l4.saturating_sub(p.l3)),
        ip_end: front.saturating_add(p.ip_len()),
        vlan: None,
        vlan_inner: None,
        ..*p
    }
}

/// Encapsulate `p`'s IP packet for a TUN backend: `link` + outer IP header + the inner packet
/// (Ethernet padding dropped). Decrement the TTL first ([`dec_ttl`]): the outer TTL copies
/// the inner one. The frame grows at the front into the headroom; afterwards `p` no longer
/// describes the frame (parse it again if needed). On error the frame is unchanged.
pub fn encap(frame: &mut Frame, p: &Packet, tun: &Tunnel, link: &Link) -> Result<(), WireError> {
    if p.l3 >= p.ip_end || p.ip_end > frame.len() || p.l4 > p.ip_end {
        return Err(WireError::Truncated);
    }
    let outer_family = Family::of(&tun.src);
    if Family::of(&tun.dst) != outer_family {
        return Err(WireError::Unsupported);
    }
    let (outer_len, min_mtu) = match outer_family {
        Family::V4 => (IPV4_LEN, 68),
        Family::V6 => (IPV6_LEN, 1280),
    };
    let inner_len = p.ip_len();
    let total = outer_len + inner_len;
    let df = !p.is_v4() || p.df;
    if total > usize::from(tun.mtu) || total > usize::from(u16::MAX) {
        let inner_mtu = usize::from(tun.mtu).saturating_sub(outer_len);
        return Err(if df && inner_mtu >= min_mtu {
            WireError::TooBig {
                mtu: inner_mtu as u16,
            }
        } else {
            WireError::NeedsFragmentation
        });
    }
    let front = link.len() + outer_len;
    if front > p.l3 {
        if !frame.push_front(front - p.l3) {
            return Err(WireError::NoHeadroom);
        }
    } else if !frame.pull_front(p.l3 - front) {
        return Err(WireError::Truncated);
    }
    // Drop the Ethernet padding after the inner packet (shrinking always fits).
    if !frame.set_len(front + inner_len) {
        return Err(WireError::Truncated);
    }
    let data = frame.data_mut();
    link.write(&mut data[..link.len()], outer_family);
    let o = link.len();
    let tos = outer_tos(p.tos);
    let inner_proto = if p.is_v4() { proto::IPIP } else { proto::IPV6 };
    match (tun.src, tun.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut data[o..o + IPV4_LEN];
            h[0] = 0x45;
            h[1] = tos;
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let id = if df { 0 } else { tun.id };
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
            h[8] = p.ttl;
            h[9] = inner_proto;
            h[10] = 0;
            h[11] = 0;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum::checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = &mut data[o..o + IPV6_LEN];
            let first = (6u32 << 28) | (u32::from(tos) << 20);
            h[0..4].copy_from_slice(&first.to_be_bytes());
            h[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
            h[6] = inner_proto;
            h[7] = p.ttl;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
        _ => return Err(WireError::Unsupported),
    }
    Ok(())
}

/// [`encap`] and then the inner [`dec_ttl`] for the common case, on plain integers: the frame
/// is untagged Ethernet carrying an IPv4 packet without options at offset 14, the tunnel is
/// IPv4 (`src`, `dst` host order, identification `id`, `mtu`) and the link untagged (`link`:
/// the destination MAC address, then the source). The same bytes as those two calls, and the
/// inner packet's length; `None` with the frame unchanged when the case does not apply or they
/// would fail (inner TTL ≤ 1, too big for the MTU, no headroom, a frame shorter than its
/// packet): the caller then takes [`encap`]. Both checksums are computed from the values written: the outer header's from
/// its five 32-bit words, the inner one's updated for TTL − 1 (the TTL / protocol word m
/// becomes m − 0x100, so ~m + m' = 0xFEFF).
#[inline(always)]
pub fn encap_ipip_v4(
    frame: &mut Frame,
    src: u32,
    dst: u32,
    id: u16,
    mtu: u16,
    link: &[u8; 12],
) -> Option<usize> {
    const L3: usize = ETH_LEN;
    const FRONT: usize = ETH_LEN + IPV4_LEN;
    let Some(Ok(h)) = frame.data().get(..FRONT).map(<&[u8; FRONT]>::try_from) else {
        return None;
    };
    let inner_len = usize::from(u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]));
    if h[12..14] != [0x08, 0x00] || h[L3] != 0x45 || inner_len < IPV4_LEN {
        return None;
    }
    encap_parsed_ipip_v4(frame, inner_len, src, dst, id, mtu, link)
}

/// [`encap_ipip_v4`] for a frame whose Ethernet and IPv4 headers the caller has checked
/// (untagged, IPv4 without options at offset 14, a total length `inner_len` ≥ 20: what
/// [`parse_v4`](super::parse::parse_v4) checks): the same bytes and result without checking
/// them again. The inner TOS, TTL and DF are read where the header lies once the frame has
/// grown; the frame is put back as it was when the TTL is ≤ 1.
#[inline(always)]
pub fn encap_parsed_ipip_v4(
    frame: &mut Frame,
    inner_len: usize,
    src: u32,
    dst: u32,
    id: u16,
    mtu: u16,
    link: &[u8; 12],
) -> Option<usize> {
    const L3: usize = ETH_LEN;
    const FRONT: usize = ETH_LEN + IPV4_LEN;
    let total = IPV4_LEN + inner_len;
    // (`mtu` is a u16: a total within it fits the length field.)
    if total > usize::from(mtu) || L3 + inner_len > frame.len() {
        return None;
    }
    if !frame.push_front(IPV4_LEN) {
        return None;
    }
    // The grown frame holds the new header and the old Ethernet + IPv4 headers (the packet
    // was inside the frame).
    let Some(d) = frame.data_mut().first_chunk_mut::<{ FRONT + IPV4_LEN }>() else {
        let _ = frame.pull_front(IPV4_LEN);
        return None;
    };
    let (tos, ttl, df) = (d[FRONT + 1], d[FRONT + 8], d[FRONT + 6] & 0x40 != 0);
    if ttl <= 1 {
        let _ = frame.pull_front(IPV4_LEN);
        return None;
    }
    let (id, frag) = if df { (0, 0x4000u16) } else { (id, 0) };
    let words = [
        0x4500_0000 | u32::from(outer_tos(tos)) << 16 | total as u32,
        u32::from(id) << 16 | u32::from(frag),
        u32::from(ttl - 1) << 24 | u32::from(proto::IPIP) << 16,
        src,
        dst,
    ];
    let sum = words.iter().map(|&w| u64::from(w)).sum::<u64>();
    let check = !checksum::fold64(sum);
    d[..12].copy_from_slice(link);
    d[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    for (i, w) in words.iter().enumerate() {
        d[L3 + 4 * i..L3 + 4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    d[L3 + 10..L3 + 12].copy_from_slice(&check.to_be_bytes());
    // The inner TTL − 1 (`dec_ttl` at the inner header's new place).
    d[FRONT + 8] = ttl - 1;
    let c = FRONT + 10;
    let old = u64::from(!u16::from_be_bytes([d[c], d[c + 1]]));
    let s = !checksum::fold64(old + 0xfeff);
    d[c..c + 2].copy_from_slice(&s.to_be_bytes());
    // Drop the Ethernet padding after the inner packet.
    frame.truncate(FRONT + inner_len);
    Some(inner_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecn_on_encapsulation() {
        // Not-ECT, ECT(1), ECT(0) are copied; CE becomes ECT(0); DSCP is kept.
        assert_eq!(outer_tos(0x00), 0x00);
        assert_eq!(outer_tos(0x01), 0x01);
        assert_eq!(outer_tos(0x02), 0x02);
        assert_eq!(outer_tos(0x03), 0x02);
        assert_eq!(outer_tos(0xbb), 0xba);
    }

    #[test]
    fn link_header_bytes() {
        let mut out = [0u8; 18];
        let l = Link {
            src: [1; 6],
            dst: [2; 6],
            vlan: Some(0x1abc),
        };
        assert_eq!(l.len(), 18);
        l.write(&mut out, Family::V6);
        assert_eq!(&out[..12], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
        // TPID 0x8100, the VLAN id masked to 12 bits, then the EtherType.
        assert_eq!(&out[12..], &[0x81, 0x00, 0x0a, 0xbc, 0x86, 0xdd]);
        let l = Link { vlan: None, ..l };
        assert_eq!(l.len(), 14);
        l.write(&mut out[..14], Family::V4);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
    }

    #[test]
    fn swap_macs_needs_twelve_bytes() {
        let mut d = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
        swap_macs(&mut d).unwrap();
        assert_eq!(d, [7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 13]);
        assert_eq!(swap_macs(&mut [0; 11]), Err(WireError::Truncated));
    }
}
