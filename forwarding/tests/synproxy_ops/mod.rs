//! A harness over the SYN proxy's state paths, shared by the fuzz target
//! (`fuzz/fuzz_targets/synproxy.rs`) and a seeded random test (`tests/synproxy_random.rs`).
//!
//! Random bytes would almost never carry a valid cookie, so the input is read as a sequence of
//! operations that build segments the way the two peers would — a client SYN, the ACK echoing
//! the last cookie (or a corrupted one), the backend's SYN-ACK to the director's last SYN,
//! segments with fuzzed flags, sequence numbers, options and payload in either direction, raw
//! frames, ICMP errors quoting the last frame sent on either side, time steps (which run the
//! housekeeping and with it the SYN retry timers) — on a pipeline with a SYN-proxied NAT and FullNAT service (IPv4 and
//! IPv6). Invariants: no panic; every transmitted frame, and every extra frame (held segments
//! sent on), has valid checksums and leaves by a configured port; every frame is counted once;
//! the connection table's invariants hold.
#![allow(dead_code)]

use std::net::IpAddr;

use super::common::*;
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP};
use xvs_forwarding::testkit::{verify_checksums, Pkt};
use xvs_forwarding::wire::{parse, Parsed};
use xvs_forwarding::{Frame, Method, Pipeline, PipelineConfig, PortId, Time, Verdict};
use xvs_schedulers::SchedFlags;

const ROOM: usize = 256;

fn services() -> Vec<Service> {
    let mut v = Vec::new();
    for (vip, backend, port, method) in [
        (IpAddr::V4(VIP4), IpAddr::V4(backend4(11)), 80, Method::Nat),
        (
            IpAddr::V4(VIP4),
            IpAddr::V4(backend4(14)),
            81,
            Method::FullNat,
        ),
        (
            IpAddr::V6(vip6()),
            IpAddr::V6(backend6(11)),
            80,
            Method::Nat,
        ),
    ] {
        v.push(Service {
            key: ServiceKey::Addr {
                proto: PROTO_TCP,
                addr: vip,
                port,
            },
            scheduler: "rr".into(),
            sched_flags: SchedFlags::NONE,
            persistence: None,
            one_packet: false,
            synproxy: true,
            conn_rate: 0,
            backends: vec![Backend {
                addr: backend,
                port: 8080,
                weight: 1,
                method,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            }],
        });
    }
    v
}

/// Bytes of the input, read one at a time (zeros once it is used up).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// What the harness remembers of the last handshake segments it saw.
#[derive(Default)]
struct Seen {
    /// Last SYN-ACK to the client: (client address and port, VIP and port, cookie, its ack,
    /// TSval).
    cookie: Option<(IpAddr, u16, IpAddr, u16, u32, u32, u32)>,
    /// Last SYN to the backend: its source address and port, sequence number, destination.
    syn: Option<(IpAddr, u16, u32, IpAddr)>,
    /// Last frame transmitted on each port (quoted by ICMP errors).
    last: [Option<Vec<u8>>; 2],
}

fn options(inp: &mut Input) -> Vec<u8> {
    let kind = inp.u8();
    let mut o = Vec::new();
    if kind & 1 != 0 {
        o.extend_from_slice(&[2, 4]);
        o.extend_from_slice(&inp.u16().to_be_bytes());
    }
    if kind & 2 != 0 {
        o.extend_from_slice(&[4, 2]);
    }
    if kind & 4 != 0 {
        o.extend_from_slice(&[8, 10]);
        o.extend_from_slice(&inp.u32().to_be_bytes());
        o.extend_from_slice(&inp.u32().to_be_bytes());
    }
    if kind & 8 != 0 {
        o.extend_from_slice(&[1, 3, 3, inp.u8()]);
    }
    if kind & 16 != 0 {
        let n = 1 + usize::from(inp.u8() % 3);
        o.extend_from_slice(&[1, 1, 5, (2 + 8 * n) as u8]);
        for _ in 0..2 * n {
            o.extend_from_slice(&inp.u32().to_be_bytes());
        }
    }
    if kind & 32 != 0 {
        // Raw option bytes (possibly malformed).
        let n = usize::from(inp.u8() % 12);
        o.extend_from_slice(inp.bytes(n));
    }
    o.truncate(40);
    o
}

/// Run one input; panics when an invariant breaks. Returns the pipeline's counters.
pub fn run(data: &[u8]) -> xvs_forwarding::Counters {
    let cfg = PipelineConfig {
        connections: 64,
        v6_connections: 64,
        local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
        ..PipelineConfig::default()
    };
    let mut pipe = Pipeline::new(cfg, &services(), vec![], network()).unwrap();
    let mut inp = Input(data);
    let mut now = Time::from_secs(3600);
    let mut seen = Seen::default();
    let mut buf = vec![0u8; ROOM + 2048];
    let mut frames = 0u64;
    let mut ops = 0;
    while !inp.0.is_empty() && ops < 256 {
        ops += 1;
        let op = inp.u8();
        let v6 = op & 0x80 != 0;
        let (client, vip, backend) = if v6 {
            (
                IpAddr::V6(client6()),
                IpAddr::V6(vip6()),
                IpAddr::V6(backend6(11)),
            )
        } else {
            (
                IpAddr::V4(CLIENT4),
                IpAddr::V4(VIP4),
                IpAddr::V4(backend4(11 + 3 * (op >> 6 & 1))),
            )
        };
        let vport = 80 + u16::from(!v6 && op & 0x40 != 0);
        let cport = 40000 + u16::from(inp.u8() & 3);
        let (ingress, pkt) = match op & 7 {
            0 => {
                let o = options(&mut inp);
                let pkt = frame_in(client, vip)
                    .tcp(cport, vport)
                    .syn()
                    .seq_ack(inp.u32(), 0)
                    .tcp_options(&o);
                (FRONT, pkt.build())
            }
            1 => {
                let (client, cp, vip, vport, cookie, isn1, ts) =
                    seen.cookie
                        .unwrap_or((client, cport, vip, vport, inp.u32(), inp.u32(), 0));
                let corrupt = inp.u8();
                let ack = if corrupt & 1 != 0 {
                    cookie.wrapping_add(1) ^ inp.u32()
                } else {
                    cookie.wrapping_add(1)
                };
                let mut o = vec![1, 1, 8, 10];
                o.extend_from_slice(&inp.u32().to_be_bytes());
                o.extend_from_slice(&ts.to_be_bytes());
                let n = usize::from(inp.u8() % 64);
                let payload = inp.bytes(n).to_vec();
                let pkt = frame_in(client, vip)
                    .tcp(cp, vport)
                    .flags(0x10 | (corrupt & 0x0c))
                    .seq_ack(if corrupt & 0x10 != 0 { inp.u32() } else { isn1 }, ack)
                    .tcp_options(if corrupt & 2 != 0 { &o } else { &[] })
                    .payload(&payload);
                (FRONT, pkt.build())
            }
            2 => {
                let (dst, dport, seq, src) =
                    seen.syn.unwrap_or((client, cport, inp.u32(), backend));
                let o = options(&mut inp);
                let ack = if inp.u8() & 3 != 0 {
                    seq.wrapping_add(1)
                } else {
                    inp.u32()
                };
                let pkt = ip(Pkt::eth(backend_mac(11), BACK_MAC), src, dst)
                    .ttl(64)
                    .tcp(8080, dport)
                    .flags(0x12 | if inp.u8() & 7 == 0 { 0x05 } else { 0 })
                    .seq_ack(inp.u32(), ack)
                    .tcp_options(&o);
                (BACK, pkt.build())
            }
            3 | 4 => {
                let from_client = op & 7 == 3;
                let o = options(&mut inp);
                let flags = inp.u8();
                let (seq, ack) = (inp.u32(), inp.u32());
                let n = usize::from(inp.u8() % 200);
                let payload = inp.bytes(n).to_vec();
                let base = if from_client {
                    frame_in(client, vip).tcp(cport, vport)
                } else {
                    let (dst, dport, src) = seen
                        .syn
                        .map(|(a, p, _, b)| (a, p, b))
                        .unwrap_or((client, cport, backend));
                    ip(Pkt::eth(backend_mac(11), BACK_MAC), src, dst)
                        .ttl(64)
                        .tcp(8080, dport)
                };
                let pkt = base
                    .flags(flags)
                    .seq_ack(seq, ack)
                    .window(inp.u16())
                    .tcp_options(&o)
                    .payload(&payload);
                (if from_client { FRONT } else { BACK }, pkt.build())
            }
            5 if op & 0x20 != 0 => {
                // An ICMP error about the last frame sent on a port, from that side (a router
                // toward the client, the backend toward the director), quoting a cut of it.
                let side = usize::from(op >> 3 & 1);
                let Some(last) = seen.last[side].clone() else {
                    continue;
                };
                let Parsed::Ip(lp) = parse(&last) else {
                    continue;
                };
                let cut = (lp.ip_end - lp.l3).min(28 + usize::from(inp.u8()));
                let quote = &last[lp.l3..lp.l3 + cut];
                let (ty, code) = match (lp.is_v4(), inp.u8() & 1) {
                    (true, 0) => (3, 4),
                    (true, _) => (3, 1),
                    (false, 0) => (2, 0),
                    (false, _) => (1, 3),
                };
                let mtu = u32::from(inp.u16());
                if side == 0 {
                    let router = if lp.is_v4() {
                        IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 100, 1))
                    } else {
                        "2001:2:ff::1".parse().unwrap()
                    };
                    let pkt = frame_in(router, lp.src).icmp_error(ty, code, mtu, quote);
                    (FRONT, pkt.build())
                } else {
                    let pkt = ip(Pkt::eth(backend_mac(11), BACK_MAC), lp.dst, lp.src)
                        .ttl(64)
                        .icmp_error(ty, code, mtu, quote);
                    (BACK, pkt.build())
                }
            }
            5 => {
                let n = usize::from(inp.u8());
                (PortId(u16::from(op >> 3 & 1)), inp.bytes(n).to_vec())
            }
            _ => {
                // Mostly short steps (up to 2.5 s); now and then up to 11 minutes, past the
                // cookies' age and the entries' timeouts.
                now.0 += if op & 0x3f == 0x3f {
                    u64::from(inp.u16()) * 10_000_000
                } else {
                    u64::from(inp.u8()) * 10_000_000
                };
                pipe.housekeeping(now, 64);
                continue;
            }
        };
        let len = pkt.len().min(2048);
        buf[ROOM..ROOM + len].copy_from_slice(&pkt[..len]);
        let mut f = Frame::new(&mut buf, ROOM, len);
        now.0 += 1_000_000;
        let v = pipe.process(now, ingress, &mut f);
        frames += 1;
        if let Verdict::Tx(port) = v {
            assert!(port.0 < 2);
            if pkt_is_wellformed(&pkt) {
                verify_checksums(f.data()).unwrap_or_else(|e| panic!("op {op}: {e}"));
            }
            remember(&mut seen, f.data(), port);
        }
        let mut extra = Vec::new();
        pipe.drain_fragments(|port, b| extra.push((port, b.to_vec())));
        for (port, b) in extra {
            assert!(port.0 < 2);
            verify_checksums(&b).unwrap_or_else(|e| panic!("held segment: {e}"));
        }
    }
    let c = pipe.counters();
    assert_eq!(c.rx, frames);
    assert_eq!(c.tx + c.pass + c.drops.total(), c.rx);
    pipe.connections().check().unwrap();
    c.clone()
}

/// Whether the input frame itself had valid checksums (raw frames may not; the pipeline
/// updates checksums incrementally, so a broken one stays broken).
fn pkt_is_wellformed(frame: &[u8]) -> bool {
    verify_checksums(frame).is_ok()
}

fn remember(seen: &mut Seen, out: &[u8], port: PortId) {
    if let Some(slot) = seen.last.get_mut(usize::from(port.0)) {
        *slot = Some(out.to_vec());
    }
    let Parsed::Ip(p) = parse(out) else {
        return;
    };
    let Some(t) = out.get(p.l4..p.ip_end) else {
        return;
    };
    if t.len() < 20 {
        return;
    }
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let hlen = usize::from(t[12] >> 4) * 4;
    let opts = xvs_forwarding::synproxy::parse_options(&t[..hlen.min(t.len())]);
    match (port, p.tcp_flags & 0x12) {
        (FRONT, 0x12) => {
            let ts = opts.ts.map_or(0, |(v, _)| v);
            let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            seen.cookie = Some((p.dst, p.dport, p.src, p.sport, seq, ack, ts));
        }
        (BACK, 0x02) => seen.syn = Some((p.src, p.sport, seq, p.dst)),
        _ => {}
    }
}
