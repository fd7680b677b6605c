//! Input hygiene and the director's own ICMP, fixture style (topology of `common`):
//! time exceeded from the VIP (IPv4 and IPv6, exact bytes), its rate limit, trailers trimmed
//! in every method, VLAN accept / drop / egress tag, L2 address checks, martian sources,
//! IPv4 options, IPv6 extension chains, ICMP error validation, and the counter invariant
//! rx = tx + pass + Σ drops over random frame sequences (property test).

use std::net::IpAddr;

mod common;

use common::*;
use proptest::prelude::*;
use xvs_forwarding::net::PortVlans;
use xvs_forwarding::testkit::hostile;
use xvs_forwarding::testkit::{verify_checksums, Ext, Pkt};
use xvs_forwarding::wire::{parse, Parsed};
use xvs_forwarding::{DropReason, Pipeline, PortId, Time, Verdict};

fn pipe() -> Pipeline {
    pipeline_with(&services(), 1024)
}

fn t(ms: u64) -> Time {
    Time::from_millis(1_000_000 + ms)
}

fn ip_part(frame: &[u8], max: usize) -> Vec<u8> {
    frame[14..].iter().take(max).copied().collect()
}

#[test]
fn time_exceeded_from_the_vip_both_families() {
    for v6 in [false, true] {
        let mut p = pipe();
        let (vip, client) = if v6 {
            (IpAddr::V6(vip6()), IpAddr::V6(client6()))
        } else {
            (IpAddr::V4(VIP4), IpAddr::V4(CLIENT4))
        };
        let input = frame_in(client, vip)
            .ttl(1)
            .tcp(45000, 80)
            .syn()
            .payload(&[7; 600])
            .build();
        let (v, out) = process(&mut p, t(0), FRONT, &input);
        assert_eq!(v, Verdict::Tx(FRONT));
        // IPv4 quotes up to 576 bytes in all, IPv6 up to 1280 (here the whole packet).
        let (ty, quoted) = if v6 { (3, 1280 - 48) } else { (11, 576 - 28) };
        let expected = ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client)
            .ttl(64)
            .id(0)
            .tos(if v6 { 0 } else { 0xc0 })
            .icmp_error(ty, 0, 0, &ip_part(&input, quoted))
            .build();
        assert_eq!(hex(&out), hex(&expected), "v6 {v6}");
        verify_checksums(&out).unwrap();
        let c = p.counters();
        assert_eq!(
            (c.rx, c.tx, c.icmp_answers),
            (1, 0, 1),
            "the answer is not a tx"
        );
        assert_eq!(c.drops.get(DropReason::TtlExceeded), 1);
        assert_eq!(p.last_answer(), Some(DropReason::TtlExceeded));
    }
}

#[test]
fn time_exceeded_is_rate_limited_per_destination() {
    let mut p = pipe();
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    let mut answers = 0;
    for i in 0..8u16 {
        let input = frame_in(client, vip)
            .ttl(1)
            .tcp(46000 + i, 80)
            .syn()
            .build();
        match process(&mut p, t(0), FRONT, &input).0 {
            Verdict::Tx(_) => answers += 1,
            Verdict::Drop(DropReason::TtlExceeded) => {}
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(answers, 6, "burst of XRLIM_BURST_FACTOR");
    assert_eq!(p.counters().icmp_rate_limited, 2);
    // Another source is not limited; the first gets one more a second later.
    let other = frame_in("198.18.100.6".parse().unwrap(), vip)
        .ttl(1)
        .tcp(1, 80)
        .syn()
        .build();
    assert_eq!(process(&mut p, t(1), FRONT, &other).0, Verdict::Tx(FRONT));
    let again = frame_in(client, vip).ttl(1).tcp(2, 80).syn().build();
    assert!(matches!(
        process(&mut p, t(999), FRONT, &again).0,
        Verdict::Drop(_)
    ));
    assert_eq!(
        process(&mut p, t(1000), FRONT, &again).0,
        Verdict::Tx(FRONT)
    );
    let c = p.counters();
    assert_eq!(c.rx, c.tx + c.pass + c.drops.total());
}

/// A SYN / UDP datagram followed by 40 bytes that are themselves a valid IPv4 SYN leaves
/// exactly as the same frame without the trailer does, in every method and both families.
#[test]
fn trailers_are_trimmed_in_every_method() {
    let trailer = Pkt::ip()
        .ipv4(v4(198, 18, 66, 6), VIP4)
        .tcp(6666, 80)
        .syn()
        .build();
    assert_eq!(trailer.len(), 40);
    for v6 in [false, true] {
        let (vip, client) = if v6 {
            (IpAddr::V6(vip6()), IpAddr::V6(client6()))
        } else {
            (IpAddr::V4(VIP4), IpAddr::V4(CLIENT4))
        };
        for (i, port) in [80u16, 81, 82, 83, 53, 54, 55, 56].into_iter().enumerate() {
            let build = |sport: u16| {
                let f = frame_in(client, vip);
                if port < 80 {
                    f.udp(sport, port).payload(b"query").build()
                } else {
                    f.tcp(sport, port).syn().build()
                }
            };
            let plain = build(47000 + i as u16);
            let mut padded = plain.clone();
            padded.extend_from_slice(&trailer);
            let (v1, out1) = process(&mut pipe(), t(0), FRONT, &plain);
            let (v2, out2) = process(&mut pipe(), t(0), FRONT, &padded);
            assert_eq!(v1, Verdict::Tx(BACK), "port {port} v6 {v6}");
            assert_eq!(v2, v1, "port {port} v6 {v6}");
            assert_eq!(hex(&out2), hex(&out1), "port {port} v6 {v6}");
            verify_checksums(&out2).unwrap();
        }
    }
}

#[test]
fn vlans_accept_drop_and_tag_egress() {
    let mut p = pipe();
    p.network_mut().set_vlans(
        FRONT,
        PortVlans {
            ingress: vec![100],
            egress: None,
        },
    );
    p.network_mut().set_vlans(
        BACK,
        PortVlans {
            ingress: vec![200],
            egress: Some(200),
        },
    );
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    let syn = |pkt: Pkt, sport: u16| pkt.tcp(sport, 80).syn().build();
    let tagged = |id: u16| ip(Pkt::eth(GW_MAC, FRONT_MAC).vlan(id), client, vip).ttl(64);
    let (v, out) = process(&mut p, t(0), FRONT, &syn(tagged(100), 1));
    assert_eq!(v, Verdict::Tx(BACK));
    verify_checksums(&out).unwrap();
    let expected = ip(
        Pkt::eth(BACK_MAC, backend_mac(11)).vlan(200),
        client,
        IpAddr::V4(backend4(11)),
    )
    .ttl(63)
    .tcp(1, 8080)
    .syn()
    .build();
    assert_eq!(hex(&out), hex(&expected));
    for (id, reason) in [
        (300, DropReason::VlanUnconfigured),
        (4095, DropReason::VlanReserved),
    ] {
        let (v, _) = process(&mut p, t(0), FRONT, &syn(tagged(id), 2));
        assert_eq!(v, Verdict::Drop(reason));
    }
    // VLAN 200 is the back port's, not the front's.
    let (v, _) = process(&mut p, t(0), FRONT, &syn(tagged(200), 3));
    assert_eq!(v, Verdict::Drop(DropReason::VlanUnconfigured));
    let qinq = ip(Pkt::eth(GW_MAC, FRONT_MAC).vlan(100).vlan(100), client, vip).ttl(64);
    let (v, _) = process(&mut p, t(0), FRONT, &syn(qinq, 4));
    assert_eq!(v, Verdict::Drop(DropReason::VlanStacked));
    // Priority tag: untagged.
    let (v, _) = process(&mut p, t(0), FRONT, &syn(tagged(0), 5));
    assert_eq!(v, Verdict::Tx(BACK));
}

#[test]
fn l2_address_checks() {
    let mut p = pipe();
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    let syn = |dst: [u8; 6], to: IpAddr| {
        ip(Pkt::eth(GW_MAC, dst), client, to)
            .ttl(64)
            .tcp(1000, 80)
            .syn()
            .build()
    };
    let cases = [
        (
            FRONT,
            syn([2, 0, 0, 0, 0, 0x77], vip),
            Verdict::Drop(DropReason::OtherHost),
        ),
        // The back port's MAC arriving on the front port: another host's, from there.
        (
            FRONT,
            syn(BACK_MAC, vip),
            Verdict::Drop(DropReason::OtherHost),
        ),
        (
            FRONT,
            syn([0xff; 6], vip),
            Verdict::Drop(DropReason::L2Multicast),
        ),
        (
            FRONT,
            syn([1, 0, 0x5e, 0, 0, 1], "224.0.0.1".parse().unwrap()),
            Verdict::Pass,
        ),
        (FRONT, syn(FRONT_MAC, vip), Verdict::Tx(BACK)),
    ];
    for (i, (port, frame, verdict)) in cases.into_iter().enumerate() {
        assert_eq!(process(&mut p, t(0), port, &frame).0, verdict, "case {i}");
    }
}

#[test]
fn martian_and_spoofed_sources_open_nothing() {
    let mut p = pipe();
    let cases: &[(&str, &str, DropReason)] = &[
        ("0.1.2.3", "198.18.0.100", DropReason::MartianSource),
        ("127.0.0.1", "198.18.0.100", DropReason::MartianSource),
        ("239.1.1.1", "198.18.0.100", DropReason::MartianSource),
        ("255.255.255.255", "198.18.0.100", DropReason::MartianSource),
        ("198.18.0.100", "198.18.0.100", DropReason::Land),
        ("::", "2001:2::100", DropReason::MartianSource),
        ("::1", "2001:2::100", DropReason::MartianSource),
        ("ff05::2", "2001:2::100", DropReason::MartianSource),
        (
            "::ffff:198.18.100.5",
            "2001:2::100",
            DropReason::MartianSource,
        ),
        ("2001:2::100", "2001:2::100", DropReason::Land),
    ];
    for (src, dst, reason) in cases {
        let f = frame_in(src.parse().unwrap(), dst.parse().unwrap())
            .tcp(1, 80)
            .syn()
            .build();
        assert_eq!(
            process(&mut p, t(0), FRONT, &f).0,
            Verdict::Drop(*reason),
            "{src}"
        );
    }
    assert_eq!(p.connections().len(), 0);
}

#[test]
fn ipv4_options_and_ipv6_extension_chains() {
    let mut p = pipe();
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    let with_opts = |o: &[u8], sport: u16| {
        frame_in(client, vip)
            .ipv4_options(o)
            .tcp(sport, 80)
            .syn()
            .build()
    };
    let v4cases: &[(&[u8], Verdict)] = &[
        (
            &[131, 7, 4, 1, 2, 3, 4],
            Verdict::Drop(DropReason::SourceRoute),
        ),
        (
            &[137, 7, 8, 1, 2, 3, 4],
            Verdict::Drop(DropReason::SourceRoute),
        ),
        (&[7, 0, 0, 0], Verdict::Drop(DropReason::BadIpOptions)),
        (&[7, 1, 0, 0], Verdict::Drop(DropReason::BadIpOptions)),
        (
            &[7, 9, 4, 0, 0, 0, 0, 0],
            Verdict::Drop(DropReason::BadIpOptions),
        ),
        (
            &[7, 7, 2, 0, 0, 0, 0],
            Verdict::Drop(DropReason::BadIpOptions),
        ),
        (
            &[7, 7, 5, 0, 0, 0, 0],
            Verdict::Drop(DropReason::BadIpOptions),
        ),
        (
            &[68, 12, 9, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
            Verdict::Drop(DropReason::BadIpOptions),
        ),
        (&[7, 3, 4, 7, 3, 4], Verdict::Drop(DropReason::BadIpOptions)),
        (&[148, 3, 0, 0], Verdict::Drop(DropReason::BadIpOptions)),
        (&[148, 4, 0, 0], Verdict::Tx(BACK)),
        (&[68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], Verdict::Tx(BACK)),
        (&[0, 131, 0, 0], Verdict::Tx(BACK)),
    ];
    for (i, (o, verdict)) in v4cases.iter().enumerate() {
        let (v, out) = process(&mut p, t(0), FRONT, &with_opts(o, 100 + i as u16));
        assert_eq!(v, *verdict, "options {o:?}");
        if let Verdict::Tx(_) = v {
            verify_checksums(&out).unwrap();
        }
    }
    let vip6 = IpAddr::V6(vip6());
    let client6 = IpAddr::V6(client6());
    let raw = |kind: u8, body: [u8; 6]| Ext::Raw8 { kind, body };
    let v6cases: Vec<(Vec<Ext>, Verdict)> = vec![
        (vec![Ext::HopByHop, Ext::DestOpts], Verdict::Tx(BACK)),
        (
            vec![Ext::DestOpts, Ext::HopByHop],
            Verdict::Drop(DropReason::BadExtChain),
        ),
        (
            vec![Ext::HopByHop, Ext::HopByHop],
            Verdict::Drop(DropReason::BadExtChain),
        ),
        (
            vec![raw(43, [0, 2, 0, 0, 0, 0])],
            Verdict::Drop(DropReason::RoutingHeader),
        ),
        (vec![Ext::Routing], Verdict::Tx(BACK)),
        (
            vec![raw(60, [0x7f, 4, 0, 0, 0, 0])],
            Verdict::Drop(DropReason::BadExtOption),
        ),
        (
            vec![raw(60, [0xbf, 4, 0, 0, 0, 0])],
            Verdict::Drop(DropReason::BadExtOption),
        ),
        (
            vec![raw(0, [0xff, 4, 0, 0, 0, 0])],
            Verdict::Drop(DropReason::BadExtOption),
        ),
        (vec![raw(60, [0x3f, 4, 0, 0, 0, 0])], Verdict::Tx(BACK)),
        (vec![raw(0, [5, 2, 0, 0, 1, 0])], Verdict::Tx(BACK)),
        (
            vec![raw(0, [0xc2, 4, 0, 1, 0, 0])],
            Verdict::Drop(DropReason::BadJumbo),
        ),
        (vec![raw(60, [0, 0, 0, 0, 0, 0])], Verdict::Tx(BACK)),
        (
            vec![raw(60, [1, 5, 0, 0, 0, 0])],
            Verdict::Drop(DropReason::BadExtOption),
        ),
    ];
    for (i, (exts, verdict)) in v6cases.into_iter().enumerate() {
        let mut b = frame_in(client6, vip6);
        for e in &exts {
            b = b.ext(*e);
        }
        let f = b.tcp(200 + i as u16, 80).syn().build();
        let (v, out) = process(&mut p, t(0), FRONT, &f);
        assert_eq!(v, verdict, "exts {exts:?}");
        if let Verdict::Tx(_) = v {
            verify_checksums(&out).unwrap();
        }
    }
    // Fragment data not a multiple of 8 with M = 1; and a multiple of 8 (forwarded as before).
    let frag = |payload: &[u8]| {
        frame_in(client6, vip6)
            .frag(0, true)
            .udp(300, 53)
            .payload(payload)
            .build()
    };
    assert_eq!(
        process(&mut p, t(0), FRONT, &frag(b"12345")).0,
        Verdict::Drop(DropReason::BadFragmentLength)
    );
    assert_eq!(
        process(&mut p, t(0), FRONT, &frag(b"12345678")).0,
        Verdict::Tx(BACK)
    );
    // IPv6 UDP with checksum 0 to a service.
    let z = frame_in(client6, vip6)
        .udp(301, 53)
        .udp_zero_checksum()
        .payload(b"q")
        .build();
    assert_eq!(
        process(&mut p, t(0), FRONT, &z).0,
        Verdict::Drop(DropReason::UdpZeroChecksum)
    );
}

#[test]
fn received_icmp_errors_are_validated() {
    let mut p = pipe();
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    // The connection the errors are about (NAT, port 80 → backend 11:8080).
    let syn = frame_in(client, vip).tcp(48000, 80).syn().build();
    assert_eq!(process(&mut p, t(0), FRONT, &syn).0, Verdict::Tx(BACK));
    let reply = Pkt::ip().ipv4(VIP4, CLIENT4).tcp(80, 48000).ack().build();
    let router = IpAddr::from([198, 18, 0, 1]);
    let error = |ty: u8, quote: &[u8]| frame_in(router, vip).icmp_error(ty, 1, 0, quote).build();
    let (v, out) = process(&mut p, t(0), FRONT, &error(3, &reply[..28]));
    assert_eq!(v, Verdict::Tx(BACK));
    verify_checksums(&out).unwrap();
    let mut bad = error(3, &reply[..28]);
    bad[37] ^= 1;
    assert_eq!(
        process(&mut p, t(0), FRONT, &bad).0,
        Verdict::Drop(DropReason::BadIcmpChecksum)
    );
    assert_eq!(
        process(&mut p, t(0), FRONT, &error(3, &reply[..23])).0,
        Verdict::Drop(DropReason::IcmpShortQuote)
    );
    let mut ihl = reply[..28].to_vec();
    ihl[0] = 0x43;
    assert_eq!(
        process(&mut p, t(0), FRONT, &error(3, &ihl)).0,
        Verdict::Drop(DropReason::IcmpBadQuote)
    );
    let about = Pkt::ip()
        .ipv4(VIP4, CLIENT4)
        .icmp_error(11, 0, 0, &reply[..28])
        .build();
    assert_eq!(
        process(&mut p, t(0), FRONT, &error(3, &about[..28])).0,
        Verdict::Drop(DropReason::IcmpAboutError)
    );
    assert_eq!(
        process(&mut p, t(0), FRONT, &error(5, &reply[..28])).0,
        Verdict::Pass,
        "redirects are the kernel's"
    );
    // Not about a service: the kernel's, even when broken.
    let host = IpAddr::from([198, 18, 0, 2]);
    let mine = frame_in(router, host)
        .icmp_error(3, 1, 0, &reply[..22])
        .build();
    assert_eq!(process(&mut p, t(0), FRONT, &mine).0, Verdict::Pass);
    // IPv6: a bad checksum is caught through the pseudo-header.
    let syn6 = frame_in(IpAddr::V6(client6()), IpAddr::V6(vip6()))
        .tcp(48001, 80)
        .syn()
        .build();
    assert_eq!(process(&mut p, t(0), FRONT, &syn6).0, Verdict::Tx(BACK));
    let reply6 = Pkt::ip()
        .ipv6(vip6(), client6())
        .tcp(80, 48001)
        .ack()
        .build();
    let err6 = |csum_flip: bool| {
        let mut f = frame_in(IpAddr::V6("2001:2::1".parse().unwrap()), IpAddr::V6(vip6()))
            .icmp_error(1, 3, 0, &reply6)
            .build();
        if csum_flip {
            f[14 + 40 + 2] ^= 0x10;
        }
        f
    };
    assert_eq!(
        process(&mut p, t(0), FRONT, &err6(false)).0,
        Verdict::Tx(BACK)
    );
    assert_eq!(
        process(&mut p, t(0), FRONT, &err6(true)).0,
        Verdict::Drop(DropReason::BadIcmpChecksum)
    );
}

/// The corpus frames plus random mutations of them, in random order and at random times,
/// on random ports: every frame is counted exactly once in tx, pass or a drop reason, and
/// every ICMP answer stands in for a counted drop.
#[test]
fn counters_add_up() {
    let corpus: Vec<Vec<u8>> = hostile::corpus().into_iter().map(|c| c.frame).collect();
    let n = corpus.len();
    let frame = (
        0..n,
        prop::collection::vec((0usize..2000, any::<u8>()), 0..3),
        0u16..3,
    );
    let seq = prop::collection::vec((frame, 0u64..3000), 1..120);
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(200));
    runner
        .run(&seq, |frames| {
            let mut p = pipe();
            p.network_mut().set_vlans(
                BACK,
                PortVlans {
                    ingress: vec![200],
                    egress: Some(200),
                },
            );
            let mut now = 0;
            let (mut tx, mut answers) = (0u64, 0u64);
            for ((i, muts, port), dt) in frames {
                let mut f = corpus[i].clone();
                for (at, x) in muts {
                    if at < f.len() {
                        f[at] ^= x;
                    }
                }
                now += dt;
                let (v, out) = process(&mut p, t(now), PortId(port), &f);
                if let Verdict::Tx(_) = v {
                    if p.last_answer().is_some() {
                        answers += 1;
                    } else {
                        tx += 1;
                        // Forwarded frames end with their IP packet.
                        if let Parsed::Ip(q) = parse(&out) {
                            prop_assert_eq!(q.ip_end, out.len());
                        }
                    }
                }
            }
            let c = p.counters();
            prop_assert_eq!(c.rx, c.tx + c.pass + c.drops.total());
            prop_assert_eq!(c.tx, tx);
            prop_assert_eq!(c.icmp_answers, answers);
            Ok(())
        })
        .unwrap();
}
