//! Several workers of one director: pipelines built on one `Shared` state decide exactly as one
//! kernel (one pipeline) does for the same order of new connections — rr and wrr cursors,
//! lc/wlc counts and the OVERLOAD thresholds are the director's, not each worker's.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP};
use xvs_forwarding::{DropReason, Method, Pipeline, PipelineConfig, Time};
use xvs_schedulers::{BackendId, Load, SchedFlags};

fn backend(n: u8, upper: u32) -> Backend {
    Backend {
        addr: IpAddr::V4(backend4(n)),
        port: 8080,
        weight: 1,
        method: Method::Nat,
        u_threshold: upper,
        l_threshold: 0,
        conn_rate: 0,
    }
}

fn service(scheduler: &str, backends: Vec<Backend>) -> Service {
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
        backends,
    }
}

fn config(worker: u16, workers: u16) -> PipelineConfig {
    PipelineConfig {
        connections: 4096,
        worker,
        workers,
        max_backends: 16,
        ..PipelineConfig::default()
    }
}

/// `n` workers of one director running `services`.
fn director(n: u16, services: &[Service]) -> Vec<Pipeline> {
    let shared = Arc::new(Pipeline::shared_for(&config(0, n), services).unwrap());
    shared.apply(services, vec![]).unwrap();
    (0..n)
        .map(|i| Pipeline::with_shared(config(i, n), shared.clone(), network()))
        .collect()
}

fn tcp(sport: u16, syn: bool) -> Vec<u8> {
    let p = frame_in(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4)).tcp(sport, 80);
    if syn { p.syn() } else { p.ack() }.build()
}

/// Open a connection from client port `sport` (SYN, and the client's ACK when `establish`):
/// the backend's last octet, or `None` when the director refused it (no eligible backend).
fn open(pipe: &mut Pipeline, sport: u16, establish: bool) -> Option<u8> {
    process(pipe, Time::from_secs(5), FRONT, &tcp(sport, true));
    if pipe.last_answer() == Some(DropReason::NoBackend) {
        return None;
    }
    let d = pipe.last_decision().expect("a decision for the SYN");
    assert!(d.new_conn);
    if establish {
        process(pipe, Time::from_secs(5), FRONT, &tcp(sport, false));
    }
    match pipe.backend_endpoint(d.backend) {
        Some((IpAddr::V4(a), _)) => Some(a.octets()[3]),
        other => panic!("backend {other:?}"),
    }
}

/// The same connections through 1 worker and through 2 (alternating): the decisions.
fn both(services: &[Service], flows: u16, establish: bool) -> (Vec<Option<u8>>, Vec<Option<u8>>) {
    let mut one = director(1, services);
    let mut two = director(2, services);
    let a = (0..flows)
        .map(|i| open(&mut one[0], 10_000 + i, establish))
        .collect();
    let b = (0..flows)
        .map(|i| open(&mut two[usize::from(i % 2)], 10_000 + i, establish))
        .collect();
    (a, b)
}

fn tally(picks: &[Option<u8>], of: u8) -> usize {
    picks.iter().filter(|p| **p == Some(of)).count()
}

#[test]
fn rr_over_two_workers_is_one_round_robin() {
    let svc = [service(
        "rr",
        vec![backend(11, 0), backend(12, 0), backend(13, 0)],
    )];
    let (one, two) = both(&svc, 9, false);
    assert_eq!(one, two);
    for b in 11..=13 {
        assert_eq!(tally(&two, b), 3, "{two:?}");
    }
    // The list order is newest first: 13, 12, 11.
    assert_eq!(&two[..3], &[Some(13), Some(12), Some(11)]);
}

#[test]
fn lc_sees_every_workers_connections() {
    let svc = [service(
        "lc",
        vec![
            backend(11, 0),
            backend(12, 0),
            backend(13, 0),
            backend(14, 0),
        ],
    )];
    let (one, two) = both(&svc, 12, true);
    assert_eq!(one, two);
    for b in 11..=14 {
        assert_eq!(tally(&two, b), 3, "{two:?}");
    }
}

#[test]
fn wlc_upper_thresholds_refuse_as_the_kernel_does() {
    // -x 2 on each of 3 backends, 10 connections held open: the kernel accepts 6, refuses 4.
    let svc = [service(
        "wlc",
        vec![backend(11, 2), backend(12, 2), backend(13, 2)],
    )];
    let (one, two) = both(&svc, 10, false);
    assert_eq!(one, two);
    assert_eq!(two.iter().filter(|p| p.is_none()).count(), 4, "{two:?}");
    for b in 11..=13 {
        assert_eq!(tally(&two, b), 2, "{two:?}");
    }
}

#[test]
fn counts_are_the_directors_on_every_worker() {
    let svc = [service("wlc", vec![backend(11, 0), backend(12, 0)])];
    let mut w = director(2, &svc);
    open(&mut w[0], 20_000, true);
    open(&mut w[1], 20_001, false);
    let total = |p: &Pipeline| {
        let c = p.connections().counts();
        (0..2)
            .map(|i| (c.active(BackendId(i)), c.inactive(BackendId(i))))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    assert_eq!(total(&w[0]), (1, 1));
    assert_eq!(total(&w[1]), (1, 1));
    // The listing of each worker shows the same counts; traffic is each worker's own.
    let r0 = w[0].report();
    let r1 = w[1].report();
    let counts = |r: &[xvs_forwarding::pipeline::ServiceReport]| {
        r[0].backends
            .iter()
            .map(|b| (b.active, b.inactive))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&r0), counts(&r1));
    assert_eq!(r0[0].traffic.conns + r1[0].traffic.conns, 2);
}

#[test]
fn an_apply_reaches_every_worker_with_the_cursor_kept() {
    let v1 = [service("rr", vec![backend(11, 0), backend(12, 0)])];
    let mut w = director(2, &v1);
    assert_eq!(open(&mut w[0], 30_000, false), Some(12));
    // ipvsadm -a 13: prepended; rr's cursor stays on 12, so the next is 11, then 13.
    let v2 = [service(
        "rr",
        vec![backend(11, 0), backend(12, 0), backend(13, 0)],
    )];
    let (snap, _) = w[0].shared().apply(&v2, vec![]).unwrap();
    for p in &mut w {
        p.install(snap.clone());
    }
    assert_eq!(open(&mut w[1], 30_001, false), Some(11));
    assert_eq!(open(&mut w[0], 30_002, false), Some(13));
    assert_eq!(open(&mut w[1], 30_003, false), Some(12));
}

#[test]
fn concurrent_workers_share_one_rr_cursor() {
    let svc = [service(
        "rr",
        vec![backend(11, 0), backend(12, 0), backend(13, 0)],
    )];
    // Uneven shares (1000 and 500): per-worker cursors would give 501/500/499.
    let picks = open_concurrently(director(2, &svc), |i| if i == 0 { 1000 } else { 500 });
    for b in 11..=13 {
        assert_eq!(tally(&picks, b), 500);
    }
}

/// Each worker on its own thread, started together, opens `share(worker)` new connections
/// (distinct client ports per worker); every pick, worker 0's first.
fn open_concurrently(workers: Vec<Pipeline>, share: fn(usize) -> u16) -> Vec<Option<u8>> {
    let start = Arc::new(std::sync::Barrier::new(workers.len()));
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                (0..share(i))
                    .map(|k| open(&mut p, 1024 + k * 2 + i as u16, false))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// Two workers open connections at the same time through wrr (no lock: its position and
/// current weight are one word moved by compare-and-swap): together they get the first picks of
/// one director's sequence, each backend as often as there.
#[test]
fn concurrent_workers_share_one_wrr_state() {
    let weighted = |n: u8, w: u32| Backend {
        weight: w,
        ..backend(n, 0)
    };
    let svc = [service(
        "wrr",
        vec![weighted(11, 4), weighted(12, 3), weighted(13, 2)],
    )];
    const PER_WORKER: u16 = 900;
    let mut one = director(1, &svc);
    let want: Vec<Option<u8>> = (0..2 * PER_WORKER)
        .map(|k| open(&mut one[0], 1024 + k, false))
        .collect();
    let picks = open_concurrently(director(2, &svc), |_| PER_WORKER);
    for b in 11..=13 {
        assert_eq!(tally(&picks, b), tally(&want, b), "backend {b}");
    }
    assert!(picks.iter().all(Option::is_some), "{picks:?}");
}

/// Two workers open connections at the same time through wlc (no lock: it reads the shared
/// counts only), each counting in its own row: the director's counts are every connection,
/// wlc keeps the backends within one connection per worker of each other, and when the
/// connections expire every count is back at zero.
#[test]
fn concurrent_workers_keep_wlc_counts_exact() {
    let svc = [service(
        "wlc",
        vec![backend(11, 0), backend(12, 0), backend(13, 0)],
    )];
    let workers = director(2, &svc);
    let shared = workers[0].shared().clone();
    let per_worker = 600u16;
    let start = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for k in 0..per_worker {
                    assert!(open(&mut p, 1024 + k * 2 + i as u16, true).is_some());
                }
                p
            })
        })
        .collect();
    let mut workers: Vec<Pipeline> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let counts = || -> Vec<(u32, u32)> {
        shared.report()[0]
            .backends
            .iter()
            .map(|b| (b.active, b.inactive))
            .collect()
    };
    let active: Vec<u32> = counts().iter().map(|c| c.0).collect();
    assert_eq!(
        active.iter().sum::<u32>(),
        2 * u32::from(per_worker),
        "{active:?}"
    );
    assert!(counts().iter().all(|c| c.1 == 0), "{:?}", counts());
    let (lo, hi) = (active.iter().min().unwrap(), active.iter().max().unwrap());
    assert!(hi - lo <= 2, "wlc balance over two workers: {active:?}");
    assert_eq!(
        workers.iter().map(|p| p.connections().len()).sum::<u32>(),
        2 * u32::from(per_worker)
    );
    // Established connections expire after 900 s.
    for p in &mut workers {
        for _ in 0..100 {
            if p.connections().is_empty() {
                break;
            }
            p.housekeeping(Time::from_secs(2000), 10_000);
        }
        assert_eq!(p.connections().len(), 0);
    }
    assert_eq!(counts(), vec![(0, 0); 3]);
}
