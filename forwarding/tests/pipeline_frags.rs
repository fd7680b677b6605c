//! Fragmented datagrams without reassembly: every fragment goes where its first went (NAT and
//! DR, IPv4 and IPv6), in order, reversed (held until the first), interleaved with another
//! datagram scheduled elsewhere, and held fragments whose first never comes expire, counted.

mod common;

use std::net::IpAddr;

use common::*;
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_UDP};
use xvs_forwarding::testkit::verify_checksums;
use xvs_forwarding::{DropReason, Method, Pipeline, PortId, Time, Verdict};
use xvs_schedulers::SchedFlags;

fn service(vip: IpAddr, method: Method) -> Service {
    let v6 = vip.is_ipv6();
    Service {
        key: ServiceKey::Addr {
            proto: PROTO_UDP,
            addr: vip,
            port: 53,
        },
        scheduler: "rr".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: [11u8, 12]
            .iter()
            .map(|&n| Backend {
                addr: if v6 {
                    IpAddr::V6(backend6(n))
                } else {
                    IpAddr::V4(backend4(n))
                },
                port: 53,
                weight: 1,
                method,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            })
            .collect(),
    }
}

/// Fragment `first` (with the UDP header) or a later one of datagram `id` from client port
/// `sport`. (The testkit's IPv6 fragment headers all carry one identification, so IPv6
/// datagrams are told apart by their source: `id` is added to the client address.)
fn frag(vip: IpAddr, id: u16, sport: u16, first: bool) -> Vec<u8> {
    let client = if vip.is_ipv6() {
        IpAddr::V6((client6().to_bits() + u128::from(id)).into())
    } else {
        IpAddr::V4(CLIENT4)
    };
    let p = frame_in(client, vip).id(id);
    if first {
        p.frag(0, true).udp(sport, 53).payload(&[7; 64]).build()
    } else {
        p.frag(72, false).proto(17).payload(&[8; 40]).build()
    }
}

/// The destination address of a transmitted frame (IPv4 or IPv6, after the Ethernet header).
fn dst_of(f: &[u8]) -> IpAddr {
    match f[14] >> 4 {
        4 => IpAddr::V4(std::net::Ipv4Addr::new(f[30], f[31], f[32], f[33])),
        _ => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&f[38..54]);
            IpAddr::V6(o.into())
        }
    }
}

fn drain(p: &mut Pipeline) -> Vec<(PortId, Vec<u8>)> {
    let mut out = Vec::new();
    p.drain_fragments(|port, b| out.push((port, b.to_vec())));
    out
}

fn t(ms: u64) -> Time {
    Time(ms * 1_000_000)
}

#[test]
fn nat_fragments_follow_their_first_in_order_and_reversed() {
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(vip6())] {
        let mut p = pipeline_with(&[service(vip, Method::Nat)], 64);
        // In order: the first is scheduled (rr → backend 11), the later one follows it.
        let (v, first) = process(&mut p, t(1), FRONT, &frag(vip, 1, 4000, true));
        assert_eq!(v, Verdict::Tx(BACK), "{vip}");
        let backend = dst_of(&first);
        let (v, later) = process(&mut p, t(2), FRONT, &frag(vip, 1, 4000, false));
        assert_eq!(v, Verdict::Tx(BACK), "{vip}: later fragment");
        assert_eq!(dst_of(&later), backend, "{vip}: same backend");
        verify_checksums(&later).unwrap();
        // Reversed, another datagram from another port (rr → the other backend): the later
        // fragment waits for its first and leaves right after it.
        let (v, _) = process(&mut p, t(3), FRONT, &frag(vip, 2, 4001, false));
        assert_eq!(v, Verdict::Drop(DropReason::FragmentHeld), "{vip}");
        assert!(drain(&mut p).is_empty());
        let (v, first2) = process(&mut p, t(4), FRONT, &frag(vip, 2, 4001, true));
        assert_eq!(v, Verdict::Tx(BACK));
        assert_ne!(dst_of(&first2), backend, "{vip}: rr moved on");
        let out = drain(&mut p);
        assert_eq!(out.len(), 1, "{vip}: the held fragment");
        assert_eq!(out[0].0, BACK);
        assert_eq!(dst_of(&out[0].1), dst_of(&first2));
        verify_checksums(&out[0].1).unwrap();
        assert_eq!(p.counters().tx_fragments, 1);
        let c = p.counters();
        assert_eq!(c.rx, c.tx + c.pass + c.drops.total());
    }
}

#[test]
fn interleaved_datagrams_keep_their_own_backends() {
    let vip = IpAddr::V4(VIP4);
    let mut p = pipeline_with(&[service(vip, Method::Nat)], 64);
    let (_, a) = process(&mut p, t(1), FRONT, &frag(vip, 10, 5000, true));
    let (_, b) = process(&mut p, t(2), FRONT, &frag(vip, 11, 5001, true));
    assert_ne!(dst_of(&a), dst_of(&b));
    let (_, b2) = process(&mut p, t(3), FRONT, &frag(vip, 11, 5001, false));
    let (_, a2) = process(&mut p, t(4), FRONT, &frag(vip, 10, 5000, false));
    assert_eq!(dst_of(&a2), dst_of(&a));
    assert_eq!(dst_of(&b2), dst_of(&b));
    // A duplicate later fragment goes the same way again.
    let (v, a3) = process(&mut p, t(5), FRONT, &frag(vip, 10, 5000, false));
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(dst_of(&a3), dst_of(&a));
}

#[test]
fn dr_fragments_keep_their_addresses_and_follow_the_first() {
    let vip = IpAddr::V4(VIP4);
    let mut p = pipeline_with(&[service(vip, Method::Dr)], 64);
    let (v, first) = process(&mut p, t(1), FRONT, &frag(vip, 3, 4000, true));
    assert_eq!(v, Verdict::Tx(BACK));
    let (v, later) = process(&mut p, t(2), FRONT, &frag(vip, 3, 4000, false));
    assert_eq!(v, Verdict::Tx(BACK));
    // DR changes only the MACs: same destination MAC as the first, the VIP kept.
    assert_eq!(later[..6], first[..6]);
    assert_eq!(dst_of(&later), vip);
}

#[test]
fn held_fragments_without_a_first_expire_counted() {
    let vip = IpAddr::V4(VIP4);
    let mut p = pipeline_with(&[service(vip, Method::Nat)], 64);
    for id in 0..3 {
        let (v, _) = process(&mut p, t(1), FRONT, &frag(vip, 100 + id, 6000, false));
        assert_eq!(v, Verdict::Drop(DropReason::FragmentHeld));
    }
    p.housekeeping(t(500), 64);
    assert_eq!(
        p.counters().fragments_expired,
        0,
        "still within the hold time"
    );
    p.housekeeping(t(1_100), 64);
    assert_eq!(p.counters().fragments_expired, 3);
    // Their firsts now find nothing to release.
    process(&mut p, t(1_200), FRONT, &frag(vip, 100, 6000, true));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn the_hold_is_bounded() {
    let vip = IpAddr::V4(VIP4);
    let mut p = pipeline_with(&[service(vip, Method::Nat)], 64);
    let mut held = 0;
    let mut refused = 0;
    for id in 0..100u16 {
        match process(&mut p, t(1), FRONT, &frag(vip, id, 7000, false)).0 {
            Verdict::Drop(DropReason::FragmentHeld) => held += 1,
            Verdict::Drop(DropReason::Fragment) => refused += 1,
            v => panic!("{v:?}"),
        }
    }
    assert_eq!((held, refused), (64, 36));
}

/// A later fragment of datagram `id` (client port 4000's) at `offset` with `len` bytes.
fn later_at(id: u16, offset: u16, len: usize, proto: u8) -> Vec<u8> {
    frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        .id(id)
        .frag(offset, true)
        .proto(proto)
        .payload(&vec![9; len])
        .build()
}

#[test]
fn overlapping_tiny_and_oversized_fragments_are_dropped() {
    let vip = IpAddr::V4(VIP4);
    let mut p = pipeline_with(&[service(vip, Method::Nat)], 64);
    // The first fragment covers bytes 0..72 (UDP header and 64 bytes).
    let (v, _) = process(&mut p, t(1), FRONT, &frag(vip, 20, 4000, true));
    assert_eq!(v, Verdict::Tx(BACK));
    // 72..112 is fine; the same again is a duplicate (forwarded: the backend drops it).
    for _ in 0..2 {
        let (v, _) = process(&mut p, t(2), FRONT, &later_at(20, 72, 40, 17));
        assert_eq!(v, Verdict::Tx(BACK));
    }
    // 64..104 overlaps both: dropped, and so is the rest of the datagram (RFC 5722).
    let (v, _) = process(&mut p, t(3), FRONT, &later_at(20, 64, 40, 17));
    assert_eq!(v, Verdict::Drop(DropReason::BadFragment));
    let (v, _) = process(&mut p, t(4), FRONT, &later_at(20, 112, 40, 17));
    assert_eq!(v, Verdict::Drop(DropReason::BadFragment));
    // Past 65535 bytes.
    let (v, _) = process(&mut p, t(5), FRONT, &later_at(21, 65_528, 40, 17));
    assert_eq!(v, Verdict::Drop(DropReason::BadFragment));
    // A TCP fragment at offset 8 (RFC 1858's tiny-fragment attack on the TCP flags).
    let (v, _) = process(&mut p, t(6), FRONT, &later_at(22, 8, 40, 6));
    assert_eq!(v, Verdict::Drop(DropReason::BadFragment));
    let c = p.counters();
    assert_eq!(c.rx, c.tx + c.pass + c.drops.total());
}

#[test]
fn ipv4_over_an_ipv6_tunnel_is_fragmented_in_the_outer_header() {
    let vip = IpAddr::V4(VIP4);
    let svc = Service {
        key: ServiceKey::Addr {
            proto: PROTO_UDP,
            addr: vip,
            port: 53,
        },
        scheduler: "rr".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: vec![Backend {
            addr: IpAddr::V6(backend6(13)),
            port: 53,
            weight: 1,
            method: Method::Tunnel,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }],
    };
    let cfg = xvs_forwarding::PipelineConfig {
        connections: 64,
        v6_connections: 64,
        fragment: true,
        ..xvs_forwarding::PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, &[svc], vec![], network()).unwrap();
    // 1480 bytes of IPv4 (DF clear) + 40 of outer IPv6 exceed the 1500-byte port.
    let input = frame_in(IpAddr::V4(CLIENT4), vip)
        .df(false)
        .udp(4000, 53)
        .payload(&[5; 1452])
        .build();
    let inner_len = input.len() - 14;
    let (v, first) = process(&mut p, t(1), FRONT, &input);
    assert_eq!(v, Verdict::Tx(BACK));
    let rest = drain(&mut p);
    assert_eq!(rest.len(), 1, "two fragments");
    let mut inner = Vec::new();
    let mut offsets = Vec::new();
    for (i, f) in std::iter::once(&first)
        .chain(rest.iter().map(|(_, b)| b))
        .enumerate()
    {
        assert!(f.len() - 14 <= 1500, "fragment {i} fits the MTU");
        assert_eq!(f[12..14], [0x86, 0xdd]);
        assert_eq!(f[14 + 6], 44, "a fragment header follows");
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        assert_eq!(plen, f.len() - 14 - 40);
        let fh = &f[54..62];
        assert_eq!(fh[0], 4, "IPv4 inside");
        let off = u16::from_be_bytes([fh[2], fh[3]]);
        offsets.push((off & !7, off & 1));
        inner.extend_from_slice(&f[62..]);
    }
    assert_eq!(offsets[0], (0, 1));
    assert_eq!(offsets[1].1, 0, "the last has M clear");
    assert_eq!(
        usize::from(offsets[1].0),
        inner.len() - (rest[0].1.len() - 62)
    );
    assert_eq!(inner.len(), inner_len, "the whole inner packet");
    assert_eq!(inner[0] >> 4, 4);
}
