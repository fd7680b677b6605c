//! Connection sync, per synced connection, one core (`cargo bench -p xvs-forwarding --bench
//! sync`): what a master spends to publish a connection and a backup to install it, without the
//! sockets (a UDP datagram of ~40 entries costs one `sendto`/`recvfrom` on top).
//!
//! Cases:
//! * `encode` — pack IPv4 TCP entries into version-1 messages of 1472 bytes (`Encoder`), per
//!   entry;
//! * `decode` — decode those messages back (`decode`), per entry;
//! * `install/new` — a backup pipeline installs entries it has not seen (`install_synced`: service
//!   and backend lookup, table insert, counts), per entry, in a table of 1 M;
//! * `install/update` — the same entries again (found, state and timer updated);
//! * `table` — a master's bulk answer: every entry of a 100 K table as `SyncConn`s, per entry.
//!
//! Time is the thread's CPU time, as in the other forwarding benches.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod support;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::{config, ThreadCpu};
use xvs_forwarding::conn::state::tcp;
use xvs_forwarding::sync::{decode, flags, Encoder, SyncConn};
use xvs_forwarding::{Pipeline, PipelineConfig, Time};

const N: u32 = 100_000;

fn entry(i: u32) -> SyncConn {
    let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (i % 32768));
    SyncConn {
        protocol: 6,
        flags: flags::MASQ,
        state: u16::from(tcp::ESTABLISHED),
        client: SocketAddr::new(IpAddr::V4(client), 1024 + (i / 32768) as u16),
        // The common services: TCP 80 is NAT to backend 11, port 8080.
        virt: SocketAddr::new(IpAddr::V4(VIP4), 80),
        dest: SocketAddr::new(IpAddr::V4(backend4(11)), 8080),
        fwmark: 0,
        timeout: Some(900),
        seq: None,
        has_pe: false,
    }
}

fn messages(entries: &[SyncConn]) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(7, 1472);
    let mut out = Vec::new();
    for e in entries {
        if !enc.push(e) {
            out.push(enc.finish());
            assert!(enc.push(e));
        }
    }
    out.push(enc.finish());
    out
}

fn pipeline(capacity: u32) -> Pipeline {
    let cfg = PipelineConfig {
        connections: capacity,
        v6_connections: 1024,
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, &services(), vec![], network()).unwrap()
}

fn bench(c: &mut Criterion<ThreadCpu>) {
    let entries: Vec<SyncConn> = (0..N).map(entry).collect();
    let msgs = messages(&entries);
    let mut g = c.benchmark_group("sync");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.sample_size(10);
    g.bench_function("encode", |b| b.iter(|| black_box(messages(&entries))));
    g.bench_function("decode", |b| {
        let mut out = Vec::with_capacity(N as usize);
        b.iter(|| {
            out.clear();
            for m in &msgs {
                decode(m, 7, &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    g.bench_function("install/new", |b| {
        b.iter_batched_ref(
            || pipeline(1 << 20),
            |p| {
                for e in &entries {
                    p.install_synced(e, 3, Time::from_secs(1)).unwrap();
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let mut p = pipeline(1 << 20);
    for e in &entries {
        p.install_synced(e, 3, Time::from_secs(1)).unwrap();
    }
    g.bench_function("install/update", |b| {
        b.iter(|| {
            for e in &entries {
                p.install_synced(e, 3, Time::from_secs(2)).unwrap();
            }
        })
    });
    g.bench_function("table", |b| b.iter(|| black_box(p.sync_table().len())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
