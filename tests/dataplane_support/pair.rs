//! Shared parts of the director-pair tests (tests/sync_pair.rs, tests/keepalived_pair.rs): a
//! NAT service on the testbed's VIP 198.18.10.1 for director `n`, a python echo server for the
//! backends, a client holding N long-lived TCP connections that exchange a line every second,
//! and `xvs ctl` helpers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{ChildGuard, Testbed};

/// The service port (TCP) on VIP 198.18.10.1.
pub const PORT: u16 = 7000;

/// Configuration of director `n` (1, 2): its front/back addresses, the default route via the
/// router, a round-robin NAT service on 198.18.10.1:PORT over the three backends, and `sync`
/// appended verbatim (the `[sync…]` tables).
pub fn config(n: u8, sync: &str) -> String {
    format!(
        r#"log_interval_secs = 0
neighbour_refresh_ms = 200

[[worker]]
queue = 0

[[interface]]
name = "front"
ipv4 = "198.18.1.{front}"

[[interface]]
name = "back"
ipv4 = "198.18.3.{front}"

[[route]]
dst = "0.0.0.0/0"
via = "198.18.1.1"
interface = "front"

[[route]]
dst = "198.18.3.0/24"
interface = "back"

[[service]]
protocol = "tcp"
vip = "198.18.10.1"
port = {PORT}
scheduler = "rr"

[[service.backend]]
address = "198.18.3.11"
port = {PORT}
method = "nat"

[[service.backend]]
address = "198.18.3.12"
port = {PORT}
method = "nat"

[[service.backend]]
address = "198.18.3.13"
port = {PORT}
method = "nat"
{sync}"#,
        front = 1 + n,
    )
}

/// Echo server (argument: port), one selector loop.
pub const ECHO: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[1])))
ls.listen(4096)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            try:
                c, _ = ls.accept()
            except BlockingIOError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            continue
        try:
            d = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            d = b""
        if not d:
            sel.unregister(s)
            s.close()
            continue
        try:
            s.sendall(d)
        except OSError:
            sel.unregister(s)
            s.close()
"#;

/// N connections to VIP:PORT; prints "connected N" once all are up, then every second sends a
/// line on each live connection and waits (≤ 8 s) for its echo; a reset, EOF, wrong echo or
/// timeout marks the connection failed. After DURATION seconds from "connected": prints
/// "result ok=X failed=Y".
pub const CLIENT: &str = r#"
import resource, selectors, socket, sys, time
vip, port, n, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, n + 256))
socks = []
for i in range(n):
    s = socket.socket()
    s.settimeout(10)
    for attempt in range(3):
        try:
            s.connect((vip, port))
            break
        except OSError:
            s.close(); s = socket.socket(); s.settimeout(10)
    else:
        print("connect failed", i, flush=True); sys.exit(1)
    s.setblocking(False)
    socks.append(s)
print("connected", len(socks), flush=True)
start = time.time()
failed = set()
rnd = 0
sel = selectors.DefaultSelector()
while time.time() - start < duration:
    rnd += 1
    t0 = time.time()
    want = {}
    for i, s in enumerate(socks):
        if i in failed:
            continue
        msg = b"%d:%d\n" % (i, rnd)
        try:
            s.send(msg)
            want[i] = (msg, b"")
            sel.register(s, selectors.EVENT_READ, i)
        except OSError:
            failed.add(i)
    deadline = t0 + 8
    while want and time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            i = key.data
            s = socks[i]
            try:
                d = s.recv(100)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            msg, got = want[i]
            got += d
            if not d or not msg.startswith(got):
                failed.add(i); del want[i]; sel.unregister(s)
            elif got == msg:
                del want[i]; sel.unregister(s)
            else:
                want[i] = (msg, got)
    for i in list(want):
        failed.add(i); sel.unregister(socks[i])
    print("round %d at %.1f s: %d failed" % (rnd, time.time() - start, len(failed)), flush=True)
    time.sleep(max(0, 1 - (time.time() - t0)))
print("result ok=%d failed=%d rounds=%d" % (n - len(failed), len(failed), rnd), flush=True)
"#;

/// `xvs ctl --socket SOCKET ARGS…` in namespace `ns` (full name): (success, stdout, stderr).
pub fn ctl(socket: &Path, ns: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_xvs"),
            "ctl",
            "--socket",
        ])
        .arg(socket)
        .args(args)
        .output()
        .expect("xvs ctl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// ESTABLISHED connections to 198.18.10.1:PORT in the director's table (`-Lnc`).
pub fn established(socket: &Path, ns: &str) -> usize {
    ctl(socket, ns, &["-Lnc"])
        .1
        .lines()
        .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!("198.18.10.1:{PORT}")))
        .count()
}

/// Frames received by every worker of a director, from its `xvs ctl status` output.
pub fn worker_rx(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("worker "))
        .filter_map(|l| {
            l.split(": rx ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `python3 -u -c CODE ARGS…` in testbed namespace `ns` (short name), stdout piped.
pub fn spawn_in(tb: &Testbed, ns: &str, code: &str, args: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", &tb.ns(ns), "python3", "-u", "-c", code])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
    )
}

/// Echo servers on PORT in backends b1, b2, b3.
pub fn start_echo_backends(tb: &Testbed) -> Vec<ChildGuard> {
    start_echo_on(tb, &["b1", "b2", "b3"])
}

/// Echo servers on PORT in the given testbed namespaces (short names).
pub fn start_echo_on(tb: &Testbed, backends: &[&str]) -> Vec<ChildGuard> {
    backends
        .iter()
        .map(|b| spawn_in(tb, b, ECHO, &[&PORT.to_string()]))
        .collect()
}

/// [`CLIENT`] running in client 1: `conns` connections to 198.18.10.1:PORT for `secs` seconds.
pub struct LongLivedClient {
    _child: ChildGuard,
    lines: mpsc::Receiver<String>,
    pub conns: usize,
    /// The "round" lines read so far.
    rounds: Vec<String>,
    /// The result line, if [`LongLivedClient::wait_rounds`] met it.
    result: Option<String>,
}

impl LongLivedClient {
    /// Start the client and wait (≤ 60 s) until every connection is open.
    pub fn connect(tb: &Testbed, conns: usize, secs: u32) -> LongLivedClient {
        let mut child = spawn_in(
            tb,
            "c1",
            CLIENT,
            &[
                "198.18.10.1",
                &PORT.to_string(),
                &conns.to_string(),
                &secs.to_string(),
            ],
        );
        let (tx, rx) = mpsc::channel();
        let out = child.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the client connects");
        assert_eq!(line, format!("connected {conns}"), "client: {line}");
        LongLivedClient {
            _child: child,
            lines: rx,
            conns,
            rounds: Vec::new(),
            result: None,
        }
    }

    /// Wait (≤ 10 s each) for `n` more rounds, or the end of the run; the connections failed
    /// so far.
    pub fn wait_rounds(&mut self, n: usize) -> usize {
        for _ in 0..n {
            if self.result.is_some() {
                break;
            }
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("the client reports a round");
            if l.starts_with("round ") {
                self.rounds.push(l);
            } else {
                self.result = Some(l);
            }
        }
        self.rounds
            .last()
            .and_then(|l| {
                l.split(": ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Wait for the end of the run; print the rounds and the result; return the connections
    /// that kept exchanging data to the end.
    pub fn finish(self) -> usize {
        let mut rounds = self.rounds;
        let result = match self.result {
            Some(r) => r,
            None => loop {
                let l = self
                    .lines
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the client reports");
                if l.starts_with("round ") {
                    rounds.push(l);
                } else {
                    break l;
                }
            },
        };
        eprintln!("client rounds:\n{}", rounds.join("\n"));
        eprintln!("client: {result}");
        result
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ok="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("client said {result:?}"))
    }
}
