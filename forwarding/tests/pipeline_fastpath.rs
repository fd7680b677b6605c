//! The pipeline's per-packet shortcuts must not change what it does:
//! * the per-backend next-hop cache follows the neighbour table (a changed MAC is used from the
//!   next packet on, a forgotten neighbour drops with `NoNeighbour`, a re-learnt one forwards),
//!   also when the whole `Network` is replaced;
//! * `ConnTable::get_v4` agrees with `ConnTable::get` for every method, and refuses entries
//!   with an IPv6 address and dead handles.
#![cfg(feature = "testkit")]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use xvs_forwarding::conn::{BackendId, ConnConfig, ConnId, ConnTable, NewConn};
use xvs_forwarding::net::Network;
use xvs_forwarding::Method;
use xvs_forwarding::{DropReason, Pipeline, Time, Verdict};

fn established_nat(p: &mut Pipeline, now: Time) -> Vec<u8> {
    let c = IpAddr::V4(CLIENT4);
    let syn = frame_in(c, IpAddr::V4(VIP4)).tcp(40000, 80).syn().build();
    assert_eq!(process(p, now, FRONT, &syn).0, Verdict::Tx(BACK));
    frame_in(c, IpAddr::V4(VIP4)).tcp(40000, 80).ack().build()
}

#[test]
fn hop_cache_follows_the_neighbour_table() {
    let mut p = pipeline_with(&services(), 1024);
    let now = Time::from_secs(1);
    let ack = established_nat(&mut p, now);
    let backend = IpAddr::V4(backend4(11));
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &backend_mac(11));

    // The backend moves to another MAC: the next packet goes there.
    let moved = [2, 0, 0, 0, 9, 9];
    p.network_mut().set_neighbour(backend, moved);
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &moved);

    // Forgotten: dropped and counted, not sent to the old MAC.
    p.network_mut().remove_neighbour(backend);
    let (v, _) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));

    // Learnt again.
    p.network_mut().set_neighbour(backend, backend_mac(11));
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &backend_mac(11));

    // A whole new network without that neighbour.
    let mut bare = network();
    bare.remove_neighbour(backend);
    *p.network_mut() = bare;
    let (v, _) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));
    *p.network_mut() = network();
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &backend_mac(11));
    // A clone shares the generation but not later changes.
    let n: Network = p.network().clone();
    assert_eq!(n.generation(), p.network().generation());
}

#[test]
fn get_v4_agrees_with_get() {
    let mut t = ConnTable::new(&ConnConfig {
        capacity: 64,
        v6_capacity: 8,
        backends: 8,
        seed: 7,
    });
    let now = Time::from_secs(1);
    let a = |x: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 9, x));
    for (i, m) in [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat]
        .into_iter()
        .enumerate()
    {
        let i = i as u8;
        let c = NewConn {
            proto: 6,
            client: a(10 + i),
            cport: 40000 + u16::from(i),
            vaddr: a(100),
            vport: 80,
            daddr: a(20 + i),
            dport: 8080,
            local: (m == Method::FullNat).then_some((a(200), 5000)),
            backend: BackendId(u32::from(i)),
            service: 3 + u32::from(i),
            method: m,
            control: None,
        };
        let id = t.insert(&c, now).unwrap();
        let g = t.get(id).unwrap();
        let f = t.get_v4(id).unwrap();
        let ip = |x: Ipv4Addr| IpAddr::V4(x);
        assert_eq!(
            (ip(f.addrs[0]), ip(f.addrs[1]), ip(f.addrs[2])),
            (g.client, g.vaddr, g.daddr)
        );
        assert_eq!(&f.ports[..3], &[g.cport, g.vport, g.dport]);
        let local = (m == Method::FullNat).then(|| (ip(f.addrs[3]), f.ports[3]));
        assert_eq!(local, g.local);
        assert_eq!(
            (f.backend, f.service, f.method),
            (g.backend, g.service, g.method)
        );
        assert!(t.expire_now(id, now));
        assert_eq!(t.get_v4(id), None, "dead handle");
    }
    // IPv6 anywhere: the caller must use `get`.
    let c = NewConn {
        proto: 17,
        client: a(1),
        cport: 1,
        vaddr: a(100),
        vport: 53,
        daddr: "2001:2:1::1".parse().unwrap(),
        dport: 53,
        local: None,
        backend: BackendId(1),
        service: 0,
        method: Method::Tunnel,
        control: None,
    };
    let id = t.insert(&c, now).unwrap();
    assert!(t.get(id).is_some());
    assert_eq!(t.get_v4(id), None);
    assert_eq!(t.get_v4(ConnId(1 << 20)), None, "out of range");
}
