//! ICMP errors: the embedded packet, NAT translation of errors, and answers built by the
//! director.
//!
//! * [`parse_embedded`]: an ICMP error (RFC 792; ICMPv6 RFC 4443) carries the start of the
//!   packet that caused it: its IP header and at least 8 bytes of payload (IPv6: as much as
//!   fits 1280 bytes). We parse that IP header (IPv6: skipping extension headers within the
//!   bytes present) and the first 4 bytes of TCP / UDP / SCTP (the ports). The embedded
//!   packet's length fields describe the original and are *not* checked against what is
//!   present. IPVS (`ip_vs_in_icmp`, `ip_vs_out_icmp`) looks the connection up with this
//!   tuple reversed.
//! * [`translate_error`]: IPVS's `ip_vs_nat_icmp` / `ip_vs_nat_icmp_v6`: rewrite the outer
//!   source or destination, the embedded packet's addresses and ports, recompute the embedded
//!   IPv4 header checksum and the full ICMP checksum (ICMPv6 with the pseudo-header). The
//!   embedded TCP/UDP checksum cannot be fixed (the packet is truncated) and is left, as in the
//!   kernel.
//! * [`answer`]: turn the offending frame into the ICMP error about it, in place: IPv4
//!   frag-needed (type 3 code 4, RFC 1191 next-hop MTU) / ICMPv6 packet-too-big (type 2, RFC
//!   4443 §3.2), time-exceeded (11/0, ICMPv6 3/0) and port-unreachable (3/3, ICMPv6 1/4, sent
//!   by IPVS's `ip_vs_leave` when no backend is found). The answer carries the original IP
//!   packet from its header on, cut so the answer fits 576 bytes (IPv4, RFC 1812 §4.3.2.3)
//!   or 1280 bytes (IPv6, RFC 4443 §2.4(c)); it goes back to the original source from the
//!   original destination (the VIP), TTL 64, Ethernet addresses swapped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::parse::{skip_ipv6_exts, Frag, Packet};
use super::rewrite::{pseudo, swap_macs};
use super::{proto, Family, WireError, IPV4_LEN, IPV6_LEN};
use crate::frame::Frame;

/// The packet embedded in an ICMP error, as far as it is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedded {
    /// Offset of the embedded IP header in the frame.
    pub l3: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Its transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of its transport header.
    pub l4: usize,
    /// End of the embedded bytes (the end of the outer IP packet).
    pub end: usize,
    pub frag: Frag,
    /// Ports of TCP / UDP / SCTP (0 otherwise, see `has_ports`).
    pub sport: u16,
    pub dport: u16,
    /// True when the ports were present and meaningful.
    pub has_ports: bool,
}

impl Embedded {
    pub fn family(&self) -> Family {
        Family::of(&self.src)
    }
}

/// Parse the packet embedded in the ICMP error `p` (which must have `p.icmp_error`).
pub fn parse_embedded(data: &[u8], p: &Packet) -> Result<Embedded, WireError> {
    if !p.icmp_error || p.frag == Frag::Later {
        return Err(WireError::Unsupported);
    }
    let off = p.l4.checked_add(8).ok_or(WireError::Truncated)?;
    parse_embedded_at(data, off, p.ip_end, p.family())
}

/// Parse a truncated IP packet of `family` at `data[off..end]` (e.g. the packet inside an
/// ICMP error, or the inner packet of an IPIP packet embedded in an ICMP error).
pub fn parse_embedded_at(
    data: &[u8],
    off: usize,
    end: usize,
    family: Family,
) -> Result<Embedded, WireError> {
    let end = end.min(data.len());
    let b = data.get(off..end).ok_or(WireError::Truncated)?;
    let mut e = match family {
        Family::V4 => {
            let h = b.get(..IPV4_LEN).ok_or(WireError::Truncated)?;
            if h[0] >> 4 != 4 || h[0] & 0xf < 5 {
                return Err(WireError::Malformed);
            }
            let hlen = usize::from(h[0] & 0xf) * 4;
            if hlen > b.len() {
                return Err(WireError::Truncated);
            }
            let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            let more = h[6] & 0x20 != 0;
            Embedded {
                l3: off,
                src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                proto: h[9],
                l4: off + hlen,
                end,
                frag: if frag_off != 0 {
                    Frag::Later
                } else if more {
                    Frag::First
                } else {
                    Frag::None
                },
                sport: 0,
                dport: 0,
                has_ports: false,
            }
        }
        Family::V6 => {
            let h = b.get(..IPV6_LEN).ok_or(WireError::Truncated)?;
            if h[0] >> 4 != 6 {
                return Err(WireError::Malformed);
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&h[24..40]);
            let (next, l4, frag) = skip_ipv6_exts(data, h[6], off + IPV6_LEN, end)?;
            Embedded {
                l3: off,
                src: IpAddr::V6(Ipv6Addr::from(s)),
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                proto: next,
                l4,
                end,
                frag,
                sport: 0,
                dport: 0,
                has_ports: false,
            }
        }
    };
    if e.frag != Frag::Later && matches!(e.proto, proto::TCP | proto::UDP | proto::SCTP) {
        let ports = data
            .get(e.l4..e.l4 + 4)
            .filter(|_| e.l4 + 4 <= end)
            .ok_or(WireError::Truncated)?;
        e.sport = u16::from_be_bytes([ports[0], ports[1]]);
        e.dport = u16::from_be_bytes([ports[2], ports[3]]);
        e.has_ports = true;
    }
    Ok(e)
}

/// What [`translate_error`] changes. `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IcmpNat {
    /// New outer source (server side NAT: the VIP).
    pub outer_src: Option<IpAddr>,
    /// New outer destination (client side NAT: the backend).
    pub outer_dst: Option<IpAddr>,
    /// New embedded source address and port (client side NAT: backend address:port).
    pub inner_src: Option<(IpAddr, u16)>,
    /// New embedded destination address and port (server side NAT: VIP:vport).
    pub inner_dst: Option<(IpAddr, u16)>,
}

/// Translate an ICMP error for NAT / FullNAT (see the module comment). `p` and `e` are
/// updated. On error the frame is unchanged.
pub fn translate_error(
    data: &mut [u8],
    p: &mut Packet,
    e: &mut Embedded,
    nat: &IcmpNat,
) -> Result<(), WireError> {
    let fam = p.family();
    let hlen = match fam {
        Family::V4 => IPV4_LEN,
        Family::V6 => IPV6_LEN,
    };
    // Validate everything before the first write. The first line bounds every offset by the
    // slice length, so the sums after it cannot overflow.
    let ok_offsets = p.ip_end <= data.len()
        && e.end <= p.ip_end
        && e.l4 <= e.end
        && e.l3 <= e.l4
        && p.l4 <= e.l3
        && p.l3 <= p.l4
        && p.l3 + hlen <= p.l4
        && p.l4 + 8 <= e.l3
        && e.l3 + hlen <= e.l4
        && (!e.has_ports || e.l4 + 4 <= e.end);
    let same_family = e.family() == fam && Family::of(&e.dst) == fam && Family::of(&p.dst) == fam;
    if !ok_offsets || !p.icmp_error || !same_family {
        return Err(WireError::Truncated);
    }
    let addrs = [
        nat.outer_src,
        nat.outer_dst,
        nat.inner_src.map(|x| x.0),
        nat.inner_dst.map(|x| x.0),
    ];
    if addrs.iter().flatten().any(|a| Family::of(a) != fam) {
        return Err(WireError::Unsupported);
    }
    let (src_off, dst_off) = match fam {
        Family::V4 => (12, 16),
        Family::V6 => (8, 24),
    };
    let put_addr = |data: &mut [u8], at: usize, a: IpAddr| match a {
        IpAddr::V4(a) => data[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => data[at..at + 16].copy_from_slice(&a.octets()),
    };
    if let Some(a) = nat.outer_src {
        put_addr(data, p.l3 + src_off, a);
        p.src = a;
    }
    if let Some(a) = nat.outer_dst {
        put_addr(data, p.l3 + dst_off, a);
        p.dst = a;
    }
    if let Some((a, port)) = nat.inner_src {
        put_addr(data, e.l3 + src_off, a);
        e.src = a;
        if e.has_ports {
            data[e.l4..e.l4 + 2].copy_from_slice(&port.to_be_bytes());
            e.sport = port;
        }
    }
    if let Some((a, port)) = nat.inner_dst {
        put_addr(data, e.l3 + dst_off, a);
        e.dst = a;
        if e.has_ports {
            data[e.l4 + 2..e.l4 + 4].copy_from_slice(&port.to_be_bytes());
            e.dport = port;
        }
    }
    if fam == Family::V4 {
        fix_ipv4_header(data, p.l3, p.l4);
        // The embedded header is complete (checked above): IHL·4 bytes from e.l3.
        fix_ipv4_header(data, e.l3, e.l4);
    }
    fix_icmp_checksum(data, p);
    Ok(())
}

/// Recompute the IPv4 header checksum of the header at `data[l3..l4]`.
fn fix_ipv4_header(data: &mut [u8], l3: usize, l4: usize) {
    data[l3 + 10] = 0;
    data[l3 + 11] = 0;
    let c = checksum::checksum(&data[l3..l4]);
    data[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the full ICMP / ICMPv6 checksum of `p` (offsets already checked).
fn fix_icmp_checksum(data: &mut [u8], p: &Packet) {
    data[p.l4 + 2] = 0;
    data[p.l4 + 3] = 0;
    let msg = &data[p.l4..p.ip_end];
    let acc = if p.is_v4() { 0 } else { pseudo(p, msg.len()) };
    let c = checksum::checksum_with(acc, msg);
    data[p.l4 + 2..p.l4 + 4].copy_from_slice(&c.to_be_bytes());
}

/// An ICMP error the director sends about a packet it cannot forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpAnswer {
    /// IPv4 destination unreachable / fragmentation needed (3/4) with the next-hop MTU;
    /// ICMPv6 packet too big (2/0) with the MTU.
    TooBig { mtu: u16 },
    /// Time exceeded in transit (IPv4 11/0, ICMPv6 3/0).
    TimeExceeded,
    /// Port unreachable (IPv4 3/3, ICMPv6 1/4).
    PortUnreachable,
}

/// Largest answer: RFC 1812 §4.3.2.3 (IPv4), RFC 4443 §2.4(c) (IPv6, the minimum MTU).
pub const MAX_ANSWER_V4: usize = 576;
pub const MAX_ANSWER_V6: usize = 1280;

/// Replace the frame by the ICMP error `kind` about it (see the module comment). The link
/// header is kept with its addresses swapped (send it back out of the ingress port); `p` no
/// longer describes the frame afterwards. Refused (`Unsupported`) for ICMP errors (RFC 1122
/// §3.2.2: never an error about an error) and `Fragment` for later fragments. Must be called
/// on the packet as it arrived, before any rewrite.
pub fn answer(frame: &mut Frame, p: &Packet, kind: IcmpAnswer) -> Result<(), WireError> {
    if p.icmp_error {
        return Err(WireError::Unsupported);
    }
    if p.frag == Frag::Later {
        return Err(WireError::Fragment);
    }
    if p.l3 < 12 || p.l3 >= p.ip_end || p.ip_end > frame.len() {
        return Err(WireError::Truncated);
    }
    let fam = p.family();
    if Family::of(&p.dst) != fam {
        return Err(WireError::Unsupported);
    }
    let (hdr, max) = match fam {
        Family::V4 => (IPV4_LEN + 8, MAX_ANSWER_V4),
        Family::V6 => (IPV6_LEN + 8, MAX_ANSWER_V6),
    };
    let quoted = p.ip_len().min(max - hdr);
    let new_len = p.l3 + hdr + quoted;
    if !frame.set_len(new_len) {
        return Err(WireError::NoHeadroom);
    }
    let data = frame.data_mut();
    data.copy_within(p.l3..p.l3 + quoted, p.l3 + hdr);
    swap_macs(data)?;
    let (icmp_type, code, rest): (u8, u8, u32) = match (fam, kind) {
        (Family::V4, IcmpAnswer::TooBig { mtu }) => (3, 4, u32::from(mtu)),
        (Family::V4, IcmpAnswer::TimeExceeded) => (11, 0, 0),
        (Family::V4, IcmpAnswer::PortUnreachable) => (3, 3, 0),
        (Family::V6, IcmpAnswer::TooBig { mtu }) => (2, 0, u32::from(mtu)),
        (Family::V6, IcmpAnswer::TimeExceeded) => (3, 0, 0),
        (Family::V6, IcmpAnswer::PortUnreachable) => (1, 4, 0),
    };
    let l3 = p.l3;
    let l4 = l3 + hdr - 8;
    let msg_len = 8 + quoted;
    match (p.dst, p.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut data[l3..l4];
            h[0] = 0x45;
            // Like the kernel's icmp_send: the original TOS bits with precedence
            // "internetwork control".
            h[1] = (p.tos & 0x1e) | 0xc0;
            h[2..4].copy_from_slice(&((IPV4_LEN + msg_len) as u16).to_be_bytes());
            h[4..8].fill(0);
            h[8] = 64;
            h[9] = proto::ICMP;
            h[10] = 0;
            h[11] = 0;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum::checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = &mut data[l3..l4];
            h[0..4].copy_from_slice(&(6u32 << 28).to_be_bytes());
            h[4..6].copy_from_slice(&(msg_len as u16).to_be_bytes());
            h[6] = proto::ICMPV6;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
        _ => return Err(WireError::Unsupported),
    }
    let m = &mut data[l4..l4 + msg_len];
    m[0] = icmp_type;
    m[1] = code;
    m[2] = 0;
    m[3] = 0;
    m[4..8].copy_from_slice(&rest.to_be_bytes());
    let acc = match (p.dst, p.src) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(s.octets(), d.octets(), proto::ICMPV6, msg_len as u32)
        }
        _ => 0,
    };
    let c = checksum::checksum_with(acc, m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header + 8 bytes that the kernel quoted in a port unreachable captured on
    /// veth (198.18.0.1:59010 → 198.18.0.2:9, UDP; see `tests/wire_captured.rs`).
    const QUOTED: [u8; 28] = [
        0x45, 0x00, 0x00, 0x25, 0x11, 0xc4, 0x40, 0x00, 0x40, 0x11, 0x9c, 0xdc, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02, 0xe6, 0x82, 0x00, 0x09, 0x00, 0x11, 0x5d, 0xaf,
    ];

    #[test]
    fn embedded_ipv4_udp() {
        let e = parse_embedded_at(&QUOTED, 0, QUOTED.len(), Family::V4).unwrap();
        assert_eq!((e.l3, e.l4, e.end, e.proto), (0, 20, 28, proto::UDP));
        assert_eq!(
            (e.sport, e.dport, e.has_ports, e.frag),
            (59010, 9, true, Frag::None)
        );
        assert_eq!(e.src, IpAddr::from([198, 18, 0, 1]));
        assert_eq!(e.dst, IpAddr::from([198, 18, 0, 2]));
        // The ports need 4 bytes after the header; the header needs all of its IHL.
        assert_eq!(
            parse_embedded_at(&QUOTED, 0, 23, Family::V4),
            Err(WireError::Truncated)
        );
        assert!(parse_embedded_at(&QUOTED, 0, 24, Family::V4).is_ok());
        let mut opts = QUOTED;
        opts[0] = 0x46;
        assert_eq!(
            parse_embedded_at(&opts, 0, 23, Family::V4),
            Err(WireError::Truncated)
        );
        // Wrong version, or an offset past the end.
        assert_eq!(
            parse_embedded_at(&QUOTED, 0, 28, Family::V6),
            Err(WireError::Truncated)
        );
        opts[0] = 0x65;
        assert_eq!(
            parse_embedded_at(&opts, 0, 28, Family::V4),
            Err(WireError::Malformed)
        );
        assert_eq!(
            parse_embedded_at(&QUOTED, 29, 28, Family::V4),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn fix_checksums() {
        let mut h = QUOTED;
        h[10] = 0;
        h[11] = 0;
        fix_ipv4_header(&mut h, 0, 20);
        assert_eq!(&h[10..12], &[0x9c, 0xdc]);
    }
}
