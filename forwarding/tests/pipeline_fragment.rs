//! Fragmentation of IPv4 packets without DF that exceed the egress MTU (topology of `common`,
//! back port MTU lowered to 1400): NAT, DR and FullNAT fragment the forwarded packet, TUN the
//! outer IPIP packet. Every fragment fits the MTU and has valid checksums; reassembled, the
//! fragments give a packet whose checksums verify and whose payload is the original's. IPv6
//! is answered with packet too big; with fragmentation off the packet is a counted drop.

use std::net::IpAddr;

mod common;

use common::*;
use xvs_forwarding::net::{Network, Port};
use xvs_forwarding::testkit::verify_checksums;
use xvs_forwarding::wire::checksum;
use xvs_forwarding::{DropReason, Pipeline, PipelineConfig, Time, Verdict};

const MTU: u16 = 1400;

fn pipeline(fragment: bool) -> Pipeline {
    let net = network();
    let ports: Vec<Port> = net
        .ports()
        .iter()
        .map(|p| Port {
            mtu: if p.name == "back" { MTU } else { p.mtu },
            ..p.clone()
        })
        .collect();
    let routes = net.routes().copied().collect();
    let mut small = Network::new(ports, routes);
    for n in 11..=14 {
        small.set_neighbour(IpAddr::V4(backend4(n)), backend_mac(n));
        small.set_neighbour(IpAddr::V6(backend6(n)), backend_mac(n));
    }
    small.set_neighbour("198.18.0.1".parse().unwrap(), GW_MAC);
    let cfg = PipelineConfig {
        connections: 1024,
        v6_connections: 256,
        local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
        fragment,
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, &services(), vec![], small).unwrap()
}

/// Reassemble IPv4 fragments (link header of 14 bytes, no options) into one frame.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut last_seen = false;
    for f in frags {
        let ip = &f[14..];
        let hl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let fo = u16::from_be_bytes([ip[6], ip[7]]);
        let off = usize::from(fo & 0x1fff) * 8;
        assert_eq!(off, data.len(), "fragments in order, no gap or overlap");
        assert!(!last_seen, "nothing after the last fragment");
        data.extend_from_slice(&ip[hl..total]);
        last_seen = fo & 0x2000 == 0;
    }
    assert!(last_seen, "the last fragment has MF clear");
    let first = &frags[0];
    let mut out = first[..14 + 20].to_vec();
    let total = (20 + data.len()) as u16;
    out[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
    out[14 + 6] = 0;
    out[14 + 7] = 0;
    out[14 + 10] = 0;
    out[14 + 11] = 0;
    let c = checksum::checksum(&out[14..34]);
    out[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&data);
    out
}

#[test]
fn too_big_without_df_is_fragmented_in_every_method() {
    let vip = IpAddr::V4(VIP4);
    let client = IpAddr::V4(CLIENT4);
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    // UDP 53 NAT, 54 DR, 55 TUN, 56 FullNAT.
    for port in 53u16..=56 {
        let mut p = pipeline(true);
        let input = frame_in(client, vip)
            .df(false)
            .id(0x4242)
            .udp(40000, port)
            .payload(&data)
            .build();
        let (v, first) = process(&mut p, Time::from_secs(1), FRONT, &input);
        assert_eq!(v, Verdict::Tx(BACK), "port {port}");
        let mut frags = vec![first];
        p.drain_fragments(|port, b| {
            assert_eq!(port, BACK);
            frags.push(b.to_vec());
        });
        assert_eq!(p.pending_fragments(), 0);
        assert!(frags.len() >= 3, "port {port}: {} fragments", frags.len());
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() - 14 <= usize::from(MTU), "port {port} fragment {i}");
            // Header checksum of each fragment (the transport checksum spans fragments).
            assert_eq!(
                checksum::checksum(&f[14..34]),
                0,
                "port {port} fragment {i}"
            );
            // One identification: the packet's (TUN: the outer header's).
            assert_eq!(f[14 + 4..14 + 6], frags[0][14 + 4..14 + 6], "port {port}");
        }
        if port != 55 {
            assert_eq!(frags[0][14 + 4..14 + 6], [0x42, 0x42][..], "port {port}");
        }
        let c = p.counters();
        assert_eq!((c.tx, c.tx_fragments), (1, frags.len() as u64 - 1));
        let whole = reassemble(&frags);
        verify_checksums(&whole).unwrap_or_else(|e| panic!("port {port}: {e}"));
        // The datagram's payload arrives unchanged (TUN: inside the inner packet).
        assert!(
            whole.ends_with(&data),
            "port {port}: payload changed by fragmentation"
        );
    }
}

#[test]
fn ipv6_df_and_fragmentation_off() {
    let data = vec![0x33; 3000];
    // IPv6: packet too big, never fragmented by the director.
    let mut p = pipeline(true);
    let input = frame_in(IpAddr::V6(client6()), IpAddr::V6(vip6()))
        .udp(40000, 53)
        .payload(&data)
        .build();
    let (v, out) = process(&mut p, Time::from_secs(1), FRONT, &input);
    assert_eq!(v, Verdict::Tx(FRONT));
    assert_eq!(out[14 + 40], 2, "ICMPv6 packet too big");
    assert_eq!(p.last_answer(), Some(DropReason::TooBig));
    // IPv4 with DF: fragmentation needed.
    let df = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        .df(true)
        .udp(40001, 53)
        .payload(&data)
        .build();
    let (v, out) = process(&mut p, Time::from_secs(1), FRONT, &df);
    assert_eq!(v, Verdict::Tx(FRONT));
    assert_eq!((out[14 + 20], out[14 + 21]), (3, 4));
    assert_eq!(p.pending_fragments(), 0);
    // Fragmentation off: a counted drop in every method.
    let mut p = pipeline(false);
    for port in 53u16..=56 {
        let input = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
            .df(false)
            .udp(40002, port)
            .payload(&data)
            .build();
        let (v, _) = process(&mut p, Time::from_secs(1), FRONT, &input);
        assert_eq!(
            v,
            Verdict::Drop(DropReason::NeedsFragmentation),
            "port {port}"
        );
    }
}

/// `wire::fragment::fragment_v4` on random packets, MTUs and options: every fragment fits,
/// offsets are multiples of 8 and contiguous, only the last has MF clear (unless the packet
/// was itself a non-last fragment), non-copied options are NOPs from the second fragment on,
/// and the payload comes back whole.
#[test]
fn fragment_v4_properties() {
    use proptest::prelude::*;
    use xvs_forwarding::wire::fragment::fragment_v4;
    use xvs_forwarding::wire::{parse, Parsed};
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(500));
    let case = (
        1usize..4000,
        68u16..1600,
        any::<bool>(),
        0u16..64,
        any::<bool>(),
    );
    runner
        .run(&case, |(len, mtu, opts, base, more)| {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let mut b = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
                .df(false)
                .frag(base * 8, more);
            if opts {
                // Record route (not copied) and a copied option (0x88, stream id).
                b = b.ipv4_options(&[7, 7, 4, 0, 0, 0, 0, 0x88, 4, 0, 1]);
            }
            let frame = b.proto(253).payload(&payload).build();
            let Parsed::Ip(p) = parse(&frame) else {
                return Err(TestCaseError::fail("not IP"));
            };
            let hlen = p.l4 - p.l3;
            let mut out = Vec::new();
            let mut ranges = Vec::new();
            let r = fragment_v4(&frame, &p, mtu, &mut out, &mut ranges);
            if usize::from(mtu) < hlen + 8 {
                prop_assert!(r.is_err());
                prop_assert!(out.is_empty());
                return Ok(());
            }
            prop_assert!(r.is_ok());
            let mut got = Vec::new();
            for (i, rg) in ranges.iter().enumerate() {
                let f = &out[rg.clone()];
                let ip = &f[14..];
                prop_assert!(ip.len() <= usize::from(mtu));
                prop_assert_eq!(usize::from(ip[0] & 0xf) * 4, hlen);
                prop_assert_eq!(checksum::checksum(&ip[..hlen]), 0);
                let fo = u16::from_be_bytes([ip[6], ip[7]]);
                let off = usize::from(fo & 0x1fff) * 8;
                prop_assert_eq!(off, usize::from(base) * 8 + got.len());
                let last = i + 1 == ranges.len();
                prop_assert_eq!(fo & 0x2000 != 0, !last || more);
                prop_assert_eq!(fo & 0x4000, 0);
                if !last {
                    prop_assert_eq!((ip.len() - hlen) % 8, 0);
                }
                if opts {
                    let o = &ip[20..hlen];
                    if i == 0 {
                        prop_assert_eq!(&o[..7], &[7u8, 7, 4, 0, 0, 0, 0][..]);
                    } else {
                        prop_assert_eq!(&o[..7], &[1u8; 7][..]);
                    }
                    prop_assert_eq!(&o[7..11], &[0x88u8, 4, 0, 1][..]);
                }
                got.extend_from_slice(&ip[hlen..]);
            }
            prop_assert_eq!(got, payload);
            Ok(())
        })
        .unwrap();
}
