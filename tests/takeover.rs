//! Hitless restart (`xvs run --takeover SOCKET`, issue 9 test 6c) in the namespace testbed: a
//! director forwards 200 long-lived TCP connections (each exchanging a line every second) and a
//! steady stream of sequence-numbered UDP datagrams over 16 established flows (FullNAT to
//! three backends, where receivers count every sequence number). While that runs:
//!
//! * takeovers that must be refused cleanly: a socket path where nothing listens, a stale socket
//!   file (a director that is no longer running), and a new process whose configuration does not
//!   fit (another worker count) — that one is refused after the old director paused and
//!   sent its offer, so the old one must resume with its table and lose nothing;
//! * then a real takeover by a second `xvs run --takeover` on the same socket, and a third
//!   taking over from the second: each old process must exit 0, each new one must hold every
//!   connection, and afterwards no TCP connection may have failed and no UDP datagram of the
//!   established flows may be missing or have reached another backend. The frames lost and the
//!   longest silence any backend saw are printed;
//! * last, an AF_PACKET director, which refuses to hand over and goes on.
//!
//! The director runs both sync daemons (as in a keepalived pair) and an announce device (for a
//! BGP speaker); each successor must start its own daemons on the same ports and continue the
//! very same device (same ifindex: its addresses never went away). The same with one worker and with two (frames handed between workers).
//! Needs root; skipped loudly otherwise.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::pair::{
    config, ctl, established, spawn_in, start_echo_backends, LongLivedClient,
};
use dataplane_support::{skip_unless_root, ChildGuard, Testbed};

const CONNS: usize = 200;
const UDP_PORT: u16 = 7001;
const UDP_FLOWS: u32 = 16;
/// Datagrams per second over all UDP flows.
const UDP_RATE: u32 = 5000;
const UDP_SECS: u32 = 9;

/// Sends `rate` sequence-numbered datagrams per second round-robin over `flows` sockets (one
/// established flow each) for `secs` seconds, then prints "sent N".
const SENDER: &str = r#"
import socket, sys, time
vip, port, flows, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
socks = []
for i in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((vip, port))
    socks.append(s)
seq = 0
start = time.time()
while True:
    now = time.time() - start
    if now >= secs:
        break
    target = int(now * rate)
    while seq < target:
        try:
            socks[seq % flows].send(b"%d %d\n" % (seq, seq % flows))
        except OSError:
            pass
        seq += 1
    time.sleep(0.0005)
print("sent", seq, flush=True)
"#;

/// Counts the distinct sequence numbers received on UDP `port` for `secs` seconds; prints
/// "got N dup D silence S flows F,…" (S: the longest time between two datagrams after the
/// first, ms; F: the flows seen).
const RECEIVER: &str = r#"
import select, socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("0.0.0.0", port))
s.setblocking(False)
print("listening", flush=True)
seen = set(); flows = set(); dup = 0; last = None; silence = 0.0
end = time.time() + secs
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.1)
    while r:
        try:
            d = s.recv(100)
        except BlockingIOError:
            break
        now = time.time()
        if last is not None:
            silence = max(silence, now - last)
        last = now
        n, f = map(int, d.split())
        flows.add(f)
        if n in seen:
            dup += 1
        else:
            seen.add(n)
print("got", len(seen), "dup", dup, "silence", int(silence * 1000), "flows", ",".join(map(str, sorted(flows))) or "-", flush=True)
"#;

/// The first line of a child's stdout (bounded wait through a thread).
fn line_of(child: &mut ChildGuard, wait: Duration) -> String {
    let out = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut l = String::new();
        let _ = BufReader::new(out).read_line(&mut l);
        let _ = tx.send(l);
    });
    rx.recv_timeout(wait).unwrap_or_default().trim().to_string()
}

/// `xvs run --takeover` in the director namespace: the child, stderr to `log`.
fn start_successor(tb: &Testbed, cfg: &Path, socket: &Path, from: &Path, log: &Path) -> ChildGuard {
    ChildGuard(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &tb.ns("dir"),
                env!("CARGO_BIN_EXE_xvs"),
                "run",
                "--config",
            ])
            .arg(cfg)
            .arg("--socket")
            .arg(socket)
            .arg("--takeover")
            .arg(from)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start xvs"),
    )
}

/// Whether the child still runs (exists and is not a zombie).
fn running(c: &ChildGuard) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", c.0.id()))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}

/// Wait (bounded) for a child to exit; its status code.
fn wait_exit(c: &mut ChildGuard, wait: Duration) -> Option<i32> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = c.0.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn takeover_under_load_loses_no_connection_and_no_frame() {
    scenario("to", 1);
}

/// Two workers on two rx queues, frames of a flow arriving at the worker that does not own it
/// handed to the one that does: the pause drains those handoffs before the rings change hands.
#[test]
fn takeover_with_two_workers_loses_no_connection_and_no_frame() {
    scenario("tw", 2);
}

fn scenario(tag: &str, workers: usize) {
    if skip_unless_root("takeover test") {
        return;
    }
    let tb = Testbed::up_with(tag, &[("SERVERS", "0")]);
    if workers == 1 {
        tb.single_queue_towards_director();
    }
    let _echo = start_echo_backends(&tb);
    let dir = std::env::temp_dir().join(format!("xvs-takeover-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let udp_service = format!(
        "\n[[service]]\nprotocol = \"udp\"\nvip = \"198.18.10.1\"\nport = {UDP_PORT}\nscheduler = \"rr\"\n{}",
        (11..=13)
            .map(|b| format!(
                "\n[[service.backend]]\naddress = \"198.18.3.{b}\"\nport = {UDP_PORT}\nmethod = \"fullnat\"\n"
            ))
            .collect::<String>()
    ) + "\n[fullnat]\nlocal_addresses = [\"198.18.3.100\"]\n"
        // A table of 64 Ki entries: reading it while paused is quick even in a debug build.
        + "\n[director]\nconnections = 65536\n"
        // Both sync daemons, as a keepalived pair runs them: the successor starts its own on
        // the same ports once the old process is gone.
        + "\n[sync.master]\ninterface = \"back\"\nsyncid = 7\n\n[sync.backup]\ninterface = \"back\"\nsyncid = 7\n"
        // The announce device (for a BGP speaker): handed over, never recreated.
        + "\n[announce]\ninterface = \"xvs-vips\"\n";
    let one = config(1, &udp_service);
    let two = one.replacen(
        "[[worker]]\nqueue = 0\n",
        "[[worker]]\nqueue = 0\n\n[[worker]]\nqueue = 1\n",
        1,
    );
    assert!(two.contains("queue = 1"));
    // The director runs with `workers`; the other worker count is a configuration that does
    // not fit.
    let (mine, other) = if workers == 1 { (one, two) } else { (two, one) };
    let cfg = dir.join("xvs.toml");
    std::fs::write(&cfg, mine).unwrap();
    let cfg_two = dir.join("other.toml");
    std::fs::write(&cfg_two, other).unwrap();
    let sock = dir.join("xvs.sock");
    let ns = tb.ns("dir");
    let mut old = tb.start_xvs(&cfg, &sock, &dir.join("old.log"));
    tb.exec("dir", &["ping", "-c", "1", "-W", "1", "198.18.1.1"]);
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13"]);

    let client = LongLivedClient::connect(&tb, CONNS, UDP_SECS + 6);
    let mut receivers: Vec<ChildGuard> = ["b1", "b2", "b3"]
        .iter()
        .map(|b| {
            spawn_in(
                &tb,
                b,
                RECEIVER,
                &[&UDP_PORT.to_string(), &(UDP_SECS + 4).to_string()],
            )
        })
        .collect();
    // Wait until each receiver's socket is bound.
    let mut outs = Vec::new();
    for r in &mut receivers {
        let out = r.0.stdout.take().unwrap();
        let mut rd = BufReader::new(out);
        let mut l = String::new();
        rd.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "listening");
        outs.push(rd);
    }
    let mut sender = spawn_in(
        &tb,
        "c1",
        SENDER,
        &[
            "198.18.10.1",
            &UDP_PORT.to_string(),
            &UDP_FLOWS.to_string(),
            &UDP_RATE.to_string(),
            &UDP_SECS.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(established(&sock, &ns), CONNS, "old director's connections");

    // Refused: nothing listens at the path; a stale socket file (its director is gone).
    let nowhere = dir.join("nowhere.sock");
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for (what, from) in [("no socket", &nowhere), ("stale socket", &stale)] {
        let log = dir.join("refused.log");
        let mut new = start_successor(&tb, &cfg, &dir.join("n.sock"), from, &log);
        let code = wait_exit(&mut new, Duration::from_secs(10));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("{what}: exit {code:?}: {}", text.trim());
        assert_eq!(code, Some(1), "{what}: {text}");
        assert!(
            text.contains("cannot reach the running director"),
            "{what}: {text}"
        );
    }
    // Refused after the offer: the new process does not fit (two workers). The old director
    // paused, sent everything, was told nothing and must go on with its table.
    let log = dir.join("mismatch.log");
    let mut new = start_successor(&tb, &cfg_two, &dir.join("n.sock"), &sock, &log);
    let code = wait_exit(&mut new, Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("mismatch: exit {code:?}: {}", text.trim());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not fit"), "{text}");
    assert!(
        old.0.try_wait().unwrap().is_none(),
        "the old director runs on"
    );
    let old_log = std::fs::read_to_string(dir.join("old.log")).unwrap_or_default();
    assert!(
        old_log.contains("forwarding resumes"),
        "the old director resumed: {old_log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        established(&sock, &ns),
        CONNS,
        "table intact after the refusal"
    );

    let announce_ifindex = || {
        tb.exec("dir", &["ip", "-o", "link", "show", "xvs-vips"])
            .1
            .split(':')
            .next()
            .and_then(|i| i.trim().parse::<u32>().ok())
    };
    let ifindex = announce_ifindex().expect("the announce device exists");
    // The takeover, twice: a successor taken over in turn (what it adopted, it hands on).
    let mut old_log = dir.join("old.log");
    for round in 1..=2 {
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let new_log = dir.join(format!("new{round}.log"));
        let new = start_successor(&tb, &cfg, &sock, &sock, &new_log);
        let code = wait_exit(&mut old, Duration::from_secs(15));
        eprintln!(
            "takeover {round}: old director exited ({code:?}) {:?} after the successor started",
            started.elapsed()
        );
        assert_eq!(
            code,
            Some(0),
            "the old director stops cleanly after handing over"
        );
        // The successor serves its control socket once the old one is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut held = 0;
        while Instant::now() < deadline {
            assert!(
                running(&new),
                "the successor exited: {}",
                std::fs::read_to_string(&new_log).unwrap_or_default()
            );
            held = established(&sock, &ns);
            if held > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(&new_log).unwrap_or_default();
        eprintln!("takeover {round}: successor log:\n{text}");
        eprintln!(
            "takeover {round}: old director log (end):\n{}",
            std::fs::read_to_string(&old_log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(held, CONNS, "the successor holds every connection");
        assert_eq!(
            announce_ifindex(),
            Some(ifindex),
            "the announce device was handed over, not recreated"
        );
        let (_, status, _) = ctl(&sock, &ns, &["status"]);
        assert!(status.contains("announce xvs-vips: "), "{status}");
        eprintln!(
            "takeover {round}: {}",
            status
                .lines()
                .find(|l| l.starts_with("announce"))
                .unwrap_or("")
        );
        let (_, daemons, _) = ctl(&sock, &ns, &["-L", "--daemon"]);
        assert!(
            daemons.starts_with("master sync daemon (mcast=back, syncid=7")
                && daemons.contains("\nbackup sync daemon (mcast=back, syncid=7"),
            "the successor's sync daemons: {daemons}"
        );
        old = new;
        old_log = new_log;
    }

    let sent: u64 = line_of(&mut sender, Duration::from_secs(UDP_SECS as u64 + 10))
        .strip_prefix("sent ")
        .and_then(|n| n.parse().ok())
        .expect("sender result");
    let mut got = 0u64;
    let mut dups = 0u64;
    let mut silence = 0u64;
    let mut flow_backends = Vec::new();
    for mut rd in outs {
        let mut l = String::new();
        rd.read_line(&mut l).unwrap();
        eprintln!("receiver: {}", l.trim());
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.len(), 8, "receiver said {l:?}");
        got += w[1].parse::<u64>().unwrap();
        dups += w[3].parse::<u64>().unwrap();
        silence = silence.max(w[5].parse().unwrap());
        for f in w[7].split(',').filter(|f| *f != "-") {
            flow_backends.push(f.parse::<u32>().unwrap());
        }
    }
    // Every flow stayed with the backend it started on (a flow whose entry was lost would be
    // scheduled afresh, round robin, and show up at a second backend).
    flow_backends.sort();
    assert_eq!(
        flow_backends,
        (0..UDP_FLOWS).collect::<Vec<_>>(),
        "each UDP flow at exactly one backend"
    );
    let ok = client.finish();
    let (_, status, _) = ctl(&sock, &ns, &["status"]);
    eprintln!("successor status:\n{status}");
    let lost = sent.saturating_sub(got);
    eprintln!(
        "takeover under load ({workers} worker(s)): UDP {sent} sent over {UDP_FLOWS} established flows at {UDP_RATE}/s, {got} received, {lost} lost, {dups} duplicated; longest silence at a backend {silence} ms; TCP {ok}/{CONNS} connections kept"
    );
    assert!(
        status.contains(&format!("installed {}", CONNS + UDP_FLOWS as usize))
            && status.contains("refused []"),
        "every entry handed over was installed: {status}"
    );
    assert_eq!(ok, CONNS, "TCP connections lost in the takeover");
    assert_eq!(lost, 0, "UDP datagrams of established flows lost");
    assert!(
        sent >= (UDP_RATE * (UDP_SECS - 1)) as u64,
        "sender too slow: {sent}"
    );
    drop(old);

    // An AF_PACKET director cannot be handed over: it says so and goes on.
    let psock = dir.join("packet.sock");
    let packet = ChildGuard(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_xvs"),
                "run",
                "--io",
                "packet",
                "--config",
            ])
            .arg(&cfg)
            .arg("--socket")
            .arg(&psock)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("packet.log")).unwrap())
            .spawn()
            .expect("start xvs"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !psock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(psock.exists(), "the AF_PACKET director came up");
    let log = dir.join("packet-refused.log");
    let mut new = start_successor(&tb, &cfg, &dir.join("n.sock"), &psock, &log);
    let code = wait_exit(&mut new, Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("AF_PACKET: exit {code:?}: {}", text.trim());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("takeover needs the AF_XDP data plane"),
        "{text}"
    );
    assert!(running(&packet), "the AF_PACKET director runs on");
    let (ok, _, _) = ctl(&psock, &ns, &["-Ln"]);
    assert!(ok, "and answers");
    drop(packet);
    let _ = std::fs::remove_dir_all(&dir);
}
