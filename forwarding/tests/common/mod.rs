//! Shared test topology and fixture runner for the pipeline tests.
//!
//! ```text
//! client 198.18.100.5 / 2001:2:ff::5 ── gateway 198.18.0.1 / 2001:2::1 ── [port 0 "front"]
//!   director 198.18.0.2 / 2001:2::2, VIP 198.18.0.100 / 2001:2::100
//! [port 1 "back"] director 198.19.0.1 / 2001:2:1::1 ── backends 198.19.0.11.. / 2001:2:1::11..
//! ```
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_forwarding::net::{Network, Port, Route};
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP, PROTO_UDP};
use xvs_forwarding::testkit::{verify_checksums, Pkt};
use xvs_forwarding::{Frame, Method, Pipeline, PortId, Time, Verdict};
use xvs_schedulers::SchedFlags;

pub const FRONT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const BACK_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
pub const FRONT: PortId = PortId(0);
pub const BACK: PortId = PortId(1);

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}
pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 5);
pub const DIR_BACK4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 200);

pub fn vip6() -> Ipv6Addr {
    v6("2001:2::100")
}
pub fn client6() -> Ipv6Addr {
    v6("2001:2:ff::5")
}
pub fn dir_back6() -> Ipv6Addr {
    v6("2001:2:1::1")
}
pub fn local6() -> Ipv6Addr {
    v6("2001:2:1::200")
}

/// Backend `n` (11 NAT, 12 DR, 13 TUN, 14 FullNAT) and its MAC.
pub fn backend4(n: u8) -> Ipv4Addr {
    v4(198, 19, 0, n)
}
pub fn backend6(n: u8) -> Ipv6Addr {
    v6(&format!("2001:2:1::{n}"))
}
pub fn backend_mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, n]
}

pub fn network() -> Network {
    let ports = vec![
        Port {
            name: "front".into(),
            mac: FRONT_MAC,
            mtu: 1500,
            v4: Some(v4(198, 18, 0, 2)),
            v6: Some(v6("2001:2::2")),
        },
        Port {
            name: "back".into(),
            mac: BACK_MAC,
            mtu: 1500,
            v4: Some(DIR_BACK4),
            v6: Some(dir_back6()),
        },
    ];
    let routes = vec![
        Route {
            dst: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
            via: Some("198.18.0.1".parse().unwrap()),
            port: FRONT,
        },
        Route {
            dst: "::".parse().unwrap(),
            prefix_len: 0,
            via: Some("2001:2::1".parse().unwrap()),
            port: FRONT,
        },
        Route {
            dst: "198.19.0.0".parse().unwrap(),
            prefix_len: 24,
            via: None,
            port: BACK,
        },
        Route {
            dst: "2001:2:1::".parse().unwrap(),
            prefix_len: 64,
            via: None,
            port: BACK,
        },
    ];
    let mut net = Network::new(ports, routes);
    net.set_neighbour("198.18.0.1".parse().unwrap(), GW_MAC);
    net.set_neighbour("2001:2::1".parse().unwrap(), GW_MAC);
    for n in 11..=14 {
        net.set_neighbour(IpAddr::V4(backend4(n)), backend_mac(n));
        net.set_neighbour(IpAddr::V6(backend6(n)), backend_mac(n));
    }
    net
}

pub struct Fixture {
    pub description: String,
    pub ingress: PortId,
    pub input: Vec<u8>,
    pub verdict: Verdict,
    /// Expected frame for `Tx` verdicts.
    pub output: Option<Vec<u8>>,
}

pub const HEADROOM: usize = 128;

pub fn run(pipe: &mut Pipeline, fixtures: &[Fixture]) {
    for (i, f) in fixtures.iter().enumerate() {
        let mut buf = vec![0u8; HEADROOM + f.input.len() + 64];
        buf[HEADROOM..HEADROOM + f.input.len()].copy_from_slice(&f.input);
        let mut frame = Frame::new(&mut buf, HEADROOM, f.input.len());
        let v = pipe.process(Time::from_secs(1000 + i as u64), f.ingress, &mut frame);
        assert_eq!(v, f.verdict, "fixture {i} ({}): verdict", f.description);
        if let Some(expected) = &f.output {
            let got = frame.data();
            if got != expected.as_slice() {
                panic!(
                    "fixture {i} ({}): output differs\n got:      {}\n expected: {}",
                    f.description,
                    hex(got),
                    hex(expected)
                );
            }
            verify_checksums(got)
                .unwrap_or_else(|e| panic!("fixture {i} ({}): {e}", f.description));
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One IP layer from `src` to `dst` on top of `pkt` (same family).
pub fn ip(pkt: Pkt, src: IpAddr, dst: IpAddr) -> Pkt {
    pkt.ip_layer(src, dst)
}

pub fn frame_in(src: IpAddr, dst: IpAddr) -> Pkt {
    ip(Pkt::eth(GW_MAC, FRONT_MAC), src, dst).ttl(64)
}

/// Process one frame at `now`; the verdict and the frame as it left.
pub fn process(
    pipe: &mut Pipeline,
    now: Time,
    ingress: PortId,
    input: &[u8],
) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + input.len() + 64];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut frame = Frame::new(&mut buf, HEADROOM, input.len());
    let v = pipe.process(now, ingress, &mut frame);
    (v, frame.data().to_vec())
}

/// A pipeline on the common topology with the given services and FullNAT local addresses.
pub fn pipeline_with(services: &[xvs_forwarding::service::Service], connections: u32) -> Pipeline {
    let cfg = xvs_forwarding::PipelineConfig {
        connections,
        v6_connections: connections,
        local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
        ..xvs_forwarding::PipelineConfig::default()
    };
    Pipeline::new(cfg, services, vec![], network()).unwrap()
}

/// The service port of each method: TCP 80.., UDP 53.. in the order NAT, DR, TUN, FullNAT.
pub fn method_index(m: Method) -> u8 {
    match m {
        Method::Nat => 0,
        Method::Dr => 1,
        Method::Tunnel => 2,
        Method::FullNat => 3,
    }
}

pub fn services() -> Vec<Service> {
    let mut out = Vec::new();
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(vip6())] {
        for (proto, base) in [(PROTO_TCP, 80u16), (PROTO_UDP, 53u16)] {
            for m in [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat] {
                let i = method_index(m);
                let n = 11 + i;
                let addr = match vip {
                    IpAddr::V4(_) => IpAddr::V4(backend4(n)),
                    IpAddr::V6(_) => IpAddr::V6(backend6(n)),
                };
                let port = base + u16::from(i);
                let bport = match m {
                    Method::Nat | Method::FullNat => 8000 + port,
                    _ => port,
                };
                out.push(Service {
                    key: ServiceKey::Addr {
                        proto,
                        addr: vip,
                        port,
                    },
                    scheduler: "rr".into(),
                    sched_flags: SchedFlags::NONE,
                    persistence: None,
                    one_packet: false,
                    synproxy: false,
                    conn_rate: 0,
                    backends: vec![Backend {
                        addr,
                        port: bport,
                        weight: 1,
                        method: m,
                        u_threshold: 0,
                        l_threshold: 0,
                        conn_rate: 0,
                    }],
                });
            }
        }
    }
    // A service whose only backend has weight 0: nothing is eligible.
    out.push(Service {
        key: ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: IpAddr::V4(VIP4),
            port: 99,
        },
        scheduler: "wlc".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: vec![Backend {
            addr: IpAddr::V4(backend4(11)),
            port: 99,
            weight: 0,
            method: Method::Nat,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }],
    });
    out
}

/// A TCP NAT service on VIP 198.18.0.100:80 with `backends` backends of weight 1 from
/// 198.19.0.11 on, port 8080, scheduled by `scheduler` (the multi-worker benches' service).
pub fn nat_service(scheduler: &str, backends: u32) -> Service {
    Service {
        key: ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: IpAddr::V4(VIP4),
            port: 80,
        },
        scheduler: scheduler.into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: (0..backends)
            .map(|i| Backend {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(backend4(11)) + i)),
                port: 8080,
                weight: 1,
                method: Method::Nat,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            })
            .collect(),
    }
}
