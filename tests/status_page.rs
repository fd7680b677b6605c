//! The status page in a real browser: `xvs run` in the namespace testbed with a checked service
//! (two backends' checks fail: one is removed, one quiescent) and a DNS zone of two sites (one
//! down), some HTTP through the VIP, then headless Chromium (Debian
//! `chromium`, run in the director's namespace) loads `http://127.0.0.1:PORT/status`, runs its
//! script (which fetches status.json) and the test reads the DOM it printed; a screenshot is
//! kept at `target/status-page.png`.
//! Needs root; skipped loudly otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, ONE_WORKER_V4};

const CONFIG: &str = r#"
[metrics]
address = "127.0.0.1:0"

[[service]]
protocol = "tcp"
vip = "198.18.10.1"
port = 80
scheduler = "rr"

[service.check]
type = "tcp"
interval_ms = 200
timeout_ms = 200
rise = 1
fall = 1

[[service.backend]]
address = "198.18.3.11"
port = 80
method = "nat"

[[service.backend]]
address = "198.18.3.12"
port = 80
method = "nat"
weight = 2
# Checked on a port nobody listens on: down and taken out of the service.
[service.backend.check]
connect_port = 8998

# The same, but kept with weight 0 (quiescent, keepalived's inhibit_on_failure).
[[service.backend]]
address = "198.18.3.13"
port = 80
method = "nat"
[service.backend.check]
connect_port = 8999
quiescent = true

# DNS: the service's VIP as a site (answered: b1 is up) and a remote site whose check fails.
[[dns]]
zone = "sp.test"
names = ["www.sp.test"]
listen = ["127.0.0.1:5353"]

[[dns.site]]
name = "here"
service = 0

[[dns.site]]
name = "gone"
address = "198.18.60.1"
port = 8997
check = { type = "tcp", connect_ip = "127.0.0.1", interval_ms = 200, timeout_ms = 200, rise = 1, fall = 1 }
"#;

/// The table row of `dom` that carries `attr`.
fn row_of(dom: &str, attr: &str) -> String {
    let start = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no row with {attr}:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| e + start);
    dom[start..end].to_string()
}

/// The page as Chromium leaves it after running its script (`--dump-dom`), or a screenshot.
fn chromium(tb: &Testbed, profile: &std::path::Path, args: &[&str], url: &str) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", &tb.ns("dir"), "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (Debian package chromium, scripts/install-deps.sh)");
    (
        o.status.success(),
        format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn status_page_in_headless_chromium() {
    if skip_unless_root("status page browser test") {
        return;
    }
    let tb = Testbed::up("sp");
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-sp.toml", tb.prefix));
    let socket = dir.join(format!("{}-sp.sock", tb.prefix));
    let log_path = dir.join(format!("{}-sp.log", tb.prefix));
    let profile = dir.join(format!("{}-chromium", tb.prefix));
    std::fs::write(&cfg, format!("{ONE_WORKER_V4}{CONFIG}")).unwrap();
    let _xvs = tb.start_xvs(&cfg, &socket, &log_path);
    // The metrics address (port 0: chosen at start) from the log.
    let deadline = Instant::now() + Duration::from_secs(5);
    let url = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.starts_with("xvs: metrics on ")) {
            break l["xvs: metrics on ".len()..].replace("/metrics", "/status");
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.1.1"]);
    // b2 and b3 go down at their first failed check; then all traffic goes to b1.
    std::thread::sleep(Duration::from_millis(600));
    // Spread over a few seconds, so the director's one-second samples show them.
    let mut served = Vec::new();
    for _ in 0..30 {
        served.push(
            tb.http_get("http://198.18.10.1/")
                .unwrap_or_else(|| "FAILED".into()),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !served.iter().any(|s| s == "FAILED" || s == "b3"),
        "{served:?}"
    );

    // The DOM after the script ran: several updates (virtual time runs the 1 s timer).
    let t = Instant::now();
    let (ok, dom) = chromium(
        &tb,
        &profile,
        &["--virtual-time-budget=5000", "--dump-dom"],
        &url,
    );
    eprintln!("chromium --dump-dom took {:?}", t.elapsed());
    assert!(ok, "{dom}");
    assert!(
        dom.contains("<tr class=\"service\" data-service=\"TCP 198.18.10.1:80\">"),
        "{dom}"
    );
    let row = |backend: &str| -> String {
        let start = dom
            .find(&format!("data-backend=\"{backend}\""))
            .unwrap_or_else(|| panic!("no row for {backend}:\n{dom}"));
        let end = dom[start..].find("</tr>").unwrap() + start;
        dom[start..end].to_string()
    };
    let b1 = row("198.18.3.11:80");
    assert!(b1.contains("<td>Masq</td><td>1</td>"), "{b1}");
    assert!(b1.contains("data-health=\"up\""), "{b1}");
    assert!(b1.ends_with("<td>30</td>"), "{b1}");
    let b2 = row("198.18.3.12:80");
    assert!(b2.contains("data-removed=\"true\""), "{b2}");
    assert!(b2.contains("<td>Masq</td><td>removed (2)</td>"), "{b2}");
    assert!(b2.contains("data-health=\"down\""), "{b2}");
    let b3 = row("198.18.3.13:80");
    assert!(b3.contains("<td>Masq</td><td>0 of 1</td>"), "{b3}");
    assert!(b3.contains("data-health=\"down\""), "{b3}");
    assert!(b3.contains(" s ago</td>"), "{b3}");
    // The service row's connection total: the 30 requests (HTTP/1.0 through NAT).
    let svc_start = dom.find("data-service=\"TCP 198.18.10.1:80\"").unwrap();
    let svc = &dom[svc_start..svc_start + dom[svc_start..].find("</tr>").unwrap()];
    assert!(svc.ends_with("<td>30</td>"), "{svc}");
    // DNS: the zone, the name answering the VIP of the site that is up, the sites' states.
    assert!(dom.contains("data-dns-zone=\"sp.test\""), "{dom}");
    let name = row_of(&dom, "data-dns-name=\"www.sp.test.\"");
    assert!(name.contains("<td>198.18.10.1 (1)</td>"), "{name}");
    let here = row_of(&dom, "data-dns-site=\"here\"");
    assert!(here.contains("data-health=\"up\""), "{here}");
    let gone = row_of(&dom, "data-dns-site=\"gone\"");
    assert!(
        gone.contains("data-health=\"down\"") && gone.contains("down (check tcp)"),
        "{gone}"
    );
    // Drops by reason: the non-zero ones, or "none" with the number of reasons counted.
    let drops = &dom[dom.find("<table id=\"drops\">").expect("drops table")..];
    let drops = &drops[..drops.find("</table>").unwrap()];
    assert!(
        drops.contains("data-reason=") || drops.contains("<td>none ("),
        "{drops}"
    );
    // The script ran more than once and the plots hold samples.
    let updates = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(updates >= 2, "{updates} updates\n{dom}");
    // The plots start from the director's own samples (one a second since it started), so
    // they hold more points than the page's own updates.
    let samples = dom
        .split("id=\"plot-pps\" data-samples=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        samples >= updates + 3,
        "{samples} samples, {updates} updates\n{dom}"
    );
    eprintln!("plot: {samples} samples after {updates} page updates");
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "fetch failed:\n{dom}"
    );

    // The screenshot, kept as an artifact.
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    let (ok, out) = chromium(
        &tb,
        &profile,
        &[
            "--virtual-time-budget=5000",
            "--hide-scrollbars",
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    assert!(ok, "{out}");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!("screenshot: {} ({size} bytes)", shot.display());
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_file(&cfg);
}
