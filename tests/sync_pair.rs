//! A master/backup pair of xvs directors with connection sync, in the namespace testbed with two
//! directors: 1000 long-lived TCP connections (each exchanging a line every second) go through
//! the master's NAT service; the backup starts its daemon (`xvs ctl --start-daemon`) only once they
//! are open and synced, so it holds them through a bulk resync (xvs's request, answered by the
//! master), and again after it is SIGKILLed and restarted; the test then SIGKILLs the master and
//! moves the VIP (the router's route) and the NAT return path (the backends' floating gateway address, with a
//! gratuitous ARP) to the backup. At least 99 % of the connections must go on exchanging data
//! without a reset.
//! Needs root; skipped loudly otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, ChildGuard, Testbed};

const CONNS: usize = 1000;
const PORT: u16 = 7000;

fn config(n: u8, sync: &str) -> String {
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

const ECHO: &str = r#"
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
const CLIENT: &str = r#"
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

fn ctl(socket: &std::path::Path, ns: &str, args: &[&str]) -> (bool, String, String) {
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

fn established(socket: &std::path::Path, ns: &str) -> usize {
    ctl(socket, ns, &["-Lnc"])
        .1
        .lines()
        .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!("198.18.10.1:{PORT}")))
        .count()
}

fn spawn_in(tb: &Testbed, ns: &str, code: &str, args: &[&str]) -> ChildGuard {
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

#[test]
fn backup_takes_over_1000_long_lived_connections() {
    if skip_unless_root("sync pair test") {
        return;
    }
    let tb = Testbed::up_with("sp", &[("DIRECTORS", "2"), ("SERVERS", "0")]);
    for dev in ["df", "db", "df2", "db2"] {
        let (ok, _) = tb.exec("rt", &["ethtool", "-L", dev, "tx", "1"]);
        assert!(ok, "ethtool -L {dev} tx 1");
    }
    let _echo: Vec<ChildGuard> = ["b1", "b2", "b3"]
        .iter()
        .map(|b| spawn_in(&tb, b, ECHO, &[&PORT.to_string()]))
        .collect();
    // The backends' gateway is a floating address (as in a keepalived LVS-NAT pair), held by
    // the master: established TCP sockets keep their route, so only a moved address with a
    // gratuitous ARP takes their replies to the other director.
    tb.exec(
        "dir",
        &["ip", "addr", "add", "198.18.3.254/24", "dev", "back"],
    );
    for b in ["b1", "b2", "b3"] {
        tb.exec(
            b,
            &["ip", "route", "replace", "default", "via", "198.18.3.254"],
        );
    }
    let dir = std::env::temp_dir().join(format!("xvs-sync-pair-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let master_sync = "\n[sync.master]\ninterface = \"back\"\nsyncid = 7\n";
    std::fs::write(dir.join("m.toml"), config(1, master_sync)).unwrap();
    std::fs::write(dir.join("b.toml"), config(2, "")).unwrap();
    let (msock, bsock) = (dir.join("m.sock"), dir.join("b.sock"));
    let mut master = tb.start_xvs_in("dir", &dir.join("m.toml"), &msock, &dir.join("m.log"));
    let mut backup = tb.start_xvs_in("dir2", &dir.join("b.toml"), &bsock, &dir.join("b.log"));
    let (mns, bns) = (tb.ns("dir"), tb.ns("dir2"));
    let (_, daemons, _) = ctl(&msock, &mns, &["-L", "--daemon"]);
    assert!(
        daemons.starts_with("master sync daemon (mcast=back, syncid=7"),
        "{daemons}"
    );

    // Neighbours the backup will need once traffic moves, resolved now.
    for (ns, addr) in [
        ("dir2", "198.18.3.11"),
        ("dir2", "198.18.3.12"),
        ("dir2", "198.18.3.13"),
        ("dir2", "198.18.1.1"),
        ("rt", "198.18.1.3"),
    ] {
        tb.exec(ns, &["ping", "-c", "1", "-W", "1", addr]);
    }
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13"]);

    let mut client = spawn_in(
        &tb,
        "c1",
        CLIENT,
        &["198.18.10.1", &PORT.to_string(), &CONNS.to_string(), "32"],
    );
    let (tx, rx) = mpsc::channel();
    let out = client.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the client connects");
    assert_eq!(line, format!("connected {CONNS}"), "client: {line}");
    let mut rounds = Vec::new();
    // The master has sent every connection by now (at its third inbound packet, each message
    // within 2 s), while no backup listened: the next updates would come 50 packets later.
    std::thread::sleep(Duration::from_secs(3));
    let on_master = established(&msock, &mns);
    assert_eq!(on_master, CONNS, "master's ESTABLISHED connections");
    assert_eq!(
        established(&bsock, &bns),
        0,
        "nothing synced without a daemon"
    );

    // The backup's daemon through ipvsadm's verb: it asks for a bulk resync and is warm at
    // once. Then the same after a SIGKILL and restart of the backup.
    for round in ["start", "restart"] {
        if round == "restart" {
            let _ = backup.0.kill();
            let _ = backup.0.wait();
            // The dead process's socket file stays; the new one replaces it.
            let _ = std::fs::remove_file(&bsock);
            backup = tb.start_xvs_in("dir2", &dir.join("b.toml"), &bsock, &dir.join("b.log"));
            assert_eq!(
                established(&bsock, &bns),
                0,
                "a restarted director starts empty"
            );
        }
        let asked = Instant::now();
        let (ok, _, err) = ctl(
            &bsock,
            &bns,
            &[
                "--start-daemon",
                "backup",
                "--mcast-interface",
                "back",
                "--syncid",
                "7",
            ],
        );
        assert!(ok, "--start-daemon backup: {err}");
        let (_, daemons, _) = ctl(&bsock, &bns, &["-L", "--daemon"]);
        assert_eq!(
            daemons,
            "backup sync daemon (mcast=back, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
        let deadline = asked + Duration::from_secs(10);
        let mut held = 0;
        while Instant::now() < deadline {
            held = established(&bsock, &bns);
            if held >= CONNS {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, status, _) = ctl(&bsock, &bns, &["status"]);
        eprintln!(
            "bulk resync at backup {round}: {held} connections in {:?}\n{status}",
            asked.elapsed()
        );
        assert!(
            held >= CONNS,
            "backup holds {held} of {CONNS} after a bulk resync"
        );
        assert!(
            status.contains(" done 1 "),
            "the master's answer completed: {status}"
        );
    }

    // Hostile datagrams on the sync group: dropped and counted by reason, the table untouched.
    let hostile = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('198.18.3.2'))\n\
        for d in [b'\\x00\\x07', b'\\x00\\x07\\x00\\x30\\x01\\x01\\x00\\x00' + bytes(8),\n\
        \x20         b'\\x00\\x09\\x00\\x08\\x00\\x01\\x00\\x00']:\n\
        \x20   s.sendto(d, ('224.0.0.81', 8848))\n";
    let (ok, _) = tb.exec("dir", &["python3", "-c", hostile]);
    assert!(ok, "hostile datagrams sent");
    std::thread::sleep(Duration::from_millis(500));
    let (_, status, _) = ctl(&bsock, &bns, &["status"]);
    assert!(
        status.contains("decode_errors [too_short=1 size_mismatch=1 foreign_syncid=1]"),
        "{status}"
    );
    assert_eq!(established(&bsock, &bns), CONNS, "table unchanged");
    let (_, status, _) = ctl(&msock, &mns, &["status"]);
    eprintln!("master before the move:\n{status}");
    // The master dies (SIGKILL); the backup takes the floating gateway (and tells the backends
    // by gratuitous ARP, as keepalived would) and the router's route to the VIPs moves to it.
    let moved = Instant::now();
    let _ = master.0.kill();
    let _ = master.0.wait();
    tb.exec(
        "dir2",
        &["ip", "addr", "add", "198.18.3.254/24", "dev", "back"],
    );
    tb.exec(
        "rt",
        &[
            "ip",
            "route",
            "replace",
            "198.18.10.0/24",
            "via",
            "198.18.1.3",
        ],
    );
    let (ok, _) = tb.exec(
        "dir2",
        &["arping", "-U", "-c", "2", "-I", "back", "198.18.3.254"],
    );
    assert!(ok, "gratuitous ARP from the backup");
    eprintln!("master killed and traffic moved in {:?}", moved.elapsed());

    let result = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the client reports");
        if l.starts_with("round ") {
            rounds.push(l);
        } else {
            break l;
        }
    };
    eprintln!("client rounds:\n{}", rounds.join("\n"));
    eprintln!("client: {result}");
    let ok: usize = result
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ok="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("client said {result:?}"));
    let (_, status, _) = ctl(&bsock, &bns, &["status"]);
    eprintln!("backup after the move:\n{status}");
    let survived = ok as f64 / CONNS as f64;
    eprintln!(
        "failover survival: {ok}/{CONNS} connections ({:.1} %)",
        survived * 100.0
    );
    assert!(
        survived >= 0.99,
        "only {ok} of {CONNS} connections survived the failover"
    );
    // The backup really carried them: at least a few rounds of every connection went through
    // it (the master is dead, so nothing else could have).
    let rx: u64 = status
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
        .sum();
    assert!(
        rx >= 5 * CONNS as u64,
        "the backup forwarded only {rx} frames after the move"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
