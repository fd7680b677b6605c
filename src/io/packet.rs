//! AF_PACKET worker I/O (`--io packet`) with PACKET_MMAP rings (Documentation/networking/
//! packet_mmap.rst): per worker and interface one TPACKET_V3 receive ring (blocks of packed
//! frames, PACKET_RESERVE headroom so TUN encapsulation fits in place, PACKET_IGNORE_OUTGOING)
//! and one TPACKET_V2 transmit ring with PACKET_QDISC_BYPASS — the combination TESTBED.md found
//! fastest here. Several workers on one interface share it through a PACKET_FANOUT group in
//! queue-mapping mode (PACKET_FANOUT_QM), mirroring the AF_XDP queue → worker map.
//!
//! Frames are processed in place in the receive block and copied once into the egress TX ring.
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

/// An atomic view of a u32 status word inside a ring mapping.
#[inline]
fn status(ptr: *mut u8) -> &'static AtomicU32 {
    // SAFETY: callers pass the address of a 4-byte-aligned status word inside a live ring mapping
    // that outlives every use (the mapping is owned by the same struct as the caller); the kernel
    // accesses it concurrently, hence atomic.
    unsafe { &*(ptr as *const AtomicU32) }
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
    frame_size: usize,
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
        if !p.frame_size.is_power_of_two()
            || !p.block_size.is_multiple_of(4096)
            || p.block_size < p.frame_size
            || p.headroom >= p.frame_size / 2
        {
            return Err(IoError::Invalid(format!("bad AF_PACKET sizes {p:?}")));
        }
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
        let off = self.next * self.frame_size;
        // SAFETY: off + frame_size ≤ map.len (next < frames, frames * frame_size = map length).
        let slot = unsafe { self.map.ptr.add(off) };
        let st = status(slot);
        let mut s = st.load(Ordering::Acquire);
        if s == TP_STATUS_WRONG_FORMAT {
            st.store(TP_STATUS_AVAILABLE, Ordering::Release);
            s = TP_STATUS_AVAILABLE;
        }
        if s != TP_STATUS_AVAILABLE {
            return false;
        }
        // SAFETY: the slot is ours (status AVAILABLE) and lies inside the mapping; the slice
        // covers exactly this slot and ends before we hand it back with the status store.
        let buf = unsafe { std::slice::from_raw_parts_mut(slot, self.frame_size) };
        let len = (data.len() as u32).to_ne_bytes();
        buf[4..8].copy_from_slice(&len); // tp_len
        buf[8..12].copy_from_slice(&len); // tp_snaplen
        buf[TX_DATA_OFF..TX_DATA_OFF + data.len()].copy_from_slice(data);
        st.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (self.next + 1) % self.frames;
        self.queued += 1;
        true
    }

    fn flush(&mut self) {
        if self.queued > 0 {
            sys::kick_tx(self.fd.as_raw_fd());
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
            // SAFETY: next < blocks, so the block lies inside the RX mapping.
            let block_ptr = unsafe { r.map.ptr.add(r.next * r.block_size) };
            let bst = status(
                // SAFETY: block_status is at offset 8 of the block descriptor (tpacket_hdr_v1).
                unsafe { block_ptr.add(8) },
            );
            if bst.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                continue;
            }
            // SAFETY: the block is owned by user space (TP_STATUS_USER) until we store
            // TP_STATUS_KERNEL below, after the last use of this slice.
            let block = unsafe { std::slice::from_raw_parts_mut(block_ptr, r.block_size) };
            let mut remaining = rd32(block, 12) as usize;
            let first = (rd32(block, 16) as usize).min(block.len());
            // Packets lie one after the other in the block: peel them off with split_at_mut, so
            // each frame of a batch owns a disjoint piece (its tpacket3_hdr, the PACKET_RESERVE
            // headroom and the packet).
            let mut rest: &mut [u8] = &mut block[first..];
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
            bst.store(TP_STATUS_KERNEL, Ordering::Release);
            r.next = (r.next + 1) % r.blocks;
            for t in &mut self.tx {
                t.flush();
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
                t.flush();
            }
            true
        } else {
            c.tx_ring_full += 1;
            false
        }
    }

    fn flush(&mut self, _c: &mut IoCounters) {
        for t in &mut self.tx {
            t.flush();
        }
    }

    fn wait(&mut self, timeout_ms: i32) {
        super::poll_fds(&self.fds, timeout_ms);
    }
}
