//! The workers: one thread per configured queue, pinned to its core, polling that queue on every
//! interface (AF_XDP or AF_PACKET) and running each frame through a [`FrameProcessor`] — the
//! quinn-style "thin I/O loop around a sans-I/O core" of DESIGN.md.
//!
//! By job:
//! * [`setup`]: [`Dataplane::start`] sets everything up (XDP program, sockets, neighbour
//!   refresher, threads) and owns the running data plane (live target changes, counters, stop).
//! * `run`: the worker loop — take the inbox's messages, `poll` (batched rx → process → batched
//!   tx), sleep when idle, housekeeping, publish counters.
//! * [`steer`]: with several workers, which worker owns a frame's connection, and the handoff of
//!   frames to their owner.
//!
//! Each worker has **one inbox** ([`Control`]), drained between two batches: neighbour updates
//! and steering sets from the data plane, and commands for its processor
//! ([`FrameProcessor::Command`], e.g. `runtime::Command`) sent through the [`Inbox`] the
//! processor factory receives.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use xvs_forwarding::{Frame, PortId, Time, Verdict};

use crate::io::IoCounters;
use crate::neigh::NeighbourUpdate;

mod run;
pub mod setup;
pub mod steer;

pub use setup::{Dataplane, DataplaneError};

/// What a worker runs on every frame: the forwarding pipeline, or a test processor.
pub trait FrameProcessor: Send {
    /// What the control side sends this processor through the worker's inbox
    /// ([`Control::Processor`], applied by [`FrameProcessor::command`]); `()` if nothing.
    type Command: Send + 'static;

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
    /// Apply a command from the worker's inbox (between two batches, with the current time).
    fn command(&mut self, _now: Time, _cmd: Self::Command) {}
    /// Frames the processor made beyond its verdicts since the last call (the fragments after
    /// the first of a packet too big for its egress port): the worker copies each into `port`'s
    /// TX ring, after the batch that produced them.
    fn extra_frames(&mut self, _send: &mut dyn FnMut(PortId, &[u8])) {}
}

/// Expiry work per loop round (see `ConnTable::expire`).
const HOUSEKEEPING_BUDGET: u32 = 64;

/// The product processor: the forwarding pipeline of `xvs-forwarding`.
impl FrameProcessor for xvs_forwarding::Pipeline {
    type Command = ();

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
    #[inline]
    fn extra_frames(&mut self, send: &mut dyn FnMut(PortId, &[u8])) {
        if self.pending_fragments() > 0 {
            self.drain_fragments(send);
        }
    }
}

/// Addresses the XDP program must steer to the workers, and next hops to keep resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// How connections are spread over workers (see [`steer`](mod@steer)).
    pub client_steering: ClientSteering,
}

/// What decides a connection's worker when there are several. Chosen once at start
/// (`director::start_steering`, `[steering]`) and kept for the life of the process, so that no
/// established connection ever moves to a worker that does not hold it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClientSteering {
    /// Client address and port: the best spread. Persistence templates are then per worker, so
    /// one client's connections may be scheduled by different workers.
    #[default]
    Flow,
    /// Client address masked to these prefix lengths: every connection of a client network is
    /// handled by one worker, so persistence (ipvsadm `-p` with `-M`) with a netmask no longer
    /// than the prefix behaves as in IPVS.
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
    /// The longest loop round since the start (inbox, poll, housekeeping; not the idle wait):
    /// the longest time the worker did not look at its rings.
    pub longest_round: Duration,
    /// The longest inbox drain of a round (commands such as a new snapshot to install), wall
    /// time (it includes any time the thread was preempted meanwhile).
    pub longest_inbox: Duration,
    /// The same drain in the worker thread's CPU time: the work the commands cost it.
    pub longest_inbox_cpu: Duration,
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

/// A message for one worker: the worker's single inbox, drained between two batches.
#[derive(Debug)]
pub enum Control<C> {
    /// A next hop's neighbour entry changed (from the neighbour refresher).
    Neighbour(NeighbourUpdate),
    /// New steering sets after the VIPs, backends or local addresses changed.
    Steer(Arc<steer::SteerSets>),
    /// A command for the worker's processor ([`FrameProcessor::command`]).
    Processor(C),
}

/// The control side's sender into one worker's inbox, for its processor's commands.
/// Unbounded: a command never waits for a busy worker (the answers of request/reply commands
/// carry the timeouts), and the data plane's own messages are never dropped.
#[derive(Debug)]
pub struct Inbox<C> {
    tx: crossbeam_channel::Sender<Control<C>>,
}

impl<C> Clone for Inbox<C> {
    fn clone(&self) -> Self {
        Inbox {
            tx: self.tx.clone(),
        }
    }
}

/// The worker behind an [`Inbox`] has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the worker's inbox is closed (the worker stopped)")]
pub struct InboxClosed;

impl<C> Inbox<C> {
    /// Queue `cmd` for the worker's processor; it is applied between two batches.
    pub fn send(&self, cmd: C) -> Result<(), InboxClosed> {
        self.tx
            .send(Control::Processor(cmd))
            .map_err(|_| InboxClosed)
    }

    pub(crate) fn post(&self, m: Control<C>) -> Result<(), InboxClosed> {
        self.tx.send(m).map_err(|_| InboxClosed)
    }
}

/// A worker inbox: the sender for the control side, the receiver for the worker loop (or a
/// test standing in for it).
pub fn inbox<C>() -> (Inbox<C>, crossbeam_channel::Receiver<Control<C>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (Inbox { tx }, rx)
}

/// Apply a neighbour update to a processor.
pub(crate) fn apply_neighbour<P: FrameProcessor>(p: &mut P, u: NeighbourUpdate) {
    match u {
        NeighbourUpdate::Set { ip, port, mac } => p.set_neighbour(ip, port, mac),
        NeighbourUpdate::Gone { ip } => p.remove_neighbour(ip),
    }
}
