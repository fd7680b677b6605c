//! The workers: one thread per configured queue, pinned to its core, polling that queue on every
//! interface (AF_XDP or AF_PACKET) and running each frame through a [`FrameProcessor`] — the
//! quinn-style "thin I/O loop around a sans-I/O core" of DESIGN.md.
//!
//! Loop: apply control messages (neighbour updates) → `poll` (batched rx → process → batched tx
//! and ring recycling, see `io::afxdp` / `io::packet`) → when idle for a while, sleep in poll(2)
//! for at most `idle_wait_ms` → `housekeeping(now)` → once a second publish counters; every
//! `log_interval_secs` print one line per worker (rx, tx, drops by reason, busy ratio).
//!
//! [`Dataplane::start`] sets everything up (XDP program, sockets, neighbour refresher, threads);
//! [`run_director`] is the binary's entry point: start, wait for SIGINT/SIGTERM, stop cleanly.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xvs_forwarding::{Frame, PortId, Time, Verdict};

use crate::dataplane_config::{DataplaneConfig, DataplaneConfigError, IoKind};
use crate::io::afxdp::{AfXdpIo, BindTarget, XskParams};
use crate::io::packet::{AfPacketIo, PacketParams, PacketTarget};
use crate::io::sys::{interface_info, InterfaceInfo};
use crate::io::xdp::{AddrMap, XdpProgram, MAX_QUEUES};
use crate::io::{IoCounters, IoError, WorkerIo};
use crate::neigh::{NeighbourRefresher, NeighbourUpdate};

/// What a worker runs on every frame: the forwarding pipeline, or a test processor.
pub trait FrameProcessor: Send {
    /// Decide the frame's fate, rewriting it in place (the buffer has headroom for encapsulation).
    fn process(&mut self, now: Time, ingress: PortId, frame: &mut Frame<'_>) -> Verdict;
    /// The next hop `ip` is reachable through `port` at `mac` (from the kernel neighbour table).
    fn set_neighbour(&mut self, _ip: IpAddr, _port: PortId, _mac: [u8; 6]) {}
    /// The next hop `ip` is no longer resolved.
    fn remove_neighbour(&mut self, _ip: IpAddr) {}
    /// Called once per loop round (after each batch, or after an idle wait) with the current
    /// time: connection expiry and other timers, a small bounded amount of work.
    fn housekeeping(&mut self, _now: Time) {}
}

/// Expiry work per loop round (see `ConnTable::expire`).
const HOUSEKEEPING_BUDGET: u32 = 64;

/// The product processor: the forwarding pipeline of `xvs-forwarding`.
impl FrameProcessor for xvs_forwarding::Pipeline {
    #[inline]
    fn process(&mut self, now: Time, ingress: PortId, frame: &mut Frame<'_>) -> Verdict {
        xvs_forwarding::Pipeline::process(self, now, ingress, frame)
    }
    fn set_neighbour(&mut self, ip: IpAddr, _port: PortId, mac: [u8; 6]) {
        self.network_mut().set_neighbour(ip, mac);
    }
    fn remove_neighbour(&mut self, ip: IpAddr) {
        self.network_mut().remove_neighbour(ip);
    }
    #[inline]
    fn housekeeping(&mut self, now: Time) {
        xvs_forwarding::Pipeline::housekeeping(self, now, HOUSEKEEPING_BUDGET);
    }
}

/// Addresses the XDP program must steer to the workers, and next hops to keep resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectorTargets {
    /// Virtual service addresses (frames *to* them are redirected).
    pub vips: Vec<IpAddr>,
    /// Backend addresses (frames *from* them are redirected: NAT replies).
    pub backends: Vec<IpAddr>,
    /// FullNAT local addresses (frames *to* them are redirected).
    pub locals: Vec<IpAddr>,
    /// Next hops (backends, gateways) whose neighbour entries the director keeps resolved.
    pub next_hops: Vec<IpAddr>,
}

/// A worker's counters as last published (about once a second).
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    pub worker: usize,
    pub queue: u32,
    pub core: Option<usize>,
    pub io: IoCounters,
    /// Time spent in polls that received at least one frame.
    pub busy: Duration,
    /// Time since the worker started.
    pub elapsed: Duration,
}

impl WorkerStats {
    /// busy / elapsed.
    pub fn busy_ratio(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.busy.as_secs_f64() / self.elapsed.as_secs_f64()
        }
    }
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("invalid data-plane configuration: {0}")]
    Config(#[from] DataplaneConfigError),
    #[error("interface {name}: {source}")]
    Interface {
        name: String,
        #[source]
        source: IoError,
    },
    #[error("XDP program: {0}")]
    Xdp(#[source] IoError),
    #[error("worker {worker} (queue {queue}): {source}")]
    Socket {
        worker: usize,
        queue: u32,
        #[source]
        source: IoError,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

enum AnyIo {
    Xdp(AfXdpIo),
    Packet(AfPacketIo),
}

// SAFETY: each I/O value exclusively owns its sockets and ring/UMEM mappings (raw pointers into
// memory nobody else in the process touches); it is built on the control thread and then moved
// to, and used only by, one worker thread.
unsafe impl Send for AnyIo {}

struct WorkerCtx {
    index: usize,
    queue: u32,
    core: Option<usize>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<WorkerStats>>,
    control: Receiver<NeighbourUpdate>,
    log_every: Duration,
    idle_wait_ms: i32,
}

/// Rounds without a frame before an idle worker sleeps in poll(2).
const SPIN_ROUNDS: u32 = 1024;

fn apply<P: FrameProcessor>(p: &mut P, u: NeighbourUpdate) {
    match u {
        NeighbourUpdate::Set { ip, port, mac } => p.set_neighbour(ip, port, mac),
        NeighbourUpdate::Gone { ip } => p.remove_neighbour(ip),
    }
}

fn run_worker<I: WorkerIo, P: FrameProcessor>(mut io: I, mut proc: P, ctx: WorkerCtx) {
    if let Some(c) = ctx.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            eprintln!("xvs: worker {} could not pin itself to CPU {c}", ctx.index);
        }
    }
    let mut c = IoCounters::default();
    let start = Instant::now();
    let mut busy = Duration::ZERO;
    let mut idle_rounds = 0u32;
    let mut last_publish = start;
    let mut last_log = (start, IoCounters::default(), Duration::ZERO);
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        while let Ok(u) = ctx.control.try_recv() {
            apply(&mut proc, u);
        }
        let t0 = Instant::now();
        let now = Time(t0.duration_since(ctx.epoch).as_nanos() as u64);
        let n = io.poll(&mut |port, frame| proc.process(now, port, frame), &mut c);
        let t1 = Instant::now();
        proc.housekeeping(Time(t1.duration_since(ctx.epoch).as_nanos() as u64));
        if n > 0 {
            busy += t1 - t0;
            idle_rounds = 0;
        } else {
            idle_rounds = idle_rounds.saturating_add(1);
            if ctx.idle_wait_ms > 0 && idle_rounds > SPIN_ROUNDS {
                io.wait(ctx.idle_wait_ms);
            }
        }
        if t1 - last_publish >= Duration::from_secs(1) {
            last_publish = t1;
            publish(&ctx, &c, busy, t1 - start);
            if !ctx.log_every.is_zero() && t1 - last_log.0 >= ctx.log_every {
                log_line(&ctx, &c, busy, &last_log, t1);
                last_log = (t1, c.clone(), busy);
            }
        }
    }
    publish(&ctx, &c, busy, start.elapsed());
}

fn publish(ctx: &WorkerCtx, c: &IoCounters, busy: Duration, elapsed: Duration) {
    if let Ok(mut s) = ctx.stats.lock() {
        s.io = c.clone();
        s.busy = busy;
        s.elapsed = elapsed;
    }
}

fn log_line(
    ctx: &WorkerCtx,
    c: &IoCounters,
    busy: Duration,
    last: &(Instant, IoCounters, Duration),
    now: Instant,
) {
    let dt = (now - last.0).as_secs_f64().max(1e-9);
    let busy_pct = 100.0 * (busy - last.2).as_secs_f64() / dt;
    let drops: Vec<String> = c
        .drops
        .iter()
        .map(|(r, n)| format!("{}={n}", r.as_str()))
        .collect();
    eprintln!(
        "xvs: worker {} queue {} core {}: rx {} ({:.0}/s) tx {} ({:.0}/s) pass {} drops {} [{}] tx_ring_full {} busy {:.1}%",
        ctx.index,
        ctx.queue,
        ctx.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        c.rx,
        (c.rx - last.1.rx) as f64 / dt,
        c.tx,
        (c.tx - last.1.tx) as f64 / dt,
        c.pass,
        c.drops.total(),
        drops.join(" "),
        c.tx_ring_full,
        busy_pct,
    );
}

/// A running data plane. Dropping it (or [`Dataplane::shutdown`]) stops the workers, closes the
/// sockets and detaches the XDP program.
pub struct Dataplane {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<Mutex<WorkerStats>>>,
    neigh: Option<JoinHandle<()>>,
    xdp: Option<XdpProgram>,
    ports: Vec<InterfaceInfo>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("workers", &self.threads.len())
            .field("ports", &self.ports)
            .finish()
    }
}

impl Dataplane {
    /// Set up I/O for every worker and start them. `factory(worker_index, ports)` builds each
    /// worker's processor; `ports[i]` is port `PortId(i)` with its MAC and MTU.
    pub fn start<P, F>(
        cfg: &DataplaneConfig,
        targets: &DirectorTargets,
        mut factory: F,
    ) -> Result<Dataplane, DataplaneError>
    where
        P: FrameProcessor + 'static,
        F: FnMut(usize, &[InterfaceInfo]) -> P,
    {
        cfg.validate()?;
        let mut ports = Vec::new();
        for i in &cfg.interfaces {
            let info = interface_info(&i.name).map_err(|source| DataplaneError::Interface {
                name: i.name.clone(),
                source,
            })?;
            ports.push(info);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();

        let mut xdp = None;
        let mut ios = Vec::new();
        match cfg.io {
            IoKind::Afxdp => {
                let prog = XdpProgram::load().map_err(DataplaneError::Xdp)?;
                for (m, list) in [
                    (AddrMap::Vips, &targets.vips),
                    (AddrMap::Backends, &targets.backends),
                    (AddrMap::Locals, &targets.locals),
                ] {
                    for ip in list {
                        prog.add_addr(m, *ip).map_err(DataplaneError::Xdp)?;
                    }
                }
                let params = XskParams {
                    ring_size: cfg.afxdp.ring_size,
                    chunk_size: cfg.afxdp.chunk_size,
                    batch: cfg.afxdp.batch,
                    ..XskParams::default()
                };
                for (pi, p) in ports.iter().enumerate() {
                    prog.set_interface_slot(p.ifindex, (pi * MAX_QUEUES) as u32)
                        .map_err(DataplaneError::Xdp)?;
                }
                for (wi, w) in cfg.workers.iter().enumerate() {
                    let binds: Vec<BindTarget> = ports
                        .iter()
                        .map(|p| BindTarget {
                            ifname: p.name.clone(),
                            ifindex: p.ifindex,
                            queue: w.queue,
                            queues: p.queues,
                        })
                        .collect();
                    let io =
                        AfXdpIo::new(&binds, params).map_err(|source| DataplaneError::Socket {
                            worker: wi,
                            queue: w.queue,
                            source,
                        })?;
                    for (pi, s) in io.sockets().iter().enumerate() {
                        prog.set_socket((pi * MAX_QUEUES) as u32 + w.queue, s)
                            .map_err(DataplaneError::Xdp)?;
                    }
                    ios.push(AnyIo::Xdp(io));
                }
                xdp = Some(prog);
                // Attach last: from here on, VIP frames have a socket to go to.
                if let Some(prog) = xdp.as_mut() {
                    for p in &ports {
                        prog.attach(p.ifindex, &p.name, cfg.xdp_mode)
                            .map_err(DataplaneError::Xdp)?;
                    }
                }
            }
            IoKind::Packet => {
                let params = PacketParams {
                    block_size: cfg.packet.block_size,
                    block_count: cfg.packet.block_count,
                    frame_size: cfg.packet.frame_size,
                    tx_frames: cfg.packet.tx_frames,
                    block_timeout_ms: cfg.packet.block_timeout_ms,
                    ..PacketParams::default()
                };
                let fanout = cfg.workers.len() > 1;
                for (wi, w) in cfg.workers.iter().enumerate() {
                    let t: Vec<PacketTarget> = ports
                        .iter()
                        .map(|p| PacketTarget {
                            ifname: p.name.clone(),
                            ifindex: p.ifindex,
                            fanout_group: fanout.then(|| {
                                (std::process::id() as u16) ^ (p.ifindex as u16).wrapping_mul(257)
                            }),
                        })
                        .collect();
                    let io =
                        AfPacketIo::new(&t, params).map_err(|source| DataplaneError::Socket {
                            worker: wi,
                            queue: w.queue,
                            source,
                        })?;
                    ios.push(AnyIo::Packet(io));
                }
            }
        }

        // Neighbours: a first dump now, so workers start with resolved next hops.
        let mut senders: Vec<Sender<NeighbourUpdate>> = Vec::new();
        let mut receivers = Vec::new();
        for _ in &cfg.workers {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let mut refresher = NeighbourRefresher::new(&ports, targets.next_hops.clone());
        let initial = refresher.refresh();

        let mut threads = Vec::new();
        let mut stats = Vec::new();
        for (wi, ((w, io), control)) in cfg.workers.iter().zip(ios).zip(receivers).enumerate() {
            let mut proc = factory(wi, &ports);
            for u in &initial {
                apply(&mut proc, *u);
            }
            let st = Arc::new(Mutex::new(WorkerStats {
                worker: wi,
                queue: w.queue,
                core: w.core,
                ..WorkerStats::default()
            }));
            stats.push(st.clone());
            let ctx = WorkerCtx {
                index: wi,
                queue: w.queue,
                core: w.core,
                epoch,
                stop: stop.clone(),
                stats: st,
                control,
                log_every: Duration::from_secs(cfg.log_interval_secs),
                idle_wait_ms: cfg.idle_wait_ms,
            };
            let h = std::thread::Builder::new()
                .name(format!("xvs-worker-{wi}"))
                .spawn(move || match io {
                    AnyIo::Xdp(io) => run_worker(io, proc, ctx),
                    AnyIo::Packet(io) => run_worker(io, proc, ctx),
                });
            match h {
                Ok(h) => threads.push(h),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(DataplaneError::Thread(e));
                }
            }
        }
        let nstop = stop.clone();
        let every = Duration::from_millis(cfg.neighbour_refresh_ms);
        let neigh = std::thread::Builder::new()
            .name("xvs-neighbours".into())
            .spawn(move || refresher.run(every, &nstop, &senders))
            .map_err(DataplaneError::Thread)?;
        Ok(Dataplane {
            stop,
            threads,
            stats,
            neigh: Some(neigh),
            xdp,
            ports,
        })
    }

    /// The ports (`PortId(i)` = `ports()[i]`).
    pub fn ports(&self) -> &[InterfaceInfo] {
        &self.ports
    }

    /// The flag that stops the workers when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The XDP program (AF_XDP only), e.g. to add or remove VIPs while running.
    pub fn xdp(&self) -> Option<&XdpProgram> {
        self.xdp.as_ref()
    }

    /// The workers' counters as last published.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.stats
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .collect()
    }

    /// Stop the workers, wait for them, close every socket and detach the XDP program.
    pub fn shutdown(mut self) -> Vec<WorkerStats> {
        self.stop_and_join();
        self.stats()
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(n) = self.neigh.take() {
            let _ = n.join();
        }
        // Sockets were dropped by their workers; now the links go (interfaces as found).
        self.xdp = None;
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The director's main loop: start the data plane, run until SIGINT or SIGTERM, then stop
/// cleanly (workers joined, sockets closed, XDP links detached). Returns the final counters.
pub fn run_director<P, F>(
    cfg: &DataplaneConfig,
    targets: &DirectorTargets,
    factory: F,
) -> Result<Vec<WorkerStats>, DataplaneError>
where
    P: FrameProcessor + 'static,
    F: FnMut(usize, &[InterfaceInfo]) -> P,
{
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signalled.clone()).map_err(DataplaneError::Signal)?;
    }
    let dp = Dataplane::start(cfg, targets, factory)?;
    eprintln!(
        "xvs: data plane up: io {} on {} with {} worker(s)",
        cfg.io,
        dp.ports()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        cfg.workers.len()
    );
    while !signalled.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("xvs: stopping");
    Ok(dp.shutdown())
}
