//! The AF_XDP generator: one thread, pinned to its own core, that enters the client namespace,
//! binds an xvs AF_XDP socket (`xvs::io::afxdp`, copy mode on veth) on the client's interface and
//! sends the target's templates round-robin as fast as the TX ring takes them (kicked every 32
//! frames, TESTBED.md), stamping each UDP payload with the time of sending. No XDP program is
//! needed to transmit. The SYN flood rewrites source address and port per frame from a xorshift
//! generator (198.19.0.0/16 × ports 1024..65535, distinct for the first 2^16 frames of a run).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xvs::io::afxdp::{AfXdpIo, BindTarget, XskParams};
use xvs::io::sys::{interface_info, NetnsGuard};
use xvs::io::{IoCounters, WorkerIo};
use xvs_forwarding::PortId;

use crate::traffic::{self, Templates};

pub struct GenSpec {
    pub netns: String,
    pub ifname: String,
    pub core: Option<usize>,
    pub templates: Templates,
    pub duration: Duration,
    /// Stop after this many frames (0: no limit).
    pub max_frames: u64,
    /// Frames per second (0: as fast as possible).
    pub rate: u64,
    pub epoch: Instant,
    pub seed: u64,
}

/// Live counters the progress line reads.
#[derive(Default)]
pub struct GenLive {
    pub sent: AtomicU64,
    pub stop: AtomicBool,
}

#[derive(Debug, Default, Clone)]
pub struct GenResult {
    pub sent: u64,
    pub elapsed: Duration,
}

/// Run the generator on the calling thread (call it from a spawned thread).
pub fn run(spec: GenSpec, live: Arc<GenLive>) -> Result<GenResult, String> {
    if let Some(c) = spec.core {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
    let _ns = NetnsGuard::enter(&spec.netns).map_err(|e| format!("generator netns: {e}"))?;
    let info = interface_info(&spec.ifname).map_err(|e| format!("generator interface: {e}"))?;
    let mut io = AfXdpIo::new(
        &[BindTarget {
            ifname: spec.ifname.clone(),
            ifindex: info.ifindex,
            queue: 0,
            queues: info.queues,
        }],
        XskParams {
            ring_size: 2048,
            ..XskParams::default()
        },
    )
    .map_err(|e| format!("generator AF_XDP socket: {e}"))?;
    let t = spec.templates;
    if t.frames.is_empty() {
        return Err("no frames to send".into());
    }
    let mut buf = vec![0u8; 2048];
    let mut c = IoCounters::default();
    let mut sent = 0u64;
    let mut i = 0usize;
    let mut rng = spec.seed | 1;
    let start = Instant::now();
    let end = start + spec.duration;
    let mut nothing = |_: PortId,
                       _: &mut [xvs_forwarding::Frame<'_>],
                       _: &mut [xvs_forwarding::Verdict],
                       _: &mut u64| {};
    'outer: loop {
        let now = Instant::now();
        if now >= end || live.stop.load(Ordering::Relaxed) {
            break;
        }
        if spec.rate > 0 {
            let due = (now - start).as_secs_f64() * spec.rate as f64;
            if (sent as f64) >= due {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
        }
        for _ in 0..32 {
            if spec.max_frames > 0 && sent >= spec.max_frames {
                break 'outer;
            }
            let f = &t.frames[i];
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            if t.random_src {
                // xorshift64
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let k = sent as u32;
                let a = Ipv4Addr::new(198, 19, (k >> 8) as u8, k as u8);
                let p = 1024 + ((rng >> 20) % (65536 - 1024)) as u16;
                traffic::set_syn_source(&mut buf[..n], a, p);
            } else if let Some(off) = t.stamp[i] {
                let ns = spec.epoch.elapsed().as_nanos() as u64;
                traffic::stamp(&mut buf[..n], off, ns);
            }
            if !io.send(PortId(0), &buf[..n], &mut c) {
                // TX ring full: reap completions and try again next round.
                io.poll(&mut nothing, &mut c);
                break;
            }
            sent += 1;
            i += 1;
            if i == t.frames.len() {
                i = 0;
            }
        }
        io.flush(&mut c);
        live.sent.store(sent, Ordering::Relaxed);
    }
    let elapsed = start.elapsed();
    io.flush(&mut c);
    // Let the ring drain before the socket closes.
    let drain = Instant::now() + Duration::from_millis(200);
    while Instant::now() < drain {
        io.poll(&mut nothing, &mut c);
        std::thread::sleep(Duration::from_millis(5));
    }
    live.sent.store(sent, Ordering::Relaxed);
    Ok(GenResult { sent, elapsed })
}
