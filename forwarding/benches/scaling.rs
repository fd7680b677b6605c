//! Scaling of the pipeline over threads (issue 13): frames forwarded per second of wall time by
//! two pipelines on two threads ÷ by one pipeline on one thread, in process, no I/O. The two
//! pipelines are the workers of one director: one `Shared` (the published snapshot, each
//! service's scheduler state, the per-backend connection counts as shared atomics), one table
//! each (`Pipeline::with_shared`), as `xvs run` builds them.
//!
//! Cases (IPv4 TCP to one NAT service, scheduler wlc over 3 backends, so every new connection
//! reads and writes the shared counts):
//! * `established`: client ACKs of 64 Ki established connections per worker, in random order
//!   (lookup, state, NAT rewrite);
//! * `new-flow`: SYNs of clients never seen (service lookup, schedule, insert, rewrite) with
//!   `housekeeping(now, 64)` per frame, the clock advancing so connections expire as fast as
//!   they come (as `benches/workers.rs`).
//!
//! Each case runs interleaved rounds (1 thread, 2 threads, 1, 2, …); a round forwards
//! [`FRAMES`] frames per thread. Printed per case: the median rate of each, the factor (2-thread
//! ÷ 1-thread rate of wall time, ideal 2.0), its spread over the round pairs, and the CPU the
//! threads got (thread CPU time ÷ wall time, 1.0 per thread when nothing else ran on their
//! cores), with the load average before and after: on a shared 2-core machine the wall-time
//! factor is bounded by what the other processes leave. So also printed: the CPU factor,
//! 2 × (frames per thread-CPU-second with 2 threads ÷ with 1), i.e. the wall-time factor two
//! otherwise idle cores would give if the threads' CPU cost per frame stays as measured: what
//! the shared state (cache lines written by both threads) costs shows up there, other
//! processes do not.
//!
//! The same cases with the two pipelines in two directors (each its own `Shared`) are the
//! control: their factor is what the machine gives two threads with nothing shared (caches,
//! memory bandwidth, the hypervisor), so the shared state costs the difference.
//!
//! `cargo bench -p xvs-forwarding --bench scaling` (`XVS_SCALING_ROUNDS`, default 5).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use nix::time::{clock_gettime, ClockId};
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP};
use xvs_forwarding::{Frame, Method, Pipeline, PipelineConfig, Time, Verdict};
use xvs_schedulers::SchedFlags;

const HEADROOM: usize = 256;
/// Frames per thread per round (`cargo bench`; a test run takes [`TEST_FRAMES`]).
const FRAMES: u64 = 2_000_000;
const TEST_FRAMES: u64 = 20_000;
/// Established connections per worker.
const CONNS: u32 = 1 << 16;
/// New-flow case: one new connection per 60 ms of the worker's clock keeps ~1000 in the table
/// (SYN_RECV lasts 60 s).
const STEP: u64 = 60_000_000;

fn service() -> Service {
    Service {
        key: ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: IpAddr::V4(VIP4),
            port: 80,
        },
        scheduler: "wlc".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: (0..3)
            .map(|i| Backend {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(backend4(11)) + i)),
                port: 8080,
                weight: 1,
                method: Method::Nat,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            })
            .collect(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Established,
    NewFlow,
}

/// One worker: its pipeline, its frames and its clock.
struct Worker {
    pipe: Pipeline,
    frames: Vec<Vec<u8>>,
    next: usize,
    now: Time,
    buf: Vec<u8>,
    case: Case,
    forwarded: u64,
}

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

impl Worker {
    /// Process `n` frames; the thread's CPU time for them.
    fn run(&mut self, n: u64) -> Duration {
        let start = thread_cpu();
        for _ in 0..n {
            if self.case == Case::NewFlow {
                self.now.0 += STEP;
                self.pipe.housekeeping(self.now, 64);
            }
            let f = &self.frames[self.next];
            self.next += 1;
            if self.next == self.frames.len() {
                self.next = 0;
            }
            self.buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            let mut frame = Frame::new(&mut self.buf, HEADROOM, f.len());
            if let Verdict::Tx(_) = self.pipe.process(self.now, FRONT, &mut frame) {
                self.forwarded += 1;
            }
        }
        thread_cpu() - start
    }
}

/// Client `i` of worker `w`: address from 198.18.128.0/17, ports per worker apart.
fn client(w: u16, i: u32) -> (IpAddr, u16) {
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i % 32768);
    (IpAddr::V4(a), 1024 + w * 30000 + (i / 32768) as u16)
}

fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// The two workers: of one director (`shared`), or of two directors with nothing in common
/// (the control: what two threads give here without any shared state).
fn director(case: Case, shared: bool) -> Vec<Worker> {
    let svc = service();
    let cfg = |w: u16| PipelineConfig {
        connections: CONNS + (CONNS >> 2),
        v6_connections: 16,
        worker: w,
        workers: 2,
        ..PipelineConfig::default()
    };
    let services = std::slice::from_ref(&svc);
    let new_shared = || {
        let s = Arc::new(Pipeline::shared_for(&cfg(0), services).expect("shared state"));
        s.apply(services, vec![]).expect("services");
        s
    };
    let one = new_shared();
    (0..2u16)
        .map(|w| {
            let n = match case {
                Case::Established => CONNS,
                Case::NewFlow => 1 << 16,
            };
            let syns: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let (a, port) = client(w, i);
                    frame_in(a, IpAddr::V4(VIP4)).tcp(port, 80).syn().build()
                })
                .collect();
            let mut wk = Worker {
                pipe: Pipeline::with_shared(
                    cfg(w),
                    if shared { one.clone() } else { new_shared() },
                    network(),
                ),
                frames: syns,
                next: 0,
                now: Time::from_secs(10),
                buf: vec![0u8; HEADROOM + 2048],
                case,
                forwarded: 0,
            };
            if case == Case::Established {
                // Open every connection with a SYN and its ACK (to ESTABLISHED, so the SYN
                // defence's embryonic budget is never reached): the measured frames are the
                // client's ACKs in random order.
                let ack = |i: u32| {
                    let (a, port) = client(w, i);
                    frame_in(a, IpAddr::V4(VIP4)).tcp(port, 80).ack().build()
                };
                wk.frames = std::mem::take(&mut wk.frames)
                    .into_iter()
                    .enumerate()
                    .flat_map(|(i, syn)| [syn, ack(i as u32)])
                    .collect();
                wk.run(2 * n as u64);
                let mut acks: Vec<Vec<u8>> = (0..n).map(ack).collect();
                shuffle(&mut acks);
                wk.frames = acks;
                wk.next = 0;
                assert_eq!(
                    wk.pipe.connections().len(),
                    n,
                    "every connection established"
                );
            } else {
                wk.run(2000); // to the steady state
            }
            wk.forwarded = 0;
            wk
        })
        .collect()
}

/// One round with `threads` workers: (frames per second of wall time, thread CPU ÷ wall).
fn round(ws: &mut [Worker], threads: usize, frames: u64) -> (f64, f64) {
    let barrier = Barrier::new(threads);
    let (wall, cpu) = std::thread::scope(|s| {
        let hs: Vec<_> = ws[..threads]
            .iter_mut()
            .map(|w| {
                let b = &barrier;
                s.spawn(move || {
                    b.wait();
                    let t0 = Instant::now();
                    let cpu = w.run(frames);
                    (t0.elapsed(), cpu)
                })
            })
            .collect();
        let r: Vec<(Duration, Duration)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let wall = r.iter().map(|x| x.0).max().unwrap_or_default();
        let cpu: Duration = r.iter().map(|x| x.1).sum();
        (wall, cpu)
    });
    let frames = frames as f64 * threads as f64;
    (
        frames / wall.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64(),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`) passes nothing: then
    // one short round only checks that the bench works.
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("XVS_SCALING_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 5 } else { 1 });
    let frames = if bench { FRAMES } else { TEST_FRAMES };
    println!(
        "pipeline scaling, 1 → 2 threads ({} cores online), {rounds} interleaved rounds of \
         {frames} frames per thread; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    for (name, case, shared) in [
        ("established", Case::Established, true),
        ("new-flow", Case::NewFlow, true),
        (
            "established, two directors (control)",
            Case::Established,
            false,
        ),
        ("new-flow, two directors (control)", Case::NewFlow, false),
    ] {
        let mut ws = director(case, shared);
        let mut one = Vec::new();
        let mut two = Vec::new();
        let mut cpu1 = Vec::new();
        let mut cpu2 = Vec::new();
        let mut factors = Vec::new();
        let mut cpu_factors = Vec::new();
        for r in 0..rounds {
            // Rotate which goes first.
            let (a, b) = if r % 2 == 0 { (1, 2) } else { (2, 1) };
            let ra = round(&mut ws, a, frames);
            let rb = round(&mut ws, b, frames);
            let ((r1, c1), (r2, c2)) = if a == 1 { (ra, rb) } else { (rb, ra) };
            one.push(r1);
            two.push(r2);
            cpu1.push(c1);
            cpu2.push(c2);
            factors.push(r2 / r1);
            cpu_factors.push(2.0 * (r2 / c2) / (r1 / c1));
        }
        for w in &ws {
            assert!(w.forwarded > 0, "{name}: frames were forwarded");
        }
        let f = median(&mut factors.clone());
        let lo = factors.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = factors.iter().cloned().fold(0.0, f64::max);
        let cf = median(&mut cpu_factors.clone());
        let clo = cpu_factors.iter().cloned().fold(f64::INFINITY, f64::min);
        let chi = cpu_factors.iter().cloned().fold(0.0, f64::max);
        println!(
            "{name}: 1 thread {:>6.2} Mfps (CPU {:.2}), 2 threads {:>6.2} Mfps (CPU {:.2}): \
             factor {f:.2} ({lo:.2}–{hi:.2}), CPU factor {cf:.2} ({clo:.2}–{chi:.2})",
            median(&mut one) / 1e6,
            median(&mut cpu1),
            median(&mut two) / 1e6,
            median(&mut cpu2),
        );
    }
    println!("load average after: {}", loadavg());
}
