//! Scheduler benchmarks.
//!
//! Cases:
//! * `pick/<scheduler>/<n>`: one `Scheduler::pick` for every scheduler of the factory (rr, wrr,
//!   lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf, twos, maglev) with n = 3, 100 and 1000
//!   backends of weights 1..=4, connection counts that differ per backend (so least-connection
//!   schedulers walk the whole list), no backend OVERLOADed, and a rotating set of 1024 flows
//!   (1024 client addresses and ports, 64 destination addresses so that lblc / lblcr hit their
//!   caches). mh and sh run with their fallback and port flags.
//! * `rebuild/mh/1000`, `rebuild/maglev/1000`: one full table build (`update` with `Init`) for
//!   1000 backends (mh: M = 4093; maglev: 65537 slots).
//!
//! Quick run: `cargo bench -p xvs-schedulers --bench pick -- --warm-up-time 1 --measurement-time 2`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use xvs_schedulers::{
    new_scheduler, BackendId, BackendLoad, BackendView, Change, Flow, Load, Maglev, MaglevHashing,
    SchedFlags, Scheduler, Time, SCHEDULER_NAMES,
};

/// Per-backend counts in flat arrays indexed by id, like the connection tables keep them.
struct Counts {
    active: Vec<u32>,
    inactive: Vec<u32>,
}

impl Load for Counts {
    fn active(&self, id: BackendId) -> u32 {
        self.active.get(id.0 as usize).copied().unwrap_or(0)
    }
    fn inactive(&self, id: BackendId) -> u32 {
        self.inactive.get(id.0 as usize).copied().unwrap_or(0)
    }
    fn overloaded(&self, _id: BackendId) -> bool {
        false
    }
    fn backend_load(&self, id: BackendId) -> BackendLoad {
        let i = id.0 as usize;
        match (self.active.get(i), self.inactive.get(i)) {
            (Some(&active), Some(&inactive)) => BackendLoad {
                active,
                inactive,
                overloaded: false,
            },
            _ => BackendLoad::default(),
        }
    }
}

fn backends(n: u32) -> Vec<BackendView> {
    (0..n)
        .map(|i| BackendView {
            id: BackendId(i),
            addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            port: 80,
            weight: 1 + i % 4,
            last_weight: 1 + i % 4,
        })
        .collect()
}

fn load(n: u32) -> Counts {
    Counts {
        // Spread so that wlc has to compare everything and `busy` (lblc) rarely triggers.
        active: (0..n).map(|i| 1 + (i * 7919) % 13).collect(),
        inactive: (0..n).map(|i| (i * 104_729) % 97).collect(),
    }
}

fn flows() -> Vec<Flow> {
    (0..1024u32)
        .map(|k| Flow {
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::from(
                0xc0a8_0000u32.wrapping_add(k.wrapping_mul(2_654_435_761)),
            )),
            sport: 1024 + (k * 37 % 60_000) as u16,
            dst: IpAddr::V4(Ipv4Addr::from(0xc612_0000 + k % 64)),
            dport: 80,
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let flows = flows();
    let mut g = c.benchmark_group("pick");
    for n in [3u32, 100, 1000] {
        let list = backends(n);
        let counts = load(n);
        for name in SCHEDULER_NAMES {
            let flags = SchedFlags::from_bits(if name == "sh" || name == "mh" {
                0x18
            } else {
                0
            });
            let mut s = new_scheduler(name, &flags).expect("known scheduler");
            s.update(&list, Change::Init);
            s.started(Time(0));
            let mut i = 0usize;
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(s.pick(black_box(&flows[i]), &list, &counts, Time(1_000)))
                })
            });
        }
    }
    g.finish();
}

fn bench_rebuild(c: &mut Criterion) {
    let list = backends(1000);
    let mut g = c.benchmark_group("rebuild");
    let mut mh = MaglevHashing::new(false, false);
    g.bench_function("mh/1000", |b| {
        b.iter(|| mh.update(black_box(&list), Change::Init))
    });
    let mut mg = Maglev::new();
    g.bench_function("maglev/1000", |b| {
        b.iter(|| Scheduler::update(&mut mg, black_box(&list), Change::Init))
    });
    g.finish();
}

criterion_group!(benches, bench_pick, bench_rebuild);
criterion_main!(benches);
