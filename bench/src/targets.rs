//! What the traffic goes through: (a) a bare AF_XDP bounce (xvs's own `Dataplane` with a fixed
//! MAC + destination-address rewrite, RFC 1624 checksum update, no table, no scheduling: the
//! limit of this I/O path), (b) xvs's pipeline for NAT, DR, TUN and FullNAT with a scheduler,
//! built from a generated configuration exactly as `xvs run` builds it, (c) the kernel's IPv4
//! forwarding through the director namespace, (d) nftables DNAT load balancing
//! (`dnat to numgen inc mod 3 map {…}` + snat, with conntrack). Kernel IPVS is not in this host's
//! kernel (TESTBED.md); the QEMU guest of `xvs-bench parity` covers decisions only.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use xvs::config::Config;
use xvs::io::sys::NetnsGuard;
use xvs::runtime::{attach, WorkerHandle};
use xvs::worker::{Dataplane, DirectorTargets, FrameProcessor, WorkerStats};
use xvs_forwarding::{Frame, Pipeline, PortId, Time, Verdict};

use crate::sink::{nft, nsexec};
use crate::traffic::csum_update;

pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 3, 11),
    Ipv4Addr::new(198, 18, 3, 12),
    Ipv4Addr::new(198, 18, 3, 13),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Bounce,
    Xvs {
        method: &'static str,
        scheduler: String,
    },
    Kernel,
    Nft,
}

impl Target {
    pub fn name(&self) -> String {
        match self {
            Target::Bounce => "bounce".into(),
            Target::Xvs { method, scheduler } => format!("xvs-{method}-{scheduler}"),
            Target::Kernel => "kernel-fwd".into(),
            Target::Nft => "nft-dnat".into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Bounce => "bounce",
            Target::Xvs { .. } => "xvs",
            Target::Kernel => "kernel",
            Target::Nft => "nft",
        }
    }

    /// Parse `bounce`, `kernel`, `nft`, `xvs-<method>-<scheduler>`.
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "bounce" => Some(Target::Bounce),
            "kernel" | "kernel-fwd" => Some(Target::Kernel),
            "nft" | "nft-dnat" => Some(Target::Nft),
            _ => {
                let rest = s.strip_prefix("xvs-")?;
                let (m, sched) = rest.split_once('-')?;
                let method = METHODS.iter().find(|x| **x == m)?;
                if sched.is_empty() || !sched.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return None;
                }
                Some(Target::Xvs {
                    method,
                    scheduler: sched.to_string(),
                })
            }
        }
    }

    /// Destination address of the benchmark traffic.
    pub fn dst(&self) -> Ipv4Addr {
        match self {
            Target::Bounce | Target::Nft => Ipv4Addr::new(198, 18, 10, 1),
            Target::Xvs { method, .. } => vip(method),
            Target::Kernel => BACKENDS[0],
        }
    }
}

pub const METHODS: [&str; 4] = ["nat", "dr", "tun", "fullnat"];

pub fn vip(method: &str) -> Ipv4Addr {
    let i = METHODS.iter().position(|m| *m == method).unwrap_or(0) as u8;
    Ipv4Addr::new(198, 18, 10, 1 + i)
}

/// The director configuration of the xvs targets: one worker on queue 0 pinned to `core`, UDP
/// and TCP port 9 (benchmark traffic) and TCP port 80 (connection churn) on every VIP with its
/// method, scheduler `scheduler`, the three backends at weight 1.
pub fn director_config(scheduler: &str, core: usize, connections: u32) -> String {
    let mut s = format!(
        "log_interval_secs = 0\nneighbour_refresh_ms = 200\n\n[director]\nconnections = {connections}\n\n\
[[worker]]\nqueue = 0\ncore = {core}\n\n\
[[interface]]\nname = \"front\"\nipv4 = \"198.18.1.2\"\n\n[[interface]]\nname = \"back\"\nipv4 = \"198.18.3.2\"\n\n\
[[route]]\ndst = \"0.0.0.0/0\"\nvia = \"198.18.1.1\"\ninterface = \"front\"\n\n\
[[route]]\ndst = \"198.18.3.0/24\"\ninterface = \"back\"\n\n\
[fullnat]\nlocal_addresses = [\"198.18.3.100\"]\n"
    );
    for m in METHODS {
        for (proto, port) in [("udp", 9), ("tcp", 9), ("tcp", 80)] {
            s += &format!(
                "\n[[service]]\nprotocol = \"{proto}\"\nvip = \"{}\"\nport = {port}\nscheduler = \"{scheduler}\"\n",
                vip(m)
            );
            for b in BACKENDS {
                s += &format!(
                    "\n[[service.backend]]\naddress = \"{b}\"\nport = {port}\nweight = 1\nmethod = \"{m}\"\n"
                );
            }
        }
    }
    s
}

/// The bare bounce: frames to the VIP from port 0 get backend 0's MAC and address and leave on
/// port 1; everything else goes to the kernel.
pub struct Bounce {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vip: [u8; 4],
    pub dst: [u8; 4],
}

impl FrameProcessor for Bounce {
    type Command = ();

    fn process(&mut self, _now: Time, ingress: PortId, frame: &mut Frame<'_>) -> Verdict {
        let d = frame.data_mut();
        if ingress != PortId(0)
            || d.len() < 14 + 20 + 8
            || d[12..14] != [0x08, 0x00]
            || d[14] != 0x45
            || d[30..34] != self.vip
        {
            return Verdict::Pass;
        }
        let w = |b: &[u8]| {
            [
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            ]
        };
        let old = w(&d[30..34]);
        let new = w(&self.dst);
        d[0..6].copy_from_slice(&self.dst_mac);
        d[6..12].copy_from_slice(&self.src_mac);
        d[30..34].copy_from_slice(&self.dst);
        let ipc = csum_update(u16::from_be_bytes([d[24], d[25]]), &old, &new);
        d[24..26].copy_from_slice(&ipc.to_be_bytes());
        let l4 = match d[23] {
            17 => Some(14 + 20 + 6),
            6 if d.len() >= 14 + 20 + 18 => Some(14 + 20 + 16),
            _ => None,
        };
        if let Some(o) = l4 {
            let c = u16::from_be_bytes([d[o], d[o + 1]]);
            if !(d[23] == 17 && c == 0) {
                let c = csum_update(c, &old, &new);
                d[o..o + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
        Verdict::Tx(PortId(1))
    }
}

/// A running in-process data plane (bounce or xvs pipeline).
pub struct Running {
    pub dp: Dataplane,
    _handles: Vec<WorkerHandle>,
}

impl Running {
    pub fn stop(self) -> Vec<WorkerStats> {
        self.dp.shutdown()
    }

    /// CPU time the worker threads have used so far (their thread CPU clocks).
    pub fn worker_cpu(&self) -> std::time::Duration {
        worker_tids().into_iter().filter_map(thread_cpu).sum()
    }
}

/// (user, system) time of the worker threads so far, from /proc (10 ms ticks).
pub fn worker_user_sys() -> (u64, u64) {
    let mut us = (0, 0);
    for tid in worker_tids() {
        let Ok(st) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = st.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 of proc_pid_stat(5); `rest` starts at field 3.
        us.0 += f.get(11).copied().unwrap_or(0) * 10_000_000;
        us.1 += f.get(12).copied().unwrap_or(0) * 10_000_000;
    }
    us
}

/// Thread ids of this process's `xvs-worker-*` threads.
fn worker_tids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with("xvs-worker-")
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// CPU time of thread `tid` of this process: the kernel's per-thread CPU clock
/// (clockid `(~tid << 3) | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED`, include/linux/posix-timers.h).
fn thread_cpu(tid: i32) -> Option<std::time::Duration> {
    let id = nix::time::ClockId::from_raw((!tid << 3) | 4 | 2);
    let t = nix::time::clock_gettime(id).ok()?;
    Some(std::time::Duration::new(
        t.tv_sec() as u64,
        t.tv_nsec() as u32,
    ))
}

fn mac(ns: &str, dev: &str) -> Result<[u8; 6], String> {
    let s = nsexec(ns, &["cat", &format!("/sys/class/net/{dev}/address")])?;
    xvs::config::parse_mac(s.trim()).ok_or_else(|| format!("bad MAC {s}"))
}

pub fn start_bounce(
    dir_ns: &str,
    b1_ns: &str,
    core: usize,
    tx_hold_us: u32,
) -> Result<Running, String> {
    let b1 = mac(b1_ns, "eth0")?;
    let back = mac(dir_ns, "back")?;
    let text = director_config("rr", core, 1024);
    let mut cfg = Config::parse(Path::new("bounce.toml"), &text).map_err(|e| e.to_string())?;
    cfg.dataplane.afxdp.tx_hold_us = tx_hold_us;
    let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1));
    let targets = DirectorTargets {
        vips: vec![vip],
        ..DirectorTargets::default()
    };
    let _g = NetnsGuard::enter(dir_ns).map_err(|e| e.to_string())?;
    let dp = Dataplane::start(&cfg.dataplane, &targets, |_, _, _| Bounce {
        src_mac: back,
        dst_mac: b1,
        vip: [198, 18, 10, 1],
        dst: BACKENDS[0].octets(),
    })
    .map_err(|e| format!("bounce data plane: {}", chain(&e)))?;
    Ok(Running {
        dp,
        _handles: Vec::new(),
    })
}

pub fn start_xvs(
    dir_ns: &str,
    scheduler: &str,
    core: usize,
    tx_hold_us: u32,
) -> Result<Running, String> {
    let text = director_config(scheduler, core, 1 << 20);
    let mut cfg = Config::parse(Path::new("xvs-bench.toml"), &text).map_err(|e| e.to_string())?;
    cfg.dataplane.afxdp.tx_hold_us = tx_hold_us;
    let t = xvs::director::targets(&cfg, &cfg.services);
    let workers = cfg.dataplane.workers.len() as u16;
    let mut handles = Vec::new();
    let mut err = None;
    let _g = NetnsGuard::enter(dir_ns).map_err(|e| e.to_string())?;
    let dp = Dataplane::start(&cfg.dataplane, &t, |w, ports, inbox| {
        let macs: Vec<[u8; 6]> = ports.iter().map(|p| p.mac).collect();
        let pipe = match Pipeline::new(
            cfg.live_pipeline_config(w as u16, workers),
            &cfg.services,
            cfg.marks.clone(),
            cfg.network(&macs),
        ) {
            Ok(p) => p,
            Err(e) => {
                err = Some(format!("pipeline: {e:?}"));
                Pipeline::new(
                    cfg.pipeline_config(w as u16, workers),
                    &[],
                    vec![],
                    cfg.network(&macs),
                )
                .expect("an empty pipeline")
            }
        };
        let (p, h) = attach(pipe, inbox);
        handles.push(h);
        p
    })
    .map_err(|e| format!("xvs data plane: {}", chain(&e)))?;
    if let Some(e) = err {
        let _ = dp.shutdown();
        return Err(e);
    }
    Ok(Running {
        dp,
        _handles: handles,
    })
}

/// An error with its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

pub fn kernel_forwarding(dir_ns: &str, on: bool) -> Result<(), String> {
    nsexec(
        dir_ns,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv4.ip_forward={}", u8::from(on)),
        ],
    )
    .map(|_| ())
}

pub fn nft_lb(dir_ns: &str, on: bool) -> Result<(), String> {
    let _ = nsexec(dir_ns, &["nft", "delete", "table", "ip", "xvsbench_lb"]);
    if !on {
        return kernel_forwarding(dir_ns, false);
    }
    nft(
        dir_ns,
        &format!(
            "table ip xvsbench_lb {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 198.18.10.1 meta l4proto {{ tcp, udp }} th dport {{ 9, 80 }} dnat to numgen inc mod 3 map {{ 0 : {}, 1 : {}, 2 : {} }}
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr 198.18.3.0/24 oifname \"back\" snat to 198.18.3.2
  }}
}}
",
            BACKENDS[0], BACKENDS[1], BACKENDS[2]
        ),
    )?;
    kernel_forwarding(dir_ns, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{templates, Endpoints, Profile};

    #[test]
    fn target_names_round_trip() {
        for t in [
            Target::Bounce,
            Target::Kernel,
            Target::Nft,
            Target::Xvs {
                method: "fullnat",
                scheduler: "mh".into(),
            },
        ] {
            assert_eq!(Target::parse(&t.name()), Some(t));
        }
        for bad in [
            "",
            "xvs-",
            "xvs-nat",
            "xvs-foo-rr",
            "xvs-nat-",
            "xvs-nat-r r",
            "ipvs",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
        assert_eq!(vip("dr"), Ipv4Addr::new(198, 18, 10, 2));
    }

    #[test]
    fn director_config_parses() {
        let cfg = Config::parse(Path::new("t.toml"), &director_config("mh", 0, 4096)).unwrap();
        assert_eq!(cfg.services.len(), 12);
        assert_eq!(cfg.connections, 4096);
    }

    #[test]
    fn bounce_rewrites_to_the_backend_with_valid_checksums() {
        let ep = Endpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(198, 18, 1, 10),
            dst_ip: Ipv4Addr::new(198, 18, 10, 1),
        };
        let mut b = Bounce {
            src_mac: [2, 0, 0, 0, 0, 3],
            dst_mac: [2, 0, 0, 0, 0, 4],
            vip: [198, 18, 10, 1],
            dst: BACKENDS[0].octets(),
        };
        for p in [Profile::Udp64, Profile::SynFlood] {
            let t = templates(&p, &ep, 1).unwrap();
            let mut buf = t.frames[0].clone();
            let mut f = Frame::whole(&mut buf);
            assert_eq!(
                b.process(Time::default(), PortId(0), &mut f),
                Verdict::Tx(PortId(1))
            );
            let p = etherparse::SlicedPacket::from_ethernet(f.data()).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            let h = ip.header().to_header();
            assert_eq!(h.destination, BACKENDS[0].octets());
            assert_eq!(h.calc_header_checksum(), h.header_checksum);
            match p.transport.unwrap() {
                etherparse::TransportSlice::Udp(u) => assert_eq!(
                    u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
                    u.checksum()
                ),
                etherparse::TransportSlice::Tcp(t) => assert_eq!(
                    t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(),
                    t.checksum()
                ),
                _ => panic!("no transport"),
            }
            assert_eq!(&f.data()[0..6], &[2, 0, 0, 0, 0, 4]);
        }
        // Other ports, other destinations, short or garbage frames go to the kernel.
        let t = templates(&Profile::Udp64, &ep, 1).unwrap();
        let mut buf = t.frames[0].clone();
        assert_eq!(
            b.process(Time::default(), PortId(1), &mut Frame::whole(&mut buf)),
            Verdict::Pass
        );
        for n in [0usize, 1, 14, 41] {
            let mut buf = t.frames[0][..n].to_vec();
            assert_eq!(
                b.process(Time::default(), PortId(0), &mut Frame::whole(&mut buf)),
                Verdict::Pass
            );
        }
    }
}
