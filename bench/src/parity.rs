//! Decision parity between xvs and kernel IPVS (issue 6, the parity part).
//!
//! The same services and flows go through `xvs simulate` (the real binary, the data path's own
//! code) and through kernel IPVS in a QEMU guest booted from Debian's kernel package
//! (`scripts/ipvs-guest/`: the guest runs ipvsadm and makes every flow a real TCP connection or
//! UDP exchange from the given source address and port; the answer is the destination of IPVS's
//! own connection entry, checked against the backend that answered). For each scenario the
//! report gives the share of flows that got the same backend and the first flows that did not,
//! with both answers, and compares the final active/inactive counts per backend.
//!
//! Scenarios (NAT unless said, backends 198.19.0.11.. port 8080, VIPs 198.18.200.x, clients from
//! 198.18.16.0/20; IPv6 alike in 2001:2::/48), generated from fixed seeds:
//! rr, wrr (weights 1/2/3 added one by one after `-A`, so wrr starts at cw = 1), sh, sh with
//! `sh-port`, mh alone and with `mh-port`, dh (several VIPs, one service each: dh hashes the destination),
//! lc and wlc on a sequential open/close trace (counts rise and fall; closed connections sit
//! in TIME_WAIT and count as inactive, as in the kernel); then sed, nq, fo, ovf, lblc and lblcr
//! on such traces too (ovf can refuse: both sides' "no backend" answers count as the same);
//! sh and mh with fallback past a weight-0 backend; rr with persistence (`-p 300`); lc, wlc and
//! sed over UDP (entries that never become active); lc and wlc with direct routing (replies
//! bypass the director, which keeps its input-only state table); sh, sh-port, mh-port, dh and
//! wlc over IPv6 (clients with random interface identifiers: the hashes fold all four words).
//! Then backends changed in the middle of the trace by `ctl` lines (ipvsadm's arguments: run by
//! `xvs simulate` as `xvs ctl`, by the guest as `ipvsadm` in the director's namespace, between
//! the same two flows): rr with an add and the cursor's own backend deleted; wrr with -e, -a, -d;
//! sh, mh, mh-port with an add and a delete (tables rebuilt); lc, wlc, sh, mh (with fallback)
//! with a backend quiesced (-w 0) and restored; `-E -s` rr -> wrr -> rr and wlc -> sh -> wlc;
//! `-E` with other flags only (the kernel keeps the scheduler's state); a backend deleted and at
//! once added again (revived with its connections). Every flow of these opens a new connection
//! or closes one whose backend still exists, so xvs draining removed backends' connections
//! (IPVS drops their packets) never shows.
//! Backends are added in the same order on both sides, since IPVS prepends each new backend and
//! every tie-break follows that list order.
//!
//! This file uses only std so that `tests/ipvs_parity.rs` can include it with `#[path]`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Port every guest backend listens on with NAT (direct routing keeps the service port; the
/// guest's backends listen on 9021-9024 for that).
pub const BACKEND_PORT: u16 = 8080;

/// One virtual service of a scenario.
#[derive(Clone, Debug)]
pub struct Service {
    pub vip: IpAddr,
    pub port: u16,
    /// (address, weight) in the order the backends are added.
    pub backends: Vec<(IpAddr, u32)>,
}

/// One flow line (`tcp src sport dst dport open|close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub close: bool,
}

/// A scheduler's scenario: services, ipvsadm `-b` flags and the flow list.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub scheduler: String,
    pub flags: String,
    /// Persistence timeout in seconds (`-p`), if any.
    pub persistence: Option<u32>,
    /// UDP services and flows (else TCP).
    pub udp: bool,
    /// Direct routing (else NAT).
    pub dr: bool,
    pub services: Vec<Service>,
    pub flows: Vec<Flow>,
    /// `ctl` lines (ipvsadm's arguments) and how many flows come before each: backend changes
    /// in the middle of the trace, run by `xvs simulate` as `xvs ctl` and by the guest as
    /// `ipvsadm`, in the same place of the sequence.
    pub ctl: Vec<(usize, String)>,
}

impl Scenario {
    /// The guest's rules: VIPs on lo, then `ipvsadm -A` and one `-a` per backend.
    pub fn rules_sh(&self) -> String {
        let mut s = String::new();
        for svc in &self.services {
            let v = SocketAddr::new(svc.vip, svc.port);
            let len = if svc.vip.is_ipv6() { 128 } else { 32 };
            let _ = writeln!(s, "/sbin/ip addr replace {}/{len} dev lo", svc.vip);
            if self.dr {
                // A direct-routing backend owns the VIP itself.
                let _ = writeln!(
                    s,
                    "/sbin/ip netns exec be /sbin/ip addr replace {}/{len} dev lo",
                    svc.vip
                );
            }
            let flags = if self.flags.is_empty() {
                String::new()
            } else {
                format!(" -b {}", self.flags)
            };
            let persist = self
                .persistence
                .map_or_else(String::new, |p| format!(" -p {p}"));
            let t = if self.udp { "-u" } else { "-t" };
            let _ = writeln!(
                s,
                "ipvsadm -A {t} {v} -s {}{flags}{persist}",
                self.scheduler
            );
            let (port, m) = self.backend_port_and_flag(svc);
            for (b, w) in &svc.backends {
                let b = SocketAddr::new(*b, port);
                let _ = writeln!(s, "ipvsadm -a {t} {v} -r {b} {m} -w {w}");
            }
        }
        s
    }

    /// The same rules as an xvs configuration.
    pub fn xvs_toml(&self) -> String {
        let mut s = format!("# parity scenario {} (generated)\n", self.name);
        for svc in &self.services {
            let _ = write!(
                s,
                "\n[[service]]\nprotocol = \"{}\"\nvip = \"{}\"\nport = {}\nscheduler = \"{}\"\n",
                self.proto(),
                svc.vip,
                svc.port,
                self.scheduler
            );
            if !self.flags.is_empty() {
                let _ = writeln!(s, "flags = \"{}\"", self.flags);
            }
            if let Some(p) = self.persistence {
                let _ = writeln!(s, "persistence = {p}");
            }
            let (port, _) = self.backend_port_and_flag(svc);
            let method = if self.dr { "dr" } else { "nat" };
            for (b, w) in &svc.backends {
                let _ = write!(
                    s,
                    "\n[[service.backend]]\naddress = \"{b}\"\nport = {port}\nweight = {w}\nmethod = \"{method}\"\n"
                );
            }
        }
        s
    }

    fn backend_port_and_flag(&self, svc: &Service) -> (u16, &'static str) {
        if self.dr {
            (svc.port, "-g")
        } else {
            (BACKEND_PORT, "-m")
        }
    }

    fn proto(&self) -> &'static str {
        if self.udp {
            "udp"
        } else {
            "tcp"
        }
    }

    /// The flow list in `xvs simulate`'s format, `ctl` lines in their places.
    pub fn flows_txt(&self) -> String {
        let mut s = String::new();
        for (i, f) in self.flows.iter().enumerate() {
            for (_, args) in self.ctl.iter().filter(|(at, _)| *at == i) {
                let _ = writeln!(s, "ctl {args}");
            }
            let _ = writeln!(
                s,
                "{} {} {} {} {} {}",
                self.proto(),
                f.src.ip(),
                f.src.port(),
                f.dst.ip(),
                f.dst.port(),
                if f.close { "close" } else { "open" }
            );
        }
        for (_, args) in self.ctl.iter().filter(|(at, _)| *at >= self.flows.len()) {
            let _ = writeln!(s, "ctl {args}");
        }
        s
    }

    /// ipvsadm's words for the first service (`-t VIP:PORT`).
    fn ctl_service(&self) -> String {
        let svc = &self.services[0];
        let t = if self.udp { "-u" } else { "-t" };
        format!("{t} {}", SocketAddr::new(svc.vip, svc.port))
    }

    /// `-a` (add), `-e` (edit) or `-d` (delete) a backend of the first service; the weight is
    /// ignored for `-d`.
    pub fn ctl_backend(&self, op: &str, backend: IpAddr, weight: u32) -> String {
        let svc = &self.services[0];
        let (port, m) = self.backend_port_and_flag(svc);
        let b = SocketAddr::new(backend, port);
        if op == "-d" {
            format!("-d {} -r {b}", self.ctl_service())
        } else {
            format!("{op} {} -r {b} {m} -w {weight}", self.ctl_service())
        }
    }

    /// `-E`: the first service with a scheduler and flags (`-b`, none if empty), no
    /// persistence.
    pub fn ctl_scheduler(&self, scheduler: &str, flags: &str) -> String {
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" -b {flags}")
        };
        format!("-E {} -s {scheduler}{flags}", self.ctl_service())
    }
}

/// xorshift64*: a fixed, dependency-free pseudo-random sequence for the flow lists.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The guest's backends: 198.19.0.11.. or 2001:2:1::11.. (the same digits, hexadecimal there).
fn backends(weights: &[u32], v6: bool) -> Vec<(IpAddr, u32)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let n = 11 + i as u8;
            let a = if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, hex_digits(n)))
            } else {
                IpAddr::V4(Ipv4Addr::new(198, 19, 0, n))
            };
            (a, w)
        })
        .collect()
}

/// `11` read as hexadecimal (0x11): the guest names IPv6 backends with the IPv4 digits.
fn hex_digits(n: u8) -> u16 {
    u16::from(n / 10) * 16 + u16::from(n % 10)
}

/// A client address chosen among `spread`: from 198.18.16.0/20, or for IPv6 from
/// 2001:2:0:10::/64 with random interface identifiers (all of their bits feed the hashes).
fn client(rng: &mut Rng, spread: u32, v6: bool) -> IpAddr {
    let n = 1 + rng.below(u64::from(spread.clamp(1, 4094))) as u32;
    if v6 {
        // The n-th identifier of a fixed sequence: the same n gives the same address.
        let mut id = Rng(u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let iid = id.next();
        let prefix = u128::from(0x2001_0002_0000_0010_u64) << 64;
        IpAddr::V6(Ipv6Addr::from(prefix | u128::from(iid)))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 16, 0)) + n))
    }
}

/// `n` opens to the services (round the list), each from a fresh (address, port).
fn opens(rng: &mut Rng, services: &[Service], n: usize, spread: u32) -> Vec<Flow> {
    let mut used = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        let svc = &services[out.len() % services.len()];
        let src = SocketAddr::new(
            client(rng, spread, svc.vip.is_ipv6()),
            10_000 + rng.below(50_000) as u16,
        );
        let dst = SocketAddr::new(svc.vip, svc.port);
        if used.insert((src, dst)) {
            out.push(Flow {
                src,
                dst,
                close: false,
            });
        }
    }
    out
}

/// A sequential open/close trace: opens and closes interleaved at random, so the counts go up and
/// down; closed connections are never reused (a new SYN on a TIME_WAIT entry would reschedule).
fn open_close(rng: &mut Rng, svc: &Service, steps: usize) -> Vec<Flow> {
    let mut open: Vec<Flow> = Vec::new();
    let mut used = HashSet::new();
    let mut out = Vec::new();
    let dst = SocketAddr::new(svc.vip, svc.port);
    while out.len() < steps {
        if !open.is_empty() && rng.below(100) < 40 {
            let mut f = open.swap_remove(rng.below(open.len() as u64) as usize);
            f.close = true;
            out.push(f);
        } else {
            let src = SocketAddr::new(
                client(rng, 200, svc.vip.is_ipv6()),
                10_000 + rng.below(50_000) as u16,
            );
            if used.insert(src) {
                let f = Flow {
                    src,
                    dst,
                    close: false,
                };
                open.push(f);
                out.push(f);
            }
        }
    }
    out
}

/// The scenarios of the parity check; `flows` scales the flow count of each (about 60 is plenty).
pub fn scenarios(flows: usize) -> Vec<Scenario> {
    let flows = flows.max(4);
    let vip = |i: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 200, i));
    let vip6 = |i: u8| IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, u16::from(i)));
    let one = |i: u8, port: u16, w: &[u32]| {
        vec![Service {
            vip: vip(i),
            port,
            backends: backends(w, false),
        }]
    };
    let one6 = |i: u8, port: u16, w: &[u32]| {
        vec![Service {
            vip: vip6(i),
            port,
            backends: backends(w, true),
        }]
    };
    let mut out = Vec::new();
    let build = |name: &str, sched: &str, flags: &str, services: Vec<Service>, seed: u64| {
        let mut rng = Rng(seed);
        let persistence = name.ends_with("-persist").then_some(300);
        let udp = name.ends_with("-udp");
        let dr = name.ends_with("-dr");
        let flows = match sched {
            _ if udp => opens(&mut rng, &services, flows, 4000),
            "lc" | "wlc" | "sed" | "nq" | "fo" | "ovf" | "lblc" | "lblcr" => {
                open_close(&mut rng, &services[0], flows)
            }
            "sh" | "mh" if flags.is_empty() => opens(&mut rng, &services, flows, 4000),
            // With the port in the hash (or persistence), few addresses and many ports.
            "sh" | "mh" => opens(&mut rng, &services, flows, 6),
            _ if persistence.is_some() => opens(&mut rng, &services, flows, 6),
            _ => opens(&mut rng, &services, flows, 4000),
        };
        Scenario {
            name: name.into(),
            scheduler: sched.into(),
            flags: flags.into(),
            persistence,
            udp,
            dr,
            services,
            flows,
            ctl: Vec::new(),
        }
    };
    let mut add = |name: &str, sched: &str, flags: &str, services: Vec<Service>, seed: u64| {
        out.push(build(name, sched, flags, services, seed));
    };
    add("rr", "rr", "", one(1, 9001, &[1, 1, 1]), 1);
    add("wrr", "wrr", "", one(2, 9002, &[1, 2, 3]), 2);
    add("sh", "sh", "", one(3, 9003, &[1, 2, 1, 3]), 3);
    add("sh-port", "sh", "sh-port", one(4, 9004, &[1, 2, 1, 3]), 4);
    add("mh-port", "mh", "mh-port", one(5, 9005, &[1, 2, 2, 3]), 5);
    let dh: Vec<Service> = (0..12)
        .map(|i| Service {
            vip: vip(100 + i),
            port: 9006,
            backends: backends(&[1, 1, 2], false),
        })
        .collect();
    add("dh", "dh", "", dh, 6);
    add("lc", "lc", "", one(7, 9007, &[1, 1, 1]), 7);
    add("wlc", "wlc", "", one(8, 9008, &[1, 2, 3]), 8);
    // The rest of the deterministic suite (twos draws at random and is left out).
    add("sed", "sed", "", one(9, 9009, &[1, 2, 3]), 9);
    add("nq", "nq", "", one(10, 9010, &[1, 2, 3]), 10);
    add("fo", "fo", "", one(11, 9011, &[2, 3, 3]), 11);
    add("ovf", "ovf", "", one(12, 9012, &[2, 4, 3]), 12);
    add("lblc", "lblc", "", one(13, 9013, &[1, 2, 3]), 13);
    add("lblcr", "lblcr", "", one(14, 9014, &[1, 2, 3]), 14);
    // Fallback past a weight-0 backend, and persistence templates.
    let fallback = [1, 0, 2, 1];
    add(
        "sh-fallback",
        "sh",
        "sh-fallback,sh-port",
        one(15, 9015, &fallback),
        15,
    );
    add(
        "mh-fallback",
        "mh",
        "mh-fallback,mh-port",
        one(16, 9016, &fallback),
        16,
    );
    add("rr-persist", "rr", "", one(17, 9017, &[1, 1, 1]), 17);
    // UDP entries never leave inactive: lc/wlc count them, sed (active only) does not.
    add("lc-udp", "lc", "", one(18, 9018, &[1, 1, 1]), 18);
    add("wlc-udp", "wlc", "", one(19, 9019, &[1, 2, 3]), 19);
    add("sed-udp", "sed", "", one(20, 9020, &[1, 2, 3]), 20);
    // Direct routing: the director sees only the client's half (the input-only state table).
    add("lc-dr", "lc", "", one(21, 9021, &[1, 1, 1]), 21);
    add("wlc-dr", "wlc", "", one(22, 9022, &[1, 2, 3]), 22);
    // IPv6: the hashes fold the address's four 32-bit words.
    add("sh-v6", "sh", "", one6(30, 9030, &[1, 2, 1, 3]), 30);
    add(
        "sh-port-v6",
        "sh",
        "sh-port",
        one6(31, 9031, &[1, 2, 1, 3]),
        31,
    );
    add(
        "mh-port-v6",
        "mh",
        "mh-port",
        one6(32, 9032, &[1, 2, 2, 3]),
        32,
    );
    let dh6: Vec<Service> = (0..12)
        .map(|i| Service {
            vip: vip6(100 + i),
            port: 9033,
            backends: backends(&[1, 1, 2], true),
        })
        .collect();
    add("dh-v6", "dh", "", dh6, 33);
    add("wlc-v6", "wlc", "", one6(34, 9034, &[1, 2, 3]), 34);
    // mh on the source address alone.
    add("mh", "mh", "", one(35, 9035, &[1, 2, 2, 3]), 35);

    // Backends changed in the middle of the trace (`ctl` lines: ipvsadm -a/-e/-d/-E between two
    // flows). Every flow opens a new connection, so xvs draining the connections of a deleted
    // backend (IPVS drops their packets) never shows; lc/wlc only quiesce (-w 0), which both keep
    // forwarding, so closes on the quiesced backend are fine.
    let at = |n: usize| IpAddr::V4(Ipv4Addr::new(198, 19, 0, n as u8));
    let third = flows / 3;
    let two_thirds = 2 * flows / 3;
    // rr: a backend added (at the list head: the cursor stays), then the cursor's own backend
    // deleted (the cursor steps back to its predecessor), then another added.
    let mut sc = build("rr-change", "rr", "", one(40, 9040, &[1, 1, 1]), 40);
    let deleted = rr_cursor(&sc.services[0].backends, &[(third, at(14))], flows / 2);
    sc.ctl = vec![
        (third, sc.ctl_backend("-a", at(14), 1)),
        (flows / 2, sc.ctl_backend("-d", deleted, 0)),
        (3 * flows / 4, sc.ctl_backend("-a", at(15), 1)),
    ];
    out.push(sc);
    // wrr: an edit restarts the walk at the head (and changes the weights' gcd and maximum),
    // then an add, then the heaviest backend deleted.
    let mut sc = build("wrr-change", "wrr", "", one(41, 9041, &[1, 2, 3]), 41);
    sc.ctl = vec![
        (third, sc.ctl_backend("-e", at(12), 4)),
        (flows / 2, sc.ctl_backend("-a", at(14), 2)),
        (two_thirds + 5, sc.ctl_backend("-d", at(13), 0)),
    ];
    out.push(sc);
    // sh, mh, mh-port: tables rebuilt on an add and on a delete.
    for (name, sched, flags, vip, seed) in [
        ("sh-change", "sh", "", 42, 42),
        ("mh-change", "mh", "", 43, 43),
        ("mh-port-change", "mh", "mh-port", 44, 44),
    ] {
        let w: &[u32] = if sched == "sh" {
            &[1, 2, 1, 3]
        } else {
            &[1, 2, 2, 3]
        };
        let mut sc = build(name, sched, flags, one(vip, 9000 + u16::from(vip), w), seed);
        sc.ctl = vec![
            (third, sc.ctl_backend("-a", at(15), 2)),
            (two_thirds, sc.ctl_backend("-d", at(12), 0)),
        ];
        out.push(sc);
    }
    // lc, wlc on open/close traces: a backend quiesced (-w 0: no new connections, its own still
    // counted and closed), then given a weight again.
    let mut sc = build("lc-quiesce", "lc", "", one(45, 9045, &[1, 1, 1]), 45);
    sc.ctl = vec![
        (third, sc.ctl_backend("-e", at(11), 0)),
        (two_thirds, sc.ctl_backend("-e", at(11), 1)),
    ];
    out.push(sc);
    let mut sc = build("wlc-quiesce", "wlc", "", one(46, 9046, &[1, 2, 3]), 46);
    sc.ctl = vec![
        (third, sc.ctl_backend("-e", at(13), 0)),
        (two_thirds, sc.ctl_backend("-e", at(13), 2)),
    ];
    out.push(sc);
    // `-E -s`: the scheduler switched twice (rr to wrr, which starts anew at cw = max weight on
    // the whole list, and back to rr, whose cursor starts at the head again).
    let mut sc = build("sched-switch", "rr", "", one(47, 9047, &[1, 2, 3]), 47);
    sc.ctl = vec![
        (third, sc.ctl_scheduler("wrr", "")),
        (two_thirds, sc.ctl_scheduler("rr", "")),
    ];
    out.push(sc);
    // `-E` with the same scheduler and other flags: the kernel keeps the scheduler (and rr's
    // cursor); only a new scheduler name rebinds (`ip_vs_edit_service`).
    let mut sc = build("rr-reflag", "rr", "", one(48, 9048, &[1, 1, 1]), 48);
    sc.ctl = vec![
        (third, sc.ctl_scheduler("rr", "flag-1")),
        (two_thirds, sc.ctl_scheduler("rr", "")),
    ];
    out.push(sc);
    // A hash scheduler switched in and out on an open/close trace: wlc -> sh (sh-port) -> wlc.
    let mut sc = build("sched-switch-sh", "wlc", "", one(49, 9049, &[1, 2, 3]), 49);
    sc.ctl = vec![
        (third, sc.ctl_scheduler("sh", "sh-port")),
        (two_thirds, sc.ctl_scheduler("wlc", "")),
    ];
    out.push(sc);
    // A backend deleted and at once added again: the kernel revives it from its trash with its
    // connections and counts, so wlc keeps seeing its load.
    let mut sc = build("wlc-readd", "wlc", "", one(50, 9050, &[1, 2, 3]), 50);
    sc.ctl = vec![
        (third, sc.ctl_backend("-d", at(13), 0)),
        (third, sc.ctl_backend("-a", at(13), 3)),
        (two_thirds, sc.ctl_backend("-d", at(11), 0)),
        (two_thirds, sc.ctl_backend("-a", at(11), 2)),
    ];
    out.push(sc);
    // sh and mh with a backend quiesced (-e -w 0) and restored: sh rebuilds its table from the
    // current weights (weight 0 keeps one bucket per cycle, which then refuses: no fallback);
    // mh keeps its table (last weight) and falls back past the quiesced backend, then rebuilds
    // when the weight comes back different.
    let mut sc = build("sh-quiesce", "sh", "", one(51, 9051, &[1, 2, 1, 3]), 51);
    sc.ctl = vec![
        (third, sc.ctl_backend("-e", at(12), 0)),
        (two_thirds, sc.ctl_backend("-e", at(12), 2)),
    ];
    out.push(sc);
    let flags = "mh-fallback,mh-port";
    let mut sc = build("mh-quiesce", "mh", flags, one(52, 9052, &[1, 2, 2, 3]), 52);
    sc.ctl = vec![
        (third, sc.ctl_backend("-e", at(12), 0)),
        (two_thirds, sc.ctl_backend("-e", at(12), 3)),
    ];
    out.push(sc);
    out
}

/// The backend kernel rr's cursor is on after `picks` picks, for weight-1 backends (in add order)
/// with `adds` (after how many picks, which backend) added on the way: the one that got the last
/// flow. The list is newest first; an add prepends and leaves the cursor on its backend; a pick
/// takes the element after the cursor, wrapping past the head (`ip_vs_rr.c`). Used only to choose
/// which backend a scenario deletes; the test checks the choice against IPVS's own answers.
pub fn rr_cursor(backends: &[(IpAddr, u32)], adds: &[(usize, IpAddr)], picks: usize) -> IpAddr {
    let mut list: Vec<IpAddr> = backends.iter().rev().map(|b| b.0).collect();
    let mut cursor: Option<usize> = None;
    for n in 0..picks {
        for (_, b) in adds.iter().filter(|(at, _)| *at == n) {
            list.insert(0, *b);
            cursor = cursor.map(|c| c + 1);
        }
        cursor = Some(cursor.map_or(0, |c| (c + 1) % list.len()));
    }
    cursor.map_or(list[0], |c| list[c])
}

/// What one side answered for one flow: a backend address, or why there was none.
pub type Answer = String;

/// Final (active, inactive) per backend, per service.
pub type Counts = BTreeMap<SocketAddr, BTreeMap<SocketAddr, (u32, u32)>>;

/// One side's results for a scenario.
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// Answer per flow, by flow number (1-based, in list order).
    pub answers: BTreeMap<usize, Answer>,
    /// What became of each `ctl` line, by line number (the guest's: "ok" or "error: …").
    pub ctl: BTreeMap<usize, String>,
    pub counts: Counts,
    /// xvs simulate with several workers: new connections per worker.
    pub per_worker: Vec<usize>,
}

/// Per-scenario comparison.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    /// Workers xvs simulate ran (1: one pipeline).
    pub workers: u16,
    /// With several workers: new connections per worker.
    pub per_worker: Vec<usize>,
    pub flows: usize,
    pub same: usize,
    /// (flow number, flow line, xvs's answer, IPVS's answer) of the first differences.
    pub differences: Vec<(usize, String, Answer, Answer)>,
    /// Final counts identical (every backend of every service, active and inactive).
    pub counts_same: bool,
    /// `ctl` lines the guest's ipvsadm did not carry out (line, command, what it said); xvs
    /// simulate stops on a failing one, so the scenario fails on that side instead.
    pub ctl_errors: Vec<(usize, String, String)>,
    pub xvs_counts: Counts,
    pub ipvs_counts: Counts,
}

impl Outcome {
    /// The scenario's name, with ` xN` for N workers.
    pub fn label(&self) -> String {
        if self.workers > 1 {
            format!("{} x{}", self.name, self.workers)
        } else {
            self.name.clone()
        }
    }

    pub fn share(&self) -> f64 {
        if self.flows == 0 {
            0.0
        } else {
            100.0 * self.same as f64 / self.flows as f64
        }
    }
}

/// The whole comparison.
#[derive(Clone, Debug)]
pub struct Report {
    pub guest: String,
    pub outcomes: Vec<Outcome>,
    /// IPVS's side of every scenario, by name (to compare other xvs configurations against it;
    /// tests/ipvs_parity.rs's negative controls read it, xvs-bench does not).
    #[allow(dead_code)]
    pub ipvs: BTreeMap<String, Side>,
}

impl Report {
    /// The human-readable report: a table, then the first differing flows of each scenario.
    pub fn render(&self) -> String {
        let mut s = format!(
            "decision parity, xvs simulate vs kernel IPVS ({})\n",
            self.guest
        );
        let _ = writeln!(
            s,
            "{:<20} {:>6} {:>6} {:>8}  final counts",
            "scheduler", "flows", "same", "share"
        );
        for o in &self.outcomes {
            let _ = writeln!(
                s,
                "{:<20} {:>6} {:>6} {:>7.1}%  {}{}",
                o.label(),
                o.flows,
                o.same,
                o.share(),
                if o.counts_same { "same" } else { "differ" },
                if o.workers > 1 {
                    format!("  (new connections per worker {:?})", o.per_worker)
                } else {
                    String::new()
                }
            );
        }
        for o in &self.outcomes {
            if !o.differences.is_empty() {
                let _ = writeln!(s, "\n{}: first differing flows", o.label());
                for (n, line, x, k) in &o.differences {
                    let _ = writeln!(s, "  flow {n:>3} {line}\n      xvs: {x}\n     ipvs: {k}");
                }
            }
            for (n, line, k) in &o.ctl_errors {
                let _ = writeln!(s, "\n{}: line {n} {line}\n     ipvs: {k}", o.label());
            }
            if !o.counts_same {
                let _ = writeln!(s, "\n{}: final counts (active/inactive)", o.label());
                let _ = writeln!(s, "  xvs:  {}", counts_text(&o.xvs_counts));
                let _ = writeln!(s, "  ipvs: {}", counts_text(&o.ipvs_counts));
            }
        }
        s
    }
}

impl Report {
    /// The same for machines: `{"guest", "scenarios": [{"name", "flows", "same", "share",
    /// "counts_same", "differences": [{"flow", "line", "xvs", "ipvs"}], "ctl_errors"}]}`.
    pub fn to_json(&self) -> String {
        let mut s = format!("{{\"guest\":{},\"scenarios\":[", json_str(&self.guest));
        for (i, o) in self.outcomes.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"name\":{},\"workers\":{},\"flows\":{},\"same\":{},\"share\":{:.1},\"counts_same\":{},\"differences\":[",
                json_str(&o.name),
                o.workers,
                o.flows,
                o.same,
                o.share(),
                o.counts_same
            );
            for (j, (n, line, x, k)) in o.differences.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "{{\"flow\":{n},\"line\":{},\"xvs\":{},\"ipvs\":{}}}",
                    json_str(line),
                    json_str(x),
                    json_str(k)
                );
            }
            let _ = write!(s, "],\"ctl_errors\":{}}}", o.ctl_errors.len());
        }
        s.push_str("]}\n");
        s
    }
}

/// A JSON string literal.
fn json_str(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn counts_text(c: &Counts) -> String {
    c.iter()
        .map(|(svc, b)| {
            let list: Vec<String> = b.iter().map(|(a, (x, y))| format!("{a}={x}/{y}")).collect();
            format!("{svc} [{}]", list.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Both sides' way of saying that the service had no backend for a flow: xvs drops the SYN
/// (or answers it itself); kernel IPVS answers ICMP port unreachable, so the client's connect
/// is refused.
pub const NO_BACKEND: &str = "no backend (refused)";

/// Parse `xvs simulate` output: `    N TCP src > dst open => BACKEND nat  [a=1/0 b=0/0]`.
pub fn parse_simulate(text: &str) -> Side {
    let mut side = Side::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# worker ") {
            // `# worker W: N new connection(s)`
            if let Some(n) = rest
                .split_once(": ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
            {
                side.per_worker.push(n);
            }
            continue;
        }
        let Some((left, right)) = line.split_once(" => ") else {
            continue;
        };
        let mut words = left.split_whitespace();
        let Some(n) = words.next().and_then(|w| w.parse::<usize>().ok()) else {
            continue;
        };
        let svc = words.nth(3).and_then(|w| w.parse::<SocketAddr>().ok());
        let first = right.split_whitespace().next().unwrap_or("");
        let answer = if first.parse::<SocketAddr>().is_ok() {
            first.to_string()
        } else if right.starts_with("dropped") || right.contains("no backend") {
            NO_BACKEND.to_string()
        } else {
            right.trim().to_string()
        };
        side.answers.insert(n, answer);
        // The counts after this flow, for its service: the last line per service is final.
        if let (Some(svc), Some((_, counts))) = (svc, right.split_once("  [")) {
            let mut m = BTreeMap::new();
            for item in counts.trim_end_matches(']').split_whitespace() {
                if let Some((a, c)) = item.split_once('=') {
                    if let (Ok(a), Some((x, y))) = (a.parse::<SocketAddr>(), c.split_once('/')) {
                        m.insert(a, (x.parse().unwrap_or(0), y.parse().unwrap_or(0)));
                    }
                }
            }
            side.counts.insert(svc, m);
        }
    }
    side
}

/// Parse the guest's console: per scenario, agent lines `flow N open SRC DST => ANSWER` and
/// `ipvsadm -Ln` between `=== XVS-PARITY SCENARIO name`, `IPVSADM name` and `END name`.
pub fn parse_guest(console: &str) -> (String, BTreeMap<String, Side>) {
    let mut guest = String::new();
    let mut out: BTreeMap<String, Side> = BTreeMap::new();
    let mut cur: Option<String> = None;
    let mut in_ipvsadm = false;
    let mut svc: Option<SocketAddr> = None;
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.split("=== XVS-PARITY ").nth(1) {
            let (tag, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            match tag {
                "GUEST" => guest = arg.trim().to_string(),
                "SCENARIO" => {
                    cur = Some(arg.trim().to_string());
                    out.entry(arg.trim().to_string()).or_default();
                    in_ipvsadm = false;
                }
                "IPVSADM" => in_ipvsadm = true,
                "END" => cur = None,
                _ => {}
            }
            continue;
        }
        let Some(name) = &cur else { continue };
        let side = out.entry(name.clone()).or_default();
        if in_ipvsadm {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() == Some(&"TCP") || w.first() == Some(&"UDP") {
                svc = w.get(1).and_then(|a| a.parse().ok());
            } else if w.first() == Some(&"->") && w.len() >= 6 {
                if let (Some(s), Ok(b), Ok(a), Ok(i)) =
                    (svc, w[1].parse(), w[4].parse(), w[5].parse())
                {
                    side.counts.entry(s).or_default().insert(b, (a, i));
                }
            }
        } else if let Some(rest) = line.strip_prefix("ctl ") {
            // `ctl N ARGS => ok|error: WHY`
            let (left, answer) = rest
                .rsplit_once(" => ")
                .unwrap_or((rest, "error: no verdict"));
            if let Some(n) = left.split_whitespace().next().and_then(|n| n.parse().ok()) {
                side.ctl.insert(n, answer.trim().to_string());
            }
        } else if let Some(rest) = line.strip_prefix("flow ") {
            let Some((left, answer)) = rest.split_once(" => ") else {
                continue;
            };
            if let Some(n) = left.split_whitespace().next().and_then(|n| n.parse().ok()) {
                let answer = answer.trim();
                let answer = if answer == "error: connect: Connection refused" {
                    NO_BACKEND
                } else {
                    answer
                };
                side.answers.insert(n, answer.to_string());
            }
        }
    }
    (guest, out)
}

/// Compare one scenario's two sides.
pub fn compare(sc: &Scenario, xvs: &Side, ipvs: &Side, keep: usize) -> Outcome {
    let mut same = 0;
    let mut differences = Vec::new();
    let mut ctl_errors = Vec::new();
    let text = sc.flows_txt();
    // Both sides number flows and ctl lines alike, by line.
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with("ctl ") {
            let k = ipvs.ctl.get(&n).map_or("(not run)", String::as_str);
            if k != "ok" {
                ctl_errors.push((n, line.to_string(), k.to_string()));
            }
            continue;
        }
        let x = xvs
            .answers
            .get(&n)
            .cloned()
            .unwrap_or_else(|| "(no answer)".into());
        let k = ipvs
            .answers
            .get(&n)
            .cloned()
            .unwrap_or_else(|| "(no answer)".into());
        if x == k && (x.parse::<SocketAddr>().is_ok() || x == NO_BACKEND) {
            same += 1;
        } else if differences.len() < keep {
            differences.push((n, line.to_string(), x, k));
        }
    }
    // ipvsadm -Ln lists every service of the guest; keep this scenario's.
    let mine: HashSet<SocketAddr> = sc
        .services
        .iter()
        .map(|s| SocketAddr::new(s.vip, s.port))
        .collect();
    let ipvs_counts: Counts = ipvs
        .counts
        .iter()
        .filter(|(k, _)| mine.contains(k))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    Outcome {
        name: sc.name.clone(),
        workers: 1,
        per_worker: xvs.per_worker.clone(),
        flows: sc.flows.len(),
        same,
        differences,
        counts_same: !xvs.counts.is_empty() && xvs.counts == ipvs_counts,
        ctl_errors,
        xvs_counts: xvs.counts.clone(),
        ipvs_counts,
    }
}

/// Where things are.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `xvs` binary (`xvs simulate`).
    pub xvs: PathBuf,
    /// `scripts/ipvs-guest/run.sh`.
    pub guest_script: PathBuf,
    /// Scenario files, simulate outputs and the guest's console log go here.
    pub work: PathBuf,
    /// Flows per scenario.
    pub flows: usize,
    /// Every scenario runs through `xvs simulate --workers W` for each of these.
    pub workers: Vec<u16>,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Write the scenarios, run `xvs simulate` on each and the guest once on all, compare.
pub fn run(opts: &Options) -> Result<Report, String> {
    let scen = scenarios(opts.flows);
    let dir = opts.work.join("scenarios");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut list = String::new();
    let mut xvs_sides = Vec::new();
    for &w in &opts.workers {
        for sc in &scen {
            let d = if w > 1 {
                dir.join(format!("{}-x{w}", sc.name))
            } else {
                dir.join(&sc.name)
            };
            xvs_sides.push((w, sc, simulate(&opts.xvs, &d, sc, w)?));
        }
    }
    for sc in &scen {
        list.push_str(&sc.name);
        list.push('\n');
        // The guest reads its scenarios from here (rules.sh, flows.txt).
        if !dir.join(&sc.name).exists() {
            fs::create_dir_all(dir.join(&sc.name))
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            write(&dir.join(&sc.name).join("rules.sh"), &sc.rules_sh())?;
            write(&dir.join(&sc.name).join("flows.txt"), &sc.flows_txt())?;
        }
    }
    write(&dir.join("list"), &list)?;

    let out = Command::new(&opts.guest_script)
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", opts.guest_script.display()))?;
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = opts.work.join("guest-console.txt");
    write(&log, &console)?;
    if !out.status.success() {
        return Err(format!(
            "the IPVS guest failed ({}); console in {}",
            out.status,
            log.display()
        ));
    }
    if !console.contains("=== XVS-PARITY DONE") {
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "the IPVS guest did not finish its scenarios; console in {}, its end:\n{}",
            log.display(),
            tail.join("\n")
        ));
    }
    let (guest, ipvs) = parse_guest(&console);
    let empty = Side::default();
    let outcomes = xvs_sides
        .iter()
        .map(|(w, sc, x)| Outcome {
            workers: *w,
            ..compare(sc, x, ipvs.get(&sc.name).unwrap_or(&empty), 5)
        })
        .collect();
    Ok(Report {
        guest,
        outcomes,
        ipvs,
    })
}

/// Write a scenario's files into `dir` (rules.sh, xvs.toml, flows.txt) and run
/// `xvs simulate --workers W` on them; its output is kept as xvs-simulate.txt.
pub fn simulate(xvs: &Path, dir: &Path, sc: &Scenario, workers: u16) -> Result<Side, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(&dir.join("rules.sh"), &sc.rules_sh())?;
    write(&dir.join("xvs.toml"), &sc.xvs_toml())?;
    write(&dir.join("flows.txt"), &sc.flows_txt())?;
    let out = Command::new(xvs)
        .arg("simulate")
        .arg("--config")
        .arg(dir.join("xvs.toml"))
        .arg("--flows")
        .arg(dir.join("flows.txt"))
        .arg("--workers")
        .arg(workers.to_string())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", xvs.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    write(&dir.join("xvs-simulate.txt"), &text)?;
    if !out.status.success() {
        return Err(format!(
            "xvs simulate failed on {} ({})",
            dir.display(),
            out.status
        ));
    }
    Ok(parse_simulate(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_well_formed() {
        let all = scenarios(60);
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rr",
                "wrr",
                "sh",
                "sh-port",
                "mh-port",
                "dh",
                "lc",
                "wlc",
                "sed",
                "nq",
                "fo",
                "ovf",
                "lblc",
                "lblcr",
                "sh-fallback",
                "mh-fallback",
                "rr-persist",
                "lc-udp",
                "wlc-udp",
                "sed-udp",
                "lc-dr",
                "wlc-dr",
                "sh-v6",
                "sh-port-v6",
                "mh-port-v6",
                "dh-v6",
                "wlc-v6",
                "mh",
                "rr-change",
                "wrr-change",
                "sh-change",
                "mh-change",
                "mh-port-change",
                "lc-quiesce",
                "wlc-quiesce",
                "sched-switch",
                "rr-reflag",
                "sched-switch-sh",
                "wlc-readd",
                "sh-quiesce",
                "mh-quiesce"
            ]
        );
        for sc in &all {
            assert_eq!(sc.flows.len(), 60, "{}", sc.name);
            // Every close closes a connection opened before and still open.
            let mut open = HashSet::new();
            for f in &sc.flows {
                let key = (f.src, f.dst);
                if f.close {
                    assert!(open.remove(&key), "{}: close without open", sc.name);
                } else {
                    assert!(open.insert(key), "{}: reopened {key:?}", sc.name);
                }
            }
        }
        let lc = &all[6];
        assert!(lc.flows.iter().any(|f| f.close), "lc trace closes some");
        let wrr = &all[1];
        assert!(wrr
            .rules_sh()
            .contains("ipvsadm -a -t 198.18.200.2:9002 -r 198.19.0.13:8080 -m -w 3"));
        assert!(wrr.xvs_toml().contains("weight = 3"));
        assert!(all[3].rules_sh().contains("-s sh -b sh-port"));
        assert!(all[16].rules_sh().contains("-s rr -p 300"));
        assert!(all[16].xvs_toml().contains("persistence = 300"));
        assert!(all[14].rules_sh().contains("-r 198.19.0.12:8080 -m -w 0"));
        assert!(all[17]
            .rules_sh()
            .contains("ipvsadm -A -u 198.18.200.18:9018 -s lc"));
        assert!(all[17].xvs_toml().contains("protocol = \"udp\""));
        assert!(all[17].flows_txt().starts_with("udp "));
        assert!(all[20].rules_sh().contains("-r 198.19.0.11:9021 -g -w 1"));
        assert!(all[20]
            .rules_sh()
            .contains("netns exec be /sbin/ip addr replace 198.18.200.21/32"));
        assert!(all[20]
            .xvs_toml()
            .contains("port = 9021\nweight = 1\nmethod = \"dr\""));
        assert!(all[22]
            .rules_sh()
            .contains("ipvsadm -a -t [2001:2:0:200::1e]:9030 -r [2001:2:1::11]:8080 -m -w 1"));
        assert!(all[22]
            .rules_sh()
            .contains("/sbin/ip addr replace 2001:2:0:200::1e/128 dev lo"));
        assert!(all[22].flows_txt().starts_with("tcp 2001:2:0:10:"));
    }

    #[test]
    fn ctl_lines_sit_between_flows_and_count_as_lines() {
        let all = scenarios(60);
        let rr = all.iter().find(|s| s.name == "rr-change").unwrap();
        let text = rr.flows_txt();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 63);
        // 20 flows, then the add; list .14 .13 .12 .11 with the cursor on .12 (flow 20's):
        // .11 .14 .13 .12 .11 .14 .13 .12 .11 .14 for flows 21..30, so the cursor is on .14.
        assert_eq!(
            lines[20],
            "ctl -a -t 198.18.200.40:9040 -r 198.19.0.14:8080 -m -w 1"
        );
        assert_eq!(
            lines[31],
            "ctl -d -t 198.18.200.40:9040 -r 198.19.0.14:8080"
        );
        assert!(lines[30].starts_with("tcp "));
        let wrr = all.iter().find(|s| s.name == "wrr-change").unwrap();
        assert!(wrr
            .flows_txt()
            .contains("\nctl -e -t 198.18.200.41:9041 -r 198.19.0.12:8080 -m -w 4\n"));
        let sw = all.iter().find(|s| s.name == "sched-switch").unwrap();
        assert!(sw
            .flows_txt()
            .contains("\nctl -E -t 198.18.200.47:9047 -s wrr\n"));
        let mhp = all.iter().find(|s| s.name == "mh-port-change").unwrap();
        assert_eq!(
            mhp.ctl_scheduler("mh", "mh-port"),
            "-E -t 198.18.200.44:9044 -s mh -b mh-port"
        );
        let re = all.iter().find(|s| s.name == "wlc-readd").unwrap();
        assert!(re.flows_txt().contains(
            "\nctl -d -t 198.18.200.50:9050 -r 198.19.0.13:8080\n\
             ctl -a -t 198.18.200.50:9050 -r 198.19.0.13:8080 -m -w 3\ntcp "
        ));

        // The rr model: three backends (list .13 .12 .11), picks .13 .12 .11 .13 ...
        let b = backends(&[1, 1, 1], false);
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(198, 19, 0, n));
        assert_eq!(rr_cursor(&b, &[], 1), ip(13));
        assert_eq!(rr_cursor(&b, &[], 3), ip(11));
        assert_eq!(rr_cursor(&b, &[(1, ip(14))], 2), ip(12));
        assert_eq!(rr_cursor(&b, &[(3, ip(14))], 4), ip(14));

        // Guest and simulate outputs number ctl lines like flows; a failed ctl is reported.
        let console = "=== XVS-PARITY SCENARIO c\n\
            flow 1 open 198.18.16.1:10001 198.18.200.1:9001 => 198.19.0.13:8080\n\
            ipvsadm: Memory allocation problem\n\
            ctl 2 -a -t 198.18.200.1:9001 -r 198.19.0.14:8080 -m -w 1 => error: exit 2\n\
            flow 3 open 198.18.16.2:10002 198.18.200.1:9001 => 198.19.0.12:8080\n\
            === XVS-PARITY END c\n";
        let (_, sides) = parse_guest(console);
        let k = &sides["c"];
        assert_eq!(k.answers.len(), 2);
        assert_eq!(k.ctl[&2], "error: exit 2");
        let sim = "    1 TCP 198.18.16.1:10001 > 198.18.200.1:9001 open => 198.19.0.13:8080 nat  [198.19.0.13:8080=1/0]\n\
            \x20   2 ctl -a -t 198.18.200.1:9001 -r 198.19.0.14:8080 -m -w 1\n\
            \x20   3 TCP 198.18.16.2:10002 > 198.18.200.1:9001 open => 198.19.0.12:8080 nat  [198.19.0.13:8080=1/0]\n";
        let x = parse_simulate(sim);
        let svc: SocketAddr = "198.18.200.1:9001".parse().unwrap();
        let mut sc = Scenario {
            name: "c".into(),
            scheduler: "rr".into(),
            flags: String::new(),
            persistence: None,
            udp: false,
            dr: false,
            services: vec![Service {
                vip: svc.ip(),
                port: svc.port(),
                backends: backends(&[1, 1, 1], false),
            }],
            flows: vec![
                Flow {
                    src: "198.18.16.1:10001".parse().unwrap(),
                    dst: svc,
                    close: false,
                },
                Flow {
                    src: "198.18.16.2:10002".parse().unwrap(),
                    dst: svc,
                    close: false,
                },
            ],
            ctl: Vec::new(),
        };
        sc.ctl = vec![(1, sc.ctl_backend("-a", ip(14), 1))];
        let o = compare(&sc, &x, k, 5);
        assert_eq!((o.flows, o.same), (2, 2));
        assert_eq!(o.ctl_errors.len(), 1);
        assert_eq!(o.ctl_errors[0].0, 2);
        let mut ok = k.clone();
        ok.ctl.insert(2, "ok".into());
        assert!(compare(&sc, &x, &ok, 5).ctl_errors.is_empty());
        // Moved before the first flow, the ctl line shifts it: line 2 has no answer on
        // either side and no longer counts as the same.
        sc.ctl[0].0 = 0;
        assert_eq!(compare(&sc, &x, &ok, 5).same, 1);
    }

    #[test]
    fn parses_simulate_and_guest_output_and_compares() {
        let sim = "# flow => backend method  [active/inactive per backend of the service]\n\
            \x20   1 TCP 198.18.16.1:10001 > 198.18.200.1:9001 open => 198.19.0.13:8080 nat  [198.19.0.11:8080=0/0 198.19.0.13:8080=1/0]\n\
            \x20   2 TCP 198.18.16.2:10002 > 198.18.200.1:9001 open => dropped: no backend\n\
            \x20   3 TCP 198.18.16.1:10001 > 198.18.200.1:9001 close => 198.19.0.13:8080 nat (existing)  [198.19.0.11:8080=0/0 198.19.0.13:8080=0/1]\n";
        let x = parse_simulate(sim);
        assert_eq!(x.answers[&1], "198.19.0.13:8080");
        assert_eq!(x.answers[&2], NO_BACKEND);
        let svc: SocketAddr = "198.18.200.1:9001".parse().unwrap();
        let b13: SocketAddr = "198.19.0.13:8080".parse().unwrap();
        assert_eq!(x.counts[&svc][&b13], (0, 1));

        let console = "noise\r\n=== XVS-PARITY GUEST kernel 6.1\r\n=== XVS-PARITY SCENARIO t\r\n\
            flow 1 open 198.18.16.1:10001 198.18.200.1:9001 => 198.19.0.13:8080\r\n\
            flow 2 open 198.18.16.2:10002 198.18.200.1:9001 => 198.19.0.11:8080\r\n\
            flow 3 close 198.18.16.1:10001 198.18.200.1:9001 => 198.19.0.13:8080\r\n\
            === XVS-PARITY IPVSADM t\r\nTCP  198.18.200.1:9001 rr\r\n\
            \x20 -> 198.19.0.11:8080             Masq    1      1          0         \r\n\
            \x20 -> 198.19.0.13:8080             Masq    1      0          1         \r\n\
            === XVS-PARITY END t\r\n=== XVS-PARITY DONE\r\n";
        let (guest, sides) = parse_guest(console);
        assert_eq!(guest, "kernel 6.1");
        let k = &sides["t"];
        assert_eq!(k.answers.len(), 3);
        assert_eq!(k.counts[&svc].len(), 2);

        let sc = Scenario {
            name: "t".into(),
            scheduler: "rr".into(),
            flags: String::new(),
            persistence: None,
            udp: false,
            dr: false,
            services: vec![Service {
                vip: svc.ip(),
                port: svc.port(),
                backends: backends(&[1, 1, 1], false),
            }],
            flows: vec![
                Flow {
                    src: "198.18.16.1:10001".parse().unwrap(),
                    dst: svc,
                    close: false,
                },
                Flow {
                    src: "198.18.16.2:10002".parse().unwrap(),
                    dst: svc,
                    close: false,
                },
                Flow {
                    src: "198.18.16.1:10001".parse().unwrap(),
                    dst: svc,
                    close: true,
                },
            ],
            ctl: Vec::new(),
        };
        let o = compare(&sc, &x, k, 5);
        assert_eq!((o.flows, o.same), (3, 2));
        assert_eq!(o.differences.len(), 1);
        assert_eq!(o.differences[0].0, 2);
        assert_eq!(o.differences[0].3, "198.19.0.11:8080");
        assert!(!o.counts_same, "xvs lacks 198.19.0.11's 1/0");
        assert!(o.render_line_ok());
    }

    impl Outcome {
        fn render_line_ok(&self) -> bool {
            let r = Report {
                guest: "g".into(),
                outcomes: vec![self.clone()],
                ipvs: BTreeMap::new(),
            }
            .render();
            let j = Report {
                guest: "g \"1\"".into(),
                outcomes: vec![self.clone()],
                ipvs: BTreeMap::new(),
            }
            .to_json();
            r.contains("66.7%")
                && r.contains("flow   2")
                && r.contains("ipvs: 198.19.0.11:8080")
                && j.starts_with("{\"guest\":\"g \\\"1\\\"\",\"scenarios\":[{\"name\":\"t\",\"workers\":1,\"flows\":3,\"same\":2,\"share\":66.7,")
                && j.contains("\"differences\":[{\"flow\":2,\"line\":\"tcp 198.18.16.2 10002 198.18.200.1 9001 open\",\"xvs\":\"no backend (refused)\",\"ipvs\":\"198.19.0.11:8080\"}]")
        }
    }
}
