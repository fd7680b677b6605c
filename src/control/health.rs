//! Built-in health checks: keepalived / ldirectord parity, run through the host's own network stack
//! (plain sockets, never the data path).
//!
//! Kinds, after keepalived's checkers (`keepalived/check/check_{tcp,http,udp,misc}.c`) and
//! ldirectord's `checktype`/`service`:
//! - `tcp`: a TCP connect succeeds (`TCP_CHECK`).
//! - `http` / `https`: `GET path HTTP/1.0` with a Host header, through ureq (rustls with ring for
//!   https; no redirect followed, no connection kept); healthy when the status is one of
//!   `status` (default 200) and, if `digest` is set, the MD5 of the body equals it (hex, as
//!   keepalived's `digest` and its `genhash` tool print it) (`HTTP_GET`, `SSL_GET`). The body
//!   ends where the response frames it (Content-Length, the last chunk, or the close), or where
//!   a peer closing early stopped it. `insecure = true` skips certificate verification
//!   (self-signed backends); otherwise the Mozilla roots (webpki-roots) or the certificates in
//!   `ca_file` are trusted, checked against the `host` name (without port) or else the address.
//! - `udp`: send `send` (or `send_hex`) and wait for a reply; with `expect` (or `expect_hex`) the
//!   reply must contain it (`expect_match = "contains"`, default) or equal it (`"equals"`); an ICMP
//!   port unreachable fails at once as "connection refused" (`UDP_CHECK`); with
//!   `require_reply = false` no reply before the timeout counts as success, as keepalived's
//!   UDP_CHECK without `require_reply`.
//! - `exec`: run `command args… <address> <port>` (also in `XVS_BACKEND_ADDRESS`,
//!   `XVS_BACKEND_PORT`, `XVS_SERVICE`); healthy on exit code 0; the whole process group is killed
//!   when `timeout_ms` runs out (`MISC_CHECK`, ldirectord's external check). With
//!   `dynamic = true` (keepalived's `misc_dynamic`) exit codes 2–255 are healthy too and set the
//!   backend's weight to the code − 2 (0–253); exit code 0 keeps the weight as it is, 1 fails.
//!
//! Every check has `interval_ms` (time between the starts of two probes), `retry_interval_ms` (the
//! time instead while an up backend's failures count towards `fall`, keepalived's
//! `delay_before_retry`; default `interval_ms`), `warmup_ms` (the first probe waits a random time
//! up to it, keepalived's `warmup`; default 0), `timeout_ms` (bound on
//! one whole probe: connect, request, reply), `rise` and `fall` (consecutive successes / failures
//! that flip the state; defaults 2 and 3 as HAProxy's, which keepalived's `retry` approximates),
//! `initially_down` (a backend starts **up**, as keepalived's checkers assume unless `alpha` is set;
//! `initially_down = true` makes it start down and wait for `rise` successes),
//! `first_probe_decides` (the first probe's result alone sets the state: keepalived takes a
//! backend failing its very first check down at once), `quiescent` (a
//! failed backend keeps its place with weight 0, as keepalived's and ldirectord's `quiescent`,
//! instead of being removed from the snapshot), and `connect_ip` / `connect_port` (probe another
//! address; default the backend's).
//!
//! Threads: one thread per checked backend (probes are blocking socket calls bounded by
//! `timeout_ms`), at most [`HealthChecker::MAX_CHECKS`]; each sleeps on its own condition variable
//! so that [`HealthChecker::shutdown`] and reloads stop it at once. A reload does not wait for
//! probes in flight (a stopped checker records nothing more); shutdown does (at most one probe
//! timeout; an exec check is killed at once).
//!
//! Every transition is logged with `tracing` (one line: backend, service, old → new state,
//! reason), counted in the state table ([`HealthChecker::states`]) and sent as a [`HealthEvent`].
//! A backend starting up produces no event; one starting down (`initially_down`) produces one
//! `up = false` event with reason "initially down" (not a transition: not logged or counted).
//! To keep such a backend out of the very first snapshot, read [`HealthChecker::is_up`] when
//! building it rather than waiting for the event.
//!
//! Wiring (the runtime's side):
//!
//! ```no_run
//! use xvs::control::health::{CheckConfig, CheckTarget, HealthChecker};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let service_check: Option<CheckConfig> = None;
//! # let backend_check: Option<CheckConfig> = None;
//! let (mut checker, events) = HealthChecker::new();
//! let mut targets = Vec::new();
//! if let Some(check) = CheckConfig::merged(service_check.as_ref(), backend_check.as_ref()) {
//!     if let Some(spec) = check.validate("service[0].backend[0].check")? {
//!         targets.push(CheckTarget {
//!             service: "tcp 198.18.0.1:80".into(),
//!             backend: "198.19.0.11:80".parse()?,
//!             spec,
//!         });
//!     }
//! }
//! checker.set_targets(targets)?; // again on every reload
//! for event in events.iter() {
//!     // event.up == false: remove the backend from the next snapshot, or set its weight to 0
//!     // when event.quiescent; event.up == true: restore it. Then publish.
//! #   let _ = event;
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use md5::{Digest, Md5};
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The kind of a check (`type = "…"` in the TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Udp,
    Exec,
    /// No check: the backend is always up (to switch off a service-wide check for one backend).
    None,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Udp => "udp",
            CheckKind::Exec => "exec",
            CheckKind::None => "none",
        }
    }
}

/// How a UDP reply is compared with `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExpectMatch {
    #[default]
    Contains,
    Equals,
}

/// `status = 200` or `status = [200, 204, "300-399"]` (a string is an inclusive range, as
/// keepalived's `status_code 300-399`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusList {
    One(u16),
    Many(Vec<StatusItem>),
}

/// One entry of a status list: a code or a `"LOW-HIGH"` range.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusItem {
    Code(u16),
    Range(String),
}

/// A check as written in the TOML: `[service.check]` (the default for every backend of the
/// service) or `[service.backend.check]` (per backend). Every field is optional so that a
/// backend's section overrides the service's field by field ([`CheckConfig::merged`]).
///
/// ```toml
/// [service.check]
/// type = "http"          # tcp | http | https | udp | exec | none
/// interval_ms = 2000     # default 5000
/// retry_interval_ms = 1000     # after a failure of an up backend, until it falls; default interval_ms
/// warmup_ms = 2000       # first probe after a random delay up to this; default 0
/// timeout_ms = 1000      # default 3000
/// rise = 2               # default 2
/// fall = 3               # default 3
/// initially_down = false # default false: a backend starts up
/// first_probe_decides = false  # true: the first probe alone sets the state (keepalived's start)
/// quiescent = false      # default false: a failed backend is removed (true: weight 0)
/// connect_ip = "198.19.0.11"   # default the backend's address
/// connect_port = 8080          # default the backend's port
/// path = "/healthz"      # http/https, default "/"
/// host = "www.example.com"     # http/https Host header (and TLS server name)
/// status = [200, "300-302"]   # http/https, codes or "LOW-HIGH" ranges; default 200
/// digest = "9b3a0c85a887a256d6939da88aabd8cd"  # http/https, MD5 of the body, hex
/// insecure = false       # https: skip certificate verification
/// ca_file = "/etc/xvs/backend-ca.pem"          # https: trust these instead of the web roots
/// send = "ping"          # udp (or send_hex = "0001")
/// expect = "pong"        # udp (or expect_hex); omitted: any reply
/// expect_match = "contains"    # udp: contains | equals
/// require_reply = true   # udp: false counts silence as success (only an ICMP error fails)
/// command = "/usr/local/bin/check-db"          # exec
/// args = ["--quick"]     # exec; address and port are appended
/// dynamic = false        # exec: exit 2-255 = healthy with weight = code - 2 (misc_dynamic)
/// load_path = "/load"    # http/https: GET it after each good probe; body 0..100 = load %
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(rename = "type")]
    pub kind: Option<CheckKind>,
    pub interval_ms: Option<u64>,
    /// Time between probes while a failure count towards `fall` is running (keepalived's
    /// `delay_before_retry`); default `interval_ms`.
    pub retry_interval_ms: Option<u64>,
    /// The first probe waits a random time up to this (keepalived's `warmup`); default 0.
    pub warmup_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub initially_down: Option<bool>,
    /// The first probe's result alone sets the state, whatever `rise` and `fall` (keepalived: a
    /// backend failing its very first check goes down at once, retries come only after that).
    pub first_probe_decides: Option<bool>,
    pub quiescent: Option<bool>,
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub status: Option<StatusList>,
    pub digest: Option<String>,
    pub insecure: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub send: Option<String>,
    pub send_hex: Option<String>,
    pub expect: Option<String>,
    pub expect_hex: Option<String>,
    pub expect_match: Option<ExpectMatch>,
    /// udp: false counts silence until `timeout_ms` as success (only an ICMP error fails), as
    /// keepalived's UDP_CHECK without `require_reply`; default true.
    pub require_reply: Option<bool>,
    pub command: Option<PathBuf>,
    pub args: Option<Vec<String>>,
    /// exec: exit codes 2–255 are healthy and set the weight to the code − 2 (keepalived's
    /// `misc_dynamic`); default false.
    pub dynamic: Option<bool>,
    /// http/https: read the backend's load in percent (a body `0`..`100`) from this path after
    /// each successful probe.
    pub load_path: Option<String>,
}

/// A check that cannot be used: the field (a path under the prefix handed to
/// [`CheckConfig::validate`]) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CheckConfigError {
    pub field: String,
    pub reason: String,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(5000);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Bodies longer than this fail an HTTP check that has a `digest`.
pub const MAX_BODY: usize = 8 << 20;
const MAX_HEADER: usize = 64 << 10;
const MAX_MILLIS: u64 = 24 * 3600 * 1000;

impl CheckConfig {
    /// The check a backend runs: its own section over its service's. A backend section whose
    /// `type` differs from the service's replaces it wholesale (no field of another kind leaks in).
    pub fn merged(service: Option<&CheckConfig>, backend: Option<&CheckConfig>) -> Option<Self> {
        match (service, backend) {
            (None, None) => None,
            (Some(s), None) => Some(s.clone()),
            (None, Some(b)) => Some(b.clone()),
            (Some(s), Some(b)) => {
                if b.kind.is_some() && b.kind != s.kind {
                    return Some(b.clone());
                }
                let b = b.clone();
                let s = s.clone();
                Some(CheckConfig {
                    kind: b.kind.or(s.kind),
                    interval_ms: b.interval_ms.or(s.interval_ms),
                    retry_interval_ms: b.retry_interval_ms.or(s.retry_interval_ms),
                    warmup_ms: b.warmup_ms.or(s.warmup_ms),
                    timeout_ms: b.timeout_ms.or(s.timeout_ms),
                    rise: b.rise.or(s.rise),
                    fall: b.fall.or(s.fall),
                    initially_down: b.initially_down.or(s.initially_down),
                    first_probe_decides: b.first_probe_decides.or(s.first_probe_decides),
                    quiescent: b.quiescent.or(s.quiescent),
                    connect_ip: b.connect_ip.or(s.connect_ip),
                    connect_port: b.connect_port.or(s.connect_port),
                    path: b.path.or(s.path),
                    host: b.host.or(s.host),
                    status: b.status.or(s.status),
                    digest: b.digest.or(s.digest),
                    insecure: b.insecure.or(s.insecure),
                    ca_file: b.ca_file.or(s.ca_file),
                    send: b.send.or(s.send),
                    send_hex: b.send_hex.or(s.send_hex),
                    expect: b.expect.or(s.expect),
                    expect_hex: b.expect_hex.or(s.expect_hex),
                    expect_match: b.expect_match.or(s.expect_match),
                    require_reply: b.require_reply.or(s.require_reply),
                    command: b.command.or(s.command),
                    args: b.args.or(s.args),
                    dynamic: b.dynamic.or(s.dynamic),
                    load_path: b.load_path.or(s.load_path),
                })
            }
        }
    }

    /// Validate into a runnable check; `Ok(None)` for `type = "none"`. `field` prefixes the field
    /// names in errors (e.g. `service[0].backend[1].check`). Reads `ca_file`.
    pub fn validate(&self, field: &str) -> Result<Option<CheckSpec>, CheckConfigError> {
        let err = |name: &str, reason: String| CheckConfigError {
            field: if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            },
            reason,
        };
        let kind = self.kind.ok_or_else(|| {
            err(
                "type",
                "missing (tcp, http, https, udp, exec or none)".into(),
            )
        })?;
        let only = |name: &str, set: bool, kinds: &[CheckKind]| {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                Err(err(
                    name,
                    format!(
                        "only for type {}, not {}",
                        names.join(" or "),
                        kind.as_str()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        use CheckKind::{Exec, Http, Https, Udp};
        only("path", self.path.is_some(), &[Http, Https])?;
        only("host", self.host.is_some(), &[Http, Https])?;
        only("status", self.status.is_some(), &[Http, Https])?;
        only("digest", self.digest.is_some(), &[Http, Https])?;
        only("insecure", self.insecure.is_some(), &[Https])?;
        only("ca_file", self.ca_file.is_some(), &[Https])?;
        only("send", self.send.is_some(), &[Udp])?;
        only("send_hex", self.send_hex.is_some(), &[Udp])?;
        only("expect", self.expect.is_some(), &[Udp])?;
        only("expect_hex", self.expect_hex.is_some(), &[Udp])?;
        only("expect_match", self.expect_match.is_some(), &[Udp])?;
        only("require_reply", self.require_reply.is_some(), &[Udp])?;
        only("command", self.command.is_some(), &[Exec])?;
        only("args", self.args.is_some(), &[Exec])?;
        only("dynamic", self.dynamic.is_some(), &[Exec])?;
        only("load_path", self.load_path.is_some(), &[Http, Https])?;
        if kind == CheckKind::None {
            return Ok(None);
        }

        let millis = |name: &str, v: Option<u64>, default: Duration, min: u64| match v {
            None => Ok(default),
            Some(ms) if ms < min => Err(err(name, format!("{ms} is below the minimum of {min}"))),
            Some(ms) if ms > MAX_MILLIS => {
                Err(err(name, format!("{ms} is above 24 hours ({MAX_MILLIS})")))
            }
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        let interval = millis("interval_ms", self.interval_ms, DEFAULT_INTERVAL, 10)?;
        let retry_interval = millis("retry_interval_ms", self.retry_interval_ms, interval, 10)?;
        let warmup = millis("warmup_ms", self.warmup_ms, Duration::ZERO, 0)?;
        let timeout = millis("timeout_ms", self.timeout_ms, DEFAULT_TIMEOUT, 1)?;
        let count = |name: &str, v: Option<u32>, default: u32| match v {
            None => Ok(default),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(n) => Err(err(name, format!("{n} is out of range 1..=1000"))),
        };
        let rise = count("rise", self.rise, DEFAULT_RISE)?;
        let fall = count("fall", self.fall, DEFAULT_FALL)?;
        if self.connect_port == Some(0) {
            return Err(err("connect_port", "0 is not a port".into()));
        }

        let probe = match kind {
            CheckKind::Tcp => Probe::Tcp,
            CheckKind::Http | CheckKind::Https => {
                let check_path = |name: &str, path: &str| {
                    if !path.starts_with('/') {
                        return Err(err(name, format!("{path:?} does not start with '/'")));
                    }
                    if path
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                    {
                        return Err(err(
                            name,
                            "contains whitespace or control characters".into(),
                        ));
                    }
                    Ok(())
                };
                let path = self.path.clone().unwrap_or_else(|| "/".into());
                check_path("path", &path)?;
                if let Some(l) = &self.load_path {
                    check_path("load_path", l)?;
                }
                if let Some(h) = &self.host {
                    if h.is_empty()
                        || h.bytes()
                            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                    {
                        return Err(err(
                            "host",
                            "empty or contains whitespace or control characters".into(),
                        ));
                    }
                }
                let status = match &self.status {
                    None => vec![200],
                    Some(StatusList::One(s)) => vec![*s],
                    Some(StatusList::Many(v)) if v.is_empty() => {
                        return Err(err("status", "empty list".into()))
                    }
                    Some(StatusList::Many(v)) => {
                        let mut codes = Vec::new();
                        for item in v {
                            match item {
                                StatusItem::Code(c) => codes.push(*c),
                                StatusItem::Range(r) => {
                                    let range = r.split_once('-').and_then(|(a, b)| {
                                        Some((
                                            a.trim().parse::<u16>().ok()?,
                                            b.trim().parse::<u16>().ok()?,
                                        ))
                                    });
                                    match range {
                                        Some((a, b)) if a <= b && (100..=599).contains(&a) && b <= 599 => {
                                            codes.extend(a..=b)
                                        }
                                        _ => {
                                            return Err(err(
                                                "status",
                                                format!("{r:?} is not a range of HTTP statuses (\"200-299\")"),
                                            ))
                                        }
                                    }
                                }
                            }
                        }
                        codes
                    }
                };
                if let Some(s) = status.iter().find(|s| !(100..=599).contains(*s)) {
                    return Err(err(
                        "status",
                        format!("{s} is not an HTTP status (100..=599)"),
                    ));
                }
                let digest = match &self.digest {
                    None => None,
                    Some(d) => match decode_hex(d) {
                        Some(b) if b.len() == 16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(&b);
                            Some(a)
                        }
                        _ => {
                            return Err(err(
                                "digest",
                                format!("{d:?} is not an MD5 digest (32 hex digits)"),
                            ))
                        }
                    },
                };
                let tls = if kind == CheckKind::Https {
                    if self.insecure == Some(true) && self.ca_file.is_some() {
                        return Err(err(
                            "ca_file",
                            "set together with insecure = true, which verifies nothing".into(),
                        ));
                    }
                    Some(
                        tls_config(self.insecure == Some(true), self.ca_file.as_ref())
                            .map_err(|reason| err("ca_file", reason))?,
                    )
                } else {
                    None
                };
                Probe::Http(HttpProbe {
                    path,
                    load_path: self.load_path.clone(),
                    host: self.host.clone(),
                    status,
                    digest,
                    tls,
                    agents: Arc::default(),
                })
            }
            CheckKind::Udp => {
                let send = match (&self.send, &self.send_hex) {
                    (Some(_), Some(_)) => {
                        return Err(err("send_hex", "set together with send".into()))
                    }
                    (Some(s), None) => s.as_bytes().to_vec(),
                    (None, Some(h)) => {
                        decode_hex(h).ok_or_else(|| err("send_hex", format!("{h:?} is not hex")))?
                    }
                    (None, None) => Vec::new(),
                };
                let expect = match (&self.expect, &self.expect_hex) {
                    (Some(_), Some(_)) => {
                        return Err(err("expect_hex", "set together with expect".into()))
                    }
                    (Some(s), None) => Some(s.as_bytes().to_vec()),
                    (None, Some(h)) => Some(
                        decode_hex(h)
                            .ok_or_else(|| err("expect_hex", format!("{h:?} is not hex")))?,
                    ),
                    (None, None) => None,
                };
                if expect.is_none() && self.expect_match.is_some() {
                    return Err(err(
                        "expect_match",
                        "set without expect or expect_hex".into(),
                    ));
                }
                let require_reply = self.require_reply.unwrap_or(true);
                if !require_reply && expect.is_some() {
                    return Err(err(
                        "require_reply",
                        "false together with expect or expect_hex (a reply is then never read)"
                            .into(),
                    ));
                }
                Probe::Udp(UdpProbe {
                    send,
                    expect,
                    expect_match: self.expect_match.unwrap_or_default(),
                    require_reply,
                })
            }
            CheckKind::Exec => {
                let command = self
                    .command
                    .clone()
                    .ok_or_else(|| err("command", "missing for type exec".into()))?;
                if command.as_os_str().is_empty() {
                    return Err(err("command", "empty".into()));
                }
                Probe::Exec(ExecProbe {
                    command,
                    args: self.args.clone().unwrap_or_default(),
                    dynamic: self.dynamic.unwrap_or(false),
                })
            }
            CheckKind::None => unreachable!("handled above"),
        };
        Ok(Some(CheckSpec {
            kind,
            probe,
            interval,
            retry_interval,
            warmup,
            timeout,
            rise,
            fall,
            initially_down: self.initially_down.unwrap_or(false),
            first_probe_decides: self.first_probe_decides.unwrap_or(false),
            quiescent: self.quiescent.unwrap_or(false),
            connect_ip: self.connect_ip,
            connect_port: self.connect_port,
            source: self.clone(),
        }))
    }
}

/// A validated check.
#[derive(Clone)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub probe: Probe,
    pub interval: Duration,
    /// The next probe's delay after a failure of an up backend that has not yet reached `fall`.
    pub retry_interval: Duration,
    /// Bound of the random delay before the first probe.
    pub warmup: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub initially_down: bool,
    pub first_probe_decides: bool,
    pub quiescent: bool,
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    source: CheckConfig,
}

impl PartialEq for CheckSpec {
    /// Two specs are the same check when they came from the same configuration.
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for CheckSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckSpec")
            .field("kind", &self.kind)
            .field("interval", &self.interval)
            .field("retry_interval", &self.retry_interval)
            .field("warmup", &self.warmup)
            .field("timeout", &self.timeout)
            .field("rise", &self.rise)
            .field("fall", &self.fall)
            .field("initially_down", &self.initially_down)
            .field("first_probe_decides", &self.first_probe_decides)
            .field("quiescent", &self.quiescent)
            .field("connect_ip", &self.connect_ip)
            .field("connect_port", &self.connect_port)
            .finish_non_exhaustive()
    }
}

impl CheckSpec {
    /// Where the probe goes for `backend`: `connect_ip` / `connect_port` or the backend's.
    pub fn probe_addr(&self, backend: SocketAddr) -> SocketAddr {
        SocketAddr::new(
            self.connect_ip.unwrap_or(backend.ip()),
            self.connect_port.unwrap_or(backend.port()),
        )
    }
}

/// What a probe does.
#[derive(Clone)]
pub enum Probe {
    Tcp,
    Http(HttpProbe),
    Udp(UdpProbe),
    Exec(ExecProbe),
}

#[derive(Clone)]
pub struct HttpProbe {
    pub path: String,
    /// Where the backend's load figure is read after a successful probe.
    pub load_path: Option<String>,
    pub host: Option<String>,
    pub status: Vec<u16>,
    pub digest: Option<[u8; 16]>,
    /// Set for https.
    pub tls: Option<Trust>,
    /// One ureq agent per probed address (its resolver answers that address), built at the
    /// first probe and shared by the clones of this probe.
    agents: Arc<Mutex<HashMap<SocketAddr, ureq::Agent>>>,
}

/// Which server certificates an https check accepts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Any (`insecure = true`).
    Any,
    /// Those chaining to the Mozilla roots (webpki-roots).
    WebRoots,
    /// Those chaining to the certificates of `ca_file`.
    Certificates(Arc<Vec<ureq::tls::Certificate<'static>>>),
}

#[derive(Clone, Debug)]
pub struct UdpProbe {
    pub send: Vec<u8>,
    pub expect: Option<Vec<u8>>,
    pub expect_match: ExpectMatch,
    /// False: no reply before the timeout is a success.
    pub require_reply: bool,
}

#[derive(Clone, Debug)]
pub struct ExecProbe {
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Exit codes 2–255 healthy, weight = code − 2.
    pub dynamic: bool,
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random duration in `[0, max)` (zero for zero), from the standard library's per-process
/// random hash keys.
fn random_below(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_nanos(r % nanos)
}

/// Durations in reasons and logs: "1s", "1.5s", "250ms".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

fn tls_config(insecure: bool, ca_file: Option<&PathBuf>) -> Result<Trust, String> {
    if insecure {
        return Ok(Trust::Any);
    }
    let Some(path) = ca_file else {
        return Ok(Trust::WebRoots);
    };
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| format!("{}: {e}", path.display()))?
        {
            // Refused here rather than silently ignored by the TLS setup later.
            let mut store = rustls::RootCertStore::empty();
            store
                .add(rustls::pki_types::CertificateDer::from(c.der()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(Trust::Certificates(Arc::new(certs)))
}

// ---------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------

/// The outcome of one probe: `Ok(detail)` or `Err(reason)`, both short human text.
pub type ProbeResult = Result<String, String>;

struct Deadline {
    end: Instant,
    timeout: Duration,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Deadline {
            end: Instant::now() + timeout,
            timeout,
        }
    }

    /// Time left, or the timeout reason.
    fn left(&self) -> Result<Duration, String> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.expired())
        } else {
            Ok(left)
        }
    }

    fn expired(&self) -> String {
        format!("timeout after {}", fmt_duration(self.timeout))
    }

    fn io(&self, e: &io::Error) -> String {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => "connection refused".into(),
            K::TimedOut | K::WouldBlock => self.expired(),
            K::ConnectionReset => "connection reset".into(),
            K::ConnectionAborted => "connection aborted".into(),
            K::HostUnreachable => "host unreachable".into(),
            K::NetworkUnreachable => "network unreachable".into(),
            K::UnexpectedEof => "connection closed early".into(),
            _ => e.to_string(),
        }
    }
}

/// Run one probe of `spec` against `backend` of `service` now (blocking, bounded by the timeout).
/// Public so that `xvs ctl` or tests can run a check once.
pub fn probe_once(spec: &CheckSpec, service: &str, backend: SocketAddr) -> ProbeResult {
    run_probe(spec, service, backend, &Stop::default()).result
}

/// One probe, measured: [`probe_measured`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub result: ProbeResult,
    /// The weight a dynamic check set (`exec` with `dynamic = true`), if it set one.
    pub weight: Option<u32>,
    /// From the start of the probe to its verdict (without the load request).
    pub elapsed: Duration,
    /// The load figure read from `load_path` (percent, 0..=100) or why it could not be read;
    /// `None` when the check has no `load_path` or the probe failed.
    pub load: Option<Result<u8, String>>,
}

/// Run one probe as the checker threads do: its result, dynamic weight, response time and load
/// figure. Public so that tests can measure a check once.
pub fn probe_measured(spec: &CheckSpec, service: &str, backend: SocketAddr) -> ProbeOutcome {
    run_probe(spec, service, backend, &Stop::default())
}

fn run_probe(spec: &CheckSpec, service: &str, backend: SocketAddr, stop: &Stop) -> ProbeOutcome {
    let addr = spec.probe_addr(backend);
    let started = Instant::now();
    let deadline = Deadline::new(spec.timeout);
    let outcome = |result: ProbeResult, weight: Option<u32>| ProbeOutcome {
        result,
        weight,
        elapsed: started.elapsed(),
        load: None,
    };
    if addr.port() == 0 && !matches!(spec.probe, Probe::Exec(_)) {
        return outcome(
            Err("no port to probe (backend port 0: set connect_port)".into()),
            None,
        );
    }
    match &spec.probe {
        Probe::Tcp => outcome(connect(addr, &deadline).map(|_| "connected".into()), None),
        Probe::Http(h) => {
            let mut o = outcome(probe_http(h, addr, &deadline), None);
            if let (Some(path), Ok(_)) = (&h.load_path, &o.result) {
                o.load = Some(read_load(h, addr, path, &deadline));
            }
            o
        }
        Probe::Udp(u) => outcome(probe_udp(u, addr, &deadline), None),
        Probe::Exec(e) => match probe_exec(e, service, addr, &deadline, stop) {
            Ok(code) => {
                let (result, weight) = exec_verdict(code, e.dynamic);
                outcome(result, weight)
            }
            Err(err) => outcome(Err(err), None),
        },
    }
}

/// An exec check's exit code judged: 0 healthy; with `dynamic` 2–255 healthy with weight
/// code − 2 (keepalived's `misc_dynamic`); anything else failed.
pub fn exec_verdict(code: i32, dynamic: bool) -> (ProbeResult, Option<u32>) {
    match code {
        0 => (Ok("exit code 0".into()), None),
        2..=255 if dynamic => {
            let w = (code - 2) as u32;
            (Ok(format!("exit code {code}: weight {w}")), Some(w))
        }
        c => (Err(format!("exit code {c}")), None),
    }
}

fn connect(addr: SocketAddr, deadline: &Deadline) -> Result<TcpStream, String> {
    let left = deadline.left()?;
    TcpStream::connect_timeout(&addr, left).map_err(|e| deadline.io(&e))
}

/// ureq's resolver for a probe: every name is the probed address, so the URL can carry the
/// Host name (for SNI and certificate checks) while the connection goes to the backend.
#[derive(Debug)]
struct FixedAddr(SocketAddr);

impl ureq::unversioned::resolver::Resolver for FixedAddr {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut v = self.empty();
        v.push(self.0);
        Ok(v)
    }
}

fn agent_for(h: &HttpProbe, addr: SocketAddr) -> ureq::Agent {
    let mut agents = h.agents.lock().unwrap_or_else(|p| p.into_inner());
    agents
        .entry(addr)
        .or_insert_with(|| {
            use ureq::tls::{RootCerts, TlsConfig};
            let tls = match &h.tls {
                None | Some(Trust::WebRoots) => TlsConfig::builder().root_certs(RootCerts::WebPki),
                Some(Trust::Any) => TlsConfig::builder().disable_verification(true),
                Some(Trust::Certificates(c)) => {
                    TlsConfig::builder().root_certs(RootCerts::Specific(c.clone()))
                }
            }
            .build();
            let config = ureq::Agent::config_builder()
                // Every status is judged against `status`, none is an error; no redirects
                // are followed (keepalived's HTTP_GET judges the 3xx itself).
                .http_status_as_error(false)
                .max_redirects(0)
                .max_idle_connections(0)
                .max_idle_connections_per_host(0)
                .max_response_header_size(MAX_HEADER)
                .user_agent("xvs-health")
                .tls_config(tls)
                .build();
            ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::default(),
                FixedAddr(addr),
            )
        })
        .clone()
}

/// `GET path HTTP/1.0` to `addr` through `h`'s agent, bounded by the deadline as a whole.
fn http_get(
    h: &HttpProbe,
    addr: SocketAddr,
    path: &str,
    deadline: &Deadline,
) -> Result<ureq::http::Response<ureq::Body>, String> {
    let left = deadline.left()?;
    let host = match &h.host {
        Some(host) => host.clone(),
        None => addr.to_string(),
    };
    // The URL's authority names the peer for TLS: the Host name without its port when one is
    // configured, else the address.
    let name = match h.host.as_deref() {
        Some(host) if !host.starts_with('[') => host.split(':').next().unwrap_or(host).to_string(),
        _ => match addr.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        },
    };
    let scheme = if h.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{name}:{}{}", addr.port(), path);
    let request = ureq::http::Request::builder()
        .method("GET")
        .uri(&url)
        .version(ureq::http::Version::HTTP_10)
        .header("Host", &host)
        .header("Accept", "*/*")
        .header("Connection", "close")
        .body(())
        .map_err(|e| format!("bad request {url:?}: {e}"))?;
    let agent = agent_for(h, addr);
    let request = agent
        .configure_request(request)
        .timeout_global(Some(left))
        .build();
    agent.run(request).map_err(|e| http_error(deadline, e))
}

/// Longest body of a load answer.
const MAX_LOAD_BODY: u64 = 256;

/// The backend's load in percent from `GET path`: status 2xx and a body that is one decimal
/// number 0..=100 (surrounding whitespace allowed), rounded.
fn read_load(
    h: &HttpProbe,
    addr: SocketAddr,
    path: &str,
    deadline: &Deadline,
) -> Result<u8, String> {
    let mut response = http_get(h, addr, path, deadline)?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(format!("status {status}"));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_LOAD_BODY)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => format!("body longer than {MAX_LOAD_BODY} bytes"),
            e => http_error(deadline, e),
        })?;
    parse_load(&body)
}

/// A load answer's body: one decimal number 0..=100, rounded to a whole percent.
pub fn parse_load(body: &str) -> Result<u8, String> {
    let text = body.trim();
    let short: String = text.chars().take(20).collect();
    let v: f64 = text
        .parse()
        .map_err(|_| format!("body {short:?} is not a number"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{short} is outside 0..=100"));
    }
    Ok(v.round() as u8)
}

/// `GET path HTTP/1.0` through ureq (rustls for https), bounded by the deadline as a whole.
fn probe_http(h: &HttpProbe, addr: SocketAddr, deadline: &Deadline) -> ProbeResult {
    let mut response = http_get(h, addr, &h.path, deadline)?;
    let status = response.status().as_u16();
    if h.digest.is_none() {
        return judge(h, status, None);
    }
    // The body: to its end as the response frames it (Content-Length, chunked, or the close);
    // a peer that closes early ends it where it stopped, as keepalived reads to the close.
    let mut body = Vec::new();
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY as u64 + 1)
        .reader();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                body.extend_from_slice(&chunk[..n]);
                if body.len() > MAX_BODY {
                    return Err(format!("body longer than {} MiB", MAX_BODY >> 20));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(match e.into_inner() {
                    Some(inner) => match inner.downcast::<ureq::Error>() {
                        Ok(u) => match *u {
                            ureq::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                            u => http_error(deadline, u),
                        },
                        Err(other) => other.to_string(),
                    },
                    None => deadline.expired(),
                })
            }
        }
    }
    judge(h, status, Some(&body))
}

/// A ureq error as a short reason, in the words of the other probes.
fn http_error(deadline: &Deadline, e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => deadline.expired(),
        ureq::Error::Io(e) => match e.get_ref() {
            // rustls reports handshake failures (bad certificate, …) as InvalidData.
            Some(inner) if e.kind() == io::ErrorKind::InvalidData => format!("TLS: {inner}"),
            _ if e.kind() == io::ErrorKind::UnexpectedEof => {
                "connection closed without a response".into()
            }
            _ => deadline.io(&e),
        },
        ureq::Error::Rustls(e) => format!("TLS: {e}"),
        ureq::Error::Tls(e) => format!("TLS: {e}"),
        ureq::Error::Protocol(e) => format!("malformed response: {e}"),
        ureq::Error::LargeResponseHeader(..) => "response header too long".into(),
        ureq::Error::BodyExceedsLimit(_) => format!("body longer than {} MiB", MAX_BODY >> 20),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn judge(h: &HttpProbe, status: u16, body: Option<&[u8]>) -> ProbeResult {
    if !h.status.contains(&status) {
        return Err(format!("status {status}"));
    }
    if let (Some(want), Some(body)) = (&h.digest, body) {
        let got: [u8; 16] = Md5::digest(body).into();
        if &got != want {
            return Err(format!("digest mismatch (body md5 {})", hex(&got)));
        }
        return Ok(format!("status {}, digest ok", status));
    }
    Ok(format!("status {}", status))
}

fn probe_udp(u: &UdpProbe, addr: SocketAddr, deadline: &Deadline) -> ProbeResult {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |e: io::Error| deadline.io(&e);
    let sock = UdpSocket::bind(local).map_err(io)?;
    // Connected: the kernel filters replies from other sources and reports ICMP unreachable.
    sock.connect(addr).map_err(io)?;
    sock.send(&u.send).map_err(io)?;
    let mut buf = vec![0u8; 65536];
    let silence = || {
        let text = format!(
            "no reply (timeout after {})",
            fmt_duration(deadline.timeout)
        );
        if u.require_reply {
            Err(text)
        } else {
            // keepalived's UDP_CHECK without require_reply: only an ICMP error fails.
            Ok(format!("{text}, no ICMP error"))
        }
    };
    loop {
        let Ok(left) = deadline.left() else {
            return silence();
        };
        sock.set_read_timeout(Some(left)).map_err(io)?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let reply = &buf[..n];
                return match &u.expect {
                    None => Ok(format!("reply of {n} bytes")),
                    Some(want) => {
                        let ok = match u.expect_match {
                            ExpectMatch::Equals => reply == want.as_slice(),
                            ExpectMatch::Contains => find(reply, want).is_some(),
                        };
                        if ok {
                            Ok("reply matches".into())
                        } else {
                            Err(format!("unexpected reply ({n} bytes)"))
                        }
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return silence()
            }
            Err(e) => return Err(deadline.io(&e)),
        }
    }
}

/// Run the command; its exit code, or why there is none.
fn probe_exec(
    e: &ExecProbe,
    service: &str,
    addr: SocketAddr,
    deadline: &Deadline,
    stop: &Stop,
) -> Result<i32, String> {
    let mut child = Command::new(&e.command)
        .args(&e.args)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .env("XVS_BACKEND_ADDRESS", addr.ip().to_string())
        .env("XVS_BACKEND_PORT", addr.port().to_string())
        .env("XVS_SERVICE", service)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that a timeout kills the script and whatever it started.
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", e.command.display()))?;
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match (status.code(), status.signal()) {
                    (Some(c), _) => Ok(c),
                    (None, Some(s)) => Err(format!("killed by signal {s}")),
                    (None, None) => Err("ended without status".into()),
                };
            }
            Ok(None) => {}
            Err(err) => return Err(format!("wait: {err}")),
        }
        let left = deadline.end.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.is_set() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(if left.is_zero() {
                format!("{} (killed)", deadline.expired())
            } else {
                "stopped (killed)".into()
            });
        }
        std::thread::sleep(nap.min(left));
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Checker threads, state table, events
// ---------------------------------------------------------------------------------------------

/// One backend to check: the service it belongs to (a display name such as `tcp
/// 198.18.0.1:80` or `fwmark 7`, as the runtime names it), the backend, and the check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckTarget {
    pub service: String,
    pub backend: SocketAddr,
    pub spec: CheckSpec,
}

/// A backend changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub service: String,
    pub backend: SocketAddr,
    pub up: bool,
    /// Why: the probe's result that completed the rise or fall count (e.g. "connection refused",
    /// "status 503", "timeout after 1s").
    pub reason: String,
    /// The check's `quiescent`: on `up = false`, set weight 0 instead of removing the backend.
    pub quiescent: bool,
    /// A weight a dynamic check set (`exec` with `dynamic = true`); events also come for a
    /// weight change alone (then `up` repeats the current state).
    pub weight: Option<u32>,
}

/// The current state of one checked backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    pub service: String,
    pub backend: SocketAddr,
    pub kind: CheckKind,
    pub up: bool,
    pub quiescent: bool,
    /// When the state last changed (or checking started).
    pub since: SystemTime,
    /// Up ↔ down transitions since checking started.
    pub transitions: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// Consecutive results that agree with the last one.
    pub streak: u32,
    /// The last probe's detail or failure reason ("" before the first probe).
    pub last_result: String,
    /// The reason of the last transition ("initial state" before any).
    pub reason: String,
    /// The last successful probe's response time.
    pub response: Option<Duration>,
    /// The response time smoothed over successful probes: each sample weighs
    /// [`RESPONSE_SMOOTHING`], the previous average the rest.
    pub response_avg: Option<Duration>,
    /// The load figure last read from `load_path` (percent); `None` before the first reading or
    /// while the backend's answers are unreadable.
    pub load: Option<u8>,
}

/// Weight of a new response-time sample in [`BackendHealth::response_avg`].
pub const RESPONSE_SMOOTHING: f64 = 0.3;

/// The moving average after `sample`: the sample alone for the first one.
pub fn smooth_response(avg: Option<Duration>, sample: Duration) -> Duration {
    match avg {
        None => sample,
        Some(a) => a.mul_f64(1.0 - RESPONSE_SMOOTHING) + sample.mul_f64(RESPONSE_SMOOTHING),
    }
}

type Key = (String, SocketAddr);
type Table = Arc<Mutex<BTreeMap<Key, BackendHealth>>>;

/// Errors from starting checks.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{count} checks exceed the limit of {max}")]
    TooMany { count: usize, max: usize },
    #[error("cannot start a checker thread")]
    Spawn(#[source] io::Error),
}

#[derive(Default)]
struct Stop {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn set(&self) {
        *self.flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.flag.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleep until `until`; true if stopped meanwhile.
    fn wait_until(&self, until: Instant) -> bool {
        let mut stopped = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *stopped {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            stopped = match self.cv.wait_timeout(stopped, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

struct Running {
    spec: CheckSpec,
    stop: Arc<Stop>,
    handle: JoinHandle<()>,
}

/// The health checkers of a director: one thread per checked backend, a state table and an
/// event stream. Dropping it stops every checker (as [`HealthChecker::shutdown`]).
pub struct HealthChecker {
    table: Table,
    running: HashMap<Key, Running>,
    /// Stopped checkers not joined yet.
    retired: Vec<JoinHandle<()>>,
    events: mpsc::Sender<HealthEvent>,
}

impl HealthChecker {
    /// At most this many checked backends (threads).
    pub const MAX_CHECKS: usize = 4096;

    /// A checker with nothing to check yet, and the receiving end of its events.
    pub fn new() -> (HealthChecker, mpsc::Receiver<HealthEvent>) {
        let (tx, rx) = mpsc::channel();
        (
            HealthChecker {
                table: Arc::new(Mutex::new(BTreeMap::new())),
                running: HashMap::new(),
                retired: Vec::new(),
                events: tx,
            },
            rx,
        )
    }

    /// Check exactly `targets` from now on (start, reload). A target already checked with the
    /// same spec keeps running undisturbed; one whose spec changed restarts but keeps its state
    /// and counts; a new one starts up without an event (or down with `initially_down`, with an
    /// `up = false` event "initially down"); one no
    /// longer listed stops and leaves the table. Duplicate (service, backend) pairs: the last
    /// wins.
    pub fn set_targets(&mut self, targets: Vec<CheckTarget>) -> Result<(), HealthError> {
        let mut wanted: HashMap<Key, CheckSpec> = HashMap::new();
        for t in targets {
            wanted.insert((t.service, t.backend), t.spec);
        }
        if wanted.len() > Self::MAX_CHECKS {
            return Err(HealthError::TooMany {
                count: wanted.len(),
                max: Self::MAX_CHECKS,
            });
        }
        // Stop the removed and the changed ones. They are not waited for (a probe in flight may
        // take its whole timeout): a stopped checker records nothing more, because it checks its
        // stop flag under the table lock, so it cannot touch a restarted entry or send an event
        // after this. Finished threads are joined here on later calls, the rest on shutdown.
        self.retired.retain(|h| !h.is_finished());
        let stale: Vec<Key> = self
            .running
            .iter()
            .filter(|(k, r)| wanted.get(*k) != Some(&r.spec))
            .map(|(k, _)| k.clone())
            .collect();
        {
            // Stop flags are set under the table lock: from here on a stopped checker cannot
            // record a result.
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            for k in stale {
                if let Some(r) = self.running.remove(&k) {
                    r.stop.set();
                    self.retired.push(r.handle);
                }
            }
            table.retain(|k, _| wanted.contains_key(k));
        }
        for (key, spec) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let up = {
                let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
                if spec.initially_down && !table.contains_key(&key) {
                    // Not a transition (not logged or counted), but a consumer that only
                    // follows events must start this backend down too.
                    let _ = self.events.send(HealthEvent {
                        service: key.0.clone(),
                        backend: key.1,
                        up: false,
                        reason: "initially down".into(),
                        quiescent: spec.quiescent,
                        weight: None,
                    });
                }
                let entry = table.entry(key.clone()).or_insert_with(|| BackendHealth {
                    service: key.0.clone(),
                    backend: key.1,
                    kind: spec.kind,
                    up: !spec.initially_down,
                    quiescent: spec.quiescent,
                    since: SystemTime::now(),
                    transitions: 0,
                    checks_ok: 0,
                    checks_failed: 0,
                    streak: 0,
                    last_result: String::new(),
                    reason: if spec.initially_down {
                        "initially down".into()
                    } else {
                        "initial state".into()
                    },
                    response: None,
                    response_avg: None,
                    load: None,
                });
                entry.kind = spec.kind;
                entry.quiescent = spec.quiescent;
                entry.streak = 0;
                entry.up
            };
            let stop = Arc::new(Stop::default());
            let worker = Worker {
                key: key.clone(),
                spec: spec.clone(),
                table: self.table.clone(),
                events: self.events.clone(),
                stop: stop.clone(),
                up,
            };
            let handle = std::thread::Builder::new()
                .name(format!("xvs-health-{}", key.1))
                .stack_size(512 << 10)
                .spawn(move || worker.run())
                .map_err(HealthError::Spawn)?;
            self.running.insert(key, Running { spec, stop, handle });
        }
        Ok(())
    }

    /// Every checked backend's state, ordered by service then backend.
    pub fn states(&self) -> Vec<BackendHealth> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.values().cloned().collect()
    }

    /// One backend's state, if it is checked.
    pub fn state(&self, service: &str, backend: SocketAddr) -> Option<BackendHealth> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.get(&(service.to_string(), backend)).cloned()
    }

    /// Whether the backend may take new connections: true if it is not checked.
    pub fn is_up(&self, service: &str, backend: SocketAddr) -> bool {
        self.state(service, backend).is_none_or(|s| s.up)
    }

    /// Stop every checker and wait for them (at most one probe timeout).
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for r in self.running.values() {
            r.stop.set();
        }
        for (_, r) in self.running.drain() {
            let _ = r.handle.join();
        }
        for h in self.retired.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop_all();
    }
}

struct Worker {
    key: Key,
    spec: CheckSpec,
    table: Table,
    events: mpsc::Sender<HealthEvent>,
    stop: Arc<Stop>,
    up: bool,
}

impl Worker {
    fn run(mut self) {
        let mut streak: u32 = 0;
        let mut run: u32 = 0;
        let mut last_ok: Option<bool> = None;
        let mut first = true;
        let mut weight: Option<u32> = None;
        let mut load_failing = false;
        let mut next = Instant::now() + random_below(self.spec.warmup);
        loop {
            if self.stop.wait_until(next) {
                return;
            }
            let started = Instant::now();
            let outcome = run_probe(&self.spec, &self.key.0, self.key.1, &self.stop);
            let new_weight = outcome.weight;
            let weight_changed = new_weight.is_some() && new_weight != weight;
            if new_weight.is_some() {
                weight = new_weight;
            }
            let mut result = outcome.result;
            // A load answer that cannot be read leaves the load unknown; the result says why.
            if let (Ok(text), Some(Err(why))) = (&mut result, &outcome.load) {
                text.push_str(&format!("; load: {why}"));
            }
            let ok = result.is_ok();
            run = if last_ok == Some(ok) {
                run.saturating_add(1)
            } else {
                1
            };
            last_ok = Some(ok);
            // A result that agrees with the current state resets the count towards the other.
            if ok == self.up {
                streak = 0;
            } else {
                streak = streak.saturating_add(1);
            }
            let needed = if self.up {
                self.spec.fall
            } else {
                self.spec.rise
            };
            let flip =
                streak >= needed || (first && self.spec.first_probe_decides && ok != self.up);
            first = false;
            let text = match &result {
                Ok(s) | Err(s) => s.clone(),
            };
            // Results, log lines and events only under the table lock and while not stopped
            // (see `set_targets`).
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if self.stop.is_set() {
                return;
            }
            {
                if let Some(e) = table.get_mut(&self.key) {
                    if ok {
                        e.checks_ok += 1;
                        e.response = Some(outcome.elapsed);
                        e.response_avg = Some(smooth_response(e.response_avg, outcome.elapsed));
                    } else {
                        e.checks_failed += 1;
                    }
                    match &outcome.load {
                        Some(Ok(l)) => e.load = Some(*l),
                        Some(Err(why)) => {
                            if !load_failing {
                                let (service, backend) = (&self.key.0, self.key.1);
                                tracing::warn!(target: "xvs::health", %service, %backend,
                                    "health: backend {backend} of {service}: load unknown: {why}");
                            }
                            e.load = None;
                        }
                        None => {}
                    }
                    if let Some(l) = &outcome.load {
                        load_failing = l.is_err();
                    }
                    e.streak = run;
                    e.last_result = text.clone();
                    if flip {
                        e.up = ok;
                        e.since = SystemTime::now();
                        e.transitions += 1;
                        e.reason = text.clone();
                    }
                }
            }
            if flip {
                let (from, to) = if ok { ("down", "up") } else { ("up", "down") };
                let (service, backend) = (&self.key.0, self.key.1);
                if ok {
                    tracing::info!(target: "xvs::health", %service, %backend, up = true, reason = %text,
                        "health: backend {backend} of {service}: {from} -> {to} ({text})");
                } else {
                    tracing::warn!(target: "xvs::health", %service, %backend, up = false, reason = %text,
                        "health: backend {backend} of {service}: {from} -> {to} ({text})");
                }
                self.up = ok;
                streak = 0;
                let _ = self.events.send(HealthEvent {
                    service: service.clone(),
                    backend,
                    up: ok,
                    reason: text,
                    quiescent: self.spec.quiescent,
                    weight,
                });
            } else if weight_changed {
                let (service, backend) = (&self.key.0, self.key.1);
                tracing::info!(target: "xvs::health", %service, %backend, weight = ?weight,
                    "health: backend {backend} of {service}: {text}");
                let _ = self.events.send(HealthEvent {
                    service: service.clone(),
                    backend,
                    up: self.up,
                    reason: text,
                    quiescent: self.spec.quiescent,
                    weight,
                });
            }
            drop(table);
            // keepalived's delay_before_retry: an up backend whose last probe failed is probed
            // again after the retry interval until it falls (or recovers).
            let delay = if self.up && !ok {
                self.spec.retry_interval
            } else {
                self.spec.interval
            };
            next = started + delay;
            let now = Instant::now();
            if next < now {
                next = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_answers_are_one_number_from_0_to_100() {
        assert_eq!(parse_load("42\n"), Ok(42));
        assert_eq!(parse_load(" 12.6 "), Ok(13));
        assert_eq!(parse_load("0"), Ok(0));
        assert_eq!(parse_load("100"), Ok(100));
        for bad in ["", "101", "-1", "NaN", "inf", "42%", "load=3"] {
            assert!(parse_load(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_times_are_smoothed() {
        let ms = Duration::from_millis;
        assert_eq!(smooth_response(None, ms(100)), ms(100));
        // 0.7 × 100 + 0.3 × 400 = 190.
        let a = smooth_response(Some(ms(100)), ms(400));
        assert!(a.abs_diff(ms(190)) < Duration::from_micros(1), "{a:?}");
    }

    #[test]
    fn exec_exit_codes_with_and_without_dynamic_weights() {
        assert_eq!(exec_verdict(0, true), (Ok("exit code 0".into()), None));
        assert_eq!(exec_verdict(1, true), (Err("exit code 1".into()), None));
        assert_eq!(
            exec_verdict(2, true),
            (Ok("exit code 2: weight 0".into()), Some(0))
        );
        assert_eq!(
            exec_verdict(255, true),
            (Ok("exit code 255: weight 253".into()), Some(253))
        );
        assert_eq!(exec_verdict(7, false), (Err("exit code 7".into()), None));
        assert_eq!(exec_verdict(0, false), (Ok("exit code 0".into()), None));
        let c = CheckConfig {
            kind: Some(CheckKind::Tcp),
            dynamic: Some(true),
            ..CheckConfig::default()
        };
        assert_eq!(c.validate("check").unwrap_err().field, "check.dynamic");
    }
}
