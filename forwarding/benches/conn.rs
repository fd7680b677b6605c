//! Connection-table benches (`cargo bench -p xvs-forwarding --bench conn`).
//!
//! Cases:
//! * `lookup_hit/1k`, `lookup_hit/1m` — established IPv4 TCP connections, looked up by their
//!   inbound tuple in a random order (a precomputed shuffled sequence, so every lookup touches a
//!   random index slot and entry: with 1 M entries that is a cache and TLB miss each).
//! * `lookup_hit_prefetch32/1m` — the same in batches of 32: `prefetch` every tuple of the batch,
//!   then look them up (what a worker does per rx batch). Time per lookup.
//! * `packet/1m` — lookup + `on_packet` (ACK on an established connection: state stays, timer
//!   re-armed) + `get`, the whole per-packet table cost of an established flow.
//! * `packet_prefetch32/1m` — the same per-packet path for a batch of 32: `prefetch` all, then
//!   lookup + `on_packet` + `get` each (time per packet).
//! * `lookup_miss/1m` — tuples that are not in the table.
//! * `hashmap_baseline/1m` — the same random hits in a `std::collections::HashMap<Tuple, u32>`
//!   (SipHash, derived `Hash`): the reference the purpose-built index must beat, in the same run.
//! * `churn/64k` — steady state of a 64 K-entry table: insert a new connection, account a SYN and a
//!   RST (CLOSE, 10 s), advance time and run a budgeted sweep; time per connection.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xvs_forwarding::conn::*;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn conn_for(i: u32) -> NewConn {
    NewConn {
        proto: 6,
        client: IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (i >> 4))),
        cport: 1024 + (i & 0xF) as u16 * 3000,
        vaddr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
        vport: 443,
        daddr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, (i % 16) as u8)),
        dport: 8443,
        local: None,
        backend: BackendId(i % 16),
        service: 0,
        method: Method::Nat,
        control: None,
    }
}

fn tuple_of(c: &NewConn) -> Tuple {
    Tuple {
        proto: c.proto,
        src: c.client,
        sport: c.cport,
        dst: c.vaddr,
        dport: c.vport,
    }
}

/// A table holding `n` established connections, and their tuples in a random order.
fn filled(n: u32) -> (ConnTable, Vec<Tuple>) {
    let mut t = ConnTable::new(&ConnConfig {
        capacity: n + n / 8,
        v6_capacity: 1024,
        backends: 16,
        seed: 0x5EED,
    });
    let now = Time::from_secs(10);
    let mut tuples = Vec::with_capacity(n as usize);
    for i in 0..n {
        let c = conn_for(i);
        let id = t.insert(&c, now).expect("room");
        t.on_packet(id, Direction::In, 0x02, now);
        t.on_packet(id, Direction::In, 0x10, now);
        tuples.push(tuple_of(&c));
    }
    let mut r = rng(42);
    for i in (1..tuples.len()).rev() {
        let j = (r() % (i as u64 + 1)) as usize;
        tuples.swap(i, j);
    }
    (t, tuples)
}

fn lookups(c: &mut Criterion) {
    let now = Time::from_secs(11);
    let mut g = c.benchmark_group("lookup_hit");
    g.throughput(Throughput::Elements(1));
    for (name, n) in [("1k", 1_000u32), ("1m", 1_000_000)] {
        let (mut t, tuples) = filled(n);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let tu = &tuples[i];
                i = if i + 1 == tuples.len() { 0 } else { i + 1 };
                black_box(t.lookup(black_box(tu), now))
            })
        });
    }
    g.finish();

    let (mut t, tuples) = filled(1_000_000);
    let mut g = c.benchmark_group("lookup_hit_prefetch32");
    g.throughput(Throughput::Elements(32));
    let mut i = 0usize;
    g.bench_function("1m", |b| {
        b.iter(|| {
            if i + 32 > tuples.len() {
                i = 0;
            }
            let batch = &tuples[i..i + 32];
            i += 32;
            for tu in batch {
                t.prefetch(tu);
            }
            let mut hits = 0u32;
            for tu in batch {
                hits += t.lookup(tu, now).is_some() as u32;
            }
            black_box(hits)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut ms = 11_000u64;
    g.bench_function("1m", |b| {
        b.iter(|| {
            let tu = &tuples[i];
            i = if i + 1 == tuples.len() { 0 } else { i + 1 };
            ms += 1;
            let now = Time::from_millis(ms / 64);
            if let Some((id, dir)) = t.lookup(tu, now) {
                t.on_packet(id, dir, 0x10, now);
                black_box(t.get(id));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("packet_prefetch32");
    g.throughput(Throughput::Elements(32));
    let mut i = 0usize;
    g.bench_function("1m", |b| {
        b.iter(|| {
            if i + 32 > tuples.len() {
                i = 0;
            }
            let batch = &tuples[i..i + 32];
            i += 32;
            ms += 32;
            let now = Time::from_millis(ms / 64);
            for tu in batch {
                t.prefetch(tu);
            }
            for tu in batch {
                if let Some((id, dir)) = t.lookup(tu, now) {
                    t.on_packet(id, dir, 0x10, now);
                    black_box(t.get(id));
                }
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hashmap_baseline");
    g.throughput(Throughput::Elements(1));
    let map: std::collections::HashMap<Tuple, u32> = tuples
        .iter()
        .enumerate()
        .map(|(i, tu)| (*tu, i as u32))
        .collect();
    let mut i = 0usize;
    g.bench_function("1m", |b| {
        b.iter(|| {
            let tu = &tuples[i];
            i = if i + 1 == tuples.len() { 0 } else { i + 1 };
            black_box(map.get(black_box(tu)))
        })
    });
    drop(map);
    g.finish();

    let mut g = c.benchmark_group("lookup_miss");
    g.throughput(Throughput::Elements(1));
    let misses: Vec<Tuple> = tuples
        .iter()
        .take(1 << 16)
        .map(|tu| Tuple {
            sport: tu.sport ^ 1,
            ..*tu
        })
        .collect();
    let mut i = 0usize;
    g.bench_function("1m", |b| {
        b.iter(|| {
            let tu = &misses[i];
            i = if i + 1 == misses.len() { 0 } else { i + 1 };
            black_box(t.lookup(black_box(tu), now))
        })
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    g.throughput(Throughput::Elements(1));
    let mut t = ConnTable::new(&ConnConfig {
        capacity: 1 << 16,
        v6_capacity: 0,
        backends: 16,
        seed: 7,
    });
    let mut r = rng(9);
    let mut us = 0u64;
    // One new connection every 250 µs of simulated time, living 10 s (SYN, then RST → CLOSE):
    // about 40 K live entries in a 64 K table once warm.
    let mut one = move || {
        us += 250;
        let now = Time(us * 1000);
        let c = conn_for(r() as u32);
        let tu = tuple_of(&c);
        match t.lookup(&tu, now) {
            Some((id, dir)) => {
                t.on_packet(id, dir, 0x10, now);
            }
            None => {
                if let Some(id) = t.insert(&c, now) {
                    t.on_packet(id, Direction::In, 0x02, now);
                    t.on_packet(id, Direction::In, 0x04, now);
                }
            }
        }
        t.expire(now, 16);
        t.len()
    };
    for _ in 0..200_000 {
        one();
    }
    g.bench_function("64k", |b| b.iter(|| black_box(one())));
    g.finish();
}

criterion_group!(benches, lookups, churn);
criterion_main!(benches);
