//! Client steering never moves an established connection. Two workers (queues 0 and 1) run
//! `xvs run` with a UDP NAT service (rr over b1..b3) and `[steering]` left at `auto`, which
//! starts in flow steering (no persistent service). 24 UDP flows from client c1 (one socket
//! each, fixed source port) send a datagram before any change, after a persistent (`-p`)
//! service is added at run time (which once switched the steering to address mode) and after
//! it is removed again. Every flow must be answered by the same backend each time, and the
//! connection list must hold each flow exactly once: a flow moved to a worker that does not
//! hold it would be scheduled again there and listed twice. The two workers also decide as one
//! director: rr gives the 24 flows 8/8/8, and `-Ln` lists 8 connections per backend.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed};

const VIP: &str = "198.18.10.1";
const FLOWS: u16 = 24;
const FIRST_PORT: u16 = 21000;

fn config() -> String {
    let mut c = String::from(
        r#"log_interval_secs = 0
neighbour_refresh_ms = 200

[[worker]]
queue = 0

[[worker]]
queue = 1

[[interface]]
name = "front"
ipv4 = "198.18.1.2"

[[interface]]
name = "back"
ipv4 = "198.18.3.2"

[[route]]
dst = "0.0.0.0/0"
via = "198.18.1.1"
interface = "front"

[[route]]
dst = "198.18.3.0/24"
interface = "back"

[timeouts]
udp = 600

[[service]]
protocol = "udp"
vip = "198.18.10.1"
port = 5000
scheduler = "rr"
"#,
    );
    for i in 1..=3 {
        c.push_str(&format!(
            "\n[[service.backend]]\naddress = \"198.18.3.1{i}\"\nport = 5000\nmethod = \"nat\"\n"
        ));
    }
    c
}

fn ctl(socket: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("xvs ctl");
    assert!(
        o.status.success(),
        "xvs ctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The flows: one UDP socket per source port; each line on stdin sends one datagram per flow
/// (retried while unanswered, bounded) and prints the answering backends in flow order.
const FLOWS_PY: &str = "import socket,sys,select,time\n\
vip=sys.argv[1]; n=int(sys.argv[2]); first=int(sys.argv[3])\n\
socks=[]\n\
for i in range(n):\n\
\x20 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('',first+i)); s.setblocking(False); socks.append(s)\n\
for line in sys.stdin:\n\
\x20 got=[None]*n\n\
\x20 for attempt in range(6):\n\
\x20   for i,s in enumerate(socks):\n\
\x20     if got[i] is None: s.sendto(b'r',(vip,5000))\n\
\x20   end=time.time()+0.5\n\
\x20   while time.time()<end and None in got:\n\
\x20     r,_,_=select.select(socks,[],[],0.05)\n\
\x20     for s in r:\n\
\x20       try:\n\
\x20         d,_=s.recvfrom(200); got[socks.index(s)]=d.decode().split()[0]\n\
\x20       except BlockingIOError: pass\n\
\x20   if None not in got: break\n\
\x20 print(' '.join(g or '-' for g in got), flush=True)\n";

/// How often each flow's client port appears in the connection list.
fn listed(socket: &std::path::Path) -> Vec<usize> {
    let out = ctl(socket, &["-Lnc"]);
    (0..FLOWS)
        .map(|i| {
            let needle = format!(":{} ", FIRST_PORT + i);
            out.lines().filter(|l| l.contains(&needle)).count()
        })
        .collect()
}

#[test]
fn run_time_service_changes_never_move_established_flows() {
    if skip_unless_root("steering stability test") {
        return;
    }
    let tb = Testbed::up("ss");
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-steer.toml", tb.prefix));
    let socket = dir.join(format!("{}-steer.sock", tb.prefix));
    let log = dir.join(format!("{}-steer.log", tb.prefix));
    std::fs::write(&cfg, config()).unwrap();
    let _xvs = tb.start_xvs(&cfg, &socket, &log);
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13", "198.18.1.1"]);

    let mut flows = Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("c1"),
            "python3",
            "-c",
            FLOWS_PY,
            VIP,
        ])
        .arg(FLOWS.to_string())
        .arg(FIRST_PORT.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flows");
    let mut to_flows = flows.stdin.take().expect("stdin");
    let mut from_flows = BufReader::new(flows.stdout.take().expect("stdout"));
    let mut round = |what: &str| -> Vec<String> {
        writeln!(to_flows, "{what}").expect("to flows");
        let mut line = String::new();
        from_flows.read_line(&mut line).expect("from flows");
        let got: Vec<String> = line.split_whitespace().map(String::from).collect();
        assert_eq!(got.len(), FLOWS as usize, "{what}: {line:?}");
        assert!(
            got.iter().all(|b| b.starts_with('b')),
            "{what}: unanswered flows: {line:?}"
        );
        got
    };

    let before = round("before");
    assert_eq!(
        listed(&socket),
        vec![1; FLOWS as usize],
        "one entry per flow"
    );
    // The two workers share one rr cursor and one set of counts: 24 flows are 8/8/8 (per-worker
    // cursors gave up to 9/8/7), and `-Ln` shows each backend's 8 connections once, not summed
    // per worker.
    for b in ["b1", "b2", "b3"] {
        assert_eq!(
            before.iter().filter(|x| x.as_str() == b).count(),
            8,
            "rr over both workers: {before:?}"
        );
    }
    let ln = ctl(&socket, &["-Ln"]);
    let inact: Vec<&str> = ln
        .lines()
        .filter(|l| l.contains("-> 198.18.3.1"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(inact, ["8", "8", "8"], "{ln}");
    // Both workers hold some of the flows (flow steering spreads them), so a switch of the
    // steering would move some.
    std::thread::sleep(Duration::from_millis(1200));
    let status = ctl(&socket, &["status"]);
    let per_worker: Vec<u64> = status
        .lines()
        .filter(|l| l.starts_with("worker "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "connections")?;
            w.get(i + 1)?.parse().ok()
        })
        .collect();
    assert_eq!(per_worker.len(), 2, "{status}");
    assert!(per_worker.iter().all(|n| *n > 0), "{status}");
    assert_eq!(per_worker.iter().sum::<u64>(), u64::from(FLOWS), "{status}");

    // A persistent service appears at run time (auto steering once switched to address mode
    // here), then goes again.
    ctl(
        &socket,
        &["-A", "-u", "198.18.10.9:5000", "-s", "rr", "-p", "60"],
    );
    ctl(
        &socket,
        &[
            "-a",
            "-u",
            "198.18.10.9:5000",
            "-r",
            "198.18.3.11:5000",
            "-m",
        ],
    );
    let r = tb.udp_ask("198.18.10.9", "persistent");
    assert!(
        r.starts_with("b1 persistent"),
        "the new service answers: {r:?}"
    );
    let with_persistent = round("with a persistent service");
    assert_eq!(
        with_persistent, before,
        "flows answered by the same backends"
    );
    assert_eq!(
        listed(&socket),
        vec![1; FLOWS as usize],
        "no flow scheduled twice after -A -p"
    );
    ctl(&socket, &["-D", "-u", "198.18.10.9:5000"]);
    let after = round("after removing it");
    assert_eq!(after, before, "flows answered by the same backends");
    assert_eq!(
        listed(&socket),
        vec![1; FLOWS as usize],
        "no flow scheduled twice after -D"
    );
    // New flows are still scheduled.
    let r = tb.udp_ask(VIP, "new");
    assert!(r.starts_with('b'), "{r:?}");
    drop(to_flows);
    let _ = flows.wait();
    eprintln!("24 flows, 2 workers {per_worker:?}: 0 moved across -A -p / -D");
}
