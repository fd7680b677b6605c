//! Metrics: golden exposition text for a small model, the exposition format's validity rules
//! (checked by a small parser here and by Prometheus's own parser, `promtool check metrics`) on a
//! larger model, node_exporter's IPVS series, and the /metrics server over loopback.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xvs::control::metrics::{
    escape_label, render, render_with, BackendMetrics, Exposition, HealthMetrics, Metrics,
    MetricsServer, ServiceLabels, ServiceMetrics, Traffic, WorkerMetrics, CONTENT_TYPE,
};
use xvs::redirect::server::{BackendStatus as RedirectBackend, RedirectStatus};

fn traffic(base: u64) -> Traffic {
    Traffic {
        conns: base,
        in_pkts: base * 10,
        out_pkts: base * 9,
        in_bytes: base * 1000,
        out_bytes: base * 9000,
        cps: 1,
        in_pps: 2,
        out_pps: 3,
        in_bps: 4,
        out_bps: 5,
    }
}

fn small() -> Metrics {
    Metrics {
        services: vec![ServiceMetrics {
            quorum_up: Some(false),
            labels: ServiceLabels::Address {
                protocol: "tcp".into(),
                vip: "198.18.0.1".parse().unwrap(),
                vport: 80,
            },
            traffic: traffic(7),
            backends: vec![BackendMetrics {
                address: "198.19.0.11".parse().unwrap(),
                port: 8080,
                method: "nat".into(),
                weight: 3,
                configured_weight: 4,
                active: 2,
                inactive: 5,
                persistent: 0,
                traffic: traffic(7),
                health: Some(HealthMetrics {
                    up: false,
                    transitions: 3,
                    checks_ok: 40,
                    checks_failed: 6,
                    since_unix: 0,
                    response_us: Some(12_500),
                    load: Some(40),
                }),
                removed: false,
            }],
        }],
        workers: vec![WorkerMetrics {
            worker: 0,
            rx_packets: 100,
            tx_packets: 90,
            pass_packets: 4,
            drops: vec![("no_backend".into(), 5), ("truncated".into(), 1)],
            io_drops: vec![("tx_ring_full".into(), 3), ("handoff_full".into(), 2)],
            syscalls: vec![("sendto".into(), 8), ("poll".into(), 6)],
            batching: vec![("rx_batches".into(), 9), ("rounds".into(), 40)],
            handoff_out: 11,
            handoff_in: 12,
            icmp_answers: 3,
            busy_ratio: 0.25,
            connections: 7,
            embryonic: 0,
            syn_defense: vec![],
        }],
        history: Vec::new(),
        dns: Vec::new(),
        redirect: Vec::new(),
    }
}

const GOLDEN: &str = r#"# HELP xvs_service_connections_total Connections scheduled by the service.
# TYPE xvs_service_connections_total counter
xvs_service_connections_total{protocol="tcp",vip="198.18.0.1",vport="80"} 7
# HELP xvs_service_packets_total Packets of the service by direction (in: client to backend).
# TYPE xvs_service_packets_total counter
xvs_service_packets_total{protocol="tcp",vip="198.18.0.1",vport="80",direction="in"} 70
xvs_service_packets_total{protocol="tcp",vip="198.18.0.1",vport="80",direction="out"} 63
# HELP xvs_service_bytes_total Bytes of the service by direction (in: client to backend).
# TYPE xvs_service_bytes_total counter
xvs_service_bytes_total{protocol="tcp",vip="198.18.0.1",vport="80",direction="in"} 7000
xvs_service_bytes_total{protocol="tcp",vip="198.18.0.1",vport="80",direction="out"} 63000
# HELP xvs_service_connections_per_second New connections per second (IPVS rate estimate).
# TYPE xvs_service_connections_per_second gauge
xvs_service_connections_per_second{protocol="tcp",vip="198.18.0.1",vport="80"} 1
# HELP xvs_service_packets_per_second Packets per second by direction (IPVS rate estimate).
# TYPE xvs_service_packets_per_second gauge
xvs_service_packets_per_second{protocol="tcp",vip="198.18.0.1",vport="80",direction="in"} 2
xvs_service_packets_per_second{protocol="tcp",vip="198.18.0.1",vport="80",direction="out"} 3
# HELP xvs_service_bytes_per_second Bytes per second by direction (IPVS rate estimate).
# TYPE xvs_service_bytes_per_second gauge
xvs_service_bytes_per_second{protocol="tcp",vip="198.18.0.1",vport="80",direction="in"} 4
xvs_service_bytes_per_second{protocol="tcp",vip="198.18.0.1",vport="80",direction="out"} 5
# HELP xvs_service_quorum_up Quorum state (keepalived's): 1 up, 0 down (sorry server in, if any).
# TYPE xvs_service_quorum_up gauge
xvs_service_quorum_up{protocol="tcp",vip="198.18.0.1",vport="80"} 0
# HELP xvs_backend_weight Backend weight: effective (what the workers run: after health, dynamic and adaptive weights; 0: quiesced) or configured.
# TYPE xvs_backend_weight gauge
xvs_backend_weight{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",kind="effective"} 3
xvs_backend_weight{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",kind="configured"} 4
# HELP xvs_backend_active_connections Established connections (IPVS activeconns).
# TYPE xvs_backend_active_connections gauge
xvs_backend_active_connections{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 2
# HELP xvs_backend_inactive_connections Connections in other states (IPVS inactconns).
# TYPE xvs_backend_inactive_connections gauge
xvs_backend_inactive_connections{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 5
# HELP xvs_backend_persistent_connections Persistence templates (IPVS persistconns).
# TYPE xvs_backend_persistent_connections gauge
xvs_backend_persistent_connections{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 0
# HELP xvs_backend_connections_total Connections scheduled to the backend.
# TYPE xvs_backend_connections_total counter
xvs_backend_connections_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 7
# HELP xvs_backend_packets_total Packets of the backend by direction (in: client to backend).
# TYPE xvs_backend_packets_total counter
xvs_backend_packets_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="in"} 70
xvs_backend_packets_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="out"} 63
# HELP xvs_backend_bytes_total Bytes of the backend by direction (in: client to backend).
# TYPE xvs_backend_bytes_total counter
xvs_backend_bytes_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="in"} 7000
xvs_backend_bytes_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="out"} 63000
# HELP xvs_backend_connections_per_second New connections per second (IPVS rate estimate).
# TYPE xvs_backend_connections_per_second gauge
xvs_backend_connections_per_second{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 1
# HELP xvs_backend_packets_per_second Packets per second by direction (IPVS rate estimate).
# TYPE xvs_backend_packets_per_second gauge
xvs_backend_packets_per_second{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="in"} 2
xvs_backend_packets_per_second{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="out"} 3
# HELP xvs_backend_bytes_per_second Bytes per second by direction (IPVS rate estimate).
# TYPE xvs_backend_bytes_per_second gauge
xvs_backend_bytes_per_second{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="in"} 4
xvs_backend_bytes_per_second{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",direction="out"} 5
# HELP xvs_backend_up Health check state: 1 up, 0 down.
# TYPE xvs_backend_up gauge
xvs_backend_up{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 0
# HELP xvs_backend_health_transitions_total Health state changes (up to down and down to up).
# TYPE xvs_backend_health_transitions_total counter
xvs_backend_health_transitions_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 3
# HELP xvs_backend_health_checks_total Health check probes by result.
# TYPE xvs_backend_health_checks_total counter
xvs_backend_health_checks_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",result="ok"} 40
xvs_backend_health_checks_total{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat",result="failed"} 6
# HELP xvs_backend_response_seconds Health check response time, smoothed over the successful probes.
# TYPE xvs_backend_response_seconds gauge
xvs_backend_response_seconds{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 0.0125
# HELP xvs_backend_load_percent Load figure the backend reports to its health check (0 idle, 100 saturated).
# TYPE xvs_backend_load_percent gauge
xvs_backend_load_percent{protocol="tcp",vip="198.18.0.1",vport="80",address="198.19.0.11",port="8080",method="nat"} 40
# HELP xvs_worker_rx_packets_total Frames received by the worker.
# TYPE xvs_worker_rx_packets_total counter
xvs_worker_rx_packets_total{worker="0"} 100
# HELP xvs_worker_tx_packets_total Frames transmitted by the worker.
# TYPE xvs_worker_tx_packets_total counter
xvs_worker_tx_packets_total{worker="0"} 90
# HELP xvs_worker_pass_packets_total Frames handed to the kernel by the worker.
# TYPE xvs_worker_pass_packets_total counter
xvs_worker_pass_packets_total{worker="0"} 4
# HELP xvs_worker_drops_total Frames dropped by the worker, by reason.
# TYPE xvs_worker_drops_total counter
xvs_worker_drops_total{worker="0",reason="no_backend"} 5
xvs_worker_drops_total{worker="0",reason="truncated"} 1
# HELP xvs_worker_io_drops_total Frames lost in the worker's I/O (rings, cross-worker handoff), by reason.
# TYPE xvs_worker_io_drops_total counter
xvs_worker_io_drops_total{worker="0",reason="tx_ring_full"} 3
xvs_worker_io_drops_total{worker="0",reason="handoff_full"} 2
# HELP xvs_worker_syscalls_total System calls made by the worker's I/O (sendto = TX kick, recvfrom = RX wakeup, poll = idle wait), by call.
# TYPE xvs_worker_syscalls_total counter
xvs_worker_syscalls_total{worker="0",call="sendto"} 8
xvs_worker_syscalls_total{worker="0",call="poll"} 6
# HELP xvs_worker_batching_total Receive batches handed to the processor (rx_batches, each of at least one frame) and worker loop rounds (rounds).
# TYPE xvs_worker_batching_total counter
xvs_worker_batching_total{worker="0",event="rx_batches"} 9
xvs_worker_batching_total{worker="0",event="rounds"} 40
# HELP xvs_worker_handoff_packets_total Frames handed to the worker owning their connection (out) or received from another worker (in).
# TYPE xvs_worker_handoff_packets_total counter
xvs_worker_handoff_packets_total{worker="0",direction="out"} 11
xvs_worker_handoff_packets_total{worker="0",direction="in"} 12
# HELP xvs_worker_icmp_answers_total ICMP errors generated by the worker, each in place of a dropped frame.
# TYPE xvs_worker_icmp_answers_total counter
xvs_worker_icmp_answers_total{worker="0"} 3
# HELP xvs_worker_busy_ratio Share of the worker's time spent processing frames (0 to 1).
# TYPE xvs_worker_busy_ratio gauge
xvs_worker_busy_ratio{worker="0"} 0.25
# HELP xvs_worker_connections Entries in the worker's connection table.
# TYPE xvs_worker_connections gauge
xvs_worker_connections{worker="0"} 7
"#;

#[test]
fn golden_text_for_a_small_model() {
    let text = render(&small());
    if text != GOLDEN {
        // Print the whole rendering to make a change reviewable.
        eprintln!("{text}");
    }
    assert_eq!(text, GOLDEN);
}

/// A larger model: two services (address and fwmark, IPv4 and IPv6), checked and unchecked
/// backends, label values that need escaping, two workers, float edge cases.
fn large() -> Metrics {
    let mut m = small();
    m.services[0].backends.push(BackendMetrics {
        address: "198.19.0.12".parse().unwrap(),
        port: 8080,
        method: "dr".into(),
        weight: 0,
        configured_weight: 0,
        active: 0,
        inactive: 0,
        persistent: 1,
        traffic: Traffic::default(),
        health: None,
        removed: false,
    });
    m.services.push(ServiceMetrics {
        quorum_up: None,
        labels: ServiceLabels::Fwmark {
            mark: 7,
            ipv6: true,
        },
        traffic: traffic(1),
        backends: vec![BackendMetrics {
            address: "2001:db8::11".parse().unwrap(),
            port: 0,
            method: "we\"ird\\me\nthod".into(),
            weight: 1,
            configured_weight: 1,
            active: 1,
            inactive: 0,
            persistent: 0,
            traffic: traffic(1),
            health: Some(HealthMetrics {
                up: true,
                ..Default::default()
            }),
            removed: false,
        }],
    });
    m.workers.push(WorkerMetrics {
        worker: 1,
        busy_ratio: f64::NAN,
        ..Default::default()
    });
    m.workers.push(WorkerMetrics {
        worker: 2,
        busy_ratio: f64::INFINITY,
        drops: vec![("malformed".into(), u64::MAX)],
        ..Default::default()
    });
    // A redirect listener (`xvs_redirect_*`) with a name that needs escaping and a backend no
    // longer available.
    m.redirect.push(RedirectStatus {
        name: "web \"a\"".into(),
        listen: vec!["198.18.0.2:80".parse().unwrap()],
        service: "TCP 198.18.0.1:80".into(),
        scheduler: "wrr".into(),
        code: 302,
        persistence: 30,
        requests: 12,
        redirects: 9,
        bad_requests: 2,
        unavailable: 1,
        connection_errors: 0,
        refused: 0,
        internal_errors: 0,
        persistent_clients: 3,
        persistence_full: 0,
        backends: vec![
            RedirectBackend {
                addr: "198.19.0.11".parse().unwrap(),
                port: 8080,
                url: "http://198.19.0.11:8080".into(),
                weight: 2,
                redirects: 7,
            },
            RedirectBackend {
                addr: "2001:db8::11".parse().unwrap(),
                port: 80,
                url: "http://[2001:db8::11]".into(),
                weight: 0,
                redirects: 2,
            },
        ],
    });
    m
}

/// One parsed sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
}

/// Parse `name{l="v",…} value`, undoing label escapes; errors name the problem.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line}"))?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let consumed: usize;
        loop {
            // label name
            let mut lname = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                lname.push(c);
            }
            if !valid_label_name(&lname) {
                return Err(format!("bad label name {lname:?} in {line}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line}"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line}")),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line}")),
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((lname, value));
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    consumed = i + 1;
                    break;
                }
                other => return Err(format!("expected , or }} but {other:?} in {line}")),
            }
        }
        rest = &r[consumed..];
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line}"))?;
    if value.contains(' ') {
        return Err(format!("timestamps are not used: {line}"));
    }
    let ok = matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok();
    if !ok {
        return Err(format!("bad value {value:?} in {line}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: value.to_string(),
    })
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !n.starts_with("__")
}

/// The exposition rules xvs keeps: every line HELP, TYPE or a sample; HELP then TYPE once per
/// family, before its samples; a family's samples contiguous; names `xvs_…`; counters end in
/// `_total`, nothing else does; no series twice; text ends with a newline.
fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !helped.insert(name.to_string()) {
                return Err(format!("second HELP for {name}"));
            }
            if let Some(c) = current.take() {
                finished.insert(c);
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let (name, kind) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            if !helped.contains(name) {
                return Err(format!("TYPE before HELP for {name}"));
            }
            if !["counter", "gauge"].contains(&kind) {
                return Err(format!("unexpected type {kind} for {name}"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(format!("second TYPE for {name}"));
            }
            if !valid_metric_name(name)
                || !(name.starts_with("xvs_") || name.starts_with("node_ipvs_"))
            {
                return Err(format!("bad family name {name}"));
            }
            if (kind == "counter") != name.ends_with("_total") {
                return Err(format!(
                    "{kind} {name}: counters and only counters end in _total"
                ));
            }
            current = Some(name.to_string());
        } else if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line {line:?}"));
        } else {
            let s = parse_sample(line)?;
            if current.as_deref() != Some(s.name.as_str()) {
                return Err(format!(
                    "sample of {} outside its family block (TYPE missing or family split)",
                    s.name
                ));
            }
            if finished.contains(&s.name) {
                return Err(format!("family {} split", s.name));
            }
            let mut key = s.labels.clone();
            key.sort();
            if !series.insert((s.name.clone(), key)) {
                return Err(format!("duplicate series {line}"));
            }
            samples.push(s);
        }
    }
    Ok(samples)
}

#[test]
fn golden_text_is_valid_exposition() {
    check_exposition(GOLDEN).unwrap();
}

#[test]
fn larger_model_keeps_the_rules_and_escapes_labels() {
    let text = render(&large());
    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // The escaped method label round-trips.
    let weird = samples
        .iter()
        .find(|s| s.name == "xvs_backend_weight" && s.labels.iter().any(|(k, _)| k == "fwmark"))
        .expect("fwmark backend");
    let label = |s: &Sample, k: &str| {
        s.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(label(weird, "method").as_deref(), Some("we\"ird\\me\nthod"));
    assert_eq!(label(weird, "fwmark").as_deref(), Some("7"));
    assert_eq!(label(weird, "family").as_deref(), Some("ipv6"));
    assert_eq!(label(weird, "address").as_deref(), Some("2001:db8::11"));
    // Unchecked backends have no health series; checked ones do.
    let ups: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "xvs_backend_up")
        .collect();
    assert_eq!(ups.len(), 2);
    assert!(!samples.iter().any(
        |s| s.name == "xvs_backend_up" && label(s, "address").as_deref() == Some("198.19.0.12")
    ));
    // The redirect listener: its escaped name, redirects by backend, errors by kind.
    let value = |name: &str, extra: &[(&str, &str)]| -> Vec<String> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| label(s, "redirect").as_deref() == Some("web \"a\""))
            .filter(|s| {
                extra
                    .iter()
                    .all(|(k, v)| label(s, k).as_deref() == Some(*v))
            })
            .map(|s| s.value.clone())
            .collect()
    };
    assert_eq!(value("xvs_redirect_requests_total", &[]), ["12"]);
    assert_eq!(
        value(
            "xvs_redirect_redirects_total",
            &[("address", "2001:db8::11"), ("port", "80")]
        ),
        ["2"]
    );
    assert_eq!(
        value("xvs_redirect_errors_total", &[("kind", "bad_request")]),
        ["2"]
    );
    assert_eq!(value("xvs_redirect_errors_total", &[]).len(), 5);
    assert_eq!(value("xvs_redirect_backends", &[]), ["1"]);
    assert_eq!(value("xvs_redirect_persistent_clients", &[]), ["3"]);
    // Float edge cases and the largest counter.
    let busy: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "xvs_worker_busy_ratio")
        .map(|s| s.value.as_str())
        .collect();
    assert_eq!(busy, ["0.25", "NaN", "+Inf"]);
    assert!(text.contains(
        "xvs_worker_drops_total{worker=\"2\",reason=\"malformed\"} 18446744073709551615\n"
    ));
    // Every family has exactly one TYPE line.
    assert_eq!(text.matches("# TYPE xvs_backend_weight ").count(), 1);
}

#[test]
fn the_checker_catches_broken_expositions() {
    // The rules above can fail: each of these breaks one.
    let bad = [
        "# HELP xvs_a_total a\n# TYPE xvs_a_total gauge\nxvs_a_total 1\n",
        "# HELP xvs_a a\n# TYPE xvs_a counter\nxvs_a 1\n",
        "# HELP other_total a\n# TYPE other_total counter\nother_total 1\n",
        "# HELP xvs_a a\n# TYPE xvs_a gauge\nxvs_a{x=\"1\"} 1\nxvs_a{x=\"1\"} 2\n",
        "# HELP xvs_a a\n# TYPE xvs_a gauge\nxvs_a{x=\"a\\q\"} 1\n",
        "# HELP xvs_a a\n# TYPE xvs_a gauge\nxvs_a 1",
        "xvs_a 1\n",
        "# HELP xvs_a a\n# TYPE xvs_a gauge\nxvs_a one\n",
        "# HELP xvs_a a\n# TYPE xvs_a gauge\n# HELP xvs_b b\n# TYPE xvs_b gauge\nxvs_a 1\n",
    ];
    for b in bad {
        assert!(check_exposition(b).is_err(), "accepted {b:?}");
    }
    assert!(check_exposition("").is_err());
}

#[test]
fn empty_model_renders_nothing() {
    assert_eq!(render(&Metrics::default()), "");
}

#[test]
fn label_escaping() {
    assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label("x\ny"), "x\\ny");
    assert_eq!(escape_label("plain"), "plain");
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/1.0 exchange: (status line, headers, body).
fn get(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("header end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

#[test]
fn server_answers_scrapes_with_fresh_data() {
    let scrapes = Arc::new(AtomicU64::new(0));
    let counter = scrapes.clone();
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), move || {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let mut m = small();
        m.workers[0].rx_packets = n;
        m
    })
    .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    for n in 1..=2u64 {
        let (status, headers, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{headers}"
        );
        assert!(
            headers.contains(&format!("Content-Length: {}", body.len())),
            "{headers}"
        );
        check_exposition(&body).unwrap();
        assert!(body.contains(&format!(
            "xvs_worker_rx_packets_total{{worker=\"0\"}} {n}\n"
        )));
    }
    // Query strings are ignored; HEAD has no body; other paths and methods are 404.
    let (status, _, body) = get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(!body.is_empty());
    let (status, headers, body) = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Length: "));
    assert!(body.is_empty());
    let (status, _, _) = get(addr, "GET /other HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = get(addr, "POST /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = get(addr, "garbage\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(scrapes.load(Ordering::Relaxed), 4);

    let t = Instant::now();
    server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn a_panicking_provider_gives_500_and_the_server_keeps_serving() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), move || {
        if c.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("provider failed on purpose");
        }
        small()
    })
    .unwrap();
    let (status, _, _) = get(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
    let (status, _, body) = get(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, GOLDEN);
}

#[test]
fn a_silent_client_does_not_block_shutdown_forever() {
    let server = MetricsServer::start("[::1]:0".parse().unwrap(), Metrics::default)
        .or_else(|_| MetricsServer::start("127.0.0.1:0".parse().unwrap(), Metrics::default))
        .unwrap();
    let addr = server.local_addr();
    // Connects and sends nothing: the server gives up after its 2 s read timeout.
    let _idle = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn binding_a_busy_address_fails_cleanly() {
    let first = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Metrics::default).unwrap();
    let err = MetricsServer::start(first.local_addr(), Metrics::default)
        .err()
        .expect("in use");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

const NODE: Exposition = Exposition {
    node_exporter: true,
};

/// Run `promtool check metrics` (Prometheus's text-format parser and linter) on `text`.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, scripts/install-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn promtool_accepts_every_rendering() {
    for (what, text) in [
        ("golden", GOLDEN.to_string()),
        ("large", render(&large())),
        ("large with node_exporter", render_with(&large(), NODE)),
        (
            "empty with node_exporter",
            render_with(&Metrics::default(), NODE),
        ),
    ] {
        promtool(&text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
    }
    // promtool does fail: a value that is no float, a counter without _total, a split family.
    for bad in [
        "# HELP xvs_a a\n# TYPE xvs_a gauge\nxvs_a one\n",
        "# HELP xvs_a a\n# TYPE xvs_a counter\nxvs_a 1\n",
        "# HELP xvs_a a\n# TYPE xvs_a gauge\nxvs_a 1\n# HELP xvs_b b\n# TYPE xvs_b gauge\nxvs_b 1\nxvs_a 2\n",
    ] {
        assert!(promtool(bad).is_err(), "promtool accepted {bad:?}");
    }
}

/// node_exporter's ipvs collector (collector/ipvs_linux.go): name → (type, help).
const NODE_FAMILIES: [(&str, &str, &str); 8] = [
    (
        "node_ipvs_connections_total",
        "counter",
        "The total number of connections made.",
    ),
    (
        "node_ipvs_incoming_packets_total",
        "counter",
        "The total number of incoming packets.",
    ),
    (
        "node_ipvs_outgoing_packets_total",
        "counter",
        "The total number of outgoing packets.",
    ),
    (
        "node_ipvs_incoming_bytes_total",
        "counter",
        "The total amount of incoming data.",
    ),
    (
        "node_ipvs_outgoing_bytes_total",
        "counter",
        "The total amount of outgoing data.",
    ),
    (
        "node_ipvs_backend_connections_active",
        "gauge",
        "The current active connections by local and remote address.",
    ),
    (
        "node_ipvs_backend_connections_inactive",
        "gauge",
        "The current inactive connections by local and remote address.",
    ),
    (
        "node_ipvs_backend_weight",
        "gauge",
        "The current backend weight by local and remote address.",
    ),
];

#[test]
fn node_exporter_series_have_the_collectors_names_types_help_and_labels() {
    let m = large();
    let text = render_with(&m, NODE);
    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // xvs's own families are all still there, first.
    let own = render(&m);
    assert!(text.starts_with(&own));
    let node = &text[own.len()..];
    for (name, kind, help) in NODE_FAMILIES {
        assert!(
            node.contains(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")),
            "{name}"
        );
    }
    let families: HashSet<&str> = samples
        .iter()
        .filter(|s| s.name.starts_with("node_"))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(families, NODE_FAMILIES.iter().map(|f| f.0).collect());
    // Totals: no labels, summed over the services (traffic(7) + traffic(1)).
    let value = |name: &str| {
        let s: Vec<_> = samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(s.len(), 1, "{name}");
        assert!(s[0].labels.is_empty(), "{name}");
        s[0].value.clone()
    };
    assert_eq!(value("node_ipvs_connections_total"), "8");
    assert_eq!(value("node_ipvs_incoming_packets_total"), "80");
    assert_eq!(value("node_ipvs_outgoing_packets_total"), "72");
    assert_eq!(value("node_ipvs_incoming_bytes_total"), "8000");
    assert_eq!(value("node_ipvs_outgoing_bytes_total"), "72000");
    // Per backend: exactly the collector's six labels in its order, valued as procfs parses
    // /proc/net/ip_vs.
    let per_backend = |name: &str| -> Vec<Vec<(String, String)>> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.labels.clone())
            .collect()
    };
    let l = |v: [&str; 6]| -> Vec<(String, String)> {
        [
            "local_address",
            "local_port",
            "remote_address",
            "remote_port",
            "proto",
            "local_mark",
        ]
        .iter()
        .zip(v)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let expected = vec![
        l(["198.18.0.1", "80", "198.19.0.11", "8080", "TCP", ""]),
        l(["198.18.0.1", "80", "198.19.0.12", "8080", "TCP", ""]),
        l(["", "0", "2001:db8::11", "0", "FWM", "00000007"]),
    ];
    for name in [
        "node_ipvs_backend_connections_active",
        "node_ipvs_backend_connections_inactive",
        "node_ipvs_backend_weight",
    ] {
        assert_eq!(per_backend(name), expected, "{name}");
    }
    let values = |name: &str| -> Vec<String> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value.clone())
            .collect()
    };
    assert_eq!(
        values("node_ipvs_backend_connections_active"),
        ["2", "0", "1"]
    );
    assert_eq!(
        values("node_ipvs_backend_connections_inactive"),
        ["5", "0", "0"]
    );
    assert_eq!(values("node_ipvs_backend_weight"), ["3", "0", "1"]);
    // Off: none of them.
    assert!(!render(&m).contains("node_ipvs"));
}

#[test]
fn the_server_serves_node_exporter_series_when_asked() {
    let on = MetricsServer::start_with("127.0.0.1:0".parse().unwrap(), NODE, small).unwrap();
    let (status, _, body) = get(on.local_addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("node_ipvs_backend_weight{local_address=\"198.18.0.1\",local_port=\"80\",remote_address=\"198.19.0.11\",remote_port=\"8080\",proto=\"TCP\",local_mark=\"\"} 3\n"), "{body}");
    promtool(&body).unwrap();
    let off = MetricsServer::start("127.0.0.1:0".parse().unwrap(), small).unwrap();
    let (_, _, body) = get(off.local_addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(body.contains("xvs_backend_weight") && !body.contains("node_ipvs"));
}

/// Metric names (`xvs_*`, `node_ipvs_*`) and label names an expression or legend refers to.
fn promql_refs(expr: &str) -> (Vec<String>, Vec<String>) {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let metrics = expr
        .split(|c: char| !word(c))
        .filter(|t| t.starts_with("xvs_") || t.starts_with("node_ipvs_"))
        .map(str::to_string)
        .collect();
    let mut labels = Vec::new();
    // `by (a, b)` / `without (a)`.
    for kw in ["by (", "without ("] {
        for part in expr.split(kw).skip(1) {
            let list = part.split(')').next().unwrap_or("");
            labels.extend(list.split(',').map(|l| l.trim().to_string()));
        }
    }
    // Matchers `{a="x", b=~"y"}` (not legend templates `{{a}}`).
    for part in expr.split('{').skip(1) {
        let inner = part.split('}').next().unwrap_or("");
        for m in inner.split(',') {
            if let Some(i) = m.find(['=', '!']) {
                labels.push(m[..i].trim().to_string());
            }
        }
    }
    (metrics, labels)
}

#[test]
fn grafana_dashboard_queries_series_the_exposition_emits() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana/xvs.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard is JSON");
    // Every family and its label names, from a rendering with every kind of series.
    let text = render_with(&large(), NODE);
    let mut emitted: HashMap<String, HashSet<String>> = HashMap::new();
    for s in check_exposition(&text).unwrap() {
        let e = emitted.entry(s.name.clone()).or_default();
        e.extend(s.labels.iter().map(|(k, _)| k.clone()));
    }
    // Prometheus adds these at scrape time.
    let target_labels = ["instance", "job"];
    let mut exprs: Vec<(String, String)> = Vec::new();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr").to_string();
            let legend = t["legendFormat"].as_str().unwrap_or("").to_string();
            exprs.push((expr, legend));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push((q.to_string(), String::new()));
        }
    }
    let mut used = HashSet::new();
    for (expr, legend) in &exprs {
        let (metrics, labels) = promql_refs(expr);
        assert!(!metrics.is_empty(), "no xvs or node_ipvs series in {expr}");
        let mut known: HashSet<String> = target_labels.iter().map(|s| s.to_string()).collect();
        for m in &metrics {
            let l = emitted
                .get(m)
                .unwrap_or_else(|| panic!("{m} (in {expr}) is not emitted"));
            known.extend(l.iter().cloned());
            used.insert(m.clone());
        }
        // `label_values(metric, label)` names its label after the comma.
        let mut labels = labels;
        if let Some(rest) = expr.strip_prefix("label_values(") {
            labels.push(
                rest.split(',')
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches(')')
                    .trim()
                    .into(),
            );
        }
        let legend_labels = legend
            .split("{{")
            .skip(1)
            .map(|p| p.split("}}").next().unwrap_or("").trim().to_string());
        for l in labels.into_iter().chain(legend_labels) {
            assert!(
                known.contains(&l),
                "label {l} of {expr} / {legend:?} is on none of {metrics:?}"
            );
        }
    }
    // Each query is valid PromQL (Grafana's variables given values): promtool parses it as the
    // expression of a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (expr, _)) in exprs.iter().enumerate() {
        if expr.starts_with("label_values(") {
            continue; // a Grafana function, not PromQL
        }
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&promql).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("xvs-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Both families are used: every node_exporter series, and xvs's own.
    for (name, _, _) in NODE_FAMILIES {
        assert!(used.contains(name), "dashboard does not use {name}");
    }
    let own = used.iter().filter(|m| m.starts_with("xvs_")).count();
    assert!(own >= 8, "only {own} xvs series used");
    // The check can fail: a misspelt series and an unknown label are caught.
    let (m, _) = promql_refs("rate(xvs_service_conections_total[5m])");
    assert!(!emitted.contains_key(&m[0]));
    let (_, l) = promql_refs("sum by (backend) (xvs_backend_up{vip=\"x\"})");
    assert!(!emitted["xvs_backend_up"].contains(&l[0]));
}

#[test]
fn the_listener_serves_the_status_page_and_its_json() {
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), large).unwrap();
    for path in ["/", "/status"] {
        let (status, headers, body) = get(
            server.local_addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        assert!(status.contains("200"), "{path}: {status}");
        assert!(
            headers.contains("Content-Type: text/html; charset=utf-8"),
            "{headers}"
        );
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert!(body.contains("fetch(\"status.json\""));
        // No external assets: no URL with a scheme, no <link> or <script src>.
        for bad in ["http://", "https://", "<link", "src="] {
            assert!(!body.contains(bad), "{path} refers to {bad}");
        }
    }
    let (status, headers, body) = get(
        server.local_addr(),
        "GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("Content-Type: application/json"),
        "{headers}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["services"][0]["labels"]["kind"], "address");
    assert_eq!(v["services"][0]["labels"]["vip"], "198.18.0.1");
    assert_eq!(v["services"][0]["backends"][0]["health"]["up"], false);
    assert_eq!(v["services"][1]["labels"]["kind"], "fwmark");
    assert_eq!(v["services"][1]["labels"]["mark"], 7);
    assert_eq!(v["workers"][0]["drops"][0][0], "no_backend");
    // NaN and infinities (busy ratios) become null, which JSON can carry.
    assert!(v["workers"][1]["busy_ratio"].is_null());
    let (status, _, _) = get(
        server.local_addr(),
        "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(status.contains("404"), "{status}");
}

#[test]
fn a_removed_backend_has_only_its_health_series() {
    let mut m = small();
    m.services[0].backends.push(BackendMetrics {
        address: "198.19.0.13".parse().unwrap(),
        port: 8080,
        method: "nat".into(),
        weight: 5,
        configured_weight: 5,
        active: 0,
        inactive: 0,
        persistent: 0,
        traffic: Traffic::default(),
        health: Some(HealthMetrics {
            up: false,
            transitions: 1,
            checks_ok: 0,
            checks_failed: 2,
            since_unix: 1,
            response_us: None,
            load: None,
        }),
        removed: true,
    });
    let text = render_with(&m, NODE);
    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let of_removed: Vec<&str> = samples
        .iter()
        .filter(|s| s.labels.iter().any(|(_, v)| v == "198.19.0.13"))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        of_removed,
        [
            "xvs_backend_up",
            "xvs_backend_health_transitions_total",
            "xvs_backend_health_checks_total",
            "xvs_backend_health_checks_total"
        ]
    );
    assert!(text.contains("xvs_backend_up{protocol=\"tcp\",vip=\"198.18.0.1\",vport=\"80\",address=\"198.19.0.13\",port=\"8080\",method=\"nat\"} 0\n"));
    promtool(&text).unwrap();
}

/// Free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus (Debian `prometheus`) scrapes the exposition every second; each query of
/// the Grafana dashboard, with Grafana's variables given values, must return series.
#[test]
fn prometheus_answers_every_dashboard_query() {
    let scrapes = Arc::new(AtomicU64::new(0));
    let s = scrapes.clone();
    let server = MetricsServer::start_with("127.0.0.1:0".parse().unwrap(), NODE, move || {
        // Counters grow between scrapes, as on a director with traffic.
        let n = s.fetch_add(1, Ordering::Relaxed) + 1;
        let mut m = large();
        for svc in &mut m.services {
            svc.traffic = traffic(7 * n);
            for b in &mut svc.backends {
                b.traffic = traffic(3 * n);
            }
        }
        for w in &mut m.workers {
            w.rx_packets = 100 * n;
            w.drops = vec![("no_backend".into(), n), ("truncated".into(), 2 * n)];
            w.io_drops = vec![("tx_ring_full".into(), n)];
        }
        m
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("xvs-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: xvs\n    static_configs:\n      - targets: [\"{}\"]\n",
            server.local_addr()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian package prometheus, scripts/install-deps.sh)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(child);
    let query = |q: &str| -> Option<serde_json::Value> {
        let mut resp = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", q)
            .call()
            .ok()?;
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    };
    // Wait (bounded) until Prometheus has scraped at least three times.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = query("count_over_time(up{job=\"xvs\"}[1m])")
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_string)
            })
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape 3 times:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana/xvs.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            let v = query(&promql).unwrap_or_else(|| panic!("no answer to {promql}"));
            assert_eq!(v["status"], "success", "{promql}: {v}");
            let result = v["data"]["result"].as_array().expect("vector result");
            assert!(!result.is_empty(), "no series for {promql}");
            checked += 1;
        }
    }
    // The rates Prometheus computes from the counters are not zero.
    let v = query("sum(rate(node_ipvs_connections_total[1m]))").unwrap();
    let rate: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{v}");
    eprintln!("{checked} dashboard queries answered by Prometheus; connection rate {rate:.2}/s");
    drop(_prom);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_silent_client_does_not_delay_a_scrape() {
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), small).unwrap();
    let _silent = TcpStream::connect(server.local_addr()).unwrap();
    let mut half = TcpStream::connect(server.local_addr()).unwrap();
    half.write_all(b"GET /metr").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let (status, _, body) = get(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("xvs_backend_weight"));
    // One connection at a time would wait for the silent ones' 2 s timeouts.
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn syn_defence_events_are_exported_when_non_zero() {
    let mut m = small();
    m.workers[0].embryonic = 12;
    m.workers[0].syn_defense = vec![
        ("synproxy_syn_acks".into(), 9),
        ("embryonic_evicted".into(), 0),
    ];
    let text = render(&m);
    check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        text.contains("xvs_worker_embryonic_connections{worker=\"0\"} 12"),
        "{text}"
    );
    assert!(
        text.contains("xvs_worker_syn_defense_total{worker=\"0\",event=\"synproxy_syn_acks\"} 9"),
        "{text}"
    );
    assert!(
        !text.contains("embryonic_evicted"),
        "zero events are left out"
    );
}
