//! ipvsadm's command line (`ipvsadm.c` 1.29–1.31: `parse_options`, `process_options`,
//! `parse_service`, `generic_opt_check`; ../shared/IPVS.md §7), turned into a [`Command`].
//!
//! Short options cluster as with popt (`-Ln`, `-Lnc`, `-At 198.18.0.100:80`, `-w3`); long options
//! take `--opt value` or `--opt=value`; `-p` takes its timeout only when the next word does not
//! start with `-`. The legal command/option combinations and their messages are ipvsadm's
//! (`commands_v_options`), as are the defaults filled in afterwards: scheduler `wlc`, method
//! `-g`, weight 1, persistence 360 s, the service port for a backend given without one, and the
//! service port forced for direct-routing and tunnel backends of non-fwmark services.
//!
//! xvs additions: `--fullnat` (method), `--json` (listings), and the verbs `reload` and
//! `status`; `-L --stateless` lists the DNS names and HTTP redirect listeners. Names are not
//! resolved: addresses and ports are numeric.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_forwarding::service::{
    Backend, Persistence, Service, ServiceKey, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};
use xvs_forwarding::Method;
use xvs_schedulers::SchedFlags;

use super::format::ListFormat;
use super::state::{DesiredState, StateError, MAX_TIMEOUT};
use crate::sync::{DaemonConfig, Role};

/// A command line that ipvsadm would refuse, with ipvsadm's exit status for it (2 for its own
/// checks, 255 for an option popt does not know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub status: i32,
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError {
        message: msg.into(),
        status: 2,
    }
}

/// popt's `--opt: unknown option` (ipvsadm then exits with 255).
fn unknown(opt: String) -> UsageError {
    UsageError {
        message: format!("{opt}: unknown option"),
        status: 255,
    }
}

/// `-p` without a timeout: ipvsadm's `IPVS_SVC_PERSISTENT_TIMEOUT` (6 * 60). The ipvsadm man
/// page says 300, but ipvsadm 1.31 lists `persistent 360` (checked in the QEMU guest).
pub const DEFAULT_PERSISTENCE: u32 = 360;

/// What `-L` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// `-t|-u|-f`: only this service (no banner).
    pub service: Option<ServiceKey>,
    /// `-c`: the connection entries.
    pub connections: bool,
    /// `--timeout`.
    pub timeout: bool,
    pub format: ListFormat,
    /// `--json` (xvs).
    pub json: bool,
    /// `--daemon`: the sync daemons (xvs has none: prints nothing).
    pub daemon: bool,
    /// `--stateless` (xvs): the DNS names and HTTP redirect listeners with their backends and
    /// counters.
    pub stateless: bool,
    /// `--limits` (xvs): the rate limits and what they refused.
    pub limits: bool,
}

/// One ipvsadm invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-A`; `Service.backends` is empty.
    AddService(Service),
    /// `-E`; `Service.backends` is empty and ignored.
    EditService(Service),
    /// `-D`.
    DeleteService(ServiceKey),
    /// `-a`.
    AddBackend(ServiceKey, Backend),
    /// `-e`.
    EditBackend(ServiceKey, Backend),
    /// `-d`.
    DeleteBackend(ServiceKey, IpAddr, u16),
    /// `-C`.
    Clear,
    /// `--set tcp tcpfin udp`.
    SetTimeouts(u32, u32, u32),
    /// `-Z [service]`.
    Zero(Option<ServiceKey>),
    /// `-L`/`-l` (and no arguments at all).
    List(ListOptions),
    /// `-S [-n] [--toml]`; `--toml` (xvs) prints `[[service]]` sections for the configuration
    /// file instead of rules.
    Save { toml: bool },
    /// `-R`: rules from the request body.
    Restore,
    /// `reload` (xvs): re-read the configuration file.
    Reload,
    /// `status` (xvs).
    Status,
    /// `-h`.
    Help,
    /// `-v`.
    Version,
    /// `--start-daemon master|backup [--mcast-interface IF] [--syncid N] [--sync-maxlen N]
    /// [--mcast-group ADDR] [--mcast-port N] [--mcast-ttl N]`, and xvs's `--sync-peers
    /// ADDR[:PORT],…` (unicast instead of multicast).
    StartDaemon(DaemonConfig),
    /// `--stop-daemon master|backup`.
    StopDaemon(Role),
    /// `--source-rate RATE[/LEN4[/LEN6]]` (xvs): new connections per second per source prefix
    /// (0: no limit), with the prefix lengths given.
    SetSourceLimit {
        rate: u32,
        prefix_v4: Option<u8>,
        prefix_v6: Option<u8>,
    },
}

impl Command {
    /// Whether the command changes the desired state ([`Command::apply`] does it).
    pub fn is_rule(&self) -> bool {
        matches!(
            self,
            Command::AddService(_)
                | Command::EditService(_)
                | Command::DeleteService(_)
                | Command::AddBackend(..)
                | Command::EditBackend(..)
                | Command::DeleteBackend(..)
                | Command::Clear
                | Command::SetTimeouts(..)
                | Command::StartDaemon(_)
                | Command::StopDaemon(_)
                | Command::SetSourceLimit { .. }
        )
    }

    /// Apply a rule command to a desired state (other commands leave it alone).
    pub fn apply(&self, st: &mut DesiredState) -> Result<(), StateError> {
        match self {
            Command::AddService(s) => st.add_service(s.clone()),
            Command::EditService(s) => st.edit_service(s.clone()),
            Command::DeleteService(k) => st.delete_service(k),
            Command::AddBackend(k, b) => st.add_backend(k, b.clone()),
            Command::EditBackend(k, b) => st.edit_backend(k, b.clone()),
            Command::DeleteBackend(k, a, p) => st.delete_backend(k, *a, *p),
            Command::Clear => {
                st.clear();
                Ok(())
            }
            Command::SetTimeouts(a, b, c) => {
                st.set_timeouts(*a, *b, *c);
                Ok(())
            }
            Command::StartDaemon(d) => st.start_daemon(d.clone()),
            Command::StopDaemon(r) => st.stop_daemon(*r),
            Command::SetSourceLimit {
                rate,
                prefix_v4,
                prefix_v6,
            } => st.set_source_limit(*rate, *prefix_v4, *prefix_v6),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    Restore,
    Save,
    Zero,
    Help,
    Version,
    StartDaemon,
    StopDaemon,
    SourceRate,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
            Cmd::Help => "help",
            Cmd::Version => "version",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::SourceRate => "source-rate",
        }
    }

    /// `commands_v_options` over [`OPT_NAMES`]: `+` compulsory, `x` illegal, `1` exclusive,
    /// ` ` optional.
    fn legal(self) -> &'static [u8; N_OPTS] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxx  xxxxxxxxxxxx xx x",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxx1      xx xx1 xxxxxxxx 1x ",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxx xxxxxxxxxxxxx x",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore | Cmd::StopDaemon | Cmd::SourceRate => {
                b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            }
            Cmd::StartDaemon => b"xxxxxxxxxxxxxxxxxxxxxxxxx       xxxxx",
            Cmd::Help | Cmd::Version => b"                                     ",
        }
    }
}

/// ipvsadm's option names (`optnames`, plus `sched-flags`, `tun-type`, `daemon`, the sync
/// daemon's options, and xvs's `json`, `toml`, `sync-peers`, `synproxy`, `weights`,
/// `stateless`, `conn-rate`, `limits`).
const N_OPTS: usize = 37;
const OPT_NAMES: [&str; N_OPTS] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "timeout",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "exact",
    "ops",
    "sched-flags",
    "json",
    "tun-type",
    "toml",
    "daemon",
    "tun-info",
    "mcast-interface",
    "syncid",
    "sync-maxlen",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-peers",
    "synproxy",
    "weights",
    "stateless",
    "conn-rate",
    "limits",
];

const O_NUMERIC: usize = 0;
const O_CONNECTION: usize = 1;
const O_SERVICE: usize = 2;
const O_SCHEDULER: usize = 3;
const O_PERSISTENT: usize = 4;
const O_NETMASK: usize = 5;
const O_SERVER: usize = 6;
const O_FORWARD: usize = 7;
const O_WEIGHT: usize = 8;
const O_UTHRESHOLD: usize = 9;
const O_LTHRESHOLD: usize = 10;
const O_TIMEOUT: usize = 11;
const O_STATS: usize = 12;
const O_RATE: usize = 13;
const O_THRESHOLDS: usize = 14;
const O_PERSISTENTCONN: usize = 15;
const O_NOSORT: usize = 16;
const O_EXACT: usize = 17;
const O_OPS: usize = 18;
const O_SCHED_FLAGS: usize = 19;
const O_JSON: usize = 20;
const O_TUN_TYPE: usize = 21;
const O_TOML: usize = 22;
const O_DAEMON: usize = 23;
const O_TUN_INFO: usize = 24;
const O_MCAST_IF: usize = 25;
const O_SYNCID: usize = 26;
const O_SYNC_MAXLEN: usize = 27;
const O_MCAST_GROUP: usize = 28;
const O_MCAST_PORT: usize = 29;
const O_MCAST_TTL: usize = 30;
const O_SYNC_PEERS: usize = 31;
const O_SYNPROXY: usize = 32;
const O_WEIGHTS: usize = 33;
const O_STATELESS: usize = 34;
const O_CONN_RATE: usize = 35;
const O_LIMITS: usize = 36;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    Optional,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Id {
    Cmd(Cmd),
    /// `--start-daemon` / `--stop-daemon` / `--source-rate`: a command that takes a value (the
    /// daemon's role, the limit).
    Daemon(Cmd),
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Ipv6,
    Method(Method),
    Set(usize),
    Sort,
    /// ipvsadm options xvs does not implement: a clear error instead of "unknown option".
    Unsupported(&'static str),
}

struct Opt {
    short: Option<char>,
    long: &'static str,
    arg: Arg,
    id: Id,
}

const fn o(short: Option<char>, long: &'static str, arg: Arg, id: Id) -> Opt {
    Opt {
        short,
        long,
        arg,
        id,
    }
}

const OPTIONS: &[Opt] = &[
    o(Some('A'), "add-service", Arg::No, Id::Cmd(Cmd::Add)),
    o(Some('E'), "edit-service", Arg::No, Id::Cmd(Cmd::Edit)),
    o(Some('D'), "delete-service", Arg::No, Id::Cmd(Cmd::Del)),
    o(Some('C'), "clear", Arg::No, Id::Cmd(Cmd::Flush)),
    o(Some('L'), "list", Arg::No, Id::Cmd(Cmd::List)),
    o(Some('l'), "list", Arg::No, Id::Cmd(Cmd::List)),
    o(Some('Z'), "zero", Arg::No, Id::Cmd(Cmd::Zero)),
    o(Some('a'), "add-server", Arg::No, Id::Cmd(Cmd::AddDest)),
    o(Some('e'), "edit-server", Arg::No, Id::Cmd(Cmd::EditDest)),
    o(Some('d'), "delete-server", Arg::No, Id::Cmd(Cmd::DelDest)),
    o(None, "set", Arg::No, Id::Cmd(Cmd::Timeout)),
    o(Some('h'), "help", Arg::No, Id::Cmd(Cmd::Help)),
    o(Some('v'), "version", Arg::No, Id::Cmd(Cmd::Version)),
    o(Some('R'), "restore", Arg::No, Id::Cmd(Cmd::Restore)),
    o(Some('S'), "save", Arg::No, Id::Cmd(Cmd::Save)),
    o(Some('t'), "tcp-service", Arg::Required, Id::Tcp),
    o(Some('u'), "udp-service", Arg::Required, Id::Udp),
    o(Some('f'), "fwmark-service", Arg::Required, Id::Fwmark),
    o(Some('s'), "scheduler", Arg::Required, Id::Set(O_SCHEDULER)),
    o(
        Some('p'),
        "persistent",
        Arg::Optional,
        Id::Set(O_PERSISTENT),
    ),
    o(Some('M'), "netmask", Arg::Required, Id::Set(O_NETMASK)),
    o(
        Some('b'),
        "sched-flags",
        Arg::Required,
        Id::Set(O_SCHED_FLAGS),
    ),
    o(Some('r'), "real-server", Arg::Required, Id::Set(O_SERVER)),
    o(Some('m'), "masquerading", Arg::No, Id::Method(Method::Nat)),
    o(Some('i'), "ipip", Arg::No, Id::Method(Method::Tunnel)),
    o(Some('g'), "gatewaying", Arg::No, Id::Method(Method::Dr)),
    o(None, "fullnat", Arg::No, Id::Method(Method::FullNat)),
    o(Some('w'), "weight", Arg::Required, Id::Set(O_WEIGHT)),
    o(
        Some('x'),
        "u-threshold",
        Arg::Required,
        Id::Set(O_UTHRESHOLD),
    ),
    o(
        Some('y'),
        "l-threshold",
        Arg::Required,
        Id::Set(O_LTHRESHOLD),
    ),
    o(Some('n'), "numeric", Arg::No, Id::Set(O_NUMERIC)),
    o(Some('c'), "connection", Arg::No, Id::Set(O_CONNECTION)),
    o(None, "timeout", Arg::No, Id::Set(O_TIMEOUT)),
    o(None, "stats", Arg::No, Id::Set(O_STATS)),
    o(None, "rate", Arg::No, Id::Set(O_RATE)),
    o(None, "thresholds", Arg::No, Id::Set(O_THRESHOLDS)),
    o(None, "persistent-conn", Arg::No, Id::Set(O_PERSISTENTCONN)),
    o(None, "nosort", Arg::No, Id::Set(O_NOSORT)),
    o(None, "sort", Arg::No, Id::Sort),
    o(Some('X'), "exact", Arg::No, Id::Set(O_EXACT)),
    o(Some('6'), "ipv6", Arg::No, Id::Ipv6),
    o(Some('o'), "ops", Arg::No, Id::Set(O_OPS)),
    o(Some('j'), "synproxy", Arg::No, Id::Set(O_SYNPROXY)),
    o(None, "json", Arg::No, Id::Set(O_JSON)),
    o(None, "tun-type", Arg::Required, Id::Set(O_TUN_TYPE)),
    o(None, "toml", Arg::No, Id::Set(O_TOML)),
    o(None, "daemon", Arg::No, Id::Set(O_DAEMON)),
    o(None, "stateless", Arg::No, Id::Set(O_STATELESS)),
    o(None, "tun-info", Arg::No, Id::Set(O_TUN_INFO)),
    o(None, "weights", Arg::No, Id::Set(O_WEIGHTS)),
    o(None, "sctp-service", Arg::Required, Id::Sctp),
    o(
        None,
        "pe",
        Arg::Required,
        Id::Unsupported("persistence engines (--pe)"),
    ),
    o(
        None,
        "tun-port",
        Arg::Required,
        Id::Unsupported("GUE tunnels (--tun-port)"),
    ),
    o(
        None,
        "tun-nocsum",
        Arg::No,
        Id::Unsupported("tunnel checksum options"),
    ),
    o(
        None,
        "tun-csum",
        Arg::No,
        Id::Unsupported("tunnel checksum options"),
    ),
    o(
        None,
        "tun-remcsum",
        Arg::No,
        Id::Unsupported("tunnel checksum options"),
    ),
    o(
        None,
        "start-daemon",
        Arg::Required,
        Id::Daemon(Cmd::StartDaemon),
    ),
    o(
        None,
        "stop-daemon",
        Arg::Required,
        Id::Daemon(Cmd::StopDaemon),
    ),
    o(None, "mcast-interface", Arg::Required, Id::Set(O_MCAST_IF)),
    o(None, "syncid", Arg::Required, Id::Set(O_SYNCID)),
    o(None, "sync-maxlen", Arg::Required, Id::Set(O_SYNC_MAXLEN)),
    o(None, "mcast-group", Arg::Required, Id::Set(O_MCAST_GROUP)),
    o(None, "mcast-port", Arg::Required, Id::Set(O_MCAST_PORT)),
    o(None, "mcast-ttl", Arg::Required, Id::Set(O_MCAST_TTL)),
    o(None, "sync-peers", Arg::Required, Id::Set(O_SYNC_PEERS)),
    o(None, "conn-rate", Arg::Required, Id::Set(O_CONN_RATE)),
    o(None, "limits", Arg::No, Id::Set(O_LIMITS)),
    o(
        None,
        "source-rate",
        Arg::Required,
        Id::Daemon(Cmd::SourceRate),
    ),
];

struct Raw {
    cmd: Option<Cmd>,
    /// The role given to `--start-daemon` / `--stop-daemon`.
    daemon_role: Option<String>,
    given: [bool; N_OPTS],
    values: [Option<String>; N_OPTS],
    /// -t / -u / -f with its argument.
    service: Option<(Id, String)>,
    method: Option<Method>,
    ipv6: bool,
    positional: Vec<String>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            cmd: None,
            daemon_role: None,
            given: [false; N_OPTS],
            values: std::array::from_fn(|_| None),
            service: None,
            method: None,
            ipv6: false,
            positional: Vec::new(),
        }
    }
}

impl Raw {
    fn set_option(&mut self, i: usize, value: Option<String>) -> Result<(), UsageError> {
        if self.given[i] {
            return Err(usage(format!(
                "multiple '{}' options specified",
                OPT_NAMES[i]
            )));
        }
        self.given[i] = true;
        self.values[i] = value;
        Ok(())
    }

    fn handle(&mut self, opt: &Opt, value: Option<String>) -> Result<(), UsageError> {
        match opt.id {
            Id::Cmd(c) => {
                if self.cmd.is_some() {
                    return Err(usage("multiple commands specified"));
                }
                self.cmd = Some(c);
            }
            Id::Daemon(c) => {
                if self.cmd.is_some() {
                    return Err(usage("multiple commands specified"));
                }
                self.cmd = Some(c);
                self.daemon_role = value;
            }
            Id::Tcp | Id::Udp | Id::Sctp | Id::Fwmark => {
                self.set_option(O_SERVICE, None)?;
                self.service = Some((opt.id, value.unwrap_or_default()));
            }
            Id::Method(m) => {
                self.set_option(O_FORWARD, None)?;
                self.method = Some(m);
            }
            Id::Ipv6 => self.ipv6 = true,
            Id::Set(i) => self.set_option(i, value)?,
            Id::Sort => {}
            Id::Unsupported(what) => {
                return Err(usage(format!(
                    "`--{}': xvs does not support {what}",
                    opt.long
                )))
            }
        }
        Ok(())
    }
}

/// Parse an ipvsadm command line (without the program name).
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    if args.is_empty() {
        // `ipvsadm` alone lists the table.
        return Ok(Command::List(ListOptions::default()));
    }
    match args[0].as_str() {
        "reload" | "status" => {
            if let Some(extra) = args.get(1) {
                return Err(usage(format!("unexpected argument {extra}")));
            }
            return Ok(if args[0] == "reload" {
                Command::Reload
            } else {
                Command::Status
            });
        }
        _ => {}
    }
    let raw = scan(args)?;
    build(raw)
}

fn scan(args: &[String]) -> Result<Raw, UsageError> {
    let mut raw = Raw::default();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if only_positional {
            raw.positional.push(a.clone());
        } else if let Some(long) = a.strip_prefix("--") {
            if long.is_empty() {
                only_positional = true;
                continue;
            }
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let opt = OPTIONS
                .iter()
                .find(|o| o.long == name)
                .ok_or_else(|| unknown(format!("--{name}")))?;
            let value = match opt.arg {
                Arg::No => {
                    if inline.is_some() {
                        return Err(usage(format!("option `--{name}' takes no value")));
                    }
                    None
                }
                Arg::Required => match inline {
                    Some(v) => Some(v),
                    None => {
                        let v = args
                            .get(i)
                            .ok_or_else(|| usage(format!("option `--{name}' needs a value")))?;
                        i += 1;
                        Some(v.clone())
                    }
                },
                Arg::Optional => match inline {
                    Some(v) => Some(v),
                    None => match args.get(i) {
                        Some(v) if !v.starts_with('-') => {
                            i += 1;
                            Some(v.clone())
                        }
                        _ => None,
                    },
                },
            };
            raw.handle(opt, value)?;
        } else if a.len() > 1 && a.starts_with('-') {
            let body = &a[1..];
            for (k, c) in body.char_indices() {
                let opt = OPTIONS
                    .iter()
                    .find(|o| o.short == Some(c))
                    .ok_or_else(|| unknown(format!("-{c}")))?;
                let rest = &body[k + c.len_utf8()..];
                if opt.arg == Arg::No {
                    raw.handle(opt, None)?;
                    continue;
                }
                let value = if !rest.is_empty() {
                    Some(rest.to_string())
                } else {
                    match (opt.arg, args.get(i)) {
                        (Arg::Required, Some(v)) => {
                            i += 1;
                            Some(v.clone())
                        }
                        (Arg::Required, None) => {
                            return Err(usage(format!("option `-{c}' needs a value")))
                        }
                        (_, Some(v)) if !v.starts_with('-') => {
                            i += 1;
                            Some(v.clone())
                        }
                        _ => None,
                    }
                };
                raw.handle(opt, value)?;
                break;
            }
        } else {
            raw.positional.push(a.clone());
        }
    }
    Ok(raw)
}

/// `generic_opt_check`.
fn check_options(cmd: Cmd, given: &[bool; N_OPTS]) -> Result<(), UsageError> {
    let legal = cmd.legal();
    let mut last: Option<usize> = None;
    for j in 0..OPT_NAMES.len() {
        match (given[j], legal[j]) {
            (false, b'+') => {
                return Err(usage(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPT_NAMES[j],
                    cmd.name()
                )))
            }
            (true, b'x') => {
                return Err(usage(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPT_NAMES[j],
                    cmd.name()
                )))
            }
            (true, b'1') => {
                if let Some(l) = last {
                    return Err(usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        OPT_NAMES[j],
                        OPT_NAMES[l],
                        cmd.name()
                    )));
                }
                last = Some(j);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The daemon options of `--start-daemon`, with ipvsadm's defaults (interface `eth0`).
fn daemon_config(
    role: Role,
    values: &[Option<String>; N_OPTS],
) -> Result<DaemonConfig, UsageError> {
    let v = |i: usize| values[i].as_deref();
    let mut d = DaemonConfig::new(role, v(O_MCAST_IF).unwrap_or("eth0"));
    if d.interface.is_empty() || d.interface.len() >= 16 {
        return Err(usage(format!(
            "illegal multicast interface name `{}' specified",
            d.interface
        )));
    }
    if let Some(x) = v(O_SYNCID) {
        d.syncid = number(x, 0, 255)
            .ok_or_else(|| usage(format!("illegal syncid `{x}' specified")))?
            as u8;
    }
    if let Some(x) = v(O_SYNC_MAXLEN) {
        d.maxlen = Some(
            number(x, 1, 65_535 - 48)
                .ok_or_else(|| usage(format!("illegal sync-maxlen `{x}' specified")))?
                as u16,
        );
    }
    if let Some(x) = v(O_MCAST_GROUP) {
        let g: IpAddr = x
            .parse()
            .ok()
            .filter(|g: &IpAddr| g.is_multicast())
            .ok_or_else(|| usage(format!("illegal mcast-group `{x}' specified")))?;
        d.group = g;
    }
    if let Some(x) = v(O_MCAST_PORT) {
        d.port = number(x, 1, 65_535)
            .ok_or_else(|| usage(format!("illegal mcast-port `{x}' specified")))?
            as u16;
    }
    if let Some(x) = v(O_MCAST_TTL) {
        d.ttl = number(x, 1, 255)
            .ok_or_else(|| usage(format!("illegal mcast-ttl `{x}' specified")))?
            as u8;
    }
    if let Some(x) = v(O_SYNC_PEERS) {
        for p in x.split(',') {
            let (addr, port) = parse_addr_port(p)
                .ok_or_else(|| usage(format!("illegal sync peer `{p}' specified")))?;
            d.peers
                .push(std::net::SocketAddr::new(addr, port.unwrap_or(d.port)));
        }
    }
    Ok(d)
}

/// `string_to_number`: a whole decimal number in `min..=max`.
fn number(s: &str, min: u64, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

fn timeout_value(s: &str, min: u32) -> Result<u32, UsageError> {
    number(s, u64::from(min), u64::from(MAX_TIMEOUT))
        .map(|n| n as u32)
        .ok_or_else(|| usage(format!("invalid timeout value `{s}' specified")))
}

/// `parse_service`: `addr`, `addr:port`, `[v6]:port` or a bare IPv6 address.
pub fn parse_addr_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = |p: &str| number(p, 0, 65535).map(|n| n as u16);
    if let Some(rest) = s.strip_prefix('[') {
        // ipvsadm refuses `[addr]` without a port; xvs takes it as the bare address.
        let (a, p) = rest.split_once(']')?;
        let a: Ipv6Addr = a.parse().ok()?;
        if p.is_empty() {
            return Some((IpAddr::V6(a), None));
        }
        let p = p.strip_prefix(':')?;
        return Some((IpAddr::V6(a), Some(port(p)?)));
    }
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Some((IpAddr::V6(a), None));
    }
    match s.rsplit_once(':') {
        Some((a, p)) => Some((IpAddr::V4(a.parse::<Ipv4Addr>().ok()?), Some(port(p)?))),
        None => Some((IpAddr::V4(s.parse::<Ipv4Addr>().ok()?), None)),
    }
}

/// `-M`: a dotted IPv4 mask (or, clearer, a prefix length) / an IPv6 prefix length.
fn netmask(s: &str, ipv6: bool) -> Result<u8, UsageError> {
    if ipv6 {
        return number(s, 1, 128)
            .map(|n| n as u8)
            .ok_or_else(|| usage("illegal ipv6 netmask specified"));
    }
    if let Some(n) = number(s, 1, 32) {
        return Ok(n as u8);
    }
    let m = s
        .parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| usage("illegal virtual server persistent mask specified"))?;
    let len = m.leading_ones();
    if m.checked_shl(len).unwrap_or(0) != 0 || len == 0 {
        return Err(usage(format!(
            "persistent mask {s} is not a contiguous netmask of at least one bit"
        )));
    }
    Ok(len as u8)
}

fn build(mut raw: Raw) -> Result<Command, UsageError> {
    let cmd = raw.cmd.ok_or_else(|| {
        usage("no command given (one of -A -E -D -C -a -e -d -L -Z -S -R --set reload status; -h for help)")
    })?;
    check_options(cmd, &raw.given)?;
    if cmd == Cmd::Timeout {
        if raw.positional.len() < 3 {
            return Err(usage("--set option requires 3 timeout values"));
        }
        let v: Vec<String> = raw.positional.drain(..3).collect();
        if let Some(extra) = raw.positional.first() {
            return Err(usage(format!("unexpected argument {extra}")));
        }
        return Ok(Command::SetTimeouts(
            timeout_value(&v[0], 0)?,
            timeout_value(&v[1], 0)?,
            timeout_value(&v[2], 0)?,
        ));
    }
    if let Some(extra) = raw.positional.first() {
        return Err(usage(format!("unexpected argument {extra}")));
    }
    if raw.ipv6 && !matches!(raw.service, Some((Id::Fwmark, _))) {
        return Err(usage("-6 is only for -f fwmark services"));
    }
    let key = match &raw.service {
        None => None,
        Some((Id::Fwmark, v)) => {
            let mark = number(v, 1, u64::from(u32::MAX))
                .ok_or_else(|| usage(format!("invalid fwmark value `{v}' specified")))?;
            Some(ServiceKey::Fwmark {
                mark: mark as u32,
                ipv6: raw.ipv6,
            })
        }
        Some((id, v)) => {
            let (addr, port) = parse_addr_port(v).ok_or_else(|| {
                usage(format!(
                    "illegal virtual server address[:port] `{v}' specified (numeric, e.g. 198.18.0.100:80 or [2001:db8::1]:80)"
                ))
            })?;
            let proto = match id {
                Id::Tcp => PROTO_TCP,
                Id::Sctp => PROTO_SCTP,
                _ => PROTO_UDP,
            };
            Some(ServiceKey::Addr {
                proto,
                addr,
                port: port.unwrap_or(0),
            })
        }
    };
    let v = |i: usize| raw.values[i].as_deref();
    let conn_rate = match v(O_CONN_RATE) {
        Some(r) => number(r, 0, u64::from(u32::MAX)).ok_or_else(|| {
            usage(format!(
                "illegal conn-rate `{r}' specified (new connections per second, 0 = no limit)"
            ))
        })? as u32,
        None => 0,
    };
    match cmd {
        Cmd::SourceRate => {
            let text = raw.daemon_role.as_deref().unwrap_or_default();
            source_rate(text)
        }
        Cmd::StartDaemon | Cmd::StopDaemon => {
            let text = raw.daemon_role.as_deref().unwrap_or_default();
            let role: Role = text.parse().map_err(|_| {
                usage(format!(
                    "illegal {} parameter `{text}' specified",
                    cmd.name()
                ))
            })?;
            if cmd == Cmd::StopDaemon {
                return Ok(Command::StopDaemon(role));
            }
            daemon_config(role, &raw.values).map(Command::StartDaemon)
        }
        Cmd::Help => Ok(Command::Help),
        Cmd::Version => Ok(Command::Version),
        Cmd::Flush => Ok(Command::Clear),
        Cmd::Restore => Ok(Command::Restore),
        Cmd::Save => Ok(Command::Save {
            toml: raw.given[O_TOML],
        }),
        Cmd::Zero => Ok(Command::Zero(key)),
        Cmd::Timeout => unreachable_set(),
        Cmd::List => Ok(Command::List(ListOptions {
            service: key,
            connections: raw.given[O_CONNECTION],
            timeout: raw.given[O_TIMEOUT],
            json: raw.given[O_JSON],
            daemon: raw.given[O_DAEMON],
            stateless: raw.given[O_STATELESS],
            limits: raw.given[O_LIMITS],
            format: {
                let g = &raw.given;
                if (g[O_CONNECTION] || g[O_TIMEOUT] || g[O_DAEMON] || g[O_STATELESS] || g[O_LIMITS])
                    && (g[O_STATS]
                        || g[O_PERSISTENTCONN]
                        || g[O_RATE]
                        || g[O_THRESHOLDS]
                        || g[O_WEIGHTS])
                {
                    return Err(usage("options conflicts in the list command"));
                }
                if g[O_LIMITS] && (g[O_CONNECTION] || g[O_TIMEOUT] || g[O_DAEMON] || g[O_STATELESS])
                {
                    return Err(usage("options conflicts in the list command"));
                }
                ListFormat {
                    stats: g[O_STATS],
                    rate: g[O_RATE],
                    thresholds: g[O_THRESHOLDS],
                    persistent_conn: g[O_PERSISTENTCONN],
                    nosort: g[O_NOSORT],
                    exact: g[O_EXACT],
                    tun_info: g[O_TUN_INFO],
                    weights: g[O_WEIGHTS],
                }
            },
        })),
        Cmd::Del => Ok(Command::DeleteService(key.ok_or_else(no_service)?)),
        Cmd::Add | Cmd::Edit => {
            let key = key.ok_or_else(no_service)?;
            let scheduler = v(O_SCHEDULER).unwrap_or("wlc").to_string();
            let sched_flags = match v(O_SCHED_FLAGS) {
                Some(f) => SchedFlags::parse(Some(&scheduler), f)
                    .map_err(|e| usage(format!("{e} (-b {f})")))?,
                None => SchedFlags::NONE,
            };
            let ipv6 = match key {
                ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
                ServiceKey::Fwmark { ipv6, .. } => ipv6,
            };
            let persistence = if raw.given[O_PERSISTENT] {
                let timeout = match v(O_PERSISTENT) {
                    Some(t) => timeout_value(t, 1)?,
                    None => DEFAULT_PERSISTENCE,
                };
                let prefix_len = match v(O_NETMASK) {
                    Some(m) => netmask(m, ipv6)?,
                    None if ipv6 => 128,
                    None => 32,
                };
                Some(Persistence {
                    timeout,
                    prefix_len,
                })
            } else {
                None
            };
            let one_packet = raw.given[O_OPS];
            if let ServiceKey::Addr { proto, port, .. } = key {
                if port == 0 && persistence.is_none() {
                    return Err(usage("Zero port specified for non-persistent service"));
                }
                if one_packet && proto != PROTO_UDP {
                    return Err(usage(
                        "One-Packet Scheduling is only for UDP virtual services",
                    ));
                }
            }
            let svc = Service {
                key,
                scheduler,
                sched_flags,
                persistence,
                one_packet,
                synproxy: raw.given[O_SYNPROXY],
                conn_rate,
                backends: Vec::new(),
            };
            Ok(if cmd == Cmd::Add {
                Command::AddService(svc)
            } else {
                Command::EditService(svc)
            })
        }
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let key = key.ok_or_else(no_service)?;
            let r = v(O_SERVER).unwrap_or_default();
            let (addr, port) = parse_addr_port(r).ok_or_else(|| {
                usage(format!(
                    "illegal real server address[:port] `{r}' specified (numeric, e.g. 198.19.0.11:8080)"
                ))
            })?;
            let mut port = port.unwrap_or(key.port());
            if cmd == Cmd::DelDest {
                return Ok(Command::DeleteBackend(key, addr, port));
            }
            // ipvsadm forces the service port for DR and tunnel backends on -a and -e only.
            let method = raw.method.unwrap_or(Method::Dr);
            if !matches!(key, ServiceKey::Fwmark { .. })
                && matches!(method, Method::Dr | Method::Tunnel)
            {
                port = key.port();
            }
            if let Some(t) = v(O_TUN_TYPE) {
                if t != "ipip" || method != Method::Tunnel {
                    return Err(usage(format!(
                        "--tun-type {t}: xvs tunnels are IPIP (-i --tun-type ipip) only"
                    )));
                }
            }
            let weight = match v(O_WEIGHT) {
                Some(w) => number(w, 0, 65535)
                    .ok_or_else(|| usage(format!("illegal weight `{w}' specified (0..65535)")))?,
                None => 1,
            } as u32;
            let threshold = |i: usize, name: &str| -> Result<u32, UsageError> {
                match v(i) {
                    Some(t) => number(t, 0, i32::MAX as u64)
                        .map(|n| n as u32)
                        .ok_or_else(|| usage(format!("illegal {name} `{t}' specified"))),
                    None => Ok(0),
                }
            };
            let b = Backend {
                addr,
                port,
                weight,
                method,
                u_threshold: threshold(O_UTHRESHOLD, "u_threshold")?,
                l_threshold: threshold(O_LTHRESHOLD, "l_threshold")?,
                conn_rate,
            };
            Ok(if cmd == Cmd::AddDest {
                Command::AddBackend(key, b)
            } else {
                Command::EditBackend(key, b)
            })
        }
    }
}

/// `--source-rate RATE[/LEN4[/LEN6]]`.
fn source_rate(text: &str) -> Result<Command, UsageError> {
    let bad = || {
        usage(format!(
            "illegal source-rate `{text}' specified (RATE[/LEN4[/LEN6]], e.g. 50/24/64)"
        ))
    };
    let mut parts = text.split('/');
    let rate = number(parts.next().unwrap_or_default(), 0, u64::from(u32::MAX)).ok_or_else(bad)?;
    let prefix_v4 = match parts.next() {
        Some(p) => Some(number(p, 0, 32).ok_or_else(bad)? as u8),
        None => None,
    };
    let prefix_v6 = match parts.next() {
        Some(p) => Some(number(p, 0, 128).ok_or_else(bad)? as u8),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Command::SetSourceLimit {
        rate: rate as u32,
        prefix_v4,
        prefix_v6,
    })
}

fn unreachable_set() -> Result<Command, UsageError> {
    Err(usage("--set option requires 3 timeout values"))
}

fn no_service() -> UsageError {
    usage("a service (-t|-u|-f) is needed")
}

/// Split a rule line into words (whitespace; single or double quotes group).
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `ipvsadm -R`: apply every rule line of `text` to `st`, stopping at the first error
/// (`line N: …`). Blank lines and `#` comments are skipped; a leading `ipvsadm` word is
/// allowed. Returns how many rules were applied.
pub fn restore(st: &mut DesiredState, text: &str) -> Result<usize, String> {
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", i + 1);
        let mut args = words(line).map_err(at)?;
        if args.first().map(String::as_str) == Some("ipvsadm") {
            args.remove(0);
        }
        let cmd = parse(&args).map_err(|e| at(e.to_string()))?;
        if !cmd.is_rule() {
            return Err(at(format!(
                "`{line}' is not a rule (-R takes -A -E -D -a -e -d -C --set --start-daemon --stop-daemon lines)"
            )));
        }
        cmd.apply(st).map_err(|e| at(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// The state that ipvsadm rule lines (`-S` output, `-R` input) build from scratch.
pub fn parse_rules(text: &str) -> Result<DesiredState, String> {
    let mut st = DesiredState::default();
    restore(&mut st, text)?;
    Ok(st)
}

/// `xvs ctl -h`.
pub const HELP: &str = "\
xvs ctl: ipvsadm's commands, sent to the running director
Usage:
  xvs ctl -A|E -t|u|f service-address [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-o] [-j] [--conn-rate N]
  xvs ctl -D -t|u|f service-address
  xvs ctl -C
  xvs ctl -R < rules
  xvs ctl -S [-n] [--toml]   (--toml: [[service]] sections for the configuration file)
  xvs ctl -a|e -t|u|f service-address -r server-address [-g|-i|-m|--fullnat] [-w weight] [-x upper] [-y lower] [--conn-rate N]
  xvs ctl -d -t|u|f service-address -r server-address
  xvs ctl -L|l [-n] [-c] [--timeout] [--stats|--rate|--thresholds|--persistent-conn|--tun-info|--weights] [--exact] [--nosort] [--json] [-t|u|f service-address]
  xvs ctl -L|l [-n] --stateless [--json]   DNS names and HTTP redirect listeners, their backends and counters
  xvs ctl -Z [-t|u|f service-address]
  xvs ctl --set tcp tcpfin udp
  xvs ctl --source-rate rate[/len4[/len6]]
  xvs ctl -L --limits [--json]   the rate limits and the new connections they refused
  xvs ctl reload        re-read the configuration file (runtime changes not in it are discarded)
  xvs ctl status
Options:
  -t|--tcp-service host[:port]   -u|--udp-service host[:port]   -f|--fwmark-service mark [-6]
  IPv6 addresses in brackets: [2001:db8::1]:80. Addresses are numeric.
  -s|--scheduler  rr wrr lc wlc (default) sed nq lblc lblcr dh sh mh fo ovf twos maglev
  -g direct routing (default)  -i IPIP tunnel  -m NAT  --fullnat full NAT (xvs)
  -p [timeout] persistence, 360 s by default (as ipvsadm 1.31)  -M netmask (IPv4 dotted or prefix length; IPv6 prefix length)
  -w weight 0..65535 (default 1)  -x/-y upper/lower connection thresholds
  -j|--synproxy SYN proxy (TCP, NAT/FullNAT backends)
  --conn-rate N  new connections per second of the service or backend, director-wide (0: no limit)
  --source-rate  new connections per second per client prefix (/24 and /64 unless given; 0: no limit)
  --weights  (xvs) effective and configured weight, smoothed check response time, reported load
";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn sctp_services() {
        match p("-A --sctp-service 198.18.0.100:3868 -s rr").unwrap() {
            Command::AddService(s) => assert_eq!(
                s.key,
                ServiceKey::Addr {
                    proto: PROTO_SCTP,
                    addr: "198.18.0.100".parse().unwrap(),
                    port: 3868
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    fn key(s: &str) -> ServiceKey {
        let (addr, port) = parse_addr_port(s).unwrap();
        ServiceKey::Addr {
            proto: PROTO_TCP,
            addr,
            port: port.unwrap_or(0),
        }
    }

    #[test]
    fn services() {
        let Command::AddService(s) = p("-A -t 198.18.0.100:80 -s rr").unwrap() else {
            panic!()
        };
        assert_eq!(s.key, key("198.18.0.100:80"));
        assert_eq!(s.scheduler, "rr");
        let Command::AddService(s) = p("-At 198.18.0.100:80 -p -M 255.255.255.0").unwrap() else {
            panic!()
        };
        assert_eq!(s.scheduler, "wlc");
        assert_eq!(
            s.persistence,
            Some(Persistence {
                timeout: 360,
                prefix_len: 24
            })
        );
        let Command::EditService(s) =
            p("--edit-service --tcp-service=[2001:db8::1]:443 -p 60 -M 64 -s sh -b sh-port")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.key, key("[2001:db8::1]:443"));
        assert_eq!(s.persistence.unwrap().prefix_len, 64);
        assert!(s.sched_flags.port());
        let Command::AddService(s) = p("-A -f 7 -6 -s mh -o").unwrap() else {
            panic!()
        };
        assert_eq!(
            s.key,
            ServiceKey::Fwmark {
                mark: 7,
                ipv6: true
            }
        );
        assert!(s.one_packet);
        assert_eq!(
            p("-D -u 198.18.0.100:53").unwrap(),
            Command::DeleteService(ServiceKey::Addr {
                proto: PROTO_UDP,
                addr: "198.18.0.100".parse().unwrap(),
                port: 53
            })
        );
    }

    #[test]
    fn backends_take_ipvsadm_defaults() {
        let Command::AddBackend(k, b) =
            p("-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 3").unwrap()
        else {
            panic!()
        };
        assert_eq!(k, key("198.18.0.100:80"));
        assert_eq!((b.port, b.method, b.weight), (8080, Method::Nat, 3));
        // No port: the service's. DR forces the service port.
        let Command::AddBackend(_, b) = p("-a -t 198.18.0.100:80 -r 198.19.0.11").unwrap() else {
            panic!()
        };
        assert_eq!((b.port, b.method, b.weight), (80, Method::Dr, 1));
        let Command::EditBackend(_, b) =
            p("-e -t 198.18.0.100:80 -r 198.19.0.11:9999 -i -x 10 -y 5").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (b.port, b.method, b.u_threshold, b.l_threshold),
            (80, Method::Tunnel, 10, 5)
        );
        let Command::AddBackend(_, b) =
            p("-a -t 198.18.0.100:80 -r 198.19.0.11:81 --fullnat -w0").unwrap()
        else {
            panic!()
        };
        assert_eq!((b.port, b.method, b.weight), (81, Method::FullNat, 0));
        assert_eq!(
            p("-d -t 198.18.0.100:80 -r 198.19.0.11:8080").unwrap(),
            Command::DeleteBackend(key("198.18.0.100:80"), "198.19.0.11".parse().unwrap(), 8080)
        );
        assert_eq!(
            p("-d -t 198.18.0.100:80 -r 2001:db8::5").unwrap(),
            Command::DeleteBackend(key("198.18.0.100:80"), "2001:db8::5".parse().unwrap(), 80)
        );
    }

    #[test]
    fn listings() {
        let Command::List(l) = p("-Ln").unwrap() else {
            panic!()
        };
        assert_eq!(l, ListOptions::default());
        let Command::List(l) = p("-L -n --stats --exact --nosort -t 198.18.0.100:80").unwrap()
        else {
            panic!()
        };
        assert!(l.format.stats && l.format.exact && l.format.nosort);
        assert_eq!(l.service, Some(key("198.18.0.100:80")));
        let Command::List(l) = p("-Lnc --json").unwrap() else {
            panic!()
        };
        assert!(l.connections && l.json);
        assert!(matches!(p("-l --timeout").unwrap(), Command::List(l) if l.timeout));
        assert_eq!(p("").unwrap(), Command::List(ListOptions::default()));
        assert_eq!(p("-S -n").unwrap(), Command::Save { toml: false });
        assert_eq!(p("-S --toml").unwrap(), Command::Save { toml: true });
        assert!(matches!(p("-L --daemon").unwrap(), Command::List(l) if l.daemon));
        assert!(matches!(p("-Ln --weights").unwrap(), Command::List(l) if l.format.weights));
        assert_eq!(
            p("-Lnc --weights").unwrap_err(),
            "options conflicts in the list command"
        );
        assert!(p("-a -t 198.18.0.1:80 -r 198.19.0.1 --weights").is_err());
        let Command::List(l) = p("-Ln --stateless --json").unwrap() else {
            panic!()
        };
        assert!(l.stateless && l.json && !l.connections && !l.daemon);
        assert_eq!(
            p("-Ln --stateless --stats").unwrap_err(),
            "options conflicts in the list command"
        );
        assert_eq!(
            p("-L --stateless -c").unwrap_err(),
            "The option 'stateless' conflicts with the 'connection' option in the 'list' command"
        );
        assert!(p("-A -t 198.18.0.1:80 --stateless").is_err());
        assert_eq!(p("-Z").unwrap(), Command::Zero(None));
        assert_eq!(p("--set 0 30 60").unwrap(), Command::SetTimeouts(0, 30, 60));
        assert_eq!(p("reload").unwrap(), Command::Reload);
        assert_eq!(p("status").unwrap(), Command::Status);
        assert_eq!(p("-C").unwrap(), Command::Clear);
    }

    #[test]
    fn errors_are_ipvsadm_s() {
        let e = |l: &str| p(l).unwrap_err();
        assert_eq!(
            e("-A -s rr"),
            "You need to supply the 'service-address' option for the 'add-service' command"
        );
        assert_eq!(
            e("-A -t 1.2.3.4:80 -w 3"),
            "Illegal 'weight' option with the 'add-service' command"
        );
        assert_eq!(
            e("-L -c --timeout"),
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
        );
        assert_eq!(e("-A -L"), "multiple commands specified");
        assert_eq!(
            e("-A -t 1.2.3.4:80 -s rr -s wlc"),
            "multiple 'scheduler' options specified"
        );
        assert_eq!(e("-L --frobnicate"), "--frobnicate: unknown option");
        assert_eq!(e("-Lq"), "-q: unknown option");
        assert_eq!(e("--set 1 2"), "--set option requires 3 timeout values");
        assert_eq!(
            e("-A -t 1.2.3.4:0"),
            "Zero port specified for non-persistent service"
        );
        assert_eq!(
            e("-A -t 1.2.3.4:53 -o"),
            "One-Packet Scheduling is only for UDP virtual services"
        );
        assert!(e("-A -t www.example.com:80").starts_with("illegal virtual server address[:port]"));
        assert!(e("-a -t 1.2.3.4:80 -r 5.6.7.8 -w 65536").starts_with("illegal weight"));
        assert_eq!(e("-A -f 0"), "invalid fwmark value `0' specified");
        assert_eq!(
            e("-A -t 1.2.3.4:80 -p 0"),
            "invalid timeout value `0' specified"
        );
        assert_eq!(e("-L extra"), "unexpected argument extra");
        assert_eq!(
            e("--start-daemon primary"),
            "illegal start-daemon parameter `primary' specified"
        );
        assert_eq!(
            e("--start-daemon master --syncid 256"),
            "illegal syncid `256' specified"
        );
        assert_eq!(
            e("--start-daemon master -t 1.2.3.4:80"),
            "Illegal 'service-address' option with the 'start-daemon' command"
        );
        assert_eq!(
            e("-L --toml"),
            "Illegal 'toml' option with the 'list' command"
        );
        assert!(e("-A -t 1.2.3.4:80 -p -M 255.0.255.0").contains("contiguous"));
        assert!(e("-A -t 1.2.3.4:80 -s rr -b sh-port").contains("incompatible"));
    }

    #[test]
    fn addresses() {
        let a = |s: &str| parse_addr_port(s);
        assert_eq!(
            a("1.2.3.4:80"),
            Some(("1.2.3.4".parse().unwrap(), Some(80)))
        );
        assert_eq!(a("1.2.3.4"), Some(("1.2.3.4".parse().unwrap(), None)));
        assert_eq!(a("[::1]:80"), Some(("::1".parse().unwrap(), Some(80))));
        assert_eq!(a("::1"), Some(("::1".parse().unwrap(), None)));
        assert_eq!(a("[::1]"), Some(("::1".parse().unwrap(), None)));
        assert_eq!(a("[::1]80"), None);
        assert_eq!(a("80"), None);
        assert_eq!(a("1.2.3.4:65536"), None);
        assert_eq!(a("1.2.3.4:http"), None);
    }

    #[test]
    fn synproxy_flag_checks_protocol_and_methods_and_round_trips() {
        let Command::AddService(s) = p("-A -t 198.18.0.100:80 -s rr -j").unwrap() else {
            panic!()
        };
        assert!(s.synproxy);
        let Command::AddService(s) = p("-A -t 198.18.0.100:80 --synproxy").unwrap() else {
            panic!()
        };
        assert!(s.synproxy);
        assert!(p("-a -t 198.18.0.100:80 -r 198.19.0.1 -j").is_err());
        let mut st = DesiredState::default();
        restore(
            &mut st,
            "-A -t 198.18.0.100:80 -s rr -j\n-a -t 198.18.0.100:80 -r 198.19.0.1:8080 -m\n",
        )
        .unwrap();
        let e = restore(&mut st, "-a -t 198.18.0.100:80 -r 198.19.0.2:80 -g\n").unwrap_err();
        assert!(e.contains("SYN proxy"), "{e}");
        let e = restore(&mut st, "-A -u 198.18.0.100:53 -j\n").unwrap_err();
        assert!(e.contains("TCP"), "{e}");
        // A DR backend blocks turning the proxy on.
        restore(
            &mut st,
            "-A -t 198.18.0.100:81\n-a -t 198.18.0.100:81 -r 198.19.0.2:81 -g\n",
        )
        .unwrap();
        let e = restore(&mut st, "-E -t 198.18.0.100:81 -j\n").unwrap_err();
        assert!(e.contains("SYN proxy"), "{e}");
        assert!(crate::control::format::service_rule(&st.services[0]).contains(" -j"));
    }

    #[test]
    fn rate_limit_options_parse_apply_and_round_trip() {
        let Command::AddService(s) = p("-A -t 198.18.0.100:80 -s rr --conn-rate 1000").unwrap()
        else {
            panic!()
        };
        assert_eq!(s.conn_rate, 1000);
        let Command::EditBackend(_, b) =
            p("-e -t 198.18.0.100:80 -r 198.19.0.1:8080 -m --conn-rate=50").unwrap()
        else {
            panic!()
        };
        assert_eq!(b.conn_rate, 50);
        for bad in [
            "-A -t 198.18.0.100:80 --conn-rate x",
            "-A -t 198.18.0.100:80 --conn-rate -1",
            "-A -t 198.18.0.100:80 --conn-rate 4294967296",
            "-D -t 198.18.0.100:80 --conn-rate 5",
            "-d -t 198.18.0.100:80 -r 198.19.0.1 --conn-rate 5",
            "-L --conn-rate 5",
            "--source-rate",
            "--source-rate 50/33",
            "--source-rate 50/24/129",
            "--source-rate 50/24/64/1",
            "--source-rate fifty",
            "--source-rate 50 -t 198.18.0.100:80",
            "-L --limits -c",
            "-L --limits --stats",
            "-A -t 198.18.0.100:80 --limits",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(
            p("--source-rate 50").unwrap(),
            Command::SetSourceLimit {
                rate: 50,
                prefix_v4: None,
                prefix_v6: None
            }
        );
        assert_eq!(
            p("--source-rate=0/16/48").unwrap(),
            Command::SetSourceLimit {
                rate: 0,
                prefix_v4: Some(16),
                prefix_v6: Some(48)
            }
        );
        let Command::List(l) = p("-L -n --limits --json").unwrap() else {
            panic!()
        };
        assert!(l.limits && l.json);

        let mut st = DesiredState::default();
        restore(
            &mut st,
            "-A -t 198.18.0.100:80 -s rr --conn-rate 1000\n\
             -a -t 198.18.0.100:80 -r 198.19.0.1:8080 -m --conn-rate 300\n\
             --source-rate 50/16\n",
        )
        .unwrap();
        assert_eq!(st.services[0].conn_rate, 1000);
        assert_eq!(st.services[0].backends[0].conn_rate, 300);
        assert_eq!(
            (
                st.source_limit.rate,
                st.source_limit.prefix_v4,
                st.source_limit.prefix_v6
            ),
            (50, 16, 64)
        );
        // -S writes them, -R reads them back.
        let saved = crate::control::format::save(&st);
        assert!(
            saved.contains("-A -t 198.18.0.100:80 -s rr --conn-rate 1000\n"),
            "{saved}"
        );
        assert!(saved.contains(" -m -w 1 --conn-rate 300\n"), "{saved}");
        assert!(saved.ends_with("--source-rate 50/16/64\n"), "{saved}");
        assert_eq!(parse_rules(&saved).unwrap(), st);
        // -E and -e replace the limit wholesale, as every other field: none given, none kept.
        restore(
            &mut st,
            "-E -t 198.18.0.100:80 -s rr\n-e -t 198.18.0.100:80 -r 198.19.0.1:8080 -m\n",
        )
        .unwrap();
        assert_eq!(st.services[0].conn_rate, 0);
        assert_eq!(st.services[0].backends[0].conn_rate, 0);
        // The source limit's prefix lengths are checked by the state too.
        assert!(st.set_source_limit(1, Some(33), None).is_err());
        assert!(st.set_source_limit(1, None, Some(129)).is_err());
        // A changed limit shows in a diff as its rule.
        let mut to = st.clone();
        to.set_source_limit(0, None, None).unwrap();
        to.services[0].conn_rate = 7;
        let rules: Vec<String> = st
            .diff(&to)
            .iter()
            .map(crate::control::format::change_rule)
            .collect();
        assert_eq!(
            rules,
            [
                "-E -t 198.18.0.100:80 -s rr --conn-rate 7",
                "--source-rate 0/16/64"
            ]
        );
    }

    #[test]
    fn restore_applies_every_line_or_names_the_bad_one() {
        let mut st = DesiredState::default();
        let n = restore(
            &mut st,
            "# saved\n-A -t 198.18.0.100:80 -s rr\n\n-a -t 198.18.0.100:80 -r 198.19.0.1:80 -m -w 1\nipvsadm --set 0 0 60\n",
        )
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(st.services[0].backends.len(), 1);
        assert_eq!(st.timeouts.udp, 60);
        let e = restore(&mut st, "-A -t 198.18.0.100:80 -s rr\n").unwrap_err();
        assert_eq!(e, "line 1: service TCP 198.18.0.100:80 already exists");
        let e = restore(&mut st, "\n-Ln\n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
    }
}
