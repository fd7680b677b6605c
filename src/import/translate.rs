//! keepalived's LVS configuration (the statement tree) to xvs's TOML, with keepalived's defaults
//! and inheritance as its checker reads them (`keepalived/check/check_parser.c`, `check_data.c`
//! `validate_check_config`, the checkers' `check_*.c`) and keepalived.conf(5) "LVS CONFIGURATION":
//!
//! - `virtual_server IP [PORT]`, `virtual_server fwmark N`, `virtual_server group NAME` (one xvs
//!   service per address — ranges `A.B.C.D-E`, `A-B` and `A/len` expanded — and per `fwmark` of the
//!   `virtual_server_group`). No `protocol`: UDP (keepalived's and the kernel's default). Port 0 without
//!   persistence: persistence 360 s, as keepalived sets it.
//! - `lvs_sched`/`lb_algo` (default wlc), `lvs_method`/`lb_kind` (default NAT; `TUN` only with
//!   `type ipip`; DPVS's `FNAT` with `laddr_group_name` → `[fullnat] local_addresses`), flags,
//!   `ops`, `persistence_timeout` (no value: 360), `persistence_granularity`.
//! - `real_server IP [PORT]`: `weight` (default the virtual server's `weight`, 1), `lvs_method`,
//!   `uthreshold`/`lthreshold`; the port rules of `validate_check_config` (DR/TUN take the service
//!   port, a fwmark service's non-NAT backends port 0, NAT without a port the service port).
//! - Checkers: `delay_loop` (default 60 s) → `interval_ms`; `connect_timeout` (default 5 s) →
//!   `timeout_ms`; `retry` (default 1; DNS_CHECK 3, MISC_CHECK 0) → `fall = retry + 1`, `rise = 1`
//!   (keepalived brings a server up on its first success); `delay_before_retry` (default 1 s;
//!   HTTP_GET/SSL_GET 3 s; DNS_CHECK the delay_loop) → `retry_interval_ms`; `warmup` (when
//!   written; keepalived's default is the delay_loop, xvs's 0) → `warmup_ms`; `alpha` →
//!   `initially_down`, no alpha → `first_probe_decides` (keepalived grants retries only after the
//!   first check); `inhibit_on_failure` → `quiescent`; each inherited virtual server → real
//!   server → checker. HTTP_GET/SSL_GET (`status_code` default 200-299; SSL_GET does not verify the
//!   certificate, hence `insecure = true`), TCP_CHECK, UDP_CHECK (without `require_reply`:
//!   `require_reply = false`), MISC_CHECK,
//!   DNS_CHECK (as a UDP probe carrying the same query); MISC_CHECK's `misc_dynamic` → `dynamic = true`.
//! - `quorum`, `hysteresis` → the service's `quorum`, `hysteresis`; `quorum_up`/`quorum_down`
//!   (the script's words as keepalived splits them, shell-quoted; a user/group is reported) →
//!   `quorum_up`/`quorum_down` commands; `omega` → `omega = true`; `sorry_server IP [PORT]` with
//!   `sorry_server_lvs_method` (default the virtual server's method, ports as for a real server)
//!   and `sorry_server_inhibit` → `[service.sorry_server]`.
//!
//! Everything else is reported (see `report.rs`).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::parser::Stmt;
use super::report::{Pos, Report};

/// Most addresses one range of a `virtual_server_group` or `local_address_group` expands to.
pub const MAX_RANGE: u128 = 4096;

/// The translation: TOML text and counts.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    pub toml: String,
    pub services: usize,
    pub backends: usize,
    pub checks: usize,
}

/// Top-level sections that belong to keepalived's VRRP side or its global definitions.
fn is_not_lvs(keyword: &str) -> bool {
    keyword.starts_with("vrrp_")
        || matches!(
            keyword,
            "global_defs"
                | "static_ipaddress"
                | "static_routes"
                | "static_rules"
                | "track_file"
                | "track_group"
                | "linkbeat_interfaces"
                | "garp_group"
                | "bfd_instance"
                | "net_namespace"
                | "net_namespace_ipvs"
                | "instance"
                | "use_pid_dir"
                | "namespace_with_ipsets"
        )
}

/// Options a virtual server hands to its real servers and a real server to its checkers.
#[derive(Debug, Clone, Default)]
struct Inherit {
    delay_loop: Option<f64>,
    connect_timeout: Option<f64>,
    retry: Option<u64>,
    delay_before_retry: Option<f64>,
    warmup: Option<f64>,
    alpha: Option<bool>,
    inhibit: Option<bool>,
    virtualhost: Option<String>,
}

impl Inherit {
    fn over(&self, parent: &Inherit) -> Inherit {
        Inherit {
            delay_loop: self.delay_loop.or(parent.delay_loop),
            connect_timeout: self.connect_timeout.or(parent.connect_timeout),
            retry: self.retry.or(parent.retry),
            delay_before_retry: self.delay_before_retry.or(parent.delay_before_retry),
            warmup: self.warmup.or(parent.warmup),
            alpha: self.alpha.or(parent.alpha),
            inhibit: self.inhibit.or(parent.inhibit),
            virtualhost: self.virtualhost.clone().or(parent.virtualhost.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Nat,
    Dr,
    Tun,
    FullNat,
}

impl Method {
    fn toml(self) -> &'static str {
        match self {
            Method::Nat => "nat",
            Method::Dr => "dr",
            Method::Tun => "tun",
            Method::FullNat => "fullnat",
        }
    }
}

/// A method as written: `None` when the line is not usable (reported).
fn parse_method(s: &Stmt, report: &mut Report) -> Option<Method> {
    let m = match s.arg(0) {
        Some("NAT") => Method::Nat,
        Some("DR") => Method::Dr,
        Some("TUN") => Method::Tun,
        Some("FNAT") => Method::FullNat,
        other => {
            report.unsupported(
                s.pos.clone(),
                &s.text(),
                &format!(
                    "unknown forwarding method {:?} (NAT, DR, TUN or DPVS's FNAT)",
                    other.unwrap_or("")
                ),
            );
            return None;
        }
    };
    let mut words = s.args()[1..].iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "type" => match words.next().map(String::as_str) {
                Some("ipip") => {}
                Some(t @ ("gue" | "gre")) => {
                    report.unsupported(
                        s.pos.clone(),
                        &s.text(),
                        &format!("{t} tunnels: xvs encapsulates in IPIP only"),
                    );
                    return None;
                }
                other => {
                    report.unsupported(
                        s.pos.clone(),
                        &s.text(),
                        &format!("unknown tunnel type {:?}", other.unwrap_or("")),
                    );
                    return None;
                }
            },
            "nocsum" => {}
            "port" | "csum" | "remcsum" => {
                report.unsupported(
                    s.pos.clone(),
                    &s.text(),
                    "GUE tunnel options: xvs encapsulates in IPIP only",
                );
                return None;
            }
            other => {
                report.unsupported(
                    s.pos.clone(),
                    &s.text(),
                    &format!("unknown tunnel option {other:?}"),
                );
                return None;
            }
        }
    }
    Some(m)
}

#[derive(Debug, Clone)]
enum VsKey {
    Addr { ip: IpAddr, port: u16 },
    Fwmark(u32),
    Group(String),
}

#[derive(Debug, Clone)]
struct Backend {
    pos: Pos,
    text: String,
    addr: IpAddr,
    port: u16,
    weight: Option<u32>,
    method: Option<Method>,
    /// The method line was unusable (reported): leave the backend out.
    bad_method: bool,
    u_threshold: u32,
    l_threshold: u32,
    inherit: Inherit,
    /// The translated check, if any: TOML key/value lines and markers for `finish_check`.
    check: Option<Vec<(String, String)>>,
    /// The checker's keyword and place.
    check_src: Option<(String, Pos)>,
}

/// One `virtual_server_group` entry.
#[derive(Debug, Clone)]
enum GroupEntry {
    Addrs {
        pos: Pos,
        text: String,
        addrs: Vec<IpAddr>,
        port: u16,
    },
    Fwmark {
        pos: Pos,
        text: String,
        mark: u32,
        ipv6: Option<bool>,
    },
}

/// Translate the top-level statements.
pub fn translate(stmts: &[Stmt], report: &mut Report, files: &[String]) -> Translation {
    let mut groups: HashMap<String, Vec<GroupEntry>> = HashMap::new();
    let mut laddr_groups: HashMap<String, (Pos, Vec<IpAddr>)> = HashMap::new();
    let mut timeouts: Option<(Pos, [Option<u32>; 3])> = None;
    let mut sync: Option<(Pos, String)> = None;
    let mut servers = Vec::new();
    for s in stmts {
        let kw = s.keyword();
        match kw {
            "virtual_server_group" => {
                let Some(name) = s.arg(0) else {
                    report.unsupported(s.pos.clone(), kw, "a group needs a name");
                    continue;
                };
                let entries = group_entries(s, report);
                groups.insert(name.to_string(), entries);
            }
            "local_address_group" => {
                let Some(name) = s.arg(0) else {
                    report.unsupported(s.pos.clone(), kw, "a group needs a name");
                    continue;
                };
                let addrs = laddr_entries(s, report);
                laddr_groups.insert(name.to_string(), (s.pos.clone(), addrs));
            }
            "virtual_server" => servers.push(s),
            "global_defs" => {
                report.not_lvs(s.pos.clone(), kw);
                for g in s.children() {
                    match g.keyword() {
                        "lvs_timeouts" => timeouts = lvs_timeouts(g, report, timeouts),
                        "lvs_sync_daemon" | "lvs_sync_daemon_interface" => {
                            if let Some(t) = lvs_sync_daemon(g, report) {
                                sync = Some((g.pos.clone(), t));
                            }
                        }
                        _ => {}
                    }
                }
            }
            "SSL" => report.unsupported(
                s.pos.clone(),
                "SSL",
                "client certificates for SSL_GET: xvs's https check presents none",
            ),
            k if is_not_lvs(k) => {
                let name = match s.arg(0) {
                    Some(a) => format!("{k} {a}"),
                    None => k.to_string(),
                };
                report.not_lvs(s.pos.clone(), &name);
            }
            _ => report.unsupported(s.pos.clone(), &s.text(), "unknown top-level keyword"),
        }
    }

    let mut out = Translation::default();
    let mut body = String::new();
    let mut local_addresses: Vec<IpAddr> = Vec::new();
    let mut laddr_used: BTreeSet<String> = BTreeSet::new();
    let mut seen_keys: HashMap<String, Pos> = HashMap::new();
    for vs in servers {
        translate_vs(
            vs,
            &groups,
            &laddr_groups,
            &mut laddr_used,
            &mut local_addresses,
            &mut seen_keys,
            report,
            files,
            &mut body,
            &mut out,
        );
    }
    if laddr_used.len() > 1 {
        let names: Vec<&str> = laddr_used.iter().map(String::as_str).collect();
        if let Some((pos, _)) = laddr_groups.get(names[1]) {
            report.warning(
                pos.clone(),
                &format!("local_address_group {}", names.join(", ")),
                "xvs has one pool of FullNAT local addresses for every service: the groups are merged",
            );
        }
    }

    let mut toml = String::new();
    toml.push_str(
        "# Translated from keepalived's configuration by `xvs import`.\n\
         # Add [[interface]] and [[route]] sections before `xvs run` (keepalived used the kernel's).\n",
    );
    if let Some((pos, [tcp, tcpfin, udp])) = timeouts {
        let _ = writeln!(toml, "\n# lvs_timeouts ({})", pos.line_ref(files));
        toml.push_str("[timeouts]\n");
        if let Some(v) = tcp {
            let _ = writeln!(toml, "tcp = {v}");
        }
        if let Some(v) = tcpfin {
            let _ = writeln!(toml, "tcpfin = {v}");
        }
        if let Some(v) = udp {
            let _ = writeln!(toml, "udp = {v}");
        }
    }
    if !local_addresses.is_empty() {
        let names: Vec<&str> = laddr_used.iter().map(String::as_str).collect();
        let _ = writeln!(toml, "\n# local_address_group {}", names.join(", "));
        toml.push_str("[fullnat]\nlocal_addresses = [");
        for (i, a) in local_addresses.iter().enumerate() {
            if i > 0 {
                toml.push_str(", ");
            }
            let _ = write!(toml, "\"{a}\"");
        }
        toml.push_str("]\n");
    }
    if let Some((pos, text)) = sync {
        let _ = writeln!(toml, "\n# lvs_sync_daemon ({})", pos.line_ref(files));
        toml.push_str(&text);
    }
    toml.push_str(&body);
    out.toml = toml;
    out
}

/// `lvs_sync_daemon INTERFACE [VRRP_INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group ADDR]`
/// (or the old `lvs_sync_daemon_interface INTERFACE`) as `[sync.master]` and `[sync.backup]`
/// sections with the same settings: keepalived switches the kernel's daemon between master
/// and backup as its VRRP instance changes state; xvs runs both, so each director sends its
/// own connections and installs its peer's whatever its VRRP state.
fn lvs_sync_daemon(g: &Stmt, report: &mut Report) -> Option<String> {
    let mut args = g.args().iter();
    let Some(interface) = args.next() else {
        report.unsupported(g.pos.clone(), &g.text(), "needs an interface");
        return None;
    };
    let mut fields = format!("interface = {}\n", toml_str(interface));
    let mut rest: Vec<&String> = args.collect();
    if g.keyword() == "lvs_sync_daemon"
        && rest
            .first()
            .is_some_and(|w| !matches!(w.as_str(), "id" | "maxlen" | "port" | "ttl" | "group"))
    {
        let instance = rest.remove(0);
        report.warning(
            g.pos.clone(),
            &g.text(),
            &format!(
                "keepalived switches the sync daemon between master and backup with VRRP instance {instance}; xvs runs both daemons at once"
            ),
        );
    }
    let mut words = rest.into_iter();
    while let Some(w) = words.next() {
        let Some(v) = words.next() else {
            report.unsupported(g.pos.clone(), &g.text(), &format!("{w} needs a value"));
            return None;
        };
        let (key, ok) = match w.as_str() {
            "id" => ("syncid", v.parse::<u8>().is_ok()),
            "maxlen" => ("maxlen", v.parse::<u16>().is_ok()),
            "port" => ("port", v.parse::<u16>().is_ok_and(|p| p > 0)),
            "ttl" => ("ttl", v.parse::<u8>().is_ok_and(|t| t > 0)),
            "group" => ("group", v.parse::<IpAddr>().is_ok_and(|a| a.is_multicast())),
            _ => {
                report.unsupported(g.pos.clone(), &g.text(), &format!("unknown option {w:?}"));
                return None;
            }
        };
        if !ok {
            report.unsupported(g.pos.clone(), &g.text(), &format!("bad {w} {v:?}"));
            return None;
        }
        if key == "group" {
            let _ = writeln!(fields, "group = {}", toml_str(v));
        } else {
            let _ = writeln!(fields, "{key} = {v}");
        }
    }
    Some(format!("[sync.master]\n{fields}\n[sync.backup]\n{fields}"))
}

fn lvs_timeouts(
    g: &Stmt,
    report: &mut Report,
    prev: Option<(Pos, [Option<u32>; 3])>,
) -> Option<(Pos, [Option<u32>; 3])> {
    let mut t = prev.map(|p| p.1).unwrap_or([None; 3]);
    let mut words = g.args().iter();
    while let Some(w) = words.next() {
        let slot = match w.as_str() {
            "tcp" => 0,
            "tcpfin" => 1,
            "udp" => 2,
            _ => {
                report.unsupported(
                    g.pos.clone(),
                    &g.text(),
                    &format!("unknown timeout {w:?} (tcp, tcpfin, udp)"),
                );
                continue;
            }
        };
        match words.next().and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if v > 0 => t[slot] = Some(v),
            _ => report.unsupported(
                g.pos.clone(),
                &g.text(),
                &format!("{w} needs a number of seconds"),
            ),
        }
    }
    Some((g.pos.clone(), t))
}

/// Parse an address range of keepalived's forms: `A`, `A-LAST` (the last IPv4 octet or IPv6
/// group), `A-B`, `A/len`. `Err(reason)` when unusable.
pub fn parse_range(s: &str) -> Result<Vec<IpAddr>, String> {
    let (first, last): (IpAddr, IpAddr) = if let Some((a, len)) = s.split_once('/') {
        let a: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an address"))?;
        let max = if a.is_ipv4() { 32 } else { 128 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| format!("bad prefix length in {s:?}"))?;
        let host_bits = max - len;
        let n = to_u128(a);
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        if n & mask != 0 {
            return Err(format!("{s:?} has host bits set"));
        }
        (a, from_u128(n | mask, a.is_ipv4()))
    } else if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an address"))?;
        let b: IpAddr = match a {
            IpAddr::V4(v4) if !b.contains('.') => {
                let last: u8 = b
                    .parse()
                    .map_err(|_| format!("{b:?} is not a last octet"))?;
                let mut o = v4.octets();
                o[3] = last;
                IpAddr::V4(Ipv4Addr::from(o))
            }
            IpAddr::V6(v6) if !b.contains(':') => {
                let last =
                    u16::from_str_radix(b, 16).map_err(|_| format!("{b:?} is not a last group"))?;
                let mut seg = v6.segments();
                seg[7] = last;
                IpAddr::V6(Ipv6Addr::from(seg))
            }
            _ => b.parse().map_err(|_| format!("{b:?} is not an address"))?,
        };
        if a.is_ipv4() != b.is_ipv4() {
            return Err("range ends of different families".into());
        }
        (a, b)
    } else {
        let a: IpAddr = s.parse().map_err(|_| format!("{s:?} is not an address"))?;
        (a, a)
    };
    let (lo, hi) = (to_u128(first), to_u128(last));
    if hi < lo {
        return Err(format!("{s:?} ends before it starts"));
    }
    if hi - lo >= MAX_RANGE {
        return Err(format!(
            "{s:?} holds more than {MAX_RANGE} addresses (one xvs service each)"
        ));
    }
    Ok((lo..=hi).map(|n| from_u128(n, first.is_ipv4())).collect())
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

fn group_entries(s: &Stmt, report: &mut Report) -> Vec<GroupEntry> {
    let mut out = Vec::new();
    for e in s.children() {
        if e.keyword() == "fwmark" {
            let mark = e.arg(0).and_then(|m| m.parse::<u32>().ok());
            let ipv6 = match e.arg(1) {
                None => None,
                Some("inet") => Some(false),
                Some("inet6") => Some(true),
                Some(f) => {
                    report.unsupported(
                        e.pos.clone(),
                        &e.text(),
                        &format!("unknown family {f:?} (keepalived skips the entry too)"),
                    );
                    continue;
                }
            };
            match mark {
                Some(mark) if mark > 0 => out.push(GroupEntry::Fwmark {
                    pos: e.pos.clone(),
                    text: e.text(),
                    mark,
                    ipv6,
                }),
                _ => report.unsupported(
                    e.pos.clone(),
                    &e.text(),
                    "needs a mark from 1 to 4294967295",
                ),
            }
            continue;
        }
        let port = match e.arg(0) {
            None => Some(0),
            Some(p) => p.parse::<u16>().ok(),
        };
        let Some(port) = port else {
            report.unsupported(e.pos.clone(), &e.text(), "not a port");
            continue;
        };
        match parse_range(e.keyword()) {
            Ok(addrs) => out.push(GroupEntry::Addrs {
                pos: e.pos.clone(),
                text: e.text(),
                addrs,
                port,
            }),
            Err(why) => report.unsupported(e.pos.clone(), &e.text(), &why),
        }
        if e.block.is_some() || e.args().len() > 1 {
            report.unsupported(e.pos.clone(), &e.text(), "unexpected words after the port");
        }
    }
    out
}

fn laddr_entries(s: &Stmt, report: &mut Report) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for e in s.children() {
        match parse_range(e.keyword()) {
            Ok(addrs) => out.extend(addrs),
            Err(why) => {
                report.unsupported(e.pos.clone(), &e.text(), &why);
                continue;
            }
        }
        if let Some(dev) = e.arg(0) {
            report.warning(
                e.pos.clone(),
                &e.text(),
                &format!(
                    "interface {dev} not kept: xvs sends from the interface its routes choose"
                ),
            );
        }
    }
    out
}

/// A keepalived `<TIMER>`: seconds, fractions allowed.
fn timer(s: &Stmt, report: &mut Report) -> Option<f64> {
    match s.arg(0).and_then(|v| v.parse::<f64>().ok()) {
        Some(v) if (0.0..=86400.0).contains(&v) => Some(v),
        _ => {
            report.unsupported(
                s.pos.clone(),
                &s.text(),
                "needs a number of seconds up to 86400 (keepalived ignores the line too)",
            );
            None
        }
    }
}

fn number(s: &Stmt, report: &mut Report, max: u64) -> Option<u64> {
    match s.arg(0).and_then(|v| v.parse::<u64>().ok()) {
        Some(v) if v <= max => Some(v),
        _ => {
            report.unsupported(
                s.pos.clone(),
                &s.text(),
                &format!("needs a whole number up to {max} (keepalived ignores the line too)"),
            );
            None
        }
    }
}

/// A weight: keepalived takes up to 2^31 - 1, xvs (as ipvsadm) up to 65535.
fn weight(s: &Stmt, report: &mut Report) -> Option<u32> {
    let w = number(s, report, i32::MAX as u64)?;
    if w > 65535 {
        report.unsupported(
            s.pos.clone(),
            &s.text(),
            "xvs weights go up to 65535: 65535 used",
        );
        return Some(65535);
    }
    Some(w as u32)
}

/// keepalived's `<BOOL>` after an optional keyword: no value is true.
fn boolean(s: &Stmt, report: &mut Report) -> Option<bool> {
    match s.arg(0) {
        None => Some(true),
        Some("on" | "true" | "yes") => Some(true),
        Some("off" | "false" | "no") => Some(false),
        Some(_) => {
            report.unsupported(s.pos.clone(), &s.text(), "not on|off|true|false|yes|no");
            None
        }
    }
}

/// Options common to the virtual server, real server and checker levels; true when `s` was one.
fn common_option(s: &Stmt, inh: &mut Inherit, report: &mut Report) -> bool {
    match s.keyword() {
        "delay_loop" => inh.delay_loop = timer(s, report).or(inh.delay_loop),
        "connect_timeout" => inh.connect_timeout = timer(s, report).or(inh.connect_timeout),
        "retry" | "nb_get_retry" => {
            inh.retry = number(s, report, u32::MAX as u64).or(inh.retry);
            if inh.retry.is_some_and(|r| r > 999) {
                report.warning(
                    s.pos.clone(),
                    &s.text(),
                    "xvs counts at most 1000 failures: fall = 1000",
                );
            }
        }
        "nb_sock_retry" => {
            inh.retry = number(s, report, u32::MAX as u64).or(inh.retry);
            report.warning(s.pos.clone(), &s.text(), "DPVS's keyword, taken as retry");
        }
        "delay_before_retry" => {
            inh.delay_before_retry = timer(s, report).or(inh.delay_before_retry)
        }
        "warmup" => inh.warmup = timer(s, report).or(inh.warmup),
        "alpha" => inh.alpha = boolean(s, report).or(inh.alpha),
        "inhibit_on_failure" => inh.inhibit = boolean(s, report).or(inh.inhibit),
        "virtualhost" => match s.arg(0) {
            Some(h) if valid_host(h) => inh.virtualhost = Some(h.to_string()),
            _ => report.unsupported(
                s.pos.clone(),
                &s.text(),
                "needs one host name without spaces",
            ),
        },
        _ => return false,
    }
    true
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && !h.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn millis(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}

#[allow(clippy::too_many_arguments)]
fn translate_vs(
    vs: &Stmt,
    groups: &HashMap<String, Vec<GroupEntry>>,
    laddr_groups: &HashMap<String, (Pos, Vec<IpAddr>)>,
    laddr_used: &mut BTreeSet<String>,
    local_addresses: &mut Vec<IpAddr>,
    seen_keys: &mut HashMap<String, Pos>,
    report: &mut Report,
    files: &[String],
    body: &mut String,
    out: &mut Translation,
) {
    let key = match (vs.arg(0), vs.arg(1)) {
        (Some("group"), Some(name)) => VsKey::Group(name.to_string()),
        (Some("fwmark"), Some(m)) => match m.parse::<u32>() {
            Ok(m) if m > 0 => VsKey::Fwmark(m),
            _ => {
                report.unsupported(vs.pos.clone(), &vs.text(), "needs a mark from 1");
                return;
            }
        },
        (Some(ip), port) => {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                report.unsupported(vs.pos.clone(), &vs.text(), "not an address");
                return;
            };
            let Some(port) = port.map_or(Some(0), |p| p.parse::<u16>().ok()) else {
                report.unsupported(vs.pos.clone(), &vs.text(), "not a port");
                return;
            };
            VsKey::Addr { ip, port }
        }
        _ => {
            report.unsupported(
                vs.pos.clone(),
                &vs.text(),
                "needs IP [PORT], fwmark N or group NAME",
            );
            return;
        }
    };
    if vs.args().len() > 2 {
        report.unsupported(
            vs.pos.clone(),
            &vs.text(),
            "unexpected words after the port",
        );
    }

    let mut inherit = Inherit::default();
    let mut sched: Option<String> = None;
    let mut flags: Vec<(Pos, String)> = Vec::new();
    let mut ops = false;
    let mut method: Option<Method> = None;
    let mut persistence: Option<u32> = None;
    let mut granularity: Option<(Pos, String)> = None;
    let mut protocol: Option<&str> = None;
    let mut ip_family: Option<bool> = None;
    let mut default_weight: u32 = 1;
    let mut laddr: Option<(Pos, String)> = None;
    let mut quorum: Option<u32> = None;
    let mut hysteresis: Option<u32> = None;
    let mut quorum_up: Option<String> = None;
    let mut quorum_down: Option<String> = None;
    let mut omega = false;
    let mut sorry: Option<(Pos, String, IpAddr, u16)> = None;
    let mut sorry_inhibit = false;
    let mut sorry_method: Option<Method> = None;
    let mut backends: Vec<Backend> = Vec::new();
    for s in vs.children() {
        if common_option(s, &mut inherit, report) {
            continue;
        }
        let kw = s.keyword();
        match kw {
            "lvs_sched" | "lb_algo" => match s.arg(0) {
                Some(
                    n @ ("rr" | "wrr" | "lc" | "wlc" | "lblc" | "sh" | "mh" | "dh" | "fo" | "ovf"
                    | "lblcr" | "sed" | "nq" | "twos"),
                ) => sched = Some(n.to_string()),
                _ => report.unsupported(
                    s.pos.clone(),
                    &s.text(),
                    "unknown scheduler (keepalived ignores the line and uses wlc)",
                ),
            },
            "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
            | "mh-fallback" => flags.push((s.pos.clone(), kw.to_string())),
            "hashed" => report.warning(
                s.pos.clone(),
                kw,
                "no effect (keepalived sets no scheduler flag for it either)",
            ),
            "ops" => ops = true,
            "lvs_method" | "lb_kind" => {
                if let Some(m) = parse_method(s, report) {
                    method = Some(m);
                }
            }
            "persistence_timeout" => match s.arg(0) {
                None => persistence = Some(360),
                Some(_) => {
                    if let Some(t) = number(s, report, 2_678_400) {
                        if t == 0 {
                            persistence = None;
                        } else {
                            persistence = Some(t as u32);
                        }
                    }
                }
            },
            "persistence_granularity" => match s.arg(0) {
                Some(g) => granularity = Some((s.pos.clone(), g.to_string())),
                None => report.unsupported(s.pos.clone(), kw, "needs a netmask"),
            },
            "protocol" => match s.arg(0).map(|p| p.to_ascii_uppercase()) {
                Some(p) if p == "TCP" => protocol = Some("tcp"),
                Some(p) if p == "UDP" => protocol = Some("udp"),
                Some(p) if p == "SCTP" => protocol = Some("sctp"),
                _ => report.unsupported(s.pos.clone(), &s.text(), "not TCP, UDP or SCTP"),
            },
            "ip_family" => match s.arg(0) {
                Some("inet") => ip_family = Some(false),
                Some("inet6") => ip_family = Some(true),
                _ => report.unsupported(s.pos.clone(), &s.text(), "not inet or inet6"),
            },
            "weight" => {
                if let Some(w) = weight(s, report) {
                    default_weight = w;
                }
            }
            "laddr_group_name" => match s.arg(0) {
                Some(n) => laddr = Some((s.pos.clone(), n.to_string())),
                None => report.unsupported(s.pos.clone(), kw, "needs a group name"),
            },
            "quorum" => {
                if let Some(q) = number(s, report, u64::from(u32::MAX)) {
                    if q == 0 {
                        report.unsupported(
                            s.pos.clone(),
                            &s.text(),
                            "xvs needs a quorum of 1 or more",
                        );
                    } else {
                        quorum = Some(q as u32);
                    }
                }
            }
            "hysteresis" => {
                if let Some(h) = number(s, report, u64::from(u32::MAX)) {
                    hysteresis = Some(h as u32);
                }
            }
            "quorum_up" => quorum_up = script_line(s, report).or(quorum_up),
            "quorum_down" => quorum_down = script_line(s, report).or(quorum_down),
            "sorry_server" => match (
                s.arg(0).and_then(|a| a.parse::<IpAddr>().ok()),
                s.arg(1).map(|p| p.parse::<u16>()),
            ) {
                (Some(ip), None) => sorry = Some((s.pos.clone(), s.text(), ip, 0)),
                (Some(ip), Some(Ok(port))) if s.args().len() == 2 => {
                    sorry = Some((s.pos.clone(), s.text(), ip, port))
                }
                _ => report.unsupported(
                    s.pos.clone(),
                    &s.text(),
                    "not an address and a port (keepalived ignores the line too)",
                ),
            },
            "sorry_server_inhibit" => sorry_inhibit = boolean(s, report).unwrap_or(sorry_inhibit),
            "sorry_server_lvs_method" => {
                if let Some(m) = parse_method(s, report) {
                    sorry_method = Some(m);
                }
            }
            "omega" => omega = boolean(s, report).unwrap_or(omega),
            "ha_suspend" => report.unsupported(
                s.pos.clone(),
                kw,
                "xvs does not watch whether the VIP is configured on the host",
            ),
            "smtp_alert" => report.unsupported(s.pos.clone(), &s.text(), "xvs sends no e-mail"),
            "snmp_name" => report.unsupported(s.pos.clone(), &s.text(), "xvs has no SNMP agent"),
            "persistence_engine" => report.unsupported(
                s.pos.clone(),
                &s.text(),
                "xvs has no persistence engines (SIP Call-ID)",
            ),
            "real_server" => {
                if let Some(b) = real_server(s, report) {
                    backends.push(b);
                }
            }
            "syn_proxy" => report.unsupported(
                s.pos.clone(),
                kw,
                "DPVS's SYN proxy: xvs has none (SYNs go to the backends)",
            ),
            "bps_limit" | "cps_limit" | "limit_proportion" => report.unsupported(
                s.pos.clone(),
                &s.text(),
                "DPVS's per-service rate limits: xvs has none",
            ),
            "est_timeout" => report.unsupported(
                s.pos.clone(),
                &s.text(),
                "DPVS's per-service timeout: xvs has the global [timeouts] (lvs_timeouts)",
            ),
            _ => report.unsupported(s.pos.clone(), &s.text(), "unknown virtual_server keyword"),
        }
    }

    let sched = sched.unwrap_or_else(|| "wlc".to_string());
    let mut flag_names: Vec<String> = Vec::new();
    for (pos, f) in flags {
        let ok = match f.as_str() {
            "sh-port" | "sh-fallback" => sched == "sh",
            "mh-port" | "mh-fallback" => sched == "mh",
            _ => true,
        };
        if ok {
            if !flag_names.contains(&f) {
                flag_names.push(f);
            }
        } else {
            report.warning(
                pos,
                &f,
                &format!(
                    "only for the {} scheduler: ignored (as keepalived does)",
                    &f[..2]
                ),
            );
        }
    }

    // Defaults of the method, as validate_check_config sets them.
    let vs_method = method.unwrap_or(Method::Nat);

    // Address family of the service (fwmark services: ip_family, the granularity, the backends).
    let addr_family: Option<bool> = match &key {
        VsKey::Addr { ip, .. } => Some(ip.is_ipv6()),
        _ => None,
    };
    let mut family = addr_family.or(ip_family);
    if family.is_none() {
        if let Some((_, g)) = &granularity {
            family = Some(!g.contains('.'));
        }
    }
    if family.is_none() {
        family = backends
            .iter()
            .find(|b| b.method.unwrap_or(vs_method) != Method::Tun)
            .or(backends.first())
            .map(|b| b.addr.is_ipv6());
    }

    let netmask = match &granularity {
        None => None,
        Some((pos, g)) => {
            if persistence.is_none() {
                persistence = Some(360);
            }
            if let Ok(v4) = g.parse::<Ipv4Addr>() {
                let bits = u32::from(v4);
                let len = bits.leading_ones();
                if bits.checked_shl(len).unwrap_or(0) != 0 || len == 0 {
                    report.unsupported(
                        pos.clone(),
                        &format!("persistence_granularity {g}"),
                        "not a contiguous netmask: xvs takes a prefix length",
                    );
                    None
                } else {
                    Some(len as u8)
                }
            } else {
                match g.parse::<u8>() {
                    Ok(l) if (1..=128).contains(&l) => Some(l),
                    _ => {
                        report.unsupported(
                            pos.clone(),
                            &format!("persistence_granularity {g}"),
                            "not a netmask or IPv6 prefix length",
                        );
                        None
                    }
                }
            }
        }
    };

    // FullNAT local addresses.
    let uses_fnat = vs_method == Method::FullNat
        || backends.iter().any(|b| b.method == Some(Method::FullNat))
        || (sorry.is_some() && sorry_method == Some(Method::FullNat));
    let mut fnat_ok = true;
    if uses_fnat {
        match &laddr {
            Some((pos, name)) => match laddr_groups.get(name) {
                Some((_, addrs)) if !addrs.is_empty() => {
                    laddr_used.insert(name.clone());
                    for a in addrs {
                        if !local_addresses.contains(a) {
                            local_addresses.push(*a);
                        }
                    }
                }
                _ => {
                    report.unsupported(
                        pos.clone(),
                        &format!("laddr_group_name {name}"),
                        "no local_address_group of that name with addresses: FNAT backends left out",
                    );
                    fnat_ok = false;
                }
            },
            None => {
                report.unsupported(
                    vs.pos.clone(),
                    &vs.text(),
                    "FNAT without laddr_group_name: no local addresses, FNAT backends left out",
                );
                fnat_ok = false;
            }
        }
    } else if let Some((pos, name)) = &laddr {
        report.warning(
            pos.clone(),
            &format!("laddr_group_name {name}"),
            "no FNAT backend in this virtual server: not needed",
        );
    }

    // The xvs services this virtual server becomes.
    struct Svc {
        comment: String,
        fwmark: Option<(u32, bool)>,
        addr: Option<(IpAddr, u16)>,
    }
    let vs_comment = format!("{} ({})", vs.text(), vs.pos.line_ref(files));
    let mut svcs: Vec<Svc> = Vec::new();
    match &key {
        VsKey::Addr { ip, port } => svcs.push(Svc {
            comment: vs_comment.clone(),
            fwmark: None,
            addr: Some((*ip, *port)),
        }),
        VsKey::Fwmark(m) => svcs.push(Svc {
            comment: vs_comment.clone(),
            fwmark: Some((*m, family.unwrap_or(false))),
            addr: None,
        }),
        VsKey::Group(name) => match groups.get(name) {
            None => {
                report.unsupported(
                    vs.pos.clone(),
                    &vs.text(),
                    "no virtual_server_group of that name (keepalived skips it too)",
                );
                return;
            }
            Some(entries) => {
                for e in entries {
                    match e {
                        GroupEntry::Addrs {
                            pos,
                            text,
                            addrs,
                            port,
                        } => {
                            for a in addrs {
                                svcs.push(Svc {
                                    comment: format!(
                                        "{vs_comment}, entry {text} ({})",
                                        pos.line_ref(files)
                                    ),
                                    fwmark: None,
                                    addr: Some((*a, *port)),
                                });
                            }
                        }
                        GroupEntry::Fwmark {
                            pos,
                            text,
                            mark,
                            ipv6,
                        } => svcs.push(Svc {
                            comment: format!(
                                "{vs_comment}, entry {text} ({})",
                                pos.line_ref(files)
                            ),
                            fwmark: Some((*mark, ipv6.or(family).unwrap_or(false))),
                            addr: None,
                        }),
                    }
                }
            }
        },
    }

    let has_addr_service = svcs.iter().any(|s| s.addr.is_some());
    if has_addr_service && protocol.is_none() {
        report.warning(
            vs.pos.clone(),
            &vs.text(),
            "no protocol: UDP, as keepalived (and the kernel) default to",
        );
    }
    if !has_addr_service && protocol.is_some() {
        report.warning(
            vs.pos.clone(),
            &vs.text(),
            "protocol ignored for a fwmark service (as keepalived does)",
        );
    }
    let proto = protocol.unwrap_or("udp");
    if ops && has_addr_service && proto != "udp" {
        report.warning(
            vs.pos.clone(),
            "ops",
            "one-packet scheduling is for UDP: reset (as keepalived does)",
        );
        ops = false;
    }
    if persistence.is_none() && svcs.iter().any(|s| s.addr.is_some_and(|(_, p)| p == 0)) {
        report.warning(
            vs.pos.clone(),
            &vs.text(),
            "port 0 without persistence: persistence 360 s, as keepalived sets it",
        );
        persistence = Some(360);
    }

    // Backends: method, family, port, duplicates.
    struct Out {
        b: Backend,
        method: Method,
    }
    let mut kept: Vec<Out> = Vec::new();
    for b in backends {
        if b.bad_method {
            continue;
        }
        let method = b.method.unwrap_or(vs_method);
        if method == Method::FullNat && !fnat_ok {
            continue;
        }
        if method != Method::Tun {
            if let Some(v6) = family {
                if b.addr.is_ipv6() != v6 {
                    report.unsupported(
                        b.pos.clone(),
                        &b.text,
                        "address family differs from the virtual server's (keepalived skips it too)",
                    );
                    continue;
                }
            }
        }
        if kept
            .iter()
            .any(|k| k.b.addr == b.addr && k.b.port == b.port)
        {
            report.warning(
                b.pos.clone(),
                &b.text,
                "duplicate real server left out (as keepalived does)",
            );
            continue;
        }
        kept.push(Out { b, method });
    }
    if kept.is_empty() {
        report.warning(
            vs.pos.clone(),
            &vs.text(),
            "no usable real server (keepalived ignores such a virtual server; xvs keeps it empty)",
        );
    }

    // Checks: the backends' own, with the inherited options.
    let mut checks: Vec<Option<Vec<(String, String)>>> = Vec::new();
    for k in &kept {
        checks.push(k.b.check.as_ref().map(|c| {
            let inh = k.b.inherit.over(&inherit);
            finish_check(c, &inh)
        }));
    }
    let shared = !checks.is_empty() && checks.iter().all(|c| c.is_some() && *c == checks[0]);

    for svc in &svcs {
        let (head, key_text) = match (svc.fwmark, svc.addr) {
            (Some((m, v6)), _) => (
                format!("fwmark = {m}\n{}", if v6 { "ipv6 = true\n" } else { "" }),
                format!("fwmark {m} {v6}"),
            ),
            (None, Some((ip, port))) => (
                format!("protocol = \"{proto}\"\nvip = \"{ip}\"\nport = {port}\n"),
                format!("{proto} {ip} {port}"),
            ),
            (None, None) => continue,
        };
        if let Some(first) = seen_keys.get(&key_text) {
            report.unsupported(
                vs.pos.clone(),
                &vs.text(),
                &format!(
                    "{key_text}: the same service as the virtual server at {}: left out",
                    first.line_ref(files)
                ),
            );
            continue;
        }
        let _ = writeln!(body, "\n# {}", svc.comment);
        body.push_str("[[service]]\n");
        body.push_str(&head);
        seen_keys.insert(key_text, vs.pos.clone());
        let _ = writeln!(body, "scheduler = \"{sched}\"");
        if !flag_names.is_empty() {
            let _ = writeln!(body, "flags = \"{}\"", flag_names.join(","));
        }
        if let Some(p) = persistence {
            let _ = writeln!(body, "persistence = {p}");
            if let Some(m) = netmask {
                let v6 = match (svc.fwmark, svc.addr) {
                    (Some((_, v6)), _) => v6,
                    (_, Some((ip, _))) => ip.is_ipv6(),
                    _ => false,
                };
                let max = if v6 { 128 } else { 32 };
                if m <= max {
                    let _ = writeln!(body, "netmask = {m}");
                } else if let Some((pos, g)) = &granularity {
                    report.unsupported(
                        pos.clone(),
                        &format!("persistence_granularity {g}"),
                        &format!("longer than the service's {max}-bit addresses"),
                    );
                }
            }
        }
        if ops {
            body.push_str("one_packet = true\n");
        }
        if let Some(q) = quorum {
            let _ = writeln!(body, "quorum = {q}");
        }
        if let Some(h) = hysteresis {
            let _ = writeln!(body, "hysteresis = {h}");
        }
        if let Some(c) = &quorum_up {
            let _ = writeln!(body, "quorum_up = {}", toml_str(c));
        }
        if let Some(c) = &quorum_down {
            let _ = writeln!(body, "quorum_down = {}", toml_str(c));
        }
        if omega {
            body.push_str("omega = true\n");
        }
        if let Some((pos, text, ip, port)) = &sorry {
            let m = sorry_method.unwrap_or(vs_method);
            let v6 = match (svc.fwmark, svc.addr) {
                (Some((_, v6)), _) => v6,
                (_, Some((ip, _))) => ip.is_ipv6(),
                _ => false,
            };
            let port = match (svc.addr, m) {
                (Some((_, sport)), Method::Dr | Method::Tun) => {
                    if *port != 0 && *port != sport {
                        report.warning(
                            pos.clone(),
                            text,
                            &format!("port {port} differs from the service's: {sport} used (DR/TUN cannot change the port)"),
                        );
                    }
                    Some(sport)
                }
                (Some((_, sport)), _) if *port == 0 && !matches!(key, VsKey::Group(_)) => {
                    Some(sport)
                }
                (None, Method::Dr | Method::Tun) => Some(0),
                _ => Some(*port),
            };
            if m != Method::Tun && ip.is_ipv6() != v6 {
                report.unsupported(
                    pos.clone(),
                    text,
                    "address family differs from the service's (only tunnels may differ): left out",
                );
            } else if m == Method::FullNat && !fnat_ok {
                report.unsupported(
                    pos.clone(),
                    text,
                    "FNAT sorry server without local addresses: left out",
                );
            } else if let Some(port) = port {
                let _ = writeln!(body, "\n# {text} ({})", pos.line_ref(files));
                body.push_str("[service.sorry_server]\n");
                let _ = writeln!(
                    body,
                    "address = \"{ip}\"\nport = {port}\nmethod = \"{}\"",
                    m.toml()
                );
                if sorry_inhibit {
                    body.push_str("inhibit = true\n");
                }
            }
        }
        if shared {
            if let Some(c) = &checks[0] {
                if let Some((kw, pos)) = &kept[0].b.check_src {
                    let _ = writeln!(
                        body,
                        "\n# {kw} of every real_server (the first at {})",
                        pos.line_ref(files)
                    );
                }
                body.push_str("[service.check]\n");
                write_check(body, c);
            }
        }
        out.services += 1;
        let svc_v6 = match (svc.fwmark, svc.addr) {
            (Some((_, v6)), _) => v6,
            (_, Some((ip, _))) => ip.is_ipv6(),
            _ => false,
        };
        let mut placed: Vec<(IpAddr, u16)> = Vec::new();
        for (k, check) in kept.iter().zip(&checks) {
            let b = &k.b;
            if k.method != Method::Tun && b.addr.is_ipv6() != svc_v6 {
                report.unsupported(
                    b.pos.clone(),
                    &b.text,
                    "address family differs from the service's (only tunnels may differ): left out",
                );
                continue;
            }
            let port = match svc.addr {
                Some((_, sport)) => {
                    if k.method == Method::Nat || k.method == Method::FullNat {
                        if b.port == 0 && !matches!(key, VsKey::Group(_)) {
                            sport
                        } else {
                            b.port
                        }
                    } else {
                        if b.port != 0 && b.port != sport {
                            report.warning(
                                b.pos.clone(),
                                &b.text,
                                &format!(
                                    "port {} differs from the service's: {sport} used (DR/TUN cannot change the port; keepalived resets it too)",
                                    b.port
                                ),
                            );
                        }
                        sport
                    }
                }
                None => {
                    if k.method == Method::Nat || k.method == Method::FullNat {
                        b.port
                    } else {
                        if b.port != 0 {
                            report.warning(
                                b.pos.clone(),
                                &b.text,
                                "port of a non-NAT backend of a fwmark service: cleared (as keepalived does)",
                            );
                        }
                        0
                    }
                }
            };
            if placed.contains(&(b.addr, port)) {
                report.warning(
                    b.pos.clone(),
                    &b.text,
                    &format!("the same backend as another at port {port}: left out"),
                );
                continue;
            }
            placed.push((b.addr, port));
            let _ = writeln!(body, "\n# {} ({})", b.text, b.pos.line_ref(files));
            body.push_str("[[service.backend]]\n");
            let weight = b.weight.unwrap_or(default_weight);
            let _ = writeln!(
                body,
                "address = \"{}\"\nport = {port}\nweight = {weight}\nmethod = \"{}\"",
                b.addr,
                k.method.toml()
            );
            if b.u_threshold != 0 {
                let _ = writeln!(body, "u_threshold = {}", b.u_threshold);
            }
            if b.l_threshold != 0 {
                if b.u_threshold != 0 && b.l_threshold > b.u_threshold {
                    report.unsupported(
                        b.pos.clone(),
                        &format!("lthreshold {}", b.l_threshold),
                        "above uthreshold: xvs refuses it",
                    );
                } else {
                    let _ = writeln!(body, "l_threshold = {}", b.l_threshold);
                }
            }
            if !shared {
                if let Some(c) = check {
                    if let Some((kw, pos)) = &b.check_src {
                        let _ = writeln!(body, "# {kw} ({})", pos.line_ref(files));
                    }
                    body.push_str("[service.backend.check]\n");
                    write_check(body, c);
                }
            }
            out.backends += 1;
            if check.is_some() {
                out.checks += 1;
            }
        }
    }
}

fn write_check(body: &mut String, c: &[(String, String)]) {
    for (k, v) in c {
        let _ = writeln!(body, "{k} = {v}");
    }
}

/// The check as TOML lines, with the inherited options.
fn finish_check(draft: &[(String, String)], inh: &Inherit) -> Vec<(String, String)> {
    // The draft is stored as lines with special markers for what inheritance decides.
    let mut own = Inherit::default();
    let mut default_retry = 1u64;
    let mut default_dbr: Option<f64> = Some(1.0);
    let mut misc: Option<Option<f64>> = None;
    let mut wants_host = false;
    let mut url_host: Option<String> = None;
    let mut lines = Vec::new();
    for (k, v) in draft {
        match k.as_str() {
            "@delay_loop" => own.delay_loop = v.parse().ok(),
            "@connect_timeout" => own.connect_timeout = v.parse().ok(),
            "@retry" => own.retry = v.parse().ok(),
            "@delay_before_retry" => own.delay_before_retry = v.parse().ok(),
            "@warmup" => own.warmup = v.parse().ok(),
            "@alpha" => own.alpha = v.parse().ok(),
            "@virtualhost" => own.virtualhost = Some(v.clone()),
            "@url_virtualhost" => url_host = Some(v.clone()),
            "@default_retry" => default_retry = v.parse().unwrap_or(1),
            "@default_dbr" => default_dbr = v.parse().ok(),
            "@misc_timeout" => misc = Some(v.parse().ok()),
            "@wants_host" => wants_host = true,
            _ => lines.push((k.clone(), v.clone())),
        }
    }
    let eff = own.over(inh);
    let delay_loop = eff.delay_loop.unwrap_or(60.0);
    let timeout = match misc {
        Some(t) => t.unwrap_or(delay_loop),
        None => eff.connect_timeout.unwrap_or(5.0),
    };
    let retry = eff.retry.unwrap_or(default_retry);
    let dbr = eff.delay_before_retry.or(default_dbr).unwrap_or(delay_loop);
    let mut out = Vec::new();
    let mut rest = lines.into_iter();
    if let Some(first) = rest.next() {
        out.push(first); // type
    }
    out.push(("interval_ms".into(), millis(delay_loop).max(10).to_string()));
    out.push(("timeout_ms".into(), millis(timeout).max(1).to_string()));
    out.push(("rise".into(), "1".into()));
    out.push((
        "fall".into(),
        (retry.saturating_add(1)).min(1000).to_string(),
    ));
    if retry > 0 {
        out.push(("retry_interval_ms".into(), millis(dbr).max(10).to_string()));
    }
    if let Some(w) = eff.warmup.filter(|&w| w > 0.0) {
        out.push(("warmup_ms".into(), millis(w).to_string()));
    }
    if eff.alpha == Some(true) {
        out.push(("initially_down".into(), "true".into()));
    } else if retry > 0 {
        // Without alpha keepalived takes a server failing its very first check down at once.
        out.push(("first_probe_decides".into(), "true".into()));
    }
    if eff.inhibit == Some(true) {
        out.push(("quiescent".into(), "true".into()));
    }
    if wants_host {
        // The url's virtualhost, else the checker's, the real server's, the virtual server's.
        if let Some(h) = url_host.as_ref().or(eff.virtualhost.as_ref()) {
            out.push(("host".into(), toml_str(h)));
        }
    }
    out.extend(rest);
    out
}

fn real_server(s: &Stmt, report: &mut Report) -> Option<Backend> {
    let Some(addr) = s.arg(0).and_then(|a| a.parse::<IpAddr>().ok()) else {
        report.unsupported(
            s.pos.clone(),
            &s.text(),
            "not an address (keepalived skips it too)",
        );
        return None;
    };
    let port = match s.arg(1) {
        None => 0,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                report.unsupported(s.pos.clone(), &s.text(), "not a port");
                return None;
            }
        },
    };
    let mut b = Backend {
        pos: s.pos.clone(),
        text: s.text(),
        addr,
        port,
        weight: None,
        method: None,
        bad_method: false,
        u_threshold: 0,
        l_threshold: 0,
        inherit: Inherit::default(),
        check: None,
        check_src: None,
    };
    let mut checks: Vec<(&Stmt, Vec<(String, String)>)> = Vec::new();
    for c in s.children() {
        if common_option(c, &mut b.inherit, report) {
            continue;
        }
        let kw = c.keyword();
        match kw {
            "weight" => {
                if let Some(w) = weight(c, report) {
                    b.weight = Some(w);
                }
            }
            "lvs_method" => match parse_method(c, report) {
                Some(m) => b.method = Some(m),
                None => b.bad_method = true,
            },
            "uthreshold" => {
                if let Some(v) = number(c, report, u32::MAX as u64) {
                    b.u_threshold = v as u32;
                }
            }
            "lthreshold" => {
                if let Some(v) = number(c, report, u32::MAX as u64) {
                    b.l_threshold = v as u32;
                }
            }
            "notify_up" | "notify_down" => report.unsupported(
                c.pos.clone(),
                &c.text(),
                "xvs runs no notification scripts (it logs every health transition)",
            ),
            "smtp_alert" => report.unsupported(c.pos.clone(), &c.text(), "xvs sends no e-mail"),
            "snmp_name" => report.unsupported(c.pos.clone(), &c.text(), "xvs has no SNMP agent"),
            "HTTP_GET" | "SSL_GET" | "TCP_CHECK" | "UDP_CHECK" | "MISC_CHECK" | "DNS_CHECK" => {
                // What a checker's lines say is kept only for the checker translated (or for one
                // that cannot be): a later one is reported as a whole.
                let mut said = Report::default();
                match checker(c, &mut said) {
                    Some(draft) if checks.is_empty() => {
                        report.merge(said);
                        checks.push((c, draft));
                    }
                    Some(draft) => checks.push((c, draft)),
                    None => report.merge(said),
                }
            }
            "SMTP_CHECK" | "PING_CHECK" | "BFD_CHECK" | "FILE_CHECK" => report.unsupported(
                c.pos.clone(),
                kw,
                "xvs has no such check (tcp, http, https, udp and exec): the backend is not checked by it",
            ),
            _ => report.unsupported(c.pos.clone(), &c.text(), "unknown real_server keyword"),
        }
    }
    if b.bad_method && b.method.is_none() {
        report.unsupported(
            s.pos.clone(),
            &s.text(),
            "left out: its forwarding method has no xvs equivalent",
        );
    }
    let mut checks = checks.into_iter();
    if let Some((c, draft)) = checks.next() {
        b.check = Some(draft);
        b.check_src = Some((c.keyword().to_string(), c.pos.clone()));
    }
    for (c, _) in checks {
        report.unsupported(
            c.pos.clone(),
            c.keyword(),
            "xvs runs one check per backend (keepalived needs every checker up): only the first is translated",
        );
    }
    Some(b)
}

/// Read one checker block into draft lines (see `finish_check`); `None` if it has no xvs form.
fn checker(c: &Stmt, report: &mut Report) -> Option<Vec<(String, String)>> {
    let kw = c.keyword();
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut own = Inherit::default();
    let mut connect_ip: Option<String> = None;
    let mut connect_port: Option<u16> = None;
    let mut specific: Vec<(String, String)> = Vec::new();
    let mut ok = true;
    let mut urls = 0;
    let mut bad_url = false;
    let mut misc_timeout: Option<Option<f64>> = None;
    let mut udp_reply: Option<Option<String>> = None;
    let mut udp_payload: Option<String> = None;
    let mut udp_reply_pos = c.pos.clone();
    let mut udp_payload_pos = c.pos.clone();
    let mut dns_type = "SOA".to_string();
    let mut dns_name = String::new();
    let mut misc_path: Option<String> = None;
    let mut misc_dynamic = false;
    let mut misc_path_pos = c.pos.clone();
    let (type_, default_retry, default_dbr): (&str, u64, Option<f64>) = match kw {
        "HTTP_GET" => ("http", 1, Some(3.0)),
        "SSL_GET" => ("https", 1, Some(3.0)),
        "TCP_CHECK" => ("tcp", 1, Some(1.0)),
        "UDP_CHECK" => ("udp", 1, Some(1.0)),
        "MISC_CHECK" => {
            misc_timeout = Some(None);
            ("exec", 0, Some(1.0))
        }
        _ => ("udp", 3, None), // DNS_CHECK
    };
    for o in c.children() {
        if o.keyword() == "inhibit_on_failure" {
            report.unsupported(
                o.pos.clone(),
                &o.text(),
                "not a checker option (keepalived takes it in real_server or virtual_server)",
            );
            continue;
        }
        if common_option(o, &mut own, report) {
            continue;
        }
        let okw = o.keyword();
        match (kw, okw) {
            (_, "connect_ip") => match o.arg(0).and_then(|a| a.parse::<IpAddr>().ok()) {
                Some(a) => connect_ip = Some(a.to_string()),
                None => report.unsupported(o.pos.clone(), &o.text(), "not an address"),
            },
            (_, "connect_port") => match o.arg(0).and_then(|p| p.parse::<u16>().ok()) {
                Some(p) if p > 0 => connect_port = Some(p),
                _ => report.unsupported(o.pos.clone(), &o.text(), "not a port"),
            },
            (_, "bindto" | "bind_port" | "bind_if") => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "xvs's checks use the host's default source address and port",
            ),
            (_, "fwmark") => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "xvs does not mark its check packets",
            ),
            (_, "log_all_failures") => report.warning(
                o.pos.clone(),
                &o.text(),
                "xvs logs transitions; every probe result is in `xvs ctl status`",
            ),
            ("HTTP_GET" | "SSL_GET", "url") => {
                urls += 1;
                if urls > 1 {
                    report.unsupported(
                        o.pos.clone(),
                        "url",
                        "xvs's http check fetches one URL: only the first is translated",
                    );
                    continue;
                }
                if !url(o, &mut specific, &mut bad_url, report) {
                    urls -= 1;
                }
            }
            ("HTTP_GET" | "SSL_GET", "http_protocol") => match o.arg(0) {
                Some("1.0" | "1.0C") => {}
                _ => report.warning(
                    o.pos.clone(),
                    &o.text(),
                    "xvs asks in HTTP/1.0 with Connection: close",
                ),
            },
            ("HTTP_GET" | "SSL_GET", "fast_recovery") => report.warning(
                o.pos.clone(),
                &o.text(),
                "no effect with one URL (xvs fetches one)",
            ),
            ("SSL_GET", "enable_sni") => report.warning(
                o.pos.clone(),
                "enable_sni",
                "xvs sends the virtualhost as SNI when one is set, else none",
            ),
            ("SSL_GET", "sni_name" | "tls_compliant") => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "not configurable in xvs's https check",
            ),
            ("MISC_CHECK", "misc_path") => {
                misc_path = o.arg(0).map(str::to_string);
                misc_path_pos = o.pos.clone();
            }
            ("MISC_CHECK", "misc_timeout") => {
                if let Some(t) = number(o, report, 86400) {
                    misc_timeout = Some(if t == 0 { None } else { Some(t as f64) });
                }
            }
            ("MISC_CHECK", "misc_dynamic") => {
                misc_dynamic = boolean(o, report).unwrap_or(misc_dynamic)
            }
            ("MISC_CHECK", "user") => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "xvs runs the command as its own user",
            ),
            ("UDP_CHECK", "payload") => {
                udp_payload = Some(o.args().join(" "));
                udp_payload_pos = o.pos.clone();
            }
            ("UDP_CHECK", "require_reply") => {
                udp_reply_pos = o.pos.clone();
                udp_reply = Some(if o.args().is_empty() {
                    None
                } else {
                    Some(o.args().join(" "))
                })
            }
            ("UDP_CHECK", "min_reply_length" | "max_reply_length") => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "xvs's udp check does not bound the reply length",
            ),
            ("DNS_CHECK", "type") => match o.arg(0) {
                Some(t) if dns_qtype(t).is_some() => dns_type = t.to_string(),
                _ => report.unsupported(o.pos.clone(), &o.text(), "unknown query type"),
            },
            ("DNS_CHECK", "name") => dns_name = o.arg(0).unwrap_or("").to_string(),
            _ => report.unsupported(o.pos.clone(), &o.text(), &format!("unknown {kw} keyword")),
        }
    }

    lines.push(("type".into(), toml_str(type_)));
    match kw {
        "HTTP_GET" | "SSL_GET" => {
            if urls == 0 && bad_url {
                return None;
            }
            if urls == 0 {
                report.warning(
                    c.pos.clone(),
                    kw,
                    "no usable url: the checker is ignored (as keepalived does)",
                );
                return None;
            }
            lines.push(("@wants_host".into(), String::new()));
            lines.extend(specific);
            if kw == "SSL_GET" {
                lines.push((
                    "insecure".into(),
                    "true  # keepalived's SSL_GET verifies no certificate".into(),
                ));
            }
        }
        "UDP_CHECK" => {
            match &udp_payload {
                Some(p) => match keepalived_hex(p) {
                    Some(h) => lines.push(("send_hex".into(), toml_str(&h))),
                    None => {
                        report.unsupported(udp_payload_pos, "payload", "not a hex string");
                        ok = false;
                    }
                },
                None => report.warning(
                    c.pos.clone(),
                    kw,
                    "no payload: keepalived sends random bytes, xvs an empty datagram",
                ),
            }
            match &udp_reply {
                // keepalived counts silence as success, only an ICMP error fails.
                None => lines.push(("require_reply".into(), "false".into())),
                Some(None) => {}
                Some(Some(h)) => {
                    if h.contains(['x', 'X']) {
                        report.unsupported(
                            udp_reply_pos,
                            &format!("require_reply {h}"),
                            "wildcard nibbles: xvs compares whole bytes",
                        );
                        ok = false;
                    } else {
                        match keepalived_hex(h) {
                            Some(hex) => {
                                lines.push(("expect_hex".into(), toml_str(&hex)));
                                report.warning(
                                    udp_reply_pos,
                                    &format!("require_reply {h}"),
                                    "xvs looks for the bytes anywhere in the reply; keepalived compares the reply's start",
                                );
                            }
                            None => {
                                report.unsupported(
                                    udp_reply_pos,
                                    "require_reply",
                                    "not a hex string",
                                );
                                ok = false;
                            }
                        }
                    }
                }
            }
        }
        "MISC_CHECK" => {
            let Some(path) = misc_path else {
                report.unsupported(
                    c.pos.clone(),
                    kw,
                    "no misc_path (keepalived ignores it too)",
                );
                return None;
            };
            let words = split_script(&path);
            let Some((cmd, args)) = words.split_first() else {
                report.unsupported(c.pos.clone(), kw, "empty misc_path");
                return None;
            };
            lines.push(("command".into(), toml_str(cmd)));
            if !args.is_empty() {
                let list: Vec<String> = args.iter().map(|a| toml_str(a)).collect();
                lines.push(("args".into(), format!("[{}]", list.join(", "))));
            }
            if misc_dynamic {
                lines.push(("dynamic".into(), "true".into()));
            }
            report.warning(
                misc_path_pos,
                &format!("misc_path {path}"),
                "xvs appends the backend's address and port as two more arguments",
            );
        }
        "DNS_CHECK" => {
            let Some(query) = dns_query(&dns_name, &dns_type) else {
                report.unsupported(c.pos.clone(), kw, "the name is not a DNS name");
                return None;
            };
            lines.push(("send_hex".into(), toml_str(&query)));
            report.unsupported(
                c.pos.clone(),
                kw,
                "translated as a udp check sending the same query: any reply counts, the reply's rcode is not checked",
            );
        }
        _ => {}
    }
    if !ok {
        return None;
    }
    if let Some(ip) = connect_ip {
        lines.push(("connect_ip".into(), toml_str(&ip)));
    }
    if let Some(p) = connect_port {
        lines.push(("connect_port".into(), p.to_string()));
    }
    // Markers for finish_check.
    let mut draft = lines;
    let mut mark = |k: &str, v: String| draft.push((k.to_string(), v));
    if let Some(v) = own.delay_loop {
        mark("@delay_loop", v.to_string());
    }
    if let Some(v) = own.connect_timeout {
        mark("@connect_timeout", v.to_string());
    }
    if let Some(v) = own.retry {
        mark("@retry", v.to_string());
    }
    if let Some(v) = own.delay_before_retry {
        mark("@delay_before_retry", v.to_string());
    }
    if let Some(v) = own.warmup {
        mark("@warmup", v.to_string());
    }
    if let Some(v) = own.alpha {
        mark("@alpha", v.to_string());
    }
    if let Some(v) = own.virtualhost {
        mark("@virtualhost", v);
    }
    mark("@default_retry", default_retry.to_string());
    match default_dbr {
        Some(d) => mark("@default_dbr", d.to_string()),
        None => mark("@default_dbr", "none".into()),
    }
    if let Some(t) = misc_timeout {
        mark(
            "@misc_timeout",
            t.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
        );
    }
    Some(draft)
}

/// Read a `url { … }` block into `lines`; false when the url is unusable.
fn url(u: &Stmt, lines: &mut Vec<(String, String)>, bad: &mut bool, report: &mut Report) -> bool {
    let mut path = None;
    let mut status: Vec<String> = Vec::new();
    let mut digest = None;
    let mut host = None;
    for o in u.children() {
        match o.keyword() {
            "path" => path = o.arg(0).map(str::to_string),
            "digest" => match o.arg(0) {
                Some(d) if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    digest = Some(d.to_ascii_lowercase())
                }
                _ => report.unsupported(
                    o.pos.clone(),
                    &o.text(),
                    "not an MD5 digest (32 hex digits; keepalived ignores it too)",
                ),
            },
            "status_code" => {
                for w in o.args() {
                    let (a, b) = w.split_once('-').unwrap_or((w, w));
                    match (a.parse::<u16>(), b.parse::<u16>()) {
                        (Ok(a), Ok(b)) if (100..=599).contains(&a) && (a..=599).contains(&b) => {
                            if a == b {
                                status.push(a.to_string());
                            } else {
                                status.push(toml_str(&format!("{a}-{b}")));
                            }
                        }
                        _ => report.unsupported(
                            o.pos.clone(),
                            &format!("status_code {w}"),
                            "not a status code or range (keepalived ignores it too)",
                        ),
                    }
                }
            }
            "virtualhost" => match o.arg(0) {
                Some(h) if valid_host(h) => host = Some(h.to_string()),
                _ => report.unsupported(
                    o.pos.clone(),
                    &o.text(),
                    "needs one host name without spaces",
                ),
            },
            "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset"
            | "regex_max_offset" => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "xvs's http check matches the status and the digest, not a regular expression",
            ),
            "tls_compliant" => report.unsupported(
                o.pos.clone(),
                &o.text(),
                "not configurable in xvs's https check",
            ),
            _ => report.unsupported(o.pos.clone(), &o.text(), "unknown url keyword"),
        }
    }
    let Some(path) = path else {
        report.warning(
            u.pos.clone(),
            "url",
            "no path: ignored (as keepalived does)",
        );
        return false;
    };
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        report.unsupported(
            u.pos.clone(),
            &format!("url path {path:?}"),
            "xvs puts the path as is in the request line: it must start with '/' and hold no \
             spaces (write %20): the url is not translated",
        );
        *bad = true;
        return false;
    }
    lines.push(("path".into(), toml_str(&path)));
    if status.is_empty() {
        status.push(toml_str("200-299"));
    }
    if status.len() == 1 && !status[0].starts_with('"') {
        lines.push(("status".into(), status[0].clone()));
    } else {
        lines.push(("status".into(), format!("[{}]", status.join(", "))));
    }
    if let Some(d) = digest {
        lines.push(("digest".into(), toml_str(&d)));
    }
    if let Some(h) = host {
        lines.push(("@url_virtualhost".into(), h));
    }
    true
}

/// keepalived's free-form hex (`read_hex_str`) as plain hex: groups separated by spaces, pairs of
/// digits, a lone last digit of a group is one byte.
pub fn keepalived_hex(s: &str) -> Option<String> {
    let mut out = String::new();
    for group in s.split_whitespace() {
        let digits: Vec<char> = group.chars().collect();
        for pair in digits.chunks(2) {
            for d in pair {
                if !d.is_ascii_hexdigit() {
                    return None;
                }
            }
            if pair.len() == 1 {
                out.push('0');
            }
            for d in pair {
                out.push(d.to_ascii_lowercase());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `quorum_up SCRIPT [USER [GROUP]]`: the script as a `/bin/sh -c` command (its words, as
/// keepalived splits them, each quoted for the shell where needed).
fn script_line(s: &Stmt, report: &mut Report) -> Option<String> {
    let Some(script) = s.arg(0) else {
        report.unsupported(s.pos.clone(), &s.text(), "needs a script");
        return None;
    };
    let words = split_script(script);
    if words.is_empty() {
        report.unsupported(s.pos.clone(), &s.text(), "empty script");
        return None;
    }
    if s.args().len() > 1 {
        report.warning(
            s.pos.clone(),
            &s.text(),
            "xvs runs the script as its own user (the user and group are not applied)",
        );
    }
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect();
    Some(quoted.join(" "))
}

/// Split a script line as keepalived does: spaces separate words, `'…'` and `"…"` group.
pub fn split_script(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn dns_qtype(t: &str) -> Option<u16> {
    Some(match t {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}

/// The query keepalived's DNS_CHECK sends (`check_dns.c` `dns_make_query`): one question,
/// recursion desired, class IN; xvs's copy has the fixed id 0x4b41.
pub fn dns_query(name: &str, qtype: &str) -> Option<String> {
    let t = dns_qtype(qtype)?;
    let mut q: Vec<u8> = vec![0x4b, 0x41, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&t.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    Some(q.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_every_form() {
        let r = parse_range("198.18.0.1-10").unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r[9], "198.18.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(parse_range("198.18.0.250-198.18.1.2").unwrap().len(), 9);
        assert_eq!(parse_range("198.18.2.8/29").unwrap().len(), 8);
        assert!(parse_range("198.18.2.9/29").is_err());
        assert_eq!(parse_range("2001:2::1-a").unwrap().len(), 10);
        assert!(parse_range("198.18.0.0/8").is_err(), "too many");
        assert!(parse_range("198.18.0.9-3").is_err());
    }

    #[test]
    fn hex_as_keepalived_reads_it() {
        // keepalived.conf(5): "Ab12f 3 456 546443123" is AB 12 0F 03 45 06 54 64 43 12 03.
        assert_eq!(
            keepalived_hex("Ab12f 3 456 546443123").unwrap(),
            "ab120f0345065464431203"
        );
    }

    #[test]
    fn scripts_split_on_unquoted_spaces() {
        assert_eq!(
            split_script("/bin/check 'a b' c"),
            vec!["/bin/check", "a b", "c"]
        );
    }

    #[test]
    fn dns_query_bytes() {
        assert_eq!(
            dns_query("example.com", "A").unwrap(),
            "4b4101000001000000000000076578616d706c6503636f6d0000010001"
        );
        assert_eq!(
            dns_query("", "SOA").unwrap(),
            "4b41010000010000000000000000060001"
        );
    }
}
