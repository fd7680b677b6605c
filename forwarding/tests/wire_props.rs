//! Property tests of the wire layer (proptest):
//! * parse(build(spec)) gives back the spec's fields (family, VLANs, addresses, protocol,
//!   ports, TTL, TOS, DF, fragment status, TCP flags, ICMP type), for IPv4 with options and
//!   IPv6 with extension headers;
//! * every rewrite of a valid random packet keeps every checksum valid, checked by
//!   `testkit::verify_checksums`, which recomputes them from scratch; and the `Packet` kept up
//!   to date by the rewrites equals a fresh parse of the result;
//! * parse and every rewrite never panic on arbitrary or mutated bytes;
//! * RFC 1624 incremental update == RFC 1071 full recomputation.
#![cfg(feature = "testkit")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xvs_forwarding::testkit::{verify_checksums, Ext, Pkt};
use xvs_forwarding::wire::{
    self, checksum, icmp, rewrite, Frag, IcmpAnswer, IcmpNat, Link, Packet, Parsed, Tunnel,
    WireError,
};
use xvs_forwarding::Frame;

#[derive(Clone, Debug)]
enum L4Spec {
    Tcp {
        flags: u8,
    },
    Sctp,
    Udp {
        zero: bool,
    },
    Echo,
    /// An ICMP error quoting `quote` bytes of a TCP/UDP packet between the same hosts.
    Error {
        udp: bool,
        quote: usize,
    },
    Raw(u8),
}

#[derive(Clone, Debug)]
struct Spec {
    v6: bool,
    vlans: Vec<u16>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    tos: u8,
    df: bool,
    options: usize,
    exts: Vec<Ext>,
    /// None, First (offset 0, more), Later (offset 1480 or so).
    frag: Frag,
    l4: L4Spec,
    sport: u16,
    dport: u16,
    payload: usize,
}

fn addr(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        (any::<bool>(), prop::collection::vec(0u16..4096, 0..=2)),
        any::<u128>(),
        any::<u128>(),
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        0usize..=10,
        prop::collection::vec(
            prop_oneof![
                Just(Ext::HopByHop),
                Just(Ext::Routing),
                Just(Ext::DestOpts),
                Just(Ext::Ah)
            ],
            0..=3,
        ),
        prop_oneof![6 => Just(Frag::None), 1 => Just(Frag::First), 1 => Just(Frag::Later)],
        prop_oneof![
            any::<u8>().prop_map(|flags| L4Spec::Tcp { flags }),
            Just(L4Spec::Sctp),
            any::<bool>().prop_map(|zero| L4Spec::Udp { zero }),
            Just(L4Spec::Echo),
            (any::<bool>(), 28usize..=80).prop_map(|(udp, quote)| L4Spec::Error { udp, quote }),
            prop_oneof![Just(47u8), Just(50), Just(132u8)].prop_map(L4Spec::Raw),
        ],
        (any::<u16>(), any::<u16>()),
        0usize..300,
    )
        .prop_map(
            |(
                (v6, vlans),
                s,
                d,
                ttl,
                tos,
                df,
                options,
                exts,
                frag,
                l4,
                (sport, dport),
                payload,
            )| {
                Spec {
                    v6,
                    vlans,
                    src: addr(v6, s),
                    dst: addr(v6, d),
                    ttl,
                    tos,
                    df,
                    options,
                    exts: if v6 { exts } else { Vec::new() },
                    frag,
                    // A UDP checksum of 0 is only legal over IPv4.
                    l4: match l4 {
                        L4Spec::Udp { .. } if v6 => L4Spec::Udp { zero: false },
                        L4Spec::Raw(132) => L4Spec::Sctp,
                        x => x,
                    },
                    sport,
                    dport,
                    payload,
                }
            },
        )
}

const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn build(s: &Spec) -> Vec<u8> {
    let mut b = Pkt::eth(MAC1, MAC2);
    for v in &s.vlans {
        b = b.vlan(*v);
    }
    b = b.ip_layer(s.src, s.dst).ttl(s.ttl).tos(s.tos);
    if !s.v6 {
        b = b.df(s.df).ipv4_options(&vec![1u8; s.options * 4]); // NOP options
    }
    for e in &s.exts {
        b = b.ext(*e);
    }
    match s.frag {
        Frag::None => {}
        Frag::First => b = b.frag(0, true),
        Frag::Later => b = b.frag(1480, s.df),
    }
    let payload = vec![0x5a; s.payload];
    if s.frag == Frag::Later {
        let p = match s.l4 {
            L4Spec::Tcp { .. } => 6,
            L4Spec::Sctp => 132,
            L4Spec::Udp { .. } => 17,
            L4Spec::Echo | L4Spec::Error { .. } => {
                if s.v6 {
                    58
                } else {
                    1
                }
            }
            L4Spec::Raw(p) => p,
        };
        return b.proto(p).payload(&payload).build();
    }
    b = match s.l4 {
        L4Spec::Tcp { flags } => b.tcp(s.sport, s.dport).flags(flags),
        L4Spec::Sctp => b.sctp(s.sport, s.dport),
        L4Spec::Udp { zero } => {
            let b = b.udp(s.sport, s.dport);
            if zero {
                b.udp_zero_checksum()
            } else {
                b
            }
        }
        L4Spec::Echo => b.icmp_echo(s.sport, s.dport),
        L4Spec::Error { udp, quote } => {
            let inner = Pkt::ip().ip_layer(s.dst, s.src);
            let inner = if udp {
                inner.udp(s.dport, s.sport)
            } else {
                inner.tcp(s.dport, s.sport).ack()
            };
            let inner = inner.payload(&payload).build();
            let quote = quote.max(if s.v6 { 48 } else { 28 }).min(inner.len());
            let (ty, code) = if s.v6 { (1, 4) } else { (3, 3) };
            return b.icmp_error(ty, code, 0, &inner[..quote]).build();
        }
        L4Spec::Raw(p) => b.proto(p),
    };
    b.payload(&payload).build()
}

fn parsed(data: &[u8]) -> Packet {
    match wire::parse(data) {
        Parsed::Ip(p) => p,
        other => panic!("expected IP, got {other:?}"),
    }
}

fn csum_eq(a: u16, b: u16) -> bool {
    // 0x0000 and 0xFFFF are the two one's-complement zeros.
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_gives_back_the_spec(s in arb_spec()) {
        let f = build(&s);
        let p = parsed(&f);
        prop_assert_eq!(p.l3, 14 + 4 * s.vlans.len());
        prop_assert_eq!(p.vlan, s.vlans.first().copied());
        prop_assert_eq!(p.vlan_inner, s.vlans.get(1).copied());
        prop_assert_eq!((p.src, p.dst), (s.src, s.dst));
        prop_assert_eq!((p.ttl, p.tos, p.ip_end), (s.ttl, s.tos, f.len()));
        prop_assert_eq!(p.df, !s.v6 && s.df);
        prop_assert_eq!(p.frag, s.frag);
        let ports = s.frag != Frag::Later
            && matches!(s.l4, L4Spec::Tcp { .. } | L4Spec::Udp { .. } | L4Spec::Sctp);
        if ports {
            prop_assert_eq!((p.sport, p.dport), (s.sport, s.dport));
        } else {
            prop_assert_eq!((p.sport, p.dport), (0, 0));
        }
        match s.l4 {
            L4Spec::Tcp { flags } if s.frag != Frag::Later => {
                prop_assert_eq!((p.proto, p.tcp_flags), (6, flags))
            }
            L4Spec::Echo if s.frag != Frag::Later => {
                prop_assert_eq!(p.icmp_type, if s.v6 { 128 } else { 8 });
                prop_assert!(!p.icmp_error);
            }
            L4Spec::Error { udp, .. } if s.frag != Frag::Later => {
                prop_assert!(p.icmp_error);
                let e = icmp::parse_embedded(&f, &p).unwrap();
                prop_assert_eq!((e.src, e.dst), (s.dst, s.src));
                prop_assert_eq!((e.proto, e.sport, e.dport), (if udp { 17 } else { 6 }, s.dport, s.sport));
            }
            _ => {}
        }
    }

    #[test]
    fn rewrites_keep_checksums_valid(
        s in arb_spec(),
        new_src in any::<u128>(),
        new_dst in any::<u128>(),
        ports in any::<(u16, u16)>(),
        which in 0u8..3,
        vlan in prop::option::of(0u16..4096),
    ) {
        let input = build(&s);
        verify_checksums(&input).unwrap();
        let mut buf = vec![0u8; 64 + input.len() + 64];
        buf[64..64 + input.len()].copy_from_slice(&input);
        let mut f = Frame::new(&mut buf, 64, input.len());
        let mut p = parsed(f.data());
        let src = (addr(s.v6, new_src), ports.0);
        let dst = (addr(s.v6, new_dst), ports.1);
        if p.ttl > 1 {
            rewrite::dec_ttl(f.data_mut(), &mut p).unwrap();
        }
        if !p.icmp_error {
            let r = match which {
                0 => rewrite::set_src(f.data_mut(), &mut p, src.0, src.1),
                1 => rewrite::set_dst(f.data_mut(), &mut p, dst.0, dst.1),
                _ => rewrite::set_src_dst(f.data_mut(), &mut p, src, dst),
            };
            // An SCTP port change needs the whole packet for the CRC32c.
            if matches!(s.l4, L4Spec::Sctp) && s.frag == Frag::First {
                prop_assert!(r.is_ok() || r == Err(WireError::Fragment), "{:?}", r);
            } else {
                prop_assert_eq!(r, Ok(()));
            }
        } else {
            let mut e = icmp::parse_embedded(f.data(), &p).unwrap();
            let nat = if which == 0 {
                IcmpNat { outer_dst: Some(dst.0), inner_src: Some(dst), ..IcmpNat::default() }
            } else {
                IcmpNat { outer_src: Some(src.0), inner_dst: Some(src), ..IcmpNat::default() }
            };
            icmp::translate_error(f.data_mut(), &mut p, &mut e, &nat).unwrap();
        }
        rewrite::set_link(&mut f, &mut p, &Link { src: MAC2, dst: MAC1, vlan }).unwrap();
        let out = f.data().to_vec();
        if let Err(e) = verify_checksums(&out) {
            return Err(TestCaseError::fail(format!("after NAT: {e}")));
        }
        prop_assert_eq!(p, parsed(&out));
        if s.frag == Frag::None && !p.icmp_error {
            prop_assert_eq!((p.src, p.dst), (if which != 1 { src.0 } else { s.src }, if which != 0 { dst.0 } else { s.dst }));
        }
        // TUN to a backend of either family.
        let tun = Tunnel { src: addr(which == 0, new_src), dst: addr(which == 0, new_dst), id: 7, mtu: 9000 };
        let mut tb = vec![0u8; 64 + out.len()];
        tb[64..].copy_from_slice(&out);
        let mut tf = Frame::new(&mut tb, 64, out.len());
        rewrite::encap(&mut tf, &p, &tun, &Link { src: MAC2, dst: MAC1, vlan: None }).unwrap();
        if let Err(e) = verify_checksums(tf.data()) {
            return Err(TestCaseError::fail(format!("after TUN: {e}")));
        }
        // An ICMP answer about the original packet.
        let mut ab = input.clone();
        ab.resize(input.len() + 64, 0);
        let mut af = Frame::new(&mut ab, 0, input.len());
        let ap = parsed(af.data());
        match icmp::answer(&mut af, &ap, IcmpAnswer::TooBig { mtu: 1400 }) {
            Ok(()) => {
                if let Err(e) = verify_checksums(af.data()) {
                    return Err(TestCaseError::fail(format!("ICMP answer: {e}")));
                }
                let q = parsed(af.data());
                prop_assert_eq!((q.src, q.dst, q.ttl, q.icmp_error), (s.dst, s.src, 64, true));
            }
            Err(e) => prop_assert!(ap.icmp_error || ap.frag == Frag::Later, "{:?}", e),
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        s in arb_spec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        a in any::<u128>(),
        port in any::<u16>(),
    ) {
        let mut f = build(&s);
        for (i, v) in flips {
            let i = i.index(f.len());
            f[i] ^= v;
        }
        let n = cut.index(f.len() + 1);
        f.truncate(n.max(f.len() / 2));
        exercise(&f, a, port);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 0..200),
        et in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), Just(0x88a8), any::<u16>()],
        a in any::<u128>(),
        port in any::<u16>(),
    ) {
        if bytes.len() >= 14 {
            bytes[12..14].copy_from_slice(&et.to_be_bytes());
        }
        if bytes.len() > 14 && et == 0x0800 {
            bytes[14] = 0x45;
        }
        exercise(&bytes, a, port);
    }

    #[test]
    fn incremental_equals_full(
        mut data in prop::collection::vec(any::<u8>(), 2..80),
        at in any::<prop::sample::Index>(),
        new in any::<[u8; 16]>(),
        width in prop_oneof![Just(2usize), Just(4), Just(16)],
    ) {
        if data.len() % 2 == 1 { data.push(0); }
        if data.len() < width { data.resize(width, 0); }
        let off = at.index(data.len() - width + 1) & !1;
        let before = checksum::checksum(&data);
        let mut after = data.clone();
        after[off..off + width].copy_from_slice(&new[..width]);
        let full = checksum::checksum(&after);
        let inc = match width {
            2 => checksum::update16(
                before,
                u16::from_be_bytes([data[off], data[off + 1]]),
                u16::from_be_bytes([new[0], new[1]]),
            ),
            4 => checksum::update32(
                before,
                data[off..off + 4].try_into().unwrap(),
                new[..4].try_into().unwrap(),
            ),
            _ => checksum::update128(
                before,
                data[off..off + 16].try_into().unwrap(),
                new,
            ),
        };
        prop_assert!(csum_eq(inc, full), "incremental {:#06x} full {:#06x}", inc, full);
    }
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    (any::<bool>(), any::<u128>()).prop_map(|(v6, n)| addr(v6, n))
}

/// An offset: mostly inside a small frame, sometimes absurd (overflow bait).
fn arb_off() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..130, 1 => (usize::MAX - 200)..=usize::MAX]
}

fn arb_frag() -> impl Strategy<Value = Frag> {
    prop_oneof![Just(Frag::None), Just(Frag::First), Just(Frag::Later)]
}

prop_compose! {
    /// A `Packet` with arbitrary (possibly inconsistent) offsets and fields, as a buggy caller
    /// could pass.
    fn arb_forged_packet()(
        (l3, l4, ip_end) in (arb_off(), arb_off(), arb_off()),
        (src, dst) in (arb_addr(), arb_addr()),
        proto in prop_oneof![Just(1u8), Just(6), Just(17), Just(58), Just(132), any::<u8>()],
        (ttl, tos, df, frag) in (any::<u8>(), any::<u8>(), any::<bool>(), arb_frag()),
        (sport, dport, icmp_error) in (any::<u16>(), any::<u16>(), any::<bool>()),
    ) -> Packet {
        Packet {
            l3, vlan: None, vlan_inner: None, src, dst, proto, l4, ip_end, ttl, tos, df, frag,
            sport, dport, tcp_flags: 0, icmp_type: 3, icmp_code: 4, icmp_error,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The rewrites take the caller's `Packet` on trust only as far as bounds allow: forged
    /// offsets and families give errors, never panics.
    #[test]
    fn forged_packets_never_panic(
        p in arb_forged_packet(),
        data in prop::collection::vec(any::<u8>(), 0..130),
        (a, b) in (arb_addr(), arb_addr()),
        (port, mtu) in (any::<u16>(), any::<u16>()),
        (e_l3, e_l4, e_end, e_ports) in (arb_off(), arb_off(), arb_off(), any::<bool>()),
    ) {
        let run = |f: &dyn Fn(&mut Frame, &mut Packet)| {
            let mut buf = vec![0u8; 40 + data.len() + 40];
            buf[40..40 + data.len()].copy_from_slice(&data);
            let mut fr = Frame::new(&mut buf, 40, data.len());
            let mut q = p;
            f(&mut fr, &mut q);
        };
        run(&|f, q| { let _ = rewrite::set_src(f.data_mut(), q, a, port); });
        run(&|f, q| { let _ = rewrite::set_dst(f.data_mut(), q, a, port); });
        run(&|f, q| { let _ = rewrite::set_src_dst(f.data_mut(), q, (a, port), (b, port)); });
        run(&|f, q| { let _ = rewrite::dec_ttl(f.data_mut(), q); });
        run(&|f, q| { let _ = rewrite::set_link(f, q, &Link { src: MAC1, dst: MAC2, vlan: Some(port) }); });
        run(&|f, q| { let _ = rewrite::set_link(f, q, &Link { src: MAC1, dst: MAC2, vlan: None }); });
        run(&|f, q| {
            let tun = Tunnel { src: a, dst: b, id: port, mtu };
            let _ = rewrite::encap(f, q, &tun, &Link { src: MAC1, dst: MAC2, vlan: None });
            let _ = rewrite::inner_after_encap(q, &tun, &Link { src: MAC1, dst: MAC2, vlan: None });
        });
        run(&|_, q| { let _ = rewrite::check_mtu(q, mtu); });
        run(&|f, q| { let _ = icmp::answer(f, q, IcmpAnswer::TooBig { mtu }); });
        run(&|f, q| { let _ = icmp::answer(f, q, IcmpAnswer::PortUnreachable); });
        run(&|f, q| { let _ = icmp::parse_embedded(f.data(), q); });
        run(&|f, q| {
            let mut e = icmp::Embedded {
                l3: e_l3, src: a, dst: b, proto: 6, l4: e_l4, end: e_end, frag: Frag::None,
                sport: 1, dport: 2, has_ports: e_ports,
            };
            let nat = IcmpNat {
                outer_src: Some(a), outer_dst: Some(b),
                inner_src: Some((a, port)), inner_dst: Some((b, port)),
            };
            let _ = icmp::translate_error(f.data_mut(), q, &mut e, &nat);
        });
    }
}

/// Parse `bytes` and, if it is IP, run every rewrite on copies; nothing may panic.
fn exercise(bytes: &[u8], a: u128, port: u16) {
    let Parsed::Ip(p) = wire::parse(bytes) else {
        return;
    };
    let v6 = !p.is_v4();
    let other = addr(v6, a);
    let run = |f: &dyn Fn(&mut Frame, &mut Packet)| {
        let mut buf = vec![0u8; 64 + bytes.len() + 64];
        buf[64..64 + bytes.len()].copy_from_slice(bytes);
        let mut fr = Frame::new(&mut buf, 64, bytes.len());
        let mut q = p;
        f(&mut fr, &mut q);
    };
    run(&|f, q| {
        let _ = rewrite::set_src(f.data_mut(), q, other, port);
    });
    run(&|f, q| {
        let _ = rewrite::set_dst(f.data_mut(), q, other, port);
        let _ = rewrite::set_src_dst(f.data_mut(), q, (other, port), (other, port));
    });
    run(&|f, q| {
        let _ = rewrite::set_dst(f.data_mut(), q, addr(!v6, a), port);
    });
    run(&|f, q| {
        let _ = rewrite::dec_ttl(f.data_mut(), q);
        let _ = rewrite::set_link(
            f,
            q,
            &Link {
                src: MAC1,
                dst: MAC2,
                vlan: Some(5),
            },
        );
    });
    run(&|f, q| {
        let tun = Tunnel {
            src: other,
            dst: other,
            id: 1,
            mtu: 1500,
        };
        let _ = rewrite::encap(
            f,
            q,
            &tun,
            &Link {
                src: MAC1,
                dst: MAC2,
                vlan: None,
            },
        );
    });
    run(&|f, q| {
        let _ = icmp::answer(f, q, IcmpAnswer::TooBig { mtu: 576 });
    });
    run(&|f, q| {
        if let Ok(mut e) = icmp::parse_embedded(f.data(), q) {
            let nat = IcmpNat {
                outer_src: Some(other),
                outer_dst: Some(other),
                inner_src: Some((other, port)),
                inner_dst: Some((other, port)),
            };
            let _ = icmp::translate_error(f.data_mut(), q, &mut e, &nat);
        }
    });
}
