//! `rewrite::forward` (TTL − 1 and the NAT / FullNAT endpoint changes in one pass, with an IPv4
//! fast path) against the sequential calls it replaces (`dec_ttl`, then `set_src` / `set_dst` /
//! `set_src_dst`): same bytes, same `Packet`, same error, for random packets of every kind —
//! IPv4 and IPv6, TCP / UDP (with and without checksum) / SCTP / ICMP, fragments, TTL 0–2,
//! random (even wrong) checksum fields, new addresses of either family, forged offsets.
#![cfg(feature = "testkit")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xvs_forwarding::testkit::{verify_checksums, Pkt};
use xvs_forwarding::wire::{self, rewrite, Packet, Parsed, WireError};

type Endpoint = Option<(IpAddr, u16)>;

fn sequential(
    data: &mut [u8],
    p: &mut Packet,
    src: Endpoint,
    dst: Endpoint,
) -> Result<(), WireError> {
    rewrite::dec_ttl(data, p)?;
    match (src, dst) {
        (Some(s), Some(d)) => rewrite::set_src_dst(data, p, s, d),
        (Some((a, port)), None) => rewrite::set_src(data, p, a, port),
        (None, Some((a, port))) => rewrite::set_dst(data, p, a, port),
        (None, None) => Ok(()),
    }
}

fn addr(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

/// Build a frame: `kind` 0 TCP, 1 UDP, 2 UDP without checksum (IPv4), 3 SCTP, 4 ICMP echo.
fn frame(v6: bool, kind: u8, ttl: u8, frag: u8, s: u128, d: u128, ports: (u16, u16)) -> Vec<u8> {
    let mut b = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ip_layer(addr(v6, s), addr(v6, d))
        .ttl(ttl);
    b = match frag {
        1 => b.frag(0, true),
        2 => b.frag(185, false),
        _ => b,
    };
    b = match kind {
        0 => b.tcp(ports.0, ports.1).ack(),
        1 => b.udp(ports.0, ports.1),
        2 if !v6 => b.udp(ports.0, ports.1).udp_zero_checksum(),
        2 => b.udp(ports.0, ports.1),
        3 => b.sctp(ports.0, ports.1),
        _ => b.icmp_echo(ports.0, ports.1),
    };
    b.payload(&[0x5a; 23]).build()
}

fn check_same(
    mut a: Vec<u8>,
    mut p: Packet,
    src: Endpoint,
    dst: Endpoint,
) -> Result<(), TestCaseError> {
    let mut b = a.clone();
    let mut q = p;
    let ra = rewrite::forward(&mut a, &mut p, src, dst);
    let rb = sequential(&mut b, &mut q, src, dst);
    prop_assert_eq!(ra, rb);
    prop_assert_eq!(&a, &b);
    prop_assert_eq!(p, q);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn forward_matches_sequential(
        v6 in any::<bool>(),
        kind in 0u8..5,
        ttl in 0u8..4,
        frag in prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        (s, d) in (any::<u128>(), any::<u128>()),
        ports in (any::<u16>(), any::<u16>()),
        which in 0u8..4,
        (ns, nd) in ((any::<bool>(), any::<u128>()), (any::<bool>(), any::<u128>())),
        (nsp, ndp) in (any::<u16>(), any::<u16>()),
        csums in (any::<u16>(), any::<u16>(), any::<bool>()),
    ) {
        let mut f = frame(v6, kind, ttl.max(1), frag, s, d, ports);
        let Parsed::Ip(mut p) = wire::parse(&f) else {
            return Err(TestCaseError::fail("builder frame did not parse"));
        };
        // TTL 0 and 1 are refused; set it after the parse so both paths see the same `Packet`.
        p.ttl = ttl;
        // Random checksum fields: the updates are incremental, wrong sums stay consistently
        // wrong (and the IPv4 header checksum is not re-verified).
        if csums.2 && p.l4 + 8 <= f.len() {
            let (ip, l4) = (csums.0.to_be_bytes(), csums.1.to_be_bytes());
            if !v6 {
                f[p.l3 + 10..p.l3 + 12].copy_from_slice(&ip);
            }
            let off = match p.proto { 6 => 16, 17 => 6, _ => 2 };
            if p.l4 + off + 2 <= f.len() {
                f[p.l4 + off..p.l4 + off + 2].copy_from_slice(&l4);
            }
        }
        // New endpoints: usually the packet's family, sometimes the other one.
        let src = (which & 1 != 0).then(|| (addr(v6 ^ (ns.0 && ns.1 % 7 == 0), ns.1), nsp));
        let dst = (which & 2 != 0).then(|| (addr(v6 ^ (nd.0 && nd.1 % 7 == 0), nd.1), ndp));
        check_same(f, p, src, dst)?;
    }

    #[test]
    fn forward_keeps_checksums_valid(
        v6 in any::<bool>(),
        kind in 0u8..5,
        (s, d) in (any::<u128>(), any::<u128>()),
        ports in (any::<u16>(), any::<u16>()),
        which in 0u8..4,
        (ns, nd) in (any::<u128>(), any::<u128>()),
        (nsp, ndp) in (any::<u16>(), any::<u16>()),
    ) {
        let mut f = frame(v6, kind, 64, 0, s, d, ports);
        let Parsed::Ip(mut p) = wire::parse(&f) else {
            return Err(TestCaseError::fail("builder frame did not parse"));
        };
        let src = (which & 1 != 0).then(|| (addr(v6, ns), nsp));
        let dst = (which & 2 != 0).then(|| (addr(v6, nd), ndp));
        prop_assert_eq!(rewrite::forward(&mut f, &mut p, src, dst), Ok(()));
        prop_assert_eq!(verify_checksums(&f), Ok(()));
        let Parsed::Ip(q) = wire::parse(&f) else {
            return Err(TestCaseError::fail("rewritten frame did not parse"));
        };
        prop_assert_eq!(p, q);
    }

    /// Forged offsets (a `Packet` that does not describe the bytes): never a panic, and the
    /// same outcome as the sequential calls.
    #[test]
    fn forward_forged_packets(
        kind in 0u8..5,
        len in 0usize..120,
        (l3, l4, end) in (0usize..80, 0usize..120, 0usize..140),
        ttl in 0u8..4,
        na in any::<u32>(),
        which in 0u8..4,
    ) {
        let f = frame(false, kind, 64, 0, 0x0a00_0001, 0x0a00_0002, (1000, 80));
        let Parsed::Ip(mut p) = wire::parse(&f) else {
            return Err(TestCaseError::fail("builder frame did not parse"));
        };
        let f = f[..len.min(f.len())].to_vec();
        p.l3 = l3;
        p.l4 = l4;
        p.ip_end = end;
        p.ttl = ttl;
        let e = Some((IpAddr::V4(Ipv4Addr::from(na)), 4242));
        let src = if which & 1 != 0 { e } else { None };
        let dst = if which & 2 != 0 { e } else { None };
        check_same(f, p, src, dst)?;
    }
}

/// A captured-style NAT-in: the fast path's bytes, spelled out.
#[test]
fn nat_in_bytes() {
    let mut f = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 100, 5], [198, 18, 0, 100])
        .ttl(64)
        .tcp(40000, 80)
        .ack()
        .build();
    let Parsed::Ip(mut p) = wire::parse(&f) else {
        panic!("parse")
    };
    let backend = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 11));
    rewrite::forward(&mut f, &mut p, None, Some((backend, 8080))).unwrap();
    verify_checksums(&f).unwrap();
    assert_eq!(f[14 + 8], 63);
    assert_eq!(&f[14 + 16..14 + 20], &[198, 19, 0, 11]);
    assert_eq!(&f[34 + 2..34 + 4], &8080u16.to_be_bytes());
    assert_eq!((p.dst, p.dport, p.ttl), (backend, 8080, 63));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `rewrite::encap_ipip_v4` against `encap` then the inner `dec_ttl` (what the pipeline's
    /// full path does for TUN): the same bytes and frame bounds when it applies, the frame
    /// untouched when it declines, and it declines only where those calls fail or do not
    /// apply — for random IPv4 packets (TTL 0–3, TOS, DF, padding, headroom, MTU).
    #[test]
    fn encap_ipip_v4_matches_encap(
        kind in 0u8..3,
        ttl in 0u8..4,
        tos in any::<u8>(),
        df in any::<bool>(),
        pad in 0usize..8,
        room in 0usize..40,
        mtu in 40u16..200,
        id in any::<u16>(),
        payload in 0usize..120,
        s in any::<u32>(),
        d in any::<u32>(),
    ) {
        let pkt = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(Ipv4Addr::from(s), Ipv4Addr::from(d))
            .ttl(ttl)
            .tos(tos)
            .df(df);
        let pkt = match kind {
            0 => pkt.tcp(1000, 80).ack(),
            1 => pkt.udp(1000, 53),
            _ => pkt.proto(47),
        };
        let mut bytes = pkt.payload(&vec![7; payload]).build();
        bytes.extend(std::iter::repeat_n(0xee, pad));
        let (src, dst) = (0xc612_0001u32, 0xc613_000bu32);
        let (lsrc, ldst) = ([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 11]);
        let mut a = vec![0u8; room + bytes.len() + 8];
        a[room..room + bytes.len()].copy_from_slice(&bytes);
        let mut b = a.clone();
        let mut fa = xvs_forwarding::Frame::new(&mut a, room, bytes.len());
        let mut fb = xvs_forwarding::Frame::new(&mut b, room, bytes.len());
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&ldst);
        macs[6..].copy_from_slice(&lsrc);
        let fast = rewrite::encap_ipip_v4(&mut fa, src, dst, id, mtu, &macs);
        if let Some(n) = fast {
            prop_assert_eq!(Some(n), bytes.get(16..18).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))));
        }
        let fast = fast.is_some();
        let Parsed::Ip(p) = wire::parse(fb.data()) else {
            prop_assert!(!fast);
            return Ok(());
        };
        let tun = wire::Tunnel {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            id,
            mtu,
        };
        let link = wire::Link { src: lsrc, dst: ldst, vlan: None };
        let full = p.ttl > 1 && {
            let mut outer = p;
            outer.ttl -= 1;
            rewrite::encap(&mut fb, &outer, &tun, &link).is_ok() && {
                let mut inner = rewrite::inner_after_encap(&p, &tun, &link);
                rewrite::dec_ttl(fb.data_mut(), &mut inner).is_ok()
            }
        };
        prop_assert_eq!(fast, full);
        if fast {
            prop_assert_eq!((fa.head(), fa.data()), (fb.head(), fb.data()));
            verify_checksums(fa.data()).map_err(TestCaseError::fail)?;
        } else {
            prop_assert_eq!((fa.head(), fa.data()), (room, bytes.as_slice()));
        }
    }
}
