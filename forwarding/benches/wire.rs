//! Wire-layer micro-benchmarks (criterion). Cases:
//! * `parse/ipv4_udp_64`: parse a 64-byte Ethernet/IPv4/UDP frame (IPv4 checksum verified).
//! * `parse/ipv6_tcp_74`: parse the smallest Ethernet/IPv6/TCP frame (74 bytes; 64 cannot hold
//!   the headers).
//! * `nat/ipv4_udp_set_dst`, `nat/ipv6_tcp_set_dst`: the NAT-in rewrite alone (destination
//!   address + port, IPv4 header and L4 checksums patched incrementally), alternating between
//!   two backends on the same frame so no copy is measured.
//! * `nat/ipv4_udp_full`: copy the 64-byte frame into the buffer, parse, TTL − 1, set_dst,
//!   new Ethernet header — what the pipeline does for an established NAT flow, minus the
//!   lookup. `baseline/copy_parse_64` is the copy + parse part alone.
//! * `tun/ipv4_in_ipv4`: copy, parse, TTL − 1, IPIP encapsulation with a new Ethernet
//!   header (frame grows into the headroom).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on the
//! shared 2-vCPU machines the worker competes with builds and generators, and wall time then
//! counts the time the thread was not running (3× at load 6). CPU time is the cost per packet
//! the design reports; `XVS_BENCH_WALL=1` measures wall time instead.
//!
//! Run: `cargo bench -p xvs-forwarding --bench wire`.

mod support;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use support::{config, ThreadCpu};
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::wire::{self, rewrite, Link, Packet, Parsed, Tunnel};
use xvs_forwarding::Frame;

const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ipv4_udp_64() -> Vec<u8> {
    let f = Pkt::eth(M1, M2)
        .ipv4([198, 18, 0, 1], [198, 18, 1, 1])
        .df(true)
        .udp(40000, 53)
        .payload(&[0x5a; 22])
        .build();
    assert_eq!(f.len(), 64);
    f
}

fn ipv6_tcp_74() -> Vec<u8> {
    let f = Pkt::eth(M1, M2)
        .ipv6(
            Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 1),
        )
        .tcp(40000, 80)
        .ack()
        .build();
    assert_eq!(f.len(), 74);
    f
}

fn packet(data: &[u8]) -> Packet {
    match wire::parse(data) {
        Parsed::Ip(p) => p,
        _ => panic!("bench frame does not parse"),
    }
}

fn bench_parse(c: &mut Criterion<ThreadCpu>) {
    let mut g = c.benchmark_group("parse");
    let v4 = ipv4_udp_64();
    g.bench_function("ipv4_udp_64", |b| b.iter(|| wire::parse(black_box(&v4))));
    let v6 = ipv6_tcp_74();
    g.bench_function("ipv6_tcp_74", |b| b.iter(|| wire::parse(black_box(&v6))));
    g.finish();
}

fn bench_nat(c: &mut Criterion<ThreadCpu>) {
    let mut g = c.benchmark_group("nat");
    let backends4 = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 2, 2)),
    ];
    let mut f4 = ipv4_udp_64();
    let mut p4 = packet(&f4);
    let mut i = 0usize;
    g.bench_function("ipv4_udp_set_dst", |b| {
        b.iter(|| {
            i ^= 1;
            rewrite::set_dst(black_box(&mut f4), &mut p4, backends4[i], 5353 + i as u16)
        })
    });
    let backends6 = [
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 2)),
    ];
    let mut f6 = ipv6_tcp_74();
    let mut p6 = packet(&f6);
    g.bench_function("ipv6_tcp_set_dst", |b| {
        b.iter(|| {
            i ^= 1;
            rewrite::set_dst(black_box(&mut f6), &mut p6, backends6[i], 8080 + i as u16)
        })
    });
    let template = ipv4_udp_64();
    let mut buf = [0u8; 256];
    let link = Link {
        src: M2,
        dst: [2, 0, 0, 0, 0, 3],
        vlan: None,
    };
    g.bench_function("ipv4_udp_full", |b| {
        b.iter(|| {
            buf[64..128].copy_from_slice(black_box(&template));
            let mut f = Frame::new(&mut buf, 64, 64);
            let Parsed::Ip(mut p) = wire::parse(f.data()) else {
                return Err(wire::WireError::Malformed);
            };
            rewrite::dec_ttl(f.data_mut(), &mut p)?;
            rewrite::set_dst(f.data_mut(), &mut p, backends4[0], 5353)?;
            rewrite::set_link(&mut f, &mut p, &link)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("baseline");
    g.bench_function("copy_parse_64", |b| {
        b.iter(|| {
            buf[64..128].copy_from_slice(black_box(&template));
            let f = Frame::new(&mut buf, 64, 64);
            wire::parse(f.data())
        })
    });
    g.finish();
}

fn bench_tun(c: &mut Criterion<ThreadCpu>) {
    let mut g = c.benchmark_group("tun");
    let template = ipv4_udp_64();
    let mut buf = [0u8; 256];
    let tun = Tunnel {
        src: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 254)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
        id: 0,
        mtu: 1500,
    };
    let link = Link {
        src: M2,
        dst: [2, 0, 0, 0, 0, 3],
        vlan: None,
    };
    g.bench_function("ipv4_in_ipv4", |b| {
        b.iter(|| {
            buf[64..128].copy_from_slice(black_box(&template));
            let mut f = Frame::new(&mut buf, 64, 64);
            let Parsed::Ip(mut p) = wire::parse(f.data()) else {
                return Err(wire::WireError::Malformed);
            };
            rewrite::dec_ttl(f.data_mut(), &mut p)?;
            rewrite::encap(&mut f, &p, &tun, &link)?;
            Ok(f.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_nat, bench_tun
}
criterion_main!(benches);
