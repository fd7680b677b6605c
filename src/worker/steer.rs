//! Cross-worker steering: every frame of a connection, in both directions, is processed by the
//! worker that owns the connection.
//!
//! Connection tables are per worker, but the NIC (or veth) picks the rx queue — and so the
//! worker — per direction: a NAT reply from a backend usually lands on another queue than the
//! client's request, and an XDP program cannot redirect a frame to an AF_XDP socket of another
//! queue (`xsk_rcv` checks the queue id). So the worker computes the owner from the frame:
//!
//! * to a FullNAT local address: `local port % workers` (the pipeline allocates local ports
//!   with `lport % workers == worker`);
//! * to a VIP: `hash(client address, client port) % workers`;
//! * from a backend (NAT reply): `hash(destination address, destination port)` — the same
//!   client address and port, so the same worker;
//! * an ICMP error: the same rules applied to the packet it quotes, reversed;
//! * anything else: processed where it arrived.
//!
//! The headers are read with the forwarding crate's parser (`wire::parse`, and
//! `wire::icmp::parse_embedded` for the quoted packet of an ICMP error), the same code the
//! pipeline runs: a frame it rejects (bad IPv4 checksum, truncated) stays where it arrived and is
//! dropped and counted there.
//!
//! A frame for another worker is copied into a buffer from a preallocated pool and sent through
//! a bounded channel to its owner, which processes it and transmits it on its own sockets
//! (another UMEM), then sends the buffer back through the sender's *return* channel. No
//! allocation and no lock on this path (std's bounded channel is lock-free); a full inbox or an
//! empty pool is a counted drop (`handoff_full`). The return channel holds as many buffers as the
//! pool, so a return never finds it full and no buffer is ever lost: the pool stays whole. This is
//! the software version of DPVS's per-lcore redirect rings, or of the flow steering (ntuple/FDIR)
//! a NIC could do in hardware.

use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use xvs_forwarding::wire::{icmp, parse, Parsed};
use xvs_forwarding::{DropReason, Frame, PortId, Time, Verdict};

use super::{ClientSteering, DirectorTargets, FrameProcessor};
use crate::io::{IoCounters, WorkerIo, MAX_BATCH};

/// Handoff buffers per worker, their size, and the headroom kept in front of the frame.
pub const POOL: usize = 1024;
pub const BUF: usize = 2048;
pub const HEADROOM: usize = 256;
/// Capacity of each worker's inbox of handed-over frames.
pub const INBOX: usize = 4096;
/// Inbox messages handled per loop round.
const DRAIN_MAX: usize = 256;

/// A frame handed to the worker that owns its connection.
#[derive(Debug)]
pub struct Msg {
    /// The worker that handed it over (and owns `buf`).
    pub from: usize,
    pub ingress: PortId,
    pub len: usize,
    /// The frame at `HEADROOM..HEADROOM + len`.
    pub buf: Box<[u8]>,
}

#[derive(Debug, Default)]
pub struct HandoffCounters {
    pub out: u64,
    pub full: u64,
}

/// One worker's end of the cross-worker handoff.
#[derive(Debug)]
pub struct Handoff {
    pub(crate) sets: Arc<SteerSets>,
    /// Frames other workers hand to this one.
    inbox: Receiver<Msg>,
    /// Every worker's inbox, by worker index.
    peers: Vec<SyncSender<Msg>>,
    /// This worker's buffers coming back from the workers that processed them.
    returns: Receiver<Box<[u8]>>,
    /// Every worker's return channel, by worker index.
    return_to: Vec<SyncSender<Box<[u8]>>>,
    /// Free buffers of this worker.
    pool: Vec<Box<[u8]>>,
    pool_size: usize,
}

impl Handoff {
    /// The handoff ends of `workers` workers wired to each other: worker `i` gets element `i`.
    /// Each has `pool` buffers (allocated by [`Handoff::fill_pool`]), an inbox of `inbox`
    /// frames and a return channel of `pool` buffers (never full: only this worker's buffers
    /// travel on it).
    pub fn mesh(workers: usize, sets: &Arc<SteerSets>, pool: usize, inbox: usize) -> Vec<Handoff> {
        let (peers, inboxes): (Vec<_>, Vec<_>) = (0..workers).map(|_| sync_channel(inbox)).unzip();
        let (return_to, returns): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| sync_channel(pool)).unzip();
        inboxes
            .into_iter()
            .zip(returns)
            .map(|(inbox, returns)| Handoff {
                sets: sets.clone(),
                inbox,
                peers: peers.clone(),
                returns,
                return_to: return_to.clone(),
                pool: Vec::new(),
                pool_size: pool,
            })
            .collect()
    }

    /// Allocate the buffer pool (on the worker's own thread).
    pub fn fill_pool(&mut self) {
        self.pool = (0..self.pool_size)
            .map(|_| vec![0u8; BUF].into_boxed_slice())
            .collect();
    }

    /// Free buffers right now.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Take back the buffers other workers returned.
    fn take_returns(&mut self) {
        while let Ok(buf) = self.returns.try_recv() {
            self.pool.push(buf);
        }
    }
}

fn key(ip: std::net::IpAddr) -> [u8; 16] {
    crate::io::xdp::addr_key(ip)
}

/// The addresses that decide ownership, sorted for binary search.
#[derive(Debug, Default)]
pub struct SteerSets {
    /// Where the first fragments of recent datagrams went (later fragments follow them).
    frags: FragDirectory,
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
            frags: FragDirectory::new(),
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
        client_hash(self.by, addr, port)
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

/// The hash of a connection's client end under the steering policy `by`.
#[inline]
fn client_hash(by: ClientSteering, addr: &[u8; 16], port: u16) -> u64 {
    match by {
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

/// The worker owning the connections of this client end (what [`owner`] gives their frames
/// in both directions), e.g. for a connection received by the sync backup.
pub fn client_owner(
    by: ClientSteering,
    addr: std::net::IpAddr,
    port: u16,
    workers: usize,
) -> usize {
    if workers < 2 {
        return 0;
    }
    (client_hash(by, &key(addr), port) % workers as u64) as usize
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

/// A connection end as steering sees it: 16-byte address key and port (0 without ports).
#[inline]
fn end(a: IpAddr, port: u16) -> ([u8; 16], u16) {
    (key(a), port)
}

/// Which worker took the first fragment of each recent datagram, so that its later fragments
/// (which carry no ports to steer by) go there too: a direct-mapped table of 4096 words shared
/// by the workers, each `hash tag << 16 | worker`, written for first fragments and read for
/// later ones only — unfragmented traffic never touches it. A later fragment whose first has
/// not come (or whose slot was taken over) is steered by its addresses as any portless packet;
/// with flow steering it then reaches its first's worker only by chance, and is held there
/// until it expires (`fragments_expired`).
#[derive(Debug)]
pub struct FragDirectory {
    slots: Box<[std::sync::atomic::AtomicU64]>,
}

impl Default for FragDirectory {
    fn default() -> Self {
        FragDirectory::new()
    }
}

impl FragDirectory {
    const SLOTS: usize = 4096;

    pub fn new() -> Self {
        FragDirectory {
            slots: (0..Self::SLOTS)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    fn hash(d: &[u8], p: &xvs_forwarding::wire::Packet) -> Option<u64> {
        let id = xvs_forwarding::wire::frag_id(d, p)?;
        let (s, _) = end(p.src, 0);
        let (t, _) = end(p.dst, 0);
        Some(
            flow_hash(&s, 0)
                ^ flow_hash(&t, 1).rotate_left(1)
                ^ (u64::from(id) << 8 | u64::from(p.proto)).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }

    fn put(&self, h: u64, worker: usize) {
        let v = (h >> 16) << 16 | (worker as u64 & 0xffff) | 1 << 15;
        self.slots[(h as usize) % Self::SLOTS].store(v, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self, h: u64) -> Option<usize> {
        let v = self.slots[(h as usize) % Self::SLOTS].load(std::sync::atomic::Ordering::Relaxed);
        (v & 1 << 15 != 0 && v >> 16 == h >> 16).then_some((v & 0x7fff) as usize)
    }
}

/// The worker owning this frame's connection, or `None` when any worker may process it (not
/// IP, not ours, or rejected by the parser — then the pipeline drops and counts it).
pub fn owner(d: &[u8], sets: &SteerSets, workers: usize) -> Option<usize> {
    if workers < 2 {
        return None;
    }
    let Parsed::Ip(p) = parse(d) else {
        return None;
    };
    if p.frag != xvs_forwarding::wire::Frag::None && !p.icmp_error {
        let h = FragDirectory::hash(d, &p);
        if p.frag == xvs_forwarding::wire::Frag::Later {
            if let Some(w) = h.and_then(|h| sets.frags.get(h)) {
                return Some(w % workers);
            }
        }
        let o = owner_of(d, &p, sets, workers);
        if let (Some(h), Some(o), xvs_forwarding::wire::Frag::First) = (h, o, p.frag) {
            sets.frags.put(h, o);
        }
        return o;
    }
    owner_of(d, &p, sets, workers)
}

fn owner_of(
    d: &[u8],
    p: &xvs_forwarding::wire::Packet,
    sets: &SteerSets,
    workers: usize,
) -> Option<usize> {
    let w = workers as u64;
    let pick = |x: u64| Some((x % w) as usize);
    if p.icmp_error {
        // The quoted packet is one the director sent (or forwarded): reverse the rules.
        let e = icmp::parse_embedded(d, p).ok()?;
        let (src, sport) = end(e.src, e.sport);
        let (dst, dport) = end(e.dst, e.dport);
        if sets.local(&src) {
            return pick(sport as u64);
        }
        if sets.vip(&src) {
            return pick(sets.client(&dst, dport));
        }
        return pick(sets.client(&src, sport));
    }
    let (src, sport) = end(p.src, p.sport);
    let (dst, dport) = end(p.dst, p.dport);
    if sets.local(&dst) {
        return pick(dport as u64);
    }
    if sets.vip(&dst) {
        return pick(sets.client(&src, sport));
    }
    if sets.backend(&src) {
        return pick(sets.client(&dst, dport));
    }
    None
}

/// Copy `frame` to worker `to`. Returns `None` (the frame is consumed) or a drop verdict
/// when it does not fit a handoff buffer.
fn hand_off(
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
    match peer.try_send(Msg {
        from: me,
        ingress,
        len,
        buf,
    }) {
        Ok(()) => c.out += 1,
        Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => {
            c.full += 1;
            pool.push(m.buf);
        }
    }
    None
}

/// Hand the frames of a batch that belong to other workers over to them, and run the rest
/// through the processor as one batch (moved to the front of the slice for the call, then put
/// back in place, so that `verdicts[i]` and bit `i` of `consumed` stay about `frames[i]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn split_batch<P: FrameProcessor>(
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
pub(crate) fn drain<I: WorkerIo, P: FrameProcessor>(
    me: usize,
    io: &mut I,
    proc: &mut P,
    now: Time,
    h: &mut Handoff,
    c: &mut IoCounters,
) -> usize {
    h.take_returns();
    let mut n = 0;
    for _ in 0..DRAIN_MAX {
        let Ok(Msg {
            from,
            ingress,
            len,
            mut buf,
        }) = h.inbox.try_recv()
        else {
            break;
        };
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
        } else if let Some(back) = h.return_to.get(from) {
            // Never full (it holds as many buffers as the owner's pool); an error means the
            // owner stopped, and its buffers go with it.
            let _ = back.try_send(buf);
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
    use xvs_forwarding::testkit::Pkt;

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
        type Command = ();
        fn process(&mut self, _: Time, _: PortId, f: &mut Frame<'_>) -> Verdict {
            let d = f.data();
            let port = u16::from_be_bytes([d[34], d[35]]);
            self.0.push(port);
            Verdict::Tx(PortId(port))
        }
    }

    #[test]
    fn split_batch_keeps_frames_and_verdicts_in_place() {
        let mut mesh = Handoff::mesh(2, &Arc::new(sets()), 8, INBOX);
        let h1 = mesh.pop().unwrap();
        let mut h = mesh.pop().unwrap();
        h.fill_pool();
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
        assert_eq!(h1.inbox.try_iter().count(), handed.min(8));
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

    /// A valid Ethernet/IPv4 frame: TCP (6), UDP (17) or an ICMP echo (1, ports unused).
    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let p = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst);
        match proto {
            6 => p.tcp(sport, dport),
            17 => p.udp(sport, dport),
            _ => p.icmp_echo(1, 1),
        }
        .build()
    }

    /// An ICMP error (destination unreachable) from `from` to `to` quoting `quoted`'s IP
    /// packet.
    fn v4_icmp_error(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(from, to)
            .icmp_error(3, 1, 0, &quoted[14..])
            .build()
    }

    #[test]
    fn later_fragments_follow_their_first() {
        let s = sets();
        let frag = |id: u16, cport: u16, first: bool| {
            let p = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([198, 18, 1, 10], [198, 18, 10, 1])
                .id(id);
            if first {
                p.frag(0, true).udp(cport, 53).payload(&[1; 64]).build()
            } else {
                p.frag(72, false).proto(17).payload(&[2; 40]).build()
            }
        };
        let w = 4;
        let mut moved = 0;
        for (i, cport) in (1024u16..60000).step_by(1999).enumerate() {
            let id = 1000 + i as u16;
            let first = owner(&frag(id, cport, true), &s, w).unwrap();
            // The first fragment goes where the flow's unfragmented packets go.
            assert_eq!(
                Some(first),
                owner(
                    &v4([198, 18, 1, 10], [198, 18, 10, 1], 17, cport, 53),
                    &s,
                    w
                )
            );
            let later = owner(&frag(id, cport, false), &s, w).unwrap();
            assert_eq!(later, first, "id {id}");
            // Without the directory a portless fragment is steered by address alone.
            let unknown = owner(&frag(id.wrapping_add(30_000), cport, false), &s, w).unwrap();
            if unknown != first {
                moved += 1;
            }
        }
        assert!(moved > 0, "the directory is what keeps them together");
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
                let icmp = v4_icmp_error(
                    [198, 18, 1, 1],
                    [198, 18, 10, 1],
                    &v4([198, 18, 10, 1], client, 6, 80, cport),
                );
                assert_eq!(owner(&icmp, &s, w), Some(a));
                // The same for IPv6 clients.
                let c6: std::net::Ipv6Addr = "2001:2:0:1::10".parse().unwrap();
                let v6: std::net::Ipv6Addr = "2001:2:0:10::1".parse().unwrap();
                let in6 = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv6(c6, v6)
                    .tcp(cport, 80)
                    .build();
                assert!(owner(&in6, &s, w).is_some());
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

    /// A WorkerIo that sends nothing and counts what it was asked to send.
    #[derive(Default)]
    struct NullIo(usize);
    impl WorkerIo for NullIo {
        fn poll<F>(&mut self, _: &mut F, _: &mut IoCounters) -> usize
        where
            F: FnMut(PortId, &mut [Frame<'_>], &mut [Verdict], &mut u64),
        {
            0
        }
        fn send(&mut self, _: PortId, _: &[u8], _: &mut IoCounters) -> bool {
            self.0 += 1;
            true
        }
        fn flush(&mut self, _: &mut IoCounters) {}
        fn wait(&mut self, _: i32, _: &mut IoCounters) {}
    }

    /// Frames handed over while the other worker's inbox is full of frames still come back:
    /// the returns do not share the inbox, and the pools end whole.
    #[test]
    fn handoff_pools_stay_whole_when_inboxes_fill() {
        let s = Arc::new(sets());
        let (pool, inbox) = (8, 4);
        let mut mesh = Handoff::mesh(2, &s, pool, inbox);
        for h in &mut mesh {
            h.fill_pool();
        }
        // Frames of clients that worker 0 owns, and of clients that worker 1 owns.
        let frames: Vec<Vec<u8>> = (0..200u16)
            .map(|k| v4([198, 18, 1, 10], [198, 18, 10, 1], 6, 3000 + k, 80))
            .collect();
        let of = |w: usize| -> Vec<Vec<u8>> {
            frames
                .iter()
                .filter(|f| owner(f, &s, 2) == Some(w))
                .take(inbox + 2)
                .cloned()
                .collect()
        };
        let (for0, for1) = (of(0), of(1));
        let mut p = Tagger(Vec::new());
        let mut c = HandoffCounters::default();
        let mut io = NullIo::default();
        let mut ic = IoCounters::default();
        for round in 0..3 {
            // Each worker receives frames the other owns: worker 1 hands to 0, 0 to 1, until
            // both inboxes are full (the rest are counted as lost, and their buffers stay).
            for (me, batch) in [(1usize, &for0), (0, &for1)] {
                let mut bufs = batch.clone();
                let mut fr: Vec<Frame<'_>> = bufs
                    .iter_mut()
                    .map(|b| {
                        let n = b.len();
                        Frame::new(b, 0, n)
                    })
                    .collect();
                let mut v = vec![Verdict::Pass; fr.len()];
                let mut consumed = 0u64;
                split_batch(
                    me,
                    PortId(0),
                    &mut fr,
                    &mut v,
                    &mut consumed,
                    &mut mesh[me],
                    &mut c,
                    &mut p,
                    Time(0),
                );
            }
            assert_eq!(mesh[0].pool_len() + inbox, pool, "round {round}");
            assert_eq!(mesh[1].pool_len() + inbox, pool, "round {round}");
            // Worker 0 drains first: it returns worker 1's buffers while worker 1's inbox is
            // still full of worker 0's frames.
            for me in [0usize, 1, 0] {
                drain(me, &mut io, &mut p, Time(0), &mut mesh[me], &mut ic);
            }
            drain(1, &mut io, &mut p, Time(0), &mut mesh[1], &mut ic);
            assert_eq!(
                mesh[0].pool_len(),
                pool,
                "worker 0's pool whole after round {round}"
            );
            assert_eq!(
                mesh[1].pool_len(),
                pool,
                "worker 1's pool whole after round {round}"
            );
        }
        assert_eq!(c.out as usize, 3 * 2 * inbox);
        assert_eq!(
            c.full as usize,
            3 * 2 * 2,
            "frames beyond a full inbox are counted"
        );
        assert_eq!(ic.handoff_in as usize, 3 * 2 * inbox);
        assert_eq!(
            io.0,
            3 * 2 * inbox,
            "every handed frame was processed and sent"
        );
    }
}
