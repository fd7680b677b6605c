//! Integration tests of the data-plane I/O loops (AF_XDP and AF_PACKET) in the namespace testbed
//! (scripts/testbed.sh), with a *test* processor: a stateless single-backend NAT written here (not
//! the product pipeline). Real curl and UDP clients talk to the VIP; frames go client → router →
//! director `front` → (XDP redirect | packet ring) → worker → director `back` → backend b1, and
//! the replies come back through the director (b1's default route) with the VIP as source.
//!
//! Needs root (namespaces, XDP, AF_XDP); without it each test says so loudly and returns.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs::dataplane_config::{DataplaneConfig, IoKind, WorkerConfig};
use xvs::io::sys::{InterfaceInfo, NetnsGuard};
use xvs::worker::{Dataplane, DirectorTargets, FrameProcessor};
use xvs_forwarding::{DropReason, Frame, PortId, Time, Verdict};

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed};

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const B1_4: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 11);
const RT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, 1);
const B1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 3, 0, 0, 0, 0x11);
const RT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);

/// RFC 1624 incremental update of a ones'-complement checksum for a changed 16-bit-word run.
fn csum_update(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s: u32 = (!csum) as u32;
    for c in old.chunks(2) {
        s += (!u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])) as u32;
    }
    for c in new.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Test processor: NAT of TCP/UDP for VIP → b1 (port unchanged), replies b1 → VIP.
struct TestNat {
    ports: Vec<InterfaceInfo>,
    neigh: HashMap<IpAddr, (PortId, [u8; 6])>,
}

impl TestNat {
    /// Rewrite one address (at `at` in `d`) and fix the IPv4 header and L4 checksums.
    fn rewrite(d: &mut [u8], l3: usize, at: usize, new: &[u8], v4: bool) -> bool {
        let alen = new.len();
        let old: Vec<u8> = d[at..at + alen].to_vec();
        d[at..at + alen].copy_from_slice(new);
        let (proto, l4) = if v4 {
            let ihl = (d[l3] & 0x0f) as usize * 4;
            let c = u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]);
            let c = csum_update(c, &old, new);
            d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            (d[l3 + 9], l3 + ihl)
        } else {
            (d[l3 + 6], l3 + 40)
        };
        let off = match proto {
            6 => 16,
            17 => 6,
            _ => return false,
        };
        if d.len() < l4 + off + 2 {
            return false;
        }
        let c = u16::from_be_bytes([d[l4 + off], d[l4 + off + 1]]);
        if proto == 17 && c == 0 && v4 {
            return true; // no UDP checksum
        }
        let mut c = csum_update(c, &old, new);
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        d[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
        true
    }

    fn out_to(&self, d: &mut [u8], next_hop: IpAddr) -> Verdict {
        let Some(&(port, mac)) = self.neigh.get(&next_hop) else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        let Some(p) = self.ports.get(port.0 as usize) else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        d[0..6].copy_from_slice(&mac);
        d[6..12].copy_from_slice(&p.mac);
        Verdict::Tx(port)
    }
}

impl FrameProcessor for TestNat {
    type Command = ();

    fn process(&mut self, _now: Time, ingress: PortId, frame: &mut Frame<'_>) -> Verdict {
        let d = frame.data_mut();
        if d.len() < 14 + 20 + 8 {
            return Verdict::Pass;
        }
        let et = u16::from_be_bytes([d[12], d[13]]);
        if et == 0x86dd && d.len() < 14 + 40 + 8 {
            return Verdict::Pass;
        }
        match (et, ingress.0) {
            (0x0800, 0) if d[30..34] == VIP4.octets() => {
                if !Self::rewrite(d, 14, 30, &B1_4.octets(), true) {
                    return Verdict::Pass;
                }
                self.out_to(d, IpAddr::V4(B1_4))
            }
            (0x0800, 1) if d[26..30] == B1_4.octets() => {
                if !Self::rewrite(d, 14, 26, &VIP4.octets(), true) {
                    return Verdict::Pass;
                }
                self.out_to(d, IpAddr::V4(RT4))
            }
            (0x86dd, 0) if d[38..54] == VIP6.octets() => {
                if !Self::rewrite(d, 14, 38, &B1_6.octets(), false) {
                    return Verdict::Pass;
                }
                self.out_to(d, IpAddr::V6(B1_6))
            }
            (0x86dd, 1) if d[22..38] == B1_6.octets() => {
                if !Self::rewrite(d, 14, 22, &VIP6.octets(), false) {
                    return Verdict::Pass;
                }
                self.out_to(d, IpAddr::V6(RT6))
            }
            _ => Verdict::Pass,
        }
    }

    fn set_neighbour(&mut self, ip: IpAddr, port: PortId, mac: [u8; 6]) {
        self.neigh.insert(ip, (port, mac));
    }

    fn remove_neighbour(&mut self, ip: IpAddr) {
        self.neigh.remove(&ip);
    }
}

fn start(tb: &Testbed, io: IoKind) -> Dataplane {
    start_with(tb, io, |_| {})
}

/// [`start`] with `adjust` applied to the configuration last.
fn start_with(tb: &Testbed, io: IoKind, adjust: impl FnOnce(&mut DataplaneConfig)) -> Dataplane {
    let mut cfg = DataplaneConfig::new(&["front", "back"]);
    cfg.io = io;
    cfg.workers = vec![
        WorkerConfig {
            queue: 0,
            core: Some(0),
        },
        WorkerConfig {
            queue: 1,
            core: Some(1),
        },
    ];
    cfg.afxdp.ring_size = 512;
    // veth has no zero-copy: "auto" must fall back to copy mode.
    cfg.afxdp.bind = xvs::io::afxdp::BindMode::Auto;
    cfg.packet.block_count = 16;
    // A block size that is not a multiple of the frame size (3 pages, one 8 KiB frame per block
    // and 4 KiB unused): TX slots must be addressed as the kernel does (block i / per_block,
    // offset (i % per_block) * frame_size), or every frame after the first is lost.
    cfg.packet.block_size = 3 * 4096;
    cfg.packet.frame_size = 8192;
    cfg.packet.tx_frames = 64;
    cfg.log_interval_secs = 2;
    cfg.neighbour_refresh_ms = 200;
    adjust(&mut cfg);
    let targets = DirectorTargets {
        vips: vec![VIP4.into(), VIP6.into()],
        backends: vec![B1_4.into(), B1_6.into()],
        locals: vec![],
        next_hops: vec![B1_4.into(), B1_6.into(), RT4.into(), RT6.into()],
        ..DirectorTargets::default()
    };
    // Workers and the neighbour thread inherit the namespace of the thread that spawns them.
    let _ns = NetnsGuard::enter(&tb.ns("dir")).expect("enter director namespace");
    Dataplane::start(&cfg, &targets, |_, ports, _| TestNat {
        ports: ports.to_vec(),
        neigh: HashMap::new(),
    })
    .unwrap_or_else(|e| panic!("data plane ({io}) did not start: {e}"))
}

fn run_nat_through(io: IoKind, tag: &str) {
    if skip_unless_root(&format!("dataplane {io} test")) {
        return;
    }
    let tb = Testbed::up(tag);
    let dp = start(&tb, io);
    if io == IoKind::Afxdp {
        assert!(tb.xdp_attached("front") && tb.xdp_attached("back"));
    }
    tb.wait_neighbours(&[
        "198.18.3.11",
        "198.18.1.1",
        "2001:2:0:3::11",
        "2001:2:0:1::1",
    ]);

    // HTTP over TCP, IPv4 and IPv6: every request answered by b1 through the VIP.
    let n = 40;
    for url in ["http://198.18.10.1/", "http://[2001:2:0:10::1]/"] {
        let mut ok = 0;
        for _ in 0..n {
            let (s, out) = tb.exec("c1", &["curl", "-s", "-m", "3", url]);
            if s && out.trim() == "b1" {
                ok += 1;
            }
        }
        assert_eq!(
            ok, n,
            "{io}: {ok}/{n} HTTP requests to {url} answered by b1"
        );
    }
    // UDP: the reply comes from the VIP (NAT rewrote the source back).
    let r = tb.udp_ask("198.18.10.1", "ping4");
    assert_eq!(r.trim(), "b1 ping4 198.18.10.1", "{io}: UDP v4 reply {r:?}");
    let r = tb.udp_ask("2001:2:0:10::1", "ping6");
    assert_eq!(
        r.trim(),
        "b1 ping6 2001:2:0:10::1",
        "{io}: UDP v6 reply {r:?}"
    );

    // The host's own traffic with a backend (a health check) still works: replies from b1 to
    // the director's address stay with the kernel (XDP map xvs_host).
    let (ok, body) = tb.exec("dir", &["curl", "-s", "-m", "3", "http://198.18.3.11/"]);
    assert!(
        ok && body.trim() == "b1",
        "{io}: director's own HTTP to b1: {body:?}"
    );

    if io == IoKind::Afxdp {
        // Live target change: without VIP6 in the XDP map its frames go to the kernel (whose
        // nft rule drops them); VIP4 keeps working; with VIP6's network added, IPv6 works again.
        let mut dp = dp;
        let mut t = dp.targets().clone();
        t.vips.retain(|v| v.is_ipv4());
        dp.set_targets(&t).expect("set targets");
        assert_eq!(tb.http_get("http://198.18.10.1/").as_deref(), Some("b1"));
        assert_eq!(tb.http_get("http://[2001:2:0:10::1]/"), None);
        // Back as a network (an fwmark-style VIP prefix) rather than a host entry.
        t.vip_prefixes.push(("2001:2:0:10::".parse().unwrap(), 64));
        dp.set_targets(&t).expect("set targets");
        assert_eq!(
            tb.http_get("http://[2001:2:0:10::1]/").as_deref(),
            Some("b1")
        );
        return finish(&tb, dp, io, n);
    }
    finish(&tb, dp, io, n)
}

fn finish(tb: &Testbed, dp: Dataplane, io: IoKind, n: usize) {
    let stats = dp.stats();
    let stopped = dp.shutdown();
    let rx: u64 = stopped.iter().map(|s| s.io.rx).sum();
    let tx: u64 = stopped.iter().map(|s| s.io.tx).sum();
    eprintln!("{io}: rx {rx} tx {tx}; per worker {stats:?}");
    // Each HTTP exchange is ≥ 5 frames each way through the director.
    assert!(rx >= (2 * n * 8) as u64, "{io}: rx {rx}");
    assert!(tx >= (2 * n * 8) as u64, "{io}: tx {tx}");
    if io == IoKind::Afxdp {
        assert!(
            !tb.xdp_attached("front") && !tb.xdp_attached("back"),
            "XDP program still attached after shutdown"
        );
    }
    // With the director gone the VIP's TCP is dropped by the testbed's nft rule: no answer.
    let (s, _) = tb.exec("c1", &["curl", "-s", "-m", "1", "http://198.18.10.1/"]);
    assert!(!s, "{io}: VIP answered without the director");
}

#[test]
fn afxdp_nat_v4_v6_tcp_udp() {
    run_nat_through(IoKind::Afxdp, "dx");
}

/// With `afxdp.tx_hold_us` at its maximum and a long idle sleep (1 s), frames that come alone
/// (a UDP question and its answer) still leave promptly: a held frame goes out once it is
/// `tx_hold_us` old or when the worker goes to sleep in poll(2), whichever comes first. Were it
/// left for a later frame to push out, each question would wait for the client's resend (1 s).
#[test]
fn afxdp_tx_hold_still_sends_lone_frames() {
    if skip_unless_root("dataplane afxdp tx hold test") {
        return;
    }
    let tb = Testbed::up("dh");
    let dp = start_with(&tb, IoKind::Afxdp, |c| {
        c.afxdp.tx_hold_us = 1000;
        c.idle_wait_ms = 1000;
    });
    tb.wait_neighbours(&["198.18.3.11", "198.18.1.1"]);
    let mut slowest = std::time::Duration::ZERO;
    for i in 0..10 {
        let t = std::time::Instant::now();
        let r = tb.udp_ask("198.18.10.1", &format!("hold{i}"));
        slowest = slowest.max(t.elapsed());
        assert_eq!(
            r.trim(),
            format!("b1 hold{i} 198.18.10.1"),
            "UDP reply {r:?}"
        );
    }
    assert!(
        slowest < std::time::Duration::from_millis(700),
        "a lone UDP question took {slowest:?} (client process included)"
    );
    let stopped = dp.shutdown();
    let tx: u64 = stopped.iter().map(|s| s.io.tx).sum();
    let kicks: u64 = stopped.iter().map(|s| s.io.sys_sendto).sum();
    assert!(tx >= 20, "tx {tx}");
    assert!(kicks > 0, "no TX kick for {tx} frames");
}

#[test]
fn packet_nat_v4_v6_tcp_udp() {
    run_nat_through(IoKind::Packet, "dp");
}

/// An error and its causes, as `{:#}` of anyhow prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Setup failures say why: a missing interface, a queue the interface does not have.
#[test]
fn afxdp_setup_errors_name_the_cause() {
    if skip_unless_root("dataplane setup error test") {
        return;
    }
    let tb = Testbed::up("de");
    let _ns = NetnsGuard::enter(&tb.ns("dir")).expect("enter director namespace");
    let targets = DirectorTargets {
        vips: vec![VIP4.into()],
        ..DirectorTargets::default()
    };
    let mk = || TestNat {
        ports: vec![],
        neigh: HashMap::new(),
    };
    let cfg = DataplaneConfig::new(&["front", "nosuch0"]);
    let e = Dataplane::start(&cfg, &targets, |_, _, _| mk()).unwrap_err();
    let msg = chain(&e);
    eprintln!("{msg}");
    assert!(
        msg.contains("nosuch0") && msg.contains("if_nametoindex"),
        "{msg}"
    );

    let mut cfg = DataplaneConfig::new(&["front", "back"]);
    cfg.workers[0].queue = 5;
    let e = Dataplane::start(&cfg, &targets, |_, _, _| mk()).unwrap_err();
    let msg = chain(&e);
    eprintln!("{msg}");
    assert!(msg.contains("queue 5 does not exist on front"), "{msg}");
    // Nothing stays attached after a failed start.
    drop(_ns);
    assert!(!tb.xdp_attached("front") && !tb.xdp_attached("back"));
}

/// A processor that panics on its first frame.
struct Boom;

impl FrameProcessor for Boom {
    type Command = ();

    fn process(&mut self, _now: Time, _ingress: PortId, _frame: &mut Frame<'_>) -> Verdict {
        panic!("boom (this panic is expected by the test)");
    }
}

/// A worker that dies is noticed (`xvs run` then stops the data plane with an error).
#[test]
fn a_dead_worker_is_detected() {
    if skip_unless_root("dead worker test") {
        return;
    }
    let tb = Testbed::up("dw");
    let mut cfg = DataplaneConfig::new(&["front", "back"]);
    cfg.io = IoKind::Packet;
    let dp = {
        let _ns = NetnsGuard::enter(&tb.ns("dir")).expect("enter director namespace");
        Dataplane::start(&cfg, &DirectorTargets::default(), |_, _, _| Boom).expect("start")
    };
    assert_eq!(dp.dead_worker(), None);
    let _ = tb.exec("c1", &["curl", "-s", "-m", "1", "http://198.18.10.1/"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while dp.dead_worker().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(dp.dead_worker(), Some(0));
    drop(dp);
}
