//! Connection sync through two pipelines: what a master queues after inbound packets (the
//! kernel's `sync_threshold` rule, state changes, templates), and a backup installing it so
//! that the connection is forwarded to the same backend when its packets move there.

mod common;

use std::net::IpAddr;

use common::*;
use xvs_forwarding::conn::state::tcp;
use xvs_forwarding::conn::Installed;
use xvs_forwarding::pipeline::SyncRefused;
use xvs_forwarding::service::{Backend, Persistence, Service, ServiceKey, PROTO_TCP, PROTO_UDP};
use xvs_forwarding::sync::policy::SyncPolicy;
use xvs_forwarding::sync::{flags, SyncConn};
use xvs_forwarding::testkit::Pkt;
use xvs_forwarding::{BackendId, Method, Pipeline, Time, Verdict};
use xvs_schedulers::{Load, SchedFlags};

fn service(proto: u8, scheduler: &str, method: Method, persistent: bool) -> Service {
    Service {
        key: ServiceKey::Addr {
            proto,
            addr: IpAddr::V4(VIP4),
            port: 80,
        },
        scheduler: scheduler.into(),
        sched_flags: SchedFlags::NONE,
        persistence: persistent.then_some(Persistence {
            timeout: 300,
            prefix_len: 32,
        }),
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends: (11..=13)
            .map(|n| Backend {
                addr: IpAddr::V4(backend4(n)),
                port: 8080,
                weight: 1,
                method,
                u_threshold: 0,
                l_threshold: 0,
                conn_rate: 0,
            })
            .collect(),
    }
}

fn client(sport: u16) -> Pkt {
    frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4)).tcp(sport, 80)
}

fn drain(p: &mut Pipeline) -> Vec<SyncConn> {
    let mut v = Vec::new();
    p.drain_sync(&mut v);
    v
}

fn t(ms: u64) -> Time {
    Time(ms * 1_000_000)
}

#[test]
fn master_sends_established_tcp_at_the_third_packet_then_every_fiftieth() {
    let mut m = pipeline_with(&[service(PROTO_TCP, "rr", Method::Nat, false)], 64);
    m.set_sync_master(Some(SyncPolicy::default()), 1024);
    let mut sent_at = Vec::new();
    process(&mut m, t(1), FRONT, &client(5000).syn().build());
    assert!(drain(&mut m).is_empty(), "SYN_RECV is not sent");
    for i in 2..=110u64 {
        let (v, _) = process(&mut m, t(i), FRONT, &client(5000).ack().build());
        assert!(matches!(v, Verdict::Tx(_)));
        if !drain(&mut m).is_empty() {
            sent_at.push(i);
        }
    }
    assert_eq!(sent_at, vec![3, 53, 103]);
}

#[test]
fn master_entry_describes_the_connection_as_the_kernel_does() {
    let mut m = pipeline_with(&[service(PROTO_TCP, "rr", Method::Nat, false)], 64);
    m.set_sync_master(Some(SyncPolicy::default()), 1024);
    for (i, p) in [client(5000).syn(), client(5000).ack(), client(5000).ack()]
        .iter()
        .enumerate()
    {
        process(&mut m, t(i as u64), FRONT, &p.build());
    }
    let out = drain(&mut m);
    assert_eq!(out.len(), 1);
    let s = out[0];
    assert_eq!(s.protocol, 6);
    assert_eq!(u8::try_from(s.state).unwrap(), tcp::ESTABLISHED);
    assert_eq!(s.flags & flags::FWD_MASK, flags::MASQ);
    assert_eq!(s.flags & flags::INACTIVE, 0, "ESTABLISHED is active");
    assert_eq!(s.flags & flags::TEMPLATE, 0);
    assert_eq!(s.client, "198.18.100.5:5000".parse().unwrap());
    assert_eq!(s.virt, "198.18.0.100:80".parse().unwrap());
    assert_eq!(s.dest.port(), 8080);
    assert_eq!(s.timeout, Some(900));
    assert_eq!(s.fwmark, 0);
}

#[test]
fn a_close_is_sent_at_once_and_so_is_the_template_of_a_persistent_connection() {
    let mut m = pipeline_with(&[service(PROTO_TCP, "rr", Method::Dr, true)], 64);
    m.set_sync_master(Some(SyncPolicy::default()), 1024);
    process(&mut m, t(1), FRONT, &client(5000).syn().build());
    // The SYN_RECV connection is not sent, its template is (templates always qualify).
    let out = drain(&mut m);
    assert_eq!(out.len(), 1);
    assert_ne!(out[0].flags & flags::TEMPLATE, 0);
    assert_eq!(out[0].client.port(), 0);
    process(&mut m, t(2), FRONT, &client(5000).ack().build());
    process(&mut m, t(3), FRONT, &client(5000).ack().build());
    // Packet 2: the template again (on every inbound packet of a connection it controls);
    // packet 3: the connection (pkts = 3), then the template.
    let out = drain(&mut m);
    let kinds: Vec<bool> = out.iter().map(|s| s.flags & flags::TEMPLATE != 0).collect();
    assert_eq!(kinds, vec![true, false, true], "{out:?}");
    assert_eq!(out[1].flags & flags::FWD_MASK, flags::DROUTE);
    assert_ne!(out[1].flags & flags::NOOUTPUT, 0);
    assert_eq!(
        out[2].state, 1,
        "ASSURED once the connection is established"
    );
    // Input-only table (DR): a client FIN moves ESTABLISHED to FIN_WAIT, sent at once.
    process(&mut m, t(4), FRONT, &client(5000).fin().ack().build());
    let out = drain(&mut m);
    assert_eq!(out[0].state, u16::from(tcp::FIN_WAIT));
    assert_ne!(out[0].flags & flags::INACTIVE, 0);
}

#[test]
fn backup_installs_and_forwards_to_the_same_backend() {
    let svc = service(PROTO_TCP, "rr", Method::Nat, false);
    let mut m = pipeline_with(std::slice::from_ref(&svc), 64);
    m.set_sync_master(Some(SyncPolicy::default()), 1024);
    // Three connections so that rr moves past the first backend on the master.
    for cport in [5000, 5001, 5002] {
        for (i, p) in [
            client(cport).syn(),
            client(cport).ack(),
            client(cport).ack(),
        ]
        .iter()
        .enumerate()
        {
            process(&mut m, t(i as u64), FRONT, &p.build());
        }
    }
    let out = drain(&mut m);
    assert_eq!(out.len(), 3);
    let mut b = pipeline_with(&[svc], 64);
    for s in &out {
        let r = b.install_synced(s, 3, t(10));
        assert!(matches!(r, Ok(Installed::New(_))), "{r:?}");
    }
    assert_eq!(b.sync_counters().installed, 3);
    let counts = b.connections().counts();
    let active: u32 = (0..3).map(|i| counts.active(BackendId(i))).sum();
    assert_eq!(active, 3);
    // The listing matches the master's.
    let rows = |p: &Pipeline| {
        let mut r: Vec<_> = p
            .connections()
            .list(t(10))
            .map(|l| (l.client, l.virt, l.backend, l.state))
            .collect();
        r.sort();
        r
    };
    assert_eq!(rows(&m), rows(&b));
    // Traffic moves to the backup: the next segment of 5001 goes where the master sent it.
    let master_dest = out.iter().find(|s| s.client.port() == 5001).unwrap().dest;
    let (v, f) = process(&mut b, t(11), FRONT, &client(5001).ack().psh().build());
    assert_eq!(v, Verdict::Tx(BACK));
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
    assert_eq!(IpAddr::V4(ip.destination_addr()), master_dest.ip());
    assert_eq!(b.sync_counters().installed, 3);
}

#[test]
fn backup_updates_moves_counts_and_replaces() {
    let svc = service(PROTO_TCP, "rr", Method::Nat, false);
    let mut b = pipeline_with(std::slice::from_ref(&svc), 64);
    let mut s = SyncConn {
        protocol: 6,
        flags: flags::MASQ | flags::INACTIVE,
        state: u16::from(tcp::SYN_RECV),
        client: "198.18.100.5:6000".parse().unwrap(),
        virt: "198.18.0.100:80".parse().unwrap(),
        dest: format!("{}:8080", backend4(12)).parse().unwrap(),
        fwmark: 0,
        timeout: Some(60),
        seq: None,
        has_pe: false,
    };
    assert!(matches!(
        b.install_synced(&s, 3, t(0)),
        Ok(Installed::New(_))
    ));
    let c = |b: &Pipeline, n| {
        let k = b.connections().counts();
        (k.active(BackendId(n)), k.inactive(BackendId(n)))
    };
    assert_eq!(c(&b, 1), (0, 1));
    s.flags = flags::MASQ;
    s.state = u16::from(tcp::ESTABLISHED);
    s.timeout = Some(900);
    assert!(matches!(
        b.install_synced(&s, 3, t(1)),
        Ok(Installed::Updated(_))
    ));
    assert_eq!(c(&b, 1), (1, 0));
    // An inactive message for another backend: the notice of an old connection, ignored.
    let mut other = s;
    other.dest = format!("{}:8080", backend4(13)).parse().unwrap();
    other.flags |= flags::INACTIVE;
    assert_eq!(b.install_synced(&other, 3, t(2)), Ok(Installed::Stale));
    // An active one replaces the entry.
    other.flags = flags::MASQ;
    assert!(matches!(
        b.install_synced(&other, 3, t(3)),
        Ok(Installed::Replaced(_))
    ));
    assert_eq!(c(&b, 1), (0, 0));
    assert_eq!(c(&b, 2), (1, 0));
    assert_eq!(b.connections().len(), 1);
    // Its timeout is the message's: gone after 900 s.
    b.housekeeping(t(3 + 901_000), 1 << 20);
    assert_eq!(b.connections().len(), 0);
    assert_eq!(c(&b, 2), (0, 0));
    b.connections().check().unwrap();
}

#[test]
fn backup_refuses_what_it_cannot_bind() {
    let mut b = pipeline_with(&[service(PROTO_UDP, "rr", Method::Nat, false)], 64);
    let good = SyncConn {
        protocol: 17,
        flags: flags::MASQ | flags::INACTIVE,
        state: 0,
        client: "198.18.100.5:6000".parse().unwrap(),
        virt: "198.18.0.100:80".parse().unwrap(),
        dest: format!("{}:8080", backend4(11)).parse().unwrap(),
        fwmark: 0,
        timeout: Some(300),
        seq: None,
        has_pe: false,
    };
    let cases = [
        (
            SyncConn {
                protocol: 6,
                ..good
            },
            SyncRefused::NoService,
        ),
        (
            SyncConn {
                dest: format!("{}:8080", backend4(99)).parse().unwrap(),
                ..good
            },
            SyncRefused::NoBackend,
        ),
        (SyncConn { state: 1, ..good }, SyncRefused::State),
        (
            SyncConn {
                dest: "[2001:2::1]:8080".parse().unwrap(),
                ..good
            },
            SyncRefused::Family,
        ),
        (
            SyncConn {
                has_pe: true,
                ..good
            },
            SyncRefused::PersistenceEngine,
        ),
    ];
    for (s, why) in cases {
        assert_eq!(b.install_synced(&s, 3, t(0)), Err(why), "{s:?}");
    }
    assert_eq!(b.connections().len(), 0);
    // A version-0 entry (no timeout) takes the protocol's default.
    let v0 = SyncConn {
        timeout: None,
        ..good
    };
    assert!(b.install_synced(&v0, 3, t(0)).is_ok());
    let l = b.connections().list(t(0)).next().unwrap();
    assert_eq!(l.expires_secs, 300);
}

#[test]
fn full_table_is_refused_and_counted() {
    let mut b = pipeline_with(&[service(PROTO_UDP, "rr", Method::Nat, false)], 2);
    let mut refused = 0;
    for p in 0..4u16 {
        let s = SyncConn {
            protocol: 17,
            flags: flags::MASQ | flags::INACTIVE,
            state: 0,
            client: format!("198.18.100.5:{}", 6000 + p).parse().unwrap(),
            virt: "198.18.0.100:80".parse().unwrap(),
            dest: format!("{}:8080", backend4(11)).parse().unwrap(),
            fwmark: 0,
            timeout: Some(300),
            seq: None,
            has_pe: false,
        };
        if b.install_synced(&s, 3, t(0)) == Err(SyncRefused::TableFull) {
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(
        b.sync_counters().refused[SyncRefused::TableFull as usize],
        2
    );
}

#[test]
fn the_table_in_parts_is_the_whole_table() {
    let mut m = pipeline_with(&[service(PROTO_TCP, "rr", Method::Nat, true)], 64);
    for cport in 5000..5010 {
        for (i, p) in [client(cport).syn(), client(cport).ack()]
            .iter()
            .enumerate()
        {
            process(&mut m, t(i as u64), FRONT, &p.build());
        }
    }
    let whole = m.sync_table();
    // 10 connections and their template.
    assert_eq!(whole.len(), 11);
    let mut parts = Vec::new();
    let mut from = Some(0);
    while let Some(f) = from {
        from = m.sync_table_part(f, 7, &mut parts);
    }
    assert_eq!(parts, whole);
}

#[test]
fn a_takeover_table_carries_fullnat_connections_to_a_new_pipeline() {
    let fullnat = service(PROTO_TCP, "rr", Method::FullNat, false);
    let mut old = pipeline_with(std::slice::from_ref(&fullnat), 64);
    let mut rewritten = Vec::new();
    for cport in [5000, 5001, 5002] {
        for (i, p) in [client(cport).syn(), client(cport).ack()]
            .iter()
            .enumerate()
        {
            let (v, f) = process(&mut old, t(i as u64), FRONT, &p.build());
            assert_eq!(v, Verdict::Tx(BACK));
            if i == 1 {
                rewritten.push(f);
            }
        }
    }
    let table = old.takeover_table();
    assert_eq!(table.len(), 3);
    assert!(table.iter().all(|(_, local)| local.is_some()));
    // The sync path refuses FullNAT (no local address on the wire); the takeover path installs.
    let mut new = pipeline_with(std::slice::from_ref(&fullnat), 64);
    assert_eq!(
        new.install_synced(&table[0].0, 3, t(10)),
        Err(SyncRefused::FullNat)
    );
    for (s, local) in &table {
        let r = new.install_taken(s, *local, 3, t(10));
        assert!(matches!(r, Ok(Installed::New(_))), "{r:?}");
    }
    // The next segment of each connection leaves the new pipeline exactly as from the old one
    // (same backend, same local address and port), and the backend's reply finds its way back.
    for (k, cport) in [5000u16, 5001, 5002].iter().enumerate() {
        let (v, f) = process(&mut new, t(11), FRONT, &client(*cport).ack().build());
        assert_eq!(v, Verdict::Tx(BACK));
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
        let was = etherparse::Ipv4HeaderSlice::from_slice(&rewritten[k][14..]).unwrap();
        assert_eq!(ip.source_addr(), was.source_addr());
        assert_eq!(ip.destination_addr(), was.destination_addr());
        assert_eq!(&f[34..38], &rewritten[k][34..38], "ports of {cport}");
        let reply = ip_layer_back(ip.destination_addr(), ip.source_addr())
            .tcp(
                u16::from_be_bytes([f[36], f[37]]),
                u16::from_be_bytes([f[34], f[35]]),
            )
            .ack()
            .build();
        let (v, back) = process(&mut new, t(12), BACK, &reply);
        assert_eq!(v, Verdict::Tx(FRONT), "reply of {cport}");
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&back[14..]).unwrap();
        assert_eq!(ip.destination_addr(), CLIENT4);
    }
}

/// A frame from a backend (its MAC, `src`) to the director's back side (`dst`).
fn ip_layer_back(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> Pkt {
    let n = src.octets()[3];
    ip(
        Pkt::eth(backend_mac(n), BACK_MAC),
        IpAddr::V4(src),
        IpAddr::V4(dst),
    )
    .ttl(64)
}
