//! Packets too big for the egress port are fragmented by the live data plane, as the kernel's
//! forwarding does: a NAT UDP service whose backend-side port has a 1200-byte MTU in xvs's
//! configuration; a client sends 1400-byte datagrams without DF; xvs forwards each as IPv4
//! fragments (the first in place, the others sent after the batch by the worker), the backend's
//! kernel reassembles them and its server echoes the whole datagram, which must come back
//! intact. A datagram with DF set is answered with ICMP "fragmentation needed" instead (the
//! client's socket sees EMSGSIZE on its next send, its route MTU lowered). Needs root.

use std::time::Duration;

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed, DUAL_STACK_NETWORK, ONE_WORKER_V4};

const SERVICE: &str = r#"
[[service]]
protocol = "udp"
vip = "198.18.10.1"
port = 5000
scheduler = "rr"

[[service.backend]]
address = "198.18.3.11"
port = 5000
method = "nat"
"#;

/// Sends `n` datagrams of `size` bytes (DF off unless `df`) and prints, per datagram, whether
/// the echo came back whole: "ok", "short LEN", "bad" or "timeout"; for DF, the error of the
/// second send after an ICMP answer.
const CLIENT: &str = r#"
import socket, sys
size, n, df = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "df"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
IP_MTU_DISCOVER, DONT, DO = 10, 0, 2
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, DO if df else DONT)
s.settimeout(2.0)
for i in range(n):
    data = (b"%06d" % i) * (size // 6)
    try:
        s.sendto(data, ("198.18.10.1", 5000))
    except OSError as e:
        print("send", e.errno); continue
    try:
        d, _ = s.recvfrom(65535)
        print("ok" if d.endswith(b" " + data) else ("short %d" % len(d) if len(d) < len(data) else "bad"))
    except socket.timeout:
        print("timeout")
"#;

#[test]
fn too_big_datagrams_without_df_are_fragmented_and_arrive_whole() {
    if skip_unless_root("fragmentation test") {
        return;
    }
    let tb = Testbed::up("fr");
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir().join(format!("xvs-frag-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = ONE_WORKER_V4.replace(
        "name = \"back\"\nipv4 = \"198.18.3.2\"",
        "name = \"back\"\nipv4 = \"198.18.3.2\"\nmtu = 1200",
    );
    assert!(config.contains("mtu = 1200"), "the back port's MTU is set");
    std::fs::write(dir.join("x.toml"), config + SERVICE).unwrap();
    let sock = dir.join("x.sock");
    let _xvs = tb.start_xvs(&dir.join("x.toml"), &sock, &dir.join("x.log"));
    tb.wait_neighbours(&["198.18.3.11"]);

    let (ok, out) = tb.exec("c1", &["python3", "-c", CLIENT, "1400", "20", "nodf"]);
    assert!(ok, "client ran");
    let lines: Vec<&str> = out.lines().collect();
    let whole = lines.iter().filter(|l| **l == "ok").count();
    eprintln!("1400-byte datagrams through a 1200-byte MTU: {whole}/20 echoed whole: {lines:?}");
    assert_eq!(whole, 20, "{lines:?}");

    // The worker publishes its counters twice a second.
    std::thread::sleep(Duration::from_millis(700));
    let status = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("dir"),
            env!("CARGO_BIN_EXE_xvs"),
            "ctl",
            "--socket",
        ])
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    eprintln!("{status}");
    assert!(!status.contains("needs_fragmentation"), "{status}");
    let fragments: u64 = status
        .split("(+")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        fragments >= 20,
        "one extra fragment per datagram at least: {status}"
    );

    // DF set: the director answers "fragmentation needed" (the next send fails with EMSGSIZE,
    // 90, once the client's kernel lowered the route's MTU), nothing is fragmented.
    let (_, out) = tb.exec("c1", &["python3", "-c", CLIENT, "1400", "3", "df"]);
    eprintln!("with DF: {out:?}");
    assert!(out.lines().any(|l| l == "send 90"), "{out}");
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&dir);
}

/// 3000-byte datagrams from a client (its kernel fragments them at the 1500-byte MTU) to
/// UDP services of every method, IPv4 and IPv6, with two workers on two queues: every fragment must
/// reach the backend the first went to (which reassembles and echoes the whole datagram, the
/// echo itself fragmented on its way back through NAT/FullNAT).
const TWO_WORKERS: &str = r#"log_interval_secs = 0
neighbour_refresh_ms = 200

[[worker]]
queue = 0

[[worker]]
queue = 1

"#;

/// What follows the network in [`TWO_WORKERS`]'s configuration.
const TWO_WORKERS_TAIL: &str = r#"
[fullnat]
local_addresses = ["198.18.3.100", "2001:2:0:3::100"]
"#;

#[test]
fn fragmented_datagrams_arrive_whole_in_every_method() {
    if skip_unless_root("fragmented datagrams test") {
        return;
    }
    let tb = Testbed::up("fm");
    let dir = std::env::temp_dir().join(format!("xvs-fragm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let methods = [("nat", 1), ("dr", 2), ("tun", 3), ("fullnat", 4)];
    let mut config = [TWO_WORKERS, DUAL_STACK_NETWORK, TWO_WORKERS_TAIL].concat();
    let vip = |v6: bool, k: u8| {
        if v6 {
            format!("2001:2:0:10::{k}")
        } else {
            format!("198.18.10.{k}")
        }
    };
    for (method, k) in methods {
        for v6 in [false, true] {
            config.push_str(&format!(
                "\n[[service]]\nprotocol = \"udp\"\nvip = \"{}\"\nport = 5000\nscheduler = \"rr\"\n",
                vip(v6, k)
            ));
            for b in 11..=13 {
                let addr = if v6 {
                    format!("2001:2:0:3::{b}")
                } else {
                    format!("198.18.3.{b}")
                };
                config.push_str(&format!(
                    "\n[[service.backend]]\naddress = \"{addr}\"\nport = 5000\nmethod = \"{method}\"\n"
                ));
            }
        }
    }
    std::fs::write(dir.join("x.toml"), config).unwrap();
    let sock = dir.join("x.sock");
    let _xvs = tb.start_xvs(&dir.join("x.toml"), &sock, &dir.join("x.log"));
    tb.wait_neighbours(&[
        "198.18.3.11",
        "198.18.3.12",
        "198.18.3.13",
        "2001:2:0:3::11",
        "2001:2:0:3::12",
        "2001:2:0:3::13",
    ]);
    const ASK: &str = r#"
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
whole = 0
for i in range(n):
    if ":" in vip:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
    s.settimeout(2.0)
    data = (b"%05d." % i) * 500
    for attempt in range(3):
        s.sendto(data, (vip, 5000))
        try:
            d, _ = s.recvfrom(65535)
            if d.endswith(b" " + data):
                whole += 1
            break
        except socket.timeout:
            pass
    s.close()
print(whole)
"#;
    for (method, k) in methods {
        for v6 in [false, true] {
            let vip = vip(v6, k);
            let (ok, out) = tb.exec("c1", &["python3", "-c", ASK, &vip, "12"]);
            assert!(ok, "{method}: client ran");
            let whole: usize = out.trim().parse().unwrap_or(0);
            eprintln!("{method} {vip}: {whole}/12 datagrams of 3000 bytes echoed whole");
            assert_eq!(whole, 12, "{method}: fragmented datagrams through {vip}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
