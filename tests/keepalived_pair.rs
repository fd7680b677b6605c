//! An active/backup pair of xvs directors under the real keepalived (VRRP only, `-P`), in the
//! namespace testbed with two directors. One VRRP instance (v3, advert_int 0.1 s) holds two
//! floating addresses: 198.18.1.254 on `front` (the router's next hop for the VIP network
//! 198.18.10.0/24) and 198.18.3.254 on `back` (the backends' default gateway, for NAT replies),
//! so both move together and keepalived's gratuitous ARPs move the router's and the backends'
//! neighbour entries. Both directors run both sync daemons all the time (each sends its own
//! connections and installs its peer's), so no role switch is needed when VRRP moves; keepalived
//! tracks the director's own `xvs run` with `track_process` (a dead xvs) and a `track_script` on
//! `xvs ctl status` (an unresponsive one), so either makes its node FAULT and give the
//! addresses up.
//!
//! The test checks the VRRP states (notify script writing the state to a file, and `ip addr`),
//! opens 1000 long-lived TCP connections through the MASTER, waits until the BACKUP holds them
//! by sync, SIGKILLs the MASTER's `xvs run` (or the whole node: keepalived too), and measures the
//! failover time (a prober opening a new connection every ~5 ms, each given up after 50 ms: from
//! the kill until the first probe started after it is answered) and the share of the 1000
//! connections that go on without a reset (≥ 99 %).
//! Needs root and keepalived (scripts/install-deps.sh); skipped loudly otherwise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod dataplane_support;
use dataplane_support::pair::{
    config, ctl, established, spawn_in, start_echo_backends, worker_rx, LongLivedClient, PORT,
};
use dataplane_support::{skip_unless_root, ChildGuard, Testbed};

const CONNS: usize = 1000;
const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// Every ~5 ms (for ARGV[3] seconds): a new TCP connection to VIP:PORT, one line, its echo,
/// close, given up after 50 ms; prints "ok START END" (epoch seconds) for each answered probe.
const PROBER: &str = r#"
import socket, sys, time
vip, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.time() + duration
while time.time() < end:
    t0 = time.time()
    s = socket.socket()
    s.settimeout(0.05)
    try:
        s.connect((vip, port))
        s.sendall(b"probe\n")
        if s.recv(16) == b"probe\n":
            print("ok %.4f %.4f" % (t0, time.time()), flush=True)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.005)
"#;

/// keepalived.conf of director `n` (1 has the higher priority): VRRP v3, one instance with both
/// floating addresses, tracking this director's own `xvs run` as examples/keepalived/ does:
/// `track_process` (matched by its `--config` argument, since both directors' processes are
/// visible in the shared pid namespace) and a `track_script` on `xvs ctl status` every second;
/// notify script writing the state to `dir/state<n>`.
fn keepalived_conf(dir: &Path, n: u8) -> String {
    let sock = dir.join(format!("x{n}.sock"));
    let xvs_cfg = dir.join(format!("x{n}.toml"));
    format!(
        r#"global_defs {{
    router_id xvs-test-dir{n}
    vrrp_version 3
    script_user root
}}

vrrp_track_process xvs_run {{
    process "{xvs}" run --config "{cfg}"
    param_match partial
    quorum 1
}}

vrrp_script xvs_status {{
    script "{xvs} ctl --socket {sock} status"
    interval 1
    timeout 1
    fall 1
    rise 1
}}

vrrp_instance XVS {{
    state BACKUP
    interface front
    virtual_router_id 51
    priority {prio}
    advert_int 0.1
    virtual_ipaddress {{
        198.18.1.254/24 dev front
        198.18.3.254/24 dev back
    }}
    track_process {{
        xvs_run
    }}
    track_script {{
        xvs_status
    }}
    notify "{notify}"
}}
"#,
        xvs = env!("CARGO_BIN_EXE_xvs"),
        sock = sock.display(),
        cfg = xvs_cfg.display(),
        prio = if n == 1 { 150 } else { 100 },
        notify = dir.join(format!("notify{n}.sh")).display(),
    )
}

/// The keepalived parent process (`-n`), started in the initial namespace with `-s NS` (it enters
/// the director's namespace itself): started with `ip netns exec` instead, its `track_process`
/// gets no process events (keepalived logs "Failed to set/clear process event listen - errno
/// 111" and the instance stays FAULT). SIGTERM on drop (it removes its addresses and stops its
/// VRRP child), SIGKILL if it has not exited within 3 s.
struct Keepalived(std::process::Child);

impl Keepalived {
    fn start(tb: &Testbed, ns: &str, dir: &Path, n: u8) -> Keepalived {
        let f = |s: &str| dir.join(format!("{s}{n}"));
        let child = Command::new(KEEPALIVED)
            .args(["-n", "-l", "-D", "-G", "-P", "-s", &tb.ns(ns), "-f"])
            .arg(f("keepalived.conf"))
            .arg("-p")
            .arg(f("keepalived.pid"))
            .arg("-r")
            .arg(f("vrrp.pid"))
            .arg("-c")
            .arg(f("checkers.pid"))
            .arg("-b")
            .arg(f("bfd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(f("keepalived.log")).expect("log file"))
            .spawn()
            .expect("start keepalived");
        Keepalived(child)
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn state(dir: &Path, n: u8) -> String {
    std::fs::read_to_string(dir.join(format!("state{n}")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn wait_state(dir: &Path, n: u8, want: &str, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if state(dir, n) == want {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Which floating addresses namespace `ns` holds.
fn floating(tb: &Testbed, ns: &str) -> (bool, bool) {
    let a = tb.exec(ns, &["ip", "-4", "-o", "addr"]).1;
    (
        a.contains("inet 198.18.1.254/24"),
        a.contains("inet 198.18.3.254/24"),
    )
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What dies on the MASTER.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kill {
    /// Its `xvs run` (SIGKILL); keepalived stays and its track_process puts the node in FAULT.
    Xvs,
    /// Its `xvs run` wedged (SIGSTOP: alive, forwarding nothing, not answering its control
    /// socket); only the track_script on `xvs ctl status` can see it (interval 1 s, timeout 1 s).
    Wedge,
    /// The whole node: keepalived's VRRP child, its parent and `xvs run` (SIGKILL each). No
    /// priority-0 advert, so the BACKUP waits out the master-down interval; the dead node keeps
    /// its floating addresses (nobody removes them), the BACKUP's gratuitous ARPs win.
    Node,
}

/// One test at a time: each builds a testbed with two directors and 1000 connections.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn keepalived_moves_the_vip_and_1000_connections_survive_a_dead_xvs() {
    failover(Kill::Xvs, "ka");
}

#[test]
fn keepalived_moves_the_vip_and_1000_connections_survive_a_wedged_xvs() {
    failover(Kill::Wedge, "kw");
}

#[test]
fn keepalived_moves_the_vip_and_1000_connections_survive_a_dead_node() {
    failover(Kill::Node, "kn");
}

fn failover(kill: Kill, tag: &str) {
    if skip_unless_root("keepalived pair test") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new(KEEPALIVED).exists() {
        eprintln!("!!!!! SKIPPED keepalived pair test: {KEEPALIVED} missing (scripts/install-deps.sh) !!!!!");
        return;
    }
    let tb = Testbed::up_with(tag, &[("DIRECTORS", "2"), ("SERVERS", "0")]);
    for dev in ["df", "db", "df2", "db2"] {
        let (ok, _) = tb.exec("rt", &["ethtool", "-L", dev, "tx", "1"]);
        assert!(ok, "ethtool -L {dev} tx 1");
    }
    let _echo = start_echo_backends(&tb);
    // The router reaches the VIPs through the floating front address, the backends answer NAT
    // traffic through the floating back address; keepalived places both.
    let (ok, _) = tb.exec(
        "rt",
        &[
            "ip",
            "route",
            "replace",
            "198.18.10.0/24",
            "via",
            "198.18.1.254",
        ],
    );
    assert!(ok, "router: VIP route via the floating front address");
    for b in ["b1", "b2", "b3"] {
        tb.exec(
            b,
            &["ip", "route", "replace", "default", "via", "198.18.3.254"],
        );
    }

    let dir: PathBuf =
        std::env::temp_dir().join(format!("xvs-ka-pair-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Both daemons on both directors, all the time.
    let sync = "\n[sync.master]\ninterface = \"back\"\nsyncid = 7\n\n[sync.backup]\ninterface = \"back\"\nsyncid = 7\n";
    let mut xvs: Vec<ChildGuard> = Vec::new();
    let mut socks = Vec::new();
    for (n, ns) in [(1u8, "dir"), (2, "dir2")] {
        let cfg = dir.join(format!("x{n}.toml"));
        std::fs::write(&cfg, config(n, sync)).unwrap();
        let sock = dir.join(format!("x{n}.sock"));
        xvs.push(tb.start_xvs_in(ns, &cfg, &sock, &dir.join(format!("x{n}.log"))));
        socks.push(sock);
        let notify = dir.join(format!("notify{n}.sh"));
        std::fs::write(
            &notify,
            format!(
                "#!/bin/sh\n# keepalived notify: $1 INSTANCE|GROUP, $2 name, $3 state, $4 priority\necho \"$3\" > {}/state{n}.tmp && mv {}/state{n}.tmp {}/state{n}\n",
                dir.display(),
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        Command::new("chmod")
            .args(["755"])
            .arg(&notify)
            .status()
            .unwrap();
        std::fs::write(
            dir.join(format!("keepalived.conf{n}")),
            keepalived_conf(&dir, n),
        )
        .unwrap();
    }
    let (mns, bns) = (tb.ns("dir"), tb.ns("dir2"));
    let (_, daemons, _) = ctl(&socks[0], &mns, &["-L", "--daemon"]);
    assert!(
        daemons.contains("master sync daemon") && daemons.contains("backup sync daemon"),
        "{daemons}"
    );

    let started = Instant::now();
    let mut ka1 = Keepalived::start(&tb, "dir", &dir, 1);
    let _ka2 = Keepalived::start(&tb, "dir2", &dir, 2);
    let to_master = wait_state(&dir, 1, "MASTER", Duration::from_secs(10));
    let log =
        |n: u8| std::fs::read_to_string(dir.join(format!("keepalived.log{n}"))).unwrap_or_default();
    assert!(
        to_master.is_some(),
        "director 1 never became MASTER (state {:?}); keepalived log:\n{}",
        state(&dir, 1),
        log(1)
    );
    assert!(
        wait_state(&dir, 2, "BACKUP", Duration::from_secs(5)).is_some(),
        "director 2 is not BACKUP ({:?}); log:\n{}",
        state(&dir, 2),
        log(2)
    );
    eprintln!("VRRP: director 1 MASTER after {:?}", started.elapsed());
    assert_eq!(floating(&tb, "dir"), (true, true), "MASTER holds both");
    assert_eq!(floating(&tb, "dir2"), (false, false), "BACKUP holds none");

    // Neighbours the backup will need once traffic moves, resolved now.
    for (ns, addr) in [
        ("dir2", "198.18.3.11"),
        ("dir2", "198.18.3.12"),
        ("dir2", "198.18.3.13"),
        ("dir2", "198.18.1.1"),
        ("rt", "198.18.1.254"),
    ] {
        tb.exec(ns, &["ping", "-c", "1", "-W", "1", addr]);
    }
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13"]);

    let client = LongLivedClient::connect(&tb, CONNS, 30);
    // Every connection is synced within ~2 s of its third packet (the flush timer).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut on_master, mut on_backup) = (0, 0);
    while Instant::now() < deadline {
        on_master = established(&socks[0], &mns);
        on_backup = established(&socks[1], &bns);
        if on_master >= CONNS && on_backup >= CONNS {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(on_master, CONNS, "MASTER's ESTABLISHED connections");
    assert!(
        on_backup >= CONNS,
        "BACKUP holds {on_backup} of {CONNS} by sync"
    );

    let mut prober = spawn_in(&tb, "c1", PROBER, &["198.18.10.1", &PORT.to_string(), "15"]);
    let (tx, probes) = mpsc::channel::<(f64, f64)>();
    let out = prober.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let mut w = l.split_whitespace().skip(1).map(|x| x.parse::<f64>());
            if let (Some(Ok(a)), Some(Ok(b))) = (w.next(), w.next()) {
                let _ = tx.send((a, b));
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));

    let (_, status, _) = ctl(&socks[0], &mns, &["status"]);
    eprintln!("MASTER before the kill:\n{status}");
    // Kill::Xvs: the MASTER's xvs dies; keepalived sees it (track_process), goes FAULT, gives
    // the addresses up (priority-0 advert). Kill::Node: keepalived dies with it. Either way
    // director 2 becomes MASTER and announces the addresses by gratuitous ARP.
    let vrrp_child = std::fs::read_to_string(dir.join("vrrp.pid1"))
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        vrrp_child.parse::<u32>().is_ok(),
        "keepalived's VRRP child pid: {vrrp_child:?}"
    );
    let killed_at = epoch();
    let killed = Instant::now();
    if kill == Kill::Node {
        // The child first: the parent would respawn it, and would stop it cleanly (SIGTERM,
        // releasing the addresses) if it died first.
        let st = Command::new("kill")
            .args(["-KILL", &vrrp_child])
            .status()
            .unwrap();
        assert!(st.success(), "kill -KILL {vrrp_child}");
        let _ = ka1.0.kill();
        let _ = ka1.0.wait();
    }
    let mut master = xvs.remove(0);
    if kill == Kill::Wedge {
        let st = Command::new("kill")
            .args(["-STOP", &master.0.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -STOP xvs");
    } else {
        let _ = master.0.kill();
        let _ = master.0.wait();
    }
    // Probes started before this may have been answered by the dying xvs (in Kill::Node it
    // outlives keepalived by a few milliseconds).
    let xvs_dead_at = epoch();
    let b_master = wait_state(&dir, 2, "MASTER", Duration::from_secs(10));
    eprintln!(
        "director 2 MASTER {:?} after the kill; director 1 now {:?}",
        b_master,
        state(&dir, 1)
    );
    assert!(
        b_master.is_some(),
        "director 2 never became MASTER; logs:\n{}\n{}",
        log(1),
        log(2)
    );
    if kill != Kill::Node {
        assert_eq!(state(&dir, 1), "FAULT", "director 1 after its xvs died");
        assert_eq!(floating(&tb, "dir"), (false, false), "FAULT node gave up");
        let l = log(1);
        let why = l
            .lines()
            .find(|l| {
                l.contains("Quorum lost")
                    || (l.contains("VRRP_Script(xvs_status)") && !l.contains("succeeded"))
            })
            .unwrap_or("");
        eprintln!("director 1's keepalived: {why}");
        if kill == Kill::Xvs {
            assert!(
                why.contains("Quorum lost for tracked process xvs_run"),
                "track_process saw xvs die first:\n{l}"
            );
        } else {
            assert!(
                why.contains("VRRP_Script(xvs_status)"),
                "the track_script saw the wedged xvs:\n{l}"
            );
        }
    } else {
        eprintln!(
            "dead node still holds (front, back) floating addresses: {:?}",
            floating(&tb, "dir")
        );
    }
    assert_eq!(floating(&tb, "dir2"), (true, true), "new MASTER holds both");
    eprintln!(
        "failover of VRRP observed {:?} after the kill",
        killed.elapsed()
    );

    let ok = client.finish();
    let mut before = 0;
    let mut served_again = None;
    for (t0, t1) in probes.try_iter() {
        if t1 < killed_at {
            before += 1;
        } else if t0 >= xvs_dead_at && served_again.is_none() {
            served_again = Some(t1 - killed_at);
        }
    }
    assert!(
        before > 10,
        "the prober was answered before the kill ({before})"
    );
    let served_again = served_again.expect("a new connection was answered after the kill");
    let (_, status, _) = ctl(&socks[1], &bns, &["status"]);
    eprintln!("new MASTER after the move:\n{status}");
    let survived = ok as f64 / CONNS as f64;
    let what = match kill {
        Kill::Xvs => "xvs run SIGKILLed",
        Kill::Wedge => "xvs run SIGSTOPped",
        Kill::Node => "keepalived and xvs run SIGKILLed",
    };
    eprintln!(
        "keepalived failover ({what} on the MASTER): VIP traffic served again {:.0} ms after the kill; {ok}/{CONNS} connections survived ({:.1} %)",
        served_again * 1000.0,
        survived * 100.0
    );
    assert!(
        survived >= 0.99,
        "only {ok} of {CONNS} connections survived the failover"
    );
    // VRRPv3 at 0.1 s: master down after ~0.35 s, a tracked process at once, a wedge within
    // the script's interval + timeout (2 s).
    let bound = if kill == Kill::Wedge { 3.0 } else { 1.0 };
    assert!(
        served_again < bound,
        "VIP traffic served again only {served_again:.2} s after the kill"
    );
    let rx = worker_rx(&status);
    assert!(
        rx >= 5 * CONNS as u64,
        "the new MASTER forwarded only {rx} frames after the move"
    );
    drop(prober);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A network namespace of this test, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// examples/keepalived/keepalived.conf passes keepalived's own configuration check (`-t`) in a
/// namespace that has its interfaces (eth0, eth1), with the example's /usr/local/bin/xvs replaced
/// by the built binary (keepalived disables a track_script whose program is missing).
#[test]
fn example_keepalived_conf_passes_keepalived_config_check() {
    if skip_unless_root("keepalived example config check") {
        return;
    }
    if !Path::new(KEEPALIVED).exists() {
        eprintln!("!!!!! SKIPPED keepalived example config check: {KEEPALIVED} missing (scripts/install-deps.sh) !!!!!");
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keepalived/keepalived.conf");
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(
        text.contains("/usr/local/bin/xvs"),
        "the example names the installed binary"
    );
    let conf = std::env::temp_dir().join(format!("xvs-ka-example-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        text.replace("/usr/local/bin/xvs", env!("CARGO_BIN_EXE_xvs")),
    )
    .unwrap();
    let ns = Netns(format!("kt{:x}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).status();
    let ok = |args: &[&str]| Command::new("ip").args(args).status().unwrap().success();
    assert!(ok(&["netns", "add", &ns.0]));
    assert!(ok(&[
        "-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"
    ]));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, KEEPALIVED, "-l", "-t", "-f"])
        .arg(&conf)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&conf);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "keepalived -t on the example: {:?}\n{said}",
        out.status
    );
}
