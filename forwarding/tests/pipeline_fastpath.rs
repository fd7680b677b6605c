//! The pipeline's per-packet shortcuts must not change what it does:
//! * the per-backend next-hop cache follows the neighbour table (a changed MAC is used from the
//!   next packet on, a forgotten neighbour drops with `NoNeighbour`, a re-learnt one forwards),
//!   also when the whole `Network` is replaced;
//! * `ConnTable::get_v4` agrees with `ConnTable::get` for every method, and refuses entries
//!   with an IPv6 address and dead handles; `ConnTable::lookup_v4` agrees with
//!   `ConnTable::lookup` on tables of IPv4, IPv6 and mixed-family entries and templates, for
//!   hits from both directions, misses and expired entries;
//! * `process_batch` gives the same verdicts, frames, counters and connections as `process`
//!   frame by frame, for random mixes of every kind of frame and random batch sizes;
//! * the established-flow path (`pipeline/fast.rs`) and the full pipeline
//!   (`Pipeline::set_fast_path(false)`) give the same frames, verdicts, decisions, counters,
//!   sync messages and connection state (`fast_path_equivalence`); a packet of a removed
//!   backend's connection leaves the fast path.
#![cfg(feature = "testkit")]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use proptest::prelude::*;
use xvs_forwarding::conn::{BackendId, ConnConfig, ConnId, ConnTable, NewConn, TemplateKey, Tuple};
use xvs_forwarding::net::Network;
use xvs_forwarding::pipeline::RemovedBackends;
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
        let ip = |x: u32| IpAddr::V4(Ipv4Addr::from_bits(x));
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
        prefetch in any::<bool>(),
    ) {
        let frames: Vec<(PortId, Vec<u8>)> =
            frames.into_iter().map(|(c, m, k, v6)| mixed_frame(c, m, k, v6)).collect();
        let mut one = pipeline_with(&services(), 1024);
        let mut batch = pipeline_with(&services(), 1024);
        // The prefetching passes (for large tables) or frame by frame.
        batch.set_batch_prefetch_from(if prefetch { 0 } else { u32::MAX });
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

/// One step of [`fast_path_equivalence`]: frame `kind` of client `c` to the service of method
/// `m`, with a variant byte for what varies inside a kind, or (kinds ≥ 40) a change of the
/// pipelines' state. IPv4 mostly; `v6` sends the IPv6 version of the same frame.
fn equivalence_frame(c: u8, m: u8, kind: u8, variant: u8, v6: bool) -> (PortId, Vec<u8>) {
    // IPv6 for the plain kinds only (the others are IPv4 header cases).
    let v6 = v6 && kind % 24 <= 16;
    let m = [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat][usize::from(m % 4)];
    let i = method_index(m);
    let (client, vip, backend, local) = if v6 {
        (
            IpAddr::V6(format!("2001:2:ff::{}", c + 1).parse().unwrap()),
            IpAddr::V6(vip6()),
            IpAddr::V6(backend6(11 + i)),
            IpAddr::V6(local6()),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(198, 18, 100, c + 1)),
            IpAddr::V4(VIP4),
            IpAddr::V4(backend4(11 + i)),
            IpAddr::V4(LOCAL4),
        )
    };
    let cport = 40000 + u16::from(c);
    // Variant bit 7: the persistent NAT services (TCP 90, UDP 70, backend port 0) instead.
    let persistent = variant & 0x80 != 0 && m == Method::Nat;
    let (tport, uport) = if persistent {
        (90, 70)
    } else {
        (80 + u16::from(i), 53 + u16::from(i))
    };
    let nat = matches!(m, Method::Nat | Method::FullNat) && !persistent;
    let bport = |p: u16| if nat { 8000 + p } else { p };
    // Replies go to the client (NAT, DR, TUN) or to a FullNAT local port (handed out in
    // turn from 1024: the variant picks one).
    let (rdst, rport) = if m == Method::FullNat {
        (local, 1024 + u16::from(variant % 12))
    } else {
        (client, cport)
    };
    let into = frame_in(client, vip);
    let reply = || ip(Pkt::eth(backend_mac(11 + i), BACK_MAC), backend, rdst).ttl(64);
    let ack = || into.clone().tcp(cport, tport).ack();
    match kind % 24 {
        0 | 1 => (FRONT, into.tcp(cport, tport).syn().build()),
        2..=5 => (FRONT, ack().payload(&[variant; 7]).build()),
        6 => (FRONT, into.tcp(cport, tport).flags(variant).build()),
        7 => (FRONT, into.tcp(cport, tport).fin().ack().build()),
        8 => (FRONT, into.tcp(cport, tport).rst().build()),
        // UDP payloads of 9 to 24 bytes: frames shorter and longer than a TCP header's end.
        9 | 10 => (
            FRONT,
            into.udp(cport, uport)
                .payload(&vec![c; 9 + usize::from(variant % 16)])
                .build(),
        ),
        11 => (FRONT, into.udp(cport, uport).udp_zero_checksum().build()),
        12..=14 => (BACK, reply().tcp(bport(tport), rport).ack().build()),
        15 => (
            BACK,
            reply().tcp(bport(tport), rport).flags(variant).build(),
        ),
        16 => (
            BACK,
            reply()
                .udp(bport(uport), rport)
                .payload(&vec![1; 3 + usize::from(variant % 16)])
                .build(),
        ),
        17 => {
            // TTL 0, 1, 2 toward the backend or the client.
            let ttl = variant % 3;
            if variant & 4 == 0 {
                (FRONT, ack().build_with_ttl(ttl))
            } else {
                (
                    BACK,
                    reply().tcp(bport(tport), rport).ack().build_with_ttl(ttl),
                )
            }
        }
        18 => {
            // Not addressed to this port: broadcast, multicast, another host.
            let dst =
                [[0xff; 6], [1, 0, 0x5e, 0, 0, 1], [2, 0, 0, 0, 9, 9]][usize::from(variant % 3)];
            let mut f = ack().build();
            f[..6].copy_from_slice(&dst);
            (FRONT, f)
        }
        19 => {
            let p = ip(
                Pkt::eth(GW_MAC, FRONT_MAC).vlan(u16::from(variant % 3)),
                client,
                vip,
            );
            (FRONT, p.ttl(64).tcp(cport, tport).ack().build())
        }
        20 => (
            FRONT,
            into.ipv4_options(&[1, 1, 1, 0])
                .tcp(cport, tport)
                .ack()
                .build(),
        ),
        21 => (FRONT, ack().bad_ip_checksum().build()),
        22 => match variant % 3 {
            // A first fragment, Ethernet padding, a packet over the MTU (with and without DF).
            0 => (FRONT, into.frag(0, true).tcp(cport, tport).ack().build()),
            1 => {
                let mut f = ack().build();
                f.extend_from_slice(&[0xee; 6]);
                (FRONT, f)
            }
            _ => (
                FRONT,
                ack().df(variant & 8 == 0).payload(&[0; 1480]).build(),
            ),
        },
        _ => {
            let about = Pkt::ip()
                .ip_layer(vip, client)
                .ttl(60)
                .tcp(tport, cport)
                .ack();
            (FRONT, into.icmp_error(3, 3, 0, &about.build()).build())
        }
    }
}

/// The common services and two persistent NAT services (TCP 90, UDP 70; backend port 0):
/// their connections have templates (a UDP reply marks its template ASSURED).
fn equivalence_services() -> Vec<xvs_forwarding::service::Service> {
    use xvs_forwarding::service::{
        Backend, Persistence, Service, ServiceKey, PROTO_TCP, PROTO_UDP,
    };
    let mut s = services();
    for (proto, port) in [(PROTO_TCP, 90), (PROTO_UDP, 70)] {
        s.push(Service {
            key: ServiceKey::Addr {
                proto,
                addr: IpAddr::V4(VIP4),
                port,
            },
            scheduler: "rr".into(),
            sched_flags: xvs_schedulers::SchedFlags::NONE,
            persistence: Some(Persistence {
                timeout: 300,
                prefix_len: 32,
            }),
            one_packet: false,
            synproxy: false,
            conn_rate: 0,
            backends: vec![Backend {
                addr: IpAddr::V4(backend4(11)),
                port: 0,
                weight: 1,
                method: Method::Nat,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            }],
        });
    }
    s
}

trait BuildWithTtl {
    fn build_with_ttl(&self, ttl: u8) -> Vec<u8>;
}

impl BuildWithTtl for Pkt {
    fn build_with_ttl(&self, ttl: u8) -> Vec<u8> {
        self.clone().ttl(ttl).build()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The established-flow path (`pipeline/fast.rs`) against the full pipeline: the same
    /// verdict, frame, decision and ICMP answer for every frame, and the same counters,
    /// traffic, sync messages and connections (their state and expiry) at the end, over
    /// random sequences of handshakes, data, replies, closes, UDP, and frames each of the
    /// full path's checks catches (L2, VLAN, options, checksums, TTL, MTU, fragments, ICMP),
    /// on plain and persistent services (templates), with time moving (entries expire),
    /// housekeeping, changed timeouts, a removed backend, a forgotten neighbour and a sync
    /// master.
    #[test]
    fn fast_path_equivalence(
        steps in prop::collection::vec(
            (0u8..3, 0u8..4, 0u8..64, any::<u8>(), prop::bool::weighted(0.1), 0u8..16),
            1..200,
        ),
        sync in any::<bool>(),
        drain in prop_oneof![Just(RemovedBackends::Drain), Just(RemovedBackends::Drop), Just(RemovedBackends::Expire)],
    ) {
        let make = |fast: bool| {
            let cfg = xvs_forwarding::PipelineConfig {
                connections: 256,
                v6_connections: 256,
                local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
                removed_backends: drain,
                ..xvs_forwarding::PipelineConfig::default()
            };
            let mut p = Pipeline::new(cfg, &equivalence_services(), vec![], network()).unwrap();
            p.set_fast_path(fast);
            if sync {
                p.set_sync_master(Some(Default::default()), 1 << 16);
            }
            p
        };
        let mut fast = make(true);
        let mut full = make(false);
        let mut now = Time::from_secs(10);
        for (k, &(c, m, kind, variant, v6, dt)) in steps.iter().enumerate() {
            // Time mostly stands; sometimes it moves by 1 s, 10 s, 60 s or 400 s (past every
            // TCP / UDP timeout but ESTABLISHED's).
            now.0 += [1, 10, 60, 400].get(usize::from(dt).wrapping_sub(12)).unwrap_or(&0)
                * 1_000_000_000;
            match kind {
                40 | 41 => {
                    prop_assert_eq!(fast.housekeeping(now, 64), full.housekeeping(now, 64));
                    prop_assert_eq!(fast.connections().len(), full.connections().len());
                    continue;
                }
                42 => {
                    // Other timeouts (shorter ones: a packet's timer may move earlier).
                    let t = [2, 30, 900, 3600, 10][usize::from(variant % 5)];
                    fast.set_timeouts(t, t, t);
                    full.set_timeouts(t, t, t);
                    continue;
                }
                43 => {
                    // The backend of one method goes away (then comes back at 44).
                    let mut s = equivalence_services();
                    let i = usize::from(m % 4);
                    s[i].backends.clear();
                    s[4 + i].backends.clear();
                    fast.apply(&s, vec![]).unwrap();
                    full.apply(&s, vec![]).unwrap();
                    continue;
                }
                44 => {
                    fast.apply(&equivalence_services(), vec![]).unwrap();
                    full.apply(&equivalence_services(), vec![]).unwrap();
                    continue;
                }
                45 => {
                    let b = IpAddr::V4(backend4(11 + m % 4));
                    if variant & 1 == 0 {
                        fast.network_mut().remove_neighbour(b);
                        full.network_mut().remove_neighbour(b);
                    } else {
                        fast.network_mut().set_neighbour(b, backend_mac(11 + m % 4));
                        full.network_mut().set_neighbour(b, backend_mac(11 + m % 4));
                    }
                    continue;
                }
                46 | 47 => {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    fast.drain_sync(&mut a);
                    full.drain_sync(&mut b);
                    prop_assert_eq!(a, b, "step {}", k);
                    continue;
                }
                _ => {}
            }
            // Kinds 0..24 are every frame kind; 24..40 and 48.. the steady ones again.
            let kind = if kind < 24 { kind } else { [2, 3, 4, 5, 9, 10, 12, 13, 14, 16][usize::from(kind % 10)] };
            let (port, frame) = equivalence_frame(c, m, kind, variant, v6);
            let got = process(&mut fast, now, port, &frame);
            let want = process(&mut full, now, port, &frame);
            prop_assert_eq!(&got, &want, "step {} kind {} variant {}", k, kind % 24, variant);
            prop_assert_eq!(fast.last_decision(), full.last_decision(), "step {}", k);
            prop_assert_eq!(fast.last_answer(), full.last_answer(), "step {}", k);
        }
        prop_assert_eq!(fast.counters(), full.counters());
        prop_assert_eq!(fast.service_traffic(), full.service_traffic());
        prop_assert_eq!(fast.backend_traffic(), full.backend_traffic());
        prop_assert_eq!(fast.sync_counters(), full.sync_counters());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fast.drain_sync(&mut a);
        full.drain_sync(&mut b);
        prop_assert_eq!(a, b);
        let a: Vec<_> = fast.connections().list(now).collect();
        let b: Vec<_> = full.connections().list(now).collect();
        prop_assert_eq!(a, b);
        for id in 0..256 {
            let id = ConnId(id);
            prop_assert_eq!(fast.connections().get(id), full.connections().get(id));
            prop_assert_eq!(fast.connections().expires_at(id), full.connections().expires_at(id));
        }
        prop_assert_eq!(fast.connections().embryonic(), full.connections().embryonic());
        prop_assert_eq!(fast.connections().len(), full.connections().len());
        // The timer wheel: the same entries expire at the same sweeps from here on (a
        // second at a time first: a timer that moved earlier must have moved in the wheel).
        for step in 0..16 {
            now.0 += if step < 8 { 1_000_000_000 } else { 300_000_000_000 };
            prop_assert_eq!(fast.housekeeping(now, 1 << 20), full.housekeeping(now, 1 << 20));
            prop_assert_eq!(fast.connections().len(), full.connections().len());
        }
        fast.connections().check().map_err(TestCaseError::fail)?;
    }
}

/// A steady packet of a connection whose backend was removed takes the full path: with
/// `RemovedBackends::Drop` it is dropped, as without the established-flow path.
#[test]
fn removed_backend_leaves_the_fast_path() {
    let cfg = xvs_forwarding::PipelineConfig {
        connections: 256,
        local_addresses: vec![IpAddr::V4(LOCAL4)],
        removed_backends: RemovedBackends::Drop,
        ..xvs_forwarding::PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, &services(), vec![], network()).unwrap();
    let now = Time::from_secs(1);
    let ack = established_nat(&mut p, now);
    assert_eq!(process(&mut p, now, FRONT, &ack).0, Verdict::Tx(BACK));
    let (v, _) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK), "established");
    let mut s = services();
    s[0].backends.clear();
    p.apply(&s, vec![]).unwrap();
    let (v, _) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Drop(DropReason::BackendGone));
}

/// Every method's established connection, then frames with TTL 0, 1 and 2 toward the backend
/// and toward the client: the established-flow path leaves TTL expiry to the full pipeline
/// with the frame unchanged (same frames, verdicts, answers and counters with it on and off).
/// `fast_path_equivalence` draws these frames too, but rarely on an established connection.
#[test]
fn ttl_expiry_leaves_the_fast_path() {
    let make = |fast: bool| {
        let cfg = xvs_forwarding::PipelineConfig {
            connections: 256,
            v6_connections: 256,
            local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
            ..xvs_forwarding::PipelineConfig::default()
        };
        let mut p = Pipeline::new(cfg, &equivalence_services(), vec![], network()).unwrap();
        p.set_fast_path(fast);
        p
    };
    let (mut fast, mut full) = (make(true), make(false));
    let now = Time::from_secs(10);
    for m in 0..4u8 {
        // SYN, ACK (established), then TTL 0 / 1 / 2 inbound (variants 0-2) and in reply
        // (variants 4-6, FullNAT toward its first local port), then an ACK again.
        let steps = [
            (0, 0),
            (2, 0),
            (17, 0),
            (17, 1),
            (17, 2),
            (17, 4),
            (17, 5),
            (17, 6),
            (2, 0),
        ];
        for (kind, variant) in steps {
            let (port, frame) = equivalence_frame(0, m, kind, variant, false);
            let got = process(&mut fast, now, port, &frame);
            let want = process(&mut full, now, port, &frame);
            assert_eq!(got, want, "method {m} kind {kind} variant {variant}");
            assert_eq!(
                fast.last_answer(),
                full.last_answer(),
                "method {m} kind {kind}"
            );
        }
    }
    assert_eq!(fast.counters(), full.counters());
    assert_eq!(fast.service_traffic(), full.service_traffic());
    assert_eq!(fast.backend_traffic(), full.backend_traffic());
}
