//! The frames and tables the pipeline benches share (`benches/pipeline.rs` times them,
//! `benches/instructions.rs` counts their instructions): clients, a pipeline over the test
//! services, and a table of established connections per method with the frames that hit them.

use std::net::{IpAddr, Ipv4Addr};

use super::common::*;
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::{Frame, Method, Pipeline, PipelineConfig, PortId, Time, Verdict};

/// Bytes before the frame in a worker's buffer.
pub const HEADROOM: usize = 256;

/// Client `i` of up to 2^15 · 64512 (address from 198.18.128.0/17, port from 1024).
pub fn client(i: u32) -> (IpAddr, u16) {
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (i % 32768));
    (IpAddr::V4(a), 1024 + (i / 32768 % 64512) as u16)
}

/// A pipeline over the test services holding up to `capacity` IPv4 connections.
pub fn pipeline(capacity: u32) -> Pipeline {
    let cfg = PipelineConfig {
        connections: capacity,
        v6_connections: 1024,
        local_addresses: vec![IpAddr::V4(LOCAL4)],
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, &services(), vec![], network()).unwrap()
}

/// `frame` copied into `buf` after the headroom and processed.
pub fn run_one(p: &mut Pipeline, now: Time, port: PortId, frame: &[u8], buf: &mut [u8]) -> Verdict {
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let mut f = Frame::new(buf, HEADROOM, frame.len());
    p.process(now, port, &mut f)
}

/// A fixed pseudo-random permutation (xorshift), the same every run.
pub fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// A pipeline holding `n` established TCP connections of method `m`, the frames that hit them
/// (client ACKs in, and for NAT/FullNAT the backend's ACKs out), each list in random order.
pub fn established(m: Method, n: u32) -> (Pipeline, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut p = pipeline(n + 1024);
    let vport = 80 + u16::from(method_index(m));
    let backend = 11 + method_index(m);
    let now = Time::from_secs(1);
    let mut buf = vec![0u8; HEADROOM + 2048];
    let mut ins = Vec::with_capacity(n as usize);
    let mut outs = Vec::new();
    for i in 0..n {
        let (c, cport) = client(i);
        let syn = frame_in(c, IpAddr::V4(VIP4))
            .tcp(cport, vport)
            .syn()
            .build();
        let v = run_one(&mut p, now, FRONT, &syn, &mut buf);
        assert_eq!(v, Verdict::Tx(BACK));
        let ack = frame_in(c, IpAddr::V4(VIP4))
            .tcp(cport, vport)
            .ack()
            .build();
        assert_eq!(
            run_one(&mut p, now, FRONT, &ack, &mut buf),
            Verdict::Tx(BACK)
        );
        ins.push(ack);
        let reply = match m {
            Method::Nat => Some((c, cport)),
            // The pipeline hands out local ports from 1024, one per connection.
            Method::FullNat => Some((IpAddr::V4(LOCAL4), 1024 + i as u16)),
            _ => None,
        };
        if let Some((dst, dport)) = reply {
            outs.push(
                ip(
                    Pkt::eth(backend_mac(backend), BACK_MAC),
                    IpAddr::V4(backend4(backend)),
                    dst,
                )
                .ttl(64)
                .tcp(8000 + vport, dport)
                .ack()
                .build(),
            );
        }
    }
    shuffle(&mut ins);
    shuffle(&mut outs);
    (p, ins, outs)
}
