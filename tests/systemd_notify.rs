//! `xvs run` under systemd's protocols, with the test as the service manager: a unix datagram
//! socket bound by the test is `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` turns the watchdog on and
//! `$JOURNAL_STREAM` names the log file as stderr's journal stream. Checks that `READY=1` comes
//! only once the data plane forwards (XDP attached, control socket answering, HTTP through the VIP
//! served), that `WATCHDOG=1` pings arrive at half the period, that SIGHUP reloads the file between
//! `RELOADING=1` and `READY=1`, that SIGTERM sends `STOPPING=1`, and that log lines follow the
//! journal's conventions (`<N>` priority prefixes, no timestamps).
//! Needs root; skipped loudly otherwise.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, ChildGuard, Testbed, ONE_WORKER_V4};

fn config(backends: &[&str]) -> String {
    let mut c = String::from(ONE_WORKER_V4);
    c.push_str(
        "\n[metrics]\naddress = \"127.0.0.1:0\"\n\n[[service]]\nprotocol = \"tcp\"\nvip = \"198.18.10.1\"\nport = 80\nscheduler = \"rr\"\n",
    );
    for b in backends {
        c.push_str(&format!(
            "\n[[service.backend]]\naddress = \"{b}\"\nport = 80\nmethod = \"nat\"\n"
        ));
    }
    c
}

fn ctl(socket: &std::path::Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("xvs ctl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// The next notification datagram within `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Notifications until one containing `want` (bounded by `within`): (all received, found).
fn until(sock: &UnixDatagram, want: &str, within: Duration) -> (Vec<String>, bool) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if let Some(m) = recv(sock, Duration::from_millis(100)) {
            let hit = m.lines().any(|l| l == want);
            got.push(m);
            if hit {
                return (got, true);
            }
        }
    }
    (got, false)
}

#[test]
fn notify_ready_after_forwarding_watchdog_reload_and_journal_lines() {
    if skip_unless_root("systemd notify test") {
        return;
    }
    let tb = Testbed::up("sd");
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-sd.toml", tb.prefix));
    let socket = dir.join(format!("{}-sd.sock", tb.prefix));
    let log_path = dir.join(format!("{}-sd.log", tb.prefix));
    let notify_path = dir.join(format!("{}-notify.sock", tb.prefix));
    let _ = std::fs::remove_file(&notify_path);
    std::fs::write(&cfg, config(&["198.18.3.11"])).unwrap();
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let log = std::fs::File::create(&log_path).unwrap();
    let m = log.metadata().unwrap();
    let journal_stream = format!("{}:{}", m.dev(), m.ino());

    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("dir"),
            env!("CARGO_BIN_EXE_xvs"),
            "run",
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env("JOURNAL_STREAM", &journal_stream)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start xvs");
    let mut d = ChildGuard(child);
    let pid = d.0.id().to_string();
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // READY=1, and at that moment the data path is up.
    let started = Instant::now();
    let (before, ready) = until(&notify, "READY=1", Duration::from_secs(15));
    assert!(ready, "no READY=1 in 15 s: {before:?}\n{}", log_text());
    let ready_after = started.elapsed();
    assert!(
        tb.xdp_attached("back") && tb.xdp_attached("front"),
        "READY=1 before the XDP program is attached"
    );
    let (ok, status) = ctl(&socket, &["status"]);
    assert!(ok, "READY=1 before the control socket answers");
    assert!(
        before
            .last()
            .unwrap()
            .contains("STATUS=forwarding: 1 service(s), 1 worker(s)"),
        "{before:?}"
    );
    // Nothing is sent before READY=1.
    assert_eq!(before.len(), 1, "{before:?}");
    tb.wait_neighbours(&["198.18.3.11", "198.18.1.1"]);
    let served = (0..3).find_map(|_| tb.http_get("http://198.18.10.1/"));
    assert_eq!(
        served.as_deref(),
        Some("b1"),
        "the VIP is not served after READY=1"
    );
    eprintln!(
        "READY=1 after {ready_after:?}; status: {}",
        status.lines().next().unwrap_or("")
    );

    // WATCHDOG=1 every ~200 ms (half of 400 ms). First drop what queued up meanwhile.
    let mut queued = 0;
    while recv(&notify, Duration::from_millis(1)).is_some() {
        queued += 1;
        assert!(queued < 1000, "notifications without end");
    }
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = recv(&notify, Duration::from_millis(100)) {
            pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    eprintln!("{pings} WATCHDOG=1 in 1.5 s");
    assert!((4..=12).contains(&pings), "{pings} WATCHDOG=1 in 1.5 s");

    // SIGHUP reloads the file: RELOADING=1 (with MONOTONIC_USEC), then READY=1, and the new
    // backend is in the listing.
    std::fs::write(&cfg, config(&["198.18.3.11", "198.18.3.12"])).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let (got, reloading) = until(&notify, "RELOADING=1", Duration::from_secs(5));
    assert!(reloading, "{got:?}");
    let msg = got.last().unwrap();
    assert!(
        msg.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{msg}"
    );
    let (got, ready) = until(&notify, "READY=1", Duration::from_secs(5));
    assert!(ready, "{got:?}");
    let (_, listing) = ctl(&socket, &["-Ln"]);
    assert!(listing.contains("-> 198.18.3.12:80"), "{listing}");

    // A broken file: refused, logged as a warning, READY=1 again.
    std::fs::write(&cfg, "this is not toml [").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let (got, ready) = until(&notify, "READY=1", Duration::from_secs(5));
    assert!(ready, "{got:?}");

    // SIGTERM: STOPPING=1, clean exit.
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (got, stopping) = until(&notify, "STOPPING=1", Duration::from_secs(5));
    assert!(stopping, "{got:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "xvs did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");

    // Journal conventions: tracing lines carry <N>, none starts with a timestamp, the refused
    // reload is a warning.
    let text = log_text();
    eprintln!("{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("metrics: serving")),
        "{text}"
    );
    // The multi-line TOML error stays one journal entry.
    assert!(
        text.lines().any(|l| l.starts_with("<4>xvs: reload refused")
            && l.contains("TOML parse error")
            && l.contains(" | key with no value")),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("20") || l.contains(" INFO ")),
        "timestamps or level words under the journal:\n{text}"
    );
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_file(&cfg);
}
