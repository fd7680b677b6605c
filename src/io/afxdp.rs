//! AF_XDP worker I/O, hand-rolled over the kernel ABI (`linux/if_xdp.h`,
//! Documentation/networking/af_xdp.rst), with need_wakeup; copy mode by default (the only mode
//! on veth), zero-copy on request (`afxdp.bind = "zerocopy"` or `"auto"`).
//!
//! **UMEM sharing.** Each worker owns one UMEM (a page-aligned area cut into power-of-two chunks)
//! shared by its sockets on *all* interfaces, bound at the worker's queue id: the first socket
//! registers the UMEM, the others bind with `XDP_SHARED_UMEM` and their own fill and completion
//! rings (the kernel requires those for another device or queue). A frame received on interface
//! A is transmitted on interface B by putting the same chunk address on B's TX ring: no copy,
//! which NAT, TUN and FullNAT need all the time (frames leave by another interface than they came
//! in). The alternative, a UMEM per socket, would cost a copy per forwarded frame. Nothing is
//! shared between workers, so no locks: chunks circulate rx → (tx → completion) → free list →
//! fill ring within one thread.
//!
//! **Headroom.** In copy mode the kernel writes a received frame at chunk + UMEM headroom +
//! XDP_PACKET_HEADROOM (256); the whole chunk is handed to the processor as the `Frame` buffer,
//! so TUN encapsulation (20/40 bytes + VLAN) grows into those bytes, and the TX descriptor takes
//! the frame's new start (any address inside the chunk is valid in aligned mode).
//!
//! **TX.** Copy-mode TX sends at most 32 frames per `sendto()` (the kernel's TX_BATCH_SIZE), so
//! the ring is kicked after every ≤ 32 descriptors (TESTBED.md). Every round kicks what it
//! queued, unless `tx_hold_us` is set: then a last part of fewer than 32 frames waits, for at
//! most that long, for later rounds to fill it up to 32 (fewer sendto(2) calls per frame); an
//! idle or stopping worker sends it before it sleeps or exits. Why not xsk-rs: its frame
//! descriptors hide the address, so a frame cannot grow into its headroom without a memmove, and
//! its per-frame access is `unsafe` anyway; the rings here are ~200 lines over the same ABI.

use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xvs_forwarding::{Frame, PortId, Verdict};

use super::sys::{self, Mmap};
use super::{IoCounters, IoError, WorkerIo, MAX_BATCH};

/// XDP_PACKET_HEADROOM: what the kernel reserves in front of a received frame.
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Sizes of one worker's AF_XDP setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskParams {
    /// Entries of each ring (rx, tx, fill, completion); a power of two.
    pub ring_size: u32,
    /// UMEM chunk size; a power of two, 2048 or 4096.
    pub chunk_size: u32,
    /// Extra UMEM headroom in front of XDP_PACKET_HEADROOM.
    pub headroom: u32,
    /// Frames taken from each rx ring per poll.
    pub batch: u32,
    /// Bind with XDP_USE_NEED_WAKEUP.
    pub need_wakeup: bool,
    /// Copy or zero-copy binding.
    pub mode: BindMode,
    /// How long (µs) the last part of a round's TX (fewer than 32 frames on a port) may wait
    /// for later rounds to fill it up to 32 before it is kicked anyway; 0: kick every round.
    pub tx_hold_us: u32,
}

/// How the sockets bind: copy mode works with every driver (and is the only mode on veth);
/// zero-copy needs driver support. `Auto` tries zero-copy and falls back to copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    #[default]
    Copy,
    Zerocopy,
    Auto,
}

impl Default for XskParams {
    fn default() -> Self {
        XskParams {
            ring_size: 2048,
            chunk_size: 4096,
            headroom: 0,
            batch: 64,
            need_wakeup: true,
            mode: BindMode::Copy,
            tx_hold_us: 0,
        }
    }
}

/// Where a ring's pieces live inside its mmap. The three index words are only ever accessed
/// atomically (by us and by the kernel); no reference or slice covers them.
struct RingPtrs {
    _map: Mmap,
    producer: *mut u32,
    consumer: *mut u32,
    flags: *mut u32,
    descs: *mut u8,
    mask: u32,
    size: u32,
}

impl RingPtrs {
    /// Locate the ring's parts in `map` from the offsets of XDP_MMAP_OFFSETS, checking that each
    /// index word is aligned and inside the mapping and that `size` entries of `entry` bytes fit
    /// after `off.desc` (what the accessors below rely on).
    fn new(
        map: Mmap,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        what: &str,
    ) -> Result<RingPtrs, IoError> {
        let len = map.len();
        let word_ok =
            |o: u64| o.is_multiple_of(4) && o.checked_add(4).is_some_and(|e| e <= len as u64);
        let descs_end = (size as u64)
            .checked_mul(entry as u64)
            .and_then(|n| n.checked_add(off.desc));
        if !size.is_power_of_two()
            || !word_ok(off.producer)
            || !word_ok(off.consumer)
            || !word_ok(off.flags)
            || !off.desc.is_multiple_of(8)
            || descs_end.is_none_or(|e| e > len as u64)
        {
            return Err(IoError::Invalid(format!(
                "{what}: ring layout from XDP_MMAP_OFFSETS does not fit its {len}-byte map"
            )));
        }
        let base = map.ptr();
        // SAFETY: each offset was checked above to lie inside the mapping.
        let producer = unsafe { base.add(off.producer as usize) }.cast::<u32>();
        // SAFETY: see above.
        let consumer = unsafe { base.add(off.consumer as usize) }.cast::<u32>();
        // SAFETY: see above.
        let flags = unsafe { base.add(off.flags as usize) }.cast::<u32>();
        // SAFETY: see above.
        let descs = unsafe { base.add(off.desc as usize) };
        Ok(RingPtrs {
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            _map: map,
        })
    }

    /// The shared index word at `p` (one of the three fields) as an atomic.
    #[inline]
    fn word(&self, p: *mut u32) -> &AtomicU32 {
        // SAFETY: `p` is one of producer/consumer/flags: aligned and inside the mapping
        // (checked in `new`), which lives as long as `self` (`_map`); the word is only ever
        // accessed atomically, by the kernel and through this function.
        unsafe { AtomicU32::from_ptr(p) }
    }

    #[inline]
    fn load_producer(&self) -> u32 {
        self.word(self.producer).load(Ordering::Acquire)
    }

    #[inline]
    fn load_consumer(&self) -> u32 {
        self.word(self.consumer).load(Ordering::Acquire)
    }

    /// Release publishes the descriptors written before.
    #[inline]
    fn store_producer(&self, v: u32) {
        self.word(self.producer).store(v, Ordering::Release)
    }

    /// Release hands the read slots back to the kernel.
    #[inline]
    fn store_consumer(&self, v: u32) {
        self.word(self.consumer).store(v, Ordering::Release)
    }

    #[inline]
    fn needs_wakeup(&self) -> bool {
        self.word(self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// A ring user space produces into (fill: u64 addresses, tx: xdp_desc).
struct ProdRing<T: Copy> {
    r: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
    _t: std::marker::PhantomData<T>,
}

impl<T: Copy> ProdRing<T> {
    fn new(r: RingPtrs) -> Self {
        let cached_prod = r.load_producer();
        let cached_cons = r.load_consumer();
        ProdRing {
            r,
            cached_prod,
            cached_cons,
            _t: std::marker::PhantomData,
        }
    }

    /// Free slots, refreshing the consumer index only when the cached view says fewer than `want`.
    #[inline]
    fn free(&mut self, want: u32) -> u32 {
        let free = self.r.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.r.load_consumer();
        self.r.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Write entry `i` past the cached producer (caller checked `free`).
    #[inline]
    fn write(&mut self, i: u32, v: T) {
        let idx = (self.cached_prod.wrapping_add(i) & self.r.mask) as usize;
        // SAFETY: idx ≤ mask < size and `RingPtrs::new` checked that `size` entries fit after
        // `descs` (T is the ring's entry type, u64 or xdp_desc), so the slot is in the mapping.
        let slot = unsafe { self.r.descs.cast::<T>().add(idx) };
        // SAFETY: the slot is inside the mapping and 8-byte aligned (`descs` is, and both entry
        // types are 8 or 16 bytes); it is free (the caller checked `free`), so the kernel does
        // not read it until `submit` publishes it.
        unsafe { slot.write(v) }
    }

    #[inline]
    fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.r.store_producer(self.cached_prod);
    }

    /// Entries submitted that the kernel has not consumed yet.
    #[inline]
    fn outstanding(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.r.load_consumer())
    }
}

/// A ring user space consumes from (rx: xdp_desc, completion: u64 addresses).
struct ConsRing<T: Copy> {
    r: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
    _t: std::marker::PhantomData<T>,
}

impl<T: Copy> ConsRing<T> {
    fn new(r: RingPtrs) -> Self {
        let cached_prod = r.load_producer();
        let cached_cons = r.load_consumer();
        ConsRing {
            r,
            cached_prod,
            cached_cons,
            _t: std::marker::PhantomData,
        }
    }

    /// Entries ready to read, at most `max`; re-reads the kernel's producer index whenever the
    /// cached view holds fewer than `max`, so a batch takes everything the kernel has published.
    #[inline]
    fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n < max {
            self.cached_prod = self.r.load_producer();
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max)
    }

    #[inline]
    fn read(&self, i: u32) -> T {
        let idx = (self.cached_cons.wrapping_add(i) & self.r.mask) as usize;
        // SAFETY: idx < size, inside the checked descriptor array (see `ProdRing::write`).
        let slot = unsafe { self.r.descs.cast::<T>().add(idx) };
        // SAFETY: aligned slot in the mapping, published by the kernel (acquire load of the
        // producer) and not rewritten until `release` hands it back.
        unsafe { slot.read() }
    }

    #[inline]
    fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.r.store_consumer(self.cached_cons);
    }
}

/// The UMEM area of one worker.
struct Umem {
    map: Mmap,
    chunk_size: u64,
    /// Per chunk, the batch number in which it was last claimed (duplicate guard).
    claimed: Vec<u32>,
    batch_no: u32,
}

impl Umem {
    fn new(map: Mmap, chunk_size: u64) -> Umem {
        let chunks = map.len() / chunk_size as usize;
        Umem {
            map,
            chunk_size,
            claimed: vec![0; chunks],
            batch_no: 0,
        }
    }

    /// Start a new batch of claims.
    #[inline]
    fn next_batch(&mut self) {
        self.batch_no = self.batch_no.wrapping_add(1);
        if self.batch_no == 0 {
            self.claimed.iter_mut().for_each(|c| *c = 0);
            self.batch_no = 1;
        }
    }

    /// Claim the chunk holding `addr` for this batch: its base offset and start pointer, or
    /// `None` if the address is outside the area or the chunk was already claimed in this batch
    /// (the kernel never hands out a chunk twice; the guard makes aliasing impossible anyway).
    #[inline]
    fn claim(&mut self, addr: u64) -> Option<(u64, *mut u8)> {
        let base = addr & !(self.chunk_size - 1);
        let idx = (base / self.chunk_size) as usize;
        let seen = self.claimed.get_mut(idx)?;
        if *seen == self.batch_no {
            return None;
        }
        *seen = self.batch_no;
        // SAFETY: idx < chunks, so base + chunk_size ≤ the mapping's length.
        Some((base, unsafe { self.map.ptr().add(base as usize) }))
    }

    /// The chunk containing `addr` as the frame buffer, and the offset of `addr` in it; `None` if
    /// the address is outside the area.
    #[inline]
    fn chunk(&mut self, addr: u64) -> Option<(u64, &mut [u8])> {
        let base = addr & !(self.chunk_size - 1);
        if base.checked_add(self.chunk_size)? > self.map.len() as u64 {
            return None;
        }
        // SAFETY: [base, base + chunk_size) lies inside the UMEM mapping (checked above).
        let start = unsafe { self.map.ptr().add(base as usize) };
        // SAFETY: the chunk is inside the mapping and belongs to user space right now: it is on
        // no kernel ring (a free chunk) until we put it on a tx or fill ring, which happens after
        // this borrow ends (the returned slice borrows `self` mutably, so no second view of it
        // can exist).
        let s = unsafe { std::slice::from_raw_parts_mut(start, self.chunk_size as usize) };
        Some((base, s))
    }
}

/// One AF_XDP socket bound to (interface, queue), with its four rings.
pub struct XskSocket {
    rx: ConsRing<libc::xdp_desc>,
    tx: ProdRing<libc::xdp_desc>,
    fill: ProdRing<u64>,
    comp: ConsRing<u64>,
    fd: OwnedFd,
    pub ifindex: u32,
    pub queue: u32,
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.fd)
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .finish()
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn mmap_offsets(fd: RawFd) -> Result<libc::xdp_mmap_offsets, IoError> {
    // SAFETY: plain old data.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `off`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(IoError::last(
            "getsockopt(XDP_MMAP_OFFSETS)",
            "AF_XDP ring layout",
        ));
    }
    Ok(off)
}

/// The kernel's counters of one AF_XDP socket (`XDP_STATISTICS`), or `None` if the call fails.
fn xsk_statistics(fd: RawFd) -> Option<libc::xdp_statistics> {
    // SAFETY: plain old data.
    let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `st`, which outlives the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut st as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(st)
}

/// An interface and queue to bind, for error messages.
#[derive(Clone, Debug)]
pub struct BindTarget {
    pub ifname: String,
    pub ifindex: u32,
    pub queue: u32,
    /// Queue count if known (ETHTOOL_GCHANNELS).
    pub queues: Option<u32>,
}

/// The sockets of one worker on every port, sharing one UMEM. Field order matters: sockets are
/// closed before the UMEM they use is unmapped.
pub struct AfXdpIo {
    sockets: Vec<XskSocket>,
    free: Vec<u64>,
    tx_pending: Vec<Vec<libc::xdp_desc>>,
    /// Per port, since when the frames left in `tx_pending` after a round have waited
    /// (`XskParams::tx_hold_us`); `None` while nothing is held.
    held_since: Vec<Option<Instant>>,
    fds: Vec<i32>,
    params: XskParams,
    umem: Umem,
    /// The memory file behind the UMEM, so that a successor process can map the same area
    /// (`xvs run --takeover`).
    umem_fd: OwnedFd,
}

/// One worker's AF_XDP I/O as a successor process takes it over (descriptors borrowed from the
/// running [`AfXdpIo`]; see [`AfXdpIo::handover`] and [`AfXdpIo::adopt`]).
#[derive(Clone, Debug)]
pub struct XskHandover {
    /// The UMEM's memory file.
    pub umem_fd: RawFd,
    /// Each port's socket: (descriptor, ifindex, queue).
    pub sockets: Vec<(RawFd, u32, u32)>,
    pub params: XskParams,
}

// SAFETY: an AfXdpIo exclusively owns its sockets, rings and UMEM (raw pointers into mappings
// nobody else in the process touches). It is built on the control thread and then moved to, and
// used only by, one worker thread; it is not Sync.
unsafe impl Send for AfXdpIo {}

impl std::fmt::Debug for AfXdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpIo")
            .field("sockets", &self.sockets)
            .field("free", &self.free.len())
            .field("params", &self.params)
            .finish()
    }
}

impl AfXdpIo {
    /// Create the UMEM and one socket per target (port i = `targets[i]`), all at the same queue.
    /// With `BindMode::Auto`, zero-copy is tried first and copy mode used if the driver refuses.
    pub fn new(targets: &[BindTarget], params: XskParams) -> Result<AfXdpIo, IoError> {
        if params.mode != BindMode::Auto {
            return Self::new_in(targets, params);
        }
        let zc = XskParams {
            mode: BindMode::Zerocopy,
            ..params
        };
        match Self::new_in(targets, zc) {
            Ok(io) => Ok(io),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                ) =>
            {
                Self::new_in(
                    targets,
                    XskParams {
                        mode: BindMode::Copy,
                        ..params
                    },
                )
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the sockets run in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.params.mode == BindMode::Zerocopy
    }

    fn new_in(targets: &[BindTarget], params: XskParams) -> Result<AfXdpIo, IoError> {
        if targets.is_empty() {
            return Err(IoError::Invalid("AF_XDP worker without interfaces".into()));
        }
        let p = params;
        if !p.ring_size.is_power_of_two()
            || !p.chunk_size.is_power_of_two()
            || !(2048..=4096).contains(&p.chunk_size)
            || p.headroom + XDP_PACKET_HEADROOM + 1600 > p.chunk_size
        {
            return Err(IoError::Invalid(format!("bad AF_XDP sizes {p:?}")));
        }
        for t in targets {
            if let Some(q) = t.queues {
                if t.queue >= q {
                    return Err(IoError::Invalid(format!(
                        "queue {} does not exist on {}: it has {q} queue(s) (ethtool -l {}; veth: numrxqueues)",
                        t.queue, t.ifname, t.ifname
                    )));
                }
            }
        }
        let n_sock = targets.len() as u64;
        let chunks = n_sock * 2 * p.ring_size as u64;
        let len = chunks * p.chunk_size as u64;
        let umem_fd = sys::memfd("xvs-umem", len)?;
        let map = Mmap::shared_file(umem_fd.as_raw_fd(), len as usize, "AF_XDP UMEM area")?;
        let mut umem = Umem::new(map, p.chunk_size as u64);
        let mut sockets: Vec<XskSocket> = Vec::with_capacity(targets.len());
        for t in targets {
            let owner = sockets.first().map(|s| s.fd.as_raw_fd());
            sockets.push(create_socket(&mut umem, t, owner, &p)?);
        }
        let free: Vec<u64> = (0..chunks).map(|i| i * p.chunk_size as u64).collect();
        let fds = sockets.iter().map(|s| s.fd.as_raw_fd()).collect();
        let mut me = AfXdpIo {
            tx_pending: (0..sockets.len())
                // A round queues at most one batch per port on one port, plus a handoff burst
                // (< 32) and a held remainder (< 32, `tx_hold_us`).
                .map(|_| Vec::with_capacity(p.batch as usize * sockets.len() + 64))
                .collect(),
            held_since: vec![None; sockets.len()],
            sockets,
            free,
            fds,
            params: p,
            umem,
            umem_fd,
        };
        for i in 0..me.sockets.len() {
            me.refill(i);
        }
        Ok(me)
    }

    /// The descriptors and sizes a successor needs to adopt this I/O ([`AfXdpIo::adopt`]).
    pub fn handover(&self) -> XskHandover {
        XskHandover {
            umem_fd: self.umem_fd.as_raw_fd(),
            sockets: self
                .sockets
                .iter()
                .map(|s| (s.fd.as_raw_fd(), s.ifindex, s.queue))
                .collect(),
            params: self.params,
        }
    }

    /// Take over the I/O a predecessor process handed over: map its UMEM (`umem`, the memory
    /// file) and the four rings of each bound socket (`sockets[i]` = port i: descriptor,
    /// ifindex, queue), with the sizes it ran with (`params`), and start from its free chunks
    /// (`free`: the chunks on no ring when it stopped; every other chunk is on a fill, rx, tx or
    /// completion ring and comes back through them). Only reads the rings: the predecessor may
    /// still resume until the first [`WorkerIo::poll`] of the result.
    pub fn adopt(
        umem: OwnedFd,
        sockets: Vec<(OwnedFd, u32, u32)>,
        params: XskParams,
        free: &[u64],
    ) -> Result<AfXdpIo, IoError> {
        let p = params;
        if sockets.is_empty()
            || !p.ring_size.is_power_of_two()
            || !p.chunk_size.is_power_of_two()
            || !(2048..=4096).contains(&p.chunk_size)
        {
            return Err(IoError::Invalid(format!(
                "handed-over AF_XDP I/O with {} socket(s) and sizes {p:?}",
                sockets.len()
            )));
        }
        let len = sys::file_len(&umem)?;
        let want = sockets.len() as u64 * 2 * p.ring_size as u64 * p.chunk_size as u64;
        if len != want {
            return Err(IoError::Invalid(format!(
                "handed-over UMEM has {len} bytes, {want} expected for its sockets and sizes"
            )));
        }
        let chunk = p.chunk_size as u64;
        let mut seen = vec![false; (len / chunk) as usize];
        for &a in free {
            let i = (a / chunk) as usize;
            if a % chunk != 0 || i >= seen.len() || std::mem::replace(&mut seen[i], true) {
                return Err(IoError::Invalid(format!(
                    "handed-over free chunk {a:#x} is misaligned, outside the UMEM or repeated"
                )));
            }
        }
        let map = Mmap::shared_file(umem.as_raw_fd(), len as usize, "handed-over UMEM")?;
        let umem_area = Umem::new(map, chunk);
        let mut socks = Vec::with_capacity(sockets.len());
        for (fd, ifindex, queue) in sockets {
            let what = |s: &str| format!("handed-over {s} of ifindex {ifindex} queue {queue}");
            let (rx, tx, fill, comp) = map_rings(fd.as_raw_fd(), p.ring_size, &what)?;
            socks.push(XskSocket {
                rx: ConsRing::new(rx),
                tx: ProdRing::new(tx),
                fill: ProdRing::new(fill),
                comp: ConsRing::new(comp),
                fd,
                ifindex,
                queue,
            });
        }
        let fds = socks.iter().map(|s| s.fd.as_raw_fd()).collect();
        Ok(AfXdpIo {
            tx_pending: (0..socks.len())
                .map(|_| Vec::with_capacity(p.batch as usize + 64))
                .collect(),
            held_since: vec![None; socks.len()],
            sockets: socks,
            free: free.to_vec(),
            fds,
            params: p,
            umem: umem_area,
            umem_fd: umem,
        })
    }

    /// The sockets, in port order (to register them in the XSKMAP).
    pub fn sockets(&self) -> &[XskSocket] {
        &self.sockets
    }

    fn refill(&mut self, i: usize) {
        let s = &mut self.sockets[i];
        let n = s
            .fill
            .free(self.free.len() as u32)
            .min(self.free.len() as u32);
        if n == 0 {
            return;
        }
        for k in 0..n {
            // Unwrap-free: n ≤ free.len().
            if let Some(a) = self.free.pop() {
                s.fill.write(k, a);
            }
        }
        s.fill.submit(n);
    }

    fn reap(&mut self, i: usize) {
        let s = &mut self.sockets[i];
        let n = s.comp.available(s.comp.r.size);
        for k in 0..n {
            let a = s.comp.read(k);
            self.free.push(a & !(self.params.chunk_size as u64 - 1));
        }
        if n > 0 {
            s.comp.release(n);
        }
    }

    /// Transmit the first `count` frames queued for port `p` (kicking per ≤ 32); the rest stays
    /// queued.
    fn flush_tx(&mut self, p: usize, count: usize, c: &mut IoCounters) {
        let mut pending = std::mem::take(&mut self.tx_pending[p]);
        let count = count.min(pending.len());
        let mut done = 0usize;
        while done < count {
            let want = (count - done).min(32) as u32;
            let mut room = self.sockets[p].tx.free(want);
            if room == 0 {
                // Ring full: let the kernel send what is queued, take back completions, retry once.
                sys::kick_tx(self.sockets[p].fd.as_raw_fd());
                c.sys_sendto += 1;
                self.reap(p);
                room = self.sockets[p].tx.free(want);
                if room == 0 {
                    for d in &pending[done..count] {
                        self.free
                            .push(d.addr & !(self.params.chunk_size as u64 - 1));
                    }
                    c.tx_ring_full += (count - done) as u64;
                    break;
                }
            }
            let n = want.min(room);
            let s = &mut self.sockets[p];
            for k in 0..n {
                s.tx.write(k, pending[done + k as usize]);
            }
            s.tx.submit(n);
            done += n as usize;
            c.tx += n as u64;
            // Copy mode: one sendto() transmits at most 32 frames, so kick every ≤ 32. Zero-copy:
            // the driver sends on its own unless it asks for a wakeup.
            if self.params.mode != BindMode::Zerocopy || s.tx.r.needs_wakeup() {
                sys::kick_tx(s.fd.as_raw_fd());
                c.sys_sendto += 1;
            }
        }
        pending.drain(..count);
        self.tx_pending[p] = pending;
        if self.tx_pending[p].is_empty() {
            self.held_since[p] = None;
        }
    }

    /// Transmit everything queued for port `p`.
    fn flush_all(&mut self, p: usize, c: &mut IoCounters) {
        let n = self.tx_pending[p].len();
        self.flush_tx(p, n, c);
    }

    /// The end of a round's TX on port `p`: everything goes out, except that with
    /// `tx_hold_us` a last part of fewer than 32 frames stays queued (whole 32s go out) until
    /// the oldest of it has waited `tx_hold_us`.
    fn flush_round(&mut self, p: usize, c: &mut IoCounters) {
        let n = self.tx_pending[p].len();
        if n == 0 {
            return;
        }
        if self.params.tx_hold_us == 0 {
            self.flush_tx(p, n, c);
            return;
        }
        let now = Instant::now();
        let since = *self.held_since[p].get_or_insert(now);
        if now.duration_since(since) >= Duration::from_micros(self.params.tx_hold_us as u64) {
            self.flush_tx(p, n, c);
            return;
        }
        let whole = n - n % 32;
        if whole > 0 {
            self.flush_tx(p, whole, c);
            // The frames still queued arrived in this round.
            if !self.tx_pending[p].is_empty() {
                self.held_since[p] = Some(now);
            }
        }
    }
}

/// Map the rx, tx, fill and completion rings (`size` entries each) of socket `raw`.
fn map_rings(
    raw: RawFd,
    size: u32,
    what: &dyn Fn(&str) -> String,
) -> Result<(RingPtrs, RingPtrs, RingPtrs, RingPtrs), IoError> {
    let off = mmap_offsets(raw)?;
    let desc_sz = size_of::<libc::xdp_desc>();
    let map = |o: &libc::xdp_ring_offset, entry: usize, pgoff: u64, name: &str| {
        Mmap::socket(
            raw,
            o.desc as usize + size as usize * entry,
            pgoff,
            &what(name),
        )
        .and_then(|m| RingPtrs::new(m, o, size, entry, &what(name)))
    };
    let fill = map(&off.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING, "fill ring")?;
    let comp = map(
        &off.cr,
        8,
        libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        "completion ring",
    )?;
    let rx = map(&off.rx, desc_sz, libc::XDP_PGOFF_RX_RING as u64, "rx ring")?;
    let tx = map(&off.tx, desc_sz, libc::XDP_PGOFF_TX_RING as u64, "tx ring")?;
    Ok((rx, tx, fill, comp))
}

fn create_socket(
    umem: &mut Umem,
    t: &BindTarget,
    owner: Option<RawFd>,
    p: &XskParams,
) -> Result<XskSocket, IoError> {
    let what = |s: &str| format!("{s} for {} queue {}", t.ifname, t.queue);
    let fd = match sys::socket(libc::AF_XDP, libc::SOCK_RAW, 0, "AF_XDP") {
        Ok(fd) => fd,
        Err(e) => {
            let hint = match e.raw_os_error() {
                Some(libc::EAFNOSUPPORT) => {
                    "the kernel lacks AF_XDP sockets (CONFIG_XDP_SOCKETS); use --io packet"
                }
                Some(libc::EPERM) | Some(libc::EACCES) => "AF_XDP needs CAP_NET_RAW (run as root)",
                _ => "",
            };
            return Err(IoError::hinted(
                "socket(AF_XDP)",
                what("AF_XDP socket"),
                hint,
                std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)),
            ));
        }
    };
    let raw = fd.as_raw_fd();
    if owner.is_none() {
        let reg = libc::xdp_umem_reg {
            addr: umem.map.ptr() as u64,
            len: umem.map.len() as u64,
            chunk_size: p.chunk_size,
            headroom: p.headroom,
            flags: 0,
            tx_metadata_len: 0,
        };
        if let Err(e) =
            sys::setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")
        {
            let errno = e.raw_os_error().unwrap_or(0);
            let hint = match errno {
                libc::ENOBUFS | libc::ENOMEM | libc::EPERM => format!(
                    "cannot lock {} MiB of UMEM: needs CAP_IPC_LOCK or a larger `ulimit -l`",
                    umem.map.len() >> 20
                ),
                _ => String::new(),
            };
            return Err(IoError::hinted(
                "setsockopt(XDP_UMEM_REG)",
                what("UMEM registration"),
                hint,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
    }
    let size = p.ring_size;
    sys::setsockopt(
        raw,
        libc::SOL_XDP,
        libc::XDP_UMEM_FILL_RING,
        &size,
        "XDP_UMEM_FILL_RING",
    )?;
    sys::setsockopt(
        raw,
        libc::SOL_XDP,
        libc::XDP_UMEM_COMPLETION_RING,
        &size,
        "XDP_UMEM_COMPLETION_RING",
    )?;
    sys::setsockopt(raw, libc::SOL_XDP, libc::XDP_RX_RING, &size, "XDP_RX_RING")?;
    sys::setsockopt(raw, libc::SOL_XDP, libc::XDP_TX_RING, &size, "XDP_TX_RING")?;
    let (rx, tx, fill, comp) = map_rings(raw, size, &what)?;

    let mut sxdp = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: 0,
        sxdp_ifindex: t.ifindex,
        sxdp_queue_id: t.queue,
        sxdp_shared_umem_fd: 0,
    };
    match owner {
        Some(ofd) => {
            // Flags of a shared socket come from the owner; specifying any is EINVAL.
            sxdp.sxdp_flags = libc::XDP_SHARED_UMEM;
            sxdp.sxdp_shared_umem_fd = ofd as u32;
        }
        None => {
            sxdp.sxdp_flags = if p.mode == BindMode::Zerocopy {
                libc::XDP_ZEROCOPY
            } else {
                libc::XDP_COPY
            };
            if p.need_wakeup {
                sxdp.sxdp_flags |= libc::XDP_USE_NEED_WAKEUP;
            }
        }
    }
    // SAFETY: sxdp is a valid sockaddr_xdp of the size we pass.
    let r = unsafe {
        libc::bind(
            raw,
            (&sxdp as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) => format!(
                "does {} have queue {}? (ethtool -l {}; veth needs numrxqueues > {})",
                t.ifname, t.queue, t.ifname, t.queue
            ),
            Some(libc::EBUSY) => format!(
                "another AF_XDP socket is bound to {} queue {}",
                t.ifname, t.queue
            ),
            Some(libc::ENETDOWN) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                format!("is {} up?", t.ifname)
            }
            Some(libc::EOPNOTSUPP) if p.mode == BindMode::Zerocopy => format!(
                "the driver of {} has no AF_XDP zero-copy: use afxdp.bind = \"copy\" or \"auto\"",
                t.ifname
            ),
            Some(libc::EOPNOTSUPP) => format!("the driver of {} lacks AF_XDP support", t.ifname),
            _ => String::new(),
        };
        return Err(IoError::hinted("bind(AF_XDP)", what("bind"), hint, e));
    }
    let _ = umem;
    Ok(XskSocket {
        rx: ConsRing::new(rx),
        tx: ProdRing::new(tx),
        fill: ProdRing::new(fill),
        comp: ConsRing::new(comp),
        fd,
        ifindex: t.ifindex,
        queue: t.queue,
    })
}

impl WorkerIo for AfXdpIo {
    fn kernel_stats(&mut self, c: &mut IoCounters) {
        let (mut no_buffer, mut ring_full) = (0, 0);
        for s in &self.sockets {
            if let Some(st) = xsk_statistics(s.fd.as_raw_fd()) {
                no_buffer += st.rx_dropped;
                ring_full += st.rx_ring_full;
            }
        }
        c.xsk_no_buffer = no_buffer;
        c.xsk_rx_ring_full = ring_full;
    }

    fn poll<F>(&mut self, f: &mut F, c: &mut IoCounters) -> usize
    where
        F: FnMut(PortId, &mut [Frame<'_>], &mut [Verdict], &mut u64),
    {
        let n_ports = self.sockets.len();
        let chunk = self.params.chunk_size as usize;
        let mut total = 0usize;
        for i in 0..n_ports {
            self.reap(i);
            let n = self.sockets[i]
                .rx
                .available(self.params.batch.min(MAX_BATCH as u32));
            if n > 0 {
                self.umem.next_batch();
                let mut bases = [0u64; MAX_BATCH];
                let mut spans = [(0usize, 0usize); MAX_BATCH];
                let mut verdicts = [Verdict::Pass; MAX_BATCH];
                let mut consumed = 0u64;
                let mut m = 0usize;
                {
                    let mut frames: [Frame<'_>; MAX_BATCH] =
                        std::array::from_fn(|_| Frame::new(&mut [], 0, 0));
                    for k in 0..n {
                        let d = self.sockets[i].rx.read(k);
                        let Some((base, ptr)) = self.umem.claim(d.addr) else {
                            c.rx_bad_desc += 1;
                            continue;
                        };
                        // SAFETY: `claim` checked that the chunk lies inside the UMEM mapping and
                        // is claimed once in this batch, so the slices in `frames` are disjoint.
                        // The chunk belongs to user space: it came off the rx ring and goes back
                        // to a kernel ring (tx or fill) only after `frames` is dropped at the end
                        // of this block; the mapping outlives the block (owned by `self.umem`).
                        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, chunk) };
                        frames[m] = Frame::new(buf, (d.addr - base) as usize, d.len as usize);
                        bases[m] = base;
                        m += 1;
                    }
                    self.sockets[i].rx.release(n);
                    f(
                        PortId(i as u16),
                        &mut frames[..m],
                        &mut verdicts[..m],
                        &mut consumed,
                    );
                    for (s, fr) in spans.iter_mut().zip(frames[..m].iter()) {
                        *s = (fr.head(), fr.len());
                    }
                }
                for j in 0..m {
                    let base = bases[j];
                    if consumed & (1u64 << j) != 0 {
                        self.free.push(base);
                        continue;
                    }
                    match verdicts[j] {
                        Verdict::Tx(PortId(p)) if (p as usize) < n_ports => {
                            self.tx_pending[p as usize].push(libc::xdp_desc {
                                addr: base + spans[j].0 as u64,
                                len: spans[j].1 as u32,
                                options: 0,
                            });
                        }
                        Verdict::Tx(_) => {
                            c.tx_bad_port += 1;
                            self.free.push(base);
                        }
                        other => {
                            c.count_verdict(other);
                            self.free.push(base);
                        }
                    }
                }
                c.rx += n as u64;
                c.rx_batches += 1;
                total += n as usize;
            }
            // Keep the transmit side moving before refilling (completions free chunks).
            for p in 0..n_ports {
                self.flush_round(p, c);
            }
            self.refill(i);
            let s = &self.sockets[i];
            if self.params.need_wakeup && s.fill.r.needs_wakeup() {
                sys::kick_rx(s.fd.as_raw_fd());
                c.sys_recvfrom += 1;
            }
        }
        // Frames still on a TX ring (a kick that hit EAGAIN): kick again.
        for s in &mut self.sockets {
            if s.tx.outstanding() > 0 {
                sys::kick_tx(s.fd.as_raw_fd());
                c.sys_sendto += 1;
            }
        }
        total
    }

    fn send(&mut self, port: PortId, data: &[u8], c: &mut IoCounters) -> bool {
        let p = port.0 as usize;
        if p >= self.sockets.len() {
            c.tx_bad_port += 1;
            return false;
        }
        let off = XDP_PACKET_HEADROOM as u64;
        if data.len() as u64 + off > self.params.chunk_size as u64 {
            c.tx_ring_full += 1;
            return false;
        }
        if self.free.is_empty() {
            self.reap(p);
        }
        let Some(base) = self.free.pop() else {
            c.tx_ring_full += 1;
            return false;
        };
        let Some((_, buf)) = self.umem.chunk(base) else {
            c.rx_bad_desc += 1;
            return false;
        };
        buf[off as usize..off as usize + data.len()].copy_from_slice(data);
        self.tx_pending[p].push(libc::xdp_desc {
            addr: base + off,
            len: data.len() as u32,
            options: 0,
        });
        if self.tx_pending[p].len() >= 32 {
            self.flush_all(p, c);
        }
        true
    }

    fn flush(&mut self, c: &mut IoCounters) {
        for p in 0..self.sockets.len() {
            if !self.tx_pending[p].is_empty() {
                self.flush_all(p, c);
            }
        }
    }

    fn wait(&mut self, timeout_ms: i32, c: &mut IoCounters) {
        // Nothing waits for a later round while the worker sleeps.
        self.flush(c);
        super::poll_fds(&self.fds, timeout_ms, c);
    }

    fn quiesce(&mut self, c: &mut IoCounters) -> Option<Vec<u64>> {
        self.flush(c);
        Some(self.free.clone())
    }
}
