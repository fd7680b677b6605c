//! Peak memory of a connection table holding 10 M IPv4 connections (issue 13: ≤ 800 MiB VmHWM).
//! Its own test binary, so that the process's peak (`VmHWM` of `/proc/self/status`) is the
//! table's and the harness's only. Ignored (a measurement: 10 M inserts, ~1 GB of memory
//! touched); run it with
//! `cargo test --release -p xvs-forwarding --test conn_memory -- --ignored --nocapture`.
//!
//! The table is sized as `xvs-bench run`'s memory case sizes the director's (capacity = 1.25 ×
//! the connections held) and filled as a SYN flood fills it: distinct clients, NAT (two index
//! keys each), every connection embryonic (SYN_RECV) and so in the embryonic ring.

use std::net::{IpAddr, Ipv4Addr};

use xvs_forwarding::conn::state::tcp;
use xvs_forwarding::conn::*;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

#[test]
#[ignore = "measurement: fills 10 M connections (~1 GB); run with --release -- --ignored --nocapture"]
fn ten_million_ipv4_connections_fit_in_800_mib() {
    const HELD: u32 = 10_000_000;
    let capacity = HELD + HELD / 4;
    let base = status_kib("VmHWM:");
    let mut t = ConnTable::new(&ConnConfig {
        capacity,
        v6_capacity: capacity,
        backends: 64,
        seed: 0x5eed,
    });
    let allocated = status_kib("VmHWM:");
    let now = Time::from_secs(10);
    let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    for i in 0..HELD {
        // Distinct client address and port per connection, as a SYN flood from random sources.
        let client = IpAddr::V4(Ipv4Addr::from(0xC612_0000u32.wrapping_add(i >> 4)));
        let c = NewConn {
            proto: 6,
            client,
            cport: 1024 + (i & 15) as u16,
            vaddr: vip,
            vport: 80,
            daddr: IpAddr::V4(Ipv4Addr::new(198, 19, 0, (i % 64) as u8)),
            dport: 8080,
            local: None,
            backend: BackendId(i % 64),
            service: 0,
            method: Method::Nat,
            control: None,
        };
        let id = t.insert(&c, now).expect("room for every connection");
        t.on_packet(id, Direction::In, tcp::FLAG_SYN, now);
    }
    assert_eq!(t.len(), HELD);
    assert_eq!(t.embryonic(), HELD);
    let hwm = status_kib("VmHWM:");
    println!(
        "capacity {capacity}, held {HELD}: table {} MiB allocated ({} B per entry of capacity, \
         {:.1} B per connection held); VmHWM {} MiB before the table, {} MiB after allocating \
         it, {} MiB after filling it",
        t.bytes() >> 20,
        t.bytes_per_entry(),
        t.bytes() as f64 / f64::from(HELD),
        base >> 10,
        allocated >> 10,
        hwm >> 10,
    );
    assert!(hwm <= 800 << 10, "VmHWM {} MiB > 800 MiB", hwm >> 10);
}
