//! Connection sync, the binary's side: the daemons (`ipvsadm --start-daemon master|backup`)
//! that send the workers' sync entries as IPVS sync messages and install received ones in the
//! worker that owns each flow. The messages are encoded and decoded by
//! `xvs_forwarding::sync`; what is sent and when is decided in each worker's pipeline
//! (`xvs_forwarding::sync::policy`). This module holds the settings, [`daemon`] the sockets
//! and threads.
//!
//! Defaults are the kernel's (`net/netfilter/ipvs/ip_vs_sync.c`, ipvs-sysctl.rst): group
//! 224.0.0.81 (IPv6: ff02::81 is xvs's choice when the group is IPv6 and not given — the kernel
//! has no IPv6 default), port 8848, TTL 1, message payload at most the interface MTU (≤ 1500)
//! less the IP and UDP headers, `sync_threshold` 3 50, `sync_refresh_period` 0, `sync_retries`
//! 0, `sync_persist_mode` 0, a partly filled message sent after 2 s.

pub mod daemon;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use xvs_forwarding::sync::policy::SyncPolicy;

/// The kernel's default multicast group and port.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;

/// Which daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Sends this director's connections.
    Master,
    /// Receives and installs a master's connections.
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "master" => Ok(Role::Master),
            "backup" => Ok(Role::Backup),
            _ => Err(format!("{s:?}: expected master or backup")),
        }
    }
}

/// One daemon's parameters (ipvsadm's `--mcast-interface`, `--syncid`, `--sync-maxlen`,
/// `--mcast-group`, `--mcast-port`, `--mcast-ttl`), plus xvs's unicast peer list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub role: Role,
    /// The interface messages leave by (master) or are received on (backup).
    pub interface: String,
    /// Sync id: a master stamps it on its messages; a backup with a non-zero id accepts only
    /// messages that carry it.
    pub syncid: u8,
    /// Multicast group (the family of the sync traffic).
    pub group: IpAddr,
    pub port: u16,
    /// Multicast TTL / hop limit (master).
    pub ttl: u8,
    /// Largest message payload in bytes; `None`: from the interface MTU.
    pub maxlen: Option<u16>,
    /// Unicast peers: a master sends to each of them instead of the group; a backup receives
    /// on `port` from these addresses only (their ports are not checked).
    pub peers: Vec<SocketAddr>,
}

impl DaemonConfig {
    /// ipvsadm's defaults for `role` on `interface`.
    pub fn new(role: Role, interface: impl Into<String>) -> Self {
        DaemonConfig {
            role,
            interface: interface.into(),
            syncid: 0,
            group: IpAddr::V4(DEFAULT_GROUP),
            port: DEFAULT_PORT,
            ttl: 1,
            maxlen: None,
            peers: Vec::new(),
        }
    }

    /// The message payload limit for an interface of `mtu`: the kernel's
    /// `min(mtu, 1500) - IP header - UDP header`, or `maxlen` when given.
    pub fn effective_maxlen(&self, mtu: u32) -> u16 {
        self.maxlen.unwrap_or_else(|| {
            let hdr = if self.group.is_ipv6() { 48 } else { 28 };
            (mtu.clamp(576, 1500) - hdr) as u16
        })
    }
}

/// The `[sync]` knobs shared by both daemons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    pub policy: SyncPolicy,
    /// `sync_qlen_max`: entries waiting to be sent (over all workers) before new ones are
    /// dropped and counted.
    pub qlen_max: usize,
    /// A partly filled message leaves after this long (kernel: 2 s).
    pub flush: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            policy: SyncPolicy::default(),
            qlen_max: 65_536,
            flush: Duration::from_secs(2),
        }
    }
}

/// Everything about sync in a configuration: the knobs and the daemons to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncConfig {
    pub settings: SyncSettings,
    pub master: Option<DaemonConfig>,
    pub backup: Option<DaemonConfig>,
}
