//! DNS load balancing with the real director in the testbed (`[[dns]]`): `dig` asks the
//! responder that `xvs run` starts, over UDP and TCP (`+tcp`), for A and AAAA records; the
//! weights of fixed addresses hold over many queries; a service backend whose HTTP server is
//! killed leaves the answers within fall × (interval + timeout) plus slack, and the answer
//! counters show in `xvs ctl status` and the metrics (by query type; checked by
//! `promtool check metrics`); a query with an EDNS Client Subnet in a
//! configured client network gets that network's preferred address; the rate limit slips
//! answers. Sites (`[[dns.site]]`): the VIP of a local service whose every backend goes down
//! leaves the answers, as does a remote site whose own check fails, and a client network's
//! preferred site is answered while it is up. A reload that changes `[[dns]]` applies it,
//! keeping the sockets of unchanged listen addresses and moving a changed one. Needs root and
//! dig (dnsutils); skipped loudly otherwise.

use std::process::Command;
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, ONE_WORKER_V4};

const VIP: &str = "198.18.10.1";
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 200;
const FALL: u64 = 2;

/// The metrics endpoint's port beside the DNS port `port`.
fn metrics_port(port: u16) -> u16 {
    port + 600
}

/// The file whose presence is the remote site `ap`'s check.
fn ap_flag(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{prefix}-site-ap"))
}

fn config(port: u16, prefix: &str) -> String {
    let mut c = String::from(ONE_WORKER_V4);
    c.push_str(&format!(
        r#"
[metrics]
address = "127.0.0.1:{}"

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
rise = 2
fall = {FALL}
"#,
        metrics_port(port)
    ));
    for i in 1..=3 {
        c.push_str(&format!(
            "\n[[service.backend]]\naddress = \"198.18.3.{}\"\nport = 80\nmethod = \"nat\"\n",
            10 + i
        ));
    }
    // A second site's service: b2 alone.
    c.push_str(&format!(
        r#"
[[service]]
protocol = "tcp"
vip = "198.18.10.2"
port = 80
scheduler = "rr"

[service.check]
type = "http"
path = "/"
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
rise = 2
fall = {FALL}

[[service.backend]]
address = "198.18.3.12"
port = 80
method = "nat"
"#
    ));
    c.push_str(&format!(
        r#"
[[dns]]
zone = "lb.test"
names = ["www.lb.test"]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
ttl = 5
answers = 3
scheduler = "rr"
service = 0

[[dns]]
zone = "fixed.test"
names = ["w.fixed.test"]
listen = ["127.0.0.2:{port}"]
ttl = 7
answers = 1
scheduler = "wrr"

[[dns.address]]
address = "198.18.20.1"
weight = 3

[[dns.address]]
address = "198.18.20.2"
weight = 1

[[dns.address]]
address = "2001:2::20"
weight = 1

[[dns.client_network]]
prefix = "203.0.113.0/24"
prefer = ["198.18.20.2"]

[[dns]]
zone = "rl.test"
names = ["w.rl.test"]
listen = ["127.0.0.3:{port}"]
rate_limit = 1
slip = 1

[[dns.address]]
address = "198.18.30.1"

[[dns]]
zone = "sites.test"
names = ["www.sites.test"]
listen = ["127.0.0.4:{port}"]
answers = 4
scheduler = "rr"

[[dns.site]]
name = "eu"
service = 0
weight = 2

[[dns.site]]
name = "us"
service = "TCP 198.18.10.2:80"

[[dns.site]]
name = "ap"
address = "198.18.40.1"
port = 80
check = {{ type = "exec", command = "/bin/sh", args = ["-c", "test -e {flag}"], interval_ms = {INTERVAL_MS}, timeout_ms = 1000, rise = 1, fall = 1 }}

[[dns.site]]
name = "far"
address = "198.18.50.1"

[[dns.client_network]]
prefix = "203.0.113.0/24"
prefer = ["us"]
"#,
        flag = ap_flag(prefix).display()
    ));
    c
}

/// `dig +short` in the director namespace: the answer lines.
fn dig(tb: &Testbed, args: &[&str]) -> Vec<String> {
    let mut a = vec!["dig", "+short", "+time=2", "+tries=2"];
    a.extend_from_slice(args);
    let (ok, out) = tb.exec("dir", &a);
    assert!(ok, "dig {args:?}");
    out.lines().map(str::to_string).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn dig_gets_balanced_healthy_answers() {
    if skip_unless_root("dns live test") {
        return;
    }
    if Command::new("dig").arg("-v").output().is_err() {
        panic!("dig is missing: scripts/install-deps.sh installs dnsutils");
    }
    let tb = Testbed::up("dn");
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-dns.toml", tb.prefix));
    let socket = dir.join(format!("{}-dns.sock", tb.prefix));
    let log_path = dir.join(format!("{}-dns.log", tb.prefix));
    let port = 15300 + (std::process::id() % 500) as u16;
    let p = port.to_string();
    std::fs::write(ap_flag(&tb.prefix), "").unwrap();
    std::fs::write(&cfg, config(port, &tb.prefix)).unwrap();
    let xvs = tb.start_xvs(&cfg, &socket, &log_path);

    // All three backends healthy: each answer names all three (answers = 3), UDP and TCP,
    // over IPv4 and IPv6 transport.
    let all = ["198.18.3.11", "198.18.3.12", "198.18.3.13"];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = sorted(dig(&tb, &["@127.0.0.1", "-p", &p, "www.lb.test", "A"]));
        if got == all {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, all, "UDP answer");
    // Sites: every one up (the local services have backends, ap's check passes, far is
    // unchecked); a client in 203.0.113.0/24 gets us alone.
    let sites_up = ["198.18.10.1", "198.18.10.2", "198.18.40.1", "198.18.50.1"];
    assert_eq!(
        sorted(dig(&tb, &["@127.0.0.4", "-p", &p, "www.sites.test", "A"])),
        sites_up,
        "sites"
    );
    assert_eq!(
        dig(
            &tb,
            &[
                "+subnet=203.0.113.0/24",
                "@127.0.0.4",
                "-p",
                &p,
                "www.sites.test",
                "A"
            ]
        ),
        ["198.18.10.2"],
        "preferred site"
    );
    assert_eq!(
        sorted(dig(
            &tb,
            &["+tcp", "@127.0.0.1", "-p", &p, "www.lb.test", "A"]
        )),
        all,
        "TCP answer"
    );
    assert_eq!(
        sorted(dig(&tb, &["@::1", "-p", &p, "www.lb.test", "A"])),
        all,
        "over IPv6"
    );
    // The full answer: authoritative, TTL 5; NXDOMAIN and REFUSED.
    let (_, full) = tb.exec(
        "dir",
        &["dig", "+time=2", "@127.0.0.1", "-p", &p, "www.lb.test", "A"],
    );
    assert!(full.contains("flags: qr aa"), "{full}");
    assert!(full.contains("www.lb.test.\t\t5\tIN\tA"), "{full}");
    let (_, nx) = tb.exec(
        "dir",
        &[
            "dig",
            "+time=2",
            "@127.0.0.1",
            "-p",
            &p,
            "nope.lb.test",
            "A",
        ],
    );
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("SOA"), "{nx}");
    let (_, refused) = tb.exec(
        "dir",
        &["dig", "+time=2", "@127.0.0.1", "-p", &p, "example.org", "A"],
    );
    assert!(refused.contains("status: REFUSED"), "{refused}");

    // Fixed addresses, wrr 3:1: 40 queries in one dig run give 30 and 10; AAAA over TCP.
    let mut q = vec!["@127.0.0.2", "-p", &p];
    for _ in 0..40 {
        q.extend_from_slice(&["w.fixed.test", "A"]);
    }
    let answers = dig(&tb, &q);
    assert_eq!(answers.len(), 40, "{answers:?}");
    let n1 = answers.iter().filter(|a| *a == "198.18.20.1").count();
    let n2 = answers.iter().filter(|a| *a == "198.18.20.2").count();
    assert_eq!((n1, n2), (30, 10), "wrr 3:1");
    assert_eq!(
        dig(
            &tb,
            &["+tcp", "@127.0.0.2", "-p", &p, "w.fixed.test", "AAAA"]
        ),
        ["2001:2::20"]
    );

    // Kill b2's server: its record leaves the answers within fall × (interval + timeout)
    // plus slack (the health check, then one main-loop period).
    let pids = tb.server_pids("b2");
    assert!(!pids.is_empty(), "b2's server");
    for pid in &pids {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let t0 = Instant::now();
    let limit = Duration::from_millis(FALL * (INTERVAL_MS + TIMEOUT_MS) + 2000);
    loop {
        let a = sorted(dig(&tb, &["@127.0.0.1", "-p", &p, "www.lb.test", "A"]));
        if a == ["198.18.3.11", "198.18.3.13"] {
            break;
        }
        assert!(
            t0.elapsed() < limit,
            "b2 still answered after {limit:?}: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = t0.elapsed();
    for _ in 0..5 {
        let a = sorted(dig(
            &tb,
            &["+tcp", "@127.0.0.1", "-p", &p, "www.lb.test", "A"],
        ));
        assert_eq!(a, ["198.18.3.11", "198.18.3.13"]);
    }
    eprintln!("dns: b2 left the answers {gone:?} after its server was killed");
    // b2 was the us site's only backend: us left the sites' answers too (checked after b2
    // left the service's, so within one more main-loop period), and us's client network gets
    // the other sites.
    let t1 = Instant::now();
    loop {
        let a = sorted(dig(&tb, &["@127.0.0.4", "-p", &p, "www.sites.test", "A"]));
        if a == ["198.18.10.1", "198.18.40.1", "198.18.50.1"] {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(2),
            "the us site still answered: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "dns: the us site left the answers {:?} after b2's server was killed",
        t0.elapsed()
    );
    let near = dig(
        &tb,
        &[
            "+subnet=203.0.113.0/24",
            "@127.0.0.4",
            "-p",
            &p,
            "www.sites.test",
            "A",
        ],
    );
    assert_eq!(near.len(), 3, "{near:?}");
    assert!(!near.contains(&"198.18.10.2".to_string()), "{near:?}");
    // ap's own check fails (its flag file goes): ap leaves within its interval plus slack.
    std::fs::remove_file(ap_flag(&tb.prefix)).unwrap();
    let t2 = Instant::now();
    loop {
        let a = sorted(dig(&tb, &["@127.0.0.4", "-p", &p, "www.sites.test", "A"]));
        if a == ["198.18.10.1", "198.18.50.1"] {
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_millis(INTERVAL_MS + 2000),
            "the ap site still answered: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "dns: the ap site left the answers {:?} after its check began to fail",
        t2.elapsed()
    );

    // The counters in xvs ctl status.
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(&socket)
        .arg("status")
        .output()
        .expect("xvs ctl status");
    let status = String::from_utf8_lossy(&o.stdout);
    let line = status
        .lines()
        .find(|l| l.contains("w.fixed.test."))
        .unwrap_or_else(|| panic!("no dns line in:\n{status}"));
    assert!(line.contains("queries 41"), "{line}");
    assert!(line.contains("NOERROR 41"), "{line}");
    let nx_line = status
        .lines()
        .find(|l| l.contains("(other names)") && l.contains("NXDOMAIN 1"));
    assert!(nx_line.is_some(), "{status}");

    // And in the metrics.
    let (ok, body) = tb.exec(
        "dir",
        &[
            "curl",
            "-s",
            "-m",
            "3",
            &format!("http://127.0.0.1:{}/metrics", metrics_port(port)),
        ],
    );
    assert!(ok, "scrape");
    for want in [
        "xvs_dns_answers_total{zone=\"fixed.test\",name=\"w.fixed.test.\",rcode=\"NOERROR\"} 41",
        "xvs_dns_answers_total{zone=\"lb.test\",name=\"\",rcode=\"NXDOMAIN\"} 1",
        "xvs_dns_records{zone=\"lb.test\",name=\"www.lb.test.\"} 2",
        "xvs_dns_queries_total{zone=\"fixed.test\",name=\"w.fixed.test.\",type=\"A\"} 40",
        "xvs_dns_queries_total{zone=\"fixed.test\",name=\"w.fixed.test.\",type=\"AAAA\"} 1",
        "xvs_dns_site_up{zone=\"sites.test\",site=\"eu\",address=\"198.18.10.1\"} 1",
        "xvs_dns_site_up{zone=\"sites.test\",site=\"us\",address=\"198.18.10.2\"} 0",
        "xvs_dns_site_up{zone=\"sites.test\",site=\"ap\",address=\"198.18.40.1\"} 0",
    ] {
        assert!(body.lines().any(|l| l == want), "{want} not in:\n{body}");
    }
    // Prometheus's own parser and linter accept the whole scrape.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, scripts/install-deps.sh)");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("promtool's stdin");
        stdin.write_all(body.as_bytes()).unwrap();
    }
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // EDNS Client Subnet in the configured client network: the preferred address only.
    let mut q = vec!["+subnet=203.0.113.0/24", "@127.0.0.2", "-p", &p];
    for _ in 0..8 {
        q.extend_from_slice(&["w.fixed.test", "A"]);
    }
    assert_eq!(
        dig(&tb, &q),
        vec!["198.18.20.2".to_string(); 8],
        "client subnet"
    );

    // Rate limit 1 answer a second, slip 1: of 5 quick queries one is answered, the other four
    // come back truncated with no record (+ignore: no TCP retry).
    let mut q = vec!["+ignore", "@127.0.0.3", "-p", &p];
    for _ in 0..5 {
        q.extend_from_slice(&["w.rl.test", "A"]);
    }
    assert_eq!(dig(&tb, &q), ["198.18.30.1"], "rate limited");
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(&socket)
        .arg("status")
        .output()
        .expect("xvs ctl status");
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(
        status.contains("dns zone rl.test on 127.0.0.3:")
            && status.contains("rate-limited 0 dropped 4 slipped"),
        "{status}"
    );

    // A reload that changes [[dns]] applies it: fixed.test's TTL (its listener's sockets are
    // kept: same inode before and after), rl.test moved from 127.0.0.3 to 127.0.0.5.
    let ino = |addr: &str| -> Option<String> {
        let (_, out) = tb.exec("dir", &["ss", "-Hulne"]);
        out.lines()
            .find(|l| l.contains(&format!("{addr}:{port} ")))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("ino:")))
            .map(str::to_string)
    };
    let before = ino("127.0.0.2").expect("the UDP socket on 127.0.0.2");
    std::fs::write(
        &cfg,
        config(port, &tb.prefix)
            .replace("ttl = 7", "ttl = 8")
            .replace("127.0.0.3:", "127.0.0.5:"),
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &xvs.0.id().to_string()])
        .status();
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("xvs: reloaded")) {
            assert!(
                l.contains(
                    "dns zone fixed.test reconfigured: 1 listener(s) kept, 0 bound, 0 closed"
                ) && l.contains(
                    "dns zone rl.test reconfigured: 0 listener(s) kept, 1 bound, 1 closed"
                ) && l.contains("dns zone lb.test reconfigured: 2 listener(s) kept"),
                "{l}"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no reload in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, full) = tb.exec(
        "dir",
        &[
            "dig",
            "+time=2",
            "@127.0.0.2",
            "-p",
            &p,
            "w.fixed.test",
            "A",
        ],
    );
    assert!(full.contains("w.fixed.test.\t\t8\tIN\tA"), "{full}");
    assert_eq!(
        ino("127.0.0.2").as_ref(),
        Some(&before),
        "the socket was kept"
    );
    assert_eq!(
        dig(&tb, &["@127.0.0.5", "-p", &p, "w.rl.test", "A"]),
        ["198.18.30.1"]
    );
    assert_eq!(ino("127.0.0.3"), None, "127.0.0.3 closed");
    let (_, out) = tb.exec(
        "dir",
        &[
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            "@127.0.0.3",
            "-p",
            &p,
            "w.rl.test",
            "A",
        ],
    );
    assert!(
        !out.lines().any(|l| l == "198.18.30.1"),
        "127.0.0.3 still answers: {out}"
    );
    // The counters of the names kept carry on (41 answers + 1 after the reload).
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(&socket)
        .arg("status")
        .output()
        .expect("xvs ctl status");
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(
        status
            .lines()
            .any(|l| l.contains("w.fixed.test.") && l.contains("NOERROR 50")),
        "{status}"
    );
    assert!(
        status.contains("dns site ap 198.18.40.1 weight 1: down (check exec)")
            && status.contains(
                "dns site eu 198.18.10.1 weight 2: answered (service TCP 198.18.10.1:80)"
            ),
        "{status}"
    );
    let _ = std::fs::remove_file(ap_flag(&tb.prefix));
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&log_path);
}
