//! Kernel IPVS connection sync on the wire, against a real kernel (the QEMU guest of
//! scripts/ipvs-guest with eth0 on a tap in a namespace of this test; tests/support/ipvs_guest.rs).
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
//!
//! `regenerate_sync_fixtures` (ignored) writes the captured datagrams of 1. with a manifest to
//! forwarding/tests/data/ipvs-sync/ (see its README.md); `committed_sync_fixtures_match_manifest`
//! checks the committed ones without a guest.
//!
//! Needs root (namespace, tap), qemu-system-x86, cpio, gcc with static glibc
//! (scripts/install-deps.sh) and, the first time, Debian's package registry. Without root the
//! guest tests say loudly that they were skipped; as root, a guest that cannot be built or
//! booted fails them.

#[path = "support/ipvs_guest.rs"]
mod ipvs_guest;
#[path = "support/ipvs_sync_wire.rs"]
mod wire;

use ipvs_guest::{backend, vip, ConnRow, Guest, GuestOptions, Netns, BACKEND_PORT, HOST};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
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
        "backup: extension-shaped message (version 0x58) and foreign sync id ignored, no kernel \
         log line; the valid message after them installed; ActiveConn 2"
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
