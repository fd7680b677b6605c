//! The worker loop (DESIGN.md's "thin I/O loop"): drain the inbox (neighbour updates, steering
//! sets, processor commands) → `poll` (batched rx → process → batched tx and ring recycling, see
//! `io::afxdp` / `io::packet`; with several workers through [`steer`]) → when idle for a while,
//! sleep in poll(2) for at most `idle_wait_ms` → `housekeeping(now)` → once a second publish
//! counters; every `log_interval_secs` print one line per worker (rx, tx, drops by reason, busy
//! ratio).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use xvs_forwarding::Time;

use super::steer::{self, Handoff};
use super::{apply_neighbour, Control, FrameProcessor, WorkerStats};
use crate::io::{IoCounters, WorkerIo};

/// What a worker thread needs besides its I/O and processor.
pub(super) struct WorkerCtx<C> {
    pub(super) index: usize,
    pub(super) queue: u32,
    pub(super) core: Option<usize>,
    pub(super) epoch: Instant,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) stats: Arc<Mutex<WorkerStats>>,
    pub(super) inbox: Receiver<Control<C>>,
    pub(super) log_every: Duration,
    pub(super) idle_wait_ms: i32,
    pub(super) handoff: Option<Handoff>,
    pub(super) pause: Arc<PauseSlot>,
}

/// A worker's side of a takeover pause ([`super::Dataplane::pause`]): the control side raises
/// `want`, the worker answers in `reached` between two rounds.
#[derive(Debug, Default)]
pub(super) struct PauseSlot {
    /// 0: run; 1: stop receiving (frames wait in the rx rings); 2: also forward the frames
    /// other workers handed over, transmit what is queued and leave the rings alone.
    pub(super) want: AtomicU8,
    /// The stage this worker reached (same numbers).
    pub(super) reached: AtomicU8,
    /// At stage 2: the I/O's free buffers ([`WorkerIo::quiesce`]), `None` if it cannot be
    /// handed over.
    pub(super) free: Mutex<Option<Vec<u64>>>,
}

/// Rounds without a frame before an idle worker sleeps in poll(2).
const SPIN_ROUNDS: u32 = 1024;

/// The worker loop: runs until the stop flag is set, then publishes its counters a last time.
pub(super) fn run_worker<I: WorkerIo, P: FrameProcessor>(
    mut io: I,
    mut proc: P,
    mut ctx: WorkerCtx<P::Command>,
) {
    if let Some(c) = ctx.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            eprintln!(
                "{}xvs: worker {} could not pin itself to CPU {c}",
                crate::systemd::prefix(tracing::Level::WARN),
                ctx.index
            );
        }
    }
    if let Some(h) = ctx.handoff.as_mut() {
        // Allocated here, on the worker's own core.
        h.fill_pool();
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
        let t0 = Instant::now();
        let now = Time(t0.duration_since(ctx.epoch).as_nanos() as u64);
        while let Ok(m) = ctx.inbox.try_recv() {
            match m {
                Control::Neighbour(u) => apply_neighbour(&mut proc, u),
                Control::Steer(sets) => {
                    if let Some(h) = ctx.handoff.as_mut() {
                        h.sets = sets;
                    }
                }
                Control::Processor(cmd) => proc.command(now, cmd),
            }
        }
        let want = ctx.pause.want.load(Ordering::Acquire);
        if want > 0 {
            paused_round(&mut io, &mut proc, &mut ctx, &mut c, want, now);
            continue;
        }
        if ctx.pause.reached.load(Ordering::Relaxed) > 0 {
            ctx.pause.reached.store(0, Ordering::Release);
        }
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
        // Fragments of packets too big for their egress port follow the batch's first ones.
        let mut extra = false;
        proc.extra_frames(&mut |port, bytes| {
            extra |= io.send(port, bytes, &mut c);
        });
        if extra {
            io.flush(&mut c);
        }
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

/// One round of a paused worker: reach stage `want` of [`PauseSlot`], then wait a little.
/// Commands are still taken (the table is read while paused).
fn paused_round<I: WorkerIo, P: FrameProcessor>(
    io: &mut I,
    proc: &mut P,
    ctx: &mut WorkerCtx<P::Command>,
    c: &mut IoCounters,
    want: u8,
    now: Time,
) {
    let reached = ctx.pause.reached.load(Ordering::Relaxed);
    if want >= 2 && reached < 2 {
        // Every worker stopped receiving (stage 1) before any is asked for stage 2, so no
        // frame is handed over after these.
        if let Some(h) = ctx.handoff.as_mut() {
            for _ in 0..64 {
                if steer::drain(ctx.index, io, proc, now, h, c) == 0 {
                    break;
                }
            }
        }
        let free = io.quiesce(c);
        if let Ok(mut slot) = ctx.pause.free.lock() {
            *slot = free;
        }
        ctx.pause.reached.store(2, Ordering::Release);
    } else if reached < 1 {
        io.flush(c);
        ctx.pause.reached.store(1, Ordering::Release);
    }
    std::thread::sleep(Duration::from_micros(50));
}

fn publish<C>(ctx: &WorkerCtx<C>, c: &IoCounters, busy: Duration, elapsed: Duration) {
    if let Ok(mut s) = ctx.stats.lock() {
        s.io = c.clone();
        s.busy = busy;
        s.elapsed = elapsed;
    }
}

fn log_line<C>(
    ctx: &WorkerCtx<C>,
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
