//! `xvs-bench run`: build a testbed (scripts/testbed.sh under its own prefix), then for every
//! target and traffic profile: start the target, start the latency samplers, run the AF_XDP
//! generator pinned to the generator core in the client namespace, print a progress line, and
//! take the figures — delivered pps and loss from the sinks' counters, the worker's CPU time per
//! forwarded frame (xvs's own busy accounting for the bounce and xvs; softirq time of the
//! forwarding core from /proc/stat for the kernel baselines, with RPS steering the director's
//! receive work to that core), latency percentiles, TCP connections/s (real sockets from many
//! source ports, HTTP/1.0 GET to the testbed's servers) and, in the full mode, the peak memory
//! (VmHWM) of an `xvs run` process holding 1 M and 10 M connections opened by a SYN flood.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xvs::io::sys::NetnsGuard;

use crate::gen::{self, GenLive, GenSpec};
use crate::report::{Latency, MemoryResult, Report, TargetResult};
use crate::sink;
use crate::targets::{self, Target, BACKENDS};
use crate::traffic::{self, Endpoints, Profile};

pub struct Options {
    pub quick: bool,
    pub targets: Vec<Target>,
    pub profiles: Vec<Profile>,
    pub secs: f64,
    pub flows: u32,
    pub out: PathBuf,
    pub readme: Option<PathBuf>,
    pub churn_secs: f64,
    pub memory: Vec<u32>,
    pub sample: u32,
    /// Generator frames per second (0: as fast as it can).
    pub rate: u64,
    pub worker_core: usize,
    pub gen_core: usize,
    pub xvs_bin: PathBuf,
    /// Interleaved rounds: every target once per round, the order rotated by one each round.
    pub rounds: u32,
    /// `afxdp.tx_hold_us` of the bounce and xvs targets.
    pub tx_hold_us: u32,
}

pub fn default_targets(quick: bool) -> Vec<Target> {
    let mut v = vec![Target::Bounce];
    let scheds: &[&str] = if quick { &["rr"] } else { &["rr", "wlc", "mh"] };
    for m in targets::METHODS {
        for s in scheds {
            v.push(Target::Xvs {
                method: m,
                scheduler: s.to_string(),
            });
        }
    }
    v.push(Target::Kernel);
    v.push(Target::Nft);
    v
}

pub(crate) struct Bed {
    prefix: String,
    script: PathBuf,
}

impl Bed {
    pub(crate) fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", &self.prefix])
            .stdout(Stdio::null())
            .status();
    }
}

pub(crate) fn up(repo: &std::path::Path) -> Result<Bed, String> {
    let prefix = format!("xb{:x}", std::process::id() % 0xfff);
    let script = repo.join("scripts/testbed.sh");
    let _ = Command::new(&script)
        .args(["down", &prefix])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let st = Command::new(&script)
        .args(["up", &prefix])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("testbed.sh: {e}"))?;
    let bed = Bed { prefix, script };
    if !st.success() {
        return Err("testbed.sh up failed".into());
    }
    // Everything towards the director on one queue (the worker serves queue 0).
    for dev in ["df", "db"] {
        sink::nsexec(&bed.ns("rt"), &["ethtool", "-L", dev, "tx", "1"])?;
    }
    // One queue on the director's side too (no "queue without a worker" warnings).
    for dev in ["front", "back"] {
        let _ = sink::nsexec(
            &bed.ns("dir"),
            &["ethtool", "-L", dev, "rx", "1", "tx", "1"],
        );
    }
    // The director's kernel receive work (kernel baselines) on the worker core.
    sink::nsexec(
        &bed.ns("dir"),
        &[
            "sh",
            "-c",
            "for q in /sys/class/net/*/queues/rx-*/rps_cpus; do echo 1 > $q; done",
        ],
    )?;
    for b in BACKENDS {
        let _ = sink::nsexec(&bed.ns("dir"), &["ping", "-c1", "-W1", &b.to_string()]);
    }
    Ok(bed)
}

/// (softirq, all non-idle) time of `core` so far, from /proc/stat (USER_HZ = 100 ticks).
fn cpu_times(core: usize) -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let key = format!("cpu{core} ");
    let tick_ns = 1_000_000_000 / 100;
    let Some(f) = s.lines().find(|l| l.starts_with(&key)).map(|l| {
        l.split_whitespace()
            .skip(1)
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    }) else {
        return (0, 0);
    };
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
    (g(6) * tick_ns, busy * tick_ns)
}

pub(crate) fn mac(ns: &str, dev: &str) -> Result<[u8; 6], String> {
    let s = sink::nsexec(ns, &["cat", &format!("/sys/class/net/{dev}/address")])?;
    xvs::config::parse_mac(s.trim()).ok_or_else(|| format!("bad MAC {s}"))
}

fn sink_total(bed: &Bed) -> Result<Vec<u64>, String> {
    (1..=3)
        .map(|i| sink::count(&bed.ns(&format!("b{i}"))))
        .collect()
}

/// What an in-process target's workers counted over their life: frames received, busy time,
/// and the I/O's system calls by name.
struct Stopped {
    rx: u64,
    busy: Duration,
    syscalls: Vec<(String, u64)>,
    frames_per_batch: Option<f64>,
    frames_per_kick: Option<f64>,
}

fn stop_target(t: &Target, bed: &Bed, running: Option<targets::Running>) -> Option<Stopped> {
    let stats = running.map(|r| r.stop());
    match t {
        Target::Kernel => {
            let _ = targets::kernel_forwarding(&bed.ns("dir"), false);
        }
        Target::Nft => {
            let _ = targets::nft_lb(&bed.ns("dir"), false);
        }
        _ => {}
    }
    stats.map(|s| {
        let mut io = xvs::io::IoCounters::default();
        let mut busy = Duration::ZERO;
        for w in &s {
            io.add(&w.io);
            busy += w.busy;
        }
        Stopped {
            rx: io.rx,
            busy,
            syscalls: io
                .syscalls()
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            frames_per_batch: io.frames_per_batch(),
            frames_per_kick: io.frames_per_kick(),
        }
    })
}

fn start_target(t: &Target, bed: &Bed, o: &Options) -> Result<Option<targets::Running>, String> {
    // The kernel releases a closed AF_XDP socket's queue binding in deferred work: the previous
    // target's socket can hold the queue for a moment (EBUSY). Retry a few times.
    let mut tries = 0;
    loop {
        match start_target_once(t, bed, o) {
            Err(e) if e.contains("busy") && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            r => return r,
        }
    }
}

fn start_target_once(
    t: &Target,
    bed: &Bed,
    o: &Options,
) -> Result<Option<targets::Running>, String> {
    let r = match t {
        Target::Bounce => Some(targets::start_bounce(
            &bed.ns("dir"),
            &bed.ns("b1"),
            o.worker_core,
            o.tx_hold_us,
        )?),
        Target::Xvs { scheduler, .. } => Some(targets::start_xvs(
            &bed.ns("dir"),
            scheduler,
            o.worker_core,
            o.tx_hold_us,
        )?),
        Target::Kernel => {
            targets::kernel_forwarding(&bed.ns("dir"), true)?;
            None
        }
        Target::Nft => {
            targets::nft_lb(&bed.ns("dir"), true)?;
            None
        }
    };
    // Neighbours resolved and published to the workers (refresh every 200 ms).
    std::thread::sleep(Duration::from_millis(700));
    Ok(r)
}

fn measure(
    t: &Target,
    profile: &Profile,
    bed: &Bed,
    o: &Options,
    epoch: Instant,
) -> Result<TargetResult, String> {
    let ep = Endpoints {
        src_mac: mac(&bed.ns("c1"), "eth0")?,
        dst_mac: mac(&bed.ns("dir"), "front")?,
        src_ip: "198.18.1.10".parse().expect("literal"),
        dst_ip: t.dst(),
    };
    let templates = traffic::templates(profile, &ep, o.flows)?;
    let running = start_target(t, bed, o)?;
    let result = (|| {
        let c0 = sink_total(bed)?;
        let (sirq0, core0) = cpu_times(o.worker_core);
        let cpu0 = running.as_ref().map(|r| r.worker_cpu());
        let us0 = targets::worker_user_sys();
        let samplers = sink::Samplers::start(
            &(1..=3)
                .map(|i| bed.ns(&format!("b{i}")))
                .collect::<Vec<_>>(),
            epoch,
        )?;
        let live = Arc::new(GenLive::default());
        let spec = GenSpec {
            netns: bed.ns("c1"),
            ifname: "eth0".into(),
            core: Some(o.gen_core),
            templates,
            duration: Duration::from_secs_f64(o.secs),
            max_frames: 0,
            rate: o.rate,
            epoch,
            seed: 0x9e37_79b9_7f4a_7c15,
        };
        let l2 = live.clone();
        let g = std::thread::spawn(move || gen::run(spec, l2));
        let started = Instant::now();
        while !g.is_finished() {
            std::thread::sleep(Duration::from_millis(250));
            let e = started.elapsed().as_secs_f64();
            eprint!(
                "\r  {:<18} {:<8} {:4.1}/{:.1} s  sent {:>9.0} pps  latency samples {:>7}   ",
                t.name(),
                profile.name(),
                e.min(o.secs),
                o.secs,
                live.sent.load(Ordering::Relaxed) as f64 / e.max(0.001),
                samplers.received.load(Ordering::Relaxed),
            );
        }
        eprintln!();
        let gr = g.join().map_err(|_| "generator panicked".to_string())??;
        std::thread::sleep(Duration::from_millis(300));
        let (sirq1, core1) = cpu_times(o.worker_core);
        let cpu1 = running.as_ref().map(|r| r.worker_cpu());
        let us1 = targets::worker_user_sys();
        let c1 = sink_total(bed)?;
        let hist = samplers.finish();
        let per_backend: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
        let delivered: u64 = per_backend.iter().sum();
        let secs = gr.elapsed.as_secs_f64().max(1e-3);
        let latency = (!hist.is_empty()).then(|| Latency {
            samples: hist.len(),
            p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
            p90_us: hist.value_at_quantile(0.9) as f64 / 1e3,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
            p999_us: hist.value_at_quantile(0.999) as f64 / 1e3,
            max_us: hist.max() as f64 / 1e3,
        });
        Ok::<_, String>(TargetResult {
            target: t.name(),
            kind: t.kind().into(),
            traffic: profile.name().into(),
            secs,
            sent: gr.sent,
            delivered,
            sent_pps: gr.sent as f64 / secs,
            delivered_pps: delivered as f64 / secs,
            loss: if gr.sent > 0 {
                1.0 - (delivered as f64 / gr.sent as f64).min(1.0)
            } else {
                0.0
            },
            ns_per_pkt: None,
            cpu_source: String::new(),
            worker_rx: None,
            per_backend,
            latency,
            conns_per_s: None,
            softirq_ns: sirq1.saturating_sub(sirq0),
            core_ns: core1.saturating_sub(core0),
            worker_user_share: running.as_ref().and_then(|_| {
                let u = us1.0.saturating_sub(us0.0) as f64;
                let t = u + us1.1.saturating_sub(us0.1) as f64;
                (t > 0.0).then(|| u / t)
            }),
            worker_cpu_ns: cpu0
                .zip(cpu1)
                .map(|(a, b)| b.saturating_sub(a).as_nanos() as u64),
            busy_ns_per_pkt: None,
            round: 0,
            user_ns_per_pkt: running.as_ref().and_then(|_| {
                (delivered > 0).then(|| us1.0.saturating_sub(us0.0) as f64 / delivered as f64)
            }),
            sys_ns_per_pkt: running.as_ref().and_then(|_| {
                (delivered > 0).then(|| us1.1.saturating_sub(us0.1) as f64 / delivered as f64)
            }),
            syscalls: vec![],
            syscalls_per_frame: None,
            frames_per_batch: None,
            frames_per_kick: None,
            error: None,
        })
    })();
    let stats = stop_target(t, bed, running);
    let mut r = result?;
    match stats {
        Some(Stopped {
            rx,
            busy,
            syscalls,
            frames_per_batch,
            frames_per_kick,
        }) => {
            r.worker_rx = Some(rx);
            r.frames_per_batch = frames_per_batch;
            r.frames_per_kick = frames_per_kick;
            let calls: u64 = syscalls.iter().map(|(_, n)| n).sum();
            r.syscalls_per_frame = (rx > 0).then(|| calls as f64 / rx as f64);
            r.syscalls = syscalls;
            let d = r.delivered as f64;
            r.busy_ns_per_pkt = (r.delivered > 0).then(|| busy.as_nanos() as f64 / d);
            r.ns_per_pkt = r
                .worker_cpu_ns
                .filter(|_| r.delivered > 0)
                .map(|c| c as f64 / d);
            r.cpu_source = "worker thread CPU clock".into();
        }
        None => {
            r.ns_per_pkt = (r.delivered > 0).then(|| r.softirq_ns as f64 / r.delivered as f64);
            r.cpu_source = format!("softirq time of cpu{} (/proc/stat, RPS)", o.worker_core);
        }
    }
    Ok(r)
}

/// Connections per second: `threads` real TCP clients in the client namespace, each a loop of
/// connect, HTTP/1.0 GET, read to the end, close, for `secs`.
fn churn(bed: &Bed, t: &Target, o: &Options) -> Result<f64, String> {
    let c1 = bed.ns("c1");
    let addrs: Vec<SocketAddr> = match t {
        Target::Kernel => {
            sink::nsexec(
                &c1,
                &[
                    "ip",
                    "route",
                    "replace",
                    "198.18.3.0/24",
                    "via",
                    "198.18.1.2",
                ],
            )?;
            BACKENDS
                .iter()
                .map(|b| SocketAddr::from((*b, 80)))
                .collect()
        }
        _ => vec![SocketAddr::from((t.dst(), 80))],
    };
    let running = start_target(t, bed, o)?;
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut th = Vec::new();
    for k in 0..8 {
        let (ok, stop, addrs, c1) = (ok.clone(), stop.clone(), addrs.clone(), c1.clone());
        th.push(std::thread::spawn(move || {
            let Ok(_g) = NetnsGuard::enter(&c1) else {
                return;
            };
            let mut i = k;
            let mut buf = Vec::with_capacity(512);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let a = addrs[i % addrs.len()];
                let Ok(mut s) = TcpStream::connect_timeout(&a, Duration::from_secs(1)) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                buf.clear();
                if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_to_end(&mut buf).is_ok()
                    && buf.starts_with(b"HTTP/1.0 200")
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.churn_secs));
    stop.store(true, Ordering::Relaxed);
    for h in th {
        let _ = h.join();
    }
    let el = start.elapsed().as_secs_f64();
    let _ = stop_target(t, bed, running);
    if *t == Target::Kernel {
        let _ = sink::nsexec(&c1, &["ip", "route", "del", "198.18.3.0/24"]);
    }
    Ok(ok.load(Ordering::Relaxed) as f64 / el)
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Connections (active + inactive) the director holds for the NAT VIP's TCP port 9 service,
/// from `xvs ctl -Ln -t 198.18.10.1:9` (ipvsadm's columns: the last two of each backend line).
fn held_connections(xvs: &std::path::Path, sock: &std::path::Path) -> Option<u64> {
    let o = Command::new(xvs)
        .args(["ctl", "-Ln", "-t", "198.18.10.1:9", "--socket"])
        .arg(sock)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut total = None;
    for l in text.lines().filter(|l| l.trim_start().starts_with("->")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        // The header line ("-> RemoteAddress:Port … ActiveConn InActConn") does not parse.
        if let (Some(Ok(a)), Some(Ok(i))) = (
            f.len().checked_sub(2).map(|k| f[k].parse::<u64>()),
            f.last().map(|v| v.parse::<u64>()),
        ) {
            total = Some(total.unwrap_or(0) + a + i);
        }
    }
    total
}

/// Peak memory of an `xvs run` process (the real binary) whose table holds `n` connections
/// opened by a SYN flood from distinct sources to the NAT VIP's TCP port 9.
fn memory(bed: &Bed, o: &Options, n: u32, epoch: Instant) -> Result<MemoryResult, String> {
    let dir = std::env::temp_dir().join(format!("xvs-bench-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let conf = dir.join("xvs.toml");
    std::fs::write(
        &conf,
        targets::director_config("rr", o.worker_core, n.saturating_add(n / 4)),
    )
    .map_err(|e| e.to_string())?;
    let sock = dir.join("ctl.sock");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &bed.ns("dir")])
        .arg(&o.xvs_bin)
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", o.xvs_bin.display()))?;
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1500));
    let base = vm_kib(pid, "VmHWM:");
    let ep = Endpoints {
        src_mac: mac(&bed.ns("c1"), "eth0")?,
        dst_mac: mac(&bed.ns("dir"), "front")?,
        src_ip: "198.18.1.10".parse().expect("literal"),
        dst_ip: targets::vip("nat"),
    };
    let c0 = sink_total(bed)?;
    let templates = traffic::templates(&Profile::SynFlood, &ep, 1)?;
    // Flood rounds until the director holds n connections: frames the worker could not take in
    // (rx ring full) are resent from new random sources, within the 60 s SYN_RECV lifetime.
    let start = Instant::now();
    let mut want = n as u64;
    let mut sent = 0u64;
    let mut rounds = 0u32;
    let mut held;
    loop {
        let live = Arc::new(GenLive::default());
        let spec = GenSpec {
            netns: bed.ns("c1"),
            ifname: "eth0".into(),
            core: Some(o.gen_core),
            templates: templates.clone(),
            duration: Duration::from_secs(60),
            max_frames: want,
            rate: o.rate,
            epoch,
            seed: 0x2545_f491_4f6c_dd1d ^ ((rounds as u64 + 1) << 40),
        };
        let l2 = live.clone();
        let g = std::thread::spawn(move || gen::run(spec, l2));
        while !g.is_finished() {
            std::thread::sleep(Duration::from_millis(500));
            eprint!(
                "\r  memory {n} connections: {:.1} s, round {}, SYNs sent {}   ",
                start.elapsed().as_secs_f64(),
                rounds + 1,
                sent + live.sent.load(Ordering::Relaxed)
            );
        }
        let gr = g.join().map_err(|_| "generator panicked".to_string())??;
        sent += gr.sent;
        rounds += 1;
        std::thread::sleep(Duration::from_millis(1000));
        held = held_connections(&o.xvs_bin, &sock);
        let Some(h) = held else { break };
        if h >= n as u64 * 99 / 100 || rounds >= 4 || start.elapsed() > Duration::from_secs(45) {
            break;
        }
        want = (n as u64 - h) * 11 / 10 + 1000;
    }
    eprintln!();
    let c1 = sink_total(bed)?;
    let hwm = vm_kib(pid, "VmHWM:");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(MemoryResult {
        connections: n,
        syns_sent: sent,
        syns_delivered: c1.iter().sum::<u64>() - c0.iter().sum::<u64>(),
        table_capacity: n.saturating_add(n / 4),
        vmhwm_before_kib: base,
        vmhwm_kib: hwm,
        held,
        rounds,
    })
}

/// One round: every target in `order` with every traffic profile.
fn measure_round(
    o: &Options,
    order: &[&Target],
    round: u32,
    bed: &Bed,
    epoch: Instant,
    results: &mut Vec<TargetResult>,
) {
    for p in &o.profiles {
        for &t in order {
            if matches!(p, Profile::Pcap(_) | Profile::Imix | Profile::SynFlood)
                && !(matches!(t, Target::Bounce | Target::Kernel | Target::Nft)
                    || *t
                        == Target::Xvs {
                            method: "nat",
                            scheduler: "rr".into(),
                        })
            {
                // The other traffic profiles go through (a), (c), (d) and xvs NAT rr only.
                continue;
            }
            match measure(t, p, bed, o, epoch) {
                Ok(mut r) => {
                    r.round = round;
                    results.push(r);
                }
                Err(e) => {
                    eprintln!("  {} {}: {e}", t.name(), p.name());
                    let mut r = TargetResult::failed(t, p.name(), e);
                    r.round = round;
                    results.push(r);
                }
            }
        }
    }
}

pub fn run(o: &Options) -> Result<Report, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = Instant::now();
    let bed = up(&repo)?;
    for i in 1..=3 {
        sink::install(&bed.ns(&format!("b{i}")), o.sample)?;
    }
    let epoch = Instant::now();
    let mut results = Vec::new();
    for round in 0..o.rounds.max(1) {
        // Rotated order: each target runs at a different place in each round, so a slow phase
        // of the shared machine does not always hit the same target.
        let mut order: Vec<&Target> = o.targets.iter().collect();
        if !order.is_empty() {
            let k = round as usize % order.len();
            order.rotate_left(k);
        }
        if o.rounds > 1 {
            eprintln!("round {}/{}", round + 1, o.rounds);
        }
        measure_round(o, &order, round, &bed, epoch, &mut results);
    }
    if o.churn_secs > 0.0 {
        for t in &o.targets {
            if *t == Target::Bounce {
                continue;
            }
            match churn(&bed, t, o) {
                Ok(c) => {
                    eprintln!("  {:<18} tcp churn {c:.0} connections/s", t.name());
                    if let Some(r) = results
                        .iter_mut()
                        .find(|r| r.target == t.name() && r.traffic == "udp64")
                    {
                        r.conns_per_s = Some(c);
                    }
                }
                Err(e) => eprintln!("  {} churn: {e}", t.name()),
            }
        }
    }
    let mut mem = Vec::new();
    for &n in &o.memory {
        match memory(&bed, o, n, epoch) {
            Ok(m) => mem.push(m),
            Err(e) => eprintln!("  memory {n}: {e}"),
        }
    }
    for i in 1..=3 {
        sink::remove(&bed.ns(&format!("b{i}")));
    }
    drop(bed);
    Ok(Report::new(
        if o.quick { "quick" } else { "full" },
        o.secs,
        o.flows,
        results,
        mem,
        started.elapsed().as_secs_f64(),
    ))
}

/// `xvs-bench run`'s options (parsed by clap).
#[derive(clap::Args, Debug)]
#[command(after_help = "\
targets: bounce, xvs-<nat|dr|tun|fullnat>-<scheduler>, kernel, nft (default: all; quick: rr only)
traffic: udp64, imix, synflood, pcap (default full: all four; quick: udp64)
full mode default: 5 s per target, 1000 flows, churn 3 s, memory 1000000,10000000")]
pub struct RunArgs {
    /// Under 60 s: bounce, the four methods with rr, both kernel baselines, 1 s each, udp64.
    #[arg(long)]
    quick: bool,
    /// Targets to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_target, value_name = "T,..")]
    targets: Option<Vec<Target>>,
    /// Traffic profiles, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "P,..")]
    traffic: Option<Vec<String>>,
    /// Seconds per target and profile (default 5; quick 1).
    #[arg(long, value_parser = positive_secs, value_name = "S")]
    secs: Option<f64>,
    /// Flows of the generated traffic.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    flows: u32,
    /// Where results.json, results.md and results.svg go (default target/xvs-bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the results table and plot into this README.
    #[arg(long, value_name = "FILE")]
    readme: Option<PathBuf>,
    /// Seconds of TCP connection churn per target (default 3; quick 0).
    #[arg(long, value_parser = nonnegative_secs, value_name = "S")]
    churn_secs: Option<f64>,
    /// Connection counts for the memory runs, comma-separated, or "none".
    #[arg(long, value_delimiter = ',', value_parser = parse_memory, value_name = "N,..")]
    memory: Option<Vec<u32>>,
    /// One UDP frame in N reaches the latency sampler.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    sample: u32,
    /// Cap on the generator's frames per second (0: as fast as it can; latency then measures
    /// queueing).
    #[arg(long, default_value_t = 0, value_name = "PPS")]
    rate: u64,
    /// CPU of the xvs worker.
    #[arg(long, default_value_t = 0, value_name = "C")]
    worker_core: usize,
    /// CPU of the generator.
    #[arg(long = "generator-core", default_value_t = 1, value_name = "C")]
    gen_core: usize,
    /// The xvs binary (default: beside xvs-bench).
    #[arg(long = "xvs", value_name = "PATH")]
    xvs_bin: Option<PathBuf>,
    /// Interleaved rounds (every target once per round, order rotated; ratios as median and
    /// min–max over the rounds). Default 3; quick 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    rounds: Option<u32>,
    /// `afxdp.tx_hold_us` for the bounce and the xvs targets: how long a transmit of fewer than
    /// 32 frames may wait for later rounds before it is kicked (0: kick every round).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000), value_name = "US")]
    tx_hold_us: u32,
    /// Capture replayed by the pcap profile (added to the profiles if absent).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse(s).ok_or_else(|| format!("unknown target {s}"))
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s} is not a positive number of seconds")),
    }
}

fn nonnegative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s} is not a number of seconds")),
    }
}

/// One `--memory` item: a positive count, or 0 for "none" (dropped after parsing).
fn parse_memory(s: &str) -> Result<u32, String> {
    match s {
        "none" | "" => Ok(0),
        _ => match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("bad --memory {s}")),
        },
    }
}

/// `xvs-bench run …`: run, write JSON / markdown / SVG (and README with --readme).
pub fn main(args: RunArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let quick = args.quick;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("xvs")))
        .unwrap_or_else(|| PathBuf::from("xvs"));
    let pcap = repo.join("examples/demo/capture.pcap");
    let mut profiles = if quick {
        vec![Profile::Udp64]
    } else {
        vec![
            Profile::Udp64,
            Profile::Imix,
            Profile::SynFlood,
            Profile::Pcap(pcap.clone()),
        ]
    };
    if let Some(names) = &args.traffic {
        profiles.clear();
        for s in names {
            profiles.push(match s.as_str() {
                "udp64" => Profile::Udp64,
                "imix" => Profile::Imix,
                "synflood" => Profile::SynFlood,
                "pcap" => Profile::Pcap(pcap.clone()),
                _ => {
                    eprintln!("xvs-bench run: unknown traffic {s} (udp64, imix, synflood, pcap)");
                    return ExitCode::from(2);
                }
            });
        }
    }
    if let Some(file) = &args.pcap {
        for p in profiles.iter_mut() {
            if let Profile::Pcap(f) = p {
                *f = file.clone();
            }
        }
        if !profiles.iter().any(|p| matches!(p, Profile::Pcap(_))) {
            profiles.push(Profile::Pcap(file.clone()));
        }
    }
    let o = Options {
        quick,
        targets: args.targets.unwrap_or_else(|| default_targets(quick)),
        profiles,
        secs: args.secs.unwrap_or(if quick { 1.0 } else { 5.0 }),
        flows: args.flows,
        out: args.out.unwrap_or_else(|| repo.join("target/xvs-bench")),
        readme: args.readme,
        churn_secs: args.churn_secs.unwrap_or(if quick { 0.0 } else { 3.0 }),
        memory: match args.memory {
            Some(m) => m.into_iter().filter(|n| *n > 0).collect(),
            None if quick => vec![],
            None => vec![1_000_000, 10_000_000],
        },
        sample: args.sample,
        rate: args.rate,
        worker_core: args.worker_core,
        gen_core: args.gen_core,
        rounds: args.rounds.unwrap_or(if quick { 1 } else { 3 }),
        tx_hold_us: args.tx_hold_us,
        xvs_bin: args.xvs_bin.unwrap_or(sibling),
    };
    eprintln!(
        "xvs-bench run: {} target(s) × {} traffic profile(s) × {} round(s), {:.1} s each; worker core {}, generator core {}",
        o.targets.len(),
        o.profiles.len(),
        o.rounds,
        o.secs,
        o.worker_core,
        o.gen_core
    );
    let mut report = match run(&o) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xvs-bench run: {e}");
            return ExitCode::from(2);
        }
    };
    report.command = std::iter::once("xvs-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let md = report.markdown();
    print!("{md}");
    println!("\nGoals (printed, not asserted):");
    for g in &report.goals {
        println!("- {g}");
    }
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("xvs-bench run: {}: {e}", o.out.display());
        return ExitCode::from(2);
    }
    let svg = o.out.join("results.svg");
    let writes = [
        std::fs::write(o.out.join("results.json"), report.json()).map_err(|e| e.to_string()),
        std::fs::write(o.out.join("results.md"), &md).map_err(|e| e.to_string()),
        report.svg(&svg),
    ];
    for w in writes {
        if let Err(e) = w {
            eprintln!("xvs-bench run: writing results: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(readme) = &o.readme {
        let text = std::fs::read_to_string(readme).unwrap_or_default();
        // The plot path as the README sees it (relative when under the README's folder).
        let base = readme.parent().unwrap_or(std::path::Path::new("."));
        let plot = svg
            .canonicalize()
            .ok()
            .and_then(|p| {
                base.canonicalize()
                    .ok()
                    .and_then(|b| p.strip_prefix(b).ok().map(|r| r.to_path_buf()))
            })
            .unwrap_or(svg.clone());
        let new = crate::report::write_readme(&text, &md, &plot.to_string_lossy());
        if let Err(e) = std::fs::write(readme, new) {
            eprintln!("xvs-bench run: {}: {e}", readme.display());
            return ExitCode::from(2);
        }
    }
    println!("(results in {})", o.out.display());
    // Every target that ran must have forwarded something.
    if report.results.iter().any(|r| r.delivered == 0) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
