//! AF_PACKET worker I/O (`--io packet`) with PACKET_MMAP rings (Documentation/networking/
//! packet_mmap.rst): per worker and interface one TPACKET_V3 receive ring (blocks of packed
//! frames, PACKET_RESERVE headroom so TUN encapsulation fits in place, PACKET_IGNORE_OUTGOING)
//! and one TPACKET_V2 transmit ring with PACKET_QDISC_BYPASS — the combination TESTBED.md found
//! fastest here. Several workers on one interface share it through a PACKET_FANOUT group in
//! queue-mapping mode (PACKET_FANOUT_QM), mirroring the AF_XDP queue → worker map.
//!
//! Frames are processed in place in the receive block and copied once into the egress TX ring.
//! Hand-rolled rather than pnet_datalink: pnet makes one recv/send syscall per frame (~150 kpps
//! here against ~280 kpps with these rings, TESTBED.md) and has no PACKET_MMAP rings or fanout.
//!
//! **The kernel still sees every frame**: AF_PACKET taps a copy, it does not steal it. The
//! director's namespace must therefore not act on service traffic itself: `ip_forward` (and IPv6
//! forwarding) off, so it does not route NAT replies or VIP traffic a second time, and TCP/UDP to
//! VIPs and FullNAT local addresses dropped before the local stack answers them with RST or ICMP
//! port unreachable (an input-hook nftables drop rule; scripts/testbed.sh installs one), while
//! ARP/ND and ping for the VIP are still answered by the kernel, which owns the VIP address.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use xvs_forwarding::{Frame, PortId, Verdict};

use super::sys::{self, Mmap};
use super::{IoCounters, IoError, WorkerIo, MAX_BATCH};

const SOL_PACKET: i32 = 263;
const PACKET_RX_RING: i32 = 5;
const PACKET_VERSION: i32 = 10;
const PACKET_RESERVE: i32 = 12;
const PACKET_TX_RING: i32 = 13;
const PACKET_FANOUT: i32 = 18;
const PACKET_QDISC_BYPASS: i32 = 20;
const PACKET_IGNORE_OUTGOING: i32 = 23;
const TPACKET_V2: i32 = 1;
const TPACKET_V3: i32 = 2;
const PACKET_FANOUT_QM: u32 = 5;
const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Offset of packet data in a TPACKET_V2 TX frame: TPACKET_ALIGN(sizeof(tpacket2_hdr)).
const TX_DATA_OFF: usize = 32;

/// Sizes of the AF_PACKET rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketParams {
    /// RX block size (multiple of the page size) and count.
    pub block_size: u32,
    pub block_count: u32,
    /// Largest frame accepted / sent (snap length cap and TX slot size), power of two.
    pub frame_size: u32,
    /// TX ring slots.
    pub tx_frames: u32,
    /// Headroom reserved in front of every received frame (PACKET_RESERVE).
    pub headroom: u32,
    /// A block is handed to user space after this many ms even if not full.
    pub block_timeout_ms: u32,
}

impl Default for PacketParams {
    fn default() -> Self {
        PacketParams {
            block_size: 1 << 16,
            block_count: 64,
            frame_size: 4096,
            tx_frames: 1024,
            headroom: 128,
            block_timeout_ms: 1,
        }
    }
}

impl PacketParams {
    /// The sizes the kernel's `packet_set_ring` and this module need: block size a multiple of
    /// the page size (4096) and at least one frame; frame size a power of two from 256 (room for
    /// the TPACKET_V2 header, PACKET_RESERVE headroom and a frame; 16-byte alignment of every
    /// slot's status word); headroom under half a frame. A block size that is not a multiple of
    /// the frame size is valid (the kernel, and `tx_slot_offset`, leave each block's tail unused).
    pub fn validate(&self) -> Result<(), IoError> {
        let bad = |why: String| Err(IoError::Invalid(format!("bad AF_PACKET sizes: {why}")));
        if !self.frame_size.is_power_of_two() || self.frame_size < 256 {
            return bad(format!(
                "frame size {} is not a power of two ≥ 256",
                self.frame_size
            ));
        }
        if self.block_size == 0 || !self.block_size.is_multiple_of(4096) {
            return bad(format!(
                "block size {} is not a multiple of the page size 4096",
                self.block_size
            ));
        }
        if self.block_size < self.frame_size {
            return bad(format!(
                "block size {} is smaller than the frame size {}",
                self.block_size, self.frame_size
            ));
        }
        if self.block_count == 0 || self.tx_frames == 0 {
            return bad("block count and TX frames must be at least 1".into());
        }
        if self.headroom >= self.frame_size / 2 {
            return bad(format!(
                "headroom {} is not under half the frame size {}",
                self.headroom, self.frame_size
            ));
        }
        Ok(())
    }
}

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// Size of a TPACKET_V3 block descriptor (`struct tpacket_block_desc` with its
/// `tpacket_hdr_v1`): version, offset_to_priv, block_status (8), num_pkts (12),
/// offset_to_first_pkt (16), blk_len, seq_num, two timestamps. Packets start at or after it.
const BLOCK_DESC_LEN: usize = 48;
const BLOCK_STATUS_OFF: usize = 8;
const BLOCK_NUM_PKTS_OFF: usize = 12;
const BLOCK_FIRST_PKT_OFF: usize = 16;

#[inline]
fn rd32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

#[inline]
fn rd16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2) {
        Some(s) => u16::from_ne_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// Load a status word the kernel shares with us (acquire: what the kernel wrote before handing
/// the slot or block over is visible after it).
///
/// # Safety
/// `p` must be 4-byte aligned and point at 4 bytes inside a live ring mapping that stays mapped
/// for the call, and no Rust reference (slice) may cover those 4 bytes while the call runs: the
/// word is only ever accessed atomically, by us and by the kernel.
#[inline]
unsafe fn load_status(p: *mut u8) -> u32 {
    // SAFETY: the caller guarantees alignment, validity and that only atomic accesses reach the
    // word (AtomicU32::from_ptr's contract).
    let w = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
    w.load(Ordering::Acquire)
}

/// Store a status word the kernel shares with us (release: our writes to the slot or block
/// happen before the kernel sees the new status).
///
/// # Safety
/// As for [`load_status`].
#[inline]
unsafe fn store_status(p: *mut u8, v: u32) {
    // SAFETY: as for `load_status`, guaranteed by the caller.
    let w = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
    w.store(v, Ordering::Release);
}

/// Read a plain u32 at `base + off`.
///
/// # Safety
/// `base + off` must be 4-byte aligned, inside a live mapping, and not written concurrently
/// (the kernel wrote it before handing the block over and waits until it is given back).
#[inline]
unsafe fn read_u32(base: *mut u8, off: usize) -> u32 {
    // SAFETY: in bounds, guaranteed by the caller.
    let p = unsafe { base.add(off) };
    // SAFETY: aligned, valid and not written concurrently, guaranteed by the caller.
    unsafe { p.cast::<u32>().read() }
}

/// Offset of TX slot `i` in the ring mapping, as the kernel's `packet_lookup_frame` addresses
/// it: `frames_per_block = block_size / frame_size` slots per block, slot `i` in block
/// `i / frames_per_block` at `(i % frames_per_block) * frame_size`. When the block size is not
/// a multiple of the frame size, the tail of every block is unused.
#[inline]
fn tx_slot_offset(i: usize, block_size: usize, frame_size: usize) -> usize {
    let per_block = block_size / frame_size;
    (i / per_block) * block_size + (i % per_block) * frame_size
}

struct RxRing {
    fd: OwnedFd,
    map: Mmap,
    block_size: usize,
    blocks: usize,
    next: usize,
}

struct TxRing {
    fd: OwnedFd,
    map: Mmap,
    block_size: usize,
    frame_size: usize,
    /// Slots: `block_size / frame_size` per block times the blocks (the kernel's frame_nr).
    frames: usize,
    next: usize,
    queued: u32,
}

/// One worker's AF_PACKET sockets on every port.
pub struct AfPacketIo {
    rx: Vec<RxRing>,
    tx: Vec<TxRing>,
    fds: Vec<i32>,
}

// SAFETY: an AfPacketIo exclusively owns its sockets and ring mappings (raw pointers nobody else
// in the process touches). It is built on the control thread and then moved to, and used only
// by, one worker thread; it is not Sync.
unsafe impl Send for AfPacketIo {}

impl std::fmt::Debug for AfPacketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketIo")
            .field("fds", &self.fds)
            .finish()
    }
}

/// An interface to open, and the fanout group shared by all workers on it (if several).
#[derive(Clone, Debug)]
pub struct PacketTarget {
    pub ifname: String,
    pub ifindex: u32,
    pub fanout_group: Option<u16>,
}

fn bind_ll(fd: i32, ifindex: u32, proto: u16, what: &str) -> Result<(), IoError> {
    // SAFETY: plain old data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(IoError::last("bind(AF_PACKET)", what.to_string()));
    }
    Ok(())
}

fn packet_socket(what: &str) -> Result<OwnedFd, IoError> {
    // Protocol 0: receive nothing until bound to one interface.
    sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0, what).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => IoError::hinted(
            "socket(AF_PACKET)",
            what.to_string(),
            "AF_PACKET needs CAP_NET_RAW (run as root)",
            std::io::Error::from_raw_os_error(libc::EPERM),
        ),
        _ => e,
    })
}

impl AfPacketIo {
    pub fn new(targets: &[PacketTarget], p: PacketParams) -> Result<AfPacketIo, IoError> {
        if targets.is_empty() {
            return Err(IoError::Invalid(
                "AF_PACKET worker without interfaces".into(),
            ));
        }
        p.validate()?;
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for t in targets {
            let w = |s: &str| format!("{s} on {}", t.ifname);
            // Receive: TPACKET_V3 ring.
            let fd = packet_socket(&w("rx socket"))?;
            let raw = fd.as_raw_fd();
            sys::setsockopt(
                raw,
                SOL_PACKET,
                PACKET_VERSION,
                &TPACKET_V3,
                "PACKET_VERSION=V3",
            )?;
            sys::setsockopt(
                raw,
                SOL_PACKET,
                PACKET_RESERVE,
                &p.headroom,
                "PACKET_RESERVE",
            )?;
            let one: i32 = 1;
            sys::setsockopt(
                raw,
                SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                &one,
                "PACKET_IGNORE_OUTGOING",
            )?;
            let req = TpacketReq3 {
                block_size: p.block_size,
                block_nr: p.block_count,
                frame_size: p.frame_size,
                frame_nr: p.block_size / p.frame_size * p.block_count,
                retire_blk_tov: p.block_timeout_ms,
                sizeof_priv: 0,
                feature_req_word: 0,
            };
            sys::setsockopt(raw, SOL_PACKET, PACKET_RX_RING, &req, "PACKET_RX_RING")?;
            let len = p.block_size as usize * p.block_count as usize;
            let map = Mmap::socket(raw, len, 0, &w("PACKET_RX_RING map"))?;
            bind_ll(raw, t.ifindex, ETH_P_ALL, &w("rx"))?;
            if let Some(g) = t.fanout_group {
                let v: u32 = g as u32 | (PACKET_FANOUT_QM << 16);
                sys::setsockopt(raw, SOL_PACKET, PACKET_FANOUT, &v, "PACKET_FANOUT")?;
            }
            rx.push(RxRing {
                fd,
                map,
                block_size: p.block_size as usize,
                blocks: p.block_count as usize,
                next: 0,
            });

            // Transmit: TPACKET_V2 ring, bypassing the qdisc.
            let fd = packet_socket(&w("tx socket"))?;
            let raw = fd.as_raw_fd();
            sys::setsockopt(
                raw,
                SOL_PACKET,
                PACKET_VERSION,
                &TPACKET_V2,
                "PACKET_VERSION=V2",
            )?;
            sys::setsockopt(
                raw,
                SOL_PACKET,
                PACKET_QDISC_BYPASS,
                &one,
                "PACKET_QDISC_BYPASS",
            )?;
            let per_block = (p.block_size / p.frame_size).max(1);
            let blocks = p.tx_frames.div_ceil(per_block);
            let req = TpacketReq {
                block_size: p.block_size,
                block_nr: blocks,
                frame_size: p.frame_size,
                frame_nr: blocks * per_block,
            };
            sys::setsockopt(raw, SOL_PACKET, PACKET_TX_RING, &req, "PACKET_TX_RING")?;
            let len = p.block_size as usize * blocks as usize;
            let map = Mmap::socket(raw, len, 0, &w("PACKET_TX_RING map"))?;
            bind_ll(raw, t.ifindex, 0, &w("tx"))?;
            tx.push(TxRing {
                fd,
                map,
                block_size: p.block_size as usize,
                frame_size: p.frame_size as usize,
                frames: (blocks * per_block) as usize,
                next: 0,
                queued: 0,
            });
        }
        let fds = rx.iter().map(|r| r.fd.as_raw_fd()).collect();
        Ok(AfPacketIo { rx, tx, fds })
    }
}

impl TxRing {
    /// Copy `data` into the next free slot; false if the ring is full or the frame too big.
    fn push(&mut self, data: &[u8]) -> bool {
        if data.len() + TX_DATA_OFF > self.frame_size {
            return false;
        }
        let off = tx_slot_offset(self.next, self.block_size, self.frame_size);
        debug_assert!(off + self.frame_size <= self.map.len());
        // SAFETY: next < frames = (block_size / frame_size) * blocks, so the slot
        // [off, off + frame_size) lies inside the mapping of blocks * block_size bytes.
        let slot = unsafe { self.map.ptr().add(off) };
        // SAFETY: the status word (tp_status) opens the slot: 16-byte aligned (frame size is a
        // power of two ≥ 64, blocks are page aligned), inside the mapping, and no slice covers
        // it (the one below starts after it).
        let mut s = unsafe { load_status(slot) };
        if s == TP_STATUS_WRONG_FORMAT {
            // SAFETY: as above.
            unsafe { store_status(slot, TP_STATUS_AVAILABLE) };
            s = TP_STATUS_AVAILABLE;
        }
        if s != TP_STATUS_AVAILABLE {
            return false;
        }
        // SAFETY: (this and the next block) the slot is ours (status AVAILABLE: the kernel does
        // not touch it until we set SEND_REQUEST below, after the last use of the slice). The
        // slice covers the slot after its status word, [off + 4, off + frame_size), inside the
        // mapping, and nothing else refers to those bytes.
        let body = unsafe { slot.add(4) };
        // SAFETY: see above: [off + 4, off + frame_size) is ours and inside the mapping.
        let buf = unsafe { std::slice::from_raw_parts_mut(body, self.frame_size - 4) };
        let len = (data.len() as u32).to_ne_bytes();
        buf[0..4].copy_from_slice(&len); // tp_len (slot offset 4)
        buf[4..8].copy_from_slice(&len); // tp_snaplen (slot offset 8)
        buf[TX_DATA_OFF - 4..TX_DATA_OFF - 4 + data.len()].copy_from_slice(data);
        // SAFETY: as for the load above; the slice is no longer used.
        unsafe { store_status(slot, TP_STATUS_SEND_REQUEST) };
        self.next = (self.next + 1) % self.frames;
        self.queued += 1;
        true
    }

    fn flush(&mut self, c: &mut IoCounters) {
        if self.queued > 0 {
            sys::kick_tx(self.fd.as_raw_fd());
            c.sys_sendto += 1;
            self.queued = 0;
        }
    }
}

impl WorkerIo for AfPacketIo {
    fn poll<F>(&mut self, f: &mut F, c: &mut IoCounters) -> usize
    where
        F: FnMut(PortId, &mut [Frame<'_>], &mut [Verdict], &mut u64),
    {
        let mut total = 0usize;
        let n_ports = self.rx.len();
        for i in 0..n_ports {
            let r = &mut self.rx[i];
            // SAFETY: next < blocks, so the block [next * block_size, +block_size) lies inside
            // the RX mapping of blocks * block_size bytes.
            let block_ptr = unsafe { r.map.ptr().add(r.next * r.block_size) };
            // SAFETY: block_status (offset 8 of the page-aligned block) is 4-byte aligned, inside
            // the mapping, and only ever accessed atomically: the slices below start after the
            // block descriptor.
            let bst = unsafe { block_ptr.add(BLOCK_STATUS_OFF) };
            // SAFETY: see `bst`.
            if unsafe { load_status(bst) } & TP_STATUS_USER == 0 {
                continue;
            }
            // SAFETY: the descriptor fields lie inside the block; the kernel wrote them before
            // handing the block over (acquire load above) and does not write them until we give
            // the block back; both are 4-byte aligned.
            let mut remaining = unsafe { read_u32(block_ptr, BLOCK_NUM_PKTS_OFF) } as usize;
            // SAFETY: as above.
            let first = unsafe { read_u32(block_ptr, BLOCK_FIRST_PKT_OFF) } as usize;
            if !(BLOCK_DESC_LEN..r.block_size).contains(&first) {
                // The kernel never does this; count it and give the block back untouched.
                c.rx_bad_desc += 1;
                // SAFETY: see `bst`.
                unsafe { store_status(bst, TP_STATUS_KERNEL) };
                r.next = (r.next + 1) % r.blocks;
                continue;
            }
            // SAFETY: the block is owned by user space (TP_STATUS_USER) until we store
            // TP_STATUS_KERNEL below, after the last use of this slice. The slice covers the
            // packet area after the block descriptor, [BLOCK_DESC_LEN, block_size): it does not
            // overlap the status word, which is only accessed through `bst`.
            let pkts = unsafe { block_ptr.add(BLOCK_DESC_LEN) };
            // SAFETY: see above.
            let block =
                unsafe { std::slice::from_raw_parts_mut(pkts, r.block_size - BLOCK_DESC_LEN) };
            let mut rest: &mut [u8] = &mut block[first - BLOCK_DESC_LEN..];
            while remaining > 0 {
                let mut frames: [Frame<'_>; MAX_BATCH] =
                    std::array::from_fn(|_| Frame::new(&mut [], 0, 0));
                let mut m = 0usize;
                while m < MAX_BATCH && remaining > 0 {
                    remaining -= 1;
                    let next = rd32(rest, 0) as usize;
                    let snaplen = rd32(rest, 12) as usize;
                    let mac = rd16(rest, 24) as usize;
                    let take = if next == 0 || next > rest.len() {
                        remaining = 0; // the last packet of the block (or a corrupt offset)
                        rest.len()
                    } else {
                        next
                    };
                    let (pkt, tail) = std::mem::take(&mut rest).split_at_mut(take);
                    rest = tail;
                    if mac + snaplen > pkt.len() || snaplen == 0 {
                        c.rx_bad_desc += 1;
                        continue;
                    }
                    frames[m] = Frame::new(pkt, mac, snaplen);
                    m += 1;
                }
                let mut verdicts = [Verdict::Pass; MAX_BATCH];
                let mut consumed = 0u64;
                f(
                    PortId(i as u16),
                    &mut frames[..m],
                    &mut verdicts[..m],
                    &mut consumed,
                );
                c.rx += m as u64;
                c.rx_batches += u64::from(m > 0);
                total += m;
                for (j, (fr, v)) in frames[..m].iter().zip(verdicts.iter()).enumerate() {
                    if consumed & (1u64 << j) != 0 {
                        continue;
                    }
                    match *v {
                        Verdict::Tx(PortId(p)) if (p as usize) < n_ports => {
                            if self.tx[p as usize].push(fr.data()) {
                                c.tx += 1;
                            } else {
                                c.tx_ring_full += 1;
                            }
                        }
                        Verdict::Tx(_) => c.tx_bad_port += 1,
                        other => c.count_verdict(other),
                    }
                }
            }
            // SAFETY: see `bst`; every frame slice of this block is gone.
            unsafe { store_status(bst, TP_STATUS_KERNEL) };
            r.next = (r.next + 1) % r.blocks;
            for t in &mut self.tx {
                t.flush(c);
            }
        }
        total
    }

    fn send(&mut self, port: PortId, data: &[u8], c: &mut IoCounters) -> bool {
        let Some(t) = self.tx.get_mut(port.0 as usize) else {
            c.tx_bad_port += 1;
            return false;
        };
        if t.push(data) {
            c.tx += 1;
            if t.queued >= 32 {
                t.flush(c);
            }
            true
        } else {
            c.tx_ring_full += 1;
            false
        }
    }

    fn flush(&mut self, c: &mut IoCounters) {
        for t in &mut self.tx {
            t.flush(c);
        }
    }

    fn wait(&mut self, timeout_ms: i32, c: &mut IoCounters) {
        super::poll_fds(&self.fds, timeout_ms, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_slots_are_addressed_per_block_like_the_kernel() {
        // Block a multiple of the frame: slots are contiguous.
        for i in 0..64 {
            assert_eq!(tx_slot_offset(i, 65536, 4096), i * 4096);
        }
        // Three pages per block, 8 KiB frames: one slot per block, the 4 KiB tail unused.
        assert_eq!(tx_slot_offset(0, 12288, 8192), 0);
        assert_eq!(tx_slot_offset(1, 12288, 8192), 12288);
        assert_eq!(tx_slot_offset(5, 12288, 8192), 5 * 12288);
        // Five pages of 2 KiB frames: 10 slots per block.
        assert_eq!(tx_slot_offset(9, 20480, 2048), 9 * 2048);
        assert_eq!(tx_slot_offset(10, 20480, 2048), 20480);
        assert_eq!(tx_slot_offset(23, 20480, 2048), 2 * 20480 + 3 * 2048);
        // Every slot lies inside the mapping of blocks * block_size and slots never overlap.
        let (bs, fs) = (20480usize, 8192);
        let per = bs / fs;
        let blocks = 7;
        let mut ends = Vec::new();
        for i in 0..per * blocks {
            let o = tx_slot_offset(i, bs, fs);
            assert!(o + fs <= bs * blocks);
            ends.push((o, o + fs));
        }
        ends.sort_unstable();
        assert!(ends.windows(2).all(|w| w[0].1 <= w[1].0));
    }

    #[test]
    fn sizes_are_checked_with_a_reason() {
        assert!(PacketParams::default().validate().is_ok());
        let odd = PacketParams {
            block_size: 3 * 4096,
            frame_size: 8192,
            ..PacketParams::default()
        };
        assert!(odd.validate().is_ok(), "the kernel accepts it");
        for (p, why) in [
            (
                PacketParams {
                    frame_size: 3000,
                    ..PacketParams::default()
                },
                "power of two",
            ),
            (
                PacketParams {
                    frame_size: 128,
                    ..PacketParams::default()
                },
                "power of two",
            ),
            (
                PacketParams {
                    block_size: 5000,
                    ..PacketParams::default()
                },
                "page size",
            ),
            (
                PacketParams {
                    block_size: 4096,
                    frame_size: 8192,
                    ..PacketParams::default()
                },
                "smaller than the frame",
            ),
            (
                PacketParams {
                    headroom: 2048,
                    ..PacketParams::default()
                },
                "headroom",
            ),
        ] {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{p:?}: {e}");
        }
    }
}
