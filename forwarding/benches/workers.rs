//! The cost of a new connection on one worker against two workers of one director (the
//! shared state: rr's cursor and wrr's position and current weight each one word moved by
//! compare-and-swap, wlc picked without a lock, mh a table; the per-backend counts one row per
//! worker, which every wlc pick reads). Each worker is a thread with its own pipeline on one
//! `Shared`; in every measured round each thread opens the same number of new TCP connections
//! (a SYN never seen: service lookup, schedule, insert, NAT rewrite) at the same time as the
//! other, so the scheduler's mutex and the counts' cache lines are contended as hard as two
//! cores opening connections back to back can contend them — the worst case, not the usual
//! one. (When another process takes one of the cores, the threads run in turns and the
//! contention shrinks; `benches/scaling.rs` counts only what ran at once.)
//!
//! Cases `new-flow-workers/{rr,wrr,wlc,mh}/{1,2}`: scheduler of the one NAT service (3
//! backends, wrr's of weights 4, 3, 2; mh with 1000), 1 or 2 workers. The figure is CPU time
//! per new connection (the threads' `CLOCK_THREAD_CPUTIME_ID` summed, divided by all
//! connections opened): with perfect scaling it is the same for 1 and 2 workers. Steady state
//! as in `pipeline.rs`'s `new-flow`: each worker's clock advances so that connections expire
//! (SYN_RECV, 60 s) as fast as they come, about 1000 per worker in the table.
//!
//! `cargo bench -p xvs-forwarding --bench workers`

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};
use support::{config, ThreadCpu};
use xvs_forwarding::service::Service;
use xvs_forwarding::{Frame, Pipeline, PipelineConfig, Time};

const HEADROOM: usize = 256;
/// Distinct SYNs per worker, sent round and round.
const FRAMES: u32 = 1 << 16;
/// SYN_RECV lasts 60 s: one new connection per 60 ms keeps about 1000 in the table.
const STEP: u64 = 60_000_000;

/// One worker: its pipeline, its frames and its clock.
struct Worker {
    pipe: Pipeline,
    frames: Vec<Vec<u8>>,
    next: usize,
    now: Time,
    buf: Vec<u8>,
}

impl Worker {
    /// Open `n` new connections; the thread's CPU time for them.
    fn open(&mut self, n: u64) -> Duration {
        let cpu = || {
            let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
            Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
        };
        let start = cpu();
        for _ in 0..n {
            self.now.0 += STEP;
            self.pipe.housekeeping(self.now, 64);
            let f = &self.frames[self.next];
            self.next = (self.next + 1) % self.frames.len();
            self.buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            let mut frame = Frame::new(&mut self.buf, HEADROOM, f.len());
            std::hint::black_box(self.pipe.process(self.now, FRONT, &mut frame));
        }
        cpu() - start
    }
}

fn director(svc: &Service, workers: u16) -> Vec<Worker> {
    let cfg = |w: u16| PipelineConfig {
        connections: 1 << 14,
        v6_connections: 16,
        worker: w,
        workers,
        max_backends: 2048,
        ..PipelineConfig::default()
    };
    let services = std::slice::from_ref(svc);
    let shared = Arc::new(Pipeline::shared_for(&cfg(0), services).unwrap());
    shared.apply(services, vec![]).unwrap();
    (0..workers)
        .map(|w| {
            // Worker w's clients: 198.18.128.0/17, ports from 1024 + w * 30000.
            let frames = (0..FRAMES)
                .map(|i| {
                    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i % 32768);
                    let port = 1024 + w * 30000 + (i / 32768) as u16;
                    frame_in(IpAddr::V4(a), IpAddr::V4(VIP4))
                        .tcp(port, 80)
                        .syn()
                        .build()
                })
                .collect();
            let mut wk = Worker {
                pipe: Pipeline::with_shared(cfg(w), shared.clone(), network()),
                frames,
                next: 0,
                now: Time::from_secs(10),
                buf: vec![0u8; HEADROOM + 2048],
            };
            wk.open(2000); // to the steady state
            wk
        })
        .collect()
}

fn bench(c: &mut Criterion<ThreadCpu>) {
    let mut g = c.benchmark_group("new-flow-workers");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for (name, backends) in [("rr", 3), ("wrr", 3), ("wlc", 3), ("mh", 1000)] {
        let mut svc = nat_service(name, backends);
        if name == "wrr" {
            // Weights 4, 3, 2: a cycle of 9 picks over three rounds of cw.
            for (b, w) in svc.backends.iter_mut().zip([4, 3, 2]) {
                b.weight = w;
            }
        }
        for workers in [1u16, 2] {
            let mut ws = director(&svc, workers);
            g.bench_function(format!("{name}/{workers}"), |b| {
                b.iter_custom(|iters| {
                    // Every worker opens `iters` connections at once; the figure per
                    // connection is the summed CPU time over all of them.
                    let total: Duration = std::thread::scope(|s| {
                        let hs: Vec<_> = ws
                            .iter_mut()
                            .map(|w| s.spawn(move || w.open(iters)))
                            .collect();
                        hs.into_iter().map(|h| h.join().unwrap()).sum()
                    });
                    total / u32::from(workers)
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
