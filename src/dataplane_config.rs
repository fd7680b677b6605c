//! The data-plane part of the TOML configuration: I/O backend, interfaces (ports), the
//! queue → core map of the workers, ring sizes and the periodic log.
//!
//! ```toml
//! io = "afxdp"                # or "packet"; `xvs run --io` overrides
//! xdp_mode = "native"         # or "generic"
//! [[interface]]
//! name = "front"              # port 0
//! [[interface]]
//! name = "back"               # port 1
//! [[worker]]
//! queue = 0                   # this worker polls queue 0 of every interface
//! core = 0                    # pinned to CPU 0 (omit: not pinned)
//! [[worker]]
//! queue = 1
//! core = 1
//! ```
//! Port `i` (`PortId(i)`) is the `i`-th `[[interface]]`.
//!
//! With several workers, `[steering]` says how client connections are spread over them (see
//! [`SteeringConfig`]); it is fixed for the life of the process.

use serde::{Deserialize, Serialize};

pub use crate::io::xdp::XdpMode;

/// Which I/O backend the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoKind {
    /// AF_XDP sockets behind xvs's XDP program (default).
    #[default]
    Afxdp,
    /// AF_PACKET with PACKET_MMAP rings (the kernel keeps seeing every frame).
    Packet,
}

impl std::str::FromStr for IoKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "afxdp" => Ok(IoKind::Afxdp),
            "packet" => Ok(IoKind::Packet),
            _ => Err(format!("unknown I/O backend {s:?} (afxdp or packet)")),
        }
    }
}

impl std::fmt::Display for IoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoKind::Afxdp => "afxdp",
            IoKind::Packet => "packet",
        })
    }
}

/// One interface the director receives and transmits on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
}

/// One worker: the rx queue it polls on every interface and the CPU it is pinned to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub queue: u32,
    #[serde(default)]
    pub core: Option<usize>,
}

/// AF_XDP sizes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AfXdpConfig {
    /// Entries per ring (rx, tx, fill, completion), power of two.
    pub ring_size: u32,
    /// UMEM chunk size: 2048 or 4096.
    pub chunk_size: u32,
    /// Frames taken from an rx ring per poll (at most 64).
    pub batch: u32,
    /// "copy" (default; veth supports nothing else), "zerocopy", or "auto" (zero-copy if the
    /// driver supports it, else copy).
    pub bind: crate::io::afxdp::BindMode,
    /// How long (µs, at most 1000) the last part of a round's transmit on a port, fewer than 32
    /// frames, may wait for later rounds before it is kicked anyway (fewer sendto(2) calls per
    /// frame, that much more latency); 0 (default): kick at the end of every round.
    pub tx_hold_us: u32,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            ring_size: 2048,
            chunk_size: 4096,
            batch: 64,
            bind: crate::io::afxdp::BindMode::Copy,
            tx_hold_us: 0,
        }
    }
}

/// AF_PACKET sizes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacketConfig {
    pub block_size: u32,
    pub block_count: u32,
    pub frame_size: u32,
    pub tx_frames: u32,
    pub block_timeout_ms: u32,
}

impl Default for PacketConfig {
    fn default() -> Self {
        let p = crate::io::packet::PacketParams::default();
        PacketConfig {
            block_size: p.block_size,
            block_count: p.block_count,
            frame_size: p.frame_size,
            tx_frames: p.tx_frames,
            block_timeout_ms: p.block_timeout_ms,
        }
    }
}

fn default_workers() -> Vec<WorkerConfig> {
    vec![WorkerConfig {
        queue: 0,
        core: None,
    }]
}
fn default_log_interval() -> u64 {
    10
}
fn default_neigh_refresh() -> u64 {
    1000
}
fn default_idle_wait() -> i32 {
    10
}

/// How client connections are spread over the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SteeringMode {
    /// Chosen from the configuration at start: `address` with the shortest persistence netmask
    /// if a service is persistent, else `flow`.
    #[default]
    Auto,
    /// Client address and port: the best spread over many workers; persistence (`-p`) is then
    /// kept per worker, so one client's connections may be scheduled by different workers.
    Flow,
    /// Client address masked to `v4_prefix` / `v6_prefix`: every connection of a client network
    /// is handled by one worker, so persistence with a netmask at most that long behaves exactly
    /// as in IPVS; the spread is by client network only.
    Address,
}

/// `[steering]`: the client steering of a director with several workers. It is decided once,
/// at start, and never changes while the process runs — neither services added or removed at
/// run time (`xvs ctl`) nor reloads move an established connection to another worker (a worker
/// holds only its own connections). A persistent service added later under `flow` steering, or
/// with a shorter netmask than the `address` prefix, keeps its persistence per worker (a
/// warning says so); an operator who expects that sets `clients = "address"` and the prefixes
/// up front.
///
/// ```toml
/// [steering]
/// clients = "address"   # "auto" (default) | "flow" | "address"
/// v4_prefix = 24        # address mode: one worker per client /24 (default: the shortest
/// v6_prefix = 64        # persistence netmask at start, else /32 and /128)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    #[serde(default)]
    pub clients: SteeringMode,
    pub v4_prefix: Option<u8>,
    pub v6_prefix: Option<u8>,
}

/// The data-plane configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    #[serde(default)]
    pub io: IoKind,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    #[serde(rename = "worker", default = "default_workers")]
    pub workers: Vec<WorkerConfig>,
    #[serde(default)]
    pub afxdp: AfXdpConfig,
    #[serde(default)]
    pub packet: PacketConfig,
    /// Seconds between the per-worker log lines (0: none).
    #[serde(default = "default_log_interval")]
    pub log_interval_secs: u64,
    /// Milliseconds between neighbour-table refreshes.
    #[serde(default = "default_neigh_refresh")]
    pub neighbour_refresh_ms: u64,
    /// How long an idle worker sleeps in poll(2) before polling the rings again, in ms
    /// (0: busy-poll forever).
    #[serde(default = "default_idle_wait")]
    pub idle_wait_ms: i32,
    /// Client steering over several workers, fixed at start.
    #[serde(default)]
    pub steering: SteeringConfig,
}

/// A rejected data-plane configuration: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DataplaneConfigError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> DataplaneConfigError {
    DataplaneConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl DataplaneConfig {
    /// A configuration with these interfaces and one unpinned worker on queue 0.
    pub fn new(interfaces: &[&str]) -> Self {
        DataplaneConfig {
            io: IoKind::default(),
            xdp_mode: XdpMode::default(),
            interfaces: interfaces
                .iter()
                .map(|n| InterfaceConfig {
                    name: n.to_string(),
                })
                .collect(),
            workers: default_workers(),
            afxdp: AfXdpConfig::default(),
            packet: PacketConfig::default(),
            log_interval_secs: default_log_interval(),
            neighbour_refresh_ms: default_neigh_refresh(),
            idle_wait_ms: default_idle_wait(),
            steering: SteeringConfig::default(),
        }
    }

    /// Check everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), DataplaneConfigError> {
        if self.interfaces.is_empty() {
            return Err(err("interface", "at least one [[interface]] is required"));
        }
        if self.interfaces.len() > crate::io::xdp::MAX_PORTS {
            return Err(err(
                "interface",
                format!("at most {} interfaces", crate::io::xdp::MAX_PORTS),
            ));
        }
        for (i, a) in self.interfaces.iter().enumerate() {
            let f = format!("interface[{i}].name");
            if a.name.is_empty() || a.name.len() >= 16 || a.name.contains(['/', ' ', '\0']) {
                return Err(err(
                    f,
                    format!("{:?} is not a valid interface name", a.name),
                ));
            }
            if self.interfaces[..i].iter().any(|b| b.name == a.name) {
                return Err(err(f, format!("{} is listed twice", a.name)));
            }
        }
        if self.workers.is_empty() {
            return Err(err("worker", "at least one [[worker]] is required"));
        }
        let cores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(0);
        for (i, w) in self.workers.iter().enumerate() {
            if self.workers[..i].iter().any(|v| v.queue == w.queue) {
                return Err(err(
                    format!("worker[{i}].queue"),
                    format!("queue {} has two workers", w.queue),
                ));
            }
            if w.queue as usize >= crate::io::xdp::MAX_QUEUES {
                return Err(err(
                    format!("worker[{i}].queue"),
                    format!("at most {} queues", crate::io::xdp::MAX_QUEUES),
                ));
            }
            if let Some(c) = w.core {
                if cores > 0 && c >= cores {
                    return Err(err(
                        format!("worker[{i}].core"),
                        format!("CPU {c} does not exist (this process may use {cores})"),
                    ));
                }
            }
        }
        let a = &self.afxdp;
        if !a.ring_size.is_power_of_two() || !(64..=16384).contains(&a.ring_size) {
            return Err(err("afxdp.ring_size", "a power of two in 64..=16384"));
        }
        if a.chunk_size != 2048 && a.chunk_size != 4096 {
            return Err(err("afxdp.chunk_size", "2048 or 4096"));
        }
        if a.batch == 0 || a.batch > a.ring_size || a.batch as usize > crate::io::MAX_BATCH {
            return Err(err(
                "afxdp.batch",
                format!("1..={} and at most ring_size", crate::io::MAX_BATCH),
            ));
        }
        if a.tx_hold_us > 1000 {
            return Err(err("afxdp.tx_hold_us", "at most 1000"));
        }
        let p = &self.packet;
        if !p.frame_size.is_power_of_two() || !(2048..=65536).contains(&p.frame_size) {
            return Err(err("packet.frame_size", "a power of two in 2048..=65536"));
        }
        if !p.block_size.is_multiple_of(4096) || p.block_size < p.frame_size {
            return Err(err(
                "packet.block_size",
                "a multiple of 4096 and at least frame_size",
            ));
        }
        if p.block_count == 0 || p.tx_frames == 0 {
            return Err(err("packet", "block_count and tx_frames must be positive"));
        }
        if self.neighbour_refresh_ms == 0 {
            return Err(err("neighbour_refresh_ms", "must be positive"));
        }
        let st = &self.steering;
        if st.v4_prefix.is_some_and(|p| !(1..=32).contains(&p)) {
            return Err(err("steering.v4_prefix", "1..=32"));
        }
        if st.v6_prefix.is_some_and(|p| !(1..=128).contains(&p)) {
            return Err(err("steering.v6_prefix", "1..=128"));
        }
        if st.clients == SteeringMode::Flow && (st.v4_prefix.is_some() || st.v6_prefix.is_some()) {
            return Err(err(
                "steering",
                "v4_prefix / v6_prefix are for clients = \"address\" or \"auto\"",
            ));
        }
        if self.idle_wait_ms < 0 {
            return Err(err("idle_wait_ms", "must not be negative"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let c: DataplaneConfig = toml::from_str(
            r#"
            io = "packet"
            [[interface]]
            name = "front"
            [[interface]]
            name = "back"
            [[worker]]
            queue = 1
            core = 0
            [afxdp]
            ring_size = 1024
            "#,
        )
        .unwrap();
        assert_eq!(c.io, IoKind::Packet);
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(
            c.workers,
            vec![WorkerConfig {
                queue: 1,
                core: Some(0)
            }]
        );
        assert_eq!(c.afxdp.ring_size, 1024);
        assert_eq!(c.afxdp.batch, 64);
        assert_eq!(c.xdp_mode, XdpMode::Native);
        c.validate().unwrap();
        let d: DataplaneConfig = toml::from_str("[[interface]]\nname = \"eth0\"\n").unwrap();
        assert_eq!(d, DataplaneConfig::new(&["eth0"]));
    }

    #[test]
    fn rejects_with_field_and_reason() {
        let mut c = DataplaneConfig::new(&["a", "a"]);
        assert_eq!(c.validate().unwrap_err().field, "interface[1].name");
        c = DataplaneConfig::new(&["a"]);
        c.workers.push(WorkerConfig {
            queue: 0,
            core: None,
        });
        assert_eq!(c.validate().unwrap_err().field, "worker[1].queue");
        c = DataplaneConfig::new(&["a"]);
        c.afxdp.ring_size = 1000;
        assert_eq!(c.validate().unwrap_err().field, "afxdp.ring_size");
        c = DataplaneConfig::new(&["a"]);
        c.afxdp.tx_hold_us = 1000;
        c.validate().unwrap();
        c.afxdp.tx_hold_us = 1001;
        assert_eq!(c.validate().unwrap_err().field, "afxdp.tx_hold_us");
        c = DataplaneConfig::new(&[]);
        assert_eq!(c.validate().unwrap_err().field, "interface");
        assert!(
            toml::from_str::<DataplaneConfig>("[[interface]]\nname = \"x\"\nbogus = 1\n").is_err()
        );
        assert!(
            toml::from_str::<DataplaneConfig>("io = \"dpdk\"\n[[interface]]\nname = \"x\"\n")
                .is_err()
        );
        c = DataplaneConfig::new(&["a"]);
        c.workers[0].core = Some(100_000);
        assert_eq!(c.validate().unwrap_err().field, "worker[0].core");
    }
}
