//! SYN-flood defences (issue 16, item 2): the embryonic budget and eviction, strict handshake
//! (a bare ACK from the backend does not promote a half-open entry), IPVS's `drop_entry`,
//! `drop_packet` and `secure_tcp` driven by the table's free entries.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use xvs_forwarding::conn::state::tcp;
use xvs_forwarding::defense::DefenseConfig;
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP};
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::{DropReason, Method, Pipeline, PipelineConfig, Time, Verdict};
use xvs_schedulers::SchedFlags;

fn service(method: Method) -> Service {
    Service {
        key: ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: IpAddr::V4(VIP4),
            port: 80,
        },
        scheduler: "rr".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: vec![Backend {
            addr: IpAddr::V4(backend4(11)),
            port: 8080,
            weight: 1,
            method,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }],
    }
}

fn pipeline(method: Method, connections: u32, defense: DefenseConfig) -> Pipeline {
    let cfg = PipelineConfig {
        connections,
        v6_connections: connections,
        local_addresses: vec![IpAddr::V4(LOCAL4)],
        defense,
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, &[service(method)], vec![], network()).unwrap()
}

/// A spoofed SYN from source number `i` (198.18.64.0/18 and a port from `i`).
fn flood_syn(i: u32) -> Vec<u8> {
    let src = Ipv4Addr::from_bits(0xC612_4000 | (i & 0x3fff));
    frame_in(IpAddr::V4(src), IpAddr::V4(VIP4))
        .tcp(1024 + (i >> 14) as u16, 80)
        .syn()
        .build()
}

fn client(sport: u16) -> Pkt {
    frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4)).tcp(sport, 80)
}

fn backend_reply(dport: u16) -> Pkt {
    ip(
        Pkt::eth(backend_mac(11), BACK_MAC),
        IpAddr::V4(backend4(11)),
        IpAddr::V4(CLIENT4),
    )
    .ttl(64)
    .tcp(8080, dport)
}

fn state_of(pipe: &Pipeline, now: Time, cport: u16) -> Option<&'static str> {
    pipe.connections()
        .list(now)
        .find(|l| l.client.ip() == IpAddr::V4(CLIENT4) && l.client.port() == cport)
        .map(|l| l.state)
}

fn ms(n: u64) -> Time {
    Time(n * 1_000_000)
}

#[test]
fn flood_stays_within_the_embryonic_budget_and_legitimate_clients_get_through() {
    let defense = DefenseConfig {
        embryonic_share: 25,
        ..DefenseConfig::default()
    };
    let mut pipe = pipeline(Method::Nat, 400, defense);
    let mut now = 1_000;
    let mut legit_ok = 0;
    for round in 0..20u32 {
        // 500 flood SYNs, then one real client handshake, then 500 more.
        for i in 0..500 {
            let (v, _) = process(&mut pipe, ms(now), FRONT, &flood_syn(round * 1000 + i));
            assert!(matches!(v, Verdict::Tx(_)), "flood SYN {v:?}");
        }
        let sport = 20_000 + round as u16;
        let (v, _) = process(&mut pipe, ms(now), FRONT, &client(sport).syn().build());
        assert!(matches!(v, Verdict::Tx(_)));
        let (v, _) = process(
            &mut pipe,
            ms(now),
            BACK,
            &backend_reply(sport).syn().ack().build(),
        );
        assert!(matches!(v, Verdict::Tx(_)));
        let (v, _) = process(&mut pipe, ms(now + 1), FRONT, &client(sport).ack().build());
        if matches!(v, Verdict::Tx(_)) && state_of(&pipe, ms(now + 1), sport) == Some("ESTABLISHED")
        {
            legit_ok += 1;
        }
        for i in 500..1000 {
            process(&mut pipe, ms(now + 2), FRONT, &flood_syn(round * 1000 + i));
        }
        assert!(pipe.connections().embryonic() <= 100, "budget 25 % of 400");
        now += 10;
    }
    pipe.connections().check().unwrap();
    assert_eq!(legit_ok, 20);
    // Every legitimate connection survived the flood that followed it.
    for round in 0..20u16 {
        assert_eq!(
            state_of(&pipe, ms(now), 20_000 + round),
            Some("ESTABLISHED")
        );
    }
    let c = pipe.counters();
    assert_eq!(c.drops.get(DropReason::TableFull), 0);
    assert_eq!(c.drops.get(DropReason::EmbryonicLimit), 0);
    assert!(
        c.embryonic_evicted >= 20 * 1000 - 100,
        "{}",
        c.embryonic_evicted
    );
    assert_eq!(pipe.connections().embryonic(), 100);
}

#[test]
fn a_full_table_evicts_the_oldest_half_open_entry_for_a_new_syn() {
    // Budget 100 %: only a full table makes room.
    let defense = DefenseConfig {
        embryonic_share: 100,
        ..DefenseConfig::default()
    };
    let mut pipe = pipeline(Method::Nat, 8, defense);
    for i in 0..8 {
        process(&mut pipe, ms(1000 + i as u64), FRONT, &flood_syn(i));
    }
    assert_eq!(pipe.connections().len(), 8);
    let (v, _) = process(&mut pipe, ms(2000), FRONT, &client(5000).syn().build());
    assert!(matches!(v, Verdict::Tx(_)));
    assert_eq!(pipe.counters().embryonic_evicted, 1);
    // The first flood entry went, the others stay.
    let first = Ipv4Addr::from_bits(0xC612_4000);
    let clients: Vec<_> = pipe
        .connections()
        .list(ms(2000))
        .map(|l| l.client)
        .collect();
    assert!(
        !clients.iter().any(|c| c.ip() == IpAddr::V4(first)),
        "{clients:?}"
    );
    assert_eq!(clients.len(), 8);
    pipe.connections().check().unwrap();
}

#[test]
fn a_table_full_of_established_connections_still_drops_new_syns() {
    let mut pipe = pipeline(Method::Nat, 4, DefenseConfig::default());
    for sport in 0..4u16 {
        process(
            &mut pipe,
            ms(1000),
            FRONT,
            &client(6000 + sport).syn().build(),
        );
        process(
            &mut pipe,
            ms(1000),
            FRONT,
            &client(6000 + sport).ack().build(),
        );
    }
    assert_eq!(pipe.connections().embryonic(), 0);
    let (v, _) = process(&mut pipe, ms(1001), FRONT, &flood_syn(1));
    assert_eq!(v, Verdict::Drop(DropReason::TableFull));
    assert_eq!(pipe.counters().embryonic_evicted, 0);
}

#[test]
fn repeated_syn_and_bare_backend_ack_do_not_promote_a_half_open_entry() {
    for (strict, want) in [(true, "SYN_RECV"), (false, "ESTABLISHED")] {
        let defense = DefenseConfig {
            strict_handshake: strict,
            ..DefenseConfig::default()
        };
        let mut pipe = pipeline(Method::Nat, 64, defense);
        let now = ms(5_000);
        process(
            &mut pipe,
            now,
            FRONT,
            &client(7000).syn().seq_ack(1, 0).build(),
        );
        process(
            &mut pipe,
            now,
            BACK,
            &backend_reply(7000).syn().ack().seq_ack(100, 2).build(),
        );
        // The flood repeats the tuple with another ISN; the backend answers with a bare ACK.
        process(
            &mut pipe,
            now,
            FRONT,
            &client(7000).syn().seq_ack(5000, 0).build(),
        );
        assert_eq!(state_of(&pipe, now, 7000), Some("SYN_RECV"));
        process(
            &mut pipe,
            now,
            BACK,
            &backend_reply(7000).ack().seq_ack(101, 2).build(),
        );
        assert_eq!(state_of(&pipe, now, 7000), Some(want), "strict {strict}");
        let exp = pipe
            .connections()
            .list(now)
            .find(|l| l.client.port() == 7000)
            .unwrap()
            .expires_secs;
        assert_eq!(exp, if strict { 60 } else { 900 });
        if strict {
            // The client completing the handshake still establishes it.
            process(
                &mut pipe,
                now,
                FRONT,
                &client(7000).ack().seq_ack(2, 101).build(),
            );
            assert_eq!(state_of(&pipe, now, 7000), Some("ESTABLISHED"));
        }
        pipe.connections().check().unwrap();
    }
}

#[test]
fn drop_entry_deletes_half_open_entries_when_the_table_runs_short() {
    let defense = DefenseConfig {
        drop_entry: 1,
        amemthresh: 100,
        embryonic_share: 100,
        ..DefenseConfig::default()
    };
    let mut pipe = pipeline(Method::Dr, 1024, defense);
    // Plenty free: the defence stays off.
    pipe.housekeeping(ms(1000), 64);
    assert!(!pipe.defense().dropentry);
    for i in 0..1000 {
        process(&mut pipe, ms(1000), FRONT, &flood_syn(i));
    }
    assert_eq!(pipe.connections().embryonic(), 1000);
    // 24 free < 100: on (mode 2); each second scans 1/32 of the slots.
    for s in 0..10u64 {
        for k in 0..4 {
            pipe.housekeeping(ms(2000 + s * 1000 + k), 64);
        }
    }
    // About 32 random slots a second, ~90 % of them SYN_RECV entries, until 100 are free
    // again: then the mode goes back to 1 and the scan stops.
    let dropped = pipe.counters().defense_dropped;
    assert!((76..76 + 33).contains(&dropped), "{dropped}");
    assert_eq!(pipe.defense().drop_entry, 1);
    assert!(!pipe.defense().dropentry);
    assert_eq!(pipe.connections().len() as u64, 1000 - dropped);
    pipe.connections().check().unwrap();
}

#[test]
fn drop_packet_and_secure_tcp_switch_with_table_pressure() {
    let defense = DefenseConfig {
        drop_packet: 1,
        secure_tcp: 1,
        amemthresh: 50,
        embryonic_share: 100,
        ..DefenseConfig::default()
    };
    let mut pipe = pipeline(Method::Nat, 100, defense);
    for i in 0..75 {
        process(&mut pipe, ms(1000), FRONT, &flood_syn(i));
    }
    pipe.housekeeping(ms(1000), 64);
    // 25 free < 50: rate 50 / 25 = 2, one new connection in two dropped.
    assert_eq!(
        (pipe.defense().drop_packet, pipe.defense().secure_tcp),
        (2, 2)
    );
    assert!(pipe.connections().secure_tcp());
    let mut dropped = 0;
    for i in 100..110 {
        let (v, _) = process(&mut pipe, ms(1001), FRONT, &flood_syn(i));
        if v == Verdict::Drop(DropReason::DefenseDropPacket) {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 5);
    // secure_tcp: a client ACK on SYN_RECV no longer establishes (tcp_states_dos: IN ack
    // SR → SR).
    process(&mut pipe, ms(1001), FRONT, &client(9000).syn().build());
    process(&mut pipe, ms(1001), FRONT, &client(9000).ack().build());
    assert_eq!(state_of(&pipe, ms(1001), 9000), Some("SYN_RECV"));
    assert_eq!(tcp::SYN_RECV, 3);
}

fn syn_from(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    frame_in(IpAddr::V4(src), IpAddr::V4(VIP4))
        .tcp(sport, 80)
        .syn()
        .build()
}

fn count(vs: &[Verdict], want: Verdict) -> usize {
    vs.iter().filter(|v| **v == want).count()
}

#[test]
fn service_backend_and_source_rate_limits_drop_and_count() {
    // Service: 10 new connections per second (one worker: all of it).
    let mut svc = service(Method::Nat);
    svc.conn_rate = 10;
    let cfg = PipelineConfig {
        connections: 1024,
        v6_connections: 64,
        ..PipelineConfig::default()
    };
    let mut pipe = Pipeline::new(cfg.clone(), &[svc], vec![], network()).unwrap();
    let src = |i: u32| Ipv4Addr::from_bits(0xC612_4000 + i * 256);
    let vs: Vec<_> = (0..30)
        .map(|i| process(&mut pipe, ms(1000), FRONT, &syn_from(src(i), 5000)).0)
        .collect();
    let tx = vs.iter().filter(|v| matches!(v, Verdict::Tx(_))).count();
    assert_eq!(tx, 10, "{vs:?}");
    assert_eq!(count(&vs, Verdict::Drop(DropReason::ServiceRateLimit)), 20);
    // Half a second later: 5 more.
    let vs: Vec<_> = (30..40)
        .map(|i| process(&mut pipe, ms(1500), FRONT, &syn_from(src(i), 5000)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::ServiceRateLimit)), 5);
    // The service's own refusal counter (`xvs ctl -L --limits`).
    assert_eq!(pipe.service_traffic()[0].rate_limited, 25);
    // A reload that lifts the limit takes effect at once; one that sets another starts a
    // fresh bucket.
    let mut unlimited = service(Method::Nat);
    unlimited.conn_rate = 0;
    pipe.apply(std::slice::from_ref(&unlimited), vec![])
        .unwrap();
    let vs: Vec<_> = (40..60)
        .map(|i| process(&mut pipe, ms(1500), FRONT, &syn_from(src(i), 5000)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::ServiceRateLimit)), 0);
    unlimited.conn_rate = 3;
    pipe.apply(std::slice::from_ref(&unlimited), vec![])
        .unwrap();
    let vs: Vec<_> = (60..70)
        .map(|i| process(&mut pipe, ms(1500), FRONT, &syn_from(src(i), 5000)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::ServiceRateLimit)), 7);
    // Packets of existing connections are never limited.
    let (v, _) = process(
        &mut pipe,
        ms(1500),
        FRONT,
        &frame_in(IpAddr::V4(src(0)), IpAddr::V4(VIP4))
            .tcp(5000, 80)
            .ack()
            .build(),
    );
    assert!(matches!(v, Verdict::Tx(_)));

    // Backend: two backends (rr), the second limited to 4 per second.
    let mut svc = service(Method::Nat);
    let mut b2 = svc.backends[0].clone();
    b2.addr = IpAddr::V4(backend4(12));
    b2.conn_rate = 4;
    svc.backends.push(b2);
    let mut pipe = Pipeline::new(cfg.clone(), &[svc], vec![], network()).unwrap();
    let vs: Vec<_> = (0..20)
        .map(|i| process(&mut pipe, ms(1000), FRONT, &syn_from(src(i), 5000)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::BackendRateLimit)), 6);
    assert_eq!(pipe.connections().len(), 14);
    let refused: Vec<u64> = pipe
        .backend_traffic()
        .iter()
        .map(|t| t.rate_limited)
        .collect();
    assert_eq!(refused.iter().sum::<u64>(), 6);
    assert_eq!(pipe.service_traffic()[0].rate_limited, 0);

    // Source prefix: 3 per second per /24.
    let cfg = PipelineConfig {
        defense: DefenseConfig {
            source_rate: 3,
            ..DefenseConfig::default()
        },
        ..cfg
    };
    let mut pipe = Pipeline::new(cfg, &[service(Method::Nat)], vec![], network()).unwrap();
    let same = |i: u16| syn_from(Ipv4Addr::new(198, 18, 77, 1 + i as u8), 6000 + i);
    let vs: Vec<_> = (0..10)
        .map(|i| process(&mut pipe, ms(1000), FRONT, &same(i)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::SourceRateLimit)), 7);
    let (v, _) = process(
        &mut pipe,
        ms(1000),
        FRONT,
        &syn_from(Ipv4Addr::new(198, 18, 78, 1), 6000),
    );
    assert!(matches!(v, Verdict::Tx(_)), "another /24");
    assert_eq!(pipe.counters().drops.get(DropReason::SourceRateLimit), 7);
    // `xvs ctl --source-rate` at run time: /16 prefixes, 2 per second; then off.
    pipe.set_source_limit(2, 16, 64);
    let vs: Vec<_> = (10..15)
        .map(|i| process(&mut pipe, ms(1000), FRONT, &same(i)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::SourceRateLimit)), 3);
    let (v, _) = process(
        &mut pipe,
        ms(1000),
        FRONT,
        &syn_from(Ipv4Addr::new(198, 18, 79, 1), 6000),
    );
    assert_eq!(v, Verdict::Drop(DropReason::SourceRateLimit), "same /16");
    pipe.set_source_limit(0, 16, 64);
    let vs: Vec<_> = (15..25)
        .map(|i| process(&mut pipe, ms(1000), FRONT, &same(i)).0)
        .collect();
    assert_eq!(count(&vs, Verdict::Drop(DropReason::SourceRateLimit)), 0);
}

#[test]
fn after_evictions_a_dr_client_ack_without_entry_follows_a_table_scheduler() {
    let svc = |method: Method, scheduler: &str| {
        let mut s = service(method);
        s.scheduler = scheduler.into();
        s.backends = (11..14)
            .map(|n| Backend {
                addr: IpAddr::V4(backend4(n)),
                port: 80,
                ..s.backends[0].clone()
            })
            .collect();
        s
    };
    let build = |s: Service, secs: u32| {
        let cfg = PipelineConfig {
            connections: 64,
            v6_connections: 64,
            defense: DefenseConfig {
                embryonic_share: 50,
                stateless_ack_secs: secs,
                ..DefenseConfig::default()
            },
            ..PipelineConfig::default()
        };
        Pipeline::new(cfg, &[s], vec![], network()).unwrap()
    };
    let ack = |sport: u16| client(sport).ack().seq_ack(2, 2).build();
    for (method, scheduler, secs, routed) in [
        (Method::Dr, "mh", 900, true),
        (Method::Tunnel, "sh", 900, true),
        (Method::Dr, "maglev", 900, true),
        (Method::Dr, "rr", 900, false),
        (Method::Nat, "mh", 900, false),
        (Method::Dr, "mh", 0, false),
    ] {
        let what = format!("{method:?} {scheduler} {secs}");
        let mut pipe = build(svc(method, scheduler), secs);
        // No eviction yet: an ACK without entry is dropped, as in IPVS.
        let (v, _) = process(&mut pipe, ms(1000), FRONT, &ack(47000));
        assert_eq!(v, Verdict::Drop(DropReason::NoConnection), "{what}");
        // The client's SYN, then a flood that evicts its half-open entry.
        let (v, first) = process(&mut pipe, ms(1000), FRONT, &client(47001).syn().build());
        assert!(matches!(v, Verdict::Tx(_)), "{what}");
        for i in 0..40 {
            process(&mut pipe, ms(1001), FRONT, &flood_syn(i));
        }
        assert!(pipe.counters().embryonic_evicted > 0, "{what}");
        assert_eq!(state_of(&pipe, ms(1001), 47001), None, "{what}: evicted");
        let before = pipe.connections().len();
        let (v, out) = process(&mut pipe, ms(1050), FRONT, &ack(47001));
        if routed {
            assert!(matches!(v, Verdict::Tx(_)), "{what}: {v:?}");
            // The backend the SYN went to (DR: its MAC; TUN: the outer destination).
            assert_eq!(&out[..6], &first[..6], "{what}");
            if method == Method::Tunnel {
                assert_eq!(&out[30..34], &first[30..34], "{what}");
            }
            assert_eq!(pipe.counters().stateless_acks, 1, "{what}");
            assert_eq!(pipe.connections().len(), before, "{what}: no entry made");
            // A RST is never routed without an entry; and after the window nothing is.
            let rst = client(47001).rst().seq_ack(2, 0).build();
            let (v, _) = process(&mut pipe, ms(1060), FRONT, &rst);
            assert_eq!(v, Verdict::Drop(DropReason::NoConnection), "{what}");
            let late = Time(ms(1001).0 + 901 * 1_000_000_000);
            let (v, _) = process(&mut pipe, late, FRONT, &ack(47001));
            assert_eq!(v, Verdict::Drop(DropReason::NoConnection), "{what}");
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::NoConnection), "{what}");
            assert_eq!(pipe.counters().stateless_acks, 0, "{what}");
        }
    }
}
