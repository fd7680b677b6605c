//! Failover timing of the health checker on loopback (ignored by default: it takes ~15 s).
//! Run: `cargo test -p xvs --test health_failover -- --ignored --nocapture`
//!
//! A TCP listener is closed and reopened 10 times under a check with interval 100 ms,
//! timeout 200 ms, fall 3, rise 2; the time from close to the down event and from reopen to
//! the up event is printed (min / median / max) and checked against the bounds the rise and
//! fall counts imply: down in [(fall-1)·interval, fall·interval + timeout] and up in
//! [(rise-1)·interval, rise·interval], plus scheduling slack.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use xvs::control::health::{CheckConfig, CheckTarget, HealthChecker};

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: min {:.0} ms, median {:.0} ms, max {:.0} ms (n = {})",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
        v.len()
    );
    (v[0], v[v.len() - 1])
}

#[test]
#[ignore]
fn tcp_failover_times() {
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(200);
    let (fall, rise) = (3u32, 2u32);
    let mut listener = Some(TcpListener::bind("127.0.0.1:0").unwrap());
    let backend: SocketAddr = listener.as_ref().unwrap().local_addr().unwrap();
    let cfg: CheckConfig = toml::from_str(&format!(
        "type = \"tcp\"\ninterval_ms = {}\ntimeout_ms = {}\nfall = {fall}\nrise = {rise}",
        interval.as_millis(),
        timeout.as_millis()
    ))
    .unwrap();
    let (mut checker, events) = HealthChecker::new();
    checker
        .set_targets(vec![CheckTarget {
            service: "failover".into(),
            backend,
            spec: cfg.validate("check").unwrap().unwrap(),
        }])
        .unwrap();
    let (mut downs, mut ups) = (Vec::new(), Vec::new());
    for i in 0..10u64 {
        // Spread the failure over the probe phase.
        std::thread::sleep(Duration::from_millis(300 + i * 37 % 100));
        drop(listener.take());
        let t = Instant::now();
        let ev = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!ev.up);
        downs.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(150 + i * 53 % 100));
        listener = Some(TcpListener::bind(backend).unwrap());
        let t = Instant::now();
        let ev = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(ev.up);
        ups.push(t.elapsed());
    }
    let slack = Duration::from_millis(150);
    let (dmin, dmax) = summary("down (close -> event)", downs);
    let (umin, umax) = summary("up (reopen -> event)", ups);
    assert!(dmin + Duration::from_millis(5) >= interval * (fall - 1));
    assert!(dmax <= interval * fall + timeout + slack);
    assert!(umin + Duration::from_millis(5) >= interval * (rise - 1));
    assert!(umax <= interval * rise + slack);
    checker.shutdown();
}
