//! Data-plane setup: [`Dataplane::start`] loads the XDP program (AF_XDP) or opens the AF_PACKET
//! rings, creates each worker's sockets, inbox and handoff, takes a first neighbour dump,
//! spawns the workers and the neighbour refresher; the [`Dataplane`] it returns changes the
//! steered addresses live, reads the workers' counters and stops everything.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::run::{run_worker, PauseSlot, WorkerCtx};
use super::steer::{self, Handoff};
use super::{apply_neighbour, inbox, Control, DirectorTargets, FrameProcessor, Inbox, WorkerStats};
use crate::dataplane_config::{DataplaneConfig, DataplaneConfigError, IoKind};
use crate::io::afxdp::{AfXdpIo, BindTarget, XskHandover, XskParams};
use crate::io::packet::{AfPacketIo, PacketParams, PacketTarget};
use crate::io::sys::{interface_info, InterfaceInfo};
use crate::io::xdp::{AddrMap, XdpHandover, XdpMode, XdpProgram, MAX_QUEUES};
use crate::io::IoError;
use crate::neigh::NeighbourRefresher;

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
    #[error("takeover: {0}")]
    Takeover(String),
}

/// A predecessor's AF_XDP data plane, adopted (`xvs run --takeover`): its XDP program (still
/// attached), each worker's I/O in worker order, and the addresses its maps steer.
pub struct Inherited {
    pub xdp: XdpProgram,
    pub ios: Vec<AfXdpIo>,
    pub targets: DirectorTargets,
}

enum AnyIo {
    Xdp(AfXdpIo),
    Packet(AfPacketIo),
}

/// Posts the data plane's own messages (neighbours, steering sets) into one worker's inbox,
/// whatever its processor's command type.
type Post = Arc<dyn Fn(Control<Infallible>) + Send + Sync>;

fn poster<C: Send + 'static>(inbox: Inbox<C>) -> Post {
    Arc::new(move |m: Control<Infallible>| {
        let m = match m {
            Control::Neighbour(u) => Control::Neighbour(u),
            Control::Steer(s) => Control::Steer(s),
            Control::Processor(never) => match never {},
        };
        // A stopped worker's inbox is closed: nothing to tell it.
        let _ = inbox.post(m);
    })
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
    posts: Vec<Post>,
    targets: DirectorTargets,
    watch: Arc<Mutex<Vec<IpAddr>>>,
    steering: bool,
    pauses: Vec<Arc<PauseSlot>>,
    /// Each worker's AF_XDP descriptors (empty with AF_PACKET), for a takeover.
    xsks: Vec<XskHandover>,
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
    /// Set up I/O for every worker and start them. `factory(worker_index, ports, inbox)` builds
    /// each worker's processor; `ports[i]` is port `PortId(i)` with its MAC and MTU, and `inbox`
    /// sends commands to that processor (keep it on the control side, or drop it if the
    /// processor takes none).
    pub fn start<P, F>(
        cfg: &DataplaneConfig,
        targets: &DirectorTargets,
        factory: F,
    ) -> Result<Dataplane, DataplaneError>
    where
        P: FrameProcessor + 'static,
        F: FnMut(usize, &[InterfaceInfo], Inbox<P::Command>) -> P,
    {
        Self::start_with(cfg, targets, factory, None)
    }

    /// [`Dataplane::start`] on a predecessor's adopted AF_XDP data plane (`inherited`: no
    /// program is loaded or attached and no socket created; the maps are brought from the
    /// predecessor's targets to `targets`), or like `start` with `None`.
    pub fn start_with<P, F>(
        cfg: &DataplaneConfig,
        targets: &DirectorTargets,
        mut factory: F,
        inherited: Option<Inherited>,
    ) -> Result<Dataplane, DataplaneError>
    where
        P: FrameProcessor + 'static,
        F: FnMut(usize, &[InterfaceInfo], Inbox<P::Command>) -> P,
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
        let mut xsks = Vec::new();
        let mut old_targets = None;
        match (cfg.io, inherited) {
            (IoKind::Afxdp, Some(inh)) => {
                if inh.ios.len() != cfg.workers.len() {
                    return Err(DataplaneError::Takeover(format!(
                        "{} worker(s) handed over, {} configured",
                        inh.ios.len(),
                        cfg.workers.len()
                    )));
                }
                for io in inh.ios {
                    xsks.push(io.handover());
                    ios.push(AnyIo::Xdp(io));
                }
                xdp = Some(inh.xdp);
                old_targets = Some(inh.targets);
            }
            (IoKind::Packet, Some(_)) => {
                return Err(DataplaneError::Takeover(
                    "an AF_XDP data plane cannot continue as AF_PACKET".into(),
                ))
            }
            (IoKind::Afxdp, None) => {
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
                    tx_hold_us: cfg.afxdp.tx_hold_us,
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
                    xsks.push(io.handover());
                    ios.push(AnyIo::Xdp(io));
                }
                for p in &ports {
                    let polled = |q: u32| cfg.workers.iter().any(|w| w.queue == q);
                    let missing: Vec<u32> = (0..p.queues.unwrap_or(0).min(MAX_QUEUES as u32))
                        .filter(|q| !polled(*q))
                        .collect();
                    if !missing.is_empty() && cfg.xdp_mode == XdpMode::Native {
                        eprintln!(
                            "{}xvs: warning: {} has rx queue(s) {missing:?} without a worker: service frames arriving there go to the kernel (add [[worker]]s or reduce the queues: ethtool -L {} ...)",
                            crate::systemd::prefix(tracing::Level::WARN),
                            p.name, p.name
                        );
                    }
                }
                if cfg.xdp_mode == XdpMode::Generic && !cfg.workers.iter().any(|w| w.queue == 0) {
                    eprintln!(
                        "{}xvs: warning: generic XDP delivers every frame on queue 0, and no worker polls queue 0",
                        crate::systemd::prefix(tracing::Level::WARN)
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
            (IoKind::Packet, None) => {
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
        let mut refresher = NeighbourRefresher::new(&ports, targets.next_hops.clone());
        let initial = refresher.refresh();

        // Cross-worker handoff: only with several workers (see `steer`).
        let nw = cfg.workers.len();
        let mut handoffs: Vec<Option<Handoff>> = if nw > 1 {
            let sets = Arc::new(steer::SteerSets::new(targets));
            Handoff::mesh(nw, &sets, steer::POOL, steer::INBOX)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            (0..nw).map(|_| None).collect()
        };

        let mut threads = Vec::new();
        let mut stats = Vec::new();
        let mut posts: Vec<Post> = Vec::new();
        let mut pauses = Vec::new();
        for (wi, ((w, io), handoff)) in cfg
            .workers
            .iter()
            .zip(ios)
            .zip(handoffs.drain(..))
            .enumerate()
        {
            let (tx, rx) = inbox::<P::Command>();
            posts.push(poster(tx.clone()));
            let mut proc = factory(wi, &ports, tx);
            for u in &initial {
                apply_neighbour(&mut proc, *u);
            }
            let st = Arc::new(Mutex::new(WorkerStats {
                worker: wi,
                queue: w.queue,
                core: w.core,
                ..WorkerStats::default()
            }));
            stats.push(st.clone());
            let pause = Arc::new(PauseSlot::default());
            pauses.push(pause.clone());
            let ctx = WorkerCtx {
                index: wi,
                queue: w.queue,
                core: w.core,
                epoch,
                stop: stop.clone(),
                stats: st,
                inbox: rx,
                log_every: Duration::from_secs(cfg.log_interval_secs),
                // A handed-over frame waits for the owner's next round: sleep less.
                idle_wait_ms: if handoff.is_some() {
                    cfg.idle_wait_ms.min(1)
                } else {
                    cfg.idle_wait_ms
                },
                handoff,
                pause,
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
        let nposts = posts.clone();
        let neigh = std::thread::Builder::new()
            .name("xvs-neighbours".into())
            .spawn(move || {
                refresher.run(every, &nstop, &nwatch, |u| {
                    for post in &nposts {
                        post(Control::Neighbour(u));
                    }
                })
            })
            .map_err(DataplaneError::Thread)?;
        let mut dp = Dataplane {
            stop,
            threads,
            stats,
            neigh: Some(neigh),
            xdp,
            ports,
            posts,
            targets: old_targets.clone().unwrap_or_else(|| targets.clone()),
            watch,
            steering: nw > 1,
            pauses,
            xsks,
        };
        if old_targets.is_some() {
            dp.set_targets(targets)?;
        }
        Ok(dp)
    }

    /// Stop the workers' receiving for a successor (`xvs run --takeover`): every worker stops
    /// taking frames off its rx rings (they wait there), then forwards the frames other workers
    /// handed it, transmits what it queued and leaves its rings alone; commands are still taken.
    /// Returns each worker's free UMEM chunks. Fails (and resumes) if the I/O cannot be handed
    /// over (AF_PACKET) or a worker does not answer within `wait`.
    pub fn pause(&self, wait: Duration) -> Result<Vec<Vec<u64>>, DataplaneError> {
        if self.xdp.is_none() {
            return Err(DataplaneError::Takeover(
                "only an AF_XDP data plane can be handed over (this one runs AF_PACKET)".into(),
            ));
        }
        for stage in [1u8, 2] {
            for p in &self.pauses {
                p.want.store(stage, Ordering::Release);
            }
            let deadline = Instant::now() + wait;
            while self
                .pauses
                .iter()
                .any(|p| p.reached.load(Ordering::Acquire) < stage)
            {
                if Instant::now() > deadline || self.dead_worker().is_some() {
                    self.resume();
                    return Err(DataplaneError::Takeover(format!(
                        "a worker did not pause within {wait:?}"
                    )));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let mut out = Vec::new();
        for p in &self.pauses {
            match p.free.lock().ok().and_then(|mut f| f.take()) {
                Some(free) => out.push(free),
                None => {
                    self.resume();
                    return Err(DataplaneError::Takeover(
                        "a worker's I/O cannot be handed over".into(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Let paused workers receive again (a takeover that did not happen).
    pub fn resume(&self) {
        for p in &self.pauses {
            p.want.store(0, Ordering::Release);
        }
    }

    /// The descriptors a successor adopts: the XDP program's and each worker's AF_XDP I/O
    /// (valid while this data plane runs); `None` with AF_PACKET.
    pub fn handover(&self) -> Option<(XdpHandover, Vec<XskHandover>)> {
        let x = self.xdp.as_ref()?;
        Some((x.handover(), self.xsks.clone()))
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
            for post in &self.posts {
                post(Control::Steer(sets.clone()));
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
