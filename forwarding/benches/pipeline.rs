//! The whole pipeline per frame (parse → connection lookup → rewrite → verdict), one core.
//!
//! Cases, each with 1 K and 1 M connections in the table:
//! * `established/{nat-in,nat-out,dr,tun,fullnat-in,fullnat-out}`: a TCP ACK of an established
//!   connection, flows visited in a random order (the table's memory access is the cost);
//! * `established-batch/…`: the same frames, 32 at a time through `Pipeline::process_batch`
//!   (at 1 M connections the batch's connection-table slots are prefetched first; at 1 K,
//!   below `PREFETCH_FROM`, the frames are processed in turn); figures are per frame;
//! * `new-flow/nat`: a SYN of a connection never seen, scheduled (rr) and inserted, in steady
//!   state: time advances so that as many connections expire (SYN_RECV, 60 s) as arrive, with the
//!   worker's amortised expiry (64 units of work per frame) — the table stays at the size.
//!
//! Each iteration copies the 54–74-byte frame into the worker's buffer first (a few ns, part of
//! the figure, as a real worker would have the frame already in its UMEM). The frames to send
//! lie one after another in one buffer ([`Frames`], like a receive ring) and are read in order,
//! while the flows they belong to are in random order: the figure is the pipeline's memory
//! traffic, not cache misses on a million scattered heap allocations of the harness.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), as in `benches/wire.rs`:
//! on the shared 2-vCPU machine wall time also counts the time the thread was not running.
//! `XVS_BENCH_WALL=1` measures wall time instead.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod scenario;
mod support;

use std::net::IpAddr;

use common::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use scenario::{client, established, pipeline, run_one, HEADROOM};
use support::{config, ThreadCpu};
use xvs_forwarding::pipeline::BATCH;
use xvs_forwarding::{Frame, Method, Pipeline, Time, Verdict};

/// Frames stored back to back at a fixed stride, as a receive ring holds them.
struct Frames {
    data: Vec<u8>,
    lens: Vec<usize>,
}

const STRIDE: usize = 128;

impl Frames {
    fn new(frames: &[Vec<u8>]) -> Frames {
        let mut data = vec![0u8; frames.len() * STRIDE];
        for (f, d) in frames.iter().zip(data.chunks_exact_mut(STRIDE)) {
            d[..f.len()].copy_from_slice(f);
        }
        Frames {
            data,
            lens: frames.iter().map(Vec::len).collect(),
        }
    }

    fn len(&self) -> usize {
        self.lens.len()
    }

    fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.data[i * STRIDE..i * STRIDE + self.lens[i]]
    }
}

/// Process the next `BATCH` frames of `frames` (from `*i`, wrapping) in one batch.
fn run_batch(
    p: &mut Pipeline,
    now: Time,
    port: xvs_forwarding::PortId,
    frames: &Frames,
    i: &mut usize,
    bufs: &mut [Vec<u8>],
    verdicts: &mut [Verdict],
) {
    let mut lens = [0usize; BATCH];
    for (b, len) in bufs.iter_mut().zip(lens.iter_mut()) {
        *i = (*i + 1) % frames.len();
        let f = frames.get(*i);
        b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        *len = f.len();
    }
    let mut fs: [Frame; BATCH] = {
        let mut it = bufs.iter_mut().zip(lens);
        std::array::from_fn(|_| {
            let (b, len) = it.next().expect("BATCH buffers");
            Frame::new(b, HEADROOM, len)
        })
    };
    p.process_batch(now, port, &mut fs, verdicts);
}

fn bench_established(c: &mut Criterion<ThreadCpu>) {
    for n in [1_000u32, 1_000_000] {
        for m in [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat] {
            if m == Method::FullNat && n > 60_000 {
                // One local address gives 64 K ports: FullNAT at 1 M needs more addresses.
                continue;
            }
            let (mut p, ins, outs) = established(m, n);
            let (ins, outs) = (Frames::new(&ins), Frames::new(&outs));
            // One group per pipeline (criterion borrows `c` per group); same names as one group.
            let mut g = c.benchmark_group("established");
            g.throughput(Throughput::Elements(1));
            let mut buf = vec![0u8; HEADROOM + 2048];
            let name = match m {
                Method::Nat => "nat",
                Method::Dr => "dr",
                Method::Tunnel => "tun",
                Method::FullNat => "fullnat",
            };
            let now = Time::from_secs(2);
            let mut i = 0usize;
            let label = if matches!(m, Method::Nat | Method::FullNat) {
                format!("{name}-in/{n}")
            } else {
                format!("{name}/{n}")
            };
            g.bench_function(&label, |b| {
                b.iter(|| {
                    i = (i + 1) % ins.len();
                    run_one(&mut p, now, FRONT, ins.get(i), &mut buf)
                })
            });
            if !outs.is_empty() {
                let mut i = 0usize;
                g.bench_function(format!("{name}-out/{n}"), |b| {
                    b.iter(|| {
                        i = (i + 1) % outs.len();
                        run_one(&mut p, now, BACK, outs.get(i), &mut buf)
                    })
                });
            }
            g.finish();
            // The same frames in batches.
            let mut gb = c.benchmark_group("established-batch");
            let mut bufs = vec![vec![0u8; HEADROOM + 2048]; BATCH];
            let mut verdicts = [Verdict::Pass; BATCH];
            gb.throughput(Throughput::Elements(BATCH as u64));
            let mut i = 0usize;
            gb.bench_function(label, |b| {
                b.iter(|| run_batch(&mut p, now, FRONT, &ins, &mut i, &mut bufs, &mut verdicts))
            });
            if !outs.is_empty() {
                let mut i = 0usize;
                gb.bench_function(format!("{name}-out/{n}"), |b| {
                    b.iter(|| run_batch(&mut p, now, BACK, &outs, &mut i, &mut bufs, &mut verdicts))
                });
            }
            gb.finish();
        }
    }
}

fn bench_new_flow(c: &mut Criterion<ThreadCpu>) {
    let mut g = c.benchmark_group("new-flow");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u32, 1_000_000] {
        let mut p = pipeline(2 * n + 4096);
        let mut buf = vec![0u8; HEADROOM + 2048];
        // SYN_RECV lasts 60 s: one new connection every 60 s / n keeps n in the table.
        let step = 60_000_000_000 / u64::from(n);
        let mut now = Time::from_secs(10);
        // Fill to the steady state first.
        let mut next = 0u32;
        let syn = |i: u32| {
            let (c, cport) = client(i);
            frame_in(c, IpAddr::V4(VIP4)).tcp(cport, 80).syn().build()
        };
        for _ in 0..n {
            now.0 += step;
            p.housekeeping(now, 64);
            run_one(&mut p, now, FRONT, &syn(next), &mut buf);
            next += 1;
        }
        g.bench_function(format!("nat/{n}"), |b| {
            b.iter_batched(
                || {
                    next = next.wrapping_add(1) % (32768 * 64000);
                    syn(next)
                },
                |f| {
                    now.0 += step;
                    p.housekeeping(now, 64);
                    run_one(&mut p, now, FRONT, &f, &mut buf)
                },
                BatchSize::SmallInput,
            )
        });
        eprintln!(
            "new-flow/{n}: table holds {} connections",
            p.connections().len()
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_established, bench_new_flow
}
criterion_main!(benches);
