//! Hitless restart and upgrade: `xvs run --takeover SOCKET` starts a process that takes the
//! running director's place without losing an established connection or a frame — the
//! seamless-reload technique of proxies (HAProxy's `-x`, Envoy's hot restart), where the
//! listening sockets pass over a Unix socket (SCM_RIGHTS, unix(7)); here the AF_XDP sockets,
//! their UMEM and the XDP program do.
//!
//! The exchange, on one connection to the running director's control socket (frames are a
//! little-endian u32 length and that many bytes):
//!
//! 1. new → old: [`MAGIC`] (the control server hands the connection to the takeover).
//! 2. old: its workers stop receiving (frames wait in the rx rings, the kernel keeps filling
//!    them from the fill rings), forward what they hold and leave the rings alone
//!    (`Dataplane::pause`); each worker's connection table is read (sync entries, the same
//!    records IPVS's sync protocol carries).
//! 3. old → new: an [`Answer`] frame (JSON) carrying, with SCM_RIGHTS, the XDP program, its six
//!    maps and its BPF links, per worker the UMEM's memory file and the AF_XDP sockets, and the
//!    announce device (`[announce]`, so its addresses never disappear); then
//!    the table frame ([`encode_table`]: per worker, IPVS sync messages). A director that cannot
//!    hand over (AF_PACKET) answers `Refused` and goes on.
//! 4. new: checks that the offer fits its configuration (interfaces, workers and queues, client
//!    steering), maps the UMEM and rings (read only) → `READY`. Anything wrong, or the new
//!    process dying, before `READY`: the old one resumes; nothing was touched.
//! 5. old → new: `GO`. From here the old process never touches the rings again and exits; the
//!    new one queues each worker's table into that worker's inbox (taken before its first
//!    frame) and starts the workers on the adopted rings, where the frames that arrived
//!    meanwhile are waiting. It starts its control socket, health checks and sync daemons
//!    once the old process has closed the connection (exited).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xvs_forwarding::sync::{decode, Encoder};

use crate::dataplane_config::DataplaneConfig;
use crate::io::afxdp::{AfXdpIo, BindMode, XskHandover, XskParams};
use crate::io::fdpass;
use crate::io::tun::TunDevice;
use crate::io::xdp::{XdpHandover, XdpProgram, MAP_NAMES};
use crate::runtime::TakenConn;
use crate::worker::setup::Inherited;
use crate::worker::DirectorTargets;

/// What a successor sends first on the control socket.
pub const MAGIC: &[u8] = b"XVS-TAKEOVER 1\n";

/// Version of [`Offer`] and the table format.
pub const VERSION: u32 = 1;

/// The confirmations (new: adopted and ready; old: committed, it stops).
pub const READY: &[u8] = b"READY";
pub const GO: &[u8] = b"GO";

/// Largest frame accepted (a table of some million connections).
const MAX_FRAME: usize = 1 << 30;

/// Sync message size in the table frame.
const TABLE_MESSAGE: usize = 65_000;

/// Why a takeover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("cannot reach the running director at {path}: {source} (is `xvs run` running there?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the running director refused: {0}")]
    Refused(String),
    #[error("the running director's data plane does not fit this configuration: {0}")]
    Mismatch(String),
    #[error("takeover exchange: {0}")]
    Protocol(String),
    #[error("takeover exchange: {0}")]
    Io(#[from] std::io::Error),
    #[error("adopting the handed-over data plane")]
    Adopt(#[source] crate::io::IoError),
}

/// The sizes the handed-over AF_XDP sockets were made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSizes {
    pub ring_size: u32,
    pub chunk_size: u32,
    pub headroom: u32,
    pub need_wakeup: bool,
    pub zerocopy: bool,
}

/// The old process's offer: what the descriptors that come with it are, in order — the XDP
/// program, its maps ([`MAP_NAMES`]), its links (`links`), then per worker the UMEM memory
/// file followed by its sockets (`sockets[w]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Offer {
    pub version: u32,
    pub pid: u32,
    pub xvs_version: String,
    /// Interface names in port order.
    pub interfaces: Vec<String>,
    /// Each worker's queue.
    pub queues: Vec<u32>,
    pub sizes: RingSizes,
    /// ifindex of each BPF link.
    pub links: Vec<u32>,
    /// Per worker, per port: (ifindex, queue) of the socket.
    pub sockets: Vec<Vec<(u32, u32)>>,
    /// Per worker, the UMEM chunks on no ring.
    pub free: Vec<Vec<u64>>,
    /// What the XDP maps steer.
    pub targets: DirectorTargets,
    /// When the workers stopped receiving (ns since the Unix epoch).
    pub paused_at_ns: u64,
    /// Connection-table entries per worker in the table frame.
    pub entries: Vec<u64>,
    /// The announce device (`[announce]`), whose descriptor comes last: kept open across the
    /// takeover, the speaker never sees its addresses go.
    #[serde(default)]
    pub announce: Option<AnnounceOffer>,
}

/// The announce device as handed over.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnnounceOffer {
    pub name: String,
    /// The addresses on it.
    pub announced: Vec<IpAddr>,
    /// Whether announcing had begun (the warm-up was over).
    pub warm: bool,
}

/// The old process's first frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    Offer(Box<Offer>),
    Refused(String),
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Write one frame.
pub fn write_frame(s: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u32).to_le_bytes())?;
    s.write_all(bytes)
}

/// Read one frame (at most [`MAX_FRAME`] bytes).
pub fn read_frame(s: &mut impl Read) -> Result<Vec<u8>, TakeoverError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    read_body(s, u32::from_le_bytes(len) as usize)
}

fn read_body(s: &mut impl Read, n: usize) -> Result<Vec<u8>, TakeoverError> {
    if n > MAX_FRAME {
        return Err(TakeoverError::Protocol(format!("a frame of {n} bytes")));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// The table frame: per worker, a u32 message count, then each message (an IPVS sync
/// datagram, syncid 0, carrying all of the worker's entries in order) as a u32 length and its
/// bytes; then a u32 count of FullNAT entries and for each its u32 index among the worker's
/// entries, family (4 or 6), local address and port (big-endian) — what the sync protocol
/// cannot carry.
pub fn encode_table(tables: &[Vec<TakenConn>]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tables {
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        let mut enc = Encoder::new(0, TABLE_MESSAGE);
        for (c, _) in t {
            if !enc.push(c) {
                msgs.push(enc.finish());
                // An empty encoder takes every entry whose addresses share a family, which
                // every table entry's do.
                enc.push(c);
            }
        }
        if !enc.is_empty() {
            msgs.push(enc.finish());
        }
        out.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
        for m in msgs {
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(&m);
        }
        let locals: Vec<(usize, SocketAddr)> = t
            .iter()
            .enumerate()
            .filter_map(|(i, (_, l))| l.map(|l| (i, l)))
            .collect();
        out.extend_from_slice(&(locals.len() as u32).to_le_bytes());
        for (i, l) in locals {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            match l.ip() {
                IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
            out.extend_from_slice(&l.port().to_be_bytes());
        }
    }
    out
}

/// [`encode_table`] back into `workers` tables; any malformed part refuses the whole frame.
pub fn decode_table(bytes: &[u8], workers: usize) -> Result<Vec<Vec<TakenConn>>, TakeoverError> {
    let bad = |what: &str| TakeoverError::Protocol(format!("table frame: {what}"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], TakeoverError> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let s = &bytes[at..end];
        at = end;
        Ok(s)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut tables = Vec::with_capacity(workers);
    for _ in 0..workers {
        let count = u32_at(take(4)?);
        let mut conns = Vec::new();
        for _ in 0..count {
            let len = u32_at(take(4)?) as usize;
            let msg = take(len)?;
            decode(msg, 0, &mut conns).map_err(|e| bad(&format!("sync message: {e}")))?;
        }
        let mut t: Vec<TakenConn> = conns.into_iter().map(|c| (c, None)).collect();
        let locals = u32_at(take(4)?);
        let mut last: Option<usize> = None;
        for _ in 0..locals {
            let i = u32_at(take(4)?) as usize;
            if i >= t.len() || last.is_some_and(|l| l >= i) {
                return Err(bad("FullNAT entry index out of order or range"));
            }
            last = Some(i);
            let ip = match take(1)?[0] {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(4)?).expect("4"))),
                6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(16)?).expect("16"))),
                _ => return Err(bad("FullNAT address family")),
            };
            let p = take(2)?;
            t[i].1 = Some(SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])));
        }
        tables.push(t);
    }
    if at != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(tables)
}

/// The descriptors of an offer, in the order [`Offer`] describes (`tun`: the announce device's).
pub fn offer_fds(xdp: &XdpHandover, xsks: &[XskHandover], tun: Option<RawFd>) -> Vec<RawFd> {
    let mut fds = vec![xdp.prog];
    fds.extend(&xdp.maps);
    fds.extend(xdp.links.iter().map(|(_, fd)| *fd));
    for x in xsks {
        fds.push(x.umem_fd);
        fds.extend(x.sockets.iter().map(|(fd, _, _)| *fd));
    }
    fds.extend(tun);
    fds
}

/// The offer's sizes from a worker's handover.
pub fn ring_sizes(p: &XskParams) -> RingSizes {
    RingSizes {
        ring_size: p.ring_size,
        chunk_size: p.chunk_size,
        headroom: p.headroom,
        need_wakeup: p.need_wakeup,
        zerocopy: p.mode == BindMode::Zerocopy,
    }
}

/// Check that `offer` fits the new process's configuration.
pub fn check_offer(
    offer: &Offer,
    cfg: &DataplaneConfig,
    targets: &DirectorTargets,
) -> Result<(), TakeoverError> {
    if offer.version != VERSION {
        return Err(TakeoverError::Mismatch(format!(
            "takeover version {} (this xvs speaks {VERSION})",
            offer.version
        )));
    }
    let names: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    if offer.interfaces != names {
        return Err(TakeoverError::Mismatch(format!(
            "it runs on interfaces {:?}, this configuration on {names:?}",
            offer.interfaces
        )));
    }
    let queues: Vec<u32> = cfg.workers.iter().map(|w| w.queue).collect();
    if offer.queues != queues {
        return Err(TakeoverError::Mismatch(format!(
            "it runs {} worker(s) on queues {:?}, this configuration {} on {queues:?}",
            offer.queues.len(),
            offer.queues,
            queues.len()
        )));
    }
    if offer.targets.client_steering != targets.client_steering {
        return Err(TakeoverError::Mismatch(format!(
            "its client steering is {:?}, this configuration's {:?} (connections would be on the wrong workers)",
            offer.targets.client_steering, targets.client_steering
        )));
    }
    let n = offer.queues.len();
    if offer.sockets.len() != n || offer.free.len() != n || offer.entries.len() != n {
        return Err(TakeoverError::Protocol(
            "offer lists differ in length".into(),
        ));
    }
    Ok(())
}

/// A takeover that has the old process's data plane mapped and its tables, not yet committed.
pub struct Pending {
    stream: UnixStream,
    pub offer: Offer,
    pub inherited: Inherited,
    pub tables: Vec<Vec<TakenConn>>,
    /// The announce device, its addresses and warm flag.
    pub announce: Option<(TunDevice, Vec<IpAddr>, bool)>,
}

/// Steps 1–4 on the new side: connect, receive and check the offer, adopt (read only).
pub fn begin(
    socket: &Path,
    cfg: &DataplaneConfig,
    targets: &DirectorTargets,
) -> Result<Pending, TakeoverError> {
    let mut s = UnixStream::connect(socket).map_err(|source| TakeoverError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(MAGIC)?;
    // The descriptors come with the first bytes of the answer.
    let mut len = [0u8; 4];
    let (mut got, mut fds) = fdpass::recv_with_fds(&s, &mut len).map_err(TakeoverError::Adopt)?;
    if got == 0 {
        return Err(TakeoverError::Protocol(
            "the running director closed the connection (an xvs without takeover?)".into(),
        ));
    }
    while got < 4 {
        let n = s.read(&mut len[got..])?;
        if n == 0 {
            return Err(TakeoverError::Protocol("answer cut short".into()));
        }
        got += n;
    }
    let body = read_body(&mut s, u32::from_le_bytes(len) as usize)?;
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|e| TakeoverError::Protocol(format!("bad answer: {e}")))?;
    let offer = match answer {
        Answer::Refused(why) => return Err(TakeoverError::Refused(why)),
        Answer::Offer(o) => *o,
    };
    check_offer(&offer, cfg, targets)?;
    let want = 1
        + MAP_NAMES.len()
        + offer.links.len()
        + offer.sockets.iter().map(|s| 1 + s.len()).sum::<usize>()
        + usize::from(offer.announce.is_some());
    if fds.len() != want {
        return Err(TakeoverError::Protocol(format!(
            "{} descriptors received, the offer describes {want}",
            fds.len()
        )));
    }
    let table = read_frame(&mut s)?;
    let tables = decode_table(&table, offer.queues.len())?;
    for (t, n) in tables.iter().zip(&offer.entries) {
        if t.len() as u64 != *n {
            return Err(TakeoverError::Protocol(format!(
                "table frame holds {} entries of a worker, the offer says {n}",
                t.len()
            )));
        }
    }
    let mut it = fds.drain(..);
    let mut next = || it.next().expect("counted above");
    let prog = next();
    let maps: Vec<OwnedFd> = (0..MAP_NAMES.len()).map(|_| next()).collect();
    let links: Vec<(u32, OwnedFd)> = offer.links.iter().map(|i| (*i, next())).collect();
    let xdp = XdpProgram::adopt(prog, maps, links).map_err(TakeoverError::Adopt)?;
    let sz = offer.sizes;
    let params = XskParams {
        ring_size: sz.ring_size,
        chunk_size: sz.chunk_size,
        headroom: sz.headroom,
        batch: cfg.afxdp.batch,
        need_wakeup: sz.need_wakeup,
        mode: if sz.zerocopy {
            BindMode::Zerocopy
        } else {
            BindMode::Copy
        },
        tx_hold_us: cfg.afxdp.tx_hold_us,
    };
    let mut ios = Vec::new();
    for (socks, free) in offer.sockets.iter().zip(&offer.free) {
        let umem = next();
        let sockets: Vec<(OwnedFd, u32, u32)> =
            socks.iter().map(|(i, q)| (next(), *i, *q)).collect();
        ios.push(AfXdpIo::adopt(umem, sockets, params, free).map_err(TakeoverError::Adopt)?);
    }
    let announce = match &offer.announce {
        Some(a) => Some((
            TunDevice::adopt(next(), &a.name).map_err(TakeoverError::Adopt)?,
            a.announced.clone(),
            a.warm,
        )),
        None => None,
    };
    drop(it);
    Ok(Pending {
        stream: s,
        inherited: Inherited {
            xdp,
            ios,
            targets: offer.targets.clone(),
        },
        tables,
        offer,
        announce,
    })
}

/// A committed takeover: the old process is stopping.
pub struct Committed {
    stream: UnixStream,
    pub offer: Offer,
    /// The announce device handed over (see [`Pending::announce`]), to continue.
    pub announce: Option<(TunDevice, Vec<IpAddr>, bool)>,
}

impl Pending {
    /// Step 4–5: tell the old process we are ready and wait for its `GO`. After `Ok` the rings
    /// are ours (start the workers on the returned data plane, with the tables); the
    /// connection stays open until the old process exits.
    #[allow(clippy::type_complexity)]
    pub fn commit(mut self) -> Result<(Committed, Inherited, Vec<Vec<TakenConn>>), TakeoverError> {
        write_frame(&mut self.stream, READY)?;
        let go = read_frame(&mut self.stream)?;
        if go != GO {
            return Err(TakeoverError::Protocol(format!(
                "expected GO, got {:?}",
                String::from_utf8_lossy(&go)
            )));
        }
        Ok((
            Committed {
                stream: self.stream,
                offer: self.offer,
                announce: self.announce,
            },
            self.inherited,
            self.tables,
        ))
    }
}

impl Committed {
    /// Wait (at most `wait`) until the old process has closed the connection: it has exited.
    pub fn wait_predecessor(mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut b = [0u8; 64];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_forwarding::sync::{flags, SyncConn};

    fn conn(i: u16, v6: bool) -> SyncConn {
        let (c, v, d) = if v6 {
            (
                format!("[2001:2::1]:{}", 1000 + i),
                "[2001:2:0:10::1]:80".to_string(),
                "[2001:2:0:3::11]:80".to_string(),
            )
        } else {
            (
                format!("198.18.0.1:{}", 1000 + i),
                "198.18.10.1:80".to_string(),
                "198.18.3.11:80".to_string(),
            )
        };
        SyncConn {
            protocol: 6,
            flags: flags::MASQ
                | if i.is_multiple_of(2) {
                    flags::INACTIVE
                } else {
                    0
                },
            state: 1 + (i % 3),
            client: c.parse().unwrap(),
            virt: v.parse().unwrap(),
            dest: d.parse().unwrap(),
            fwmark: 0,
            timeout: Some(900),
            seq: None,
            has_pe: false,
        }
    }

    #[test]
    fn tables_round_trip_over_several_messages_and_workers() {
        // Every seventh entry of the first worker is FullNAT (a local address and port).
        let w0: Vec<TakenConn> = (0..700)
            .map(|i: u16| {
                let v6 = i.is_multiple_of(5);
                let local = i.is_multiple_of(7).then(|| {
                    if v6 {
                        SocketAddr::new("2001:2:0:3::100".parse().unwrap(), 1024 + i)
                    } else {
                        SocketAddr::new("198.18.3.100".parse().unwrap(), 1024 + i)
                    }
                });
                (conn(i, v6), local)
            })
            .collect();
        let w1: Vec<TakenConn> = Vec::new();
        let w2: Vec<TakenConn> = (0..3).map(|i| (conn(i, false), None)).collect();
        let tables = vec![w0, w1, w2];
        let bytes = encode_table(&tables);
        assert_eq!(decode_table(&bytes, 3).unwrap(), tables);
        // Truncated anywhere, extended, or for the wrong worker count: refused, no panic.
        for cut in [0, 3, 4, 9, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_table(&bytes[..cut], 3).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_table(&longer, 3).is_err());
        assert!(decode_table(&bytes, 2).is_err());
        let mut corrupt = bytes.clone();
        corrupt[10] ^= 0xff; // the first message's size field
        assert!(decode_table(&corrupt, 3).is_err());
    }

    #[test]
    fn frames_round_trip_and_answers_parse() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"READY").unwrap();
        assert_eq!(read_frame(&mut &buf[..]).unwrap(), READY);
        assert!(read_frame(&mut &buf[..6]).is_err());
        let a = Answer::Refused("no".into());
        let text = serde_json::to_vec(&a).unwrap();
        assert!(matches!(
            serde_json::from_slice::<Answer>(&text).unwrap(),
            Answer::Refused(s) if s == "no"
        ));
    }
}
