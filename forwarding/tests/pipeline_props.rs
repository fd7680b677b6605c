//! Properties of the whole pipeline:
//! * every frame it transmits carries valid IP and L4 checksums, checked by full recomputation,
//!   for every method × family × protocol, in both directions;
//! * arbitrary bytes, and valid frames with random bytes changed, never make it panic, and
//!   whatever it transmits still fits the buffer.

mod common;

use std::net::IpAddr;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use xvs_forwarding::testkit::{verify_checksums, Pkt};
use xvs_forwarding::{Method, Pipeline, Time, Verdict};

fn pipeline() -> Pipeline {
    pipeline_with(&services(), 4096)
}

/// Source and destination address and port of a frame's IP packet.
fn endpoints(frame: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let p = SlicedPacket::from_ethernet(frame).expect("transmitted frame parses");
    let (src, dst) = match p.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        _ => panic!("no IP"),
    };
    let (sp, dp) = match p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => panic!("no TCP/UDP"),
    };
    (src, sp, dst, dp)
}

const METHODS: [Method; 4] = [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn transmitted_frames_have_valid_checksums(
        v6 in any::<bool>(),
        method in 0usize..4,
        udp in any::<bool>(),
        sport in 1024u16..65535,
        ttl in 2u8..=255,
        tos in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        zero_udp_checksum in any::<bool>(),
    ) {
        let mut pipe = pipeline();
        let m = METHODS[method];
        let (client, vip) = if v6 {
            (IpAddr::V6(client6()), IpAddr::V6(vip6()))
        } else {
            (IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        };
        let vport = if udp { 53 } else { 80 } + u16::from(method_index(m));
        let pkt = frame_in(client, vip).ttl(ttl).tos(tos);
        let pkt = if udp {
            let p = pkt.udp(sport, vport);
            if zero_udp_checksum && !v6 { p.udp_zero_checksum() } else { p }
        } else {
            pkt.tcp(sport, vport).syn()
        };
        let input = pkt.payload(&payload).build();
        let (v, out) = process(&mut pipe, Time::from_secs(1), FRONT, &input);
        prop_assert_eq!(v, Verdict::Tx(BACK));
        prop_assert!(verify_checksums(&out).is_ok(), "{:?}", verify_checksums(&out));
        if matches!(m, Method::Nat | Method::FullNat) {
            // The backend answers whoever the director made the packet come from.
            let (s, sp, d, dp) = endpoints(&out);
            let back = ip(Pkt::eth([2, 0, 0, 0, 1, 99], BACK_MAC), d, s).ttl(ttl).tos(tos);
            let back = if udp { back.udp(dp, sp) } else { back.tcp(dp, sp).syn().ack() };
            let reply = back.payload(&payload).build();
            let (v, out) = process(&mut pipe, Time::from_secs(2), BACK, &reply);
            prop_assert_eq!(v, Verdict::Tx(FRONT));
            prop_assert!(verify_checksums(&out).is_ok(), "{:?}", verify_checksums(&out));
            let (s, sp, d, dp) = endpoints(&out);
            prop_assert_eq!((s, sp, d, dp), (vip, vport, client, sport));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut pipe = pipeline();
        let (v, out) = process(&mut pipe, Time::from_secs(1), FRONT, &bytes);
        if let Verdict::Tx(_) = v {
            prop_assert!(out.len() <= bytes.len() + HEADROOM);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        v6 in any::<bool>(),
        method in 0usize..4,
        udp in any::<bool>(),
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..6),
        cut in 0usize..200,
    ) {
        let mut pipe = pipeline();
        let (client, vip) = if v6 {
            (IpAddr::V6(client6()), IpAddr::V6(vip6()))
        } else {
            (IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        };
        let vport = if udp { 53 } else { 80 } + method as u16;
        let pkt = frame_in(client, vip);
        let pkt = if udp { pkt.udp(4000, vport) } else { pkt.tcp(4000, vport).syn() };
        let mut frame = pkt.payload(&[7; 64]).build();
        for (at, x) in flips {
            let n = frame.len();
            frame[at % n] ^= x;
        }
        frame.truncate(frame.len().saturating_sub(cut % 40));
        // Twice: the first may have created a connection the second then hits.
        for _ in 0..2 {
            let (v, out) = process(&mut pipe, Time::from_secs(1), FRONT, &frame);
            if let Verdict::Tx(_) = v {
                prop_assert!(out.len() <= frame.len() + HEADROOM);
            }
        }
    }
}
