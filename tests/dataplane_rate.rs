//! Forwarding rate of the AF_XDP data plane with the real pipeline (NAT) against the kernel's own
//! IPv4 forwarding, through the same testbed, with a simple generator (trafgen, 64-byte UDP,
//! 1000 flows). Ignored by default (it saturates both cores for a while); run it with
//!
//!     cargo test --release -p xvs --test dataplane_rate -- --ignored --nocapture
//!
//! `XVS_RATE_IO=packet` measures the AF_PACKET backend instead, `XVS_RATE_XDP_MODE=generic`
//! attaches the XDP program in SKB mode.
//!
//! Set-up: one worker pinned to CPU 0, trafgen pinned to CPU 1, the router's ports towards the
//! director on one tx queue (so everything arrives on queue 0). The sink is b1's kernel, which
//! drops the frames early (their destination, 198.18.3.50, is not its address: a static
//! neighbour entry on the director points 198.18.3.50 at b1's MAC). Both runs end the same way:
//! xvs NATs VIP:5001 → 198.18.3.50:5001; the kernel routes 198.18.20.0/24 via 198.18.3.50.
//! Forwarded = frames b1 received. The worker's busy time per frame is its CPU cost (its core
//! also carries the egress veth and bridge work, which the figure does not include).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use xvs::dataplane_config::{DataplaneConfig, WorkerConfig};
use xvs::io::sys::NetnsGuard;
use xvs::worker::{Dataplane, DirectorTargets};
use xvs_forwarding::net::{Network, Port, Route};
use xvs_forwarding::service::{Backend, Service, ServiceKey};
use xvs_forwarding::{Method, Pipeline, PipelineConfig, PortId};
use xvs_schedulers::SchedFlags;

mod dataplane_support;
use dataplane_support::{skip_unless_root, Testbed};

const SECS: u64 = 5;

fn mac_of(tb: &Testbed, ns: &str, dev: &str) -> String {
    let out = tb
        .exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")])
        .1;
    out.trim().to_string()
}

fn counter(tb: &Testbed, ns: &str, dev: &str, what: &str) -> u64 {
    tb.exec(
        ns,
        &["cat", &format!("/sys/class/net/{dev}/statistics/{what}")],
    )
    .1
    .trim()
    .parse()
    .unwrap_or(0)
}

/// Run trafgen in the client for SECS seconds towards `dst` via the director's front MAC;
/// returns (generated pps, pps received by b1).
fn blast(tb: &Testbed, dst: &str) -> (f64, f64) {
    let conf = format!(
        "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr=198.18.1.10, daddr={dst}, ttl=64, proto=17), udp(sp=dinc(10000, 10999), dp=5001), fill(0x41, 18) }}\n",
        mac_of(tb, "dir", "front"),
        mac_of(tb, "c1", "eth0"),
    );
    let path = std::env::temp_dir().join(format!("{}-trafgen.cfg", tb.prefix));
    std::fs::write(&path, conf).expect("write trafgen config");
    let g0 = counter(tb, "c1", "eth0", "tx_packets");
    let r0 = counter(tb, "b1", "eth0", "rx_packets");
    let st = Command::new("ip")
        .args(["netns", "exec", &tb.ns("c1")])
        .args(["timeout", "-s", "INT", &SECS.to_string()])
        .args([
            "taskset", "-c", "1", "trafgen", "--dev", "eth0", "--cpus", "1", "-q",
        ])
        .arg("--conf")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run trafgen");
    let _ = st;
    std::thread::sleep(Duration::from_millis(300));
    let g = counter(tb, "c1", "eth0", "tx_packets") - g0;
    let r = counter(tb, "b1", "eth0", "rx_packets") - r0;
    let _ = std::fs::remove_file(&path);
    (g as f64 / SECS as f64, r as f64 / SECS as f64)
}

#[test]
#[ignore]
fn afxdp_nat_rate_vs_kernel_forwarding() {
    if skip_unless_root("dataplane rate") {
        return;
    }
    if Command::new("trafgen").arg("-v").output().is_err() {
        eprintln!("!!!!! SKIPPED dataplane rate: trafgen (Debian netsniff-ng) not installed !!!!!");
        return;
    }
    let tb = Testbed::up("rt");
    tb.single_queue_towards_director();
    let b1_mac = mac_of(&tb, "b1", "eth0");
    let (ok, _) = tb.exec(
        "dir",
        &[
            "ip",
            "neigh",
            "replace",
            "198.18.3.50",
            "lladdr",
            &b1_mac,
            "dev",
            "back",
            "nud",
            "permanent",
        ],
    );
    assert!(ok);

    // xvs: NAT VIP:5001 -> 198.18.3.50:5001.
    let sink: IpAddr = "198.18.3.50".parse().unwrap();
    let vip: IpAddr = "198.18.10.1".parse().unwrap();
    let mut cfg = DataplaneConfig::new(&["front", "back"]);
    cfg.workers = vec![WorkerConfig {
        queue: 0,
        core: Some(0),
    }];
    cfg.log_interval_secs = 0;
    if let Ok(io) = std::env::var("XVS_RATE_IO") {
        cfg.io = io.parse().expect("XVS_RATE_IO: afxdp or packet");
    }
    if std::env::var("XVS_RATE_XDP_MODE").as_deref() == Ok("generic") {
        cfg.xdp_mode = xvs::dataplane_config::XdpMode::Generic;
    }
    let io = cfg.io;
    let mode = cfg.xdp_mode;
    let targets = DirectorTargets {
        vips: vec![vip],
        backends: vec![sink],
        locals: vec![],
        next_hops: vec![sink],
        ..DirectorTargets::default()
    };
    let svc = vec![Service {
        key: ServiceKey::Addr {
            proto: 17,
            addr: vip,
            port: 5001,
        },
        scheduler: "rr".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: vec![Backend {
            addr: sink,
            port: 5001,
            weight: 1,
            method: Method::Nat,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }],
    }];
    let dp = {
        let _ns = NetnsGuard::enter(&tb.ns("dir")).expect("enter director namespace");
        Dataplane::start(&cfg, &targets, |_, ports, _| {
            let net = Network::new(
                ports
                    .iter()
                    .map(|p| Port {
                        name: p.name.clone(),
                        mac: p.mac,
                        mtu: p.mtu as u16,
                        v4: Some(Ipv4Addr::new(198, 18, 1, 2)),
                        v6: None,
                    })
                    .collect(),
                vec![
                    Route {
                        dst: "198.18.3.0".parse().unwrap(),
                        prefix_len: 24,
                        via: None,
                        port: PortId(1),
                    },
                    Route {
                        dst: "0.0.0.0".parse().unwrap(),
                        prefix_len: 0,
                        via: Some("198.18.1.1".parse().unwrap()),
                        port: PortId(0),
                    },
                ],
            );
            Pipeline::new(PipelineConfig::default(), &svc, vec![], net).expect("pipeline")
        })
        .expect("data plane")
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = dp.stats();
    let (gen_x, fwd_x) = blast(&tb, "198.18.10.1");
    let after = dp.shutdown();
    let rx = after[0].io.rx - before[0].io.rx;
    let busy = after[0].busy - before[0].busy;
    let ns_per_frame = busy.as_nanos() as f64 / rx.max(1) as f64;
    let drops = &after[0].io.drops;

    // Kernel: forward 198.18.20.0/24 via 198.18.3.50.
    for args in [
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"][..],
        &["ip", "route", "add", "198.18.20.0/24", "via", "198.18.3.50"][..],
    ] {
        assert!(tb.exec("dir", args).0, "{args:?}");
    }
    let (gen_k, fwd_k) = blast(&tb, "198.18.20.1");

    eprintln!("== forwarding rate, 64-byte UDP, 1000 flows, {SECS} s each, generator on CPU 1");
    eprintln!(
        "xvs {io} ({mode:?}) NAT, 1 worker on CPU 0: generated {:.0} pps, forwarded {:.0} pps ({:.1}%), worker busy {:.0} ns/frame (rx {rx}, busy {:.2} s), drops {:?}",
        gen_x,
        fwd_x,
        100.0 * fwd_x / gen_x.max(1.0),
        ns_per_frame,
        busy.as_secs_f64(),
        drops.iter().collect::<Vec<_>>(),
    );
    eprintln!(
        "kernel IPv4 forwarding:          generated {:.0} pps, forwarded {:.0} pps ({:.1}%)",
        gen_k,
        fwd_k,
        100.0 * fwd_k / gen_k.max(1.0)
    );
    assert!(fwd_x > 0.0 && fwd_k > 0.0);
}
