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
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xvs_forwarding::{Frame, PortId, Time, Verdict};

use crate::dataplane_config::{DataplaneConfig, DataplaneConfigError, IoKind};
use crate::io::afxdp::{AfXdpIo, BindTarget, XskParams};
use crate::io::packet::{AfPacketIo, PacketParams, PacketTarget};
use crate::io::sys::{interface_info, InterfaceInfo};
use crate::io::xdp::{AddrMap, XdpMode, XdpProgram, MAX_QUEUES};
use crate::io::{IoCounters, IoError, WorkerIo};
use crate::neigh::{NeighbourRefresher, NeighbourUpdate};

/// What a worker runs on every frame: the forwarding pipeline, or a test processor.
pub trait FrameProcessor: Send {
    /// Decide the frame's fate, rewriting it in place (the buffer has headroom for encapsulation).
    fn process(&mut self, now: Time, ingress: PortId, frame: &mut Frame<'_>) -> Verdict;
    /// The same for a batch of frames that arrived on `ingress`, in order: `verdicts[i]` for
    /// `frames[i]`. The worker calls this one; override it to overlap work across frames
    /// (the pipeline prefetches its connection-table slots).
    fn process_batch(
        &mut self,
        now: Time,
        ingress: PortId,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
            *v = self.process(now, ingress, f);
        }
    }
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
    #[inline]
    fn process_batch(
        &mut self,
        now: Time,
        ingress: PortId,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        xvs_forwarding::Pipeline::process_batch(self, now, ingress, frames, verdicts);
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
    /// Virtual service networks (fwmark rules on a prefix): frames to any address in them are
    /// redirected, like to a VIP.
    pub vip_prefixes: Vec<(IpAddr, u8)>,
    /// Backend addresses (frames *from* them are redirected: NAT replies).
    pub backends: Vec<IpAddr>,
    /// FullNAT local addresses (frames *to* them are redirected).
    pub locals: Vec<IpAddr>,
    /// Next hops (backends, gateways) whose neighbour entries the director keeps resolved.
    pub next_hops: Vec<IpAddr>,
    /// How connections are spread over workers (see [`steer`]).
    pub client_steering: ClientSteering,
}

/// What decides a connection's worker when there are several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientSteering {
    /// Client address and port: the best spread. Persistence templates are then per worker, so
    /// one client's connections may be scheduled by different workers.
    #[default]
    Flow,
    /// Client address masked to these prefix lengths: every connection of a client network is
    /// handled by one worker, so persistence (ipvsadm `-p` with `-M`) behaves as in IPVS. Use the
    /// shortest persistence netmask of the configuration.
    Address { v4_prefix: u8, v6_prefix: u8 },
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
    #[error("invalid data-plane configuration")]
    Config(#[from] DataplaneConfigError),
    #[error("interface {name}")]
    Interface {
        name: String,
        #[source]
        source: IoError,
    },
    #[error("XDP program")]
    Xdp(#[source] IoError),
    #[error("worker {worker} (queue {queue})")]
    Socket {
        worker: usize,
        queue: u32,
        #[source]
        source: IoError,
    },
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
    #[error("signal handler")]
    Signal(#[source] std::io::Error),
    #[error("worker {0} stopped unexpectedly (panicked); the data plane was stopped")]
    WorkerDied(usize),
}

enum AnyIo {
    Xdp(AfXdpIo),
    Packet(AfPacketIo),
}

struct WorkerCtx {
    index: usize,
    queue: u32,
    core: Option<usize>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<WorkerStats>>,
    control: Receiver<Control>,
    log_every: Duration,
    idle_wait_ms: i32,
    handoff: Option<Handoff>,
}

/// This worker's end of the cross-worker handoff (see [`steer`]).
struct Handoff {
    sets: Arc<steer::SteerSets>,
    inbox: Receiver<steer::Msg>,
    peers: Vec<SyncSender<steer::Msg>>,
    pool: Vec<Box<[u8]>>,
}

/// Rounds without a frame before an idle worker sleeps in poll(2).
const SPIN_ROUNDS: u32 = 1024;

/// A message from the control side to one worker, applied between two batches.
#[derive(Clone, Debug)]
pub enum Control {
    Neighbour(NeighbourUpdate),
    /// New steering sets after the VIPs, backends or local addresses changed.
    Steer(Arc<steer::SteerSets>),
}

fn apply<P: FrameProcessor>(p: &mut P, u: NeighbourUpdate) {
    match u {
        NeighbourUpdate::Set { ip, port, mac } => p.set_neighbour(ip, port, mac),
        NeighbourUpdate::Gone { ip } => p.remove_neighbour(ip),
    }
}

fn run_worker<I: WorkerIo, P: FrameProcessor>(mut io: I, mut proc: P, mut ctx: WorkerCtx) {
    if let Some(c) = ctx.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            eprintln!("xvs: worker {} could not pin itself to CPU {c}", ctx.index);
        }
    }
    if let Some(h) = ctx.handoff.as_mut() {
        h.pool = (0..steer::POOL)
            .map(|_| vec![0u8; steer::BUF].into_boxed_slice())
            .collect();
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
        while let Ok(m) = ctx.control.try_recv() {
            match m {
                Control::Neighbour(u) => apply(&mut proc, u),
                Control::Steer(sets) => {
                    if let Some(h) = ctx.handoff.as_mut() {
                        h.sets = sets;
                    }
                }
            }
        }
        let t0 = Instant::now();
        let now = Time(t0.duration_since(ctx.epoch).as_nanos() as u64);
        let n = match ctx.handoff.as_mut() {
            None => io.poll(
                &mut |port, frames, verdicts, _| proc.process_batch(now, port, frames, verdicts),
                &mut c,
            ),
            Some(h) => {
                let me = ctx.index;
                let mut hc = steer::HandoffCounters::default();
                let n = io.poll(
                    &mut |port, frames, verdicts, consumed| {
                        steer::split_batch(
                            me, port, frames, verdicts, consumed, h, &mut hc, &mut proc, now,
                        )
                    },
                    &mut c,
                );
                c.handoff_out += hc.out;
                c.handoff_full += hc.full;
                let m = steer::drain(me, &mut io, &mut proc, now, h, &mut c);
                n + m
            }
        };
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
        "xvs: worker {} queue {} core {}: rx {} ({:.0}/s) tx {} ({:.0}/s) pass {} drops {} [{}] tx_ring_full {} handoff out {} in {} lost {} busy {:.1}%",
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
        c.handoff_out,
        c.handoff_in,
        c.handoff_full,
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
    controls: Vec<Sender<Control>>,
    targets: DirectorTargets,
    watch: Arc<Mutex<Vec<IpAddr>>>,
    steering: bool,
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
                for &(net, len) in &targets.vip_prefixes {
                    prog.add_vip_prefix(net, len).map_err(DataplaneError::Xdp)?;
                }
                // The host's own addresses (not VIPs or FullNAT local addresses): replies from
                // backends to them (health checks, the host's own connections) stay with the
                // kernel. Taken once at start.
                let host = crate::io::sys::host_addresses().map_err(DataplaneError::Xdp)?;
                for ip in host {
                    if !targets.vips.contains(&ip) && !targets.locals.contains(&ip) {
                        prog.add_addr(AddrMap::Host, ip)
                            .map_err(DataplaneError::Xdp)?;
                    }
                }
                let params = XskParams {
                    ring_size: cfg.afxdp.ring_size,
                    chunk_size: cfg.afxdp.chunk_size,
                    batch: cfg.afxdp.batch,
                    mode: cfg.afxdp.bind,
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
                for p in &ports {
                    let polled = |q: u32| cfg.workers.iter().any(|w| w.queue == q);
                    let missing: Vec<u32> = (0..p.queues.unwrap_or(0).min(MAX_QUEUES as u32))
                        .filter(|q| !polled(*q))
                        .collect();
                    if !missing.is_empty() && cfg.xdp_mode == XdpMode::Native {
                        eprintln!(
                            "xvs: warning: {} has rx queue(s) {missing:?} without a worker: service frames arriving there go to the kernel (add [[worker]]s or reduce the queues: ethtool -L {} ...)",
                            p.name, p.name
                        );
                    }
                }
                if cfg.xdp_mode == XdpMode::Generic && !cfg.workers.iter().any(|w| w.queue == 0) {
                    eprintln!(
                        "xvs: warning: generic XDP delivers every frame on queue 0, and no worker polls queue 0"
                    );
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
        let mut senders: Vec<Sender<Control>> = Vec::new();
        let mut receivers = Vec::new();
        for _ in &cfg.workers {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let mut refresher = NeighbourRefresher::new(&ports, targets.next_hops.clone());
        let initial = refresher.refresh();

        // Cross-worker handoff: only with several workers (see `steer`).
        let mut handoffs: Vec<Option<Handoff>> = Vec::new();
        let nw = cfg.workers.len();
        if nw > 1 {
            let sets = Arc::new(steer::SteerSets::new(targets));
            let (txs, rxs): (Vec<_>, Vec<_>) =
                (0..nw).map(|_| mpsc::sync_channel(steer::INBOX)).unzip();
            for inbox in rxs {
                handoffs.push(Some(Handoff {
                    sets: sets.clone(),
                    inbox,
                    peers: txs.clone(),
                    pool: Vec::new(),
                }));
            }
        } else {
            handoffs.resize_with(nw, || None);
        }

        let mut threads = Vec::new();
        let mut stats = Vec::new();
        for (wi, (((w, io), control), handoff)) in cfg
            .workers
            .iter()
            .zip(ios)
            .zip(receivers)
            .zip(handoffs)
            .enumerate()
        {
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
                // A handed-over frame waits for the owner's next round: sleep less.
                idle_wait_ms: if handoff.is_some() {
                    cfg.idle_wait_ms.min(1)
                } else {
                    cfg.idle_wait_ms
                },
                handoff,
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
        let watch = Arc::new(Mutex::new(targets.next_hops.clone()));
        let nwatch = watch.clone();
        let nsenders = senders.clone();
        let neigh = std::thread::Builder::new()
            .name("xvs-neighbours".into())
            .spawn(move || {
                refresher.run(every, &nstop, &nwatch, |u| {
                    for w in &nsenders {
                        let _ = w.send(Control::Neighbour(u));
                    }
                })
            })
            .map_err(DataplaneError::Thread)?;
        Ok(Dataplane {
            stop,
            threads,
            stats,
            neigh: Some(neigh),
            xdp,
            ports,
            controls: senders,
            targets: targets.clone(),
            watch,
            steering: nw > 1,
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

    /// Change the addresses the data plane steers (services added or removed, backends changed):
    /// the XDP maps are updated in place (AF_XDP), the workers get new steering sets between two
    /// batches and the neighbour refresher a new watch list. Frames in flight are unaffected.
    pub fn set_targets(&mut self, t: &DirectorTargets) -> Result<(), DataplaneError> {
        if let Some(prog) = self.xdp.as_ref() {
            for (m, old, new) in [
                (AddrMap::Vips, &self.targets.vips, &t.vips),
                (AddrMap::Backends, &self.targets.backends, &t.backends),
                (AddrMap::Locals, &self.targets.locals, &t.locals),
            ] {
                for ip in new.iter().filter(|ip| !old.contains(ip)) {
                    prog.add_addr(m, *ip).map_err(DataplaneError::Xdp)?;
                }
                for ip in old.iter().filter(|ip| !new.contains(ip)) {
                    prog.remove_addr(m, *ip).map_err(DataplaneError::Xdp)?;
                }
            }
            let (old, new) = (&self.targets.vip_prefixes, &t.vip_prefixes);
            for &(net, len) in new.iter().filter(|p| !old.contains(p)) {
                prog.add_vip_prefix(net, len).map_err(DataplaneError::Xdp)?;
            }
            for &(net, len) in old.iter().filter(|p| !new.contains(p)) {
                prog.remove_vip_prefix(net, len)
                    .map_err(DataplaneError::Xdp)?;
            }
        }
        if self.steering {
            let sets = Arc::new(steer::SteerSets::new(t));
            for c in &self.controls {
                let _ = c.send(Control::Steer(sets.clone()));
            }
        }
        if let Ok(mut w) = self.watch.lock() {
            *w = t.next_hops.clone();
        }
        self.targets = t.clone();
        Ok(())
    }

    /// The addresses currently steered.
    pub fn targets(&self) -> &DirectorTargets {
        &self.targets
    }

    /// The first worker whose thread ended although no stop was requested (it panicked).
    pub fn dead_worker(&self) -> Option<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.threads.iter().position(|t| t.is_finished())
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
        // Detach first (interfaces as found: from here on the kernel gets every frame), then let
        // the workers finish their batch and close their sockets and rings.
        self.xdp = None;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(n) = self.neigh.take() {
            let _ = n.join();
        }
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
        // A second signal while stopping exits at once (the BPF links go with the process).
        signal_hook::flag::register_conditional_shutdown(sig, 1, signalled.clone())
            .map_err(DataplaneError::Signal)?;
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
        if let Some(w) = dp.dead_worker() {
            drop(dp);
            return Err(DataplaneError::WorkerDied(w));
        }
    }
    eprintln!("xvs: stopping");
    Ok(dp.shutdown())
}

/// Cross-worker steering: every frame of a connection, in both directions, is processed by the
/// worker that owns the connection.
///
/// Connection tables are per worker, but the NIC (or veth) picks the rx queue — and so the
/// worker — per direction: a NAT reply from a backend usually lands on another queue than the
/// client's request, and an XDP program cannot redirect a frame to an AF_XDP socket of another
/// queue (`xsk_rcv` checks the queue id). So the worker computes the owner from the frame:
///
/// * to a FullNAT local address: `local port % workers` (the pipeline allocates local ports
///   with `lport % workers == worker`);
/// * to a VIP: `hash(client address, client port) % workers`;
/// * from a backend (NAT reply): `hash(destination address, destination port)` — the same
///   client address and port, so the same worker;
/// * an ICMP error: the same rules applied to the packet it quotes, reversed;
/// * anything else: processed where it arrived.
///
/// A frame for another worker is copied into a buffer from a preallocated pool and sent through
/// a bounded channel to its owner, which processes it and transmits it on its own sockets
/// (another UMEM), then sends the buffer back. No allocation and no lock on this path (std's
/// bounded channel is lock-free); a full inbox or an empty pool is a counted drop. This is the
/// software version of DPVS's per-lcore redirect rings, or of the flow steering (ntuple/FDIR)
/// a NIC could do in hardware.
pub mod steer {
    use std::sync::mpsc::{SyncSender, TrySendError};

    use xvs_forwarding::{DropReason, Frame, PortId, Time, Verdict};

    use super::{ClientSteering, DirectorTargets, FrameProcessor, Handoff};
    use crate::io::{IoCounters, WorkerIo, MAX_BATCH};

    /// Handoff buffers per worker, their size, and the headroom kept in front of the frame.
    pub const POOL: usize = 1024;
    pub const BUF: usize = 2048;
    pub const HEADROOM: usize = 256;
    /// Capacity of each worker's inbox.
    pub const INBOX: usize = 4096;
    /// Inbox messages handled per loop round.
    const DRAIN_MAX: usize = 256;

    /// A message between workers.
    #[derive(Debug)]
    pub enum Msg {
        Frame {
            from: usize,
            ingress: PortId,
            len: usize,
            buf: Box<[u8]>,
        },
        Return(Box<[u8]>),
    }

    #[derive(Debug, Default)]
    pub struct HandoffCounters {
        pub out: u64,
        pub full: u64,
    }

    fn key(ip: std::net::IpAddr) -> [u8; 16] {
        crate::io::xdp::addr_key(ip)
    }

    /// The addresses that decide ownership, sorted for binary search.
    #[derive(Debug, Default)]
    pub struct SteerSets {
        vips: Vec<[u8; 16]>,
        /// VIP networks as (masked 16-byte key, prefix length over the 16-byte form).
        vip_nets: Vec<([u8; 16], u32)>,
        locals: Vec<[u8; 16]>,
        backends: Vec<[u8; 16]>,
        by: ClientSteering,
    }

    impl SteerSets {
        pub fn new(t: &DirectorTargets) -> Self {
            let set = |v: &[std::net::IpAddr]| {
                let mut k: Vec<[u8; 16]> = v.iter().map(|a| key(*a)).collect();
                k.sort_unstable();
                k.dedup();
                k
            };
            SteerSets {
                vips: set(&t.vips),
                vip_nets: t
                    .vip_prefixes
                    .iter()
                    .map(|&(net, len)| {
                        let k = crate::io::xdp::lpm_key(net, len);
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&k[4..]);
                        (a, u32::from_ne_bytes([k[0], k[1], k[2], k[3]]))
                    })
                    .collect(),
                locals: set(&t.locals),
                backends: set(&t.backends),
                by: t.client_steering,
            }
        }

        /// The hash of a connection's client end under the configured policy.
        #[inline]
        fn client(&self, addr: &[u8; 16], port: u16) -> u64 {
            match self.by {
                ClientSteering::Flow => flow_hash(addr, port),
                ClientSteering::Address {
                    v4_prefix,
                    v6_prefix,
                } => {
                    let v4 = addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
                    let bits = if v4 {
                        96 + v4_prefix.min(32) as usize
                    } else {
                        v6_prefix.min(128) as usize
                    };
                    let mut m = [0u8; 16];
                    for (i, (o, a)) in m.iter_mut().zip(addr.iter()).enumerate() {
                        let keep = bits.saturating_sub(i * 8).min(8);
                        *o = if keep == 0 {
                            0
                        } else {
                            a & (0xffu8 << (8 - keep))
                        };
                    }
                    flow_hash(&m, 0)
                }
            }
        }
        fn vip(&self, a: &[u8; 16]) -> bool {
            self.vips.binary_search(a).is_ok()
                || self.vip_nets.iter().any(|(net, bits)| {
                    let (full, rest) = ((*bits / 8) as usize, bits % 8);
                    a[..full] == net[..full]
                        && (rest == 0 || (a[full] ^ net[full]) & (0xffu8 << (8 - rest)) == 0)
                })
        }
        fn local(&self, a: &[u8; 16]) -> bool {
            self.locals.binary_search(a).is_ok()
        }
        fn backend(&self, a: &[u8; 16]) -> bool {
            self.backends.binary_search(a).is_ok()
        }
    }

    struct Ip {
        src: [u8; 16],
        dst: [u8; 16],
        proto: u8,
        l4: usize,
        sport: u16,
        dport: u16,
    }

    fn be16(d: &[u8], o: usize) -> Option<u16> {
        Some(u16::from_be_bytes([*d.get(o)?, *d.get(o + 1)?]))
    }

    /// IPv4 or IPv6 header at `off` with the ports of TCP/UDP/SCTP (0 when absent).
    fn ip(d: &[u8], off: usize) -> Option<Ip> {
        let v = d.get(off)? >> 4;
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        let (proto, l4, ports) = match v {
            4 => {
                let h = d.get(off..off + 20)?;
                let ihl = (h[0] & 0x0f) as usize * 4;
                if ihl < 20 {
                    return None;
                }
                src[10] = 0xff;
                src[11] = 0xff;
                dst[10] = 0xff;
                dst[11] = 0xff;
                src[12..].copy_from_slice(&h[12..16]);
                dst[12..].copy_from_slice(&h[16..20]);
                let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
                (h[9], off + ihl, frag_off == 0)
            }
            6 => {
                let h = d.get(off..off + 40)?;
                src.copy_from_slice(&h[8..24]);
                dst.copy_from_slice(&h[24..40]);
                (h[6], off + 40, true)
            }
            _ => return None,
        };
        let (sport, dport) = if ports && matches!(proto, 6 | 17 | 132) {
            (be16(d, l4).unwrap_or(0), be16(d, l4 + 2).unwrap_or(0))
        } else {
            (0, 0)
        };
        Some(Ip {
            src,
            dst,
            proto,
            l4,
            sport,
            dport,
        })
    }

    /// The worker owning the connections of this client end (what [`owner`] gives their
    /// frames in both directions), e.g. for a connection received by the sync backup.
    pub fn client_owner(
        by: ClientSteering,
        addr: std::net::IpAddr,
        port: u16,
        workers: usize,
    ) -> usize {
        if workers < 2 {
            return 0;
        }
        let sets = SteerSets {
            by,
            ..SteerSets::default()
        };
        (sets.client(&key(addr), port) % workers as u64) as usize
    }

    /// A hash of (address, port) that both directions of a connection agree on.
    #[inline]
    pub fn flow_hash(addr: &[u8; 16], port: u16) -> u64 {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&addr[..8]);
        b.copy_from_slice(&addr[8..]);
        // murmur3's 64-bit finaliser: every input bit reaches the low bits used by `% workers`.
        let mut x = u64::from_le_bytes(a).rotate_left(29) ^ u64::from_le_bytes(b) ^ port as u64;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    /// The worker owning this frame's connection, or `None` when any worker may process it.
    pub fn owner(d: &[u8], sets: &SteerSets, workers: usize) -> Option<usize> {
        if workers < 2 {
            return None;
        }
        let w = workers as u64;
        let mut off = 12;
        let mut et = be16(d, off)?;
        for _ in 0..2 {
            if et == 0x8100 || et == 0x88a8 {
                off += 4;
                et = be16(d, off)?;
            }
        }
        if et != 0x0800 && et != 0x86dd {
            return None;
        }
        let h = ip(d, off + 2)?;
        let icmp_error = match h.proto {
            1 => matches!(d.get(h.l4), Some(3 | 4 | 11 | 12)),
            58 => matches!(d.get(h.l4), Some(t) if *t < 128),
            _ => false,
        };
        let pick = |x: u64| Some((x % w) as usize);
        if icmp_error {
            // The quoted packet is one the director sent (or forwarded): reverse the rules.
            let e = ip(d, h.l4 + 8)?;
            if sets.local(&e.src) {
                return pick(e.sport as u64);
            }
            if sets.vip(&e.src) {
                return pick(sets.client(&e.dst, e.dport));
            }
            return pick(sets.client(&e.src, e.sport));
        }
        if sets.local(&h.dst) {
            return pick(h.dport as u64);
        }
        if sets.vip(&h.dst) {
            return pick(sets.client(&h.src, h.sport));
        }
        if sets.backend(&h.src) {
            return pick(sets.client(&h.dst, h.dport));
        }
        None
    }

    /// Copy `frame` to worker `to`. Returns `None` (the frame is consumed) or a drop verdict
    /// when it does not fit a handoff buffer.
    pub(super) fn hand_off(
        me: usize,
        to: usize,
        ingress: PortId,
        frame: &Frame<'_>,
        pool: &mut Vec<Box<[u8]>>,
        peers: &[SyncSender<Msg>],
        c: &mut HandoffCounters,
    ) -> Option<Verdict> {
        let len = frame.len();
        if len + HEADROOM > BUF {
            return Some(Verdict::Drop(DropReason::NoHeadroom));
        }
        let Some(peer) = peers.get(to) else {
            c.full += 1;
            return None;
        };
        let Some(mut buf) = pool.pop() else {
            c.full += 1;
            return None;
        };
        buf[HEADROOM..HEADROOM + len].copy_from_slice(frame.data());
        match peer.try_send(Msg::Frame {
            from: me,
            ingress,
            len,
            buf,
        }) {
            Ok(()) => c.out += 1,
            Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => {
                c.full += 1;
                let (Msg::Frame { buf, .. } | Msg::Return(buf)) = m;
                pool.push(buf);
            }
        }
        None
    }

    /// Hand the frames of a batch that belong to other workers over to them, and run the rest
    /// through the processor as one batch (moved to the front of the slice for the call, then put
    /// back in place, so that `verdicts[i]` and bit `i` of `consumed` stay about `frames[i]`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn split_batch<P: FrameProcessor>(
        me: usize,
        port: PortId,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
        consumed: &mut u64,
        h: &mut Handoff,
        hc: &mut HandoffCounters,
        proc: &mut P,
        now: Time,
    ) {
        let n = frames.len().min(verdicts.len()).min(MAX_BATCH);
        let workers = h.peers.len();
        // pos[k]: the original index of the k-th local frame.
        let mut pos = [0u8; MAX_BATCH];
        let mut nl = 0usize;
        for i in 0..n {
            match owner(frames[i].data(), &h.sets, workers) {
                Some(o) if o != me => {
                    match hand_off(me, o, port, &frames[i], &mut h.pool, &h.peers, hc) {
                        None => *consumed |= 1u64 << i,
                        Some(v) => verdicts[i] = v,
                    }
                }
                _ => {
                    // Frames in [nl, i) are all foreign: swapping keeps the locals in order.
                    frames.swap(nl, i);
                    pos[nl] = i as u8;
                    nl += 1;
                }
            }
        }
        if nl == 0 {
            return;
        }
        let mut local = [Verdict::Pass; MAX_BATCH];
        proc.process_batch(now, port, &mut frames[..nl], &mut local[..nl]);
        // Undo the swaps in reverse order: every frame back at its original index.
        for k in (0..nl).rev() {
            frames.swap(k, pos[k] as usize);
        }
        for k in 0..nl {
            verdicts[pos[k] as usize] = local[k];
        }
    }

    /// Process frames other workers handed over, return their buffers, take ours back.
    pub(super) fn drain<I: WorkerIo, P: FrameProcessor>(
        me: usize,
        io: &mut I,
        proc: &mut P,
        now: Time,
        h: &mut Handoff,
        c: &mut IoCounters,
    ) -> usize {
        let mut n = 0;
        for _ in 0..DRAIN_MAX {
            let Ok(m) = h.inbox.try_recv() else {
                break;
            };
            match m {
                Msg::Return(buf) => h.pool.push(buf),
                Msg::Frame {
                    from,
                    ingress,
                    len,
                    mut buf,
                } => {
                    n += 1;
                    c.handoff_in += 1;
                    let mut f = Frame::new(&mut buf, HEADROOM, len);
                    match proc.process(now, ingress, &mut f) {
                        Verdict::Tx(p) => {
                            io.send(p, f.data(), c);
                        }
                        other => c.count_verdict(other),
                    }
                    if from == me {
                        h.pool.push(buf);
                    } else if let Some(peer) = h.peers.get(from) {
                        // A full inbox loses the buffer (freed); the sender's pool shrinks.
                        let _ = peer.try_send(Msg::Return(buf));
                    }
                }
            }
        }
        if n > 0 {
            io.flush(c);
        }
        n
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sets() -> SteerSets {
            SteerSets::new(&DirectorTargets {
                vips: vec![
                    "198.18.10.1".parse().unwrap(),
                    "2001:2:0:10::1".parse().unwrap(),
                ],
                backends: vec!["198.18.3.11".parse().unwrap()],
                locals: vec!["198.18.3.100".parse().unwrap()],
                vip_prefixes: vec![("198.18.20.0".parse().unwrap(), 23)],
                next_hops: vec![],
                client_steering: ClientSteering::Flow,
            })
        }

        /// Tags each frame's verdict with its client port, and records the order it saw.
        struct Tagger(Vec<u16>);
        impl FrameProcessor for Tagger {
            fn process(&mut self, _: Time, _: PortId, f: &mut Frame<'_>) -> Verdict {
                let d = f.data();
                let port = u16::from_be_bytes([d[34], d[35]]);
                self.0.push(port);
                Verdict::Tx(PortId(port))
            }
        }

        #[test]
        fn split_batch_keeps_frames_and_verdicts_in_place() {
            use std::sync::mpsc::sync_channel;
            let (t0, _r0) = sync_channel(INBOX);
            let (t1, r1) = sync_channel(INBOX);
            let mut h = Handoff {
                sets: std::sync::Arc::new(sets()),
                inbox: std::sync::mpsc::sync_channel(1).1,
                peers: vec![t0, t1],
                pool: (0..8).map(|_| vec![0u8; BUF].into_boxed_slice()).collect(),
            };
            let s = sets();
            let mut bufs: Vec<Vec<u8>> = (0..20u16)
                .map(|k| v4([198, 18, 1, 10], [198, 18, 10, 1], 6, 2000 + k, 80))
                .collect();
            let mine: Vec<bool> = bufs.iter().map(|b| owner(b, &s, 2) == Some(0)).collect();
            assert!(mine.iter().any(|m| *m) && mine.iter().any(|m| !*m));
            let mut frames: Vec<Frame<'_>> = bufs
                .iter_mut()
                .map(|b| {
                    let n = b.len();
                    Frame::new(b, 0, n)
                })
                .collect();
            let mut verdicts = vec![Verdict::Pass; frames.len()];
            let mut consumed = 0u64;
            let mut hc = HandoffCounters::default();
            let mut p = Tagger(Vec::new());
            split_batch(
                0,
                PortId(0),
                &mut frames,
                &mut verdicts,
                &mut consumed,
                &mut h,
                &mut hc,
                &mut p,
                Time(0),
            );
            let mut local_order = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                let port = u16::from_be_bytes([f.data()[34], f.data()[35]]);
                assert_eq!(port, 2000 + i as u16, "frame {i} back in place");
                if mine[i] {
                    assert_eq!(verdicts[i], Verdict::Tx(PortId(port)));
                    assert_eq!(consumed & (1 << i), 0);
                    local_order.push(port);
                } else {
                    assert_ne!(consumed & (1 << i), 0, "frame {i} handed over");
                }
            }
            assert_eq!(p.0, local_order, "local frames processed in arrival order");
            let handed = mine.iter().filter(|m| !**m).count();
            // The pool had 8 buffers: the rest of the foreign frames were counted as lost.
            assert_eq!(hc.out as usize, handed.min(8));
            assert_eq!(hc.full as usize, handed.saturating_sub(8));
            assert_eq!(r1.try_iter().count(), handed.min(8));
        }

        #[test]
        fn vip_networks() {
            let s = sets();
            let w = 3;
            for (dst, inside) in [
                ([198, 18, 20, 7], true),
                ([198, 18, 21, 255], true),
                ([198, 18, 22, 1], false),
                ([198, 18, 19, 1], false),
            ] {
                let f = v4([198, 18, 1, 10], dst, 17, 4000, 53);
                assert_eq!(owner(&f, &s, w).is_some(), inside, "{dst:?}");
            }
        }

        #[test]
        fn by_client_network() {
            let mut t = DirectorTargets {
                vips: vec!["198.18.10.1".parse().unwrap()],
                backends: vec!["198.18.3.11".parse().unwrap()],
                ..DirectorTargets::default()
            };
            t.client_steering = ClientSteering::Address {
                v4_prefix: 24,
                v6_prefix: 64,
            };
            let s = SteerSets::new(&t);
            let w = 4;
            let first = owner(&v4([198, 18, 1, 10], [198, 18, 10, 1], 6, 1024, 80), &s, w);
            let mut others = std::collections::HashSet::new();
            for (host, port) in [(10u8, 1025u16), (11, 40000), (200, 5), (99, 65000)] {
                let f = v4([198, 18, 1, host], [198, 18, 10, 1], 6, port, 80);
                assert_eq!(owner(&f, &s, w), first, "same /24, same worker");
                let reply = v4([198, 18, 3, 11], [198, 18, 1, host], 6, 80, port);
                assert_eq!(owner(&reply, &s, w), first);
            }
            for net in 0..64u8 {
                let f = v4([198, 18, net, 10], [198, 18, 10, 1], 6, 1024, 80);
                others.insert(owner(&f, &s, w));
            }
            assert_eq!(others.len(), w, "client networks spread over all workers");
        }

        fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
            let mut f = vec![0u8; 14 + 20 + 8];
            f[12] = 0x08;
            f[14] = 0x45;
            f[23] = proto;
            f[26..30].copy_from_slice(&src);
            f[30..34].copy_from_slice(&dst);
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            f[36..38].copy_from_slice(&dport.to_be_bytes());
            f
        }

        #[test]
        fn both_directions_agree() {
            let s = sets();
            let mut seen = [false; 4];
            for w in [2usize, 3, 4, 7] {
                for cport in (1024u16..65000).step_by(997) {
                    let client = [198, 18, 1, 10];
                    let inbound = v4(client, [198, 18, 10, 1], 6, cport, 80);
                    let reply = v4([198, 18, 3, 11], client, 6, 80, cport);
                    let a = owner(&inbound, &s, w).unwrap();
                    if w == 4 {
                        seen[a] = true;
                    }
                    assert_eq!(Some(a), owner(&reply, &s, w), "w {w} cport {cport}");
                    // FullNAT reply to the local address: lport % workers.
                    let fnat = v4([198, 18, 3, 12], [198, 18, 3, 100], 17, 80, cport);
                    assert_eq!(owner(&fnat, &s, w), Some(cport as usize % w));
                    // An ICMP error quoting our reply to the client goes to the same worker.
                    let mut icmp = v4([198, 18, 1, 1], [198, 18, 10, 1], 1, 0, 0);
                    icmp[34] = 3;
                    icmp.extend_from_slice(&v4([198, 18, 10, 1], client, 6, 80, cport)[14..]);
                    assert_eq!(owner(&icmp, &s, w), Some(a));
                }
            }
            assert_eq!(seen, [true; 4], "client ports spread over all workers");
        }

        #[test]
        fn others_stay_and_garbage_is_safe() {
            let s = sets();
            assert_eq!(owner(&v4([1, 2, 3, 4], [5, 6, 7, 8], 6, 1, 2), &s, 4), None);
            assert_eq!(
                owner(&v4([198, 18, 1, 10], [198, 18, 10, 1], 6, 1, 80), &s, 1),
                None
            );
            let mut arp = vec![0u8; 60];
            arp[12] = 0x08;
            arp[13] = 0x06;
            assert_eq!(owner(&arp, &s, 4), None);
            for len in 0..80usize {
                let f: Vec<u8> = (0..len).map(|i| (i * 29 + 0x45) as u8).collect();
                let _ = owner(&f, &s, 3);
            }
        }
    }
}
