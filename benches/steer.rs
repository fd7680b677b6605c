//! Cost of cross-worker steering per frame (criterion): `steer::owner` on the frames a worker
//! sees, with 4 workers and a small configuration (2 VIPs, 1 VIP network, 4 backends, 1 local
//! address). Cases:
//! * `owner/v4_tcp_to_vip`: a client's TCP segment to a VIP (the common case).
//! * `owner/v4_tcp_from_backend`: a NAT reply from a backend.
//! * `owner/v4_udp_to_local`: a FullNAT reply to a local address.
//! * `owner/v6_tcp_to_vip`: IPv6 TCP to a VIP.
//! * `owner/v4_icmp_error`: an ICMP error quoting a packet the director sent.
//! * `owner/v4_other`: IPv4 to an address the director does not steer (stays put).
//!
//! Run: `cargo bench --bench steer`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use xvs::worker::{steer, DirectorTargets};
use xvs_forwarding::testkit::Pkt;

const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn targets() -> DirectorTargets {
    DirectorTargets {
        vips: vec![
            "198.18.10.1".parse().unwrap(),
            "2001:2:0:10::1".parse().unwrap(),
        ],
        vip_prefixes: vec![("198.18.20.0".parse().unwrap(), 23)],
        backends: (11..15)
            .map(|i| format!("198.18.3.{i}").parse().unwrap())
            .collect(),
        locals: vec!["198.18.3.100".parse().unwrap()],
        ..DirectorTargets::default()
    }
}

fn bench(c: &mut Criterion) {
    let sets = steer::SteerSets::new(&targets());
    let client = Ipv4Addr::new(198, 18, 1, 10);
    let vip = Ipv4Addr::new(198, 18, 10, 1);
    let b1 = Ipv4Addr::new(198, 18, 3, 11);
    let to_vip = Pkt::eth(M1, M2)
        .ipv4(client, vip)
        .tcp(40000, 80)
        .ack()
        .payload(&[0; 6])
        .build();
    let reply = Pkt::eth(M1, M2)
        .ipv4(b1, client)
        .tcp(80, 40000)
        .ack()
        .payload(&[0; 6])
        .build();
    let local = Pkt::eth(M1, M2)
        .ipv4(b1, Ipv4Addr::new(198, 18, 3, 100))
        .udp(53, 1029)
        .payload(&[0; 18])
        .build();
    let v6 = Pkt::eth(M1, M2)
        .ipv6(
            "2001:2:0:1::10".parse::<Ipv6Addr>().unwrap(),
            "2001:2:0:10::1".parse::<Ipv6Addr>().unwrap(),
        )
        .tcp(40000, 80)
        .ack()
        .build();
    let quoted = Pkt::ip().ipv4(vip, client).tcp(80, 40000).ack().build();
    let icmp = Pkt::eth(M1, M2)
        .ipv4(Ipv4Addr::new(198, 18, 1, 1), vip)
        .icmp_error(3, 4, 1400, &quoted)
        .build();
    let other = Pkt::eth(M1, M2)
        .ipv4(client, Ipv4Addr::new(198, 18, 99, 9))
        .udp(4000, 53)
        .payload(&[0; 18])
        .build();
    let mut g = c.benchmark_group("owner");
    for (name, f) in [
        ("v4_tcp_to_vip", &to_vip),
        ("v4_tcp_from_backend", &reply),
        ("v4_udp_to_local", &local),
        ("v6_tcp_to_vip", &v6),
        ("v4_icmp_error", &icmp),
        ("v4_other", &other),
    ] {
        assert!(
            name == "v4_other" || steer::owner(f, &sets, 4).is_some(),
            "{name} is steered"
        );
        g.bench_function(name, |b| {
            b.iter(|| steer::owner(black_box(f), black_box(&sets), black_box(4)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
