//! The HTTP redirect listener's sockets and threads (`[[redirect]]`): per entry one thread
//! running a current-thread tokio runtime, with an accept task per listen address and a task
//! per connection served by hyper's HTTP/1.1 server, every request answered through one shared
//! [`Redirector`] (`crate::redirect::decide`, the sans-I/O part). `xvs run` feeds it the
//! available backends of the configured service every main-loop period.
//!
//! Why hyper: it is the maintained HTTP implementation of the Rust ecosystem (RFC 9112
//! parsing, keep-alive, pipelining, limits on header size and header read time, and a 400 /
//! 431 answer of its own to a request it cannot parse, reported to us as a parse error that
//! is counted). tiny_http would have needed no runtime, but it has had no release since 2022
//! and answers malformed requests without telling the caller, so they could not be counted.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use xvs_forwarding::service::Service;
use xvs_schedulers::Time;

use crate::balance::NotStateless;
use crate::config::RedirectConfig;
use crate::redirect::decide::Redirector;

/// A connection that has not sent a complete request head for this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, keep-alive or not.
pub const CONN_LIFETIME: Duration = Duration::from_secs(60);
/// At most this many connections are served at once per entry; more are closed at accept.
pub const CONN_MAX: usize = 256;
/// The largest request head read (hyper answers 431 past it).
const MAX_HEAD: usize = 16 * 1024;
/// How often the runtime thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Errors of starting a listener.
#[derive(Debug, thiserror::Error)]
pub enum RedirectServerError {
    #[error("{0}")]
    Scheduler(#[from] NotStateless),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the listener's runtime")]
    Runtime(#[source] std::io::Error),
}

/// One backend of a listener with its redirects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendStatus {
    pub addr: IpAddr,
    pub port: u16,
    /// The URL base (scheme, host, port) of its redirects.
    pub url: String,
    /// The weight now; 0 when it is no longer available (listed for its past redirects).
    pub weight: u32,
    pub redirects: u64,
}

/// A snapshot of one `[[redirect]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedirectStatus {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    /// The service whose backends are the targets (`TCP 198.18.0.100:80`).
    pub service: String,
    pub scheduler: String,
    pub code: u16,
    /// Persistence timeout in seconds (0: none).
    pub persistence: u32,
    pub requests: u64,
    pub redirects: u64,
    pub bad_requests: u64,
    pub unavailable: u64,
    /// Connections closed on an I/O error, a timeout or [`CONN_LIFETIME`].
    pub connection_errors: u64,
    /// Connections closed at accept because [`CONN_MAX`] were open.
    pub refused: u64,
    /// Responses that could not be built (a `Location` that is not a header value): 500.
    pub internal_errors: u64,
    pub persistent_clients: usize,
    pub persistence_full: u64,
    pub backends: Vec<BackendStatus>,
}

struct Shared {
    cfg: RedirectConfig,
    redirector: Mutex<Redirector>,
    connection_errors: AtomicU64,
    refused: AtomicU64,
    internal_errors: AtomicU64,
    open: AtomicUsize,
    started: Instant,
    stop: AtomicBool,
}

type Reply = hyper::Response<Full<Bytes>>;

impl Shared {
    fn redirector(&self) -> std::sync::MutexGuard<'_, Redirector> {
        self.redirector.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(
        &self,
        req: &hyper::Request<hyper::body::Incoming>,
        client: IpAddr,
        local: SocketAddr,
    ) -> Reply {
        let now = Time(self.started.elapsed().as_nanos() as u64);
        let target = req.uri().to_string();
        let r = self.redirector().respond(&target, client, local, now);
        let mut resp = hyper::Response::new(Full::new(Bytes::from(r.body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(r.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(loc) = r.location {
            match HeaderValue::from_str(&loc) {
                Ok(v) => {
                    h.insert(LOCATION, v);
                }
                Err(_) => {
                    self.internal_errors.fetch_add(1, Ordering::Relaxed);
                    let mut e = hyper::Response::new(Full::new(Bytes::from_static(
                        b"internal error: the redirect URL is not a header value\n",
                    )));
                    *e.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    return e;
                }
            }
        }
        resp
    }
}

/// A running `[[redirect]]` entry.
pub struct RedirectServer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedirectServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectServer")
            .field("name", &self.shared.cfg.name)
            .finish()
    }
}

impl RedirectServer {
    /// Binds every listen address and starts the thread; requests get 503 until
    /// [`RedirectServer::update`] has given backends.
    pub fn start(cfg: &RedirectConfig) -> Result<RedirectServer, RedirectServerError> {
        let redirector = Redirector::new(cfg.rules.clone(), &cfg.scheduler)?;
        let mut listeners = Vec::new();
        for &addr in &cfg.listen {
            let listen = |source| RedirectServerError::Listen { addr, source };
            let sock = bind(addr).map_err(listen)?;
            let l: std::net::TcpListener = sock.into();
            l.set_nonblocking(true).map_err(listen)?;
            listeners.push(l);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(RedirectServerError::Runtime)?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            redirector: Mutex::new(redirector),
            connection_errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            internal_errors: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            started: Instant::now(),
            stop: AtomicBool::new(false),
        });
        // Registered with the runtime here, so that an error is the caller's.
        let mut tokio_listeners = Vec::new();
        {
            let _guard = rt.enter();
            for (l, &addr) in listeners.into_iter().zip(&cfg.listen) {
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(|source| RedirectServerError::Listen { addr, source })?;
                tokio_listeners.push(l);
            }
        }
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                for l in tokio_listeners {
                    tokio::spawn(accept_loop(s.clone(), l));
                }
                while !s.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(POLL).await;
                }
            });
            // Dropping the runtime cancels the accept and connection tasks.
            drop(rt);
        });
        Ok(RedirectServer {
            shared,
            thread: Some(thread),
        })
    }

    /// Takes the targets from `services` (the effective state: backends that failed their
    /// check are absent or at weight 0, weights as the L4 schedulers use them). A service no
    /// longer configured leaves no backend (503).
    pub fn update(&self, services: &[Service]) {
        let backends = crate::balance::available_backends(services, &self.shared.cfg.service);
        self.shared.redirector().set_backends(&backends);
    }

    /// The entry's counters and current backends.
    pub fn status(&self) -> RedirectStatus {
        let s = &self.shared;
        let r = s.redirector();
        let c = r.counters();
        let mut backends: Vec<BackendStatus> = r
            .backends()
            .into_iter()
            .map(|(addr, port, weight)| BackendStatus {
                addr,
                port,
                url: r.url_base(addr, port),
                weight,
                redirects: c.redirects.get(&(addr, port)).copied().unwrap_or(0),
            })
            .collect();
        for (&(addr, port), &n) in &c.redirects {
            if !backends.iter().any(|b| b.addr == addr && b.port == port) {
                backends.push(BackendStatus {
                    addr,
                    port,
                    url: r.url_base(addr, port),
                    weight: 0,
                    redirects: n,
                });
            }
        }
        RedirectStatus {
            name: s.cfg.name.clone(),
            listen: s.cfg.listen.clone(),
            service: crate::control::state::service_name(&s.cfg.service),
            scheduler: s.cfg.scheduler.clone(),
            code: s.cfg.rules.code,
            persistence: s.cfg.rules.persistence,
            requests: c.requests,
            redirects: c.redirects.values().sum(),
            bad_requests: c.bad_requests,
            unavailable: c.unavailable,
            connection_errors: s.connection_errors.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            internal_errors: s.internal_errors.load(Ordering::Relaxed),
            persistent_clients: r.persistent_clients(),
            persistence_full: c.persistence_full,
            backends,
        }
    }

    /// Stops the thread and waits for it (about one [`POLL`]); open connections are closed.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening socket on `addr` with SO_REUSEPORT, so that a successor (`xvs run
/// --takeover`) binds the same address while this process still answers.
fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    Ok(sock)
}

/// Decrements the open-connection count when a connection task ends or is cancelled.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(s: Arc<Shared>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // EMFILE and the like: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if s.open.load(Ordering::Relaxed) >= CONN_MAX {
            s.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(local) = stream.local_addr() else {
            s.connection_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        s.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(s.clone());
        tokio::spawn(async move {
            let s = open.0.clone();
            let svc = {
                let s = s.clone();
                service_fn(move |req| {
                    let reply = s.handle(&req, peer.ip(), local);
                    async move { Ok::<_, Infallible>(reply) }
                })
            };
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONN_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                // hyper answered 400/431 itself: a request, counted as a bad one.
                Ok(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
                    s.redirector().count_malformed();
                }
                Ok(Err(_)) | Err(_) => {
                    s.connection_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(open);
        });
    }
}

/// The `xvs ctl status` lines of one `[[redirect]]` entry: a header with the counters, then
/// one line per backend with its URL, weight and redirects.
pub fn format_status(st: &RedirectStatus) -> String {
    let mut out = format!(
        "redirect {} on {} ({} {}, {}{}): requests {}, redirects {}, bad requests {}, unavailable {}, connection errors {}, refused {}\n",
        st.name,
        st.listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        st.service,
        st.scheduler,
        st.code,
        if st.persistence > 0 {
            format!(", persistent {} s, {} client(s)", st.persistence, st.persistent_clients)
        } else {
            String::new()
        },
        st.requests,
        st.redirects,
        st.bad_requests,
        st.unavailable,
        st.connection_errors,
        st.refused,
    );
    if st.backends.is_empty() {
        out.push_str("  redirect to: none (503)\n");
    }
    for b in &st.backends {
        out.push_str(&format!(
            "  redirect to {} weight {}: {} redirect(s)\n",
            b.url, b.weight, b.redirects
        ));
    }
    out
}
