//! The pipeline's per-packet shortcuts must not change what it does:
//! * the per-backend next-hop cache follows the neighbour table (a changed MAC is used from the
//!   next packet on, a forgotten neighbour drops with `NoNeighbour`, a re-learnt one forwards),
//!   also when the whole `Network` is replaced;
//! * `ConnTable::get_v4` agrees with `ConnTable::get` for every method, and refuses entries
//!   with an IPv6 address and dead handles; `ConnTable::lookup_v4` agrees with
//!   `ConnTable::lookup` on tables of IPv4, IPv6 and mixed-family entries and templates, for
//!   hits from both directions, misses and expired entries;
//! * `process_batch` gives the same verdicts, frames, counters and connections as `process`
//!   frame by frame, for random mixes of every kind of frame and random batch sizes.
#![cfg(feature = "testkit")]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use proptest::prelude::*;
use xvs_forwarding::conn::{BackendId, ConnConfig, ConnId, ConnTable, NewConn, TemplateKey, Tuple};
use xvs_forwarding::net::Network;
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::Method;
use xvs_forwarding::{DropReason, Frame, Pipeline, PortId, Time, Verdict};

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

/// Frame `k` of a random mix: client `c` (0..8), service port by method, kind: SYN, ACK, FIN,
/// RST, UDP, a backend's reply, ARP, an ICMP error about a reply, a broken IP checksum, a later
/// fragment; IPv4 or IPv6.
fn mixed_frame(c: u8, method: u8, kind: u8, v6: bool) -> (PortId, Vec<u8>) {
    let m = [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat][usize::from(method % 4)];
    let i = method_index(m);
    let (client, vip, backend) = if v6 {
        (
            IpAddr::V6(format!("2001:2:ff::{}", c + 1).parse().unwrap()),
            IpAddr::V6(vip6()),
            IpAddr::V6(backend6(11 + i)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(198, 18, 100, c + 1)),
            IpAddr::V4(VIP4),
            IpAddr::V4(backend4(11 + i)),
        )
    };
    let cport = 40000 + u16::from(c);
    let tport = 80 + u16::from(i);
    let uport = 53 + u16::from(i);
    let bport = |p: u16| {
        if matches!(m, Method::Nat | Method::FullNat) {
            8000 + p
        } else {
            p
        }
    };
    let into = frame_in(client, vip);
    match kind % 10 {
        0 => (FRONT, into.tcp(cport, tport).syn().build()),
        1 => (FRONT, into.tcp(cport, tport).ack().build()),
        2 => (FRONT, into.tcp(cport, tport).fin().build()),
        3 => (FRONT, into.tcp(cport, tport).rst().build()),
        4 => (FRONT, into.udp(cport, uport).payload(&[c; 9]).build()),
        5 => {
            let r = ip(Pkt::eth(backend_mac(11 + i), BACK_MAC), backend, client).ttl(64);
            (BACK, r.tcp(bport(tport), cport).ack().build())
        }
        6 => {
            let mut arp = into.udp(1, 2).build();
            arp[12..14].copy_from_slice(&[0x08, 0x06]);
            (FRONT, arp)
        }
        7 => {
            let reply = Pkt::ip()
                .ip_layer(vip, client)
                .ttl(60)
                .tcp(tport, cport)
                .ack();
            (FRONT, into.icmp_error(3, 3, 0, &reply.build()).build())
        }
        8 => (
            FRONT,
            into.tcp(cport, tport).ack().bad_ip_checksum().build(),
        ),
        _ => (FRONT, into.frag(185, false).udp(cport, uport).build()),
    }
}

fn run_one(p: &mut Pipeline, now: Time, ingress: PortId, input: &[u8]) -> (Verdict, Vec<u8>) {
    process(p, now, ingress, input)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn process_batch_equals_process(
        frames in prop::collection::vec((0u8..8, 0u8..4, 0u8..10, any::<bool>()), 1..150),
        cuts in prop::collection::vec(1usize..70, 1..10),
        short_verdicts in any::<bool>(),
    ) {
        let frames: Vec<(PortId, Vec<u8>)> =
            frames.into_iter().map(|(c, m, k, v6)| mixed_frame(c, m, k, v6)).collect();
        let mut one = pipeline_with(&services(), 1024);
        let mut batch = pipeline_with(&services(), 1024);
        let now = Time::from_secs(5);
        let expect: Vec<(Verdict, Vec<u8>)> =
            frames.iter().map(|(port, f)| run_one(&mut one, now, *port, f)).collect();

        // Cut the sequence into runs of one ingress port and the given sizes.
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < frames.len() {
            let port = frames[at].0;
            let want = *cut.next().unwrap();
            let mut end = at;
            while end < frames.len() && end - at < want && frames[end].0 == port {
                end += 1;
            }
            let mut bufs: Vec<Vec<u8>> = frames[at..end]
                .iter()
                .map(|(_, f)| {
                    let mut b = vec![0u8; HEADROOM + f.len() + 64];
                    b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                    b
                })
                .collect();
            let lens: Vec<usize> = frames[at..end].iter().map(|(_, f)| f.len()).collect();
            let mut fs: Vec<Frame> = bufs
                .iter_mut()
                .zip(&lens)
                .map(|(b, &l)| Frame::new(b, HEADROOM, l))
                .collect();
            // Sometimes fewer verdict slots than frames: only that many are processed.
            let n = if short_verdicts && fs.len() > 1 { fs.len() - 1 } else { fs.len() };
            let mut vs = vec![Verdict::Pass; n];
            batch.process_batch(now, port, &mut fs, &mut vs);
            for (k, (f, v)) in fs.iter().zip(&vs).enumerate() {
                let (ev, ef) = &expect[at + k];
                prop_assert_eq!(v, ev, "frame {}", at + k);
                prop_assert_eq!(f.data(), ef.as_slice(), "frame {}", at + k);
            }
            drop(fs);
            // Frames beyond the verdicts were not processed: process them one by one.
            for k in n..lens.len() {
                let (v, out) = run_one(&mut batch, now, port, &frames[at + k].1);
                prop_assert_eq!(&(v, out), &expect[at + k]);
            }
            at = end;
        }
        prop_assert_eq!(one.counters(), batch.counters());
        prop_assert_eq!(one.service_traffic(), batch.service_traffic());
        prop_assert_eq!(one.backend_traffic(), batch.backend_traffic());
        let a: Vec<_> = one.connections().list(now).collect();
        let b: Vec<_> = batch.connections().list(now).collect();
        prop_assert_eq!(a, b);
        prop_assert_eq!(one.last_decision(), batch.last_decision());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lookup_v4_equals_lookup(
        conns in prop::collection::vec(
            (0u8..4, 0u8..4, 0u8..3, any::<u16>(), 0u8..4, any::<bool>()),
            1..40,
        ),
        probes in prop::collection::vec((0usize..40, 0u8..4, any::<u16>(), 0u64..20), 1..80),
    ) {
        let cfg = ConnConfig { capacity: 64, v6_capacity: 32, backends: 8, seed: 99 };
        let mut a = ConnTable::new(&cfg);
        let mut b = ConnTable::new(&cfg);
        let t0 = Time::from_secs(100);
        let v4 = |x: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 7, x));
        let v6 = |x: u8| -> IpAddr { format!("2001:2:7::{x}").parse().unwrap() };
        let mut made = Vec::new();
        for (i, &(c, m, fam, port, be, udp)) in conns.iter().enumerate() {
            let m = [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat][usize::from(m)];
            // fam 0: all IPv4; 1: all IPv6; 2: IPv4 service, IPv6 tunnel backend.
            let (client, vaddr, daddr) = match fam {
                0 => (v4(c), v4(100), v4(20 + be)),
                1 => (v6(c), v6(100), v6(20 + be)),
                _ => (v4(c), v4(100), v6(20 + be)),
            };
            let m = if fam == 2 { Method::Tunnel } else { m };
            let local = (m == Method::FullNat).then(|| {
                (if fam == 1 { v6(200) } else { v4(200) }, 5000 + i as u16)
            });
            let n = NewConn {
                proto: if udp { 17 } else { 6 },
                client,
                cport: port,
                vaddr,
                vport: 80,
                daddr,
                dport: 8080,
                local,
                backend: BackendId(u32::from(be)),
                service: 0,
                method: m,
                control: None,
            };
            let at = Time::from_secs(100 + (i as u64 % 5));
            // Both tables are asked (each expires what is due on lookup), so that neither
            // stores a duplicate tuple beside an expired entry the other has already removed.
            let t = Tuple { proto: n.proto, src: client, sport: port, dst: vaddr, dport: 80 };
            let (fa, fb) = (a.lookup(&t, at), b.lookup(&t, at));
            prop_assert_eq!(fa, fb);
            if fa.is_none() {
                prop_assert_eq!(a.insert(&n, at).is_some(), b.insert(&n, at).is_some());
                made.push(n);
            }
            if i % 7 == 0 {
                // A template with the same addresses: never returned by either lookup.
                let k = TemplateKey { proto: n.proto, client, vaddr, vport: 80 };
                let _ = a.insert_template(&k, n.backend, daddr, 8080, 0, m, 300, at);
                let _ = b.insert_template(&k, n.backend, daddr, 8080, 0, m, 300, at);
            }
        }
        // New connections live 3 s: later probes see some of them expired.
        for &(k, dir, junk, dt) in &probes {
            let Some(n) = made.get(k % made.len().max(1)) else { continue };
            let now = Time(t0.0 + dt * 500_000_000);
            let (laddr, lport) = n.local.unwrap_or((n.client, n.cport));
            let t = match dir {
                0 => Tuple { proto: n.proto, src: n.client, sport: n.cport, dst: n.vaddr, dport: n.vport },
                1 => Tuple { proto: n.proto, src: n.daddr, sport: n.dport, dst: laddr, dport: lport },
                2 => Tuple { proto: n.proto, src: n.client, sport: junk, dst: n.vaddr, dport: n.vport },
                _ => Tuple { proto: 23 - n.proto, src: n.client, sport: n.cport, dst: n.vaddr, dport: n.vport },
            };
            let want = a.lookup(&t, now);
            let got = match (t.src, t.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    b.lookup_v4(t.proto, s.to_bits(), t.sport, d.to_bits(), t.dport, now)
                }
                _ => b.lookup(&t, now),
            };
            prop_assert_eq!(got, want);
            prop_assert_eq!(a.len(), b.len());
        }
        a.check().map_err(TestCaseError::fail)?;
        b.check().map_err(TestCaseError::fail)?;
    }
}
