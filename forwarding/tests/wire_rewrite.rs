//! Rewrites against expected frames: each case builds the input and the frame IPVS would send
//! with the testkit, runs the wire layer's rewrite on the input and compares bytes (checksums
//! included, so incremental updates are checked against full recomputation), then runs
//! `verify_checksums` on the result.
#![cfg(feature = "testkit")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_forwarding::testkit::{verify_checksums, Ext, Pkt};
use xvs_forwarding::wire::{
    self, icmp, rewrite, Frag, IcmpAnswer, IcmpNat, Link, Packet, Parsed, Tunnel, WireError,
};
use xvs_forwarding::{DropReason, Frame};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DIR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 3];
const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 1, 1];
const DIR: [u8; 4] = [198, 18, 2, 254];
const BACKEND: [u8; 4] = [198, 18, 2, 1];
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 1);
const DIR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0xfe);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 1);

fn ip4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn parsed(data: &[u8]) -> Packet {
    match wire::parse(data) {
        Parsed::Ip(p) => p,
        other => panic!("expected IP, got {other:?}"),
    }
}

/// Run `f` on a frame holding `bytes` with the given headroom and tailroom; return its result
/// and the frame's bytes afterwards.
fn in_frame<R>(
    bytes: &[u8],
    headroom: usize,
    tailroom: usize,
    f: impl FnOnce(&mut Frame, &mut Packet) -> R,
) -> (R, Vec<u8>) {
    let mut buf = vec![0xeeu8; headroom + bytes.len() + tailroom];
    buf[headroom..headroom + bytes.len()].copy_from_slice(bytes);
    let mut frame = Frame::new(&mut buf, headroom, bytes.len());
    let mut p = parsed(frame.data());
    let r = f(&mut frame, &mut p);
    (r, frame.data().to_vec())
}

fn to_backend() -> Link {
    Link {
        src: DIR_MAC,
        dst: BACKEND_MAC,
        vlan: None,
    }
}

#[test]
fn nat_in_ipv4_tcp() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .df(true)
        .tcp(40000, 80)
        .syn()
        .payload(b"GET /")
        .build();
    let want = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .ipv4(CLIENT, BACKEND)
        .df(true)
        .ttl(63)
        .tcp(40000, 8080)
        .syn()
        .payload(b"GET /")
        .build();
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        rewrite::dec_ttl(f.data_mut(), p)?;
        rewrite::set_dst(f.data_mut(), p, ip4(BACKEND), 8080)?;
        rewrite::set_link(f, p, &to_backend())
    });
    r.unwrap();
    assert_eq!(out, want);
    verify_checksums(&out).unwrap();
}

#[test]
fn nat_out_ipv6_udp_keeps_the_packet_description_current() {
    let input = Pkt::eth(BACKEND_MAC, DIR_MAC)
        .ipv6(BACKEND6, CLIENT6)
        .udp(5353, 40000)
        .payload(b"answer")
        .build();
    let want = Pkt::eth(DIR_MAC, CLIENT_MAC)
        .vlan(7)
        .ipv6(VIP6, CLIENT6)
        .ttl(63)
        .udp(53, 40000)
        .payload(b"answer")
        .build();
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        rewrite::dec_ttl(f.data_mut(), p)?;
        rewrite::set_src(f.data_mut(), p, IpAddr::V6(VIP6), 53)?;
        let link = Link {
            src: DIR_MAC,
            dst: CLIENT_MAC,
            vlan: Some(7),
        };
        rewrite::set_link(f, p, &link)?;
        // The Packet follows the frame: re-parsing gives the same description.
        assert_eq!(*p, parsed(f.data()));
        Ok::<_, WireError>(())
    });
    r.unwrap();
    assert_eq!(out, want);
}

#[test]
fn fullnat_both_endpoints_with_ipv4_options_and_qinq_input() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .vlan(100)
        .vlan(200)
        .ipv4(CLIENT, VIP)
        .ipv4_options(&[0x94, 0x04, 0, 0]) // router alert
        .tcp(40000, 80)
        .ack()
        .payload(&[7; 100])
        .build();
    let want = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .ipv4(DIR, BACKEND)
        .ipv4_options(&[0x94, 0x04, 0, 0])
        .tcp(61000, 8080)
        .ack()
        .payload(&[7; 100])
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        assert_eq!((p.vlan, p.vlan_inner, p.l3), (Some(100), Some(200), 22));
        rewrite::set_src_dst(f.data_mut(), p, (ip4(DIR), 61000), (ip4(BACKEND), 8080))?;
        rewrite::set_link(f, p, &to_backend())
    });
    r.unwrap();
    assert_eq!(out, want);
}

#[test]
fn udp_zero_checksum_gets_a_full_one_like_ipvs() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .udp(40000, 53)
        .udp_zero_checksum()
        .payload(b"q")
        .build();
    let want = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, BACKEND)
        .udp(40000, 53)
        .payload(b"q")
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        rewrite::set_dst(f.data_mut(), p, ip4(BACKEND), 53)
    });
    r.unwrap();
    assert_eq!(out, want);
}

#[test]
fn first_and_later_fragments() {
    // First fragment: ports rewritten, checksum patched incrementally (it covers the whole
    // datagram, so only the change is applied).
    let first = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .frag(0, true)
        .udp(40000, 53)
        .payload(&[1; 64])
        .build();
    let (r, out) = in_frame(&first, 0, 0, |f, p| {
        assert_eq!(p.frag, Frag::First);
        let before = u16::from_be_bytes([f.data()[p.l4 + 6], f.data()[p.l4 + 7]]);
        rewrite::set_dst(f.data_mut(), p, ip4(BACKEND), 5353)?;
        let after = u16::from_be_bytes([f.data()[p.l4 + 6], f.data()[p.l4 + 7]]);
        let mut old = [0u8; 6];
        old[..4].copy_from_slice(&VIP);
        old[4..].copy_from_slice(&53u16.to_be_bytes());
        let mut new = [0u8; 6];
        new[..4].copy_from_slice(&BACKEND);
        new[4..].copy_from_slice(&5353u16.to_be_bytes());
        assert_eq!(after, wire::checksum::update_bytes(before, &old, &new));
        Ok::<_, WireError>(())
    });
    r.unwrap();
    assert_eq!(parsed(&out).dport, 5353);
    // Later fragment: no transport header; only the address changes.
    let later = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv6(CLIENT6, VIP6)
        .frag(1448, false)
        .proto(17)
        .payload(&[2; 40])
        .build();
    let (r, out) = in_frame(&later, 0, 0, |f, p| {
        assert_eq!((p.frag, p.sport, p.dport), (Frag::Later, 0, 0));
        rewrite::set_dst(f.data_mut(), p, IpAddr::V6(BACKEND6), 5353)
    });
    r.unwrap();
    let want = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv6(CLIENT6, BACKEND6)
        .frag(1448, false)
        .proto(17)
        .payload(&[2; 40])
        .build();
    assert_eq!(out, want);
}

#[test]
fn ttl_expiry_leaves_the_frame_alone() {
    for ttl in [0, 1] {
        let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
            .ipv4(CLIENT, VIP)
            .ttl(ttl)
            .tcp(1, 80)
            .syn()
            .build();
        let (r, out) = in_frame(&input, 0, 0, |f, p| rewrite::dec_ttl(f.data_mut(), p));
        assert_eq!(r, Err(WireError::TtlExceeded));
        assert_eq!(DropReason::from(r.unwrap_err()), DropReason::TtlExceeded);
        assert_eq!(out, input);
    }
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv6(CLIENT6, VIP6)
        .ttl(2)
        .tcp(1, 80)
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| rewrite::dec_ttl(f.data_mut(), p));
    r.unwrap();
    assert_eq!(parsed(&out).ttl, 1);
}

#[test]
fn family_mismatch_is_refused() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .tcp(1, 80)
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        rewrite::set_dst(f.data_mut(), p, IpAddr::V6(BACKEND6), 80)
    });
    assert_eq!(r, Err(WireError::Unsupported));
    assert_eq!(out, input);
}

fn tunnel4(mtu: u16) -> Tunnel {
    Tunnel {
        src: ip4(DIR),
        dst: ip4(BACKEND),
        id: 0x4321,
        mtu,
    }
}

fn tunnel6(mtu: u16) -> Tunnel {
    Tunnel {
        src: IpAddr::V6(DIR6),
        dst: IpAddr::V6(BACKEND6),
        id: 0,
        mtu,
    }
}

#[test]
fn tun_ipv4_in_ipv4_with_ecn_ce_and_padding() {
    // Inner: DF, TOS 0xb8 | CE, 2 bytes of Ethernet padding after the IP packet.
    let mut input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .vlan(9)
        .ipv4(CLIENT, VIP)
        .df(true)
        .tos(0xbb)
        .tcp(40000, 80)
        .syn()
        .build();
    input.extend_from_slice(&[0, 0]);
    let want = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .ipv4(DIR, BACKEND)
        .df(true)
        .id(0)
        .ttl(63)
        .tos(0xba) // CE → ECT(0)
        .ipv4(CLIENT, VIP)
        .df(true)
        .tos(0xbb)
        .ttl(63)
        .tcp(40000, 80)
        .syn()
        .build();
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        rewrite::dec_ttl(f.data_mut(), p)?;
        let p = *p;
        rewrite::encap(f, &p, &tunnel4(1500), &to_backend())
    });
    r.unwrap();
    assert_eq!(out, want);
    verify_checksums(&out).unwrap();
    // Or: encapsulate first (the frame stays as it arrived if it is too big), then decrement
    // the inner TTL where `inner_after_encap` says the inner packet now is.
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        let mut outer = *p;
        outer.ttl -= 1;
        rewrite::encap(f, &outer, &tunnel4(1500), &to_backend())?;
        let mut inner = rewrite::inner_after_encap(p, &tunnel4(1500), &to_backend());
        assert_eq!(inner.l3, 34);
        rewrite::dec_ttl(f.data_mut(), &mut inner)
    });
    r.unwrap();
    assert_eq!(out, want);
}

#[test]
fn tun_without_df_uses_the_callers_id() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .udp(40000, 53)
        .payload(b"x")
        .build();
    let want = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .ipv4(DIR, BACKEND)
        .id(0x4321)
        .ipv4(CLIENT, VIP)
        .udp(40000, 53)
        .payload(b"x")
        .build();
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel4(1500), &to_backend())
    });
    r.unwrap();
    assert_eq!(out, want);
}

#[test]
fn tun_ipv6_in_ipv6_and_mixed_families() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv6(CLIENT6, VIP6)
        .tos(0x23)
        .ext(Ext::DestOpts)
        .udp(40000, 53)
        .payload(b"v6")
        .build();
    // IPv6 in IPv6: next header 41, hop limit copied, traffic class with CE → ECT(0).
    let want66 = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .ipv6(DIR6, BACKEND6)
        .tos(0x22)
        .ipv6(CLIENT6, VIP6)
        .tos(0x23)
        .ext(Ext::DestOpts)
        .udp(40000, 53)
        .payload(b"v6")
        .build();
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel6(1500), &to_backend())
    });
    r.unwrap();
    assert_eq!(out, want66);
    verify_checksums(&out).unwrap();
    // IPv6 in IPv4: protocol 41, DF set, ID 0.
    let want64 = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .ipv4(DIR, BACKEND)
        .df(true)
        .id(0)
        .tos(0x22)
        .ipv6(CLIENT6, VIP6)
        .tos(0x23)
        .ext(Ext::DestOpts)
        .udp(40000, 53)
        .payload(b"v6")
        .build();
    let (r, out) = in_frame(&input, 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel4(1500), &to_backend())
    });
    r.unwrap();
    assert_eq!(out, want64);
    // IPv4 in IPv6: next header 4.
    let input4 = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .df(true)
        .tcp(1, 80)
        .build();
    let want46 = Pkt::eth(DIR_MAC, BACKEND_MAC)
        .vlan(3)
        .ipv6(DIR6, BACKEND6)
        .ipv4(CLIENT, VIP)
        .df(true)
        .tcp(1, 80)
        .build();
    let link = Link {
        vlan: Some(3),
        ..to_backend()
    };
    let (r, out) = in_frame(&input4, 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel6(1500), &link)
    });
    r.unwrap();
    assert_eq!(out, want46);
}

#[test]
fn tun_too_big_and_no_headroom() {
    let big = |df: bool| {
        Pkt::eth(CLIENT_MAC, DIR_MAC)
            .ipv4(CLIENT, VIP)
            .df(df)
            .tcp(1, 80)
            .payload(&[0; 1460])
            .build()
    };
    // 1500-byte inner + 20 > 1500: DF → the sender must use 1480.
    let (r, out) = in_frame(&big(true), 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel4(1500), &to_backend())
    });
    assert_eq!(r, Err(WireError::TooBig { mtu: 1480 }));
    assert_eq!(out, big(true));
    let (r, _) = in_frame(&big(false), 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel4(1500), &to_backend())
    });
    assert_eq!(r, Err(WireError::NeedsFragmentation));
    // IPv6 always counts as DF: 40-byte outer header.
    let big6 = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv6(CLIENT6, VIP6)
        .udp(1, 53)
        .payload(&[0; 1452])
        .build();
    let (r, _) = in_frame(&big6, 64, 0, |f, p| {
        rewrite::encap(f, p, &tunnel6(1500), &to_backend())
    });
    assert_eq!(r, Err(WireError::TooBig { mtu: 1460 }));
    // 19 bytes of headroom: not enough for 14 + 20 − 14.
    let small = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .tcp(1, 80)
        .build();
    let (r, out) = in_frame(&small, 19, 0, |f, p| {
        rewrite::encap(f, p, &tunnel4(1500), &to_backend())
    });
    assert_eq!(r, Err(WireError::NoHeadroom));
    assert_eq!(out, small);
    let (r, _) = in_frame(&small, 20, 0, |f, p| {
        rewrite::encap(f, p, &tunnel4(1500), &to_backend())
    });
    r.unwrap();
}

#[test]
fn check_mtu_for_nat_and_dr() {
    let p = |df: bool, len: usize| {
        parsed(
            &Pkt::eth(CLIENT_MAC, DIR_MAC)
                .ipv4(CLIENT, VIP)
                .df(df)
                .udp(1, 2)
                .payload(&vec![0; len])
                .build(),
        )
    };
    assert_eq!(rewrite::check_mtu(&p(true, 1472), 1500), Ok(()));
    assert_eq!(
        rewrite::check_mtu(&p(true, 1473), 1500),
        Err(WireError::TooBig { mtu: 1500 })
    );
    assert_eq!(
        rewrite::check_mtu(&p(false, 1473), 1500),
        Err(WireError::NeedsFragmentation)
    );
}

#[test]
fn answer_frag_needed_ipv4_in_place() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .vlan(4)
        .ipv4(CLIENT, VIP)
        .df(true)
        .tos(0x10)
        .tcp(40000, 80)
        .ack()
        .payload(&[0x5a; 1460])
        .build();
    let orig_ip = &input[18..];
    let want = Pkt::eth(DIR_MAC, CLIENT_MAC)
        .vlan(4)
        .ipv4(VIP, CLIENT)
        .id(0)
        .tos(0xd0)
        .icmp_error(3, 4, 1480, &orig_ip[..576 - 28])
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        icmp::answer(f, p, IcmpAnswer::TooBig { mtu: 1480 })
    });
    r.unwrap();
    assert_eq!(out.len(), 18 + 576);
    assert_eq!(out, want);
    verify_checksums(&out).unwrap();
}

#[test]
fn answer_packet_too_big_ipv6_and_small_packets() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv6(CLIENT6, VIP6)
        .tcp(40000, 80)
        .ack()
        .payload(&[0xa5; 1440])
        .build();
    let want = Pkt::eth(DIR_MAC, CLIENT_MAC)
        .ipv6(VIP6, CLIENT6)
        .icmp_error(2, 0, 1280, &input[14..14 + 1280 - 48])
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        icmp::answer(f, p, IcmpAnswer::TooBig { mtu: 1280 })
    });
    r.unwrap();
    assert_eq!(out, want);
    verify_checksums(&out).unwrap();
    // A small packet is quoted whole: the frame grows into the tailroom, or fails without it.
    let small = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .ttl(1)
        .udp(40000, 53)
        .payload(b"q")
        .build();
    let want = Pkt::eth(DIR_MAC, CLIENT_MAC)
        .ipv4(VIP, CLIENT)
        .id(0)
        .tos(0xc0)
        .icmp_error(11, 0, 0, &small[14..])
        .build();
    let (r, out) = in_frame(&small, 0, 28, |f, p| {
        icmp::answer(f, p, IcmpAnswer::TimeExceeded)
    });
    r.unwrap();
    assert_eq!(out, want);
    let (r, out) = in_frame(&small, 0, 27, |f, p| {
        icmp::answer(f, p, IcmpAnswer::TimeExceeded)
    });
    assert_eq!(r, Err(WireError::NoHeadroom));
    assert_eq!(out, small);
    // Never an ICMP error about an ICMP error.
    let err = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .icmp_error(3, 3, 0, &small[14..])
        .build();
    let (r, _) = in_frame(&err, 0, 64, |f, p| {
        icmp::answer(f, p, IcmpAnswer::PortUnreachable)
    });
    assert_eq!(r, Err(WireError::Unsupported));
}

#[test]
fn translate_icmp_error_client_side_nat_ipv4() {
    // The backend's reply, as the client saw it after NAT out: VIP:80 → client:40000.
    let reply = Pkt::ip()
        .ipv4(VIP, CLIENT)
        .df(true)
        .tcp(80, 40000)
        .ack()
        .payload(&[1; 1400])
        .build();
    // A router on the client side says frag-needed, quoting 28 bytes.
    let router = [198, 18, 0, 1];
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(router, VIP)
        .icmp_error(3, 4, 1400, &reply[..28])
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        let mut e = icmp::parse_embedded(f.data(), p)?;
        // Looked up by the reversed embedded tuple: client:40000 → VIP:80.
        assert_eq!(
            (e.src, e.sport, e.dst, e.dport),
            (ip4(VIP), 80, ip4(CLIENT), 40000)
        );
        let nat = IcmpNat {
            outer_dst: Some(ip4(BACKEND)),
            inner_src: Some((ip4(BACKEND), 8080)),
            ..IcmpNat::default()
        };
        icmp::translate_error(f.data_mut(), p, &mut e, &nat)?;
        assert_eq!((e.src, e.sport), (ip4(BACKEND), 8080));
        Ok::<_, WireError>(())
    });
    r.unwrap();
    verify_checksums(&out).unwrap();
    let p = parsed(&out);
    assert_eq!(
        (p.src, p.dst, p.icmp_type, p.icmp_code),
        (ip4(router), ip4(BACKEND), 3, 4)
    );
    let e = icmp::parse_embedded(&out, &p).unwrap();
    assert_eq!(
        (e.src, e.sport, e.dst, e.dport),
        (ip4(BACKEND), 8080, ip4(CLIENT), 40000)
    );
    // The embedded TCP sequence number and checksum are left as they were.
    assert_eq!(&out[e.l4 + 4..e.l4 + 8], &reply[24..28]);
}

#[test]
fn translate_icmp_error_server_side_nat_ipv6() {
    // The backend's host answers a request (client:40000 → backend:8080) with port
    // unreachable; the director makes it come from the VIP about a packet to the VIP.
    let req = Pkt::ip()
        .ipv6(CLIENT6, BACKEND6)
        .udp(40000, 8080)
        .payload(b"query")
        .build();
    let input = Pkt::eth(BACKEND_MAC, DIR_MAC)
        .ipv6(BACKEND6, CLIENT6)
        .icmp_error(1, 4, 0, &req)
        .build();
    let mut req_vip = req.clone();
    req_vip[24..40].copy_from_slice(&VIP6.octets());
    req_vip[42..44].copy_from_slice(&53u16.to_be_bytes());
    let want = Pkt::eth(BACKEND_MAC, DIR_MAC)
        .ipv6(VIP6, CLIENT6)
        .icmp_error(1, 4, 0, &req_vip)
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        let mut e = icmp::parse_embedded(f.data(), p)?;
        let nat = IcmpNat {
            outer_src: Some(IpAddr::V6(VIP6)),
            inner_dst: Some((IpAddr::V6(VIP6), 53)),
            ..IcmpNat::default()
        };
        icmp::translate_error(f.data_mut(), p, &mut e, &nat)
    });
    r.unwrap();
    assert_eq!(out, want);
    verify_checksums(&out).unwrap();
}

#[test]
fn stale_or_forged_packet_descriptions_fail_cleanly() {
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .tcp(1, 80)
        .build();
    let good = parsed(&input);
    let forged = [
        Packet {
            ip_end: 1000,
            ..good
        },
        Packet { l4: 5, ..good },
        Packet {
            l3: usize::MAX - 4,
            ..good
        },
        Packet {
            l4: good.ip_end - 2,
            ..good
        },
    ];
    for mut p in forged {
        let mut data = input.clone();
        let _ = rewrite::set_dst(&mut data, &mut p, ip4(BACKEND), 8080);
        let _ = rewrite::set_src(&mut data, &mut p, ip4(BACKEND), 8080);
        let _ = rewrite::dec_ttl(&mut data, &mut p);
        let mut buf = data.clone();
        let mut f = Frame::whole(&mut buf);
        let _ = rewrite::encap(&mut f, &p, &tunnel4(1500), &to_backend());
        let mut buf = data.clone();
        let mut f = Frame::whole(&mut buf);
        let _ = icmp::answer(&mut f, &p, IcmpAnswer::TimeExceeded);
        let mut buf = data.clone();
        let mut f = Frame::whole(&mut buf);
        let _ = rewrite::set_link(&mut f, &mut p, &to_backend());
    }
}

#[test]
fn nat_sctp_recomputes_the_crc32c() {
    let chunk = [
        1u8, 0, 0, 20, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x80, 0, 0, 10, 0, 10, 0, 0, 0, 1,
    ];
    let input = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, VIP)
        .sctp(40000, 3868)
        .payload(&chunk)
        .build();
    let want = Pkt::eth(CLIENT_MAC, DIR_MAC)
        .ipv4(CLIENT, BACKEND)
        .sctp(40000, 13868)
        .payload(&chunk)
        .build();
    let (r, out) = in_frame(&input, 0, 0, |f, p| {
        assert_eq!((p.sport, p.dport), (40000, 3868));
        rewrite::set_dst(f.data_mut(), p, ip4(BACKEND), 13868)
    });
    r.unwrap();
    assert_eq!(out, want);
    verify_checksums(&out).unwrap();
}
