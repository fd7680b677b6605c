//! A profiling loop for the established-flow path: `n` NAT connections, then `iters` client
//! ACKs of them in a random order (each connection once per round; the frames lie back to back
//! in one buffer in that order, like a receive ring, so the harness adds no cache misses of its
//! own) through the pipeline. Run under `perf record` to see where the time goes:
//! `cargo run --release -p xvs-forwarding --example profile_established -- 1000 20000000`.
//! A third argument `batch` sends them 32 at a time through `Pipeline::process_batch`;
//! `new` sends `iters` SYNs of new clients instead, in the steady state of the `new-flow` bench
//! (as many connections expire as arrive, `housekeeping(now, 64)` per frame, `n` in the table;
//! the figure includes writing each SYN's client address and port into a copy of a template).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use nix::time::{clock_gettime, ClockId};
use xvs_forwarding::pipeline::BATCH;
use xvs_forwarding::wire::{self, rewrite, Parsed};
use xvs_forwarding::{Frame, Pipeline, PipelineConfig, Time, Verdict};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let iters: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let mode = args.next();
    let batch = mode.as_deref() == Some("batch");
    if mode.as_deref() == Some("new") {
        return new_flows(n, iters);
    }
    let cfg = PipelineConfig {
        connections: n + 1024,
        v6_connections: 1024,
        local_addresses: vec![IpAddr::V4(LOCAL4)],
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, &services(), vec![], network()).expect("pipeline");
    let mut buf = vec![0u8; 4096];
    let mut acks = Vec::new();
    let now = Time::from_secs(1);
    for i in 0..n {
        let c = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (i % 32768));
        let (c, cport) = (IpAddr::V4(c), 1024 + (i / 32768) as u16);
        let syn = frame_in(c, IpAddr::V4(VIP4)).tcp(cport, 80).syn().build();
        let ack = frame_in(c, IpAddr::V4(VIP4)).tcp(cport, 80).ack().build();
        for f in [&syn, &ack] {
            buf[256..256 + f.len()].copy_from_slice(f);
            let mut fr = Frame::new(&mut buf, 256, f.len());
            assert_eq!(p.process(now, FRONT, &mut fr), Verdict::Tx(BACK));
        }
        acks.push(ack);
    }
    // Shuffle (Fisher–Yates, xorshift), then lay the frames out back to back.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..acks.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acks.swap(i, (x % (i as u64 + 1)) as usize);
    }
    const STRIDE: usize = 128;
    let mut ring = vec![0u8; acks.len() * STRIDE];
    for (a, d) in acks.iter().zip(ring.chunks_exact_mut(STRIDE)) {
        d[..a.len()].copy_from_slice(a);
    }
    let len = acks[0].len();
    let mut k = 0usize;
    let mut next = || {
        k = if k + 1 == acks.len() { 0 } else { k + 1 };
        &ring[k * STRIDE..k * STRIDE + len]
    };
    let t0 = Clock::start();
    if batch {
        let mut bufs = vec![vec![0u8; 4096]; BATCH];
        let mut verdicts = [Verdict::Pass; BATCH];
        for _ in 0..iters / BATCH as u64 {
            let mut lens = [0usize; BATCH];
            for (b, len) in bufs.iter_mut().zip(lens.iter_mut()) {
                let f = next();
                b[256..256 + f.len()].copy_from_slice(f);
                *len = f.len();
            }
            let mut frames: Vec<Frame> = bufs
                .iter_mut()
                .zip(lens)
                .map(|(b, len)| Frame::new(b, 256, len))
                .collect();
            p.process_batch(now, FRONT, &mut frames, &mut verdicts);
            std::hint::black_box(&verdicts);
        }
    } else {
        for _ in 0..iters {
            let f = next();
            buf[256..256 + f.len()].copy_from_slice(f);
            let mut fr = Frame::new(&mut buf, 256, f.len());
            std::hint::black_box(p.process(now, FRONT, &mut fr));
        }
    }
    let (wall, cpu) = t0.per(iters);
    println!(
        "{n} connections{}: {cpu:.1} ns CPU ({wall:.1} ns wall) per established frame",
        if batch { ", batches of 32" } else { "" },
    );
}

/// Wall time and this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`: on the shared, loaded
/// machine the wall time also counts the time the thread was not running).
struct Clock {
    wall: std::time::Instant,
    cpu: Duration,
}

impl Clock {
    fn cpu() -> Duration {
        let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
        Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    }

    fn start() -> Clock {
        Clock {
            wall: std::time::Instant::now(),
            cpu: Clock::cpu(),
        }
    }

    /// Nanoseconds per iteration: (wall, CPU).
    fn per(&self, iters: u64) -> (f64, f64) {
        let n = iters.max(1) as f64;
        (
            self.wall.elapsed().as_nanos() as f64 / n,
            (Clock::cpu() - self.cpu).as_nanos() as f64 / n,
        )
    }
}

/// Client `i` of up to 2^15 · 64512 (address from 198.18.128.0/17, port from 1024).
fn client(i: u32) -> (IpAddr, u16) {
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (i % 32768));
    (IpAddr::V4(a), 1024 + (i / 32768 % 64512) as u16)
}

fn new_flows(n: u32, iters: u64) {
    let cfg = PipelineConfig {
        connections: 2 * n + 4096,
        v6_connections: 1024,
        local_addresses: vec![IpAddr::V4(LOCAL4)],
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, &services(), vec![], network()).expect("pipeline");
    let template = frame_in(client(0).0, IpAddr::V4(VIP4))
        .tcp(client(0).1, 80)
        .syn()
        .build();
    let Parsed::Ip(tp) = wire::parse(&template) else {
        panic!("template does not parse")
    };
    let mut buf = vec![0u8; 4096];
    // SYN_RECV lasts 60 s: one new connection every 60 s / n keeps n in the table.
    let step = 60_000_000_000 / u64::from(n);
    let mut now = Time::from_secs(10);
    let mut next = 0u32;
    let mut one = |p: &mut Pipeline, now: Time, next: u32| {
        let (c, cport) = client(next);
        let f = &mut buf[256..256 + template.len()];
        f.copy_from_slice(&template);
        let mut q = tp;
        rewrite::set_src(f, &mut q, c, cport).expect("template rewrite");
        let mut fr = Frame::new(&mut buf, 256, template.len());
        let v = p.process(now, FRONT, &mut fr);
        debug_assert_eq!(v, Verdict::Tx(BACK));
        v
    };
    // Fill to the steady state first.
    for _ in 0..n {
        now.0 += step;
        p.housekeeping(now, 64);
        one(&mut p, now, next);
        next += 1;
    }
    let t0 = Clock::start();
    for _ in 0..iters {
        now.0 += step;
        next = next.wrapping_add(1) % (32768 * 64512);
        p.housekeeping(now, 64);
        std::hint::black_box(one(&mut p, now, next));
    }
    let (wall, cpu) = t0.per(iters);
    println!(
        "{n} connections: {cpu:.1} ns CPU ({wall:.1} ns wall) per new flow (table holds {})",
        p.connections().len()
    );
}
