//! ipvsadm's output, byte for byte (`ipvsadm.c` 1.29–1.31: `list_all`, `print_title`,
//! `print_service_entry`, `print_largenum`, `list_conn`, `list_timeout`; ../shared/IPVS.md §7),
//! plus `--json` for tools.
//!
//! Addresses are always numeric (xvs resolves no names, so `-L` prints what `-Ln` prints).
//! Rows keep ipvsadm's printf padding, trailing spaces included. Sorting reproduces
//! `ipvs_cmp_services` / `ipvs_cmp_dests` (C `int` differences of host-order values, which wrap
//! for addresses more than 2^31 apart) run through glibc's `qsort`, a top-down merge sort.
//! xvs additions: the FullNAT method (`FullNat` in listings, `--fullnat` in rules) and, in `-S`,
//! `-x`/`-y` when a threshold is set (ipvsadm does not save thresholds; `-R` reads them back).
//! The layouts were compared with ipvsadm 1.31 on Linux 6.1 in the QEMU guest of
//! scripts/ipvs-guest (tests/ctl_ipvsadm_reference.rs holds its output verbatim).

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{json, Value};
use xvs_forwarding::conn::ConnListing;
use xvs_forwarding::service::{Backend, Persistence, Service, ServiceKey, PROTO_TCP, PROTO_UDP};
use xvs_forwarding::Method;

use super::model::{BackendListing, Listing, Rates, ServiceListing, Stats};
use super::state::{addr_port, proto_name, Change, DesiredState, SourceLimit};
use crate::sync::DaemonConfig;

/// Which `-L` layout (ipvsadm's `FMT_*` bits; the first set one of stats, rate, thresholds,
/// persistent_conn wins, as in ipvsadm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListFormat {
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub nosort: bool,
    pub exact: bool,
    /// `--tun-info`: a TunnelInfo column after Forward (`ipip` for tunnel backends, else `n/a`).
    pub tun_info: bool,
    /// `--weights` (xvs): after Weight (the effective weight), the configured weight, the
    /// health check's smoothed response time and the reported load.
    pub weights: bool,
}

/// `IP Virtual Server version 1.2.1 (size=4096)`.
pub fn banner(table_size: u32) -> String {
    format!("IP Virtual Server version 1.2.1 (size={table_size})\n")
}

/// `ipvsadm -L[n]`: banner, titles, every service.
pub fn list_all(listing: &Listing, f: &ListFormat) -> String {
    let mut out = banner(listing.table_size);
    out.push_str(&title(f));
    for s in sorted_services(&listing.services, f.nosort) {
        service_entry(&mut out, s, f);
    }
    out
}

/// `ipvsadm -L[n] -t|-u|-f service`: titles and that service, no banner.
pub fn list_service(s: &ServiceListing, f: &ListFormat) -> String {
    let mut out = title(f);
    service_entry(&mut out, s, f);
    out
}

fn title(f: &ListFormat) -> String {
    let t = if f.stats {
        format!(
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if f.rate {
        format!(
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if f.thresholds {
        format!(
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if f.persistent_conn {
        format!(
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if f.tun_info {
        return "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n".into();
    } else if f.weights {
        return "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight CfgWeight Response   Load\n".into();
    } else {
        return "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n".into();
    };
    t + "  -> RemoteAddress:Port\n"
}

/// The service column: `TCP  10.0.0.1:80` (IPv4 cut to 33 characters), `FWM  7`, `FWM  7 IPv6`.
fn service_column(key: &ServiceKey) -> String {
    match *key {
        ServiceKey::Addr { proto, addr, port } => {
            let mut s = format!("{:<4} {}", proto_name(proto), addr_port(addr, port));
            if addr.is_ipv4() {
                s.truncate(33);
            }
            s
        }
        ServiceKey::Fwmark { mark, ipv6 } => {
            format!("FWM  {mark}{}", if ipv6 { " IPv6" } else { "" })
        }
    }
}

fn backend_column(addr: IpAddr, port: u16) -> String {
    let mut s = addr_port(addr, port);
    if addr.is_ipv4() {
        s.truncate(28);
    }
    s
}

fn is_ipv6(key: &ServiceKey) -> bool {
    match *key {
        ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
        ServiceKey::Fwmark { ipv6, .. } => ipv6,
    }
}

/// An IPv4 netmask from a prefix length (`255.255.255.0`).
fn v4_mask(len: u8) -> String {
    let len = u32::from(len.min(32));
    let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    std::net::Ipv4Addr::from(m).to_string()
}

/// ` mask …` / ` -M …` text for a persistence netmask, empty for a host mask.
fn mask_text(key: &ServiceKey, p: &Persistence) -> Option<String> {
    if is_ipv6(key) {
        (p.prefix_len != 128).then(|| p.prefix_len.to_string())
    } else {
        (p.prefix_len != 32).then(|| v4_mask(p.prefix_len))
    }
}

/// ipvsadm's method names (`fwd_name`), plus xvs's FullNAT.
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Nat => "Masq",
        Method::Dr => "Route",
        Method::Tunnel => "Tunnel",
        Method::FullNat => "FullNat",
    }
}

/// ipvsadm's method switches (`fwd_switch`), plus xvs's `--fullnat`.
pub fn method_switch(m: Method) -> &'static str {
    match m {
        Method::Nat => "-m",
        Method::Dr => "-g",
        Method::Tunnel => "-i",
        Method::FullNat => "--fullnat",
    }
}

fn service_entry(out: &mut String, s: &ServiceListing, f: &ListFormat) {
    let name = service_column(&s.key);
    if f.stats {
        let _ = write!(out, "{name:<33}");
        stats_cols(out, &s.stats, f.exact);
    } else if f.rate {
        let _ = write!(out, "{name:<33}");
        rate_cols(out, &s.rates, f.exact);
    } else {
        let _ = write!(out, "{name} {}", s.scheduler);
        out.push_str(&s.sched_flags.list_suffix(&s.scheduler));
        if let Some(p) = &s.persistence {
            let _ = write!(out, " persistent {}", p.timeout);
            if let Some(m) = mask_text(&s.key, p) {
                let _ = write!(out, " mask {m}");
            }
        }
        if s.one_packet {
            out.push_str(" ops");
        }
        if s.synproxy {
            out.push_str(" synproxy");
        }
        if s.conn_rate != 0 {
            let _ = write!(out, " conn_rate {}/s", s.conn_rate);
        }
    }
    out.push('\n');
    for b in sorted_backends(&s.backends, f.nosort) {
        let d = backend_column(b.addr, b.port);
        if f.stats {
            let _ = write!(out, "  -> {d:<28}");
            stats_cols(out, &b.stats, f.exact);
            out.push('\n');
        } else if f.rate {
            let _ = write!(
                out,
                "  -> {d:<28} {:>8} {:>8} {:>8}",
                b.rates.cps, b.rates.in_pps, b.rates.out_pps
            );
            largenum(out, b.rates.in_bps, f.exact);
            largenum(out, b.rates.out_bps, f.exact);
            out.push('\n');
        } else if f.thresholds {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<10} {:<10} {:<10} {:<10}",
                b.u_threshold, b.l_threshold, b.active, b.inactive
            );
        } else if f.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<9} {:<11} {:<10} {:<10}",
                b.weight, b.persist, b.active, b.inactive
            );
        } else if f.tun_info {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
                method_name(b.method),
                if b.method == Method::Tunnel {
                    "ipip"
                } else {
                    "n/a"
                },
                b.weight,
                b.active,
                b.inactive
            );
        } else if f.weights {
            let response = b.response.map_or_else(
                || "-".to_string(),
                |r| format!("{:.1}ms", r.as_secs_f64() * 1e3),
            );
            let load = b.load.map_or_else(|| "-".to_string(), |l| format!("{l}%"));
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<7} {:<6} {:<9} {:<10} {load}",
                method_name(b.method),
                b.weight,
                b.configured_weight,
                response,
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<7} {:<6} {:<10} {:<10}",
                method_name(b.method),
                b.weight,
                b.active,
                b.inactive
            );
        }
    }
}

fn stats_cols(out: &mut String, s: &Stats, exact: bool) {
    for v in [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes] {
        largenum(out, v, exact);
    }
}

fn rate_cols(out: &mut String, r: &Rates, exact: bool) {
    for v in [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps] {
        largenum(out, v, exact);
    }
}

/// `print_largenum`: 9 columns, scaled to K/M/G/T above 10^8, or exact with `--exact`.
pub fn largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        let len = i.to_string().len();
        let w = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{i:>w$}");
    } else if i < 100_000_000 {
        let _ = write!(out, "{i:>9}");
    } else if i < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", i / 1_000);
    } else if i < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", i / 1_000_000);
    } else if i < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", i / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", i / 1_000_000_000_000);
    }
}

/// `ipvsadm -Lnc`.
pub fn connections(conns: &[ConnListing]) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} destination",
        "state", "source", "virtual"
    );
    for c in conns {
        let _ = writeln!(out, "{c}");
    }
    out
}

/// `ipvsadm -L --timeout`.
pub fn timeouts(st: &DesiredState) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        st.timeouts.tcp, st.timeouts.tcpfin, st.timeouts.udp
    )
}

/// The service in rule form: `-t 10.0.0.1:80`, `-u [2001:db8::1]:53`, `-f 7`, `-f 7 -6`.
pub fn service_args(key: &ServiceKey) -> String {
    match *key {
        ServiceKey::Addr { proto, addr, port } => {
            let opt = match proto {
                PROTO_TCP => "-t",
                PROTO_UDP => "-u",
                132 => "--sctp-service",
                _ => "--xxx-service",
            };
            format!("{opt} {}", addr_port(addr, port))
        }
        ServiceKey::Fwmark { mark, ipv6 } => {
            format!("-f {mark}{}", if ipv6 { " -6" } else { "" })
        }
    }
}

/// `-A -t 10.0.0.1:80 -s wlc [-p t [-M m]] [-o] [-b flags]`.
pub fn service_rule(s: &Service) -> String {
    let mut out = format!("-A {} -s {}", service_args(&s.key), s.scheduler);
    if let Some(p) = &s.persistence {
        let _ = write!(out, " -p {}", p.timeout);
        if let Some(m) = mask_text(&s.key, p) {
            let _ = write!(out, " -M {m}");
        }
    }
    if s.one_packet {
        out.push_str(" -o");
    }
    if s.synproxy {
        out.push_str(" -j");
    }
    out.push_str(&s.sched_flags.save_args(&s.scheduler));
    if s.conn_rate != 0 {
        let _ = write!(out, " --conn-rate {}", s.conn_rate);
    }
    out
}

/// `--source-rate RATE/LEN4/LEN6` (xvs).
pub fn source_rate_rule(l: &SourceLimit) -> String {
    format!("--source-rate {}/{}/{}", l.rate, l.prefix_v4, l.prefix_v6)
}

/// `-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m -w 1`; tunnel backends get ipvsadm 1.31's
/// `--tun-type ipip`; `-x`/`-y` when set (xvs: ipvsadm does not save thresholds).
/// A change between desired states as the ipvsadm rule that makes it.
pub fn change_rule(c: &Change) -> String {
    match c {
        Change::DeleteService(k) => format!("-D {}", service_args(k)),
        Change::AddService(s) => service_rule(s),
        Change::EditService(s) => service_rule(s).replacen("-A", "-E", 1),
        Change::DeleteBackend(k, addr, port) => {
            format!("-d {} -r {}", service_args(k), addr_port(*addr, *port))
        }
        Change::AddBackend(k, b) => backend_rule(k, b),
        Change::EditBackend(k, b) => backend_rule(k, b).replacen("-a", "-e", 1),
        Change::SetTimeouts { tcp, tcpfin, udp } => format!("--set {tcp} {tcpfin} {udp}"),
        Change::SetSourceLimit(l) => source_rate_rule(l),
        Change::StopDaemon(role) => format!("--stop-daemon {}", role.as_str()),
        Change::StartDaemon(d) => daemon_rule(d),
    }
}

pub fn backend_rule(key: &ServiceKey, b: &Backend) -> String {
    let mut out = format!(
        "-a {} -r {} {} -w {}",
        service_args(key),
        addr_port(b.addr, b.port),
        method_switch(b.method),
        b.weight
    );
    if b.method == Method::Tunnel {
        out.push_str(" --tun-type ipip");
    }
    if b.u_threshold != 0 {
        let _ = write!(out, " -x {}", b.u_threshold);
    }
    if b.l_threshold != 0 {
        let _ = write!(out, " -y {}", b.l_threshold);
    }
    if b.conn_rate != 0 {
        let _ = write!(out, " --conn-rate {}", b.conn_rate);
    }
    out
}

/// `ipvsadm -S [-n]`: services and backends sorted as the listing sorts them.
pub fn save(st: &DesiredState) -> String {
    let mut out = String::new();
    let mut services: Vec<&Service> = st.services.iter().collect();
    merge_sort(&mut services, &|a, b| cmp_services(&a.key, &b.key));
    for s in services {
        out.push_str(&service_rule(s));
        out.push('\n');
        let mut bs: Vec<&Backend> = s.backends.iter().rev().collect();
        merge_sort(&mut bs, &|a, b| cmp_dests(a.addr, a.port, b.addr, b.port));
        for b in bs {
            out.push_str(&backend_rule(&s.key, b));
            out.push('\n');
        }
    }
    for d in &st.daemons {
        out.push_str(&daemon_rule(d));
        out.push('\n');
    }
    if st.source_limit != SourceLimit::default() {
        out.push_str(&source_rate_rule(&st.source_limit));
        out.push('\n');
    }
    out
}

/// `-L --limits` (xvs): each service's and backend's `conn_rate` with the new connections it
/// refused, then the per-source-prefix limit with the connections it refused.
pub fn limits(listing: &Listing, st: &DesiredState, nosort: bool) -> String {
    let rate = |r: u32| {
        if r == 0 {
            "-".to_string()
        } else {
            format!("{r}/s")
        }
    };
    let mut out = format!(
        "{:<33} {:>10} {:>10}\n  -> RemoteAddress:Port\n",
        "Prot LocalAddress:Port", "ConnRate", "Refused"
    );
    for s in sorted_services(&listing.services, nosort) {
        let _ = writeln!(
            out,
            "{:<33} {:>10} {:>10}",
            service_column(&s.key),
            rate(s.conn_rate),
            s.rate_limited
        );
        for b in sorted_backends(&s.backends, nosort) {
            let _ = writeln!(
                out,
                "  -> {:<28} {:>10} {:>10}",
                backend_column(b.addr, b.port),
                rate(b.conn_rate),
                b.rate_limited
            );
        }
    }
    let l = &st.source_limit;
    let _ = writeln!(
        out,
        "Source prefixes: {} per /{} (IPv4) and /{} (IPv6), refused {}",
        rate(l.rate),
        l.prefix_v4,
        l.prefix_v6,
        listing.source_rate_limited
    );
    out
}

/// `-L --limits --json` (xvs).
pub fn limits_json(listing: &Listing, st: &DesiredState, nosort: bool) -> String {
    let services: Vec<Value> = sorted_services(&listing.services, nosort)
        .into_iter()
        .map(|s| {
            let backends: Vec<Value> = sorted_backends(&s.backends, nosort)
                .into_iter()
                .map(|b| {
                    json!({
                        "address": b.addr.to_string(),
                        "port": b.port,
                        "conn_rate": b.conn_rate,
                        "refused": b.rate_limited,
                    })
                })
                .collect();
            json!({
                "service": service_column(&s.key),
                "conn_rate": s.conn_rate,
                "refused": s.rate_limited,
                "backends": backends,
            })
        })
        .collect();
    let l = &st.source_limit;
    let v = json!({
        "services": services,
        "source": {
            "rate": l.rate,
            "prefix_v4": l.prefix_v4,
            "prefix_v6": l.prefix_v6,
            "refused": listing.source_rate_limited,
        },
    });
    format!("{v:#}\n")
}

/// `--start-daemon …` for a daemon: the options that differ from ipvsadm's defaults.
pub fn daemon_rule(d: &DaemonConfig) -> String {
    let mut l = format!(
        "--start-daemon {} --mcast-interface {} --syncid {}",
        d.role.as_str(),
        d.interface,
        d.syncid
    );
    if let Some(m) = d.maxlen {
        let _ = write!(l, " --sync-maxlen {m}");
    }
    if d.group != IpAddr::V4(crate::sync::DEFAULT_GROUP) {
        let _ = write!(l, " --mcast-group {}", d.group);
    }
    if d.port != crate::sync::DEFAULT_PORT {
        let _ = write!(l, " --mcast-port {}", d.port);
    }
    if d.ttl != 1 {
        let _ = write!(l, " --mcast-ttl {}", d.ttl);
    }
    if !d.peers.is_empty() {
        let peers: Vec<String> = d
            .peers
            .iter()
            .map(|p| addr_port(p.ip(), p.port()))
            .collect();
        let _ = write!(l, " --sync-peers {}", peers.join(","));
    }
    l
}

/// `-L --daemon` (`print_daemon` of ipvsadm, with the values the kernel reports: the message
/// length in force, the group, port and TTL), one line per running daemon, master first.
pub fn daemons(list: &[(DaemonConfig, u16)]) -> String {
    let mut out = String::new();
    for (d, maxlen) in list {
        let _ = writeln!(
            out,
            "{} sync daemon (mcast={}, syncid={}, maxlen={maxlen}, group={}, port={}, ttl={})",
            d.role.as_str(),
            d.interface,
            d.syncid,
            d.group,
            d.port,
            d.ttl
        );
    }
    out
}

/// `-L --stateless` (xvs): each DNS zone (listen addresses, scheduler) with its names, their
/// queries and answers by rcode, and the records answered now; each HTTP redirect listener
/// (listen addresses, service, scheduler, status code, persistence) with its counters and its
/// backends' URLs, weights and redirects. Backends are indented with `->` as in `-L`.
pub fn stateless(st: &super::model::Stateless) -> String {
    let mut out = String::new();
    let joined = |v: &[std::net::SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    for d in &st.dns {
        let _ = writeln!(
            out,
            "DNS zone {} listen {} scheduler {} dropped {}",
            d.zone,
            joined(&d.listen),
            d.scheduler,
            d.dropped
        );
        for n in &d.names {
            let _ = writeln!(
                out,
                "  NAME {} queries {} answers {}{}",
                n.label(),
                n.queries,
                n.answers(" ").unwrap_or_else(|| "0".to_string()),
                if n.truncated > 0 {
                    format!(" truncated {}", n.truncated)
                } else {
                    String::new()
                }
            );
            for (a, w) in &n.backends {
                let _ = writeln!(out, "  -> {a:<40} weight {w}");
            }
        }
    }
    for r in &st.redirect {
        let _ = writeln!(
            out,
            "REDIRECT {} listen {} service {} scheduler {} code {}{}",
            r.name,
            joined(&r.listen),
            r.service,
            r.scheduler,
            r.code,
            if r.persistence > 0 {
                format!(
                    " persistent {} clients {}",
                    r.persistence, r.persistent_clients
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  requests {} redirects {} bad_requests {} unavailable {} connection_errors {} refused {}",
            r.requests, r.redirects, r.bad_requests, r.unavailable, r.connection_errors, r.refused
        );
        for b in &r.backends {
            let _ = writeln!(
                out,
                "  -> {:<40} weight {} redirects {}",
                b.url, b.weight, b.redirects
            );
        }
    }
    out
}

/// `-S --toml` (xvs): the state as the configuration file's `[timeouts]`, `[defense]` (the
/// source limit, when not the default) and `[[service]]` sections, services in creation order
/// and backends in add order, so that a reload of a file
/// holding them rebuilds the same lists (ipvsadm rules are sorted, which reorders backends).
pub fn save_toml(st: &DesiredState) -> String {
    let t = &st.timeouts;
    let mut out = format!(
        "[timeouts]\ntcp = {}\ntcpfin = {}\nudp = {}\n",
        t.tcp, t.tcpfin, t.udp
    );
    if st.source_limit != SourceLimit::default() {
        // Only the source limit of `[defense]`: merge it with the file's other defence keys.
        let l = &st.source_limit;
        let _ = write!(
            out,
            "\n[defense]\nsource_rate = {}\nsource_prefix_v4 = {}\nsource_prefix_v6 = {}\n",
            l.rate, l.prefix_v4, l.prefix_v6
        );
    }
    for s in &st.services {
        out.push_str("\n[[service]]\n");
        match s.key {
            ServiceKey::Addr { proto, addr, port } => {
                let p = if proto == PROTO_UDP { "udp" } else { "tcp" };
                let _ = write!(out, "protocol = \"{p}\"\nvip = \"{addr}\"\nport = {port}\n");
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                let _ = writeln!(out, "fwmark = {mark}");
                if ipv6 {
                    out.push_str("ipv6 = true\n");
                }
            }
        }
        let _ = writeln!(out, "scheduler = \"{}\"", s.scheduler);
        if !s.sched_flags.is_empty() {
            let _ = writeln!(out, "flags = \"{}\"", s.sched_flags.display(&s.scheduler));
        }
        if let Some(p) = &s.persistence {
            let _ = writeln!(
                out,
                "persistence = {}\nnetmask = {}",
                p.timeout, p.prefix_len
            );
        }
        if s.one_packet {
            out.push_str("one_packet = true\n");
        }
        if s.synproxy {
            out.push_str("synproxy = true\n");
        }
        if s.conn_rate != 0 {
            let _ = writeln!(out, "conn_rate = {}", s.conn_rate);
        }
        for b in &s.backends {
            let _ = write!(
                out,
                "[[service.backend]]\naddress = \"{}\"\nport = {}\nweight = {}\nmethod = \"{}\"\n",
                b.addr,
                b.port,
                b.weight,
                method_json(b.method)
            );
            if b.u_threshold != 0 {
                let _ = writeln!(out, "u_threshold = {}", b.u_threshold);
            }
            if b.l_threshold != 0 {
                let _ = writeln!(out, "l_threshold = {}", b.l_threshold);
            }
            if b.conn_rate != 0 {
                let _ = writeln!(out, "conn_rate = {}", b.conn_rate);
            }
        }
    }
    for d in &st.daemons {
        let _ = write!(
            out,
            "\n[sync.{}]\ninterface = \"{}\"\nsyncid = {}\ngroup = \"{}\"\nport = {}\nttl = {}\n",
            d.role.as_str(),
            d.interface,
            d.syncid,
            d.group,
            d.port,
            d.ttl
        );
        if let Some(m) = d.maxlen {
            let _ = writeln!(out, "maxlen = {m}");
        }
        if !d.peers.is_empty() {
            let peers: Vec<String> = d.peers.iter().map(|p| format!("\"{p}\"")).collect();
            let _ = writeln!(out, "peers = [{}]", peers.join(", "));
        }
    }
    out
}

/// The address as `union nf_inet_addr` words in host order (IPv4 in the first word).
fn words(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(a) => [u32::from(a), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// C `int r = a - b` on unsigned host-order values.
fn cdiff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// `ipvs_cmp_dests`.
fn cmp_dests(a: IpAddr, ap: u16, b: IpAddr, bp: u16) -> i32 {
    let (wa, wb) = (words(a), words(b));
    let mut r = 0;
    if a.is_ipv6() {
        for i in 0..4 {
            r = cdiff(wa[i], wb[i]);
            if r != 0 {
                break;
            }
        }
    } else {
        r = cdiff(wa[0], wb[0]);
    }
    if r != 0 {
        return r;
    }
    i32::from(ap) - i32::from(bp)
}

/// `ipvs_cmp_services`: fwmark, address family, protocol, address, port.
fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    let af = |k: &ServiceKey| if is_ipv6(k) { 10 } else { 2 };
    let parts = |k: &ServiceKey| match *k {
        ServiceKey::Addr { proto, addr, port } => (u16::from(proto), addr, port),
        ServiceKey::Fwmark { ipv6, .. } => (
            PROTO_TCP as u16,
            if ipv6 {
                IpAddr::V6(0.into())
            } else {
                IpAddr::V4(0.into())
            },
            0,
        ),
    };
    let r = cdiff(a.fwmark(), b.fwmark());
    if r != 0 {
        return r;
    }
    let r = af(a) - af(b);
    if r != 0 {
        return r;
    }
    let ((pa, aa, pta), (pb, ab, ptb)) = (parts(a), parts(b));
    let r = i32::from(pa) - i32::from(pb);
    if r != 0 {
        return r;
    }
    cmp_dests(aa, pta, ab, ptb)
}

/// glibc's `qsort` (`msort_with_tmp`): top-down merge sort, left run first on `cmp <= 0`.
/// Terminates and never panics even when the comparator is not a total order.
fn merge_sort<T: Copy>(v: &mut [T], cmp: &dyn Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    merge_sort(&mut v[..n1], cmp);
    merge_sort(&mut v[n1..], cmp);
    let mut tmp = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            tmp.push(v[i]);
            i += 1;
        } else {
            tmp.push(v[j]);
            j += 1;
        }
    }
    tmp.extend_from_slice(&v[i..n1]);
    tmp.extend_from_slice(&v[j..n]);
    v.copy_from_slice(&tmp);
}

/// Services in listing order: sorted, or with `--nosort` address services before fwmark
/// services, each in creation order.
fn sorted_services(services: &[ServiceListing], nosort: bool) -> Vec<&ServiceListing> {
    let mut v: Vec<&ServiceListing> = services.iter().collect();
    if nosort {
        v.sort_by_key(|s| matches!(s.key, ServiceKey::Fwmark { .. }));
    } else {
        merge_sort(&mut v, &|a, b| cmp_services(&a.key, &b.key));
    }
    v
}

fn sorted_backends(backends: &[BackendListing], nosort: bool) -> Vec<&BackendListing> {
    let mut v: Vec<&BackendListing> = backends.iter().collect();
    if !nosort {
        merge_sort(&mut v, &|a, b| cmp_dests(a.addr, a.port, b.addr, b.port));
    }
    v
}

fn stats_json(s: &Stats) -> Value {
    json!({"conns": s.conns, "in_pkts": s.in_pkts, "out_pkts": s.out_pkts,
           "in_bytes": s.in_bytes, "out_bytes": s.out_bytes})
}

fn rates_json(r: &Rates) -> Value {
    json!({"cps": r.cps, "in_pps": r.in_pps, "out_pps": r.out_pps,
           "in_bps": r.in_bps, "out_bps": r.out_bps})
}

fn method_json(m: Method) -> &'static str {
    match m {
        Method::Nat => "nat",
        Method::Dr => "dr",
        Method::Tunnel => "tun",
        Method::FullNat => "fullnat",
    }
}

/// One service for `--json`.
pub fn service_json(s: &ServiceListing, nosort: bool) -> Value {
    let (protocol, address, port, fwmark) = match s.key {
        ServiceKey::Addr { proto, addr, port } => (
            Value::from(proto_name(proto)),
            Value::from(addr.to_string()),
            Value::from(port),
            Value::Null,
        ),
        ServiceKey::Fwmark { mark, .. } => (Value::Null, Value::Null, Value::Null, mark.into()),
    };
    let backends: Vec<Value> = sorted_backends(&s.backends, nosort)
        .into_iter()
        .map(|b| {
            json!({
                "address": b.addr.to_string(), "port": b.port,
                "method": method_json(b.method), "weight": b.weight,
                "configured_weight": b.configured_weight,
                "response_ms": b.response.map(|r| r.as_secs_f64() * 1e3),
                "load_percent": b.load,
                "u_threshold": b.u_threshold, "l_threshold": b.l_threshold,
                "conn_rate": b.conn_rate,
                "active_conns": b.active, "inactive_conns": b.inactive,
                "persistent_conns": b.persist,
                "stats": stats_json(&b.stats), "rates": rates_json(&b.rates),
            })
        })
        .collect();
    json!({
        "protocol": protocol, "address": address, "port": port, "fwmark": fwmark,
        "ipv6": is_ipv6(&s.key),
        "scheduler": s.scheduler,
        "flags": s.sched_flags.display(&s.scheduler).to_string(),
        "persistence": s.persistence.map(|p| json!({"timeout": p.timeout, "netmask": p.prefix_len})),
        "one_packet": s.one_packet,
        "synproxy": s.synproxy,
        "conn_rate": s.conn_rate,
        "stats": stats_json(&s.stats), "rates": rates_json(&s.rates),
        "backends": backends,
    })
}

/// `-L --json`: the whole listing, in listing order, plus the timeouts.
pub fn listing_json(listing: &Listing, st: &DesiredState, nosort: bool) -> String {
    let services: Vec<Value> = sorted_services(&listing.services, nosort)
        .into_iter()
        .map(|s| service_json(s, nosort))
        .collect();
    let v = json!({
        "version": "1.2.1", "table_size": listing.table_size,
        "timeouts": {"tcp": st.timeouts.tcp, "tcpfin": st.timeouts.tcpfin, "udp": st.timeouts.udp},
        "services": services,
    });
    format!("{v:#}\n")
}

/// `-Lc --json`.
pub fn connections_json(conns: &[ConnListing]) -> String {
    let v: Vec<Value> = conns
        .iter()
        .map(|c| {
            json!({
                "protocol": if c.proto == 0 { "IP" } else { proto_name(c.proto) },
                "template": c.template, "expires": c.expires_secs,
                "state": c.state, "client": c.client.to_string(),
                "virtual": c.virt.to_string(), "backend": c.backend.to_string(),
            })
        })
        .collect();
    format!("{:#}\n", Value::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(i: u64, exact: bool) -> String {
        let mut s = String::new();
        largenum(&mut s, i, exact);
        s
    }

    #[test]
    fn largenum_scales_as_ipvsadm() {
        assert_eq!(num(0, false), "        0");
        assert_eq!(num(99_999_999, false), " 99999999");
        assert_eq!(num(100_000_000, false), "  100000K");
        assert_eq!(num(999_999_999, false), "  999999K");
        assert_eq!(num(1_000_000_000, false), "    1000M");
        assert_eq!(num(99_999_999_999, false), "   99999M");
        assert_eq!(num(100_000_000_000, false), "     100G");
        assert_eq!(num(100_000_000_000_000, false), "     100T");
        assert_eq!(num(12, true), "       12");
        assert_eq!(num(123_456_789_012, true), " 123456789012");
    }

    #[test]
    fn sort_wraps_like_the_c_comparator() {
        // 10.0.0.1 - 198.18.0.1 as a C int is positive (the difference exceeds 2^31), so
        // ipvsadm lists 198.18.0.1 first; close addresses sort normally.
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.1".parse().unwrap();
        let c: IpAddr = "198.18.0.2".parse().unwrap();
        assert!(cmp_dests(a, 80, b, 80) > 0);
        assert!(cmp_dests(b, 80, c, 80) < 0);
        assert!(cmp_dests(b, 80, b, 81) < 0);
        let mut v = vec![c, a, b];
        merge_sort(&mut v, &|x, y| cmp_dests(*x, 0, *y, 0));
        assert_eq!(v, [b, c, a]);
    }

    #[test]
    fn the_weights_view_shows_effective_and_configured_weight_response_and_load() {
        let st = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[[service]]\nprotocol = \"tcp\"\nvip = \"198.18.10.1\"\nport = 80\nscheduler = \"wrr\"\n\
             [[service.backend]]\naddress = \"198.18.3.11\"\nport = 8080\nweight = 100\nmethod = \"nat\"\n\
             [[service.backend]]\naddress = \"198.18.3.12\"\nport = 8080\nweight = 100\nmethod = \"nat\"\n",
        )
        .unwrap();
        let mut l = Listing::from_state(&DesiredState::from_config(&st));
        let b = l.backend_mut(
            &l.services[0].key.clone(),
            "198.18.3.12".parse().unwrap(),
            8080,
        );
        let b = b.unwrap();
        b.weight = 12;
        b.response = Some(std::time::Duration::from_micros(402_340));
        b.load = Some(35);
        let f = ListFormat {
            weights: true,
            ..ListFormat::default()
        };
        assert_eq!(
            list_all(&l, &f),
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight CfgWeight Response   Load\n\
             TCP  198.18.10.1:80 wrr\n\
             \x20 -> 198.18.3.11:8080             Masq    100    100       -          -\n\
             \x20 -> 198.18.3.12:8080             Masq    12     100       402.3ms    35%\n"
        );
        let json = service_json(&l.services[0], false);
        let b = &json["backends"][1];
        assert_eq!(b["weight"], 12);
        assert_eq!(b["configured_weight"], 100);
        assert_eq!(b["load_percent"], 35);
        assert!((b["response_ms"].as_f64().unwrap() - 402.34).abs() < 1e-9);
        assert!(json["backends"][0]["response_ms"].is_null());
    }

    #[test]
    fn masks() {
        assert_eq!(v4_mask(24), "255.255.255.0");
        assert_eq!(v4_mask(1), "128.0.0.0");
        assert_eq!(v4_mask(32), "255.255.255.255");
    }
}
