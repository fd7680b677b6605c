//! I/O backends of the director: AF_XDP (`afxdp`, the default) and AF_PACKET with PACKET_MMAP rings
//! (`packet`), the loader of xvs's own XDP program (`xdp`), the NETLINK_ROUTE neighbour dump
//! (`netlink`), the announce TUN device (`tun`), the few interface queries the workers need (`sys`)
//! and the allocator that backs the big arrays with transparent huge pages (`hugepages`).
//!
//! All `unsafe` of the `xvs` crate lives in this module, each block with a `// SAFETY:` comment
//! covering one unsafe operation. The workspace lints enforce it: `unsafe_code` is denied
//! everywhere else (`src/lib.rs` allows it for this module only), and clippy's
//! `undocumented_unsafe_blocks` and `multiple_unsafe_ops_per_block` run with `-D warnings`.
//! Every syscall goes through a helper that names the call in its error ([`IoError`]).
//!
//! Both backends implement [`WorkerIo`]: one value per worker owning that worker's sockets on every
//! configured interface (port `i` = the `i`-th `[[interface]]`). `poll` receives a batch on each
//! port, hands each frame to the worker's closure and transmits the frames whose verdict is
//! `Tx(port)` on that port, so frames may leave by another interface than they came in.

pub mod afxdp;
pub mod fdpass;
pub mod hugepages;
pub mod netlink;
pub mod packet;
pub mod sys;
pub mod tun;
pub mod xdp;

use std::io;

use xvs_forwarding::{DropCounters, Frame, PortId, Verdict};

/// An I/O error, naming the syscall (or library call) that failed, what it was doing, the OS
/// error and, where we know one, the likely cause. A leaf: its text carries the OS error, so it
/// has no `source()` (error chains print each cause once).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{call} failed ({what}): {err}")]
    Syscall {
        call: &'static str,
        what: String,
        err: io::Error,
    },
    #[error("{call} failed ({what}): {err}; {hint}")]
    Hinted {
        call: &'static str,
        what: String,
        hint: String,
        err: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl IoError {
    pub(crate) fn sys(call: &'static str, what: impl Into<String>, err: io::Error) -> Self {
        IoError::Syscall {
            call,
            what: what.into(),
            err,
        }
    }

    pub(crate) fn last(call: &'static str, what: impl Into<String>) -> Self {
        Self::sys(call, what, io::Error::last_os_error())
    }

    pub(crate) fn hinted(
        call: &'static str,
        what: impl Into<String>,
        hint: impl Into<String>,
        err: io::Error,
    ) -> Self {
        IoError::Hinted {
            call,
            what: what.into(),
            hint: hint.into(),
            err,
        }
    }

    /// The OS error number, if this is a failed syscall.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IoError::Syscall { err, .. } | IoError::Hinted { err, .. } => err.raw_os_error(),
            IoError::Invalid(_) => None,
        }
    }
}

/// Most frames handed to the processing closure at once (and bits of its `consumed` mask).
pub const MAX_BATCH: usize = 64;

/// Per-worker I/O counters. Plain integers: only the owning worker writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Frames received (all ports).
    pub rx: u64,
    /// Frames handed to the kernel's transmit path (all ports).
    pub tx: u64,
    /// Frames with `Verdict::Pass`. AF_XDP cannot give a frame back to the kernel, so these are
    /// dropped there (the XDP program already passes what is not the director's); AF_PACKET leaves
    /// the kernel's own copy alone.
    pub pass: u64,
    /// Frames lost because the egress TX ring stayed full after a kick.
    pub tx_ring_full: u64,
    /// `Verdict::Tx` to a port that does not exist.
    pub tx_bad_port: u64,
    /// Descriptors from the kernel that pointed outside the frame area (never expected).
    pub rx_bad_desc: u64,
    /// Frames handed to the worker that owns their connection.
    pub handoff_out: u64,
    /// Frames received from other workers.
    pub handoff_in: u64,
    /// Frames dropped because the owner's inbox or the buffer pool was full.
    pub handoff_full: u64,
    /// Frames the kernel dropped before the worker saw them, as its AF_XDP sockets report
    /// (`XDP_STATISTICS`, totals since the sockets were bound, read about once a second by
    /// [`WorkerIo::kernel_stats`]): no free buffer on the fill ring (`rx_dropped`), and the rx
    /// ring full (`rx_ring_full`) — the worker fell behind.
    pub xsk_no_buffer: u64,
    pub xsk_rx_ring_full: u64,
    /// Frames dropped by the processor, by reason.
    pub drops: DropCounters,
    /// System calls the worker's I/O made: sendto(2) (TX kicks), recvfrom(2) (RX/fill
    /// wakeups), poll(2) (idle waits).
    pub sys_sendto: u64,
    pub sys_recvfrom: u64,
    pub sys_poll: u64,
    /// Batches handed to the processor (each of at least one frame): `rx / rx_batches` is the
    /// number of frames per batch the rings delivered.
    pub rx_batches: u64,
    /// Rounds of the worker loop (one `WorkerIo::poll` each, with or without frames).
    pub rounds: u64,
}

impl IoCounters {
    /// Frames lost in the I/O layer (not by the processor), by reason: `tx_ring_full`,
    /// `tx_bad_port`, `rx_bad_desc`, `handoff_full`, and the kernel's `xsk_no_buffer`,
    /// `xsk_rx_ring_full`.
    pub fn io_drops(&self) -> [(&'static str, u64); 6] {
        [
            ("tx_ring_full", self.tx_ring_full),
            ("tx_bad_port", self.tx_bad_port),
            ("rx_bad_desc", self.rx_bad_desc),
            ("handoff_full", self.handoff_full),
            ("xsk_no_buffer", self.xsk_no_buffer),
            ("xsk_rx_ring_full", self.xsk_rx_ring_full),
        ]
    }

    pub fn add(&mut self, o: &IoCounters) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.pass += o.pass;
        self.tx_ring_full += o.tx_ring_full;
        self.tx_bad_port += o.tx_bad_port;
        self.rx_bad_desc += o.rx_bad_desc;
        self.handoff_out += o.handoff_out;
        self.handoff_in += o.handoff_in;
        self.handoff_full += o.handoff_full;
        self.xsk_no_buffer += o.xsk_no_buffer;
        self.xsk_rx_ring_full += o.xsk_rx_ring_full;
        self.drops.add(&o.drops);
        self.sys_sendto += o.sys_sendto;
        self.sys_recvfrom += o.sys_recvfrom;
        self.sys_poll += o.sys_poll;
        self.rx_batches += o.rx_batches;
        self.rounds += o.rounds;
    }

    /// System calls of the worker's I/O by name: `sendto`, `recvfrom`, `poll`.
    pub fn syscalls(&self) -> [(&'static str, u64); 3] {
        [
            ("sendto", self.sys_sendto),
            ("recvfrom", self.sys_recvfrom),
            ("poll", self.sys_poll),
        ]
    }

    /// How the I/O batched, by name: `rx_batches` and `rounds` (see the fields).
    pub fn batching(&self) -> [(&'static str, u64); 2] {
        [("rx_batches", self.rx_batches), ("rounds", self.rounds)]
    }

    /// Frames per receive batch (`rx / rx_batches`), `None` before the first batch.
    pub fn frames_per_batch(&self) -> Option<f64> {
        (self.rx_batches > 0).then(|| self.rx as f64 / self.rx_batches as f64)
    }

    /// Frames transmitted per TX kick (`tx / sendto`), `None` before the first kick.
    pub fn frames_per_kick(&self) -> Option<f64> {
        (self.sys_sendto > 0).then(|| self.tx as f64 / self.sys_sendto as f64)
    }

    #[inline]
    pub(crate) fn count_verdict(&mut self, v: Verdict) {
        match v {
            Verdict::Tx(_) => {}
            Verdict::Pass => self.pass += 1,
            Verdict::Drop(r) => self.drops.bump(r),
        }
    }
}

/// The sockets of one worker on every port, polled by the worker loop.
pub trait WorkerIo {
    /// Receive up to one batch on every port and call `f(ingress, frames, verdicts, consumed)`
    /// with the frames that arrived on `ingress` (at most [`MAX_BATCH`] per call, in arrival
    /// order). `f` sets `verdicts[i]` for `frames[i]` — or bit `i` of `consumed` when the frame
    /// was taken care of elsewhere (copied to another worker), which releases it uncounted.
    /// Frames with `Tx(port)` are transmitted on `port`, the others released. Returns the number
    /// of frames received. Never blocks.
    fn poll<F>(&mut self, f: &mut F, c: &mut IoCounters) -> usize
    where
        F: FnMut(PortId, &mut [Frame<'_>], &mut [Verdict], &mut u64);

    /// Copy one frame into the transmit ring of `port` (frames handed over by another worker).
    /// False if there was no room (counted in `tx_ring_full`).
    fn send(&mut self, port: PortId, data: &[u8], c: &mut IoCounters) -> bool;

    /// Kick every TX ring that has frames queued by `send`.
    fn flush(&mut self, c: &mut IoCounters);

    /// Block until a port may have frames or `timeout_ms` passed (the idle path of the loop).
    fn wait(&mut self, timeout_ms: i32, c: &mut IoCounters);

    /// Read the kernel's own drop counters of this I/O into `c` (AF_XDP: `XDP_STATISTICS` of
    /// every socket, summed; the others have none). Called about once a second.
    fn kernel_stats(&mut self, _c: &mut IoCounters) {}

    /// Stop touching the rings for a successor process (`xvs run --takeover`): transmit what is
    /// queued and return the buffers on no ring (AF_XDP: the free UMEM chunks), or `None` if
    /// this backend cannot be handed over. After this the caller does not poll until it resumes.
    fn quiesce(&mut self, _c: &mut IoCounters) -> Option<Vec<u64>> {
        None
    }
}

/// Wait for readability on `fds` with poll(2); errors (EINTR) are ignored: the loop polls again.
pub(crate) fn poll_fds(fds: &[i32], timeout_ms: i32, c: &mut IoCounters) {
    c.sys_poll += 1;
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 16];
    let n = fds.len().min(pfds.len());
    for (p, &fd) in pfds.iter_mut().zip(fds.iter()) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    // SAFETY: `pfds` is a valid array of `n` initialised pollfd structs that outlives the call.
    unsafe {
        libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms);
    }
}
