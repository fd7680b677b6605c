//! Parser edge cases: IPv6 extension-header chains, fragments, length and header checks,
//! VLAN variants, ICMP classification and the embedded packet of ICMP errors.
#![cfg(feature = "testkit")]

use std::net::{IpAddr, Ipv6Addr};

use xvs_forwarding::testkit::{Ext, Pkt};
use xvs_forwarding::wire::{self, icmp, proto, Frag, Packet, Parsed, WireError};

const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];
const A: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const B: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 1);

fn ip(data: &[u8]) -> Packet {
    match wire::parse(data) {
        Parsed::Ip(p) => p,
        other => panic!("expected IP, got {other:?}"),
    }
}

fn v6() -> Pkt {
    Pkt::eth(M1, M2).ipv6(A, B)
}

#[test]
fn ipv6_extension_chain_is_skipped() {
    let f = v6()
        .ext(Ext::HopByHop)
        .ext(Ext::Routing)
        .ext(Ext::DestOpts)
        .ext(Ext::Ah)
        .tcp(1000, 80)
        .syn()
        .build();
    let p = ip(&f);
    // 40 + 8 + 8 + 8 + 24 bytes of headers.
    assert_eq!((p.proto, p.l4, p.sport, p.dport), (6, 14 + 88, 1000, 80));
    assert_eq!(p.frag, Frag::None);
}

#[test]
fn ipv6_fragments() {
    let first = v6().frag(0, true).udp(1, 2).payload(&[0; 16]).build();
    let p = ip(&first);
    assert_eq!((p.frag, p.proto, p.sport, p.dport), (Frag::First, 17, 1, 2));
    let later = v6().frag(8, false).proto(17).payload(&[0; 16]).build();
    let p = ip(&later);
    assert_eq!((p.frag, p.proto, p.sport, p.dport), (Frag::Later, 17, 0, 0));
    assert_eq!(p.l4, 14 + 48);
    assert!(!p.has_ports() && !p.has_l4_header());
    // An atomic fragment (offset 0, M = 0, RFC 6946) is a whole packet.
    let atomic = v6().frag(0, false).tcp(5, 6).build();
    let p = ip(&atomic);
    assert_eq!((p.frag, p.sport, p.dport), (Frag::None, 5, 6));
}

#[test]
fn esp_and_no_next_header_end_the_chain() {
    let esp = v6()
        .ext(Ext::DestOpts)
        .proto(proto::ESP)
        .payload(&[9; 24])
        .build();
    let p = ip(&esp);
    assert_eq!(
        (p.proto, p.l4, p.sport, p.dport),
        (proto::ESP, 14 + 48, 0, 0)
    );
    let none = v6().proto(proto::IPV6_NONXT).build();
    assert_eq!(ip(&none).proto, 59);
}

#[test]
fn too_many_or_truncated_extension_headers() {
    let mut b = v6();
    for _ in 0..9 {
        b = b.ext(Ext::DestOpts);
    }
    let f = b.udp(1, 2).build();
    assert_eq!(wire::parse(&f), Parsed::Invalid(WireError::Malformed));
    let mut b = v6();
    for _ in 0..8 {
        b = b.ext(Ext::DestOpts);
    }
    assert_eq!(ip(&b.udp(1, 2).build()).sport, 1);
    // A hop-by-hop header claiming more bytes than the payload length.
    let mut f = v6().ext(Ext::HopByHop).udp(1, 2).build();
    f[14 + 41] = 10;
    assert_eq!(wire::parse(&f), Parsed::Invalid(WireError::Truncated));
}

#[test]
fn ipv4_lengths_and_padding() {
    let f = Pkt::eth(M1, M2)
        .ipv4([198, 18, 0, 1], [198, 18, 1, 1])
        .udp(1, 2)
        .build();
    // Ethernet padding after the IP packet is ignored.
    let mut padded = f.clone();
    padded.resize(60, 0);
    let p = ip(&padded);
    assert_eq!((p.ip_end, p.ip_len()), (f.len(), f.len() - 14));
    // Total length shorter than the header.
    let mut bad = f.clone();
    bad[16] = 0;
    bad[17] = 19;
    fix_ipv4_checksum(&mut bad);
    assert_eq!(wire::parse(&bad), Parsed::Invalid(WireError::Malformed));
    // Total length beyond the frame.
    let mut bad = f.clone();
    bad[17] += 1;
    fix_ipv4_checksum(&mut bad);
    assert_eq!(wire::parse(&bad), Parsed::Invalid(WireError::Truncated));
    // IPv4 EtherType, version 6.
    let mut bad = f.clone();
    bad[14] = 0x65;
    assert_eq!(wire::parse(&bad), Parsed::Invalid(WireError::Malformed));
}

fn fix_ipv4_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let c = wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn transport_header_checks() {
    // UDP length beyond the packet, and below 8.
    let f = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .udp(1, 2)
        .payload(b"abcd")
        .build();
    let mut bad = f.clone();
    bad[39] += 1;
    assert_eq!(wire::parse(&bad), Parsed::Invalid(WireError::Truncated));
    let mut bad = f.clone();
    bad[39] = 7;
    assert_eq!(wire::parse(&bad), Parsed::Invalid(WireError::Malformed));
    // TCP data offset 4.
    let mut t = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .tcp(1, 2)
        .build();
    t[46] = 0x40;
    assert_eq!(wire::parse(&t), Parsed::Invalid(WireError::Malformed));
    // A first fragment too short for its TCP header.
    let short = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .frag(0, true)
        .proto(6)
        .payload(&[0; 12])
        .build();
    assert_eq!(wire::parse(&short), Parsed::Invalid(WireError::Truncated));
    // SCTP ports.
    let s = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .sctp(3868, 3869)
        .build();
    assert_eq!(
        (ip(&s).proto, ip(&s).sport, ip(&s).dport),
        (132, 3868, 3869)
    );
}

#[test]
fn vlan_variants() {
    let one = Pkt::eth(M1, M2).vlan(4095).ipv6(A, B).udp(1, 2).build();
    let p = ip(&one);
    assert_eq!((p.l3, p.vlan, p.vlan_inner), (18, Some(4095), None));
    // Pre-standard 0x9100 outer tag.
    let mut old = Pkt::eth(M1, M2)
        .vlan(7)
        .vlan(8)
        .ipv6(A, B)
        .udp(1, 2)
        .build();
    old[12] = 0x91;
    old[13] = 0x00;
    let p = ip(&old);
    assert_eq!((p.l3, p.vlan, p.vlan_inner), (22, Some(7), Some(8)));
    // A tag carrying ARP is not IP.
    let mut arp = one.clone();
    arp[16] = 0x08;
    arp[17] = 0x06;
    assert_eq!(wire::parse(&arp), Parsed::NotIp);
}

#[test]
fn icmp_classification() {
    for (ty, error) in [
        (0u8, false),
        (3, true),
        (4, true),
        (5, true),
        (8, false),
        (11, true),
        (12, true),
        (13, false),
    ] {
        let f = Pkt::eth(M1, M2)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .icmp(ty, 0, 0)
            .build();
        assert_eq!(ip(&f).icmp_error, error, "ICMP type {ty}");
    }
    for (ty, error) in [
        (1u8, true),
        (2, true),
        (3, true),
        (4, true),
        (128, false),
        (135, false),
        (136, false),
    ] {
        let f = v6().icmp(ty, 0, 0).build();
        let p = ip(&f);
        assert_eq!((p.icmp_type, p.icmp_error), (ty, error), "ICMPv6 type {ty}");
        assert!(p.is_icmp());
    }
    // An ICMP header cut short.
    let mut f = v6().icmp(128, 0, 0).build();
    f.truncate(f.len() - 1);
    f[19] -= 1;
    assert_eq!(wire::parse(&f), Parsed::Invalid(WireError::Truncated));
}

#[test]
fn embedded_packets() {
    let inner6 = Pkt::ip()
        .ipv6(B, A)
        .ext(Ext::HopByHop)
        .tcp(80, 40000)
        .payload(&[0; 100])
        .build();
    // ICMPv6 packet too big quoting the packet with its extension header.
    let f = v6().icmp_error(2, 0, 1280, &inner6).build();
    let p = ip(&f);
    let e = icmp::parse_embedded(&f, &p).unwrap();
    assert_eq!(
        (e.proto, e.sport, e.dport, e.has_ports),
        (6, 80, 40000, true)
    );
    assert_eq!((e.src, e.dst), (IpAddr::V6(B), IpAddr::V6(A)));
    assert_eq!(e.l4, e.l3 + 48);
    // Cut inside the extension header, or before the ports: Truncated.
    for cut in [44, 50, 49] {
        let f = v6().icmp_error(2, 0, 1280, &inner6[..cut]).build();
        let p = ip(&f);
        assert_eq!(
            icmp::parse_embedded(&f, &p),
            Err(WireError::Truncated),
            "cut {cut}"
        );
    }
    // Exactly the 4 port bytes are enough.
    let f = v6().icmp_error(2, 0, 1280, &inner6[..52]).build();
    assert!(icmp::parse_embedded(&f, &ip(&f)).unwrap().has_ports);
    // An embedded ICMP echo has no ports; a later fragment neither.
    let echo = Pkt::ip()
        .ipv4([2, 2, 2, 2], [1, 1, 1, 1])
        .icmp_echo(1, 1)
        .build();
    let f = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .icmp_error(11, 0, 0, &echo)
        .build();
    let e = icmp::parse_embedded(&f, &ip(&f)).unwrap();
    assert_eq!((e.proto, e.has_ports), (1, false));
    let frag = Pkt::ip()
        .ipv4([2, 2, 2, 2], [1, 1, 1, 1])
        .frag(1480, false)
        .proto(17)
        .payload(&[0; 8])
        .build();
    let f = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .icmp_error(3, 4, 1400, &frag)
        .build();
    let e = icmp::parse_embedded(&f, &ip(&f)).unwrap();
    assert_eq!((e.frag, e.has_ports), (Frag::Later, false));
    // A family mismatch inside (IPv6 in an ICMPv4 error) is malformed.
    let f = Pkt::eth(M1, M2)
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
        .icmp_error(3, 3, 0, &inner6[..48])
        .build();
    assert_eq!(icmp::parse_embedded(&f, &ip(&f)), Err(WireError::Malformed));
}
