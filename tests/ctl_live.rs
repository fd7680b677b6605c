//! `xvs ctl` against the real running director in the namespace testbed: the listing shows the
//! configuration, `-a`, `-e` (weight 0 quiesces) and `-d` take effect on live HTTP traffic, and
//! reloads and edits in the middle of a UDP stream lose none of its datagrams.
//! Needs root; skipped loudly otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, ONE_WORKER_V4};

const VIP: &str = "198.18.10.1";

fn config(extra_backend: bool) -> String {
    let mut c = String::from(ONE_WORKER_V4);
    c.push_str(
        r#"
[[service]]
protocol = "tcp"
vip = "198.18.10.1"
port = 80
scheduler = "rr"

[[service.backend]]
address = "198.18.3.11"
port = 80
method = "nat"

[[service.backend]]
address = "198.18.3.12"
port = 80
method = "nat"

[[service]]
protocol = "udp"
vip = "198.18.10.1"
port = 5000
scheduler = "rr"

[[service.backend]]
address = "198.18.3.11"
port = 5000
method = "nat"
"#,
    );
    if extra_backend {
        c.push_str(
            "\n[[service.backend]]\naddress = \"198.18.3.12\"\nport = 5000\nmethod = \"nat\"\n",
        );
    }
    c
}

fn ctl(socket: &std::path::Path, args: &[&str]) -> (bool, String, String) {
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
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn names(tb: &Testbed, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|_| {
            tb.http_get(&format!("http://{VIP}/"))
                .unwrap_or_else(|| "FAILED".into())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn ctl_changes_live_traffic_and_reloads_lose_nothing() {
    if skip_unless_root("xvs ctl live test") {
        return;
    }
    let tb = Testbed::up("cl");
    // One worker on queue 0: make every frame towards the director arrive there.
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-ctl.toml", tb.prefix));
    let socket = dir.join(format!("{}-ctl.sock", tb.prefix));
    let log_path = dir.join(format!("{}-ctl.log", tb.prefix));
    std::fs::write(&cfg, config(false)).unwrap();
    let mut d = tb.start_xvs(&cfg, &socket, &log_path);
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13", "198.18.1.1"]);

    // The listing, as ipvsadm lays it out.
    let (ok, out, err) = ctl(&socket, &["-Ln"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("IP Virtual Server version 1.2.1 (size=4096)\n"),
        "{out}"
    );
    assert!(out.contains("\nTCP  198.18.10.1:80 rr\n"), "{out}");
    assert!(
        out.contains("  -> 198.18.3.11:80               Masq    1      "),
        "{out}"
    );
    assert_eq!(names(&tb, 8), ["b1", "b2"]);

    // -a: the new backend takes connections at once.
    let (ok, _, err) = ctl(
        &socket,
        &[
            "-a",
            "-t",
            "198.18.10.1:80",
            "-r",
            "198.18.3.13:80",
            "-m",
            "-w",
            "2",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(names(&tb, 12), ["b1", "b2", "b3"]);
    // -e weight 0: quiesced, no new connections.
    let (ok, _, err) = ctl(
        &socket,
        &[
            "-e",
            "-t",
            "198.18.10.1:80",
            "-r",
            "198.18.3.11:80",
            "-m",
            "-w",
            "0",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(names(&tb, 12), ["b2", "b3"]);
    // -d: gone.
    let (ok, _, err) = ctl(
        &socket,
        &["-d", "-t", "198.18.10.1:80", "-r", "198.18.3.12:80"],
    );
    assert!(ok, "{err}");
    assert_eq!(names(&tb, 8), ["b3"]);
    let (_, out, _) = ctl(&socket, &["-Ln"]);
    assert!(!out.contains("198.18.3.12:80"), "{out}");
    assert!(
        out.contains("  -> 198.18.3.11:80               Masq    0      "),
        "{out}"
    );
    // Errors are clear and fail.
    let (ok, _, err) = ctl(
        &socket,
        &["-d", "-t", "198.18.10.1:80", "-r", "198.18.3.99:80"],
    );
    assert!(!ok && !err.is_empty());

    // A UDP stream (one flow, 1 datagram per ms) while the state is reloaded and edited: every
    // datagram must come back.
    let stream = "import socket,time,sys\n\
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setblocking(False)\n\
        n=int(sys.argv[2]); got=set(); t0=time.time()\n\
        for i in range(n):\n\
        \x20 s.sendto(('%d' % i).encode(),(sys.argv[1],5000))\n\
        \x20 end=time.time()+0.001\n\
        \x20 while time.time()<end:\n\
        \x20   try:\n\
        \x20     d,_=s.recvfrom(200); got.add(d.decode().split()[1])\n\
        \x20   except BlockingIOError: pass\n\
        end=time.time()+1.0\n\
        while time.time()<end:\n\
        \x20 try:\n\
        \x20   d,_=s.recvfrom(200); got.add(d.decode().split()[1])\n\
        \x20 except BlockingIOError: time.sleep(0.001)\n\
        print(n-len(got))\n";
    let n = 3000;
    let sender = Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("c1"),
            "python3",
            "-c",
            stream,
            VIP,
            &n.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("udp stream");
    std::thread::sleep(Duration::from_millis(300));
    let mut reloads = 0;
    for i in 0..4 {
        // Alternate the file between one and two UDP backends, reloading each time.
        std::fs::write(&cfg, config(i % 2 == 0)).unwrap();
        let (ok, out, err) = ctl(&socket, &["reload"]);
        assert!(ok, "reload: {err}");
        assert!(
            out.contains("discarded") || err.contains("discarded"),
            "reload says what it discards: {out} {err}"
        );
        reloads += 1;
        let (ok, _, err) = ctl(&socket, &["-E", "-u", "198.18.10.1:5000", "-s", "wrr"]);
        assert!(ok, "{err}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = sender.wait_with_output().expect("stream");
    let lost: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("lost count");
    eprintln!("UDP stream: {n} datagrams, {reloads} reloads + 4 edits, {lost} lost");
    assert_eq!(
        lost, 0,
        "datagrams of an established flow lost across reloads"
    );

    // After the reload the file is the state again: the runtime -a/-e/-d are gone.
    let (_, out, _) = ctl(&socket, &["-Ln"]);
    assert!(
        out.contains("198.18.3.12:80") && !out.contains("198.18.3.13:80"),
        "{out}"
    );

    // The status shows each worker's I/O counters too (one worker: nothing handed over). The
    // workers publish them about once a second.
    std::thread::sleep(Duration::from_millis(1200));
    let (ok, out, err) = ctl(&socket, &["status"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("worker 0:"))
        .unwrap_or_else(|| panic!("no worker line in {out}"));
    assert!(
        line.contains("io drops [tx_ring_full=0 tx_bad_port=0 rx_bad_desc=0 handoff_full=0 xsk_no_buffer=0 xsk_rx_ring_full=0] syscalls [sendto=")
            && line.contains("] handoff out 0 in 0 rx batches ")
            && line.contains(" frames/batch) rounds ")
            && line.contains(" frames/kick longest round"),
        "{line}"
    );
    let rx: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("rx in {line}"));
    assert!(rx > 0, "{line}");

    let _ = Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "xvs did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!socket.exists(), "control socket removed on exit");
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&log_path);
}
