//! The pipeline's fixture table, Katran style: {description, input frame, expected output frame,
//! verdict}, run in order through one pipeline (later rows depend on the connections earlier
//! rows created). Every method × IPv4/IPv6 × TCP/UDP, both directions where the method sees
//! both, ICMP error translation, TUN's PMTU answer, no-backend answers and drops.
//!
//! Topology (all addresses from the RFC 2544 / RFC 5180 benchmarking ranges):
//! ```text
//! client 198.18.100.5 / 2001:2:ff::5 ── gateway 198.18.0.1 / 2001:2::1 ── [port 0 "front"]
//!   director 198.18.0.2 / 2001:2::2, VIP 198.18.0.100 / 2001:2::100
//! [port 1 "back"] director 198.19.0.1 / 2001:2:1::1 ── backends 198.19.0.11.. / 2001:2:1::11..
//! ```

use std::net::IpAddr;

mod common;

use common::*;
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::{DropReason, Method, Pipeline, PipelineConfig, Verdict};

fn pipeline() -> Pipeline {
    let cfg = PipelineConfig {
        connections: 1024,
        v6_connections: 256,
        local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, &services(), vec![], network()).unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum L4 {
    TcpSyn,
    TcpSynAck,
    Udp,
}

fn l4(pkt: Pkt, kind: L4, sport: u16, dport: u16) -> Pkt {
    match kind {
        L4::TcpSyn => pkt
            .tcp(sport, dport)
            .syn()
            .payload(b"GET / HTTP/1.0\r\n\r\n"),
        L4::TcpSynAck => pkt
            .tcp(sport, dport)
            .syn()
            .ack()
            .payload(b"HTTP/1.0 200 OK\r\n"),
        L4::Udp => pkt.udp(sport, dport).payload(b"query"),
    }
}

/// The fixtures for one method and family: the client's packet in, and (NAT, FullNAT) the
/// backend's reply out.
/// Per-worker sequences the expected frames depend on: FullNAT local ports are handed out from
/// 1024 upwards, TUN outer IPv4 IDs count from 1 (one per tunnelled frame, any family).
struct Seq {
    lport: u16,
    tun_id: u16,
}

fn method_fixtures(m: Method, v6: bool, seq: &mut Seq) -> Vec<Fixture> {
    let (vip, client, dir_back, local) = if v6 {
        (
            IpAddr::V6(vip6()),
            IpAddr::V6(client6()),
            IpAddr::V6(dir_back6()),
            IpAddr::V6(local6()),
        )
    } else {
        (
            IpAddr::V4(VIP4),
            IpAddr::V4(CLIENT4),
            IpAddr::V4(DIR_BACK4),
            IpAddr::V4(LOCAL4),
        )
    };
    let i = method_index(m);
    let n = 11 + i;
    let backend = if v6 {
        IpAddr::V6(backend6(n))
    } else {
        IpAddr::V4(backend4(n))
    };
    let fam = if v6 { "IPv6" } else { "IPv4" };
    let mut out = Vec::new();
    for (kind, base) in [(L4::TcpSyn, 80u16), (L4::Udp, 53u16)] {
        let vport = base + u16::from(i);
        let bport = match m {
            Method::Nat | Method::FullNat => 8000 + vport,
            _ => vport,
        };
        let cport = 40000 + vport;
        let name = if kind == L4::Udp { "UDP" } else { "TCP" };
        let input = l4(
            ip(Pkt::eth(GW_MAC, FRONT_MAC), client, vip).ttl(64),
            kind,
            cport,
            vport,
        );
        let to_backend = Pkt::eth(BACK_MAC, backend_mac(n));
        let expected = match m {
            Method::Nat => l4(ip(to_backend, client, backend).ttl(63), kind, cport, bport),
            Method::Dr => l4(ip(to_backend, client, vip).ttl(63), kind, cport, vport),
            Method::Tunnel => {
                // Outer: TTL copied from the decremented inner, DF copied (IPv6 inner: set),
                // ID 0 with DF else the worker's counter.
                seq.tun_id += 1;
                let outer = ip(to_backend, dir_back, backend).ttl(63);
                let outer = if v6 {
                    outer
                } else {
                    outer.df(false).id(seq.tun_id)
                };
                l4(ip(outer, client, vip).ttl(63), kind, cport, vport)
            }
            Method::FullNat => {
                seq.lport += 1;
                l4(
                    ip(to_backend, local, backend).ttl(63),
                    kind,
                    seq.lport - 1,
                    bport,
                )
            }
        };
        out.push(Fixture {
            description: format!("{m:?} {fam} {name} client → VIP"),
            ingress: FRONT,
            input: input.build(),
            verdict: Verdict::Tx(BACK),
            output: Some(expected.build()),
        });
        let reply_kind = if kind == L4::Udp {
            L4::Udp
        } else {
            L4::TcpSynAck
        };
        match m {
            Method::Nat => {
                let reply = l4(
                    ip(Pkt::eth(backend_mac(n), BACK_MAC), backend, client).ttl(64),
                    reply_kind,
                    bport,
                    cport,
                );
                let expected = l4(
                    ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client).ttl(63),
                    reply_kind,
                    vport,
                    cport,
                );
                out.push(Fixture {
                    description: format!("{m:?} {fam} {name} backend reply → client"),
                    ingress: BACK,
                    input: reply.build(),
                    verdict: Verdict::Tx(FRONT),
                    output: Some(expected.build()),
                });
            }
            Method::FullNat => {
                let lport = seq.lport - 1;
                let reply = l4(
                    ip(Pkt::eth(backend_mac(n), BACK_MAC), backend, local).ttl(64),
                    reply_kind,
                    bport,
                    lport,
                );
                let expected = l4(
                    ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client).ttl(63),
                    reply_kind,
                    vport,
                    cport,
                );
                out.push(Fixture {
                    description: format!("{m:?} {fam} {name} backend reply → client"),
                    ingress: BACK,
                    input: reply.build(),
                    verdict: Verdict::Tx(FRONT),
                    output: Some(expected.build()),
                });
            }
            Method::Dr | Method::Tunnel => {}
        }
    }
    out
}

#[test]
fn every_method_both_families_both_directions() {
    let mut pipe = pipeline();
    let mut seq = Seq {
        lport: 1024,
        tun_id: 0,
    };
    let mut fixtures = Vec::new();
    for v6 in [false, true] {
        for m in [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat] {
            fixtures.extend(method_fixtures(m, v6, &mut seq));
        }
    }
    run(&mut pipe, &fixtures);
    let c = pipe.counters();
    assert_eq!(c.drops.total(), 0, "{:?}", c.drops);
    assert_eq!(c.tx, c.rx);
}

/// An embedded packet as IPVS translates it: addresses and ports rewritten (`translated`), the
/// transport checksum left as it was in `original` (the quote is truncated, so nobody fixes it).
fn quote(translated: Pkt, original: &Pkt) -> Vec<u8> {
    let mut t = translated.build();
    let o = original.build();
    let at = if (t[0] >> 4) == 6 { 40 + 16 } else { 20 + 16 };
    t[at..at + 2].copy_from_slice(&o[at..at + 2]);
    t
}

/// The IP packet inside a frame (what an ICMP error quotes), cut to `max` bytes.
fn ip_part(frame: &[u8], max: usize) -> Vec<u8> {
    frame[14..].iter().take(max).copied().collect()
}

#[test]
fn icmp_errors_are_translated_to_the_other_side() {
    for v6 in [false, true] {
        let mut pipe = pipeline();
        let (vip, client, backend, local) = if v6 {
            (
                IpAddr::V6(vip6()),
                IpAddr::V6(client6()),
                IpAddr::V6(backend6(11)),
                IpAddr::V6(local6()),
            )
        } else {
            (
                IpAddr::V4(VIP4),
                IpAddr::V4(CLIENT4),
                IpAddr::V4(backend4(11)),
                IpAddr::V4(LOCAL4),
            )
        };
        let fullnat_backend = if v6 {
            IpAddr::V6(backend6(14))
        } else {
            IpAddr::V4(backend4(14))
        };
        let router: IpAddr = if v6 {
            "2001:2:ff::1".parse().unwrap()
        } else {
            "198.18.100.1".parse().unwrap()
        };
        let back_router: IpAddr = if v6 {
            "2001:2:1::fe".parse().unwrap()
        } else {
            "198.19.0.254".parse().unwrap()
        };
        // Unreachable: ICMP 3/1 (host unreachable), ICMPv6 1/3 (address unreachable).
        let (unreach, code) = if v6 { (1, 3) } else { (3, 1) };
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let syn = |dport| frame_in(client, vip).tcp(41000, dport).syn().build();
        let fixtures = vec![
            Fixture {
                description: format!("{fam} NAT SYN opens the connection"),
                ingress: FRONT,
                input: syn(80),
                verdict: Verdict::Tx(BACK),
                output: None,
            },
            Fixture {
                description: format!("{fam} FullNAT SYN opens the connection"),
                ingress: FRONT,
                input: syn(83),
                verdict: Verdict::Tx(BACK),
                output: None,
            },
            // Client side: the client's router reports our reply (VIP:80 → client) undeliverable.
            // NAT: outer dst := backend, embedded src := backend:8080.
            Fixture {
                description: format!("{fam} NAT: client-side unreachable goes to the backend"),
                ingress: FRONT,
                input: frame_in(router, vip)
                    .icmp_error(
                        unreach,
                        code,
                        0,
                        &Pkt::ip()
                            .ip_layer(vip, client)
                            .ttl(60)
                            .tcp(80, 41000)
                            .syn()
                            .ack()
                            .build(),
                    )
                    .build(),
                verdict: Verdict::Tx(BACK),
                output: Some(
                    ip(Pkt::eth(BACK_MAC, backend_mac(11)), router, backend)
                        .ttl(63)
                        .icmp_error(
                            unreach,
                            code,
                            0,
                            &quote(
                                Pkt::ip()
                                    .ip_layer(backend, client)
                                    .ttl(60)
                                    .tcp(8080, 41000)
                                    .syn()
                                    .ack(),
                                &Pkt::ip()
                                    .ip_layer(vip, client)
                                    .ttl(60)
                                    .tcp(80, 41000)
                                    .syn()
                                    .ack(),
                            ),
                        )
                        .build(),
                ),
            },
            // Server side: a router behind the director reports the forwarded SYN
            // (client → backend:8080) undeliverable. NAT: outer src := VIP, embedded dst := VIP:80.
            Fixture {
                description: format!("{fam} NAT: server-side unreachable goes to the client"),
                ingress: BACK,
                input: ip(Pkt::eth(backend_mac(11), BACK_MAC), back_router, client)
                    .ttl(64)
                    .icmp_error(
                        unreach,
                        code,
                        0,
                        &Pkt::ip()
                            .ip_layer(client, backend)
                            .ttl(63)
                            .tcp(41000, 8080)
                            .syn()
                            .build(),
                    )
                    .build(),
                verdict: Verdict::Tx(FRONT),
                output: Some(
                    ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client)
                        .ttl(63)
                        .icmp_error(
                            unreach,
                            code,
                            0,
                            &quote(
                                Pkt::ip().ip_layer(client, vip).ttl(63).tcp(41000, 80).syn(),
                                &Pkt::ip()
                                    .ip_layer(client, backend)
                                    .ttl(63)
                                    .tcp(41000, 8080)
                                    .syn(),
                            ),
                        )
                        .build(),
                ),
            },
            // FullNAT server side: about (local:1024 → backend:8083); back to the client as an
            // error about (client:41000 → VIP:83) from the VIP.
            Fixture {
                description: format!("{fam} FullNAT: server-side unreachable goes to the client"),
                ingress: BACK,
                input: ip(Pkt::eth(backend_mac(14), BACK_MAC), fullnat_backend, local)
                    .ttl(64)
                    .icmp_error(
                        unreach,
                        code,
                        0,
                        &Pkt::ip()
                            .ip_layer(local, fullnat_backend)
                            .ttl(63)
                            .tcp(1024, 8083)
                            .syn()
                            .build(),
                    )
                    .build(),
                verdict: Verdict::Tx(FRONT),
                output: Some(
                    ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client)
                        .ttl(63)
                        .icmp_error(
                            unreach,
                            code,
                            0,
                            &quote(
                                Pkt::ip().ip_layer(client, vip).ttl(63).tcp(41000, 83).syn(),
                                &Pkt::ip()
                                    .ip_layer(local, fullnat_backend)
                                    .ttl(63)
                                    .tcp(1024, 8083)
                                    .syn(),
                            ),
                        )
                        .build(),
                ),
            },
            // FullNAT client side: about (VIP:83 → client:41000); on to the backend as an error
            // about (backend:8083 → local:1024) from the local address.
            Fixture {
                description: format!("{fam} FullNAT: client-side unreachable goes to the backend"),
                ingress: FRONT,
                input: frame_in(router, vip)
                    .icmp_error(
                        unreach,
                        code,
                        0,
                        &Pkt::ip()
                            .ip_layer(vip, client)
                            .ttl(60)
                            .tcp(83, 41000)
                            .ack()
                            .build(),
                    )
                    .build(),
                verdict: Verdict::Tx(BACK),
                output: Some(
                    ip(Pkt::eth(BACK_MAC, backend_mac(14)), local, fullnat_backend)
                        .ttl(63)
                        .icmp_error(
                            unreach,
                            code,
                            0,
                            &quote(
                                Pkt::ip()
                                    .ip_layer(fullnat_backend, local)
                                    .ttl(60)
                                    .tcp(8083, 1024)
                                    .ack(),
                                &Pkt::ip().ip_layer(vip, client).ttl(60).tcp(83, 41000).ack(),
                            ),
                        )
                        .build(),
                ),
            },
            // An error about a flow nobody tracks, addressed to the VIP: counted drop.
            Fixture {
                description: format!("{fam} unmatched error to the VIP is dropped"),
                ingress: FRONT,
                input: frame_in(router, vip)
                    .icmp_error(
                        unreach,
                        code,
                        0,
                        &Pkt::ip().ip_layer(vip, client).tcp(80, 999).ack().build(),
                    )
                    .build(),
                verdict: Verdict::Drop(DropReason::IcmpNoConnection),
                output: None,
            },
        ];
        run(&mut pipe, &fixtures);
    }
}

#[test]
fn tun_answers_too_big_with_the_reduced_mtu() {
    for v6 in [false, true] {
        let mut pipe = pipeline();
        let (vip, client) = if v6 {
            (IpAddr::V6(vip6()), IpAddr::V6(client6()))
        } else {
            (IpAddr::V4(VIP4), IpAddr::V4(CLIENT4))
        };
        // 1500-byte IP packet with DF: no room for the 20/40-byte outer header.
        let hdr = if v6 { 40 + 20 } else { 20 + 20 };
        let big = frame_in(client, vip)
            .df(!v6)
            .tcp(42000, 82)
            .syn()
            .payload(&vec![0x55; 1500 - hdr])
            .build();
        let (mtu, quoted, ty) = if v6 {
            (1460u32, 1280 - 48, 2)
        } else {
            (1480u32, 576 - 28, 3)
        };
        let rest = if v6 { mtu } else { mtu & 0xffff };
        let expected = ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client)
            .ttl(64)
            .id(0)
            .tos(if v6 { 0 } else { 0xc0 })
            .icmp_error(ty, if v6 { 0 } else { 4 }, rest, &ip_part(&big, quoted))
            .build();
        run(
            &mut pipe,
            &[Fixture {
                description: format!("TUN {} too big", if v6 { "IPv6" } else { "IPv4" }),
                ingress: FRONT,
                input: big,
                verdict: Verdict::Tx(FRONT),
                output: Some(expected),
            }],
        );
        assert_eq!(pipe.counters().drops.get(DropReason::TooBig), 1);
        assert_eq!(pipe.counters().icmp_answers, 1);
    }
}

#[test]
fn drops_and_passes() {
    let mut pipe = pipeline();
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    let arp = {
        let mut f = Pkt::eth(GW_MAC, FRONT_MAC).build();
        f.truncate(12);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0u8; 28]);
        f
    };
    let syn_no_backend = frame_in(client, vip).tcp(43000, 99).syn().build();
    let ttl1 = frame_in(client, vip).ttl(1).tcp(43001, 80).syn().build();
    let fixtures = vec![
        Fixture {
            description: "ARP goes to the kernel".into(),
            ingress: FRONT,
            input: arp,
            verdict: Verdict::Pass,
            output: None,
        },
        Fixture {
            description: "traffic for the host (not a service) goes to the kernel".into(),
            ingress: FRONT,
            input: frame_in(client, "198.18.0.2".parse().unwrap())
                .tcp(43000, 22)
                .syn()
                .build(),
            verdict: Verdict::Pass,
            output: None,
        },
        Fixture {
            description: "ping to the VIP goes to the kernel".into(),
            ingress: FRONT,
            input: frame_in(client, vip).icmp_echo(1, 1).build(),
            verdict: Verdict::Pass,
            output: None,
        },
        Fixture {
            description: "TCP without SYN and without a connection is dropped".into(),
            ingress: FRONT,
            input: frame_in(client, vip).tcp(43000, 80).ack().build(),
            verdict: Verdict::Drop(DropReason::NoConnection),
            output: None,
        },
        Fixture {
            description: "TTL 1 would expire: time exceeded from the VIP".into(),
            ingress: FRONT,
            input: ttl1.clone(),
            verdict: Verdict::Tx(FRONT),
            output: Some(
                ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client)
                    .ttl(64)
                    .id(0)
                    .tos(0xc0)
                    .icmp_error(11, 0, 0, &ip_part(&ttl1, 548))
                    .build(),
            ),
        },
        Fixture {
            description: "bad IPv4 header checksum".into(),
            ingress: FRONT,
            input: frame_in(client, vip)
                .bad_ip_checksum()
                .tcp(43002, 80)
                .syn()
                .build(),
            verdict: Verdict::Drop(DropReason::BadIpChecksum),
            output: None,
        },
        Fixture {
            description: "truncated frame".into(),
            ingress: FRONT,
            input: frame_in(client, vip).tcp(43003, 80).syn().build()[..30].to_vec(),
            verdict: Verdict::Drop(DropReason::Truncated),
            output: None,
        },
        Fixture {
            description: "later fragment to a VIP cannot be matched".into(),
            ingress: FRONT,
            input: frame_in(client, vip)
                .frag(1480, false)
                .proto(6)
                .payload(&[0; 40])
                .build(),
            verdict: Verdict::Drop(DropReason::Fragment),
            output: None,
        },
        Fixture {
            description: "no eligible backend: port unreachable to the client".into(),
            ingress: FRONT,
            input: syn_no_backend.clone(),
            verdict: Verdict::Tx(FRONT),
            output: Some(
                ip(Pkt::eth(FRONT_MAC, GW_MAC), vip, client)
                    .ttl(64)
                    .id(0)
                    .tos(0xc0)
                    .icmp_error(3, 3, 0, &ip_part(&syn_no_backend, 548))
                    .build(),
            ),
        },
    ];
    run(&mut pipe, &fixtures);
    let c = pipe.counters();
    assert_eq!(c.pass, 3);
    assert_eq!(c.drops.get(DropReason::NoBackend), 1);
    assert_eq!(c.drops.get(DropReason::TtlExceeded), 1);
    assert_eq!(c.icmp_answers, 2);
    assert_eq!(c.tx + c.pass + c.drops.total(), c.rx);
}
