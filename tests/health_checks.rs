//! Health checks against real servers on loopback (127.0.0.1 / ::1, ephemeral ports): a TCP
//! listener closed and reopened, a small HTTP server (plain and TLS with a self-signed
//! certificate) whose status and body change, a UDP echo server that can go silent, and exec
//! scripts (`true`, `false`, a sleeper killed on timeout). Intervals are short (50–100 ms);
//! bounds are generous (seconds) so that a loaded CI machine cannot make them flake, and the
//! lower bounds check the rise/fall counts.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use xvs::control::health::{
    probe_measured, probe_once, CheckConfig, CheckSpec, CheckTarget, HealthChecker, HealthEvent,
};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Slack added to every "within" bound for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

fn spec(toml_text: &str) -> CheckSpec {
    let cfg: CheckConfig = toml::from_str(toml_text).expect("check parses");
    cfg.validate("check")
        .expect("check is valid")
        .expect("not type none")
}

fn start(
    service: &str,
    backend: SocketAddr,
    spec: CheckSpec,
) -> (HealthChecker, mpsc::Receiver<HealthEvent>) {
    let (mut checker, events) = HealthChecker::new();
    checker
        .set_targets(vec![CheckTarget {
            service: service.into(),
            backend,
            spec,
        }])
        .expect("checker starts");
    (checker, events)
}

/// The next event, which must come within `within`; returns it with the time it took.
fn next_event(events: &mpsc::Receiver<HealthEvent>, within: Duration) -> (HealthEvent, Duration) {
    let t = Instant::now();
    let ev = events
        .recv_timeout(within)
        .unwrap_or_else(|e| panic!("no health event within {within:?}: {e}"));
    (ev, t.elapsed())
}

fn no_event(events: &mpsc::Receiver<HealthEvent>, during: Duration) {
    if let Ok(ev) = events.recv_timeout(during) {
        panic!("unexpected event {ev:?}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xvs-health-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------------------------

fn tcp_close_and_reopen(ip: IpAddr) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let backend = listener.local_addr().unwrap();
    let interval = Duration::from_millis(50);
    let (checker, events) = start(
        "tcp test",
        backend,
        spec("type = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 200\nrise = 2\nfall = 3\n"),
    );
    // Up at start (keepalived's default) and stays up while the listener answers.
    assert!(checker.is_up("tcp test", backend));
    no_event(&events, Duration::from_millis(300));
    let s = checker.state("tcp test", backend).unwrap();
    assert!(s.up && s.checks_ok >= 2 && s.checks_failed == 0, "{s:?}");

    drop(listener);
    let (ev, took) = next_event(&events, 3 * interval + Duration::from_millis(200) + SLACK);
    assert!(!ev.up, "{ev:?}");
    assert_eq!(ev.backend, backend);
    assert_eq!(ev.service, "tcp test");
    assert_eq!(ev.reason, "connection refused");
    // fall = 3: three failed probes, at least two intervals apart in all.
    assert!(
        took >= 2 * interval - Duration::from_millis(10),
        "down after {took:?}"
    );
    let s = checker.state("tcp test", backend).unwrap();
    assert!(!s.up && s.transitions == 1 && s.checks_failed >= 3, "{s:?}");

    let listener = TcpListener::bind(backend).expect("port still free");
    let (ev, took) = next_event(&events, 2 * interval + SLACK);
    assert!(ev.up, "{ev:?}");
    assert_eq!(ev.reason, "connected");
    assert!(
        took >= interval - Duration::from_millis(10),
        "up after {took:?}"
    );
    let s = checker.state("tcp test", backend).unwrap();
    assert!(s.up && s.transitions == 2, "{s:?}");
    drop(listener);
    checker.shutdown();
}

#[test]
fn tcp_down_when_closed_up_when_reopened_ipv4() {
    tcp_close_and_reopen(LOCAL);
}

#[test]
fn tcp_down_when_closed_up_when_reopened_ipv6() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    tcp_close_and_reopen("::1".parse().unwrap());
}

#[test]
fn connect_port_and_connect_ip_override_the_backend() {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // The backend itself has nothing listening; the probe goes to connect_ip:connect_port.
    let s = spec(&format!(
        "type = \"tcp\"\ntimeout_ms = 500\nconnect_ip = \"127.0.0.1\"\nconnect_port = {port}\n"
    ));
    let backend: SocketAddr = "127.0.0.2:1".parse().unwrap();
    assert_eq!(s.probe_addr(backend), SocketAddr::new(LOCAL, port));
    assert_eq!(probe_once(&s, "svc", backend), Ok("connected".into()));
    let plain = spec("type = \"tcp\"\ntimeout_ms = 500\n");
    assert!(probe_once(&plain, "svc", SocketAddr::new(LOCAL, 1)).is_err());
}

// ---------------------------------------------------------------------------------------------
// HTTP / HTTPS
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP/1.0 server: answers every request with the current status and body, records the
/// last request head.
struct HttpServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    body: Arc<Mutex<Vec<u8>>>,
    chunked: Arc<AtomicBool>,
    last_request: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let listener = TcpListener::bind((LOCAL, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let body = Arc::new(Mutex::new(b"hello".to_vec()));
        let chunked = Arc::new(AtomicBool::new(false));
        let last_request = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, bd, ch, lr, sp) = (
            status.clone(),
            body.clone(),
            chunked.clone(),
            last_request.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let status = st.load(Ordering::Relaxed);
                let body = bd.lock().unwrap().clone();
                let chunked = ch.load(Ordering::Relaxed);
                let result = match &tls {
                    None => serve_one(stream, status, &body, chunked),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        serve_one(
                            rustls::StreamOwned::new(conn, stream),
                            status,
                            &body,
                            chunked,
                        )
                    }
                };
                if let Ok(head) = result {
                    *lr.lock().unwrap() = head;
                }
            }
        });
        HttpServer {
            addr,
            status,
            body,
            chunked,
            last_request,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one<S: Read + Write>(
    mut s: S,
    status: u16,
    body: &[u8],
    chunked: bool,
) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let mut out =
        format!("HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\n").into_bytes();
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for part in body.chunks(3) {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
    s.write_all(&out)?;
    s.flush()?;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Poll the checker (bounded by `within`) until `done` holds for the backend's state.
fn wait_state(
    checker: &HealthChecker,
    backend: SocketAddr,
    within: Duration,
    done: impl Fn(&xvs::control::health::BackendHealth) -> bool,
) -> xvs::control::health::BackendHealth {
    let t = Instant::now();
    loop {
        let st = checker.state("svc", backend).expect("checked");
        if done(&st) {
            return st;
        }
        assert!(
            t.elapsed() < within,
            "state not reached within {within:?}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn response_times_and_http_load_figures_are_measured() {
    let server = HttpServer::start(None);
    *server.body.lock().unwrap() = b"37\n".to_vec();
    let s = spec("type = \"http\"\nload_path = \"/load\"\ninterval_ms = 50\ntimeout_ms = 2000\n");
    let o = probe_measured(&s, "svc", server.addr);
    assert_eq!(o.result, Ok("status 200".into()));
    assert_eq!(o.load, Some(Ok(37)));
    assert!(o.elapsed > Duration::ZERO && o.elapsed < Duration::from_secs(2));
    assert!(
        server
            .last_request
            .lock()
            .unwrap()
            .starts_with("GET /load "),
        "the load request follows the probe"
    );
    // An unreadable load answer: the probe stays healthy, the load is unknown and says why.
    *server.body.lock().unwrap() = b"busy".to_vec();
    let o = probe_measured(&s, "svc", server.addr);
    assert_eq!(o.result, Ok("status 200".into()));
    assert!(
        matches!(&o.load, Some(Err(e)) if e.contains("not a number")),
        "{o:?}"
    );

    // In the checker: smoothed response time and load kept per backend.
    *server.body.lock().unwrap() = b"12".to_vec();
    let (checker, _events) = start("svc", server.addr, s.clone());
    let st = wait_state(&checker, server.addr, SLACK, |st| {
        st.load == Some(12) && st.response_avg.is_some() && st.checks_ok >= 2
    });
    assert!(st.response.is_some() && st.up, "{st:?}");
    *server.body.lock().unwrap() = b"250".to_vec();
    let st = wait_state(&checker, server.addr, SLACK, |st| st.load.is_none());
    assert!(st.up, "{st:?}");
    assert!(
        st.last_result.contains("load: 250 is outside 0..=100"),
        "{st:?}"
    );
    drop(checker);

    // TCP and exec checks are measured too; failures are not.
    let tcp = spec("type = \"tcp\"\ninterval_ms = 50\n");
    let (checker, _events) = start("svc", server.addr, tcp);
    wait_state(&checker, server.addr, SLACK, |st| st.response_avg.is_some());
    drop(checker);
    let exec = spec("type = \"exec\"\ncommand = \"/bin/true\"\ninterval_ms = 50\n");
    let o = probe_measured(&exec, "svc", server.addr);
    assert_eq!(o.result, Ok("exit code 0".into()));
    assert!(o.elapsed > Duration::ZERO);
    let closed = spec("type = \"tcp\"\ninterval_ms = 50\nfall = 1\n");
    let dead = SocketAddr::new(LOCAL, 1);
    let (checker, _events) = start("svc", dead, closed);
    let st = wait_state(&checker, dead, SLACK, |st| st.checks_failed >= 2);
    assert_eq!((st.response, st.response_avg), (None, None), "{st:?}");
}

fn http_200_then_503_then_200(server: &HttpServer, check: CheckSpec) {
    let interval = Duration::from_millis(50);
    let (checker, events) = start("http test", server.addr, check);
    no_event(&events, Duration::from_millis(300));
    let s = checker.state("http test", server.addr).unwrap();
    assert!(s.up && s.checks_ok >= 2, "{s:?}");
    server.status.store(503, Ordering::Relaxed);
    let (ev, took) = next_event(&events, 2 * interval + Duration::from_millis(500) + SLACK);
    assert!(!ev.up);
    assert_eq!(ev.reason, "status 503");
    assert!(
        took >= interval - Duration::from_millis(10),
        "down after {took:?}"
    );
    server.status.store(200, Ordering::Relaxed);
    let (ev, _) = next_event(&events, 2 * interval + SLACK);
    assert!(ev.up, "{ev:?}");
    assert!(ev.reason.starts_with("status 200"), "{}", ev.reason);
    assert_eq!(
        checker.state("http test", server.addr).unwrap().transitions,
        2
    );
}

#[test]
fn http_status_changes_flip_the_backend() {
    let server = HttpServer::start(None);
    http_200_then_503_then_200(
        &server,
        spec("type = \"http\"\ninterval_ms = 50\ntimeout_ms = 500\nrise = 2\nfall = 2\npath = \"/healthz\"\nhost = \"www.example.com\"\n"),
    );
    let head = server.last_request.lock().unwrap().clone();
    assert!(head.starts_with("GET /healthz HTTP/1.0\r\n"), "{head}");
    // Header names are case-insensitive (RFC 9110); ureq sends them in lower case.
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nhost: www.example.com\r\n"), "{head}");
}

#[test]
fn http_default_host_is_the_probed_address_and_status_list_is_honoured() {
    let server = HttpServer::start(None);
    server.status.store(204, Ordering::Relaxed);
    let only_200 = spec("type = \"http\"\ntimeout_ms = 1000\n");
    assert_eq!(
        probe_once(&only_200, "svc", server.addr),
        Err("status 204".into())
    );
    let list = spec("type = \"http\"\ntimeout_ms = 1000\nstatus = [200, 204]\n");
    assert_eq!(
        probe_once(&list, "svc", server.addr),
        Ok("status 204".into())
    );
    let head = server.last_request.lock().unwrap().clone();
    assert!(head.starts_with("GET / HTTP/1.0\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: {}\r\n", server.addr)),
        "{head}"
    );
}

#[test]
fn http_digest_mismatch_fails_and_match_passes() {
    let server = HttpServer::start(None);
    let check = format!(
        "type = \"http\"\ninterval_ms = 50\ntimeout_ms = 500\nrise = 1\nfall = 1\ndigest = \"{}\"\n",
        md5_hex(b"hello")
    );
    assert_eq!(
        probe_once(&spec(&check), "svc", server.addr),
        Ok("status 200, digest ok".into())
    );
    // Chunked bodies are decoded before hashing.
    server.chunked.store(true, Ordering::Relaxed);
    assert_eq!(
        probe_once(&spec(&check), "svc", server.addr),
        Ok("status 200, digest ok".into())
    );
    let (checker, events) = start("digest test", server.addr, spec(&check));
    no_event(&events, Duration::from_millis(200));
    *server.body.lock().unwrap() = b"hello, changed".to_vec();
    let (ev, _) = next_event(&events, Duration::from_millis(600) + SLACK);
    assert!(!ev.up);
    assert_eq!(
        ev.reason,
        format!("digest mismatch (body md5 {})", md5_hex(b"hello, changed"))
    );
    drop(checker);
}

#[test]
fn http_closed_port_and_silent_server() {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts (the kernel does) but never answers: the probe times out.
    let s = spec("type = \"http\"\ntimeout_ms = 300\n");
    let t = Instant::now();
    assert_eq!(
        probe_once(&s, "svc", addr),
        Err("timeout after 300ms".into())
    );
    assert!(t.elapsed() >= Duration::from_millis(290));
    assert!(t.elapsed() < Duration::from_millis(300) + SLACK);
    // The same for TLS: the handshake waits for a ServerHello that never comes.
    let tls = spec("type = \"https\"\ninsecure = true\ntimeout_ms = 300\n");
    let t = Instant::now();
    assert_eq!(
        probe_once(&tls, "svc", addr),
        Err("timeout after 300ms".into())
    );
    assert!(t.elapsed() < Duration::from_millis(300) + SLACK);
    drop(listener);
    assert_eq!(
        probe_once(&s, "svc", addr),
        Err("connection refused".into())
    );
}

/// One connection answered with `response` verbatim, then closed.
fn answer_once(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response);
        }
    });
    addr
}

#[test]
fn http_sloppy_and_broken_responses() {
    let digest = format!(
        "type = \"http\"\ntimeout_ms = 2000\ndigest = \"{}\"\n",
        md5_hex(b"body")
    );
    // Bare LF line ends, no Content-Length: the body runs to the close.
    let addr = answer_once(b"HTTP/1.0 200 OK\nServer: x\n\nbody");
    assert_eq!(
        probe_once(&spec(&digest), "svc", addr),
        Ok("status 200, digest ok".into())
    );
    let plain = spec("type = \"http\"\ntimeout_ms = 2000\n");
    let addr = answer_once(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
    let reason = probe_once(&plain, "svc", addr).unwrap_err();
    assert!(
        reason.starts_with("malformed response: ") && reason.contains("HTTP version"),
        "{reason}"
    );
    let addr = answer_once(b"");
    assert_eq!(
        probe_once(&plain, "svc", addr),
        Err("connection closed without a response".into())
    );
    // Content-Length longer than what arrives: the body is what came before the close.
    let addr = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nbody");
    assert_eq!(
        probe_once(&spec(&digest), "svc", addr),
        Ok("status 200, digest ok".into())
    );
}

fn tls_server_config() -> (Arc<rustls::ServerConfig>, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    (Arc::new(cfg), ck.cert.pem())
}

#[test]
fn https_self_signed_with_insecure() {
    let (tls, _) = tls_server_config();
    let server = HttpServer::start(Some(tls));
    http_200_then_503_then_200(
        &server,
        spec("type = \"https\"\ninsecure = true\ninterval_ms = 50\ntimeout_ms = 1000\nrise = 2\nfall = 2\nhost = \"localhost\"\npath = \"/tls\"\n"),
    );
    let head = server.last_request.lock().unwrap().clone();
    assert!(head.starts_with("GET /tls HTTP/1.0\r\n"), "{head}");
}

#[test]
fn https_verifies_certificates_unless_insecure() {
    let (tls, pem) = tls_server_config();
    let server = HttpServer::start(Some(tls));
    // Web roots: a self-signed certificate is refused.
    let verified = spec("type = \"https\"\ntimeout_ms = 2000\nhost = \"localhost\"\n");
    let reason = probe_once(&verified, "svc", server.addr).expect_err("untrusted certificate");
    assert!(reason.starts_with("TLS: "), "{reason}");
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    // Trusted through ca_file, by name and by address.
    let dir = scratch("ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let by_name = spec(&format!(
        "type = \"https\"\ntimeout_ms = 2000\nhost = \"localhost\"\nca_file = \"{}\"\n",
        ca.display()
    ));
    assert_eq!(
        probe_once(&by_name, "svc", server.addr),
        Ok("status 200".into())
    );
    let by_addr = spec(&format!(
        "type = \"https\"\ntimeout_ms = 2000\nca_file = \"{}\"\n",
        ca.display()
    ));
    assert_eq!(
        probe_once(&by_addr, "svc", server.addr),
        Ok("status 200".into())
    );
    // A name the certificate does not carry is refused.
    let wrong_name = spec(&format!(
        "type = \"https\"\ntimeout_ms = 2000\nhost = \"www.example.com\"\nca_file = \"{}\"\n",
        ca.display()
    ));
    let reason = probe_once(&wrong_name, "svc", server.addr).expect_err("name mismatch");
    assert!(reason.starts_with("TLS: "), "{reason}");
    // Plain HTTP against a TLS server is not a valid response.
    let plain = spec("type = \"http\"\ntimeout_ms = 500\n");
    assert!(probe_once(&plain, "svc", server.addr).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------------

struct UdpEcho {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Answers "pong:" + the request, unless silent.
    fn start(ip: IpAddr) -> UdpEcho {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (si, sp) = (silent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !sp.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    if !si.load(Ordering::Relaxed) {
                        let mut reply = b"pong:".to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = sock.send_to(&reply, peer);
                    }
                }
            }
        });
        UdpEcho {
            addr,
            silent,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn udp_request_expect_variants() {
    let echo = UdpEcho::start(LOCAL);
    let p = |t: &str| {
        probe_once(
            &spec(&format!("type = \"udp\"\ntimeout_ms = 1000\n{t}")),
            "svc",
            echo.addr,
        )
    };
    assert_eq!(p("send = \"ping\"\n"), Ok("reply of 9 bytes".into()));
    assert_eq!(
        p("send = \"ping\"\nexpect = \"pong\"\n"),
        Ok("reply matches".into())
    );
    assert_eq!(
        p("send = \"ping\"\nexpect = \"pong:ping\"\nexpect_match = \"equals\"\n"),
        Ok("reply matches".into())
    );
    assert_eq!(
        p("send = \"ping\"\nexpect = \"pong\"\nexpect_match = \"equals\"\n"),
        Err("unexpected reply (9 bytes)".into())
    );
    assert_eq!(
        p("send_hex = \"00ff\"\nexpect_hex = \"3a00ff\"\n"),
        Ok("reply matches".into())
    );
    assert_eq!(
        p("send = \"ping\"\nexpect = \"nope\"\n"),
        Err("unexpected reply (9 bytes)".into())
    );
}

#[test]
fn udp_silent_server_goes_down_and_comes_back() {
    let echo = UdpEcho::start(LOCAL);
    let interval = Duration::from_millis(50);
    let (checker, events) = start(
        "udp test",
        echo.addr,
        spec("type = \"udp\"\nsend = \"ping\"\nexpect = \"pong\"\ninterval_ms = 50\ntimeout_ms = 100\nrise = 2\nfall = 2\n"),
    );
    no_event(&events, Duration::from_millis(250));
    echo.silent.store(true, Ordering::Relaxed);
    let (ev, _) = next_event(&events, 2 * (interval + Duration::from_millis(100)) + SLACK);
    assert!(!ev.up);
    assert_eq!(ev.reason, "no reply (timeout after 100ms)");
    echo.silent.store(false, Ordering::Relaxed);
    let (ev, _) = next_event(&events, 2 * interval + SLACK);
    assert!(ev.up);
    assert_eq!(ev.reason, "reply matches");
    drop(checker);
}

#[test]
fn udp_closed_port_is_refused_at_once() {
    let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let s = spec("type = \"udp\"\nsend = \"ping\"\ntimeout_ms = 2000\n");
    let t = Instant::now();
    assert_eq!(
        probe_once(&s, "svc", addr),
        Err("connection refused".into())
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn udp_over_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let echo = UdpEcho::start("::1".parse().unwrap());
    let s = spec("type = \"udp\"\nsend = \"x\"\nexpect = \"pong:x\"\ntimeout_ms = 1000\n");
    assert_eq!(probe_once(&s, "svc", echo.addr), Ok("reply matches".into()));
}

// ---------------------------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------------------------

fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn exec_true_false_and_arguments() {
    let dir = scratch("exec");
    let backend: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let ok = spec("type = \"exec\"\ncommand = \"true\"\ntimeout_ms = 2000\n");
    assert_eq!(probe_once(&ok, "svc", backend), Ok("exit code 0".into()));
    let fail = spec("type = \"exec\"\ncommand = \"false\"\ntimeout_ms = 2000\n");
    assert_eq!(probe_once(&fail, "svc", backend), Err("exit code 1".into()));
    let out = dir.join("out");
    let s = script(
        &dir,
        "args.sh",
        &format!(
            "echo \"$* $XVS_BACKEND_ADDRESS $XVS_BACKEND_PORT $XVS_SERVICE\" > {}\nexit 3",
            out.display()
        ),
    );
    let with_args = spec(&format!(
        "type = \"exec\"\ncommand = \"{}\"\nargs = [\"--quick\"]\ntimeout_ms = 2000\n",
        s.display()
    ));
    assert_eq!(
        probe_once(&with_args, "tcp 198.18.0.1:80", backend),
        Err("exit code 3".into())
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "--quick 127.0.0.1 8080 127.0.0.1 8080 tcp 198.18.0.1:80\n"
    );
    let missing =
        spec("type = \"exec\"\ncommand = \"/nonexistent/xvs-check\"\ntimeout_ms = 2000\n");
    let reason = probe_once(&missing, "svc", backend).unwrap_err();
    assert!(
        reason.starts_with("cannot run /nonexistent/xvs-check"),
        "{reason}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn exec_timeout_kills_the_whole_process_group() {
    let dir = scratch("sleep");
    let pidfile = dir.join("pid");
    let s = script(
        &dir,
        "sleeper.sh",
        &format!("sleep 30 &\necho $! > {}\nwait", pidfile.display()),
    );
    let check = spec(&format!(
        "type = \"exec\"\ncommand = \"{}\"\ntimeout_ms = 300\n",
        s.display()
    ));
    let t = Instant::now();
    let r = probe_once(&check, "svc", "127.0.0.1:80".parse().unwrap());
    let took = t.elapsed();
    assert_eq!(r, Err("timeout after 300ms (killed)".into()));
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(300) + SLACK,
        "{took:?}"
    );
    // The grandchild (`sleep 30`) was killed with the group: gone (or a zombie) soon after.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let pid = pid.trim();
    let deadline = Instant::now() + SLACK;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if stat.is_empty() || state == "Z" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {pid} still running: {stat}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn exec_initially_down_rises_after_rise_probes() {
    let backend: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let interval = Duration::from_millis(100);
    let (checker, events) = start(
        "exec test",
        backend,
        spec("type = \"exec\"\ncommand = \"true\"\ninterval_ms = 100\ntimeout_ms = 1000\nrise = 3\ninitially_down = true\nquiescent = true\n"),
    );
    assert!(!checker.is_up("exec test", backend));
    let s = checker.state("exec test", backend).unwrap();
    assert_eq!((s.reason.as_str(), s.transitions), ("initially down", 0));
    // One event so that a consumer following only events starts it down too.
    let (ev, _) = next_event(&events, SLACK);
    assert_eq!(
        (ev.up, ev.reason.as_str(), ev.quiescent),
        (false, "initially down", true)
    );
    let (ev, took) = next_event(&events, 3 * interval + SLACK);
    assert!(ev.up && ev.quiescent, "{ev:?}");
    // rise = 3: the third success comes two intervals after the first.
    assert!(
        took >= 2 * interval - Duration::from_millis(10),
        "up after {took:?}"
    );
    assert!(checker.is_up("exec test", backend));
    assert_eq!(checker.state("exec test", backend).unwrap().transitions, 1);
}

#[test]
fn exec_dynamic_exit_codes_set_weights() {
    // keepalived's misc_dynamic: 2-255 healthy with weight code - 2, 0 healthy (weight kept),
    // 1 failed; a weight change alone is an event too.
    let dir = scratch("exec-dynamic");
    let code = dir.join("code");
    std::fs::write(&code, "7").unwrap();
    let cmd = script(&dir, "check", &format!("exit $(cat {})", code.display()));
    let backend: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let interval = Duration::from_millis(100);
    let (checker, events) = start(
        "dyn",
        backend,
        spec(&format!(
            "type = \"exec\"\ncommand = \"{}\"\ndynamic = true\ninterval_ms = 100\ntimeout_ms = 1000\nrise = 1\nfall = 1\n",
            cmd.display()
        )),
    );
    let (ev, _) = next_event(&events, interval + SLACK);
    assert_eq!((ev.up, ev.weight), (true, Some(5)), "{ev:?}");
    assert_eq!(ev.reason, "exit code 7: weight 5");
    std::fs::write(&code, "2").unwrap();
    let (ev, _) = next_event(&events, 2 * interval + SLACK);
    assert_eq!((ev.up, ev.weight), (true, Some(0)), "{ev:?}");
    assert!(checker.is_up("dyn", backend));
    std::fs::write(&code, "1").unwrap();
    let (ev, _) = next_event(&events, 2 * interval + SLACK);
    assert_eq!(
        (ev.up, ev.reason.as_str()),
        (false, "exit code 1"),
        "{ev:?}"
    );
    std::fs::write(&code, "0").unwrap();
    let (ev, _) = next_event(&events, 2 * interval + SLACK);
    // Exit code 0 keeps the last weight set.
    assert_eq!((ev.up, ev.weight), (true, Some(0)), "{ev:?}");
    drop(checker);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Checker lifecycle
// ---------------------------------------------------------------------------------------------

#[test]
fn reload_keeps_unchanged_checks_and_drops_removed_ones() {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let a = listener.local_addr().unwrap();
    let b: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let check = spec("type = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 200\nrise = 1\nfall = 1\n");
    let (mut checker, events) = HealthChecker::new();
    let both = vec![
        CheckTarget {
            service: "s".into(),
            backend: a,
            spec: check.clone(),
        },
        CheckTarget {
            service: "s".into(),
            backend: b,
            spec: check.clone(),
        },
    ];
    checker.set_targets(both.clone()).unwrap();
    let (ev, _) = next_event(&events, SLACK);
    assert_eq!((ev.backend, ev.up), (b, false));
    assert_eq!(checker.states().len(), 2);
    std::thread::sleep(Duration::from_millis(200));
    let before = checker.state("s", a).unwrap();
    // Same targets again: nothing restarts, counts keep growing.
    checker.set_targets(both).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after = checker.state("s", a).unwrap();
    assert!(after.checks_ok > before.checks_ok, "{before:?} {after:?}");
    assert_eq!(after.since, before.since);
    // A changed spec restarts the check but keeps state and counts.
    let slower = spec("type = \"tcp\"\ninterval_ms = 60\ntimeout_ms = 200\nrise = 1\nfall = 1\n");
    checker
        .set_targets(vec![
            CheckTarget {
                service: "s".into(),
                backend: a,
                spec: slower.clone(),
            },
            CheckTarget {
                service: "s".into(),
                backend: b,
                spec: slower,
            },
        ])
        .unwrap();
    let b_state = checker.state("s", b).unwrap();
    assert!(!b_state.up && b_state.transitions == 1, "{b_state:?}");
    assert!(checker.state("s", a).unwrap().checks_ok >= after.checks_ok);
    // Removed: gone from the table, no more events.
    checker
        .set_targets(vec![CheckTarget {
            service: "s".into(),
            backend: a,
            spec: check,
        }])
        .unwrap();
    assert!(checker.state("s", b).is_none());
    assert!(checker.is_up("s", b), "an unchecked backend counts as up");
    assert_eq!(checker.states().len(), 1);
    no_event(&events, Duration::from_millis(200));
    drop(listener);
}

#[test]
fn reload_does_not_wait_for_a_probe_in_flight() {
    // Accepts (kernel backlog) but never answers: each probe takes its whole 3 s timeout.
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let a = listener.local_addr().unwrap();
    let (mut checker, events) = start(
        "s",
        a,
        spec("type = \"http\"\ninterval_ms = 50\ntimeout_ms = 3000\nfall = 1\n"),
    );
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    checker.set_targets(Vec::new()).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(checker.states().is_empty());
    // The stopped checker's probe times out later and records nothing.
    no_event(&events, Duration::from_millis(3500));
    assert!(checker.states().is_empty());
    let t = Instant::now();
    checker.shutdown();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    drop(listener);
}

#[test]
fn shutdown_is_prompt_even_with_long_intervals() {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let a = listener.local_addr().unwrap();
    let (checker, _events) = start(
        "s",
        a,
        spec("type = \"tcp\"\ninterval_ms = 60000\ntimeout_ms = 1000\n"),
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(checker.state("s", a).unwrap().checks_ok, 1);
    let t = Instant::now();
    checker.shutdown();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // A TcpStream to prove the listener still works (the checker held nothing).
    assert!(TcpStream::connect(a).is_ok());
}

#[test]
fn too_many_checks_are_refused() {
    let check = spec("type = \"tcp\"\ninterval_ms = 60000\n");
    let targets: Vec<CheckTarget> = (0..=HealthChecker::MAX_CHECKS)
        .map(|i| CheckTarget {
            service: format!("s{i}"),
            backend: SocketAddr::new(LOCAL, 1),
            spec: check.clone(),
        })
        .collect();
    let (mut checker, _events) = HealthChecker::new();
    let err = checker.set_targets(targets).unwrap_err();
    assert!(err.to_string().contains("exceed the limit"), "{err}");
    assert!(checker.states().is_empty());
}

/// keepalived's `delay_before_retry`: once an up backend fails, the next probes come after
/// `retry_interval_ms` rather than `interval_ms`, so it falls after `fall` quick probes; down, it is
/// probed at `interval_ms` again.
#[test]
fn retry_interval_paces_the_fall_count() {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let backend = listener.local_addr().unwrap();
    // Long interval, short retry interval: up at the first probe, then the listener goes away.
    let s = spec("type = \"tcp\"\ninterval_ms = 4000\nretry_interval_ms = 50\nfall = 3\nrise = 1\ntimeout_ms = 500");
    assert_eq!(s.retry_interval, Duration::from_millis(50));
    let (checker, events) = start("tcp 198.18.0.1:80", backend, s);
    // The first probe (at once) succeeds; wait until it has been recorded.
    let t = Instant::now();
    while checker
        .state("tcp 198.18.0.1:80", backend)
        .map(|s| s.checks_ok)
        != Some(1)
    {
        assert!(t.elapsed() < SLACK, "first probe not recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(listener);
    // Probe 2 fails at t = 4 s; probes 3 and 4 follow 50 ms apart: down at about 4.1 s. Paced by
    // interval_ms instead it would take 12 s.
    let (ev, took) = next_event(&events, Duration::from_secs(4) + SLACK);
    assert!(!ev.up, "{ev:?}");
    assert!(
        took >= Duration::from_millis(3900),
        "fell too early: {took:?}"
    );
    let st = checker.state("tcp 198.18.0.1:80", backend).unwrap();
    assert_eq!(st.checks_failed, 3);
    // Down: no quick retries any more (the next probe is 4 s away).
    std::thread::sleep(Duration::from_millis(500));
    let st = checker.state("tcp 198.18.0.1:80", backend).unwrap();
    assert_eq!(
        st.checks_failed, 3,
        "a down backend is probed at interval_ms"
    );
    checker.shutdown();
}

/// keepalived's `warmup`: each checker's first probe comes after a random delay below
/// `warmup_ms`, so that checks of many backends spread out.
#[test]
fn warmup_spreads_the_first_probes() {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let backend = listener.local_addr().unwrap();
    let s = spec("type = \"tcp\"\ninterval_ms = 60000\nwarmup_ms = 400\ntimeout_ms = 500");
    let (mut checker, _events) = HealthChecker::new();
    let targets: Vec<CheckTarget> = (0..16)
        .map(|i| CheckTarget {
            service: format!("tcp 198.18.0.{i}:80"),
            backend,
            spec: s.clone(),
        })
        .collect();
    let t = Instant::now();
    checker.set_targets(targets).unwrap();
    let mut first: Vec<Option<Duration>> = vec![None; 16];
    while first.iter().any(Option::is_none) {
        assert!(
            t.elapsed() < Duration::from_millis(400) + SLACK,
            "{first:?}"
        );
        for (i, f) in first.iter_mut().enumerate() {
            if f.is_none()
                && checker
                    .state(&format!("tcp 198.18.0.{i}:80"), backend)
                    .is_some_and(|s| s.checks_ok == 1)
            {
                *f = Some(t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let first: Vec<Duration> = first.into_iter().flatten().collect();
    // Uniform below 400 ms: all 16 under 40 ms has probability 1e-16.
    assert!(
        first.iter().any(|d| *d >= Duration::from_millis(40)),
        "no first probe was delayed: {first:?}"
    );
    checker.shutdown();
}

/// keepalived's start without `alpha`: a backend whose very first check fails goes down at once;
/// later failures need `fall` in a row.
#[test]
fn first_probe_decides_takes_a_dead_backend_down_at_once() {
    // A port nothing listens on.
    let backend = TcpListener::bind((LOCAL, 0)).unwrap().local_addr().unwrap();
    let base = "type = \"tcp\"\ninterval_ms = 4000\nfall = 3\nrise = 1\ntimeout_ms = 500";
    let (checker, events) = start(
        "tcp 198.18.0.1:80",
        backend,
        spec(&format!("{base}\nfirst_probe_decides = true")),
    );
    let (ev, took) = next_event(&events, SLACK);
    assert!(
        !ev.up && took < Duration::from_secs(3),
        "{ev:?} after {took:?}"
    );
    assert_eq!(
        checker
            .state("tcp 198.18.0.1:80", backend)
            .unwrap()
            .checks_failed,
        1
    );
    checker.shutdown();
    // Without it the first failure only starts the count.
    let (checker, events) = start("tcp 198.18.0.1:80", backend, spec(base));
    no_event(&events, Duration::from_millis(1500));
    assert!(checker.is_up("tcp 198.18.0.1:80", backend));
    checker.shutdown();
}

/// keepalived's UDP_CHECK without `require_reply`: a silent server is up, a closed port (ICMP port
/// unreachable) is down.
#[test]
fn udp_without_require_reply_takes_silence_as_success() {
    let silent = UdpSocket::bind((LOCAL, 0)).unwrap();
    let s = spec("type = \"udp\"\nsend_hex = \"0102\"\ntimeout_ms = 200\nrequire_reply = false\n");
    assert_eq!(
        probe_once(&s, "svc", silent.local_addr().unwrap()),
        Ok("no reply (timeout after 200ms), no ICMP error".into())
    );
    let mut got = [0u8; 8];
    assert_eq!(silent.recv(&mut got).unwrap(), 2, "the payload was sent");
    let closed = UdpSocket::bind((LOCAL, 0)).unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    assert_eq!(
        probe_once(&s, "svc", addr),
        Err("connection refused".into())
    );
    // The default still needs a reply.
    let strict = spec("type = \"udp\"\ntimeout_ms = 200\n");
    assert_eq!(
        probe_once(&strict, "svc", silent.local_addr().unwrap()),
        Err("no reply (timeout after 200ms)".into())
    );
}

/// A server that answers `response` and then keeps the connection open (until `hold` ends).
fn answer_and_hold(response: &'static [u8], hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response);
            std::thread::sleep(hold);
        }
    });
    addr
}

#[test]
fn http_chunked_body_ends_at_its_last_chunk_not_at_the_close() {
    let digest = format!(
        "type = \"http\"\ntimeout_ms = 2000\ndigest = \"{}\"\n",
        md5_hex(b"hello world")
    );
    // The server keeps the connection open after the body: the probe must see where the body
    // ends and not wait for the close (or the timeout).
    let complete: [&[u8]; 3] = [
        // After the terminating chunk (with a chunk extension on the way).
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        // Trailers after the last chunk are read and ignored.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        // A Content-Length body ends at its length.
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
    ];
    for answer in complete {
        let addr = answer_and_hold(answer, Duration::from_secs(4));
        let t = Instant::now();
        assert_eq!(
            probe_once(&spec(&digest), "svc", addr),
            Ok("status 200, digest ok".into()),
            "{}",
            String::from_utf8_lossy(answer)
        );
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    }
    // A chunked body cut short by a silent server times out instead of passing.
    let addr = answer_and_hold(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        Duration::from_secs(4),
    );
    let short = spec(&digest.replace("2000", "300"));
    assert_eq!(
        probe_once(&short, "svc", addr),
        Err("timeout after 300ms".into())
    );
}
