//! Health-check configuration: TOML parsing (unknown fields rejected), validation errors that
//! name the field and the reason, defaults, and the service/backend merge.

use std::time::Duration;

use xvs::control::health::{
    CheckConfig, CheckKind, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT,
};

fn parse(text: &str) -> CheckConfig {
    toml::from_str(text).expect("parses")
}

fn error(text: &str) -> String {
    parse(text)
        .validate("service[0].check")
        .map(|_| ())
        .expect_err("invalid")
        .to_string()
}

#[test]
fn defaults_are_documented_values() {
    let s = parse("type = \"tcp\"").validate("c").unwrap().unwrap();
    assert_eq!(s.kind, CheckKind::Tcp);
    assert_eq!(s.interval, DEFAULT_INTERVAL);
    assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    assert_eq!((s.rise, s.fall), (DEFAULT_RISE, DEFAULT_FALL));
    assert_eq!((DEFAULT_RISE, DEFAULT_FALL), (2, 3));
    assert!(!s.initially_down && !s.quiescent);
    assert_eq!((s.connect_ip, s.connect_port), (None, None));
}

#[test]
fn full_http_section_parses() {
    let s = parse(
        r#"
        type = "https"
        interval_ms = 2000
        timeout_ms = 1500
        rise = 4
        fall = 5
        initially_down = true
        quiescent = true
        connect_ip = "::1"
        connect_port = 8443
        path = "/healthz?full=1"
        host = "www.example.com"
        status = [200, 301]
        digest = "5D41402ABC4B2A76B9719D911017C592"
        insecure = true
        "#,
    )
    .validate("c")
    .unwrap()
    .unwrap();
    assert_eq!(s.kind, CheckKind::Https);
    assert_eq!(s.interval, Duration::from_millis(2000));
    assert_eq!(s.timeout, Duration::from_millis(1500));
    assert_eq!((s.rise, s.fall), (4, 5));
    assert!(s.initially_down && s.quiescent);
    assert_eq!(
        s.probe_addr("198.19.0.11:443".parse().unwrap()),
        "[::1]:8443".parse().unwrap()
    );
    match &s.probe {
        xvs::control::health::Probe::Http(h) => {
            assert_eq!(h.path, "/healthz?full=1");
            assert_eq!(h.status, vec![200, 301]);
            assert_eq!(
                h.digest.map(|d| d[0]),
                Some(0x5d),
                "upper-case hex is accepted"
            );
            assert!(h.tls.is_some());
        }
        _ => panic!("not http"),
    }
}

#[test]
fn unknown_fields_are_rejected_by_serde() {
    let e = toml::from_str::<CheckConfig>("type = \"tcp\"\nintreval_ms = 5").unwrap_err();
    assert!(e.to_string().contains("intreval_ms"), "{e}");
    let e = toml::from_str::<CheckConfig>("type = \"ftp\"").unwrap_err();
    assert!(e.to_string().contains("ftp"), "{e}");
}

#[test]
fn errors_name_the_field_and_the_reason() {
    let cases = [
        (
            "interval_ms = 100",
            "service[0].check.type: missing (tcp, http, https, udp, exec or none)",
        ),
        (
            "type = \"tcp\"\npath = \"/\"",
            "service[0].check.path: only for type http or https, not tcp",
        ),
        (
            "type = \"http\"\ninsecure = true",
            "service[0].check.insecure: only for type https, not http",
        ),
        (
            "type = \"http\"\nsend = \"x\"",
            "service[0].check.send: only for type udp, not http",
        ),
        (
            "type = \"udp\"\ncommand = \"/bin/true\"",
            "service[0].check.command: only for type exec, not udp",
        ),
        (
            "type = \"tcp\"\ninterval_ms = 5",
            "service[0].check.interval_ms: 5 is below the minimum of 10",
        ),
        (
            "type = \"tcp\"\ntimeout_ms = 0",
            "service[0].check.timeout_ms: 0 is below the minimum of 1",
        ),
        (
            "type = \"tcp\"\ntimeout_ms = 86400001",
            "service[0].check.timeout_ms: 86400001 is above 24 hours (86400000)",
        ),
        (
            "type = \"tcp\"\nrise = 0",
            "service[0].check.rise: 0 is out of range 1..=1000",
        ),
        (
            "type = \"tcp\"\nfall = 1001",
            "service[0].check.fall: 1001 is out of range 1..=1000",
        ),
        (
            "type = \"tcp\"\nconnect_port = 0",
            "service[0].check.connect_port: 0 is not a port",
        ),
        (
            "type = \"http\"\npath = \"healthz\"",
            "service[0].check.path: \"healthz\" does not start with '/'",
        ),
        (
            "type = \"http\"\npath = \"/a b\"",
            "service[0].check.path: contains whitespace or control characters",
        ),
        (
            "type = \"http\"\nhost = \"a\\r\\nX: y\"",
            "service[0].check.host: empty or contains whitespace or control characters",
        ),
        (
            "type = \"http\"\nstatus = 99",
            "service[0].check.status: 99 is not an HTTP status (100..=599)",
        ),
        (
            "type = \"http\"\nstatus = []",
            "service[0].check.status: empty list",
        ),
        (
            "type = \"http\"\ndigest = \"abc\"",
            "service[0].check.digest: \"abc\" is not an MD5 digest (32 hex digits)",
        ),
        (
            "type = \"https\"\ninsecure = true\nca_file = \"/x.pem\"",
            "service[0].check.ca_file: set together with insecure = true, which verifies nothing",
        ),
        (
            "type = \"udp\"\nsend = \"a\"\nsend_hex = \"00\"",
            "service[0].check.send_hex: set together with send",
        ),
        (
            "type = \"udp\"\nsend_hex = \"0g\"",
            "service[0].check.send_hex: \"0g\" is not hex",
        ),
        (
            "type = \"udp\"\nexpect_match = \"equals\"",
            "service[0].check.expect_match: set without expect or expect_hex",
        ),
        (
            "type = \"exec\"",
            "service[0].check.command: missing for type exec",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "for {text:?}");
    }
}

#[test]
fn unreadable_ca_file_names_the_file() {
    let e = error("type = \"https\"\nca_file = \"/nonexistent/xvs-ca.pem\"");
    assert!(
        e.starts_with("service[0].check.ca_file: /nonexistent/xvs-ca.pem"),
        "{e}"
    );
}

#[test]
fn type_none_switches_the_check_off() {
    assert!(parse("type = \"none\"").validate("c").unwrap().is_none());
}

#[test]
fn backend_section_overrides_the_service_field_by_field() {
    let service = parse("type = \"http\"\npath = \"/health\"\ninterval_ms = 1000\nfall = 2");
    let backend = parse("connect_port = 8080\nfall = 5");
    let merged = CheckConfig::merged(Some(&service), Some(&backend)).unwrap();
    let s = merged.validate("c").unwrap().unwrap();
    assert_eq!(s.kind, CheckKind::Http);
    assert_eq!(s.interval, Duration::from_millis(1000));
    assert_eq!(s.fall, 5);
    assert_eq!(s.connect_port, Some(8080));
    match s.probe {
        xvs::control::health::Probe::Http(h) => assert_eq!(h.path, "/health"),
        _ => panic!("not http"),
    }
    // Another type replaces the service's section wholesale (no `path` leaks into tcp).
    let tcp = parse("type = \"tcp\"");
    let merged = CheckConfig::merged(Some(&service), Some(&tcp)).unwrap();
    assert_eq!(merged, tcp);
    assert!(merged.validate("c").unwrap().is_some());
    // `type = "none"` on a backend switches the service's check off for it.
    let none = parse("type = \"none\"");
    let merged = CheckConfig::merged(Some(&service), Some(&none)).unwrap();
    assert!(merged.validate("c").unwrap().is_none());
    // Only one side, or none.
    assert_eq!(
        CheckConfig::merged(Some(&service), None),
        Some(service.clone())
    );
    assert_eq!(CheckConfig::merged(None, Some(&tcp)), Some(tcp));
    assert_eq!(CheckConfig::merged(None, None), None);
}

#[test]
fn specs_compare_by_their_configuration() {
    let a = parse("type = \"tcp\"\ninterval_ms = 100")
        .validate("c")
        .unwrap();
    let b = parse("type = \"tcp\"\ninterval_ms = 100")
        .validate("c")
        .unwrap();
    let c = parse("type = \"tcp\"\ninterval_ms = 200")
        .validate("c")
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn retry_interval_defaults_to_the_interval_and_merges() {
    let s = parse("type = \"tcp\"\ninterval_ms = 2000")
        .validate("c")
        .unwrap()
        .unwrap();
    assert_eq!(s.retry_interval, Duration::from_millis(2000));
    let s = parse("type = \"tcp\"\nretry_interval_ms = 300")
        .validate("c")
        .unwrap()
        .unwrap();
    assert_eq!(s.retry_interval, Duration::from_millis(300));
    assert_eq!(s.interval, DEFAULT_INTERVAL);
    let e = error("type = \"tcp\"\nretry_interval_ms = 5");
    assert_eq!(
        e,
        "service[0].check.retry_interval_ms: 5 is below the minimum of 10"
    );
    let merged = CheckConfig::merged(
        Some(&parse("type = \"tcp\"\nretry_interval_ms = 300")),
        Some(&parse("interval_ms = 900")),
    )
    .unwrap();
    assert_eq!(merged.retry_interval_ms, Some(300));
}

#[test]
fn status_ranges_expand_like_keepalived_status_code() {
    let s = parse("type = \"http\"\nstatus = [\"200-204\", 301]")
        .validate("c")
        .unwrap()
        .unwrap();
    match &s.probe {
        xvs::control::health::Probe::Http(h) => {
            assert_eq!(h.status, vec![200, 201, 202, 203, 204, 301])
        }
        _ => panic!("not http"),
    }
    for bad in [
        "\"299-200\"",
        "\"200-\"",
        "\"99-200\"",
        "\"200-600\"",
        "\"x\"",
    ] {
        let e = error(&format!("type = \"http\"\nstatus = [{bad}]"));
        assert!(e.starts_with("service[0].check.status: "), "{bad}: {e}");
    }
}

#[test]
fn warmup_defaults_to_zero() {
    let s = parse("type = \"tcp\"").validate("c").unwrap().unwrap();
    assert_eq!(s.warmup, Duration::ZERO);
    let s = parse("type = \"tcp\"\nwarmup_ms = 1500")
        .validate("c")
        .unwrap()
        .unwrap();
    assert_eq!(s.warmup, Duration::from_millis(1500));
    let e = error("type = \"tcp\"\nwarmup_ms = 90000000");
    assert!(e.starts_with("service[0].check.warmup_ms: "), "{e}");
}

#[test]
fn require_reply_is_for_udp_and_excludes_expect() {
    let e = error("type = \"tcp\"\nrequire_reply = false");
    assert!(
        e.starts_with("service[0].check.require_reply: only for type udp"),
        "{e}"
    );
    let e = error("type = \"udp\"\nrequire_reply = false\nexpect = \"x\"");
    assert!(
        e.starts_with("service[0].check.require_reply: false together"),
        "{e}"
    );
    assert!(parse("type = \"udp\"\nrequire_reply = false")
        .validate("c")
        .unwrap()
        .is_some());
}
