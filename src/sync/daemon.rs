//! The sync daemons' sockets and threads (the kernel's `sync_thread_master` /
//! `sync_thread_backup` in `ip_vs_sync.c`).
//!
//! * **Master**: the workers offer the entries their pipelines queued ([`SyncOutbox`]); one
//!   thread packs them into version-1 messages of at most `maxlen` bytes and sends each message
//!   when it is full, or when its first entry has waited [`SyncSettings::flush`] (kernel: 2 s),
//!   to the multicast group (TTL `ttl`, loopback off, leaving by `interface`) or to each unicast
//!   peer. At most `qlen_max` entries wait; more are dropped and counted.
//! * **Backup**: one thread receives on the group (joined on `interface`) or, with peers, on the
//!   port from those peers only; decodes (wrong size, foreign sync id and malformed entries are
//!   counted by reason, entries before a malformed one kept as the kernel keeps them) and hands
//!   the entries to a delivery function, which the director points at the worker owning each
//!   flow.
//! * **Bulk resync** (xvs only; the kernel's sync is one-way and has no such request): a backup
//!   that starts sends a `BulkRequest` with a random node id to the sync port + 1 (of the group
//!   or of each peer; a director running both daemons keeps the sync port for its backup),
//!   repeated every second until answered, at most [`BULK_TRIES`] times; a master listens there
//!   and answers a request with every entry of its workers' tables
//!   (ordinary version-1 messages, sent the way its updates go, paced) followed by a
//!   `BulkDone` for that node with the count. So a director that (re)starts is warm in seconds
//!   instead of waiting for each connection's next threshold-driven update. Kernel backups
//!   ignore both xvs messages and install the entries like any update.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use xvs_forwarding::sync::{
    decode, encode_xvs, DecodeError, Decoded, Encoder, SyncConn, XvsMessage,
};

use super::{DaemonConfig, Role, SyncSettings};
use crate::io::sys::interface_info;

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("interface {name}")]
    Interface {
        name: String,
        #[source]
        source: crate::io::IoError,
    },
    #[error("interface {0} has no IPv4 address to send multicast from")]
    NoAddress(String),
    #[error("{what} ({role} daemon on {interface})")]
    Socket {
        what: &'static str,
        role: &'static str,
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("a {0} sync daemon is already running")]
    Running(&'static str),
    #[error("no {0} sync daemon is running")]
    NotRunning(&'static str),
    #[error("cannot start a thread")]
    Thread(#[source] io::Error),
}

/// A daemon's counters (read by `xvs ctl status` and the metrics).
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// Messages sent (master) or accepted (backup).
    pub messages: AtomicU64,
    /// Entries sent (master) or received (backup).
    pub entries: AtomicU64,
    /// Master: entries dropped because `qlen_max` were waiting.
    pub queue_full: AtomicU64,
    /// Socket errors (send or receive).
    pub socket_errors: AtomicU64,
    /// Backup: datagrams from an address not in the peer list.
    pub foreign_peer: AtomicU64,
    /// Backup: entries the owning worker's inbox had no room for.
    pub undelivered: AtomicU64,
    /// Backup: datagrams rejected (or cut short) by the decoder, by [`DecodeError::index`].
    pub decode_errors: [AtomicU64; DecodeError::NAMES.len()],
    /// Bulk resync. Backup: requests sent; master: requests answered.
    pub bulk_requests: AtomicU64,
    /// Master: entries sent in bulk answers. Backup: entries the last completed answer held.
    pub bulk_entries: AtomicU64,
    /// Backup: answers completed (a `BulkDone` for this process).
    pub bulk_done: AtomicU64,
}

/// The workers' way into the master daemon: bounded by `qlen_max` entries.
#[derive(Clone, Debug)]
pub struct SyncOutbox {
    tx: Sender<Vec<SyncConn>>,
    queued: Arc<AtomicUsize>,
    max: usize,
    stats: Arc<DaemonStats>,
}

impl SyncOutbox {
    /// Queue a worker's entries for sending; counted as dropped when too many wait.
    pub fn offer(&self, batch: Vec<SyncConn>) {
        let n = batch.len();
        if n == 0 {
            return;
        }
        if self.queued.load(Ordering::Relaxed) + n > self.max {
            self.stats.queue_full.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.try_send(batch).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats.queue_full.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Where a backup's entries go: returns how many could not be handed on.
pub type Deliver = Box<dyn Fn(Vec<SyncConn>) -> u64 + Send>;

/// Every entry of the director's tables, for a bulk answer.
pub type Table = Box<dyn Fn() -> Vec<SyncConn> + Send>;

/// How often a backup asks for a bulk resync before it gives up (one second apart).
pub const BULK_TRIES: u32 = 3;

/// A bulk answer pauses this long after each this many messages, so that a receiver's socket
/// buffer (about 200 KB by default) keeps up.
const BULK_PACE: (u32, Duration) = (32, Duration::from_millis(2));

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub config: DaemonConfig,
    /// The message payload limit in force.
    pub maxlen: u16,
    pub stats: Arc<DaemonStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The master's bulk-request listener.
    bulk: Option<JoinHandle<()>>,
}

/// How long a thread blocks before it looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);

fn socket_err<'a>(
    cfg: &'a DaemonConfig,
    what: &'static str,
) -> impl FnOnce(io::Error) -> SyncError + 'a {
    move |source| SyncError::Socket {
        what,
        role: cfg.role.as_str(),
        interface: cfg.interface.clone(),
        source,
    }
}

/// The first IPv4 address of `name`.
fn ipv4_of(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|i| {
        if i.interface_name != name {
            return None;
        }
        i.address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip())
    })
}

fn new_socket(cfg: &DaemonConfig, v6: bool) -> Result<Socket, SyncError> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(socket_err(cfg, "socket"))?;
    s.bind_device(Some(cfg.interface.as_bytes()))
        .map_err(socket_err(cfg, "SO_BINDTODEVICE"))?;
    Ok(s)
}

/// Where a master sends.
fn destinations(cfg: &DaemonConfig) -> Vec<SocketAddr> {
    if cfg.peers.is_empty() {
        vec![SocketAddr::new(cfg.group, cfg.port)]
    } else {
        cfg.peers.clone()
    }
}

fn master_socket(cfg: &DaemonConfig, ifindex: u32) -> Result<Socket, SyncError> {
    let v6 = match cfg.peers.first() {
        Some(p) => p.is_ipv6(),
        None => cfg.group.is_ipv6(),
    };
    let s = new_socket(cfg, v6)?;
    if cfg.peers.is_empty() {
        if v6 {
            s.set_multicast_if_v6(ifindex)
                .map_err(socket_err(cfg, "IPV6_MULTICAST_IF"))?;
            s.set_multicast_hops_v6(u32::from(cfg.ttl))
                .map_err(socket_err(cfg, "IPV6_MULTICAST_HOPS"))?;
            s.set_multicast_loop_v6(false)
                .map_err(socket_err(cfg, "IPV6_MULTICAST_LOOP"))?;
        } else {
            let addr = ipv4_of(&cfg.interface)
                .ok_or_else(|| SyncError::NoAddress(cfg.interface.clone()))?;
            s.set_multicast_if_v4(&addr)
                .map_err(socket_err(cfg, "IP_MULTICAST_IF"))?;
            s.set_multicast_ttl_v4(u32::from(cfg.ttl))
                .map_err(socket_err(cfg, "IP_MULTICAST_TTL"))?;
            s.set_multicast_loop_v4(false)
                .map_err(socket_err(cfg, "IP_MULTICAST_LOOP"))?;
            // As the kernel's master: messages leave from the interface's address.
            s.bind(&SockAddr::from(SocketAddr::new(IpAddr::V4(addr), 0)))
                .map_err(socket_err(cfg, "bind"))?;
        }
    }
    Ok(s)
}

fn backup_socket(cfg: &DaemonConfig, ifindex: u32) -> Result<Socket, SyncError> {
    let v6 = match cfg.peers.first() {
        Some(p) => p.is_ipv6(),
        None => cfg.group.is_ipv6(),
    };
    let s = new_socket(cfg, v6)?;
    s.set_reuse_address(true)
        .map_err(socket_err(cfg, "SO_REUSEADDR"))?;
    let any: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let bind_to = if cfg.peers.is_empty() { cfg.group } else { any };
    s.bind(&SockAddr::from(SocketAddr::new(bind_to, cfg.port)))
        .map_err(socket_err(cfg, "bind"))?;
    if cfg.peers.is_empty() {
        match cfg.group {
            IpAddr::V4(g) => s
                .join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(ifindex))
                .map_err(socket_err(cfg, "IP_ADD_MEMBERSHIP"))?,
            IpAddr::V6(g) => s
                .join_multicast_v6(&g, ifindex)
                .map_err(socket_err(cfg, "IPV6_ADD_MEMBERSHIP"))?,
        }
    }
    s.set_read_timeout(Some(TICK))
        .map_err(socket_err(cfg, "SO_RCVTIMEO"))?;
    Ok(s)
}

impl Daemon {
    /// Start a master daemon. The workers offer their entries through the returned outbox;
    /// `table` gives every entry for a bulk answer.
    pub fn start_master(
        cfg: DaemonConfig,
        settings: &SyncSettings,
        table: Table,
    ) -> Result<(Daemon, SyncOutbox), SyncError> {
        debug_assert_eq!(cfg.role, Role::Master);
        let info = interface_info(&cfg.interface).map_err(|source| SyncError::Interface {
            name: cfg.interface.clone(),
            source,
        })?;
        let maxlen = cfg.effective_maxlen(info.mtu);
        let sock: UdpSocket = master_socket(&cfg, info.ifindex)?.into();
        let listen: UdpSocket = backup_socket(&bulk_port(&cfg), info.ifindex)?.into();
        let stats = Arc::new(DaemonStats::default());
        let (tx, rx) = bounded(4096);
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = SyncOutbox {
            tx,
            queued: queued.clone(),
            max: settings.qlen_max.max(1),
            stats: stats.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let to = destinations(&cfg);
        let bulk = BulkAnswer {
            listen,
            sock: sock.try_clone().map_err(socket_err(&cfg, "dup"))?,
            to: to.clone(),
            syncid: cfg.syncid,
            maxlen: usize::from(maxlen),
            peers: cfg.peers.iter().map(|p| p.ip()).collect(),
            table,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let run = MasterLoop {
            sock,
            to,
            enc: Encoder::new(cfg.syncid, usize::from(maxlen)),
            rx,
            queued,
            flush: settings.flush,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("xvs-sync-master".into())
            .spawn(move || run.run())
            .map_err(SyncError::Thread)?;
        let mut daemon = Daemon {
            config: cfg,
            maxlen,
            stats,
            stop,
            thread: Some(thread),
            bulk: None,
        };
        daemon.bulk = Some(
            std::thread::Builder::new()
                .name("xvs-sync-bulk".into())
                .spawn(move || bulk.run())
                .map_err(SyncError::Thread)?,
        );
        Ok((daemon, outbox))
    }

    /// Start a backup daemon; `deliver` gets the entries of each accepted datagram and
    /// returns how many it could not hand on (counted as undelivered).
    pub fn start_backup(cfg: DaemonConfig, deliver: Deliver) -> Result<Daemon, SyncError> {
        debug_assert_eq!(cfg.role, Role::Backup);
        let info = interface_info(&cfg.interface).map_err(|source| SyncError::Interface {
            name: cfg.interface.clone(),
            source,
        })?;
        let maxlen = cfg.effective_maxlen(info.mtu);
        let sock = backup_socket(&cfg, info.ifindex)?;
        // Requests leave like a master's messages (a socket bound to the group cannot send).
        let ask: UdpSocket = master_socket(&cfg, info.ifindex)?.into();
        let stats = Arc::new(DaemonStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let run = BackupLoop {
            sock: sock.into(),
            ask,
            to: destinations(&bulk_port(&cfg)),
            node: random_node(),
            syncid: cfg.syncid,
            peers: cfg.peers.iter().map(|p| p.ip()).collect(),
            deliver,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("xvs-sync-backup".into())
            .spawn(move || run.run())
            .map_err(SyncError::Thread)?;
        Ok(Daemon {
            config: cfg,
            maxlen,
            stats,
            stop,
            thread: Some(thread),
            bulk: None,
        })
    }

    /// Stop the thread (a master sends what it holds first) and wait for it.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in [self.thread.take(), self.bulk.take()].into_iter().flatten() {
            let _ = t.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

struct MasterLoop {
    sock: UdpSocket,
    to: Vec<SocketAddr>,
    enc: Encoder,
    rx: Receiver<Vec<SyncConn>>,
    queued: Arc<AtomicUsize>,
    flush: Duration,
    stats: Arc<DaemonStats>,
    stop: Arc<AtomicBool>,
}

impl MasterLoop {
    fn run(mut self) {
        let mut first: Option<Instant> = None;
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            match self
                .rx
                .recv_timeout(if stopping { Duration::ZERO } else { TICK })
            {
                Ok(batch) => {
                    self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                    for c in &batch {
                        if !self.enc.push(c) {
                            self.send();
                            first = None;
                            // An empty message takes any entry a max_len ≥ 8 + 72 allows.
                            if !self.enc.push(c) {
                                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        first.get_or_insert_with(Instant::now);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if stopping {
                        self.send();
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.send();
                    return;
                }
            }
            if first.is_some_and(|t| t.elapsed() >= self.flush) {
                self.send();
                first = None;
            }
        }
    }

    fn send(&mut self) {
        if self.enc.is_empty() {
            return;
        }
        let n = u64::from(self.enc.count());
        let msg = self.enc.finish();
        let mut ok = false;
        for to in &self.to {
            match self.sock.send_to(&msg, *to) {
                Ok(_) => ok = true,
                Err(_) => {
                    self.stats.socket_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if ok {
            self.stats.messages.fetch_add(1, Ordering::Relaxed);
            self.stats.entries.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Where bulk requests go: the sync port + 1 (the group's, or each peer's).
fn bulk_port(cfg: &DaemonConfig) -> DaemonConfig {
    let mut c = cfg.clone();
    c.port = c.port.wrapping_add(1);
    for p in &mut c.peers {
        p.set_port(p.port().wrapping_add(1));
    }
    c
}

/// A random node id for bulk requests (std's randomly keyed hasher).
fn random_node() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

struct BackupLoop {
    sock: UdpSocket,
    ask: UdpSocket,
    to: Vec<SocketAddr>,
    node: u64,
    syncid: u8,
    peers: Vec<IpAddr>,
    deliver: Deliver,
    stats: Arc<DaemonStats>,
    stop: Arc<AtomicBool>,
}

impl BackupLoop {
    fn request(&self) {
        let msg = encode_xvs(self.syncid, &XvsMessage::BulkRequest { node: self.node });
        for to in &self.to {
            if self.ask.send_to(&msg, *to).is_err() {
                self.stats.socket_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.bulk_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn run(self) {
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::new();
        let mut answered = false;
        let mut tries = 0;
        let mut next_ask = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if !answered && tries < BULK_TRIES && Instant::now() >= next_ask {
                self.request();
                tries += 1;
                next_ask = Instant::now() + Duration::from_secs(1);
            }
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => {
                    self.stats.socket_errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            if !self.peers.is_empty() && !self.peers.contains(&from.ip()) {
                self.stats.foreign_peer.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match decode(&buf[..n], self.syncid, &mut out) {
                Ok(Decoded::Xvs {
                    msg: XvsMessage::BulkDone { node, entries },
                    ..
                }) if node == self.node => {
                    answered = true;
                    self.stats.bulk_done.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bulk_entries
                        .store(u64::from(entries), Ordering::Relaxed);
                }
                // Other nodes' requests and answers: a master's business.
                Ok(Decoded::Xvs { .. }) => {}
                Ok(_) => {
                    self.stats.messages.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.decode_errors[e.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
            if !out.is_empty() {
                self.stats
                    .entries
                    .fetch_add(out.len() as u64, Ordering::Relaxed);
                let lost = (self.deliver)(std::mem::take(&mut out));
                self.stats.undelivered.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }
}

/// The master's answer to bulk requests.
struct BulkAnswer {
    listen: UdpSocket,
    sock: UdpSocket,
    to: Vec<SocketAddr>,
    syncid: u8,
    maxlen: usize,
    peers: Vec<IpAddr>,
    table: Table,
    stats: Arc<DaemonStats>,
    stop: Arc<AtomicBool>,
}

impl BulkAnswer {
    fn run(self) {
        let mut buf = vec![0u8; 65_536];
        let mut scratch = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let (n, from) = match self.listen.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => continue,
            };
            if !self.peers.is_empty() && !self.peers.contains(&from.ip()) {
                continue;
            }
            scratch.clear();
            if let Ok(Decoded::Xvs {
                msg: XvsMessage::BulkRequest { node },
                ..
            }) = decode(&buf[..n], self.syncid, &mut scratch)
            {
                self.answer(node);
            }
        }
    }

    fn send(&self, msg: &[u8]) {
        for to in &self.to {
            if self.sock.send_to(msg, *to).is_err() {
                self.stats.socket_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn answer(&self, node: u64) {
        let entries = (self.table)();
        let mut enc = Encoder::new(self.syncid, self.maxlen);
        let mut sent = 0u32;
        let mut messages = 0u32;
        for c in &entries {
            if !enc.push(c) {
                self.send(&enc.finish());
                messages += 1;
                if messages.is_multiple_of(BULK_PACE.0) {
                    std::thread::sleep(BULK_PACE.1);
                }
                if !enc.push(c) {
                    continue;
                }
            }
            sent += 1;
        }
        if !enc.is_empty() {
            self.send(&enc.finish());
        }
        self.send(&encode_xvs(
            self.syncid,
            &XvsMessage::BulkDone {
                node,
                entries: sent,
            },
        ));
        self.stats.bulk_requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bulk_entries
            .fetch_add(u64::from(sent), Ordering::Relaxed);
    }
}
