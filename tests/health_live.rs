//! Built-in health checks with the real director in the testbed: a backend whose HTTP server is
//! killed is taken out within fall × interval (+ timeout), new connections avoid it, it comes
//! back within rise × interval once its server returns; the Prometheus endpoint shows it.
//! Prints the measured failover and recovery times. Needs root; skipped loudly otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, ChildGuard, Testbed, ONE_WORKER_V4};

const VIP: &str = "198.18.10.1";
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;

fn config(metrics_port: u16) -> String {
    let mut c = String::from(ONE_WORKER_V4);
    c.push_str(&format!(
        r#"
[metrics]
address = "127.0.0.1:{metrics_port}"

[[service]]
protocol = "tcp"
vip = "{VIP}"
port = 80
scheduler = "rr"

[service.check]
type = "http"
path = "/"
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
rise = {RISE}
fall = {FALL}
"#
    ));
    for i in 1..=3 {
        c.push_str(&format!(
            "\n[[service.backend]]\naddress = \"198.18.3.{}\"\nport = 80\nmethod = \"nat\"\n",
            10 + i
        ));
    }
    c
}

fn ctl_list(socket: &std::path::Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(socket)
        .arg("-Ln")
        .output()
        .expect("xvs ctl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn failed_backend_is_taken_out_and_returns() {
    if skip_unless_root("health check live test") {
        return;
    }
    let tb = Testbed::up("hl");
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-health.toml", tb.prefix));
    let socket = dir.join(format!("{}-health.sock", tb.prefix));
    let log_path = dir.join(format!("{}-health.log", tb.prefix));
    let metrics_port = 19100 + (std::process::id() % 500) as u16;
    std::fs::write(&cfg, config(metrics_port)).unwrap();
    let mut guard = vec![tb.start_xvs(&cfg, &socket, &log_path)];
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13", "198.18.1.1"]);
    let url = format!("http://{VIP}/");
    let mut seen: Vec<String> = (0..9).filter_map(|_| tb.http_get(&url)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["b1", "b2", "b3"]);

    // Kill b2's server: down within fall × (interval + timeout), plus scheduling slack.
    let pids = tb.server_pids("b2");
    assert!(!pids.is_empty(), "b2's server");
    for pid in &pids {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let limit = Duration::from_millis(FALL * (INTERVAL_MS + TIMEOUT_MS) + 2000);
    let failover = wait_for("b2 marked down", limit, || {
        !ctl_list(&socket).contains("198.18.3.12:80")
    });
    for _ in 0..9 {
        let b = tb.http_get(&url);
        assert!(
            matches!(b.as_deref(), Some("b1" | "b3")),
            "got {b:?} after b2 went down"
        );
    }

    // Its server returns: back within rise × interval, plus slack.
    let server = "import http.server,socketserver\n\
        class H(http.server.BaseHTTPRequestHandler):\n\
        \x20 def do_GET(self):\n\
        \x20   self.send_response(200); self.send_header('Content-Length','3'); self.end_headers(); self.wfile.write(b'b2\\n')\n\
        \x20 def log_message(self,*a): pass\n\
        socketserver.TCPServer.allow_reuse_address=True\n\
        http.server.HTTPServer(('0.0.0.0',80),H).serve_forever()\n";
    let restarted = Command::new("ip")
        .args(["netns", "exec", &tb.ns("b2"), "python3", "-c", server])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restart b2");
    guard.push(ChildGuard(restarted));
    let limit = Duration::from_millis(RISE * (INTERVAL_MS + TIMEOUT_MS) + 3000);
    let recovery = wait_for("b2 back", limit, || {
        ctl_list(&socket).contains("198.18.3.12:80")
    });
    let mut seen: Vec<String> = (0..9).filter_map(|_| tb.http_get(&url)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["b1", "b2", "b3"]);
    eprintln!(
        "health: interval {INTERVAL_MS} ms, timeout {TIMEOUT_MS} ms, fall {FALL}, rise {RISE}: \
         marked down {failover:?} after the kill, back {recovery:?} after the restart"
    );

    // The metrics endpoint shows the health state and the two transitions.
    let (ok, body) = tb.exec(
        "dir",
        &[
            "curl",
            "-s",
            "-m",
            "3",
            &format!("http://127.0.0.1:{metrics_port}/metrics"),
        ],
    );
    assert!(ok, "scrape");
    let line = body
        .lines()
        .find(|l| l.starts_with("xvs_backend_up{") && l.contains("address=\"198.18.3.12\""))
        .unwrap_or_else(|| panic!("no xvs_backend_up for b2 in:\n{body}"));
    assert!(line.ends_with(" 1"), "{line}");
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("xvs_backend_health_transitions_total{")
                && l.contains("address=\"198.18.3.12\"")
        })
        .expect("transitions");
    assert!(line.ends_with(" 2"), "{line}");
    assert!(
        body.contains("xvs_worker_rx_packets_total{worker=\"0\"}"),
        "{body}"
    );

    let pid = guard[0].0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    wait_for("xvs stops", Duration::from_secs(10), || {
        guard[0].0.try_wait().unwrap().is_some()
    });
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("backend 198.18.3.12:80 of") && l.contains("up -> down")),
        "transition logged:\n{log}"
    );
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&log_path);
}
