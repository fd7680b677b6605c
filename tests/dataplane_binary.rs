//! The real binary end to end: `xvs run --config … --io afxdp|packet` in the director namespace
//! of the testbed, one VIP per method (NAT .1, DR .2, TUN .3, FullNAT .4, IPv4 and IPv6), two
//! workers on the veths' two queues. Per method and family: 60 HTTP GETs from the client, all
//! answered (body = backend name) with a wrr 1:2:3 spread; UDP request/response answered from
//! the VIP (for NAT and FullNAT that proves the reply came back through the director, which
//! rewrote its source). Then SIGTERM: the director exits 0 and leaves no XDP program attached.
//! Needs root; skipped loudly otherwise.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, DUAL_STACK_NETWORK};

const METHODS: [(&str, u8); 4] = [("nat", 1), ("dr", 2), ("tun", 3), ("fullnat", 4)];

fn vip(v6: bool, k: u8) -> String {
    if v6 {
        format!("2001:2:0:10::{k}")
    } else {
        format!("198.18.10.{k}")
    }
}

fn backend(v6: bool, i: u8) -> String {
    if v6 {
        format!("2001:2:0:3::{:x}", 0x10 + i)
    } else {
        format!("198.18.3.{}", 10 + i)
    }
}

fn config() -> String {
    let mut c = [
        r#"log_interval_secs = 5
neighbour_refresh_ms = 200

[[worker]]
queue = 0
core = 0

[[worker]]
queue = 1
core = 1

"#,
        DUAL_STACK_NETWORK,
        r#"
[fullnat]
local_addresses = ["198.18.3.100", "2001:2:0:3::100"]
"#,
    ]
    .concat();
    for (method, k) in METHODS {
        for v6 in [false, true] {
            for (proto, port, sched) in [("tcp", 80, "wrr"), ("udp", 5000, "rr")] {
                let _ = write!(
                    c,
                    "\n[[service]]\nprotocol = \"{proto}\"\nvip = \"{}\"\nport = {port}\nscheduler = \"{sched}\"\n",
                    vip(v6, k)
                );
                for i in 1..=3u8 {
                    let w = if sched == "wrr" { i } else { 1 };
                    let _ = write!(
                        c,
                        "\n[[service.backend]]\naddress = \"{}\"\nport = {port}\nweight = {w}\nmethod = \"{method}\"\n",
                        backend(v6, i)
                    );
                }
            }
        }
    }
    c
}

/// The director process; killed on drop if still running.
struct Director(Child);

impl Drop for Director {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run_binary(io: &str, tag: &str) {
    if skip_unless_root(&format!("xvs run --io {io} test")) {
        return;
    }
    let tb = Testbed::up(tag);
    let path = std::env::temp_dir().join(format!("{}-xvs.toml", tb.prefix));
    std::fs::write(&path, config()).expect("write config");
    let log_path = std::env::temp_dir().join(format!("{}-xvs.log", tb.prefix));
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("dir"),
            env!("CARGO_BIN_EXE_xvs"),
            "run",
        ])
        .arg("--config")
        .arg(&path)
        .args(["--io", io])
        .arg("--socket")
        .arg(std::env::temp_dir().join(format!("{}-xvs.sock", tb.prefix)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start xvs");
    let mut dir = Director(child);
    // Up when the XDP program is attached (afxdp) or after a short settle (packet).
    let deadline = Instant::now() + Duration::from_secs(10);
    while io == "afxdp" && !tb.xdp_attached("back") && Instant::now() < deadline {
        assert!(
            dir.0.try_wait().expect("wait").is_none(),
            "xvs run --io {io} exited early (see {})",
            log_path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut hops: Vec<String> = (1..=3u8)
        .flat_map(|i| [backend(false, i), backend(true, i)])
        .collect();
    hops.extend(["198.18.1.1".to_string(), "2001:2:0:1::1".to_string()]);
    let hops: Vec<&str> = hops.iter().map(|s| s.as_str()).collect();
    tb.wait_neighbours(&hops);

    let n = 60u32;
    for (method, k) in METHODS {
        for v6 in [false, true] {
            let v = vip(v6, k);
            let url = if v6 {
                format!("http://[{v}]/")
            } else {
                format!("http://{v}/")
            };
            let mut by: HashMap<String, u32> = HashMap::new();
            let mut failed = 0;
            for _ in 0..n {
                match tb.http_get(&url) {
                    Some(b) => *by.entry(b).or_default() += 1,
                    None => failed += 1,
                }
            }
            eprintln!("--io {io} {method} {url}: {by:?}, {failed} failed");
            assert_eq!(failed, 0, "--io {io} {method} {url}: {failed}/{n} failed");
            for (name, share) in [("b1", 1u32), ("b2", 2), ("b3", 3)] {
                let got = by.get(name).copied().unwrap_or(0);
                let want = n * share / 6;
                // Two workers, each with its own wrr: each prefix strays at most 2.
                assert!(
                    got.abs_diff(want) <= 4,
                    "--io {io} {method} {url}: {name} served {got}, want ~{want} ({by:?})"
                );
            }
            let mut seen = Vec::new();
            for q in 0..6 {
                let msg = format!("{method}-{q}");
                let r = tb.udp_ask(&v, &msg);
                let parts: Vec<&str> = r.split_whitespace().collect();
                assert_eq!(parts.len(), 3, "--io {io} {method}: UDP to {v}: {r:?}");
                assert_eq!(parts[1], msg);
                assert_eq!(
                    parts[2], v,
                    "--io {io} {method}: UDP reply not from the VIP"
                );
                seen.push(parts[0].to_string());
            }
            seen.sort();
            seen.dedup();
            assert_eq!(seen, ["b1", "b2", "b3"], "--io {io} {method} {v}: rr");
        }
    }

    // Clean stop on SIGTERM.
    let pid = dir.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = dir.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "xvs did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "xvs exited with {status}");
    assert!(!tb.xdp_attached("front") && !tb.xdp_attached("back"));
    // Kept only when the test fails, for the post-mortem.
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&log_path);
}

#[test]
fn xvs_run_afxdp_every_method() {
    run_binary("afxdp", "ba");
}

#[test]
fn xvs_run_packet_every_method() {
    run_binary("packet", "bp");
}
