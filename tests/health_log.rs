//! Every health transition is one `tracing` event (target `xvs::health`): WARN for up → down,
//! INFO for down → up, a one-line message naming backend, service, old → new state and reason,
//! and the same as structured fields. A capturing subscriber is installed process-wide, so this
//! test lives in its own binary.

use std::fmt::Debug;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use xvs::control::health::{CheckConfig, CheckTarget, HealthChecker};

#[derive(Debug, Clone, PartialEq)]
struct Line {
    level: Level,
    target: String,
    message: String,
    fields: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        self.0.lock().unwrap().push(Line {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            message: f.message,
            fields: f.fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn transitions_are_logged_once_each_with_fields() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend: SocketAddr = listener.local_addr().unwrap();
    let cfg: CheckConfig =
        toml::from_str("type = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 200\nrise = 1\nfall = 1")
            .unwrap();
    let (mut checker, events) = HealthChecker::new();
    checker
        .set_targets(vec![CheckTarget {
            service: "tcp 198.18.0.1:80".into(),
            backend,
            spec: cfg.validate("check").unwrap().unwrap(),
        }])
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    drop(listener);
    let down = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(!down.up);
    let listener = TcpListener::bind(backend).unwrap();
    let up = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(up.up);
    checker.shutdown();
    drop(listener);

    let lines: Vec<Line> = capture
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.target == "xvs::health")
        .cloned()
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let field = |l: &Line, k: &str| {
        l.fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(lines[0].level, Level::WARN);
    assert_eq!(
        lines[0].message,
        format!("health: backend {backend} of tcp 198.18.0.1:80: up -> down (connection refused)")
    );
    assert_eq!(field(&lines[0], "service"), "tcp 198.18.0.1:80");
    assert_eq!(field(&lines[0], "backend"), backend.to_string());
    assert_eq!(field(&lines[0], "up"), "false");
    assert_eq!(field(&lines[0], "reason"), "connection refused");
    assert_eq!(lines[1].level, Level::INFO);
    assert_eq!(
        lines[1].message,
        format!("health: backend {backend} of tcp 198.18.0.1:80: down -> up (connected)")
    );
    assert_eq!(field(&lines[1], "up"), "true");
}
