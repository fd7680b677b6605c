//! Behaviour of the pipeline over sequences of packets: the TCP state machine and counts as a
//! connection opens and closes, expiry, scheduling spread, persistence, one-packet scheduling,
//! port reuse, a full table.

mod common;

use std::net::IpAddr;

use common::*;
use xvs_forwarding::conn::state::tcp;
use xvs_forwarding::service::{Backend, Persistence, Service, ServiceKey, PROTO_TCP, PROTO_UDP};
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::{BackendId, DropReason, Method, Pipeline, Time, Verdict};
use xvs_schedulers::{Load, SchedFlags};

fn service(proto: u8, port: u16, scheduler: &str, backends: &[(u8, u32, Method)]) -> Service {
    Service {
        key: ServiceKey::Addr {
            proto,
            addr: IpAddr::V4(VIP4),
            port,
        },
        scheduler: scheduler.into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: backends
            .iter()
            .map(|&(n, weight, method)| Backend {
                addr: IpAddr::V4(backend4(n)),
                port: port + 8000,
                weight,
                method,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            })
            .collect(),
    }
}

fn client_pkt(sport: u16, dport: u16) -> Pkt {
    frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4)).tcp(sport, dport)
}

fn reply_pkt(backend: u8, sport: u16, dport: u16) -> Pkt {
    ip(
        Pkt::eth(backend_mac(backend), BACK_MAC),
        IpAddr::V4(backend4(backend)),
        IpAddr::V4(CLIENT4),
    )
    .ttl(64)
    .tcp(sport, dport)
}

fn state_of(pipe: &Pipeline, now: Time, cport: u16) -> Option<&'static str> {
    pipe.connections()
        .list(now)
        .find(|l| l.client.port() == cport && !l.template)
        .map(|l| l.state)
}

fn t(s: u64) -> Time {
    Time::from_secs(s)
}

#[test]
fn nat_connection_walks_the_ipvs_state_machine_and_counts() {
    let mut pipe = pipeline_with(&[service(PROTO_TCP, 80, "rr", &[(11, 1, Method::Nat)])], 64);
    let b = BackendId(0);
    let steps: &[(&str, bool, Pkt, &str, u32, u32)] = &[
        // (what, from client?, packet, state after, active, inactive)
        ("SYN", true, client_pkt(5000, 80).syn(), "SYN_RECV", 0, 1),
        (
            "SYN-ACK",
            false,
            reply_pkt(11, 8080, 5000).syn().ack(),
            "SYN_RECV",
            0,
            1,
        ),
        ("ACK", true, client_pkt(5000, 80).ack(), "ESTABLISHED", 1, 0),
        (
            "data",
            false,
            reply_pkt(11, 8080, 5000).ack().psh(),
            "ESTABLISHED",
            1,
            0,
        ),
        (
            "client FIN",
            true,
            client_pkt(5000, 80).fin().ack(),
            "CLOSE_WAIT",
            0,
            1,
        ),
        (
            "server FIN",
            false,
            reply_pkt(11, 8080, 5000).fin().ack(),
            "TIME_WAIT",
            0,
            1,
        ),
        (
            "last ACK",
            true,
            client_pkt(5000, 80).ack(),
            "TIME_WAIT",
            0,
            1,
        ),
    ];
    for (i, (what, from_client, pkt, state, active, inactive)) in steps.iter().enumerate() {
        let ingress = if *from_client { FRONT } else { BACK };
        let now = t(10 + i as u64);
        let (v, _) = process(&mut pipe, now, ingress, &pkt.build());
        assert!(matches!(v, Verdict::Tx(_)), "{what}: {v:?}");
        assert_eq!(state_of(&pipe, now, 5000), Some(*state), "{what}");
        let counts = pipe.connections().counts();
        assert_eq!(
            (counts.active(b), counts.inactive(b)),
            (*active, *inactive),
            "{what}"
        );
    }
    // TIME_WAIT lasts 120 s: still there at +119, gone at +121 and the count released.
    let last = t(16);
    pipe.housekeeping(Time(last.0 + 119_000_000_000), 1 << 20);
    assert_eq!(
        state_of(&pipe, Time(last.0 + 119_000_000_000), 5000),
        Some("TIME_WAIT")
    );
    pipe.housekeeping(Time(last.0 + 121_000_000_000), 1 << 20);
    assert_eq!(pipe.connections().len(), 0);
    assert_eq!(pipe.connections().counts().inactive(b), 0);
}

#[test]
fn dr_uses_the_input_only_table() {
    let mut pipe = pipeline_with(&[service(PROTO_TCP, 81, "rr", &[(12, 1, Method::Dr)])], 64);
    for (i, (pkt, state)) in [
        (client_pkt(5001, 81).syn(), "SYN_RECV"),
        (client_pkt(5001, 81).ack(), "ESTABLISHED"),
        // Input-only: a client FIN on an established DR entry goes to FIN_WAIT (IN would be
        // CLOSE_WAIT).
        (client_pkt(5001, 81).fin().ack(), "FIN_WAIT"),
    ]
    .into_iter()
    .enumerate()
    {
        let (v, _) = process(&mut pipe, t(i as u64), FRONT, &pkt.build());
        assert_eq!(v, Verdict::Tx(BACK));
        assert_eq!(state_of(&pipe, t(i as u64), 5001), Some(state));
    }
}

#[test]
fn wrr_spreads_new_connections_by_weight() {
    let mut pipe = pipeline_with(
        &[service(
            PROTO_TCP,
            80,
            "wrr",
            &[
                (11, 1, Method::Nat),
                (12, 2, Method::Nat),
                (13, 3, Method::Nat),
            ],
        )],
        4096,
    );
    let mut per = [0u32; 3];
    for i in 0..600u16 {
        let (v, _) = process(
            &mut pipe,
            t(1),
            FRONT,
            &client_pkt(10000 + i, 80).syn().build(),
        );
        assert_eq!(v, Verdict::Tx(BACK));
        per[pipe.last_decision().unwrap().backend.0 as usize] += 1;
    }
    assert_eq!(per, [100, 200, 300]);
}

#[test]
fn persistence_keeps_a_client_on_its_backend_until_the_template_expires() {
    let mut svc = service(
        PROTO_TCP,
        80,
        "rr",
        &[
            (11, 1, Method::Nat),
            (12, 1, Method::Nat),
            (13, 1, Method::Nat),
        ],
    );
    svc.persistence = Some(Persistence {
        timeout: 300,
        prefix_len: 24,
    });
    let mut pipe = pipeline_with(&[svc], 4096);
    let mut chosen = Vec::new();
    for i in 0..10u16 {
        // Different source ports, and a neighbour in the same /24: one template.
        let src = if i % 2 == 0 {
            CLIENT4
        } else {
            std::net::Ipv4Addr::new(198, 18, 100, 77)
        };
        let pkt = frame_in(IpAddr::V4(src), IpAddr::V4(VIP4))
            .tcp(20000 + i, 80)
            .syn();
        let (v, _) = process(&mut pipe, t(1), FRONT, &pkt.build());
        assert_eq!(v, Verdict::Tx(BACK));
        chosen.push(pipe.last_decision().unwrap().backend);
    }
    assert!(chosen.iter().all(|&b| b == chosen[0]), "{chosen:?}");
    assert_eq!(pipe.connections().counts().persistent(chosen[0]), 1);
    // The connections (SYN_RECV, 60 s) go first; the template then lives its 300 s from its
    // last use and goes too.
    pipe.housekeeping(t(62), 1 << 20);
    assert_eq!(pipe.connections().len(), 1, "only the template is left");
    pipe.housekeeping(t(302), 1 << 20);
    assert_eq!(pipe.connections().len(), 0);
    // A new client now starts a new template; rr moves on.
    let (v, _) = process(
        &mut pipe,
        t(400),
        FRONT,
        &client_pkt(30000, 80).syn().build(),
    );
    assert_eq!(v, Verdict::Tx(BACK));
    assert_ne!(pipe.last_decision().unwrap().backend, chosen[0]);
}

#[test]
fn one_packet_scheduling_keeps_no_entry() {
    let mut svc = service(
        PROTO_UDP,
        53,
        "rr",
        &[(11, 1, Method::Nat), (12, 1, Method::Nat)],
    );
    svc.one_packet = true;
    let mut pipe = pipeline_with(&[svc], 64);
    let mut chosen = Vec::new();
    for _ in 0..4 {
        let pkt = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
            .udp(5353, 53)
            .payload(b"q");
        let (v, _) = process(&mut pipe, t(1), FRONT, &pkt.build());
        assert_eq!(v, Verdict::Tx(BACK));
        chosen.push(pipe.last_decision().unwrap().backend.0);
    }
    assert_eq!(
        chosen,
        [1, 0, 1, 0],
        "the same flow is scheduled datagram by datagram"
    );
    assert_eq!(pipe.connections().len(), 0);
}

#[test]
fn syn_on_time_wait_is_rescheduled() {
    let mut pipe = pipeline_with(
        &[service(
            PROTO_TCP,
            80,
            "rr",
            &[(11, 1, Method::Nat), (12, 1, Method::Nat)],
        )],
        64,
    );
    let open = |pipe: &mut Pipeline, now| {
        let (v, _) = process(pipe, now, FRONT, &client_pkt(6000, 80).syn().build());
        assert_eq!(v, Verdict::Tx(BACK));
        pipe.last_decision().unwrap().backend
    };
    let first = open(&mut pipe, t(1));
    let b = first.0 as u8 + 11;
    let bport = 8080;
    for (pkt, ingress) in [
        (client_pkt(6000, 80).ack(), FRONT),
        (client_pkt(6000, 80).fin().ack(), FRONT),
        (reply_pkt(b, bport, 6000).fin().ack(), BACK),
    ] {
        process(&mut pipe, t(2), ingress, &pkt.build());
    }
    assert_eq!(state_of(&pipe, t(2), 6000), Some("TIME_WAIT"));
    let second = open(&mut pipe, t(3));
    assert_ne!(first, second, "rescheduled, not stuck to the closed entry");
    assert_eq!(state_of(&pipe, t(3), 6000), Some("SYN_RECV"));
    assert_eq!(tcp::SYN_RECV, 3);
}

#[test]
fn a_full_table_drops_and_counts() {
    // Established connections fill the table (half-open ones would be evicted for new SYNs:
    // the embryonic budget, tests/defense.rs).
    let mut pipe = pipeline_with(&[service(PROTO_TCP, 80, "rr", &[(11, 1, Method::Nat)])], 4);
    let mut verdicts = Vec::new();
    for i in 0..6u16 {
        let (v, _) = process(
            &mut pipe,
            t(1),
            FRONT,
            &client_pkt(7000 + i, 80).syn().build(),
        );
        verdicts.push(v);
        process(
            &mut pipe,
            t(1),
            FRONT,
            &client_pkt(7000 + i, 80).ack().build(),
        );
    }
    let full = verdicts
        .iter()
        .filter(|v| **v == Verdict::Drop(DropReason::TableFull))
        .count();
    assert_eq!(full, 2, "{verdicts:?}");
    assert_eq!(pipe.counters().drops.get(DropReason::TableFull), 2);
    assert_eq!(pipe.connections().len(), 4);
}

/// An SCTP packet's chunk: type, flags 0, length, then `body`.
fn chunk(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut c = vec![ty, 0];
    c.extend_from_slice(&(4 + body.len() as u16).to_be_bytes());
    c.extend_from_slice(body);
    c
}

#[test]
fn sctp_associations_open_on_init_and_walk_the_ipvs_states() {
    use xvs_forwarding::service::PROTO_SCTP;
    use xvs_forwarding::testkit::verify_checksums;
    let mut pipe = pipeline_with(
        &[service(PROTO_SCTP, 3868, "rr", &[(11, 1, Method::Nat)])],
        64,
    );
    let init_body = [0, 0, 0, 7, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 9];
    let client = |body: Vec<u8>| {
        frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
            .sctp(5000, 3868)
            .payload(&body)
            .build()
    };
    // DATA without an association: not scheduled.
    let (v, _) = process(&mut pipe, t(1), FRONT, &client(chunk(0, &[0; 12])));
    assert_eq!(v, Verdict::Drop(DropReason::NoConnection));
    // INIT: scheduled, port rewritten to the backend's (CRC32c recomputed).
    let (v, out) = process(&mut pipe, t(1), FRONT, &client(chunk(1, &init_body)));
    assert_eq!(v, Verdict::Tx(BACK));
    verify_checksums(&out).unwrap();
    assert_eq!(
        u16::from_be_bytes([out[36], out[37]]),
        11868,
        "destination port"
    );
    assert_eq!(state_of(&pipe, t(1), 5000), Some("INIT1"));
    // INIT-ACK from the backend, back through the director to the client from the VIP.
    let reply = ip(
        Pkt::eth(backend_mac(11), BACK_MAC),
        IpAddr::V4(backend4(11)),
        IpAddr::V4(CLIENT4),
    )
    .ttl(64)
    .sctp(11868, 5000)
    .payload(&chunk(2, &init_body))
    .build();
    let (v, out) = process(&mut pipe, t(2), BACK, &reply);
    assert_eq!(v, Verdict::Tx(FRONT));
    verify_checksums(&out).unwrap();
    assert_eq!(
        u16::from_be_bytes([out[34], out[35]]),
        3868,
        "source port is the service's"
    );
    // COOKIE-ECHO, COOKIE-ACK: established, counted active.
    process(&mut pipe, t(3), FRONT, &client(chunk(10, &[0; 8])));
    let ack = ip(
        Pkt::eth(backend_mac(11), BACK_MAC),
        IpAddr::V4(backend4(11)),
        IpAddr::V4(CLIENT4),
    )
    .ttl(64)
    .sctp(11868, 5000)
    .payload(&chunk(11, &[]))
    .build();
    process(&mut pipe, t(3), BACK, &ack);
    assert_eq!(state_of(&pipe, t(3), 5000), Some("ESTABLISHED"));
    assert_eq!(pipe.connections().counts().active(BackendId(0)), 1);
}

#[test]
fn fullnat_local_ports_start_where_configured_in_the_workers_class() {
    use xvs_forwarding::PipelineConfig;
    // (worker, workers, first_local_port) → the first local port handed out.
    for (worker, workers, first, want) in [
        (0u16, 1u16, 1024u16, 1024u16),
        (1, 2, 5000, 5001),
        (1, 2, 5001, 5001),
        (0, 2, 65535, 1024),
        (0, 1, 0, 1024),
    ] {
        let cfg = PipelineConfig {
            connections: 64,
            local_addresses: vec![IpAddr::V4(LOCAL4)],
            worker,
            workers,
            first_local_port: first,
            ..PipelineConfig::default()
        };
        let mut pipe = Pipeline::new(cfg, &services(), vec![], network()).unwrap();
        let syn = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
            .tcp(9000, 83)
            .syn()
            .build();
        let (v, out) = process(&mut pipe, t(1), FRONT, &syn);
        assert_eq!(v, Verdict::Tx(BACK));
        let lport = u16::from_be_bytes([out[34], out[35]]);
        assert_eq!(lport, want, "worker {worker}/{workers} from {first}");
    }
}

/// IPVS `sloppy_tcp`: without it a mid-flow ACK opens nothing; with it the ACK is scheduled
/// (ESTABLISHED at once, as IPVS's table takes NONE + ACK), a RST still opens nothing, and two
/// directors with the same service (mh with mh-port, maglev, sh with sh-port: table lookups on
/// the flow) send the middle of a flow to the backend the first one chose for its SYN (the ECMP
/// case: the router moved the flow).
#[test]
fn sloppy_tcp_schedules_mid_flow_packets_and_hashing_directors_agree() {
    for (sched, flags) in [("mh", "mh-port"), ("maglev", ""), ("sh", "sh-port")] {
        let svc = || {
            let mut s = service(
                PROTO_TCP,
                80,
                sched,
                &[
                    (11, 1, Method::Dr),
                    (12, 1, Method::Dr),
                    (13, 1, Method::Dr),
                ],
            );
            if !flags.is_empty() {
                s.sched_flags = SchedFlags::parse(Some(sched), flags).unwrap();
            }
            s
        };
        let sloppy = |on: bool| {
            let cfg = xvs_forwarding::PipelineConfig {
                connections: 64,
                v6_connections: 64,
                sloppy_tcp: on,
                ..xvs_forwarding::PipelineConfig::default()
            };
            Pipeline::new(cfg, &[svc()], vec![], network()).unwrap()
        };
        let mut strict = sloppy(false);
        let ack = client_pkt(5000, 80).ack().build();
        let (v, _) = process(&mut strict, t(1), FRONT, &ack);
        assert_eq!(v, Verdict::Drop(DropReason::NoConnection), "{sched}");

        let mut first = sloppy(true);
        let mut second = sloppy(true);
        let rst = client_pkt(5001, 80).rst().build();
        let (v, _) = process(&mut second, t(1), FRONT, &rst);
        assert_eq!(v, Verdict::Drop(DropReason::NoConnection), "{sched}: RST");
        let mut macs = std::collections::BTreeSet::new();
        for sport in 5000..5040 {
            let syn = client_pkt(sport, 80).syn().build();
            let (v, syn_out) = process(&mut first, t(1), FRONT, &syn);
            assert_eq!(v, Verdict::Tx(BACK), "{sched}");
            let ack = client_pkt(sport, 80).ack().build();
            let (v, ack_out) = process(&mut second, t(2), FRONT, &ack);
            assert_eq!(v, Verdict::Tx(BACK), "{sched}: sport {sport}");
            assert_eq!(
                syn_out[0..6],
                ack_out[0..6],
                "{sched}: backend of sport {sport}"
            );
            assert_eq!(state_of(&second, t(2), sport), Some("ESTABLISHED"));
            macs.insert(syn_out[0..6].to_vec());
        }
        assert_eq!(macs.len(), 3, "{sched} spreads the flows over the backends");
    }
}
