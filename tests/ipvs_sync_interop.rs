//! Kernel IPVS connection sync on the wire, against a real kernel (the QEMU guest of
//! scripts/ipvs-guest with eth0 on a tap in a namespace of this test; tests/support/ipvs_guest.rs),
//! and between `xvs run` and that kernel in both directions.
//! One boot serves every scenario:
//!
//! 1. Kernel master → host: the guest runs `ipvsadm --start-daemon master --mcast-interface eth0
//!    --syncid 7` with a NAT TCP service, a persistent (`-p 300`) TCP service, a UDP service and
//!    an IPv6 TCP service; clients in the test's namespace make real connections through the
//!    guest to backends behind it (TCP connections reach ESTABLISHED; the UDP client sends three
//!    datagrams, the kernel's sync_threshold). The test receives the sync datagrams on
//!    224.0.0.81:8848 in its namespace, decodes them (tests/support/ipvs_sync_wire.rs) and checks
//!    each entry against the guest's `ipvsadm -Lnc` at capture time: same protocol, client,
//!    virtual, destination, and the same state for connections. Then again with
//!    `--sync-maxlen 80 --mcast-group 239.18.0.81 --mcast-port 8850` (two entries per datagram,
//!    another group and port).
//! 2. Host → kernel backup: the guest runs `--start-daemon backup --mcast-interface eth0
//!    --syncid 7`; from a second namespace on the guest's segment (where another director would
//!    be) the test sends a hand-built version-1 message for a TCP ESTABLISHED NAT
//!    connection to a service the guest has, and the entry appears in `ipvsadm -Lnc` with the same
//!    client, virtual, destination and state, and the backend's ActiveConn becomes 1. A message
//!    shaped like xvs's extension (byte 0 = 0, right size, version 0x58, a payload that would be
//!    a valid entry) and one with another sync id change nothing, add no kernel log line, and a
//!    valid message after them is still installed. Last, one message with two entries, an IPv6
//!    ESTABLISHED connection and an IPv4 persistence template, installs both.
//! 3. xvs master → kernel backup: a namespace testbed (scripts/testbed.sh: client c1, director
//!    dir, backends b1..b3 running an echo server on port 7000) whose director namespace is also
//!    attached to the guest's segment (xg1, 198.18.240.3). `xvs run` there has NAT TCP services
//!    198.18.10.1:7000 (rr) and 198.18.10.2:7000 (rr, persistent 300 s) to b1..b3 and
//!    `[sync.master]` on xg1 with sync id 7, also UDP 198.18.10.1:7000 and TCP
//!    [2001:2:0:10::1]:7000 (rr); the guest (still the backup of 2.) has the same services by
//!    ipvsadm (it cannot reach those backends; a backup installs as long as service and
//!    destination exist). 40 + 20 + 10 (IPv6) connections from c1 through xvs, each sending a
//!    line and reading its echo (SYN, ACK, data: xvs sends each at its third inbound packet),
//!    and 4 UDP flows of 3 datagrams. Every entry
//!    of `xvs ctl -Lnc` for the two services (connections and the persistence template) must
//!    appear in the guest's `ipvsadm -Lnc` with the same protocol, client, virtual, destination
//!    and state, and no other; the expire columns within 10 s of each other; every entry
//!    marked SYNC in /proc/net/ip_vs_conn_sync; ActiveConn/InActConn per real server equal
//!    in `ipvsadm -Ln` and `xvs ctl -Ln`. The test also receives xvs's datagrams and checks each
//!    entry's flags, state number and timeout against what the kernel master sent in 1. (the
//!    committed fixtures). Then the client closes 10 connections: the guest must follow xvs to
//!    the same states (TIME_WAIT) and counts (InActConn).
//! 4. Kernel master → xvs backup: xvs stops its master (`xvs ctl --stop-daemon master`) and
//!    starts a backup on xg1 with sync id 9 (`xvs ctl --start-daemon backup`); the guest starts
//!    its master with sync id 9. xvs has the guest's services vip(5):80 (rr → backends 16, 17),
//!    vip(6):80 (rr, persistent 300 s → backend 18), UDP vip(5):53 (→ backend 19) and
//!    [2001:2:0:f1::5]:80 (→ 2001:2:1::17), all NAT. 20 + 10 + 5 (IPv6) TCP connections and 2
//!    UDP flows (3 datagrams each) from the guest's namespace through the guest; `xvs ctl -Lnc`
//!    must hold exactly the guest's entries for those services (same protocol, client, virtual,
//!    destination, state; expire within 10 s), and `xvs ctl -Ln` the guest's
//!    ActiveConn/InActConn per real server; again after the client closed 5 connections
//!    (TIME_WAIT). What each master put on the wire is compared per state: the same flags and
//!    timeouts for TCP ESTABLISHED, CLOSE_WAIT, TIME_WAIT, UDP and templates. Then traffic
//!    moves: the client's route to vip(5) goes to xvs (xg1 is also one of its data-path
//!    interfaces), the client half-closes all 20 synced connections of vip(5), xvs forwards
//!    each FIN to the connection's backend (over the guest, which routes to its backends), and
//!    the backend's FIN comes back (its reply path still runs through the guest, which un-NATs
//!    it): the client reads a clean end of stream on each, and xvs lists each in CLOSE_WAIT to
//!    the same destination, both backends among them.
//!
//! `regenerate_sync_fixtures` (ignored) writes the captured datagrams of 1. with a manifest to
//! forwarding/tests/data/ipvs-sync/ (see its README.md); `committed_sync_fixtures_match_manifest`
//! checks the committed ones without a guest.
//!
//! Needs root (namespaces, tap, XDP), python3 and the testbed's tools, qemu-system-x86, cpio, gcc
//! with static glibc (scripts/install-deps.sh) and, the first time, Debian's package registry. Without root the
//! guest tests say loudly that they were skipped; as root, a guest that cannot be built or
//! booted fails them.

#[path = "dataplane_support/mod.rs"]
mod dataplane_support;
#[path = "support/ipvs_guest.rs"]
mod ipvs_guest;
#[path = "support/ipvs_sync_wire.rs"]
mod wire;

use dataplane_support::{ChildGuard, Testbed, DUAL_STACK_NETWORK};
use ipvs_guest::{backend, vip, ConnRow, Guest, GuestOptions, Netns, BACKEND_PORT, GUEST, HOST};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SYNCID: u8 = 7;
const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
const DEFAULT_PORT: u16 = 8848;

fn skip_unless_root(what: &str) -> bool {
    if ipvs_guest::is_root() {
        return false;
    }
    eprintln!("!!!!! SKIPPED {what}: needs root (network namespace, tap for the QEMU guest) !!!!!");
    true
}

fn boot(tag: &str) -> Guest {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(tag);
    Guest::boot(&GuestOptions::new(work)).unwrap_or_else(|e| {
        panic!(
            "the kernel-IPVS guest could not be built or booted: {e}\n\
             It needs qemu-system-x86, cpio and gcc with static glibc (scripts/install-deps.sh) \
             and Debian's package registry for the first download."
        )
    })
}

fn v6(s: &str) -> IpAddr {
    s.parse().expect("IPv6 literal")
}

/// The services of the master scenarios, all NAT (-m), one backend each.
fn master_services(g: &mut Guest) -> Result<(), String> {
    g.ip(&["addr", "add", &format!("{}/32", vip(1)), "dev", "lo"])?;
    g.ip(&["addr", "add", &format!("{}/32", vip(2)), "dev", "lo"])?;
    g.ip(&["-6", "addr", "add", "2001:2:0:f1::1/128", "dev", "lo"])?;
    let be = |n: u8| format!("{}:{BACKEND_PORT}", backend(n));
    for args in [
        vec!["-A", "-t", "198.18.241.1:80", "-s", "rr"],
        vec!["-a", "-t", "198.18.241.1:80", "-r", &be(11), "-m"],
        vec!["-A", "-t", "198.18.241.2:80", "-s", "rr", "-p", "300"],
        vec!["-a", "-t", "198.18.241.2:80", "-r", &be(12), "-m"],
        vec!["-A", "-u", "198.18.241.1:53", "-s", "rr"],
        vec!["-a", "-u", "198.18.241.1:53", "-r", &be(13), "-m"],
        vec!["-A", "-t", "[2001:2:0:f1::1]:80", "-s", "rr"],
        vec![
            "-a",
            "-t",
            "[2001:2:0:f1::1]:80",
            "-r",
            "[2001:2:1::14]:8080",
            "-m",
        ],
    ] {
        g.ipvsadm(&args)?;
    }
    Ok(())
}

/// Open client connections (kept open until dropped).
#[derive(Default)]
struct Clients {
    tcp: Vec<TcpStream>,
    udp: Vec<UdpSocket>,
}

/// "backend ADDR:PORT" from a guest backend.
fn backend_said(line: &str) -> Result<SocketAddr, String> {
    line.trim()
        .strip_prefix("backend ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected answer from a backend: {line:?}"))
}

/// A TCP connection from the namespace to `vip`, kept open; returns (client, backend) as the
/// backend saw them.
fn tcp_client(
    ns: &Netns,
    to: SocketAddr,
    keep: &mut Clients,
) -> Result<(SocketAddr, SocketAddr), String> {
    let (stream, said) = ns.enter(move || -> Result<(TcpStream, String), String> {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(15))
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .map_err(|e| format!("no answer through {to}: {e}"))?;
        Ok((s, line))
    })??;
    let client = stream.local_addr().map_err(|e| e.to_string())?;
    keep.tcp.push(stream);
    Ok((client, backend_said(&said)?))
}

/// A UDP client sending `n` datagrams to `to` from one socket, each answered.
fn udp_client(
    ns: &Netns,
    to: SocketAddr,
    n: usize,
    keep: &mut Clients,
) -> Result<(SocketAddr, SocketAddr), String> {
    let (sock, said) = ns.enter(move || -> Result<(UdpSocket, String), String> {
        let s = UdpSocket::bind((HOST, 0)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.connect(to).map_err(|e| e.to_string())?;
        let mut said = String::new();
        for _ in 0..n {
            s.send(b"sync me").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 256];
            let k = s
                .recv(&mut buf)
                .map_err(|e| format!("no UDP answer via {to}: {e}"))?;
            said = String::from_utf8_lossy(&buf[..k]).into_owned();
        }
        Ok((s, said))
    })??;
    let client = sock.local_addr().map_err(|e| e.to_string())?;
    keep.udp.push(sock);
    Ok((client, backend_said(&said)?))
}

/// One way of running the master daemon.
struct Case {
    name: &'static str,
    /// Arguments after `--start-daemon master --mcast-interface eth0 --syncid 7`.
    extra: &'static [&'static str],
    group: Ipv4Addr,
    port: u16,
}

const CASES: [Case; 2] = [
    Case {
        name: "master-default",
        extra: &[],
        group: DEFAULT_GROUP,
        port: DEFAULT_PORT,
    },
    Case {
        name: "master-maxlen80-group",
        extra: &[
            "--sync-maxlen",
            "80",
            "--mcast-group",
            "239.18.0.81",
            "--mcast-port",
            "8850",
        ],
        group: Ipv4Addr::new(239, 18, 0, 81),
        port: 8850,
    },
];

/// What one master case produced.
struct Capture {
    case: &'static str,
    daemon: String,
    group: String,
    sender: Vec<SocketAddr>,
    datagrams: Vec<Vec<u8>>,
    /// `ipvsadm -Lnc` right after the last datagram.
    lnc: String,
    /// The listings kept with the fixtures: -L --daemon, -Ln, -Lnc, -Lnc --persistent-conn.
    listings: String,
}

type Key = (String, SocketAddr, SocketAddr, SocketAddr);

fn entry_key(e: &wire::Entry) -> Key {
    (e.proto_name(), e.client, e.virtual_, e.dest)
}

/// Runs one master case: starts the daemon, makes the connections, receives until every
/// expected entry has been seen plus one flush period (the kernel sends a buffer when full or
/// 2 s old), stops the daemon.
fn capture(g: &mut Guest, case: &Case, keep: &mut Clients) -> Result<Capture, String> {
    let (group, port) = (case.group, case.port);
    let rx = g.ns.enter(move || -> Result<UdpSocket, String> {
        let s = UdpSocket::bind((group, port)).map_err(|e| format!("bind {group}:{port}: {e}"))?;
        s.join_multicast_v4(&group, &HOST)
            .map_err(|e| format!("join {group}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_millis(250)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    })??;
    let mut args = vec![
        "--start-daemon",
        "master",
        "--mcast-interface",
        "eth0",
        "--syncid",
        "7",
    ];
    args.extend_from_slice(case.extra);
    g.ipvsadm(&args)?;
    let daemon = args.join(" ");

    let mut expected = BTreeSet::new();
    let tcp = |p: u16| SocketAddr::new(IpAddr::V4(vip(1)), p);
    let (c, b) = tcp_client(&g.ns, tcp(80), keep)?;
    expected.insert(("TCP".to_string(), c, tcp(80), b));
    let (c, b) = tcp_client(&g.ns, tcp(80), keep)?;
    expected.insert(("TCP".to_string(), c, tcp(80), b));
    let pvip = SocketAddr::new(IpAddr::V4(vip(2)), 80);
    let (c, b) = tcp_client(&g.ns, pvip, keep)?;
    expected.insert(("TCP".to_string(), c, pvip, b));
    // The persistence template: client address, port 0, the service's port.
    expected.insert(("TCP".to_string(), SocketAddr::new(c.ip(), 0), pvip, b));
    let uvip = SocketAddr::new(IpAddr::V4(vip(1)), 53);
    let (c, b) = udp_client(&g.ns, uvip, 3, keep)?;
    expected.insert(("UDP".to_string(), c, uvip, b));
    let vip6 = SocketAddr::new(v6("2001:2:0:f1::1"), 80);
    let (c, b) = tcp_client(&g.ns, vip6, keep)?;
    expected.insert(("TCP".to_string(), c, vip6, b));

    let mut datagrams = Vec::new();
    let mut sender = Vec::new();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut complete_at: Option<Instant> = None;
    while Instant::now() < deadline
        && complete_at.is_none_or(|t| t.elapsed() < Duration::from_secs(3))
    {
        let mut buf = [0u8; 65536];
        match rx.recv_from(&mut buf) {
            Ok((n, from)) => {
                let d = buf[..n].to_vec();
                let m = wire::decode(&d).map_err(|e| {
                    format!(
                        "{}: undecodable datagram from {from} ({e}): {d:02x?}",
                        case.name
                    )
                })?;
                seen.extend(m.entries.iter().map(entry_key));
                datagrams.push(d);
                sender.push(from);
                if complete_at.is_none() && expected.is_subset(&seen) {
                    complete_at = Some(Instant::now());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("receiving on {group}:{port}: {e}")),
        }
    }
    let lnc = g.ipvsadm(&["-Lnc"])?;
    let mut listings = String::new();
    for args in [
        vec!["-L", "--daemon"],
        vec!["-Ln"],
        vec!["-Lnc"],
        vec!["-Lnc", "--persistent-conn"],
    ] {
        listings.push_str(&format!("# ipvsadm {}\n", args.join(" ")));
        listings.push_str(&g.ipvsadm(&args)?);
    }
    g.ipvsadm(&["--stop-daemon", "master"])?;
    if complete_at.is_none() {
        let missing: Vec<String> = expected
            .difference(&seen)
            .map(|k| format!("{k:?}"))
            .collect();
        return Err(format!(
            "{}: within 30 s the kernel master did not send entries for {}\nreceived {} datagrams; ipvsadm:\n{listings}",
            case.name,
            missing.join(", "),
            datagrams.len()
        ));
    }
    Ok(Capture {
        case: case.name,
        daemon,
        group: format!("{group}:{port}"),
        sender,
        datagrams,
        lnc,
        listings,
    })
}

/// The fixture manifest (forwarding/tests/data/ipvs-sync/manifest.toml).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Manifest {
    kernel: String,
    datagram: Vec<Datagram>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Datagram {
    file: String,
    case: String,
    daemon: String,
    group: String,
    source: String,
    syncid: u8,
    size: usize,
    count: usize,
    conn: Vec<Conn>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Conn {
    protocol: String,
    template: bool,
    client: String,
    #[serde(rename = "virtual")]
    virtual_: String,
    destination: String,
    /// ipvsadm -Lnc's state column for this entry at capture time.
    state: String,
    /// The state number the datagram carries.
    wire_state: u16,
    /// The flags the datagram carries, "0x...".
    flags: String,
    /// The timeout (seconds) the datagram carries.
    timeout: u32,
}

/// Checks every entry of every datagram against the guest's `ipvsadm -Lnc` at capture time and
/// turns the capture into manifest rows.
fn check_capture(cap: &Capture) -> Result<Vec<Datagram>, String> {
    let rows = ipvs_guest::parse_conns(&cap.lnc)?;
    let mut out = Vec::new();
    for (i, d) in cap.datagrams.iter().enumerate() {
        let m = wire::decode(d)?;
        if m.syncid != SYNCID || m.version != 1 {
            return Err(format!(
                "{}: datagram {i}: syncid {} version {}",
                cap.case, m.syncid, m.version
            ));
        }
        let mut conns = Vec::new();
        for e in &m.entries {
            let matching: Vec<&ConnRow> = rows.iter().filter(|r| r.key() == entry_key(e)).collect();
            let [row] = matching[..] else {
                return Err(format!(
                    "{}: datagram {i}: entry {e:?} matches {} rows of ipvsadm -Lnc:\n{}",
                    cap.case,
                    matching.len(),
                    cap.lnc
                ));
            };
            if e.template() {
                if !matches!(row.state.as_str(), "NONE" | "ASSURED") || e.client.port() != 0 {
                    return Err(format!(
                        "{}: template entry {e:?} against row {row}",
                        cap.case
                    ));
                }
            } else if e.state_name() != row.state {
                return Err(format!(
                    "{}: datagram {i}: entry says {} but ipvsadm -Lnc says {row}",
                    cap.case,
                    e.state_name()
                ));
            }
            if e.flags & wire::F_FWD_MASK != 0 {
                return Err(format!(
                    "{}: entry {e:?} is not masquerading (NAT)",
                    cap.case
                ));
            }
            conns.push(Conn {
                protocol: e.proto_name(),
                template: e.template(),
                client: e.client.to_string(),
                virtual_: e.virtual_.to_string(),
                destination: e.dest.to_string(),
                state: row.state.clone(),
                wire_state: e.state,
                flags: format!("{:#06x}", e.flags),
                timeout: e.timeout,
            });
        }
        out.push(Datagram {
            file: format!("{}-{}.bin", cap.case, i + 1),
            case: cap.case.to_string(),
            daemon: format!("ipvsadm {}", cap.daemon),
            group: cap.group.clone(),
            source: cap.sender[i].ip().to_string(),
            syncid: m.syncid,
            size: d.len(),
            count: m.entries.len(),
            conn: conns,
        });
    }
    Ok(out)
}

/// Both master cases in one boot, checked; with the datagrams per case.
fn master_scenarios(g: &mut Guest) -> (Vec<Capture>, Vec<Datagram>) {
    master_services(g).unwrap_or_else(|e| panic!("guest services: {e}"));
    let mut keep = Clients::default();
    let mut caps = Vec::new();
    let mut manifest = Vec::new();
    for case in &CASES {
        let cap = capture(g, case, &mut keep).unwrap_or_else(|e| panic!("{e}"));
        let rows = check_capture(&cap).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "{}: {} datagrams ({} entries) from the kernel master on {}; sizes {:?}",
            cap.case,
            cap.datagrams.len(),
            rows.iter().map(|d| d.count).sum::<usize>(),
            cap.group,
            cap.datagrams.iter().map(Vec::len).collect::<Vec<_>>()
        );
        manifest.extend(rows);
        caps.push(cap);
    }
    // Every kind asked for is there: TCP ESTABLISHED (IPv4 and IPv6), a template, UDP.
    let all: Vec<&Conn> = manifest.iter().flat_map(|d| &d.conn).collect();
    assert!(all
        .iter()
        .any(|c| c.protocol == "TCP" && c.state == "ESTABLISHED" && !c.client.starts_with('[')));
    assert!(all
        .iter()
        .any(|c| c.protocol == "TCP" && c.state == "ESTABLISHED" && c.client.starts_with('[')));
    assert!(all.iter().any(|c| c.template));
    assert!(all.iter().any(|c| c.protocol == "UDP" && c.state == "UDP"));
    // --sync-maxlen 80 leaves room for two IPv4 entries (8 + 2 x 36) and no IPv6 one beside
    // another: every datagram of that case is at most 80 bytes unless it holds one IPv6 entry.
    let small = &caps[1];
    assert!(
        small.datagrams.len() >= 3,
        "--sync-maxlen 80 should split the entries"
    );
    for d in &small.datagrams {
        let m = wire::decode(d).unwrap();
        assert!(
            d.len() <= 80 || m.entries.len() == 1,
            "{} bytes, {} entries",
            d.len(),
            m.entries.len()
        );
    }
    (caps, manifest)
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("forwarding/tests/data/ipvs-sync")
}

const MANIFEST_HEAD: &str = "\
# Kernel IPVS master sync datagrams (protocol version 1) captured from a real kernel, written by
# `cargo test --test ipvs_sync_interop -- --ignored regenerate_sync_fixtures` (see README.md).
# One [[datagram]] per .bin file (the UDP payload, byte for byte); its [[datagram.conn]] rows are
# its entries in order. protocol, client, virtual, destination and state come from the guest's
# `ipvsadm -Lnc` at capture time (the row with the same protocol/client/virtual/destination;
# for connections the test checked that the entry's state number names the same state);
# template, wire_state, flags and timeout are what the entry carries (read by the test's
# reference decoder, tests/support/ipvs_sync_wire.rs).
";

fn write_fixtures(dir: &Path, kernel: &str, caps: &[Capture], manifest: Vec<Datagram>) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(p).unwrap();
        }
    }
    for cap in caps {
        for (i, d) in cap.datagrams.iter().enumerate() {
            std::fs::write(dir.join(format!("{}-{}.bin", cap.case, i + 1)), d).unwrap();
        }
        std::fs::write(dir.join(format!("{}.ipvsadm.txt", cap.case)), &cap.listings).unwrap();
    }
    let m = Manifest {
        kernel: kernel.to_string(),
        datagram: manifest,
    };
    let text = format!("{MANIFEST_HEAD}\n{}", toml::to_string(&m).unwrap());
    std::fs::write(dir.join("manifest.toml"), text).unwrap();
}

/// Sends one datagram from the namespace to the kernel backup's group.
fn send(sock: &UdpSocket, d: &[u8]) {
    sock.send_to(d, (DEFAULT_GROUP, DEFAULT_PORT))
        .expect("send a sync datagram");
}

fn est(client: &str, virtual_: &str, dest: &str) -> wire::Entry {
    wire::Entry {
        protocol: 6,
        flags: 0,
        state: 1,
        client: client.parse().unwrap(),
        virtual_: virtual_.parse().unwrap(),
        dest: dest.parse().unwrap(),
        fwmark: 0,
        timeout: 900,
        options: Vec::new(),
    }
}

fn dest_counts(g: &mut Guest, svc: &str, dest: &str) -> (u64, u64) {
    let services = g.services().expect("ipvsadm -Ln");
    let s = services
        .iter()
        .find(|s| s.addr.to_string() == svc)
        .unwrap_or_else(|| panic!("no service {svc}: {services:?}"));
    let d = s
        .dests
        .iter()
        .find(|d| d.addr.to_string() == dest)
        .unwrap_or_else(|| panic!("no real server {dest} in {s:?}"));
    (d.active, d.inactive)
}

/// The kernel backup installs a hand-built message and ignores the extension-shaped one.
fn backup_scenario(g: &mut Guest) {
    let (svc, dest) = ("198.18.241.3:80", "198.19.0.15:8080");
    g.ip(&["addr", "add", "198.18.241.3/32", "dev", "lo"])
        .unwrap();
    g.ipvsadm(&["-A", "-t", svc, "-s", "rr"]).unwrap();
    g.ipvsadm(&["-a", "-t", svc, "-r", dest, "-m"]).unwrap();
    g.ipvsadm(&[
        "--start-daemon",
        "backup",
        "--mcast-interface",
        "eth0",
        "--syncid",
        "7",
    ])
    .unwrap();
    let daemon = g.ipvsadm(&["-L", "--daemon"]).unwrap();
    assert!(
        daemon.contains("backup sync daemon (mcast=eth0, syncid=7"),
        "{daemon}"
    );
    // The sender is another namespace on the guest's segment, where a second director would be.
    let peer = g
        .attach(Ipv4Addr::new(198, 18, 240, 3), "2001:2:0:f0::3")
        .expect("attach a namespace");
    let tx = peer
        .enter(|| {
            let s = UdpSocket::bind((Ipv4Addr::new(198, 18, 240, 3), 0)).unwrap();
            s.set_multicast_ttl_v4(1).unwrap();
            s
        })
        .unwrap();
    assert_eq!(dest_counts(g, svc, dest), (0, 0));
    let key = |r: &ConnRow| r.key();

    // A TCP ESTABLISHED NAT connection.
    let a = est("198.18.240.50:42001", svc, dest);
    send(&tx, &wire::encode(SYNCID, std::slice::from_ref(&a)));
    let rows = g
        .wait_conns(Duration::from_secs(20), |rows| {
            rows.iter().any(|r| r.client == a.client)
        })
        .unwrap_or_else(|e| panic!("the kernel backup did not install the entry: {e}"));
    let row = rows.iter().find(|r| r.client == a.client).unwrap();
    assert_eq!(
        (
            row.proto.as_str(),
            row.state.as_str(),
            row.virtual_,
            row.dest
        ),
        ("TCP", "ESTABLISHED", a.virtual_, a.dest),
        "{row}"
    );
    assert!(
        row.expire > 800 && row.expire <= 900,
        "the message's timeout (900 s): {row}"
    );
    assert_eq!(dest_counts(g, svc, dest), (1, 0), "ActiveConn of {dest}");
    // /proc/net/ip_vs_conn_sync names each entry's origin: this one came from the sync daemon.
    let sync = g.read("/proc/net/ip_vs_conn_sync").unwrap();
    let (IpAddr::V4(cip), port) = (a.client.ip(), a.client.port()) else {
        unreachable!()
    };
    let hex = format!("TCP {:08X} {port:04X} ", u32::from(cip));
    let line = sync
        .lines()
        .find(|l| l.starts_with(&hex))
        .unwrap_or_else(|| panic!("{hex:?} not in /proc/net/ip_vs_conn_sync:\n{sync}"));
    assert!(line.split_whitespace().any(|w| w == "SYNC"), "{line}");
    println!("backup installed: {row}\n  /proc/net/ip_vs_conn_sync: {line}");
    let before: BTreeSet<_> = rows.iter().map(key).collect();
    let log_before = g.dmesg().unwrap();

    // xvs's extension shape: byte 0 = 0, sync id 7, right size, count 1, version 0x58, spare 0,
    // then what would be a valid IPv4 entry for another client. A kernel backup reads any
    // version but 1 as a version-0 message, whose first byte is its entry count: 0 here, so it
    // installs nothing (ip_vs_process_message / ip_vs_process_message_v0 in ip_vs_sync.c).
    let ghost = est("198.18.240.51:42002", svc, dest);
    let mut ext = wire::encode(SYNCID, std::slice::from_ref(&ghost));
    ext[5] = 0x58;
    assert_eq!(u16::from_be_bytes([ext[2], ext[3]]) as usize, ext.len());
    send(&tx, &ext);
    // And xvs's real extension messages, as its daemons send them (bulk resync).
    use xvs_forwarding::sync::{encode_xvs, XvsMessage};
    send(
        &tx,
        &encode_xvs(SYNCID, &XvsMessage::BulkRequest { node: 42 }),
    );
    send(
        &tx,
        &encode_xvs(
            SYNCID,
            &XvsMessage::BulkDone {
                node: 42,
                entries: 1000,
            },
        ),
    );
    // Another sync id: the backup (sync id 7) must drop it.
    let other = est("198.18.240.53:42004", svc, dest);
    send(&tx, &wire::encode(SYNCID + 1, std::slice::from_ref(&other)));
    // Then a valid one: once it is in, the two before it have been processed.
    let b = est("198.18.240.52:42003", svc, dest);
    send(&tx, &wire::encode(SYNCID, std::slice::from_ref(&b)));
    let rows = g
        .wait_conns(Duration::from_secs(20), |rows| {
            rows.iter().any(|r| r.client == b.client)
        })
        .unwrap_or_else(|e| panic!("a valid message after the extension was not installed: {e}"));
    let after: BTreeSet<_> = rows.iter().map(key).collect();
    let added: Vec<_> = after.difference(&before).collect();
    assert_eq!(
        added,
        vec![&("TCP".to_string(), b.client, b.virtual_, b.dest)],
        "only the valid message may add an entry"
    );
    assert!(before.is_subset(&after), "an entry vanished");
    assert_eq!(dest_counts(g, svc, dest), (2, 0), "ActiveConn of {dest}");
    let log_after = g.dmesg().unwrap();
    assert_eq!(
        &log_after[..log_before.len().min(log_after.len())],
        &log_before[..],
        "the kernel log changed under us"
    );
    // Every IPVS message carries the "IPVS: " prefix (pr_fmt in ip_vs_sync.c). Debian builds
    // without CONFIG_IP_VS_DEBUG, so IP_VS_DBG lines do not exist; the error paths a backup can
    // hit on a bad message are IP_VS_ERR_RL / pr_err lines, which would show here.
    let new_lines = &log_after[log_before.len()..];
    let ipvs_lines: Vec<&String> = new_lines.iter().filter(|l| l.contains("IPVS")).collect();
    assert!(
        ipvs_lines.is_empty(),
        "the kernel's IPVS logged: {ipvs_lines:?}"
    );
    if !new_lines.is_empty() {
        println!("other kernel log lines meanwhile: {new_lines:?}");
    }
    println!(
        "backup: extension-shaped message (version 0x58), xvs's BulkRequest and BulkDone and a \
         foreign sync id ignored, no kernel log line; the valid message after them installed; \
         ActiveConn 2"
    );

    // One message, two entries: an IPv6 ESTABLISHED connection and an IPv4 persistence
    // template (flags TEMPLATE, client port 0, timeout 300) of a `-p` service.
    let (svc6, dest6) = ("[2001:2:0:f1::3]:80", "[2001:2:1::16]:8080");
    let (psvc, pdest) = ("198.18.241.4:80", "198.19.0.16:8080");
    g.ip(&["-6", "addr", "add", "2001:2:0:f1::3/128", "dev", "lo"])
        .unwrap();
    g.ip(&["addr", "add", "198.18.241.4/32", "dev", "lo"])
        .unwrap();
    for args in [
        vec!["-A", "-t", svc6, "-s", "rr"],
        vec!["-a", "-t", svc6, "-r", dest6, "-m"],
        vec!["-A", "-t", psvc, "-s", "rr", "-p", "300"],
        vec!["-a", "-t", psvc, "-r", pdest, "-m"],
    ] {
        g.ipvsadm(&args).unwrap();
    }
    let c6 = est("[2001:2:0:f0::60]:42010", svc6, dest6);
    let mut tpl = est("198.18.240.60:0", psvc, pdest);
    tpl.flags = wire::F_TEMPLATE;
    tpl.state = 0;
    tpl.timeout = 300;
    send(&tx, &wire::encode(SYNCID, &[c6.clone(), tpl.clone()]));
    let rows = g
        .wait_conns(Duration::from_secs(20), |rows| {
            rows.iter().any(|r| r.client == c6.client)
                && rows.iter().any(|r| r.client == tpl.client)
        })
        .unwrap_or_else(|e| panic!("the two-entry message was not installed: {e}"));
    let r6 = rows.iter().find(|r| r.client == c6.client).unwrap();
    assert_eq!(
        (r6.proto.as_str(), r6.state.as_str(), r6.virtual_, r6.dest),
        ("TCP", "ESTABLISHED", c6.virtual_, c6.dest),
        "{r6}"
    );
    let rt = rows.iter().find(|r| r.client == tpl.client).unwrap();
    assert_eq!(
        (rt.proto.as_str(), rt.state.as_str(), rt.virtual_, rt.dest),
        ("TCP", "NONE", tpl.virtual_, tpl.dest),
        "{rt}"
    );
    assert!(rt.expire > 200 && rt.expire <= 300, "{rt}");
    assert_eq!(dest_counts(g, svc6, dest6), (1, 0), "ActiveConn of {dest6}");
    println!("backup installed from one message: {r6}\n  and the template {rt}");
}

#[test]
fn kernel_master_datagrams_and_kernel_backup() {
    if skip_unless_root("ipvs_sync_interop") {
        return;
    }
    let t0 = Instant::now();
    let mut g = boot("ipvs-sync-interop");
    println!(
        "guest up in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        g.banner
    );
    let (caps, manifest) = master_scenarios(&mut g);
    // Kept for inspection (not the committed fixtures).
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipvs-sync-capture");
    write_fixtures(&out, &g.banner, &caps, manifest);
    backup_scenario(&mut g);
    let summary = xvs_scenarios(&mut g);
    println!("{}", summary.join("\n"));
    println!(
        "total {:.1} s; this run's capture in {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
}

#[test]
#[ignore = "boots the guest and rewrites forwarding/tests/data/ipvs-sync"]
fn regenerate_sync_fixtures() {
    assert!(ipvs_guest::is_root(), "needs root");
    let mut g = boot("ipvs-sync-regenerate");
    let (caps, manifest) = master_scenarios(&mut g);
    write_fixtures(&fixture_dir(), &g.banner, &caps, manifest);
}

#[test]
fn committed_sync_fixtures_match_manifest() {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest.toml");
    let m: Manifest = toml::from_str(&text).expect("manifest.toml parses");
    assert!(!m.datagram.is_empty());
    let mut files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    for d in &m.datagram {
        assert!(files.remove(&d.file), "{} listed twice or missing", d.file);
        let bytes = std::fs::read(dir.join(&d.file)).unwrap();
        let msg = wire::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", d.file));
        assert_eq!(
            (bytes.len(), msg.syncid, msg.entries.len()),
            (d.size, d.syncid, d.count),
            "{}",
            d.file
        );
        assert_eq!(msg.entries.len(), d.conn.len(), "{}", d.file);
        for (e, c) in msg.entries.iter().zip(&d.conn) {
            let got = Conn {
                protocol: e.proto_name(),
                template: e.template(),
                client: e.client.to_string(),
                virtual_: e.virtual_.to_string(),
                destination: e.dest.to_string(),
                // Templates: ipvsadm's state at capture time, which may be later than the
                // entry's (NONE before ASSURED).
                state: if e.template() && matches!(c.state.as_str(), "NONE" | "ASSURED") {
                    c.state.clone()
                } else {
                    e.state_name()
                },
                wire_state: e.state,
                flags: format!("{:#06x}", e.flags),
                timeout: e.timeout,
            };
            assert_eq!(&got, c, "{}", d.file);
        }
    }
    assert!(files.is_empty(), "datagrams not in the manifest: {files:?}");
}

// ---------------------------------------------------------------------------------------------
// xvs <-> kernel IPVS: an `xvs run` director in a testbed (scripts/testbed.sh: client c1,
// director dir, backends b1..b3) whose director namespace is also attached to the guest's
// segment (interface xg1, 198.18.240.3): xvs's sync daemons use it, and so does its data path
// when traffic moves from the guest to xvs.

/// xvs's IPv6 address on the guest's segment.
const XVS_SEG6: &str = "2001:2:0:f0::3";
/// The testbed's IPv6 service (port [`ECHO_PORT`], rr, to b1..b3).
const TESTBED_VIP6: &str = "2001:2:0:10::1";
/// The guest's IPv6 service of the kernel-master direction (port 80, rr) and its backend.
const GUEST_VIP6: &str = "2001:2:0:f1::5";
const GUEST_BACKEND6: &str = "2001:2:1::17";
/// IPv6 connections through xvs and through the guest.
const XVS_V6_CONNS: usize = 10;
const KERNEL_V6_CONNS: usize = 5;
/// xvs's address on the guest's segment.
const XVS_SEG: Ipv4Addr = Ipv4Addr::new(198, 18, 240, 3);
/// Sync id of xvs master → kernel backup (the guest's backup of `backup_scenario` uses it).
const XVS_MASTER_SYNCID: &str = "7";
/// Sync id of kernel master → xvs backup.
const KERNEL_MASTER_SYNCID: &str = "9";
/// Port of the testbed services and of the echo servers on b1..b3.
const ECHO_PORT: u16 = 7000;
/// Connections made through xvs: to the round-robin service and to the persistent one.
const XVS_RR_CONNS: usize = 40;
const XVS_PERSIST_CONNS: usize = 20;
/// UDP flows through xvs (3 datagrams each, to the TCP round-robin service's address and port).
const XVS_UDP_FLOWS: usize = 4;
/// Connections through xvs that the client closes after the first comparison.
const XVS_CLOSED: usize = 10;
/// Connections through the guest that the client closes after the first comparison.
const KERNEL_CLOSED: usize = 5;
/// Connections made through the guest (kernel master): TCP to each service, UDP flows.
const KERNEL_RR_CONNS: usize = 20;
const KERNEL_PERSIST_CONNS: usize = 10;
const KERNEL_UDP_FLOWS: usize = 2;

/// The xvs director: testbed services TCP and UDP 198.18.10.1:7000 (rr), TCP
/// 198.18.10.2:7000 (rr, persistent 300 s) and TCP [2001:2:0:10::1]:7000 (rr) to b1..b3:7000,
/// and the guest's services vip(5):80 (rr → backends 16, 17), vip(6):80 (rr, persistent
/// 300 s → backend 18), UDP vip(5):53 (→ backend 19), [2001:2:0:f1::5]:80 (→ 2001:2:1::17),
/// all NAT; sync master on xg1.
fn xvs_config() -> String {
    let mut c = [
        r#"log_interval_secs = 0
neighbour_refresh_ms = 200

[[worker]]
queue = 0

"#,
        DUAL_STACK_NETWORK,
    ]
    .concat();
    c.push_str(&format!(
        r#"
[[interface]]
name = "{dev}"
ipv4 = "{XVS_SEG}"
ipv6 = "{XVS_SEG6}"

[[route]]
dst = "198.18.240.0/24"
interface = "{dev}"

[[route]]
dst = "2001:2:0:f0::/64"
interface = "{dev}"

[[route]]
dst = "{be_net}"
via = "{guest}"
interface = "{dev}"

[[route]]
dst = "{be_net6}"
via = "{guest6}"
interface = "{dev}"

[sync.master]
interface = "{dev}"
syncid = {XVS_MASTER_SYNCID}
"#,
        dev = ipvs_guest::ATTACHED_DEV,
        be_net = ipvs_guest::BACKEND_NET,
        guest = ipvs_guest::GUEST,
        be_net6 = ipvs_guest::BACKEND6_NET,
        guest6 = ipvs_guest::GUEST6,
    ));
    c.push_str(&service_toml(
        "tcp",
        TESTBED_VIP6,
        ECHO_PORT,
        false,
        &["2001:2:0:3::11", "2001:2:0:3::12", "2001:2:0:3::13"],
        ECHO_PORT,
    ));
    c.push_str(&service_toml(
        "tcp",
        GUEST_VIP6,
        80,
        false,
        &[GUEST_BACKEND6],
        BACKEND_PORT,
    ));
    let testbed_backends = ["198.18.3.11", "198.18.3.12", "198.18.3.13"];
    for (vip, persist) in [("198.18.10.1", false), ("198.18.10.2", true)] {
        c.push_str(&service_toml(
            "tcp",
            vip,
            ECHO_PORT,
            persist,
            &testbed_backends,
            ECHO_PORT,
        ));
    }
    c.push_str(&service_toml(
        "udp",
        "198.18.10.1",
        ECHO_PORT,
        false,
        &testbed_backends,
        ECHO_PORT,
    ));
    c.push_str(&service_toml(
        "tcp",
        &vip(5).to_string(),
        80,
        false,
        &[&backend(16).to_string(), &backend(17).to_string()],
        BACKEND_PORT,
    ));
    c.push_str(&service_toml(
        "tcp",
        &vip(6).to_string(),
        80,
        true,
        &[&backend(18).to_string()],
        BACKEND_PORT,
    ));
    c.push_str(&service_toml(
        "udp",
        &vip(5).to_string(),
        53,
        false,
        &[&backend(19).to_string()],
        BACKEND_PORT,
    ));
    c
}

fn service_toml(
    proto: &str,
    vip: &str,
    port: u16,
    persistent: bool,
    backends: &[&str],
    bport: u16,
) -> String {
    let mut s = format!(
        "\n[[service]]\nprotocol = \"{proto}\"\nvip = \"{vip}\"\nport = {port}\nscheduler = \"rr\"\n"
    );
    if persistent {
        s.push_str("persistence = 300\n");
    }
    for b in backends {
        s.push_str(&format!(
            "\n[[service.backend]]\naddress = \"{b}\"\nport = {bport}\nmethod = \"nat\"\n"
        ));
    }
    s
}

/// The same services in the guest (ipvsadm), VIPs of the guest's own services on its lo.
fn guest_twin_services(g: &mut Guest) -> Result<(), String> {
    for n in [5, 6] {
        g.ip(&["addr", "add", &format!("{}/32", vip(n)), "dev", "lo"])?;
    }
    for (svc, persist) in [("198.18.10.1:7000", false), ("198.18.10.2:7000", true)] {
        let mut add = vec!["-A", "-t", svc, "-s", "rr"];
        if persist {
            add.extend_from_slice(&["-p", "300"]);
        }
        g.ipvsadm(&add)?;
        for b in ["198.18.3.11:7000", "198.18.3.12:7000", "198.18.3.13:7000"] {
            g.ipvsadm(&["-a", "-t", svc, "-r", b, "-m"])?;
        }
    }
    let usvc = format!("198.18.10.1:{ECHO_PORT}");
    g.ipvsadm(&["-A", "-u", &usvc, "-s", "rr"])?;
    for b in ["198.18.3.11:7000", "198.18.3.12:7000", "198.18.3.13:7000"] {
        g.ipvsadm(&["-a", "-u", &usvc, "-r", b, "-m"])?;
    }
    g.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{GUEST_VIP6}/128"),
        "dev",
        "lo",
    ])?;
    let (t6, g6) = (
        format!("[{TESTBED_VIP6}]:{ECHO_PORT}"),
        format!("[{GUEST_VIP6}]:80"),
    );
    g.ipvsadm(&["-A", "-t", &t6, "-s", "rr"])?;
    for n in 11..=13 {
        g.ipvsadm(&[
            "-a",
            "-t",
            &t6,
            "-r",
            &format!("[2001:2:0:3::{n}]:{ECHO_PORT}"),
            "-m",
        ])?;
    }
    g.ipvsadm(&["-A", "-t", &g6, "-s", "rr"])?;
    g.ipvsadm(&[
        "-a",
        "-t",
        &g6,
        "-r",
        &format!("[{GUEST_BACKEND6}]:{BACKEND_PORT}"),
        "-m",
    ])?;
    let be = |n: u8| format!("{}:{BACKEND_PORT}", backend(n));
    let (v5, v6, u5) = (
        format!("{}:80", vip(5)),
        format!("{}:80", vip(6)),
        format!("{}:53", vip(5)),
    );
    for args in [
        vec!["-A", "-t", &v5, "-s", "rr"],
        vec!["-a", "-t", &v5, "-r", &be(16), "-m"],
        vec!["-a", "-t", &v5, "-r", &be(17), "-m"],
        vec!["-A", "-t", &v6, "-s", "rr", "-p", "300"],
        vec!["-a", "-t", &v6, "-r", &be(18), "-m"],
        vec!["-A", "-u", &u5, "-s", "rr"],
        vec!["-a", "-u", &u5, "-r", &be(19), "-m"],
    ] {
        g.ipvsadm(&args)?;
    }
    Ok(())
}

/// Echo server for b1..b3 (each TCP line and each UDP datagram back; IPv4 and IPv6).
const ECHO: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket(socket.AF_INET6)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ls.bind(("::", int(sys.argv[1])))
ls.listen(1024)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
us = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
us.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
us.bind(("::", int(sys.argv[1])))
sel.register(us, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is us:
            d, a = us.recvfrom(2048)
            us.sendto(d, a)
            continue
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
        except (BlockingIOError, InterruptedError):
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

/// Opens N connections to each VIP:PORT argument ("VIP,PORT,N"), sends a line on each and
/// waits for its echo; for "udp,VIP,PORT,N" N IPv4 UDP sockets, each sending 3 datagrams and
/// waiting for each echo; prints "connected K U" (TCP, UDP), then keeps them open until stdin closes; a line
/// "close K" on stdin closes the K oldest (FIN) and prints "closed K".
const CLIENTS: &str = r#"
import socket, sys
socks = []
udp = []
for spec in sys.argv[1:]:
    if spec.startswith("udp,"):
        _, vip, port, n = spec.split(",")
        for i in range(int(n)):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.connect((vip, int(port)))
            for k in range(3):
                u.send(b"sync me")
                u.recv(100)
            udp.append(u)
        continue
    vip, port, n = spec.split(",")
    for i in range(int(n)):
        s = socket.create_connection((vip, int(port)), timeout=10)
        s.sendall(b"sync me\n")
        got = b""
        while not got.endswith(b"\n"):
            d = s.recv(100)
            if not d:
                print("eof from", vip, flush=True); sys.exit(1)
            got += d
        socks.append(s)
print("connected", len(socks), len(udp), flush=True)
for line in sys.stdin:
    k = int(line.split()[1])
    for s in socks[:k]:
        s.close()
    socks = socks[k:]
    print("closed", k, flush=True)
"#;

fn xvs_ctl(tb: &Testbed, sock: &Path, args: &[&str]) -> Result<String, String> {
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("dir"),
            env!("CARGO_BIN_EXE_xvs"),
            "ctl",
            "--socket",
        ])
        .arg(sock)
        .args(args)
        .output()
        .map_err(|e| format!("xvs ctl: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "xvs ctl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Rows of a connection listing whose virtual address is one of `vips`.
fn rows_for(rows: &[ConnRow], vips: &[SocketAddr]) -> Vec<ConnRow> {
    rows.iter()
        .filter(|r| vips.contains(&r.virtual_))
        .cloned()
        .collect()
}

/// (protocol, virtual, dest, ActiveConn, InActConn).
type DestCounts = (String, SocketAddr, SocketAddr, u64, u64);

/// [`DestCounts`] of the real servers of the services at `vips`, sorted.
fn dest_table(services: &[ipvs_guest::ServiceRow], vips: &[SocketAddr]) -> Vec<DestCounts> {
    let mut out: Vec<_> = services
        .iter()
        .filter(|s| vips.contains(&s.addr))
        .flat_map(|s| {
            s.dests
                .iter()
                .map(move |d| (s.proto.clone(), s.addr, d.addr, d.active, d.inactive))
        })
        .collect();
    out.sort();
    out
}

fn show(rows: &[ConnRow]) -> String {
    rows.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compares two connection listings on (protocol, client, virtual, destination, state):
/// Err naming the differences.
fn same_conns(left: &str, a: &[ConnRow], right: &str, b: &[ConnRow]) -> Result<(), String> {
    let key = |r: &ConnRow| (r.key(), r.state.clone());
    let sa: BTreeSet<_> = a.iter().map(key).collect();
    let sb: BTreeSet<_> = b.iter().map(key).collect();
    if sa == sb && sa.len() == a.len() && sb.len() == b.len() {
        return Ok(());
    }
    Err(format!(
        "only in {left}: {:?}\nonly in {right}: {:?}\n--- {left}:\n{}\n--- {right}:\n{}",
        sa.difference(&sb).collect::<Vec<_>>(),
        sb.difference(&sa).collect::<Vec<_>>(),
        show(a),
        show(b)
    ))
}

/// The largest difference between the two listings' expire columns (seconds) over the entries
/// both hold; Err naming the pair if it exceeds `tolerance`. Both sides count down from the
/// timeout the message carried (or the master's own), so they differ by the sync delay and the
/// time between the two listings.
fn close_expiry(a: &[ConnRow], b: &[ConnRow], tolerance: u32) -> Result<u32, String> {
    let mut worst = 0;
    for x in a {
        if let Some(y) = b.iter().find(|y| y.key() == x.key()) {
            let d = x.expire.abs_diff(y.expire);
            if d > tolerance {
                return Err(format!("expire differs by {d} s: {x} vs {y}"));
            }
            worst = worst.max(d);
        }
    }
    Ok(worst)
}

/// xvs's per-dest counts (`xvs ctl -Ln`) once they equal `want`: xvs's workers publish their
/// counters about once a second, so the listing may lag the connection table by that much.
/// Err with both tables if they still differ after 5 s.
fn xvs_dests_matching(
    tb: &Testbed,
    sock: &Path,
    vips: &[SocketAddr],
    want: &[DestCounts],
) -> Result<Vec<DestCounts>, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = dest_table(
            &ipvs_guest::parse_services(&xvs_ctl(tb, sock, &["-Ln"])?)?,
            vips,
        );
        if got == want {
            return Ok(got);
        }
        if Instant::now() > deadline {
            return Err(format!("the kernel: {want:?}\nxvs: {got:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the xvs master's datagrams queued on `rx` and checks each entry against the kernel
/// master's conventions in the committed fixtures (forwarding/tests/data/ipvs-sync): an
/// ESTABLISHED TCP connection and a template carry the same flags, state number and timeout as
/// the kernel's did. Every key of `want` must have been sent. Returns a summary and what the
/// entries carried per state.
fn check_xvs_wire(rx: &UdpSocket, want: &BTreeSet<Key>) -> (String, WireKinds) {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.toml")).unwrap();
    let m: Manifest = toml::from_str(&text).unwrap();
    // Per kind ("template", "TCP ESTABLISHED", "UDP UDP"): (flags, state number, timeout).
    let mut kernel: std::collections::BTreeMap<String, BTreeSet<(String, u16, u32)>> =
        Default::default();
    for c in m.datagram.iter().flat_map(|d| &d.conn) {
        let kind = if c.template {
            "template".to_string()
        } else {
            format!("{} {}", c.protocol, c.state)
        };
        kernel
            .entry(kind)
            .or_default()
            .insert((c.flags.clone(), c.wire_state, c.timeout));
    }
    let mut seen = BTreeSet::new();
    let mut kinds = WireKinds::new();
    let (mut datagrams, mut entries) = (0, 0);
    let mut buf = [0u8; 65536];
    while let Ok((n, from)) = rx.recv_from(&mut buf) {
        if from.ip() != IpAddr::V4(XVS_SEG) {
            continue;
        }
        let msg = wire::decode(&buf[..n]).unwrap_or_else(|e| {
            panic!("xvs sent an undecodable datagram ({e}): {:02x?}", &buf[..n])
        });
        assert_eq!(
            (msg.syncid, msg.version),
            (SYNCID, 1),
            "xvs's message header"
        );
        datagrams += 1;
        for e in &msg.entries {
            entries += 1;
            let got = (format!("{:#06x}", e.flags), e.state, e.timeout);
            let kind = kernel.get(&kind_name(e));
            assert!(
                kind.is_some_and(|k| k.contains(&got)),
                "xvs sent {e:?}; the kernel master sent (flags, state, timeout) {kind:?} for this kind"
            );
            assert_eq!(e.fwmark, 0, "{e:?}");
            seen.insert(entry_key(e));
            kinds
                .entry(kind_name(e))
                .or_default()
                .insert((got.0, got.2));
        }
    }
    assert!(
        want.is_subset(&seen),
        "xvs's master never sent {:?}",
        want.difference(&seen).collect::<Vec<_>>()
    );
    let text = format!(
        "xvs master sent {datagrams} datagrams, {entries} entries: flags/state/timeout as the \
         kernel's ({kernel:?})"
    );
    (text, kinds)
}

/// The state name an entry is filed under in [`WireKinds`].
fn kind_name(e: &wire::Entry) -> String {
    if e.template() {
        "template".to_string()
    } else {
        format!("{} {}", e.proto_name(), e.state_name())
    }
}

/// Per state name ("template" for templates) of the entries, the (flags, timeout) pairs sent.
type WireKinds = std::collections::BTreeMap<String, BTreeSet<(String, u32)>>;

/// Reads the datagrams queued on `rx` that came from `sender` with sync id `syncid` and
/// collects what their entries carry per state ([`WireKinds`]).
fn drain_kinds(rx: &UdpSocket, sender: IpAddr, syncid: u8) -> WireKinds {
    let mut kinds = WireKinds::new();
    let mut buf = [0u8; 65536];
    while let Ok((n, from)) = rx.recv_from(&mut buf) {
        if from.ip() != sender {
            continue;
        }
        let msg = wire::decode(&buf[..n])
            .unwrap_or_else(|e| panic!("undecodable datagram from {from} ({e})"));
        if msg.syncid != syncid {
            continue;
        }
        for e in &msg.entries {
            kinds
                .entry(kind_name(e))
                .or_default()
                .insert((format!("{:#06x}", e.flags), e.timeout));
        }
    }
    kinds
}

/// A multicast receiver in the guest's namespace on the default group and port.
fn sync_listener(g: &Guest) -> UdpSocket {
    g.ns.enter(|| -> Result<UdpSocket, String> {
        let s = UdpSocket::bind((DEFAULT_GROUP, DEFAULT_PORT)).map_err(|e| e.to_string())?;
        s.join_multicast_v4(&DEFAULT_GROUP, &HOST)
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    })
    .unwrap()
    .unwrap()
}

/// Polls `xvs ctl -Lnc` and the guest's `ipvsadm -Lnc` (entries of the services at `vips`)
/// until `pred` holds for xvs's and the two listings are the same (protocol, client, virtual,
/// destination, state; [`same_conns`]): Ok((xvs, guest)), or Err with the last difference after
/// 30 s.
fn converged(
    g: &mut Guest,
    tb: &Testbed,
    sock: &Path,
    vips: &[SocketAddr],
    pred: impl Fn(&[ConnRow]) -> bool,
) -> Result<(Vec<ConnRow>, Vec<ConnRow>), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let xvs = rows_for(
            &ipvs_guest::parse_conns(&xvs_ctl(tb, sock, &["-Lnc"])?)?,
            vips,
        );
        let guest = rows_for(&g.conns()?, vips);
        let same = same_conns("xvs -Lnc", &xvs, "kernel -Lnc", &guest);
        if pred(&xvs) && same.is_ok() {
            return Ok((xvs, guest));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not converged within 30 s (condition on xvs's entries: {}): {}",
                pred(&xvs),
                same.err().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// How many entries are in each state.
fn state_counts(rows: &[ConnRow]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in rows {
        *m.entry(format!("{} {}", r.proto, r.state)).or_insert(0) += 1;
    }
    m
}

/// Both directions between xvs and the guest's kernel; returns a summary line per direction.
fn xvs_scenarios(g: &mut Guest) -> Vec<String> {
    let t0 = Instant::now();
    let tb = Testbed::up_with("xi", &[("SERVERS", "0")]);
    tb.single_queue_towards_director();
    g.attach_ns(&tb.ns("dir"), XVS_SEG, "2001:2:0:f0::3")
        .expect("attach the testbed's director to the guest's segment");
    guest_twin_services(g).expect("the guest's twin services");
    let _echo: Vec<ChildGuard> = ["b1", "b2", "b3"]
        .iter()
        .map(|b| {
            ChildGuard(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &tb.ns(b), "python3", "-u", "-c", ECHO])
                    .arg(ECHO_PORT.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("python3"),
            )
        })
        .collect();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipvs-sync-xvs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("xvs.toml"), xvs_config()).unwrap();
    let sock = dir.join("xvs.sock");
    let _xvs = tb.start_xvs(&dir.join("xvs.toml"), &sock, &dir.join("xvs.log"));
    // Neighbours xvs forwards to: the testbed's backends and, on the guest's segment, the guest.
    for a in [
        "198.18.3.11",
        "198.18.3.12",
        "198.18.3.13",
        "198.18.1.1",
        "2001:2:0:3::11",
        "2001:2:0:3::12",
        "2001:2:0:3::13",
        "2001:2:0:1::1",
    ] {
        tb.exec("dir", &["ping", "-c", "1", "-W", "1", a]);
    }
    let (ok, out) = tb.exec("dir", &["ping", "-c", "1", "-W", "2", &GUEST.to_string()]);
    assert!(ok, "the director namespace reaches the guest: {out}");
    tb.wait_neighbours(&[
        "198.18.3.11",
        "198.18.3.12",
        "198.18.3.13",
        "198.18.240.1",
        "2001:2:0:3::11",
        "2001:2:0:3::12",
        "2001:2:0:3::13",
    ]);
    let daemons = xvs_ctl(&tb, &sock, &["-L", "--daemon"]).unwrap();
    assert!(
        daemons.starts_with(&format!(
            "master sync daemon (mcast={}, syncid={XVS_MASTER_SYNCID}",
            ipvs_guest::ATTACHED_DEV
        )),
        "{daemons}"
    );
    let (one, xvs_kinds) = xvs_master_to_kernel_backup(g, &tb, &sock);
    let (two, kernel_kinds) = kernel_master_to_xvs_backup(g, &tb, &sock);
    // What each master put on the wire per state, after the same traffic (connections
    // established, some closed): where both sent a state, the same flags and timeouts.
    println!("on the wire per state (flags, timeout):\n  xvs:    {xvs_kinds:?}\n  kernel: {kernel_kinds:?}");
    let mut common = Vec::new();
    for (state, k) in &kernel_kinds {
        if let Some(x) = xvs_kinds.get(state) {
            assert_eq!(x, k, "{state}: xvs's master sent {x:?}, the kernel's {k:?}");
            common.push(state.clone());
        }
    }
    for must in ["TCP ESTABLISHED", "TCP TIME_WAIT", "UDP UDP", "template"] {
        assert!(
            common.iter().any(|c| c == must),
            "both masters should have sent {must}"
        );
    }
    let summary = vec![
        one,
        two,
        format!("same flags and timeouts on the wire for {common:?}"),
    ];
    println!("xvs scenarios took {:.1} s", t0.elapsed().as_secs_f64());
    summary
}

/// xvs master → kernel backup: real connections through xvs appear in the guest.
fn xvs_master_to_kernel_backup(g: &mut Guest, tb: &Testbed, sock: &Path) -> (String, WireKinds) {
    let t0 = Instant::now();
    let daemon = g.ipvsadm(&["-L", "--daemon"]).unwrap();
    assert!(
        daemon.contains(&format!(
            "backup sync daemon (mcast=eth0, syncid={XVS_MASTER_SYNCID}"
        )),
        "{daemon}"
    );
    let vips: [SocketAddr; 3] = [
        format!("198.18.10.1:{ECHO_PORT}").parse().unwrap(),
        format!("198.18.10.2:{ECHO_PORT}").parse().unwrap(),
        format!("[{TESTBED_VIP6}]:{ECHO_PORT}").parse().unwrap(),
    ];
    // The test listens on the segment too, to compare what xvs puts on the wire with what the
    // kernel master sent (the committed fixtures).
    let rx = sync_listener(g);
    let mut client = ChildGuard(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &tb.ns("c1"),
                "python3",
                "-u",
                "-c",
                CLIENTS,
            ])
            .arg(format!("{},{ECHO_PORT},{XVS_RR_CONNS}", vips[0].ip()))
            .arg(format!("{},{ECHO_PORT},{XVS_PERSIST_CONNS}", vips[1].ip()))
            .arg(format!("{},{ECHO_PORT},{XVS_V6_CONNS}", vips[2].ip()))
            .arg(format!("udp,{},{ECHO_PORT},{XVS_UDP_FLOWS}", vips[0].ip()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3"),
    );
    let mut line = String::new();
    let mut client_out = BufReader::new(client.0.stdout.take().unwrap());
    client_out.read_line(&mut line).expect("client output");
    let total = XVS_RR_CONNS + XVS_PERSIST_CONNS + XVS_V6_CONNS;
    assert_eq!(
        line.trim(),
        format!("connected {total} {XVS_UDP_FLOWS}"),
        "client: {line}"
    );

    let xvs_rows = rows_for(
        &ipvs_guest::parse_conns(&xvs_ctl(tb, sock, &["-Lnc"]).unwrap()).unwrap(),
        &vips,
    );
    let est: Vec<&ConnRow> = xvs_rows
        .iter()
        .filter(|r| r.client.port() != 0 && r.proto == "TCP")
        .collect();
    let udp = xvs_rows.iter().filter(|r| r.proto == "UDP").count();
    assert_eq!(udp, XVS_UDP_FLOWS, "xvs -Lnc:\n{}", show(&xvs_rows));
    assert_eq!(est.len(), total, "xvs -Lnc:\n{}", show(&xvs_rows));
    assert!(
        est.iter().all(|r| r.state == "ESTABLISHED"),
        "xvs -Lnc:\n{}",
        show(&xvs_rows)
    );
    let templates = xvs_rows.len() - est.len() - udp;
    assert_eq!(
        templates, 1,
        "one persistence template (one client address)"
    );
    // The master sends each connection at its third inbound packet and a message at most
    // 2 s after its first entry.
    let want: BTreeSet<Key> = xvs_rows.iter().map(ConnRow::key).collect();
    let guest_rows = g
        .wait_conns(Duration::from_secs(30), |rows| {
            let have: BTreeSet<Key> = rows.iter().map(ConnRow::key).collect();
            want.is_subset(&have)
        })
        .unwrap_or_else(|e| panic!("the kernel backup did not install xvs's connections: {e}"));
    let guest_rows = rows_for(&guest_rows, &vips);
    let xvs_rows = rows_for(
        &ipvs_guest::parse_conns(&xvs_ctl(tb, sock, &["-Lnc"]).unwrap()).unwrap(),
        &vips,
    );
    same_conns(
        "xvs master -Lnc",
        &xvs_rows,
        "kernel backup -Lnc",
        &guest_rows,
    )
    .unwrap_or_else(|e| panic!("xvs master → kernel backup: {e}"));
    let skew = close_expiry(&xvs_rows, &guest_rows, 10)
        .unwrap_or_else(|e| panic!("xvs master → kernel backup: {e}"));
    // The kernel backup counts them per real server as xvs does.
    let guest_dests = dest_table(&g.services().unwrap(), &vips);
    xvs_dests_matching(tb, sock, &vips, &guest_dests)
        .unwrap_or_else(|e| panic!("ActiveConn/InActConn, kernel backup vs xvs master: {e}"));
    let active: u64 = guest_dests.iter().map(|d| d.3).sum();
    assert_eq!(active as usize, total, "{guest_dests:?}");
    let (wire_note, mut kinds) = check_xvs_wire(&rx, &want);
    // /proc/net/ip_vs_conn_sync names each entry's origin: all came from the sync daemon.
    let sync = g.read("/proc/net/ip_vs_conn_sync").unwrap();
    let ours: Vec<&str> = sync
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 4
                && (matches!(w[3], "C6120A01" | "C6120A02")
                    || w[3] == "2001:0002:0000:0010:0000:0000:0000:0001")
        })
        .collect();
    assert_eq!(ours.len(), xvs_rows.len(), "{sync}");
    assert!(
        ours.iter()
            .all(|l| l.split_whitespace().any(|w| w == "SYNC")),
        "{sync}"
    );
    // Templates (ipvsadm -Lnc --persistent-conn would show the same rows with more columns).
    let tpl: Vec<&ConnRow> = guest_rows.iter().filter(|r| r.client.port() == 0).collect();
    println!(
        "xvs master → kernel backup: {} TCP connections + {udp} UDP + {} template(s) matched \
         in {:.1} s; \
         template as listed by the kernel: {}; expire columns within {skew} s\n  {wire_note}\n  per dest (kernel = xvs): {guest_dests:?}",
        est.len(),
        tpl.len(),
        t0.elapsed().as_secs_f64(),
        tpl.first().map(|r| r.to_string()).unwrap_or_default()
    );

    // The client closes XVS_CLOSED of its round-robin connections: xvs sees both FINs (NAT)
    // and syncs each state change; the kernel backup must follow to the same states and move
    // them from ActiveConn to InActConn.
    let mut stdin = client.0.stdin.take().unwrap();
    writeln!(stdin, "close {XVS_CLOSED}").unwrap();
    line.clear();
    client_out.read_line(&mut line).expect("client output");
    assert_eq!(
        line.trim(),
        format!("closed {XVS_CLOSED}"),
        "client: {line}"
    );
    let (xvs_rows, _) = converged(g, tb, sock, &vips, |rows| {
        rows.iter().filter(|r| r.state == "TIME_WAIT").count() == XVS_CLOSED
    })
    .unwrap_or_else(|e| panic!("xvs master → kernel backup, after closing: {e}"));
    let guest_dests = dest_table(&g.services().unwrap(), &vips);
    xvs_dests_matching(tb, sock, &vips, &guest_dests)
        .unwrap_or_else(|e| panic!("ActiveConn/InActConn after closing: {e}"));
    let inactive: u64 = guest_dests.iter().map(|d| d.4).sum();
    assert_eq!(
        inactive as usize,
        XVS_CLOSED + XVS_UDP_FLOWS,
        "{guest_dests:?}"
    );
    println!(
        "  after {XVS_CLOSED} closed: states {:?}; per dest (kernel = xvs): {guest_dests:?}",
        state_counts(&xvs_rows)
    );
    for (state, k) in drain_kinds(&rx, IpAddr::V4(XVS_SEG), SYNCID) {
        kinds.entry(state).or_default().extend(k);
    }
    drop(stdin);
    drop(client);
    let text = format!(
        "xvs master → kernel backup: {}/{} TCP connections ({XVS_V6_CONNS} IPv6), \
         {udp}/{XVS_UDP_FLOWS} UDP flows and {}/{} templates matched; {XVS_CLOSED} closed \
         followed to TIME_WAIT",
        est.len(),
        total,
        tpl.len(),
        templates
    );
    (text, kinds)
}

/// Kernel master → xvs backup: real connections through the guest appear in xvs; then one of
/// them moves to xvs and finishes through it.
fn kernel_master_to_xvs_backup(g: &mut Guest, tb: &Testbed, sock: &Path) -> (String, WireKinds) {
    let t0 = Instant::now();
    // xvs's master would otherwise send what it forwards from now on to the guest's backup.
    xvs_ctl(tb, sock, &["--stop-daemon", "master"]).unwrap();
    xvs_ctl(
        tb,
        sock,
        &[
            "--start-daemon",
            "backup",
            "--mcast-interface",
            ipvs_guest::ATTACHED_DEV,
            "--syncid",
            KERNEL_MASTER_SYNCID,
        ],
    )
    .unwrap();
    g.ipvsadm(&[
        "--start-daemon",
        "master",
        "--mcast-interface",
        "eth0",
        "--syncid",
        KERNEL_MASTER_SYNCID,
    ])
    .unwrap();
    let rx = sync_listener(g);
    // Frames the test's namespace sends to xvs later must carry full checksums (TESTBED.md).
    g.ns.exec(&["ethtool", "-K", ipvs_guest::BRIDGE, "tx", "off"])
        .unwrap();
    let v5 = SocketAddr::new(IpAddr::V4(vip(5)), 80);
    let v6 = SocketAddr::new(IpAddr::V4(vip(6)), 80);
    let u5 = SocketAddr::new(IpAddr::V4(vip(5)), 53);
    let g6 = SocketAddr::new(GUEST_VIP6.parse().unwrap(), 80);
    let vips = [v5, v6, u5, g6];
    let mut keep = Clients::default();
    let mut expected = BTreeSet::new();
    for (to, n) in [
        (v5, KERNEL_RR_CONNS),
        (v6, KERNEL_PERSIST_CONNS),
        (g6, KERNEL_V6_CONNS),
    ] {
        for _ in 0..n {
            let (c, b) = tcp_client(&g.ns, to, &mut keep).unwrap();
            expected.insert(("TCP".to_string(), c, to, b));
        }
    }
    for _ in 0..KERNEL_UDP_FLOWS {
        let (c, b) = udp_client(&g.ns, u5, 3, &mut keep).unwrap();
        expected.insert(("UDP".to_string(), c, u5, b));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let xvs_rows = loop {
        let rows = rows_for(
            &ipvs_guest::parse_conns(&xvs_ctl(tb, sock, &["-Lnc"]).unwrap()).unwrap(),
            &vips,
        );
        let have: BTreeSet<Key> = rows.iter().map(ConnRow::key).collect();
        if expected.is_subset(&have) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s xvs's backup did not install the kernel master's connections; missing {:?}\n\
             xvs -Lnc:\n{}\nxvs status:\n{}",
            expected.difference(&have).collect::<Vec<_>>(),
            show(&rows),
            xvs_ctl(tb, sock, &["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let guest_rows = rows_for(&g.conns().unwrap(), &vips);
    same_conns(
        "kernel master -Lnc",
        &guest_rows,
        "xvs backup -Lnc",
        &xvs_rows,
    )
    .unwrap_or_else(|e| panic!("kernel master → xvs backup: {e}"));
    let skew = close_expiry(&guest_rows, &xvs_rows, 10)
        .unwrap_or_else(|e| panic!("kernel master → xvs backup: {e}"));
    let guest_dests = dest_table(&g.services().unwrap(), &vips);
    xvs_dests_matching(tb, sock, &vips, &guest_dests)
        .unwrap_or_else(|e| panic!("ActiveConn/InActConn, kernel master vs xvs backup: {e}"));
    let conns = xvs_rows.iter().filter(|r| r.client.port() != 0).count();
    let templates = xvs_rows.len() - conns;
    println!(
        "kernel master → xvs backup: {conns} connections ({} TCP of which {KERNEL_V6_CONNS} \
         IPv6, {} UDP) + {templates} template(s) matched in {:.1} s; expire columns within \
         {skew} s\n  per dest (kernel = xvs): {guest_dests:?}",
        KERNEL_RR_CONNS + KERNEL_PERSIST_CONNS + KERNEL_V6_CONNS,
        KERNEL_UDP_FLOWS,
        t0.elapsed().as_secs_f64()
    );
    let mut summary = format!(
        "kernel master → xvs backup: {conns}/{} connections and {templates} templates matched",
        expected.len()
    );

    // The client closes KERNEL_CLOSED connections of the persistent service: the kernel master
    // syncs each state change; xvs's backup must follow to the same states and counts.
    let mut closed = 0;
    keep.tcp.retain(|s| {
        if closed < KERNEL_CLOSED && s.peer_addr().ok() == Some(v6) {
            closed += 1;
            false
        } else {
            true
        }
    });
    assert_eq!(closed, KERNEL_CLOSED);
    let (xvs_rows, _) = converged(g, tb, sock, &vips, |rows| {
        rows.iter().filter(|r| r.state == "TIME_WAIT").count() == KERNEL_CLOSED
    })
    .unwrap_or_else(|e| panic!("kernel master → xvs backup, after closing: {e}"));
    let guest_dests = dest_table(&g.services().unwrap(), &vips);
    xvs_dests_matching(tb, sock, &vips, &guest_dests)
        .unwrap_or_else(|e| panic!("ActiveConn/InActConn after closing: {e}"));
    println!(
        "  after {KERNEL_CLOSED} closed: states {:?}; per dest (kernel = xvs): {guest_dests:?}",
        state_counts(&xvs_rows)
    );
    summary.push_str(&format!("; {KERNEL_CLOSED} closed followed to TIME_WAIT"));
    let kinds = drain_kinds(
        &rx,
        IpAddr::V4(GUEST),
        KERNEL_MASTER_SYNCID.parse().unwrap(),
    );

    // Traffic moves: the client's route to vip(5) now goes to xvs, which forwards the synced
    // connections to their backends (two, round robin; over the guest, which routes to its
    // backends). The client half-closes each; the backend's FIN (its reply path still runs
    // through the guest, which un-NATs it) must come back: a backend that did not hold the
    // connection would answer with a reset, and xvs schedules no TCP segment but a SYN.
    let moved: Vec<&TcpStream> = keep
        .tcp
        .iter()
        .filter(|s| s.peer_addr().ok() == Some(v5))
        .collect();
    assert_eq!(moved.len(), KERNEL_RR_CONNS);
    g.ns.ip(&[
        "route",
        "add",
        &format!("{}/32", vip(5)),
        "via",
        &XVS_SEG.to_string(),
    ])
    .unwrap();
    for s in &moved {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    for s in &moved {
        let mut buf = [0u8; 64];
        let r = std::io::Read::read(&mut &**s, &mut buf);
        assert!(
            matches!(r, Ok(0)),
            "a moved connection ({:?}) did not end cleanly through xvs: {r:?}",
            s.local_addr()
        );
    }
    let after = ipvs_guest::parse_conns(&xvs_ctl(tb, sock, &["-Lnc"]).unwrap()).unwrap();
    let mut per_dest = std::collections::BTreeMap::new();
    for s in &moved {
        let client = s.local_addr().unwrap();
        let before = xvs_rows.iter().find(|r| r.client == client).unwrap();
        let row = after
            .iter()
            .find(|r| r.client == client)
            .unwrap_or_else(|| panic!("xvs lost {client}:\n{}", show(&after)));
        assert_eq!((row.virtual_, row.dest), (before.virtual_, before.dest));
        assert_eq!(
            row.state, "CLOSE_WAIT",
            "xvs saw the client's FIN only: {row}"
        );
        *per_dest.entry(row.dest).or_insert(0) += 1;
    }
    assert_eq!(per_dest.len(), 2, "both backends: {per_dest:?}");
    println!(
        "moved to xvs: {} connections of vip(5) ended cleanly through it (client's FIN \
         forwarded to the synced backend, backend's FIN came back), per backend {per_dest:?}",
        moved.len()
    );
    summary.push_str(&format!(
        "; {} moved to xvs ended cleanly through it at their backends {per_dest:?}",
        moved.len()
    ));
    (summary, kinds)
}
