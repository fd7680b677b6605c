//! HTTP redirect with the real director in the testbed (`[[redirect]]`): real `curl` in the
//! client namespace asks the listener that `xvs run` starts on the director's front address and
//! follows the redirect to the backends' HTTP servers. Checked: wrr 3:1 gives exactly 30/10
//! of 40 requests, each landing on the backend its Location names; path and query kept; 307
//! configured; a bad target and a malformed request get 400; persistence keeps a client on one
//! backend; a backend whose HTTP server is killed leaves the redirects within
//! fall × (interval + timeout) plus slack; a service with no healthy backend gets 503; the
//! counters show in `xvs ctl status`, `xvs ctl -L --stateless` and the metrics; a listener on
//! IPv6 answers too; a weight changed by `xvs ctl -e` is followed; a reload that changes
//! `[[redirect]]` is refused. Needs root and curl; skipped loudly without root.

use std::process::Command;
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, ONE_WORKER_V4};

const FRONT: &str = "198.18.1.2";
const FRONT6: &str = "2001:2:0:1::2";
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 200;
const FALL: u64 = 2;

fn config(port: u16) -> String {
    let mut c = String::from(ONE_WORKER_V4);
    c.push_str(&format!(
        r#"
[metrics]
address = "127.0.0.1:{metrics}"

[[service]]
protocol = "tcp"
vip = "198.18.10.1"
port = 80
scheduler = "wrr"

[service.check]
type = "http"
path = "/"
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
rise = 1
fall = {FALL}

[[service.backend]]
address = "198.18.3.11"
port = 80
weight = 3
method = "nat"

[[service.backend]]
address = "198.18.3.12"
port = 80
weight = 1
method = "nat"

[[service]]
protocol = "tcp"
vip = "198.18.10.2"
port = 80
scheduler = "rr"

[service.check]
type = "tcp"
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
fall = 1

[[service.backend]]
address = "198.18.3.13"
port = 81
method = "nat"

[[redirect]]
name = "web"
listen = ["{FRONT}:{port}"]
service = 0
scheduler = "wrr"

[[redirect]]
name = "sticky"
listen = ["{FRONT}:{p2}"]
service = 0
scheduler = "rr"
code = 307
persistence = 30

[[redirect]]
name = "none"
listen = ["{FRONT}:{p3}"]
service = 1

[[redirect]]
name = "v6"
listen = ["[{FRONT6}]:{p4}"]
service = 0
scheduler = "rr"
"#,
        metrics = port + 600,
        p2 = port + 1,
        p3 = port + 2,
        p4 = port + 3,
    ));
    c
}

/// `curl` in the client namespace: stdout, asserting that curl ran.
fn curl(tb: &Testbed, args: &[&str]) -> String {
    let mut a = vec!["curl", "-s", "-m", "5"];
    a.extend_from_slice(args);
    let (ok, out) = tb.exec("c1", &a);
    assert!(ok, "curl {args:?}: {out}");
    out
}

/// `xvs ctl ARGS` against the running director: stdout.
fn ctl(socket: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(socket)
        .args(args)
        .output()
        .expect("xvs ctl");
    assert!(o.status.success(), "xvs ctl {args:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `n` requests for `path` in one curl run following the redirects: per request the body
/// (the backend's name) and the final URL.
fn follow(tb: &Testbed, port: u16, path: &str, n: usize) -> Vec<(String, String)> {
    let url = format!("http://{FRONT}:{port}{path}");
    let mut args = vec!["-L", "-w", "%{url_effective}\\n"];
    for _ in 0..n {
        args.push(&url);
    }
    let out = curl(tb, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * n, "{out}");
    lines
        .chunks(2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

#[test]
fn curl_follows_balanced_healthy_redirects() {
    if skip_unless_root("redirect live test") {
        return;
    }
    let tb = Testbed::up("rd");
    tb.single_queue_towards_director();
    // The backends answer the client directly (through the router), not through the director.
    for b in ["b1", "b2", "b3"] {
        let (ok, _) = tb.exec(
            b,
            &["ip", "route", "add", "198.18.1.0/24", "via", "198.18.3.1"],
        );
        assert!(ok, "route in {b}");
    }
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-redirect.toml", tb.prefix));
    let socket = dir.join(format!("{}-redirect.sock", tb.prefix));
    let log_path = dir.join(format!("{}-redirect.log", tb.prefix));
    let port = 18000 + (std::process::id() % 500) as u16 * 4;
    std::fs::write(&cfg, config(port)).unwrap();
    let xvs = tb.start_xvs(&cfg, &socket, &log_path);

    // Both backends of service 0 up (one check each), the backend of service 1 down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = ctl(&socket, &["status"]);
        if st.contains("redirect to http://198.18.3.11 weight 3")
            && st.contains("redirect to http://198.18.3.12 weight 1")
            && st.contains("redirect to: none (503)")
        {
            break;
        }
        assert!(Instant::now() < deadline, "backends not ready:\n{st}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // One redirect, not followed: 302 and the Location with path and query.
    let out = curl(
        &tb,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{FRONT}:{port}/a/b.html?x=1&y=two"),
        ],
    );
    let (code, location) = out.split_once(' ').unwrap();
    assert_eq!(code, "302", "{out}");
    assert!(
        location == "http://198.18.3.11/a/b.html?x=1&y=two"
            || location == "http://198.18.3.12/a/b.html?x=1&y=two",
        "{out}"
    );

    // HEAD: the same status, Location and Content-Length as GET, no body.
    let head = curl(&tb, &["-I", &format!("http://{FRONT}:{port}/h")]);
    let get_len = "redirected to http://198.18.3.1x/h\n".len();
    assert!(head.starts_with("HTTP/1.1 302 Found\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {get_len}\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nlocation: http://198.18.3.1"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");

    // wrr 3:1: 40 followed requests give exactly 30 and 10, each body from the backend its
    // final URL names, path and query kept.
    let got = follow(&tb, port, "/p?q=1", 40);
    let mut n = [0usize; 2];
    for (body, url) in &got {
        match (body.as_str(), url.as_str()) {
            ("b1", "http://198.18.3.11/p?q=1") => n[0] += 1,
            ("b2", "http://198.18.3.12/p?q=1") => n[1] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(n, [30, 10], "wrr 3:1");

    // Bad requests: asterisk-form (ours) and a malformed request line (hyper's), both 400.
    let out = curl(
        &tb,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "OPTIONS",
            "--request-target",
            "*",
            &format!("http://{FRONT}:{port}/"),
        ],
    );
    assert_eq!(out, "400");
    let (_, raw) = tb.exec(
        "c1",
        &[
            "bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{FRONT}/{port}; printf 'NOT HTTP AT ALL\\r\\n\\r\\n' >&3; \
                 timeout 3 head -c 12 <&3"
            ),
        ],
    );
    assert_eq!(raw, "HTTP/1.1 400", "malformed request");

    // Persistence (rr, 307): one client stays on one backend; the method is kept.
    let sticky: Vec<String> = (0..6)
        .map(|_| {
            curl(
                &tb,
                &[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{redirect_url}",
                    "-X",
                    "POST",
                    &format!("http://{FRONT}:{}/form", port + 1),
                ],
            )
        })
        .collect();
    assert!(sticky[0].starts_with("307 http://198.18.3.1"), "{sticky:?}");
    assert!(sticky.iter().all(|s| *s == sticky[0]), "{sticky:?}");

    // A listener on IPv6: rr over both backends, a Location to each in turn.
    let v6: Vec<String> = (0..2)
        .map(|_| {
            curl(
                &tb,
                &[
                    "-g",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{redirect_url}",
                    &format!("http://[{FRONT6}]:{}/six?x", port + 3),
                ],
            )
        })
        .collect();
    let mut v6s = v6.clone();
    v6s.sort();
    assert_eq!(
        v6s,
        ["http://198.18.3.11/six?x", "http://198.18.3.12/six?x"],
        "{v6:?}"
    );

    // No healthy backend: 503.
    let out = curl(
        &tb,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{FRONT}:{}/", port + 2),
        ],
    );
    assert_eq!(out, "503");

    // Kill b2's server: it leaves the redirects within fall × (interval + timeout) plus
    // slack (the health check, then one main-loop period).
    let pids = tb.server_pids("b2");
    assert!(!pids.is_empty(), "b2's server");
    for pid in &pids {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let t0 = Instant::now();
    let limit = Duration::from_millis(FALL * (INTERVAL_MS + TIMEOUT_MS) + 2000);
    loop {
        let st = ctl(&socket, &["status"]);
        if !st.contains("redirect to http://198.18.3.12 weight 1") {
            break;
        }
        assert!(t0.elapsed() < limit, "b2 still a target after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = t0.elapsed();
    for (body, url) in follow(&tb, port, "/after", 8) {
        assert_eq!(
            (body.as_str(), url.as_str()),
            ("b1", "http://198.18.3.11/after")
        );
    }
    eprintln!("redirect: b2 left the redirects {gone:?} after its server was killed");

    // The listing: web answered 2 + 40 + 2 + 8 requests, 50 of them redirects (to b1: 30 + 8,
    // to b2: 10, and the first two, GET and HEAD, to either).
    let list = ctl(&socket, &["-Ln", "--stateless"]);
    eprintln!("{list}");
    let web = list
        .lines()
        .skip_while(|l| !l.starts_with("REDIRECT web "))
        .take(4)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        web.contains(&format!(
            "REDIRECT web listen {FRONT}:{port} service TCP 198.18.10.1:80 scheduler wrr code 302"
        )),
        "{list}"
    );
    assert!(
        web.contains("requests 52 redirects 50 bad_requests 2 unavailable 0"),
        "{list}"
    );
    let to_b1 = web
        .lines()
        .find(|l| l.contains("http://198.18.3.11 "))
        .unwrap();
    let to_b2 = web
        .lines()
        .find(|l| l.contains("http://198.18.3.12 "))
        .unwrap();
    let count = |l: &str| -> u64 { l.rsplit(' ').next().unwrap().parse().unwrap() };
    assert!(to_b1.contains("weight 3"), "{to_b1}");
    assert!(to_b2.contains("weight 0"), "{to_b2}");
    assert_eq!(count(to_b1) + count(to_b2), 50);
    assert!(count(to_b1) >= 38 && count(to_b2) >= 10, "{web}");
    assert!(
        list.contains("REDIRECT sticky ") && list.contains("persistent 30 clients 1"),
        "{list}"
    );
    let json = ctl(&socket, &["-L", "--stateless", "--json"]);
    assert!(
        json.contains("\"name\": \"none\"") && json.contains("\"unavailable\": 1"),
        "{json}"
    );

    // And in the metrics.
    let (ok, body) = tb.exec(
        "dir",
        &[
            "curl",
            "-s",
            "-m",
            "3",
            &format!("http://127.0.0.1:{}/metrics", port + 600),
        ],
    );
    assert!(ok, "scrape");
    for want in [
        "xvs_redirect_requests_total{redirect=\"web\"} 52".to_string(),
        format!(
            "xvs_redirect_redirects_total{{redirect=\"web\",address=\"198.18.3.11\",port=\"80\"}} {}",
            count(to_b1)
        ),
        "xvs_redirect_errors_total{redirect=\"web\",kind=\"bad_request\"} 2".to_string(),
        "xvs_redirect_errors_total{redirect=\"none\",kind=\"unavailable\"} 1".to_string(),
        "xvs_redirect_backends{redirect=\"web\"} 1".to_string(),
        "xvs_redirect_persistent_clients{redirect=\"sticky\"} 1".to_string(),
    ] {
        assert!(body.lines().any(|l| l == want), "{want} not in:\n{body}");
    }

    // A weight changed at run time (the effective weights the L4 schedulers use, as adaptive
    // weights change them) is the redirect's weight within a main-loop period.
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(&socket)
        .args([
            "-e",
            "-t",
            "198.18.10.1:80",
            "-r",
            "198.18.3.11:80",
            "-m",
            "-w",
            "5",
        ])
        .output()
        .expect("xvs ctl -e");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t0 = Instant::now();
    loop {
        let st = ctl(&socket, &["status"]);
        if st.contains("redirect to http://198.18.3.11 weight 5") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "weight not followed:\n{st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A reload that changes [[redirect]] is refused, loudly, and the listener keeps its code.
    std::fs::write(&cfg, config(port).replace("code = 307", "code = 302")).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &xvs.0.id().to_string()])
        .status();
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("[[redirect]] entries cannot change on reload") {
            eprintln!("redirect: reload refused after {:?}", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no refusal in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = curl(
        &tb,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{FRONT}:{}/", port + 1),
        ],
    );
    assert_eq!(out, "307");
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&log_path);
}
