//! The sink on the backend side. Counting: an nftables table in every backend namespace whose
//! prerouting chain (priority -400, before conntrack) counts every benchmark frame — UDP/TCP to
//! port 9, and IPIP whose inner destination port is 9 (TUN) — in a named counter, then drops all
//! but one in `sample` of the UDP ones. Only frames arriving on eth0 count: the TUN decapsulator
//! (scripts/decap-helper) re-injects the inner packet on its own device. The sampled frames reach
//! a UDP socket on port 9 in the same namespace, whose thread reads the stamp and records the
//! one-way latency (send → receive, both read from one monotonic epoch in this process) into an
//! HdrHistogram. So counting is exact and costs the kernel one rule match, and latency is
//! sampled without loading the shared cores.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use xvs::io::sys::NetnsGuard;

use crate::traffic::{read_stamp, BENCH_PORT};

pub fn nsexec(ns: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map_err(|e| format!("ip netns exec {ns} {args:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ip netns exec {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub fn nft(ns: &str, script: &str) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("xvs-bench-{}-{ns}.nft", std::process::id()));
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let r = nsexec(ns, &["nft", "-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

/// Install the counting table in backend namespace `ns`; one UDP frame in `sample` passes.
pub fn install(ns: &str, sample: u32) -> Result<(), String> {
    let _ = nsexec(ns, &["nft", "delete", "table", "inet", "xvsbench"]);
    let s = sample.max(1);
    nft(
        ns,
        &format!(
            "table inet xvsbench {{
  counter rx {{ }}
  chain pre {{
    type filter hook prerouting priority -400; policy accept;
    iifname != \"eth0\" accept
    udp dport {BENCH_PORT} counter name \"rx\"
    udp dport {BENCH_PORT} numgen random mod {s} != 0 drop
    tcp dport {BENCH_PORT} counter name \"rx\" drop
    ip protocol 4 @nh,336,16 {BENCH_PORT} counter name \"rx\"
    ip protocol 4 @nh,336,16 {BENCH_PORT} numgen random mod {s} != 0 drop
  }}
}}
"
        ),
    )
}

/// Frames counted so far in `ns`.
pub fn count(ns: &str) -> Result<u64, String> {
    let out = nsexec(
        ns,
        &["nft", "-j", "list", "counter", "inet", "xvsbench", "rx"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v["nftables"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find_map(|o| o.get("counter").and_then(|c| c["packets"].as_u64()))
        })
        .ok_or_else(|| format!("{ns}: no counter in nft output"))
}

pub fn remove(ns: &str) {
    let _ = nsexec(ns, &["nft", "delete", "table", "inet", "xvsbench"]);
}

/// Latency samplers, one thread per backend namespace.
pub struct Samplers {
    stop: Arc<AtomicBool>,
    pub received: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Histogram<u64>>>,
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s in ns, 3 significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Samplers {
    pub fn start(namespaces: &[String], epoch: Instant) -> Result<Samplers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for ns in namespaces {
            let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
            let ns = ns.clone();
            let stop = stop.clone();
            let received = received.clone();
            threads.push(std::thread::spawn(move || {
                let mut h = new_histogram();
                let sock = (|| {
                    let _g = NetnsGuard::enter(&ns).map_err(|e| e.to_string())?;
                    let s = UdpSocket::bind(("0.0.0.0", BENCH_PORT)).map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_millis(50)))
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(s)
                })();
                let sock = match sock {
                    Ok(s) => {
                        let _ = tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("sink in {ns}: {e}")));
                        return h;
                    }
                };
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = sock.recv(&mut buf) else { continue };
                    let now = epoch.elapsed().as_nanos() as u64;
                    if let Some(ts) = read_stamp(&buf[..n]) {
                        if now >= ts {
                            h.saturating_record((now - ts).max(1_000));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                h
            }));
            rx.recv().map_err(|e| e.to_string())??;
        }
        Ok(Samplers {
            stop,
            received,
            threads,
        })
    }

    /// Stop and merge.
    pub fn finish(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = new_histogram();
        for t in self.threads {
            if let Ok(h) = t.join() {
                let _ = all.add(&h);
            }
        }
        all
    }
}
