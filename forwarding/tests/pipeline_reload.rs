//! Applying a new desired state to a running pipeline: established connections keep their
//! backend, scheduler cursors move as IPVS's would for the same ipvsadm commands, removed
//! backends drain (or behave as IPVS with `expire_nodest_conn` 0 / 1), ids are stable and reused.

mod common;

use std::net::IpAddr;

use common::*;
use xvs_forwarding::pipeline::RemovedBackends;
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP};
use xvs_forwarding::{DropReason, Method, Pipeline, PipelineConfig, Time, Verdict};
use xvs_schedulers::SchedFlags;

fn backend(n: u8, weight: u32) -> Backend {
    Backend {
        addr: IpAddr::V4(backend4(n)),
        port: 8080,
        weight,
        method: Method::Nat,
        u_threshold: 0,
        l_threshold: 0,
        conn_rate: 0,
    }
}

fn service(port: u16, scheduler: &str, backends: Vec<Backend>) -> Service {
    Service {
        key: ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: IpAddr::V4(VIP4),
            port,
        },
        scheduler: scheduler.into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: false,
        conn_rate: 0,
        backends,
    }
}

fn pipe(services: &[Service], policy: RemovedBackends) -> Pipeline {
    let cfg = PipelineConfig {
        connections: 1024,
        removed_backends: policy,
        max_backends: 8,
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, services, vec![], network()).unwrap()
}

fn syn(sport: u16) -> Vec<u8> {
    frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        .tcp(sport, 80)
        .syn()
        .build()
}

fn ack(sport: u16) -> Vec<u8> {
    frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        .tcp(sport, 80)
        .ack()
        .build()
}

/// The backend (last octet) a frame went to, from its destination address.
fn sent_to(pipe: &mut Pipeline, frame: &[u8]) -> Result<u8, Verdict> {
    let (v, out) = process(pipe, Time::from_secs(5), FRONT, frame);
    match v {
        Verdict::Tx(_) => Ok(out[14 + 19]),
        other => Err(other),
    }
}

fn t() -> Time {
    Time::from_secs(5)
}

#[test]
fn established_connections_keep_their_backend_across_applies() {
    let v1 = vec![service(80, "rr", vec![backend(11, 1), backend(12, 1)])];
    let mut p = pipe(&v1, RemovedBackends::Drain);
    let first: Vec<u8> = (0..4)
        .map(|i| sent_to(&mut p, &syn(1000 + i)).unwrap())
        .collect();
    // Add a backend and change a weight: nothing established moves.
    let v2 = vec![service(
        80,
        "rr",
        vec![backend(11, 5), backend(12, 1), backend(13, 1)],
    )];
    let r = p.apply(&v2, vec![]).unwrap();
    assert_eq!(
        (r.backends_added, r.backends_changed, r.backends_removed),
        (1, 1, 0)
    );
    for (i, &b) in first.iter().enumerate() {
        assert_eq!(sent_to(&mut p, &ack(1000 + i as u16)), Ok(b));
    }
    assert_eq!(p.counters().drops.total(), 0);
}

#[test]
fn rr_cursor_moves_as_ipvs_for_the_same_commands() {
    // -a 11, -a 12, -a 13 → list 13, 12, 11; rr serves 13, 12, 11, 13, …
    let mut p = pipe(
        &[service(
            80,
            "rr",
            vec![backend(11, 1), backend(12, 1), backend(13, 1)],
        )],
        RemovedBackends::Drain,
    );
    let picks: Vec<u8> = (0..2)
        .map(|i| sent_to(&mut p, &syn(2000 + i)).unwrap())
        .collect();
    assert_eq!(picks, [13, 12]);
    // -a 14: prepended (list 14, 13, 12, 11); the cursor stays on 12 → next is 11, then 14.
    p.apply(
        &[service(
            80,
            "rr",
            vec![
                backend(11, 1),
                backend(12, 1),
                backend(13, 1),
                backend(14, 1),
            ],
        )],
        vec![],
    )
    .unwrap();
    let picks: Vec<u8> = (2..4)
        .map(|i| sent_to(&mut p, &syn(2000 + i)).unwrap())
        .collect();
    assert_eq!(picks, [11, 14]);
    // -d 14 (the cursor): the cursor goes to its predecessor, the head → next is 13.
    p.apply(
        &[service(
            80,
            "rr",
            vec![backend(11, 1), backend(12, 1), backend(13, 1)],
        )],
        vec![],
    )
    .unwrap();
    assert_eq!(sent_to(&mut p, &syn(2004)), Ok(13));
}

#[test]
fn removed_backends_drain_by_default() {
    let mut p = pipe(
        &[service(80, "rr", vec![backend(11, 1), backend(12, 1)])],
        RemovedBackends::Drain,
    );
    assert_eq!(sent_to(&mut p, &syn(3000)), Ok(12));
    p.apply(&[service(80, "rr", vec![backend(11, 1)])], vec![])
        .unwrap();
    assert_eq!(sent_to(&mut p, &ack(3000)), Ok(12), "drained, not cut");
    for i in 1..4 {
        assert_eq!(sent_to(&mut p, &syn(3000 + i)), Ok(11), "new ones avoid it");
    }
}

#[test]
fn removed_backends_as_ipvs_drop_or_expire() {
    let v1 = [service(80, "rr", vec![backend(11, 1), backend(12, 1)])];
    let v2 = [service(80, "rr", vec![backend(11, 1)])];
    let mut p = pipe(&v1, RemovedBackends::Drop);
    assert_eq!(sent_to(&mut p, &syn(4000)), Ok(12));
    p.apply(&v2, vec![]).unwrap();
    assert_eq!(
        sent_to(&mut p, &ack(4000)),
        Err(Verdict::Drop(DropReason::BackendGone))
    );
    let mut p = pipe(&v1, RemovedBackends::Expire);
    assert_eq!(sent_to(&mut p, &syn(4000)), Ok(12));
    p.apply(&v2, vec![]).unwrap();
    // The entry is expired; an ACK cannot open a connection, a retransmitted SYN is rescheduled.
    assert_eq!(
        sent_to(&mut p, &ack(4000)),
        Err(Verdict::Drop(DropReason::NoConnection))
    );
    assert_eq!(sent_to(&mut p, &syn(4000)), Ok(11));
}

#[test]
fn removed_services_stop_taking_connections_and_ids_are_reused() {
    let a = service(80, "rr", vec![backend(11, 1)]);
    let b = service(81, "rr", vec![backend(12, 1)]);
    let mut p = pipe(&[a.clone(), b.clone()], RemovedBackends::Drain);
    let id12 = p
        .backend_id(&b.key, IpAddr::V4(backend4(12)), 8080)
        .unwrap();
    let syn81 = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        .tcp(5000, 81)
        .syn()
        .build();
    assert_eq!(sent_to(&mut p, &syn81), Ok(12));
    let r = p.apply(std::slice::from_ref(&a), vec![]).unwrap();
    assert_eq!((r.services_removed, r.backends_removed), (1, 1));
    let syn81b = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
        .tcp(5001, 81)
        .syn()
        .build();
    assert_eq!(
        process(&mut p, t(), FRONT, &syn81b).0,
        Verdict::Pass,
        "no service any more"
    );
    // While its connection lives, backend 12's id is not reused.
    let c = service(82, "rr", vec![backend(13, 1)]);
    p.apply(&[a.clone(), c.clone()], vec![]).unwrap();
    let id13 = p
        .backend_id(&c.key, IpAddr::V4(backend4(13)), 8080)
        .unwrap();
    assert_ne!(id13, id12);
    // Once it expired (SYN_RECV: 60 s), the id is free again.
    p.housekeeping(Time::from_secs(100), 1 << 20);
    let d = service(83, "rr", vec![backend(14, 1)]);
    p.apply(&[a, c, d.clone()], vec![]).unwrap();
    let id14 = p
        .backend_id(&d.key, IpAddr::V4(backend4(14)), 8080)
        .unwrap();
    assert_eq!(id14, id12);
}

#[test]
fn a_failing_apply_changes_nothing() {
    let v1 = [service(80, "rr", vec![backend(11, 1)])];
    let mut p = pipe(&v1, RemovedBackends::Drain);
    let bad = [service(80, "nonsense", vec![backend(12, 1)])];
    assert!(p.apply(&bad, vec![]).is_err());
    assert_eq!(sent_to(&mut p, &syn(6000)), Ok(11));
    // More new backends than ids: refused as a whole.
    let many: Vec<Backend> = (20..40).map(|n| backend(n, 1)).collect();
    assert!(p.apply(&[service(80, "rr", many)], vec![]).is_err());
    assert_eq!(sent_to(&mut p, &syn(6001)), Ok(11));
}

#[test]
fn flags_alone_keep_the_scheduler_state_as_ipvs() {
    // rr serves 13, 12; `-E -s rr -b flag-1` does not rebind (ip_vs_edit_service rebinds only
    // for another scheduler), so the cursor stays on 12 and the next is 11 (a rebind: 13).
    let three = vec![backend(11, 1), backend(12, 1), backend(13, 1)];
    let mut p = pipe(&[service(80, "rr", three.clone())], RemovedBackends::Drain);
    assert_eq!(sent_to(&mut p, &syn(7000)), Ok(13));
    assert_eq!(sent_to(&mut p, &syn(7001)), Ok(12));
    let mut flagged = service(80, "rr", three);
    flagged.sched_flags = SchedFlags::from_bits(SchedFlags::SCHED1);
    let r = p.apply(std::slice::from_ref(&flagged), vec![]).unwrap();
    assert_eq!(r.services_changed, 1);
    assert_eq!(sent_to(&mut p, &syn(7002)), Ok(11));
    assert_eq!(sent_to(&mut p, &syn(7003)), Ok(13));
}

#[test]
fn a_backend_added_again_comes_back_with_its_connections_as_from_the_trash() {
    // wlc over 11 (w 1) and 12 (w 1); 12 gets the first connection (list 12, 11: ties keep the
    // head), then 11, then 12 again: 12 has two connections, 11 one.
    let two = vec![backend(11, 1), backend(12, 1)];
    let mut p = pipe(&[service(80, "wlc", two.clone())], RemovedBackends::Drain);
    for (i, want) in [12, 11, 12].into_iter().enumerate() {
        let sport = 7100 + i as u16;
        assert_eq!(sent_to(&mut p, &syn(sport)), Ok(want));
        assert_eq!(sent_to(&mut p, &ack(sport)), Ok(want));
    }
    let key = service(80, "wlc", vec![]).key;
    let id12 = p.backend_id(&key, IpAddr::V4(backend4(12)), 8080).unwrap();
    // -d 12, then -a 12: the kernel revives the same dest with its two connections, prepended.
    p.apply(&[service(80, "wlc", vec![backend(11, 1)])], vec![])
        .unwrap();
    assert_eq!(p.backend_id(&key, IpAddr::V4(backend4(12)), 8080), None);
    p.apply(&[service(80, "wlc", two)], vec![]).unwrap();
    assert_eq!(
        p.backend_id(&key, IpAddr::V4(backend4(12)), 8080),
        Some(id12),
        "revived with its id"
    );
    let report = p.report();
    let counts: Vec<(u32, u32)> = report[0]
        .backends
        .iter()
        .map(|b| (b.active, b.inactive))
        .collect();
    assert_eq!(
        counts,
        [(2, 0), (1, 0)],
        "12 (head) keeps its two connections"
    );
    // So wlc sends the next connection to 11 (1 < 2), not to an empty-looking 12.
    assert_eq!(sent_to(&mut p, &syn(7110)), Ok(11));
    // Its old connections are its own again (not drained: forwarded as any other).
    assert_eq!(sent_to(&mut p, &ack(7100)), Ok(12));
}
