//! Quorum, sorry server and dynamic weights with the real director in the testbed (keepalived's
//! `quorum`, `sorry_server`, `quorum_up`/`quorum_down`, `omega`, MISC_CHECK `misc_dynamic`).
//! b1 and b2 are the backends, b3 the sorry server; each backend's `exec` check exits with the
//! code written in a file of the test (none: 0). Both failing puts the sorry server in as the
//! only backend (`xvs ctl -Ln` and HTTP answers from b3) and runs `quorum_down`; b2 returning
//! takes it out again and runs `quorum_up`; exit code 7 sets b1's weight to 5; the shutdown runs
//! `quorum_down` (omega). Needs root; skipped loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, ONE_WORKER_V4};

const VIP: &str = "198.18.10.1";

fn config(dir: &Path, events: &Path, metrics_port: u16) -> String {
    let mut c = String::from(ONE_WORKER_V4);
    let ev = events.display();
    c.push_str(&format!(
        r#"
[metrics]
address = "127.0.0.1:{metrics_port}"

[[service]]
protocol = "tcp"
vip = "{VIP}"
port = 80
scheduler = "rr"
quorum = 1
quorum_up = "echo up >> {ev}"
quorum_down = "echo down >> {ev}"
omega = true

[service.sorry_server]
address = "198.18.3.13"
port = 80
method = "nat"

[service.check]
type = "exec"
command = "/bin/sh"
args = ["-c", "f={dir}/code-$0; test -e $f && exit $(cat $f); exit 0"]
dynamic = true
interval_ms = 100
timeout_ms = 1000
rise = 1
fall = 1
"#,
        dir = dir.display()
    ));
    for i in 1..=2 {
        c.push_str(&format!(
            "\n[[service.backend]]\naddress = \"198.18.3.{}\"\nport = 80\nmethod = \"nat\"\nweight = 1\n",
            10 + i
        ));
    }
    c
}

fn ctl(socket: &Path, arg: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "--socket"])
        .arg(socket)
        .arg(arg)
        .output()
        .expect("xvs ctl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ctl_list(socket: &Path) -> String {
    ctl(socket, "-Ln")
}

/// The backends `xvs ctl -Ln` lists: (address:port, weight).
fn backends(socket: &Path) -> Vec<(String, u32)> {
    ctl_list(socket)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&"->") && w.get(1).is_some_and(|a| a.starts_with("198.")))
                .then(|| (w[1].to_string(), w[3].parse().unwrap_or(u32::MAX)))
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_code(dir: &Path, addr: &str, code: Option<u8>) {
    let f = dir.join(format!("code-{addr}"));
    match code {
        Some(c) => std::fs::write(f, c.to_string()).unwrap(),
        None => {
            let _ = std::fs::remove_file(f);
        }
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sorry_server_replaces_failed_backends_and_leaves_when_one_returns() {
    if skip_unless_root("quorum / sorry server live test") {
        return;
    }
    let tb = Testbed::up("hq");
    tb.single_queue_towards_director();
    let tmp = TempDir(std::env::temp_dir().join(format!("{}-quorum", tb.prefix)));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let dir = &tmp.0;
    let cfg = dir.join("xvs.toml");
    let socket = dir.join("xvs.sock");
    let log_path = dir.join("xvs.log");
    let events = dir.join("events");
    let metrics_port = 19600 + (std::process::id() % 300) as u16;
    std::fs::write(&cfg, config(dir, &events, metrics_port)).unwrap();
    let quorum_gauge = || {
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
        body.lines()
            .find(|l| l.starts_with("xvs_service_quorum_up{"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let mut guard = tb.start_xvs(&cfg, &socket, &log_path);
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13", "198.18.1.1"]);
    let url = format!("http://{VIP}/");
    let limit = Duration::from_secs(5);

    wait_for("both backends listed", limit, || {
        backends(&socket)
            == [
                ("198.18.3.11:80".to_string(), 1),
                ("198.18.3.12:80".to_string(), 1),
            ]
    });
    let mut seen: Vec<String> = (0..6).filter_map(|_| tb.http_get(&url)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["b1", "b2"]);

    // Both fail: the sorry server is the only backend, weight 1.
    set_code(dir, "198.18.3.11", Some(1));
    set_code(dir, "198.18.3.12", Some(1));
    wait_for("sorry server alone", limit, || {
        backends(&socket) == [("198.18.3.13:80".to_string(), 1)]
    });
    for _ in 0..4 {
        assert_eq!(tb.http_get(&url).as_deref(), Some("b3"));
    }
    let status = ctl(&socket, "status");
    assert!(
        status.contains(&format!(
            "quorum TCP {VIP}:80: down (quorum 1, hysteresis 0), sorry server in\n"
        )),
        "{status}"
    );
    assert!(quorum_gauge().ends_with("} 0"), "{}", quorum_gauge());
    wait_for("quorum_down ran", limit, || {
        std::fs::read_to_string(&events).unwrap_or_default() == "down\n"
    });

    // b2 returns: the sorry server leaves, quorum_up runs.
    set_code(dir, "198.18.3.12", None);
    wait_for("b2 back, sorry server out", limit, || {
        backends(&socket) == [("198.18.3.12:80".to_string(), 1)]
    });
    assert_eq!(tb.http_get(&url).as_deref(), Some("b2"));
    assert!(quorum_gauge().ends_with("} 1"), "{}", quorum_gauge());
    wait_for("quorum_up ran", limit, || {
        std::fs::read_to_string(&events).unwrap_or_default() == "down\nup\n"
    });

    // b1 returns with exit code 7: healthy with weight 5 (misc_dynamic).
    set_code(dir, "198.18.3.11", Some(7));
    wait_for("b1 back with weight 5", limit, || {
        backends(&socket)
            == [
                ("198.18.3.11:80".to_string(), 5),
                ("198.18.3.12:80".to_string(), 1),
            ]
    });

    // Shutdown with omega runs quorum_down.
    let pid = guard.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    wait_for("xvs stops", Duration::from_secs(10), || {
        guard.0.try_wait().unwrap().is_some()
    });
    assert_eq!(
        std::fs::read_to_string(&events).unwrap_or_default(),
        "down\nup\ndown\n"
    );
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("quorum:") && l.contains("lost")),
        "quorum loss logged:\n{log}"
    );
}
