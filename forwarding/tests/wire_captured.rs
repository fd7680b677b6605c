//! The wire layer on frames captured from a real Linux 6.18 stack: two private network
//! namespaces joined by a veth pair (02:..:0a / 198.18.0.1 / 2001:2::1 sends; 02:..:0b /
//! 198.18.0.2 / 2001:2::2 answers), tx checksum offload off on both ends, captured with an
//! AF_PACKET socket on the answering side. Python sent UDP and TCP to closed ports (the kernel
//! answered ICMP port unreachable and RST) and an ICMP echo request. Deconstruct: parse and check every field.
//! Construct: the testkit builder reproduces the captured bytes exactly.
#![cfg(feature = "testkit")]

use std::net::{IpAddr, Ipv6Addr};

use xvs_forwarding::testkit::{verify_checksums, Pkt};
use xvs_forwarding::wire::{self, icmp, tcp_flags, Frag, Packet, Parsed};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ip(frame: &[u8]) -> Packet {
    match wire::parse(frame) {
        Parsed::Ip(p) => p,
        other => panic!("expected IP, got {other:?}"),
    }
}

const A4: [u8; 4] = [198, 18, 0, 1];
const B4: [u8; 4] = [198, 18, 0, 2];
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
const MA: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const MB: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];

const UDP4: &str = concat!(
    "02000000000b02000000000a08004500002511c4400040119cdcc6120001c6120002e682000900115daf68656c6c6f20",
    "787673",
);

const ICMP4_PORT_UNREACH: &str = concat!(
    "02000000000a02000000000b080045c00041fd2c00004001f0a7c6120002c612000103038947000000004500002511c4",
    "400040119cdcc6120001c6120002e682000900115daf68656c6c6f20787673",
);

const UDP6: &str = concat!(
    "02000000000b02000000000a86dd6004e2b8001411402001000200000000000000000000000120010002000000000000",
    "000000000002ecbd000900142d3768656c6c6f20787673207636",
);

const ICMP6_PORT_UNREACH: &str = concat!(
    "02000000000a02000000000b86dd6003ea6200443a402001000200000000000000000000000220010002000000000000",
    "00000000000101046a88000000006004e2b8001411402001000200000000000000000000000120010002000000000000",
    "000000000002ecbd000900142d3768656c6c6f20787673207636",
);

const TCP4_SYN: &str = concat!(
    "02000000000b02000000000a08004500003c41ed400040066ca7c6120001c6120002e074000a7d917f9900000000a002",
    "faf0b14c0000020405b40402080ab35c7e91000000000103030a",
);

const TCP4_RST: &str = concat!(
    "02000000000a02000000000b080045000028000040004006aea8c6120002c6120001000ae074000000007d917f9a5014",
    "000045fe0000",
);

const TCP6_SYN: &str = concat!(
    "02000000000b02000000000a86dd600cac44002806402001000200000000000000000000000120010002000000000000",
    "000000000002800a000a79d5025c00000000a002fd20feb10000020405a00402080a09c5062b000000000103030a",
);

const TCP6_RST: &str = concat!(
    "02000000000a02000000000b86dd60017ab4001406402001000200000000000000000000000220010002000000000000",
    "000000000001000a800a0000000079d5025d5014000073810000",
);

const ICMP4_ECHO: &str = concat!(
    "02000000000b02000000000a080045000024ba4940004001f467c6120001c61200020800eb47424200017876732d7069",
    "6e67",
);

const ICMP4_ECHO_REPLY: &str = concat!(
    "02000000000a02000000000b080045000024fd7c00004001f134c6120002c61200010000f347424200017876732d7069",
    "6e67",
);

const ALL: [&str; 10] = [
    UDP4,
    ICMP4_PORT_UNREACH,
    UDP6,
    ICMP6_PORT_UNREACH,
    TCP4_SYN,
    TCP4_RST,
    TCP6_SYN,
    TCP6_RST,
    ICMP4_ECHO,
    ICMP4_ECHO_REPLY,
];

#[test]
fn captured_checksums_verify() {
    for f in ALL {
        verify_checksums(&hex(f)).unwrap();
    }
}

#[test]
fn udp4() {
    let f = hex(UDP4);
    let p = ip(&f);
    assert_eq!((p.l3, p.l4, p.ip_end, f.len()), (14, 34, 51, 51));
    assert_eq!((p.src, p.dst), (IpAddr::from(A4), IpAddr::from(B4)));
    assert_eq!((p.proto, p.sport, p.dport), (17, 59010, 9));
    assert_eq!((p.ttl, p.tos, p.df, p.frag), (64, 0, true, Frag::None));
    assert_eq!((p.vlan, p.tcp_flags, p.icmp_error), (None, 0, false));
    let built = Pkt::eth(MA, MB)
        .ipv4(A4, B4)
        .id(0x11c4)
        .df(true)
        .udp(59010, 9)
        .payload(b"hello xvs")
        .build();
    assert_eq!(built, f);
}

#[test]
fn icmp4_port_unreachable() {
    let f = hex(ICMP4_PORT_UNREACH);
    let p = ip(&f);
    assert_eq!((p.src, p.dst), (IpAddr::from(B4), IpAddr::from(A4)));
    assert_eq!(
        (p.proto, p.icmp_type, p.icmp_code, p.icmp_error),
        (1, 3, 3, true)
    );
    assert_eq!((p.sport, p.dport, p.tos, p.df), (0, 0, 0xc0, false));
    let e = icmp::parse_embedded(&f, &p).unwrap();
    assert_eq!((e.l3, e.l4, e.end), (42, 62, f.len()));
    assert_eq!(
        (e.proto, e.sport, e.dport, e.has_ports),
        (17, 59010, 9, true)
    );
    assert_eq!((e.src, e.dst), (IpAddr::from(A4), IpAddr::from(B4)));
    // The kernel quoted the whole UDP datagram (it fits 576 bytes).
    assert_eq!(&f[e.l3..], &hex(UDP4)[14..]);
    let built = Pkt::eth(MB, MA)
        .ipv4(B4, A4)
        .tos(0xc0)
        .id(0xfd2c)
        .icmp_error(3, 3, 0, &hex(UDP4)[14..])
        .build();
    assert_eq!(built, f);
}

#[test]
fn udp6() {
    let f = hex(UDP6);
    let p = ip(&f);
    assert_eq!((p.l3, p.l4, p.ip_end, f.len()), (14, 54, 74, 74));
    assert_eq!((p.src, p.dst), (IpAddr::V6(A6), IpAddr::V6(B6)));
    assert_eq!((p.proto, p.sport, p.dport, p.ttl), (17, 60605, 9, 64));
    let built = Pkt::eth(MA, MB)
        .ipv6(A6, B6)
        .flow_label(0x4e2b8)
        .udp(60605, 9)
        .payload(b"hello xvs v6")
        .build();
    assert_eq!(built, f);
}

#[test]
fn icmp6_port_unreachable() {
    let f = hex(ICMP6_PORT_UNREACH);
    let p = ip(&f);
    assert_eq!(
        (p.proto, p.icmp_type, p.icmp_code, p.icmp_error),
        (58, 1, 4, true)
    );
    let e = icmp::parse_embedded(&f, &p).unwrap();
    assert_eq!((e.l3, e.l4), (62, 102));
    assert_eq!((e.proto, e.sport, e.dport), (17, 60605, 9));
    assert_eq!((e.src, e.dst), (IpAddr::V6(A6), IpAddr::V6(B6)));
    let built = Pkt::eth(MB, MA)
        .ipv6(B6, A6)
        .flow_label(0x3ea62)
        .icmp_error(1, 4, 0, &hex(UDP6)[14..])
        .build();
    assert_eq!(built, f);
}

#[test]
fn tcp4_syn_with_options_and_rst() {
    let f = hex(TCP4_SYN);
    let p = ip(&f);
    assert_eq!((p.proto, p.sport, p.dport), (6, 57460, 10));
    assert_eq!(p.tcp_flags, tcp_flags::SYN);
    assert_eq!((p.l4, p.ip_end), (34, 74)); // 40-byte TCP header with options
    let r = hex(TCP4_RST);
    let p = ip(&r);
    assert_eq!((p.sport, p.dport), (10, 57460));
    assert_eq!(p.tcp_flags, tcp_flags::RST | tcp_flags::ACK);
    let built = Pkt::eth(MB, MA)
        .ipv4(B4, A4)
        .id(0)
        .df(true)
        .tcp(10, 57460)
        .rst()
        .ack()
        .seq_ack(0, 0x7d91_7f9a)
        .window(0)
        .build();
    assert_eq!(built, r);
}

#[test]
fn tcp6_syn_and_rst() {
    let f = hex(TCP6_SYN);
    let p = ip(&f);
    assert_eq!((p.proto, p.sport, p.dport), (6, 32778, 10));
    assert_eq!((p.tcp_flags, p.l4, p.ip_end), (tcp_flags::SYN, 54, 94));
    let r = hex(TCP6_RST);
    let p = ip(&r);
    assert_eq!((p.proto, p.sport, p.dport), (6, 10, 32778));
    assert_eq!(p.tcp_flags, tcp_flags::RST | tcp_flags::ACK);
    let built = Pkt::eth(MB, MA)
        .ipv6(B6, A6)
        .flow_label(0x17ab4)
        .tcp(10, 32778)
        .rst()
        .ack()
        .seq_ack(0, 0x79d5_025d)
        .window(0)
        .build();
    assert_eq!(built, r);
}

#[test]
fn icmp4_echo() {
    let f = hex(ICMP4_ECHO);
    let p = ip(&f);
    assert_eq!(
        (p.proto, p.icmp_type, p.icmp_code, p.icmp_error),
        (1, 8, 0, false)
    );
    assert!(icmp::parse_embedded(&f, &p).is_err());
    let built = Pkt::eth(MA, MB)
        .ipv4(A4, B4)
        .id(0xba49)
        .df(true)
        .icmp_echo(0x4242, 1)
        .payload(b"xvs-ping")
        .build();
    assert_eq!(built, f);
    let r = hex(ICMP4_ECHO_REPLY);
    assert_eq!(ip(&r).icmp_type, 0);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for f in ALL {
        let f = hex(f);
        for n in 0..f.len() {
            match wire::parse(&f[..n]) {
                Parsed::Invalid(_) => {}
                other => panic!("{n} of {} bytes parsed as {other:?}", f.len()),
            }
        }
    }
}
