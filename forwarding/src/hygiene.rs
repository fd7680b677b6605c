//! Input hygiene: the checks a careful router (the Linux kernel's receive path) makes before
//! a frame may be forwarded or open a connection, each failure with its own [`DropReason`].
//!
//! * [`l2`]: the destination MAC must be the ingress port's (`eth_type_trans` marks other
//!   unicast addresses `PACKET_OTHERHOST` and `ip_rcv` drops them); an L2 broadcast /
//!   multicast destination may carry only an IP broadcast / multicast destination (those are
//!   the kernel's: VRRP, IGMP, ND) — with a unicast IP destination it is dropped, as
//!   `ip_route_input_slow` / RFC 1812 §5.3.4 want. VLAN (802.1Q): a tag whose VLAN id is not
//!   configured on the port is dropped (the kernel has no VLAN device for it: the frame ends
//!   `PACKET_OTHERHOST`); id 0 is a priority tag and means untagged (`vlan_do_receive`); id
//!   4095 is reserved (IEEE 802.1Q table 9-2) and dropped; stacked tags (QinQ) are not
//!   terminated and dropped.
//! * [`martian`]: martian sources (`ip_route_input_slow`'s `martian_source`: 0/8, 127/8,
//!   224/4, 240/4 incl. limited broadcast; IPv6 (`ipv6_rcv`, RFC 4291): ::, ::1, ff00::/8,
//!   ::ffff:0:0/96), a source equal to the destination (LAND), and — not a kernel check, but
//!   what `rp_filter` achieves for a director whose VIPs are local — a source that is one of
//!   the VIPs. Checked only for packets that would open a connection.
//! * [`ipv4_options`]: `ip_options_compile` for a received packet: option length 0 / 1 or
//!   running past the header, record route / timestamp / source route with bad pointers or
//!   lengths, a router alert shorter than 4 bytes, a duplicate RR / TS / SRR → `BadIpOptions`
//!   (the kernel also answers ICMP parameter problem; xvs only drops). A well-formed LSRR /
//!   SSRR → `SourceRoute` (`ip_rcv_options` with the default `accept_source_route = 0`).
//!   CIPSO contents are not validated.
//! * [`ipv6_chain`]: hop-by-hop anywhere but first (RFC 8200 §4.1; the kernel answers
//!   parameter problem "unrecognized next header") → `BadExtChain`; a routing header with
//!   segments left > 0: we are its final destination (the VIP is ours), and the kernel's
//!   `ipv6_rthdr_rcv` then discards it (type 0 deprecated, SRH with `seg6_enabled = 0`, other
//!   types with a parameter problem) → `RoutingHeader`; hop-by-hop and destination options
//!   as `ip6_parse_tlv` checks them (more than 7 padding bytes in a row, PadN not zero, an
//!   option running past its header, more than 8 options, an unknown option whose action
//!   bits are 01 / 10 / 11) → `BadExtOption` (for 10 / 11 the kernel also answers a
//!   parameter problem; xvs only drops); a jumbo payload option → `BadJumbo` (`ipv6_hop_jumbo`
//!   accepts one only with payload length 0 and a length > 65 535, which no frame on our links
//!   can carry: every jumbo option that reaches us is one the kernel rejects); a fragment
//!   with M = 1 whose fragment data is not a multiple of 8 bytes → `BadFragmentLength`
//!   (`ip6_frag_queue`).
//! * [`icmp_checksum_ok`], [`quote_fault`]: received ICMP errors (see the pipeline's
//!   `icmp_error`): the whole-message checksum (ICMPv6 with its pseudo-header), and why a
//!   quote cannot be used: bad IP version / IHL → `IcmpBadQuote`, an ICMP error about an ICMP
//!   error → `IcmpAboutError`, too short for the ports → `IcmpShortQuote`.

use std::net::IpAddr;

use crate::net::{Mac, PortVlans};
use crate::wire::parse::{is_icmp4_error, is_icmp6_error};
use crate::wire::{checksum, proto, Frag, Packet, IPV4_LEN, IPV6_LEN};
use crate::DropReason;

/// The outcome of the L2 checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2 {
    /// Addressed to us: go on.
    Accept,
    /// L2 and IP broadcast / multicast: the kernel's.
    Pass,
    Drop(DropReason),
}

/// Is this IP destination a broadcast / multicast one (the kernel's, never a service)?
fn is_group_ip(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// The L2 checks of a frame that arrived on a port with MAC `port_mac` (`None`: the port's
/// MAC is not known, e.g. an offline replay of a configuration without one — the unicast
/// address check is then skipped) and VLANs `vlans` (`None`: untagged only).
#[inline]
pub fn l2(data: &[u8], p: &Packet, port_mac: Option<Mac>, vlans: Option<&PortVlans>) -> L2 {
    let Some(dst) = data.get(..6) else {
        return L2::Drop(DropReason::Truncated);
    };
    if dst[0] & 1 != 0 {
        return if is_group_ip(p.dst) {
            L2::Pass
        } else {
            L2::Drop(DropReason::L2Multicast)
        };
    }
    if let Some(mac) = port_mac {
        if dst != mac {
            return L2::Drop(DropReason::OtherHost);
        }
    }
    match (p.vlan, p.vlan_inner) {
        (None, _) => L2::Accept,
        (Some(_), Some(_)) => L2::Drop(DropReason::VlanStacked),
        (Some(0), None) => L2::Accept,
        (Some(4095), None) => L2::Drop(DropReason::VlanReserved),
        (Some(id), None) => {
            if vlans.is_some_and(|v| v.ingress.contains(&id)) {
                L2::Accept
            } else {
                L2::Drop(DropReason::VlanUnconfigured)
            }
        }
    }
}

/// Martian, spoofed (`vips`) and LAND sources of a packet that would open a connection.
pub fn martian(p: &Packet, vips: &[IpAddr]) -> Option<DropReason> {
    if p.src == p.dst {
        return Some(DropReason::Land);
    }
    let martian = match p.src {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 0 || o[0] == 127 || o[0] >= 224
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_unspecified()
                || a.is_loopback()
                || s[0] & 0xff00 == 0xff00
                || (s[..5] == [0; 5] && s[5] == 0xffff)
        }
    };
    if martian {
        return Some(DropReason::MartianSource);
    }
    if vips.contains(&p.src) {
        return Some(DropReason::SourceIsVip);
    }
    None
}

/// IPv4 option types (RFC 791, RFC 2113).
mod opt {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const RR: u8 = 7;
    pub const TS: u8 = 68;
    pub const LSRR: u8 = 131;
    pub const SSRR: u8 = 137;
    pub const RA: u8 = 148;
}

/// The IPv4 options of `p` (the bytes between the fixed header and `p.l4`), checked as the
/// kernel's `ip_options_compile` checks a received packet's. `Ok` when there are none.
pub fn ipv4_options(data: &[u8], p: &Packet) -> Result<(), DropReason> {
    let Some(opts) = data.get(p.l3 + IPV4_LEN..p.l4) else {
        return Err(DropReason::Truncated);
    };
    let bad = Err(DropReason::BadIpOptions);
    let (mut rr, mut ts, mut srr) = (false, false, false);
    let mut i = 0;
    while i < opts.len() {
        let t = opts[i];
        if t == opt::EOL {
            break;
        }
        if t == opt::NOP {
            i += 1;
            continue;
        }
        let rest = &opts[i..];
        if rest.len() < 2 {
            return bad;
        }
        let len = usize::from(rest[1]);
        if len < 2 || len > rest.len() {
            return bad;
        }
        let o = &rest[..len];
        match t {
            opt::RR => {
                if rr || len < 3 || o[2] < 4 {
                    return bad;
                }
                rr = true;
                let ptr = usize::from(o[2]);
                if ptr <= len && ptr + 3 > len {
                    return bad;
                }
            }
            opt::LSRR | opt::SSRR => {
                if srr || len < 3 || o[2] < 4 {
                    return bad;
                }
                srr = true;
            }
            opt::TS => {
                if ts || len < 4 || o[2] < 5 {
                    return bad;
                }
                ts = true;
                let ptr = usize::from(o[2]);
                if ptr <= len {
                    if ptr + 3 > len {
                        return bad;
                    }
                    // Flags 1 (address + time) and 3 (prespecified) take 8 bytes a slot.
                    if matches!(o[3] & 0xf, 1 | 3) && ptr + 7 > len {
                        return bad;
                    }
                } else if o[3] & 0xf != 3 && o[3] >> 4 == 15 {
                    // Full, and the overflow counter would overflow.
                    return bad;
                }
            }
            opt::RA if len < 4 => return bad,
            _ => {}
        }
        i += len;
    }
    if srr {
        return Err(DropReason::SourceRoute);
    }
    Ok(())
}

/// IPv6 extension header types.
mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const DEST_OPTS: u8 = 60;
}

/// The most extension headers walked (as the parser's limit).
const MAX_EXT: usize = crate::wire::parse::MAX_EXT_HEADERS;
/// `ip6_parse_tlv`'s limits: consecutive padding bytes, and options per header (the default
/// `max_hbh_opts_cnt` / `max_dst_opts_cnt`).
const MAX_PAD: usize = 7;
const MAX_OPTS: usize = 8;

/// The IPv6 extension header chain of `p`, checked as described in the module comment.
/// Cheap to skip: the caller calls it only when `p` has extension headers.
pub fn ipv6_chain(data: &[u8], p: &Packet) -> Result<(), DropReason> {
    let Some(&first) = data.get(p.l3 + 6) else {
        return Err(DropReason::Truncated);
    };
    let mut next = first;
    let mut off = p.l3 + IPV6_LEN;
    let end = p.ip_end.min(data.len());
    for n in 0..MAX_EXT {
        let h = data.get(off..end).unwrap_or(&[]);
        let len = match next {
            ext::HOP_BY_HOP | ext::DEST_OPTS | ext::ROUTING => {
                let l = h.get(1).map_or(0, |&l| (usize::from(l) + 1) * 8);
                if l == 0 || l > h.len() {
                    return Err(DropReason::Truncated);
                }
                match next {
                    ext::HOP_BY_HOP if n != 0 => return Err(DropReason::BadExtChain),
                    ext::HOP_BY_HOP => tlv_options(&h[2..l], true)?,
                    ext::DEST_OPTS => tlv_options(&h[2..l], false)?,
                    _ => {
                        if h[3] != 0 {
                            return Err(DropReason::RoutingHeader);
                        }
                    }
                }
                l
            }
            ext::FRAGMENT => {
                if h.len() < 8 {
                    return Err(DropReason::Truncated);
                }
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                let more = h[3] & 1 != 0;
                if more && (h.len() - 8) % 8 != 0 {
                    return Err(DropReason::BadFragmentLength);
                }
                if offset != 0 {
                    return Ok(());
                }
                8
            }
            proto::AH => {
                let l = h.get(1).map_or(0, |&l| (usize::from(l) + 2) * 4);
                if l == 0 || l > h.len() {
                    return Err(DropReason::Truncated);
                }
                l
            }
            _ => return Ok(()),
        };
        next = h[0];
        off += len;
    }
    Ok(())
}

/// Hop-by-hop (`hbh`) or destination options: the TLVs after the 2-byte header.
fn tlv_options(o: &[u8], hbh: bool) -> Result<(), DropReason> {
    let bad = Err(DropReason::BadExtOption);
    let (mut i, mut pad, mut count) = (0, 0, 0);
    while i < o.len() {
        let t = o[i];
        if t == 0 {
            // Pad1.
            pad += 1;
            if pad > MAX_PAD {
                return bad;
            }
            i += 1;
            continue;
        }
        let Some(&l) = o.get(i + 1) else {
            return bad;
        };
        let l = usize::from(l);
        if i + 2 + l > o.len() {
            return bad;
        }
        if t == 1 {
            // PadN: zeros only (RFC 4942).
            pad += l + 2;
            if pad > MAX_PAD || o[i + 2..i + 2 + l].iter().any(|&b| b != 0) {
                return bad;
            }
        } else {
            pad = 0;
            count += 1;
            if count > MAX_OPTS {
                return bad;
            }
            // The options the kernel knows: hop-by-hop router alert 5, CALIPSO 7, IOAM 0x31
            // (jumbo 0xC2 is refused below); destination home address 0xC9.
            let known = if hbh {
                matches!(t, 5 | 7 | 0x31)
            } else {
                t == 0xc9
            };
            if hbh && t == 0xc2 {
                return Err(DropReason::BadJumbo);
            }
            if !known && t >> 6 != 0 {
                return bad;
            }
        }
        i += 2 + l;
    }
    Ok(())
}

/// Does the checksum of the ICMP / ICMPv6 message of `p` verify?
pub fn icmp_checksum_ok(data: &[u8], p: &Packet) -> bool {
    let Some(msg) = data.get(p.l4..p.ip_end) else {
        return false;
    };
    let acc = match (p.src, p.dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(s.octets(), d.octets(), proto::ICMPV6, msg.len() as u32)
        }
        _ => 0,
    };
    checksum::verifies(acc, msg)
}

/// Why the quote of the ICMP error `p` cannot be used, or `None` when it can (an IP header
/// of the right version, not about an ICMP error, the ports present for TCP / UDP / SCTP).
pub fn quote_fault(data: &[u8], p: &Packet) -> Option<DropReason> {
    let off = p.l4 + 8;
    let q = data.get(off..p.ip_end.min(data.len())).unwrap_or(&[]);
    let (inner_proto, l4) = if p.is_v4() {
        if q.len() < IPV4_LEN {
            return Some(DropReason::IcmpShortQuote);
        }
        let ihl = usize::from(q[0] & 0xf) * 4;
        if q[0] >> 4 != 4 || ihl < IPV4_LEN {
            return Some(DropReason::IcmpBadQuote);
        }
        if ihl > q.len() {
            return Some(DropReason::IcmpShortQuote);
        }
        // A later fragment carries no transport header: nothing more to check.
        if u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
            return None;
        }
        (q[9], ihl)
    } else {
        if q.len() < IPV6_LEN {
            return Some(DropReason::IcmpShortQuote);
        }
        if q[0] >> 4 != 6 {
            return Some(DropReason::IcmpBadQuote);
        }
        match crate::wire::parse::skip_ipv6_exts(data, q[6], off + IPV6_LEN, off + q.len()) {
            Ok((_, _, Frag::Later)) => return None,
            Ok((next, l4, _)) => (next, l4 - off),
            Err(_) => return Some(DropReason::IcmpShortQuote),
        }
    };
    let t = &q[l4.min(q.len())..];
    let about_error = match inner_proto {
        proto::ICMP if p.is_v4() => t.first().is_some_and(|&ty| is_icmp4_error(ty)),
        proto::ICMPV6 if !p.is_v4() => t.first().is_some_and(|&ty| is_icmp6_error(ty)),
        _ => false,
    };
    if about_error {
        return Some(DropReason::IcmpAboutError);
    }
    if matches!(inner_proto, proto::TCP | proto::UDP | proto::SCTP) && t.len() < 4 {
        return Some(DropReason::IcmpShortQuote);
    }
    None
}

/// Does `p` carry IPv4 options or IPv6 extension headers (a fragment header included)?
#[inline]
pub fn has_options(p: &Packet) -> bool {
    let fixed = if p.is_v4() { IPV4_LEN } else { IPV6_LEN };
    p.l4.saturating_sub(p.l3) > fixed || (!p.is_v4() && p.frag != Frag::None)
}
