//! `xvs-bench flood`: the "flood + legitimate" scenario of issue 16. For each defence setting
//! (none; the embryonic budget; IPVS's `drop_entry` + `secure_tcp`; the SYN proxy) a fresh
//! `xvs run` (the real binary, one worker pinned to the worker core, a small connection table)
//! serves the NAT VIP's TCP port 80 while the AF_XDP generator (pinned to the generator core)
//! floods that same port with SYNs from random spoofed sources at its full rate, and real
//! clients in the client namespace open connections to it (connect timeout 1 s, then an HTTP/1.0
//! GET of the backend's page). Reported per setting: SYNs sent, legitimate connections that
//! completed the GET out of those tried, their connect latency (p50, p99), the table's peak
//! occupancy (`xvs ctl status`, sampled every 200 ms), the worker's busy share (its own
//! accounting: time in polls that received frames) and busy time per received frame during the
//! flood, and the process's CPU time per received frame (utime + stime over the run / frames;
//! the worker busy-polls, so this includes idle polling).
//!
//! `xvs-bench flood [--secs S] [--connections N] [--rate PPS] [--clients K]
//! [--connect-timeout S] [--only NAME,…] [--xvs PATH]`; needs root. A legitimate connection
//! counts when connect() succeeds within the timeout (1 s by default: a client whose SYN or
//! SYN-ACK is lost once fails; 3 s lets it retransmit its SYN once, as every TCP stack does
//! after 1 s) and the GET is answered. Also reported: the frames the director received against
//! those sent to it (generator and clients), and the worker's AF_XDP ring drops (`io drops`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xvs::io::sys::NetnsGuard;

use crate::gen::{self, GenLive, GenSpec};
use crate::run;
use crate::targets;
use crate::traffic::{self, Endpoints, Profile};

struct Opts {
    secs: f64,
    connections: u32,
    rate: u64,
    clients: usize,
    connect_timeout: Duration,
    only: Vec<String>,
    /// The method of the flooded service (`nat`, `dr`, `tun`, `fullnat`).
    method: String,
    /// The services' scheduler.
    scheduler: String,
    /// AF_XDP ring entries of the director (0: its default).
    ring_size: u32,
    xvs: PathBuf,
}

/// One defence setting: a name and the configuration text it adds.
fn settings() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "no defence",
            "\n[defense]\nembryonic_share = 0\nstrict_handshake = false\n",
        ),
        (
            "eviction at a full table only",
            "\n[defense]\nembryonic_share = 100\n",
        ),
        ("embryonic budget (50 %)", "\n[defense]\n"),
        (
            "drop_entry=1 secure_tcp=1 (IPVS)",
            "\n[defense]\nembryonic_share = 0\ndrop_entry = 1\nsecure_tcp = 1\n",
        ),
        ("synproxy", "\n[defense]\n"),
    ]
}

#[derive(Debug, Default)]
struct Outcome {
    setting: String,
    syns: u64,
    tried: u64,
    ok: u64,
    p50_ms: f64,
    p99_ms: f64,
    peak_table: u64,
    busy: f64,
    busy_ns_per_frame: f64,
    cpu_ns_per_frame: f64,
    frames: u64,
    /// The worker's AF_XDP drops during the run (`io drops [...]` of `xvs ctl status`).
    io_drops: String,
}

fn status(xvs: &Path, ns: &str, sock: &Path) -> String {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(xvs)
        .args(["ctl", "--socket"])
        .arg(sock)
        .arg("status")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The sum over workers of the number after `key` in the status lines.
fn field(st: &str, key: &str) -> u64 {
    st.lines()
        .filter_map(|l| l.split(key).nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: state is field 3; utime 14, stime 15.
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    g(11) + g(12)
}

fn one(
    bed_ns: &dyn Fn(&str) -> String,
    o: &Opts,
    name: &str,
    extra: &str,
    epoch: Instant,
) -> Result<Outcome, String> {
    let dir = std::env::temp_dir().join(format!("xvs-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut conf = targets::director_config(&o.scheduler, 0, o.connections) + extra;
    if o.ring_size > 0 {
        conf += &format!("\n[afxdp]\nring_size = {}\n", o.ring_size);
    }
    if name == "synproxy" {
        let nat80 = format!(
            "vip = \"{}\"\nport = 80\nscheduler = \"{}\"\n",
            targets::vip(&o.method),
            o.scheduler
        );
        conf = conf.replacen(&nat80, &format!("{nat80}synproxy = true\n"), 1);
        if !conf.contains("synproxy = true") {
            return Err("no port-80 service to proxy".into());
        }
    }
    let path = dir.join("xvs.toml");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let sock = dir.join("ctl.sock");
    let _ = std::fs::remove_file(&sock);
    let dir_ns = bed_ns("dir");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &dir_ns])
        .arg(&o.xvs)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", o.xvs.display()))?;
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(2000));
    let st0 = status(&o.xvs, &dir_ns, &sock);
    let rx0 = field(&st0, ": rx ");
    let cpu0 = proc_cpu_ticks(pid);

    // The flood: the SYN template to the NAT VIP's port 80.
    let ep = Endpoints {
        src_mac: run::mac(&bed_ns("c1"), "eth0")?,
        dst_mac: run::mac(&dir_ns, "front")?,
        src_ip: "198.18.1.10".parse().expect("literal"),
        dst_ip: targets::vip(&o.method),
    };
    let mut templates = traffic::templates(&Profile::SynFlood, &ep, 1)?;
    for f in &mut templates.frames {
        let old = u16::from_be_bytes([f[36], f[37]]);
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        let c = u16::from_be_bytes([f[50], f[51]]);
        let c = traffic::csum_update(c, &[old], &[80]);
        f[50..52].copy_from_slice(&c.to_be_bytes());
    }
    let live = Arc::new(GenLive::default());
    let spec = GenSpec {
        netns: bed_ns("c1"),
        ifname: "eth0".into(),
        core: Some(1),
        templates,
        duration: Duration::from_secs_f64(o.secs),
        max_frames: 0,
        rate: o.rate,
        epoch,
        seed: 0x2545_f491_4f6c_dd1d,
    };
    let l2 = live.clone();
    let g = std::thread::spawn(move || gen::run(spec, l2));
    std::thread::sleep(Duration::from_millis(500));

    // Legitimate clients for the rest of the flood.
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let vip = SocketAddr::from((targets::vip(&o.method), 80));
    let mut th = Vec::new();
    for _ in 0..o.clients {
        let (stop, lat, counts, c1) = (stop.clone(), lat.clone(), counts.clone(), bed_ns("c1"));
        let timeout = o.connect_timeout;
        th.push(std::thread::spawn(move || {
            let Ok(_g) = NetnsGuard::enter(&c1) else {
                return;
            };
            let mut buf = Vec::with_capacity(512);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let conn = TcpStream::connect_timeout(&vip, timeout);
                let ok = match conn {
                    Ok(mut s) => {
                        if let Ok(mut l) = lat.lock() {
                            l.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        buf.clear();
                        s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                            && s.read_to_end(&mut buf).is_ok()
                            && buf.starts_with(b"HTTP/1.0 200")
                    }
                    Err(_) => false,
                };
                if let Ok(mut c) = counts.lock() {
                    c.0 += 1;
                    c.1 += u64::from(ok);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let mut peak = 0;
    let mut busy = Vec::new();
    let t_start = Instant::now();
    let rx_start = field(&status(&o.xvs, &dir_ns, &sock), ": rx ");
    let end = Instant::now() + Duration::from_secs_f64((o.secs - 1.5).max(0.5));
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let st = status(&o.xvs, &dir_ns, &sock);
        peak = peak.max(field(&st, "connections "));
        // The worker's busy share over its last report interval (0.5 s).
        if let Some(b) = st
            .lines()
            .filter_map(|l| l.split(" busy ").nth(1))
            .filter_map(|r| r.split('%').next()?.parse::<f64>().ok())
            .next()
        {
            busy.push(b / 100.0);
        }
    }
    let t_busy = t_start.elapsed().as_secs_f64();
    let rx_busy = field(&status(&o.xvs, &dir_ns, &sock), ": rx ").saturating_sub(rx_start);
    let mean_busy = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for h in th {
        let _ = h.join();
    }
    let gr = g.join().map_err(|_| "generator panicked".to_string())??;
    std::thread::sleep(Duration::from_millis(600));
    let st1 = status(&o.xvs, &dir_ns, &sock);
    eprintln!("{st1}");
    // Where frames were lost: the veth and XDP counters of the path (stderr, for diagnosis).
    for (ns, args) in [
        (dir_ns.clone(), vec!["ethtool", "-S", "front"]),
        (bed_ns("rt"), vec!["ip", "-s", "link"]),
        (bed_ns("c1"), vec!["ip", "-s", "link", "show", "eth0"]),
        (
            bed_ns("rt"),
            vec![
                "nstat",
                "-az",
                "IpInNoRoutes",
                "IpOutNoRoutes",
                "IcmpOutDestUnreachs",
            ],
        ),
    ] {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(&args)
            .output()
        {
            eprintln!(
                "--- {ns}: {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/net/softnet_stat") {
        eprintln!("--- softnet_stat (processed dropped squeezed ...)\n{s}");
    }
    let io_drops = st1
        .split("io drops [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or("")
        .to_string();
    let rx1 = field(&st1, ": rx ");
    let cpu1 = proc_cpu_ticks(pid);
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| -> f64 {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() - 1) as f64 * q).round() as usize]
        }
    };
    let (tried, ok) = counts.lock().map(|c| *c).unwrap_or((0, 0));
    let frames = rx1.saturating_sub(rx0);
    // USER_HZ = 100.
    let cpu_ns = (cpu1.saturating_sub(cpu0)) as f64 * 1e7;
    let busy_ns = if rx_busy > 0 {
        mean_busy * t_busy * 1e9 / rx_busy as f64
    } else {
        f64::NAN
    };
    Ok(Outcome {
        setting: name.to_string(),
        syns: gr.sent,
        tried,
        ok,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        peak_table: peak,
        busy: mean_busy,
        busy_ns_per_frame: busy_ns,
        cpu_ns_per_frame: if frames > 0 {
            cpu_ns / frames as f64
        } else {
            f64::NAN
        },
        frames,
        io_drops,
    })
}

/// `xvs-bench flood`.
#[derive(clap::Args, Debug)]
pub struct FloodArgs {
    /// Seconds of flood per defence setting.
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    secs: f64,
    /// Connection table capacity of the worker.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    connections: u32,
    /// Generator SYNs per second (0: as fast as it can).
    #[arg(long, default_value_t = 0, value_name = "PPS")]
    rate: u64,
    /// Legitimate client threads.
    #[arg(long, default_value_t = 4, value_name = "K")]
    clients: usize,
    /// Seconds a legitimate client waits for connect() (1: no SYN retransmission).
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    connect_timeout: f64,
    /// Run only the settings whose name contains one of these (comma-separated), e.g.
    /// `synproxy,budget`.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Vec<String>,
    /// Method of the flooded port-80 service: nat, dr, tun or fullnat (the SYN proxy is skipped
    /// for dr and tun: their replies bypass the director).
    #[arg(long, default_value = "nat", value_name = "METHOD")]
    method: String,
    /// Scheduler of the services (e.g. mh: DR/TUN client ACKs whose half-open entry was
    /// evicted are then routed without one, `stateless_ack_secs`).
    #[arg(long, default_value = "rr", value_name = "NAME")]
    scheduler: String,
    /// AF_XDP ring entries of the director (rx, tx, fill, completion; 0: its default, 2048).
    #[arg(long, default_value_t = 0, value_name = "N")]
    ring_size: u32,
    /// The xvs binary (default: beside xvs-bench).
    #[arg(long, value_name = "PATH")]
    xvs: Option<PathBuf>,
}

pub fn main(args: FloodArgs) -> ExitCode {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("xvs")))
        .unwrap_or_else(|| PathBuf::from("xvs"));
    let o = Opts {
        secs: args.secs,
        connections: args.connections,
        rate: args.rate,
        clients: args.clients,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout.max(0.01)),
        only: args.only,
        method: args.method,
        scheduler: args.scheduler,
        ring_size: args.ring_size,
        xvs: args.xvs.unwrap_or(sibling),
    };
    if !targets::METHODS.contains(&o.method.as_str()) {
        eprintln!("xvs-bench flood: --method must be one of nat, dr, tun, fullnat");
        return ExitCode::from(2);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bed = match run::up(&repo) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("xvs-bench flood: {e}");
            return ExitCode::from(2);
        }
    };
    let epoch = Instant::now();
    let ns = |n: &str| bed.ns(n);
    let mut rows = Vec::new();
    for (name, extra) in settings() {
        if !o.only.is_empty() && !o.only.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        if name == "synproxy" && matches!(o.method.as_str(), "dr" | "tun") {
            continue;
        }
        eprintln!("  {name} ...");
        match one(&ns, &o, name, extra, epoch) {
            Ok(r) => rows.push(r),
            Err(e) => {
                eprintln!("xvs-bench flood: {name}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "Flood + legitimate ({} VIP, scheduler {}, AF_XDP rings {}): {:.0} s per setting, table {} entries, generator rate {}, {} client threads, connect timeout {:.1} s\n",
        o.method,
        o.scheduler,
        if o.ring_size == 0 { 2048 } else { o.ring_size },
        o.secs,
        o.connections,
        if o.rate == 0 { "full".to_string() } else { o.rate.to_string() },
        o.clients,
        o.connect_timeout.as_secs_f64()
    );
    println!("| defence | SYNs sent (pps) | legitimate ok / tried | connect p50 ms | connect p99 ms | peak table entries | worker busy | busy ns/frame | process CPU ns/frame | director rx / sent | AF_XDP drops |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} ({:.0}) | {}/{} ({:.1} %) | {:.2} | {:.2} | {} | {:.0} % | {:.0} | {:.0} | {:.1} % | {} |",
            r.setting,
            r.syns,
            r.syns as f64 / o.secs,
            r.ok,
            r.tried,
            if r.tried > 0 {
                100.0 * r.ok as f64 / r.tried as f64
            } else {
                0.0
            },
            r.p50_ms,
            r.p99_ms,
            r.peak_table,
            r.busy * 100.0,
            r.busy_ns_per_frame,
            r.cpu_ns_per_frame,
            if r.syns > 0 {
                100.0 * r.frames as f64 / r.syns as f64
            } else {
                f64::NAN
            },
            if r.io_drops.is_empty() {
                "none"
            } else {
                r.io_drops.as_str()
            }
        );
    }
    ExitCode::SUCCESS
}
