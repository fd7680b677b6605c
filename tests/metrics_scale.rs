//! Cost of a scrape for a large director (ignored by default).
//! Run: `cargo test -p xvs --test metrics_scale -- --ignored --nocapture`
//!
//! 100 services × 10 backends (all health-checked) and 2 workers with every drop reason:
//! prints the exposition size, the render time and the time of a whole scrape over loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use xvs::control::metrics::{
    render, BackendMetrics, HealthMetrics, Metrics, MetricsServer, ServiceLabels, ServiceMetrics,
    Traffic, WorkerMetrics,
};
use xvs_forwarding::DropReason;

fn big() -> Metrics {
    let t = Traffic {
        conns: 123_456,
        in_pkts: 9_876_543,
        out_pkts: 8_765_432,
        in_bytes: 1_234_567_890,
        out_bytes: 9_876_543_210,
        cps: 100,
        in_pps: 1000,
        out_pps: 900,
        in_bps: 100_000,
        out_bps: 900_000,
    };
    Metrics {
        services: (0..100u16)
            .map(|s| ServiceMetrics {
                quorum_up: None,
                labels: ServiceLabels::Address {
                    protocol: "tcp".into(),
                    vip: format!("198.18.{}.{}", s / 250, s % 250 + 1)
                        .parse()
                        .unwrap(),
                    vport: 80,
                },
                traffic: t,
                backends: (0..10u8)
                    .map(|b| BackendMetrics {
                        address: format!("198.19.{s}.{}", b + 1).parse().unwrap(),
                        port: 8080,
                        method: "nat".into(),
                        weight: 1,
                        configured_weight: 1,
                        active: 10,
                        inactive: 3,
                        persistent: 0,
                        traffic: t,
                        health: Some(HealthMetrics {
                            up: true,
                            transitions: 2,
                            checks_ok: 1000,
                            checks_failed: 3,
                            since_unix: 0,
                            response_us: Some(1500),
                            load: None,
                        }),
                        removed: false,
                    })
                    .collect(),
            })
            .collect(),
        workers: (0..2)
            .map(|w| WorkerMetrics {
                worker: w,
                rx_packets: 1 << 40,
                tx_packets: 1 << 40,
                pass_packets: 1000,
                drops: DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str().to_string(), 7))
                    .collect(),
                syscalls: xvs::io::IoCounters::default()
                    .syscalls()
                    .iter()
                    .map(|(k, _)| (k.to_string(), 1 << 30))
                    .collect(),
                batching: xvs::io::IoCounters::default()
                    .batching()
                    .iter()
                    .map(|(k, _)| (k.to_string(), 1 << 30))
                    .collect(),
                io_drops: xvs::io::IoCounters::default()
                    .io_drops()
                    .iter()
                    .map(|(k, n)| (k.to_string(), *n))
                    .collect(),
                handoff_out: 1 << 30,
                handoff_in: 1 << 30,
                icmp_answers: 5,
                busy_ratio: 0.73,
                connections: 1_000_000,
                embryonic: 0,
                syn_defense: vec![],
            })
            .collect(),
        history: Vec::new(),
        dns: Vec::new(),
        redirect: Vec::new(),
    }
}

#[test]
#[ignore]
fn scrape_cost_of_a_large_director() {
    let m = big();
    let rounds = 20u32;
    let t = Instant::now();
    let mut size = 0;
    for _ in 0..rounds {
        size = render(&m).len();
    }
    let render_time = t.elapsed() / rounds;
    let lines = render(&m).lines().count();
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), move || m.clone()).unwrap();
    let t = Instant::now();
    for _ in 0..rounds {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.len() > size);
    }
    let scrape_time = t.elapsed() / rounds;
    println!(
        "1000 backends, 2 workers: {lines} lines, {} KiB; render {:.2} ms; scrape over loopback {:.2} ms",
        size / 1024,
        render_time.as_secs_f64() * 1000.0,
        scrape_time.as_secs_f64() * 1000.0
    );
    server.shutdown();
}
