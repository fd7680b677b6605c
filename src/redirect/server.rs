//! The HTTP redirect listener's sockets and threads (`[[redirect]]`): per entry one thread
//! running a current-thread tokio runtime, with an accept task per listen address owning a
//! task per connection it accepted, served by hyper's HTTP/1.1 server, every request answered
//! through one shared [`Redirector`] (`crate::redirect::decide`, the sans-I/O part). `xvs run`
//! feeds it the available backends of the configured service every main-loop period.
//!
//! Why hyper: it is the maintained HTTP implementation of the Rust ecosystem (RFC 9112
//! parsing, keep-alive, pipelining, limits on header size and header read time, and a 400 /
//! 431 answer of its own to a request it cannot parse, reported to us as a parse error that
//! is counted). tiny_http would have needed no runtime, but it has had no release since 2022
//! and answers malformed requests without telling the caller, so they could not be counted.
//!
//! Reload: [`plan_reload`] binds what a new configuration listens on anew (registered with the
//! entry's runtime), then [`ReloadPlan::apply`] swaps each entry's configuration and
//! redirector under the accept tasks of the addresses it keeps (their sockets and open
//! keep-alive connections stay, and answer from the new configuration from the next
//! request), cancels the accept tasks of addresses no longer listed (with the connections
//! they accepted) and starts those of the new ones.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
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
/// How long a reload waits for a listener it removes to close with its connections.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

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

/// What a reload replaces: the entry's configuration with its redirector.
struct Redirecting {
    cfg: RedirectConfig,
    redirector: Redirector,
}

struct Shared {
    state: Mutex<Redirecting>,
    connection_errors: AtomicU64,
    refused: AtomicU64,
    internal_errors: AtomicU64,
    open: AtomicUsize,
    started: Instant,
    stop: AtomicBool,
}

type Reply = hyper::Response<Full<Bytes>>;

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Redirecting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(
        &self,
        req: &hyper::Request<hyper::body::Incoming>,
        client: IpAddr,
        local: SocketAddr,
    ) -> Reply {
        let now = Time(self.started.elapsed().as_nanos() as u64);
        let target = req.uri().to_string();
        let r = self.lock().redirector.respond(&target, client, local, now);
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

/// A new `[[redirect]]` entry's configuration checked, with its redirector built, its runtime
/// made and its listen addresses bound: nothing runs yet ([`RedirectServer::launch`] starts it).
pub struct Prepared {
    cfg: RedirectConfig,
    redirector: Redirector,
    /// Before `runtime`: dropped first when the entry is not started.
    bound: Vec<(SocketAddr, tokio::net::TcpListener)>,
    runtime: tokio::runtime::Runtime,
}

/// A running entry's new configuration checked, with its redirector built and the listen
/// addresses the entry does not listen on yet bound and registered with its runtime: nothing
/// running has changed yet ([`RedirectServer::apply`] makes it the entry's).
pub struct Change {
    cfg: RedirectConfig,
    redirector: Redirector,
    bound: Vec<(SocketAddr, tokio::net::TcpListener)>,
}

/// One listen address's accept task, which owns the tasks of the connections it accepted.
struct Listener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Disconnected once the accept task and all its connection tasks have ended (each holds
    /// a sender).
    closed: mpsc::Receiver<()>,
}

impl Listener {
    fn start(
        shared: &Arc<Shared>,
        handle: &tokio::runtime::Handle,
        addr: SocketAddr,
        listener: tokio::net::TcpListener,
    ) -> Listener {
        let (alive, closed) = mpsc::channel();
        let task = handle.spawn(accept_loop(shared.clone(), listener, alive));
        Listener { addr, task, closed }
    }

    /// Cancels the accept task, which closes the socket and the connections accepted on it,
    /// and waits until they are gone (at most [`CLOSE_WAIT`]); false if they were not gone by
    /// then.
    fn stop(self) -> bool {
        self.task.abort();
        matches!(
            self.closed.recv_timeout(CLOSE_WAIT),
            Err(mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

/// What [`RedirectServer::apply`] did to the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relisten {
    /// Listen addresses whose sockets (and open connections) were kept.
    pub kept: usize,
    /// Addresses newly bound.
    pub bound: usize,
    /// Addresses no longer listened on.
    pub closed: usize,
}

/// A running `[[redirect]]` entry.
pub struct RedirectServer {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    listeners: Vec<Listener>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedirectServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectServer")
            .field("name", &self.shared.lock().cfg.name)
            .finish()
    }
}

impl RedirectServer {
    /// Builds `cfg`'s redirector and runtime and binds every listen address.
    pub fn prepare(cfg: &RedirectConfig) -> Result<Prepared, RedirectServerError> {
        let redirector = Redirector::new(cfg.rules.clone(), &cfg.scheduler)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(RedirectServerError::Runtime)?;
        let bound = bind_all(&cfg.listen, runtime.handle())?;
        Ok(Prepared {
            cfg: cfg.clone(),
            redirector,
            runtime,
            bound,
        })
    }

    /// Builds `cfg`'s redirector and binds every listen address this entry does not listen
    /// on already.
    pub fn prepare_change(&self, cfg: &RedirectConfig) -> Result<Change, RedirectServerError> {
        let redirector = Redirector::new(cfg.rules.clone(), &cfg.scheduler)?;
        let new: Vec<SocketAddr> = cfg
            .listen
            .iter()
            .copied()
            .filter(|a| !self.listeners.iter().any(|l| l.addr == *a))
            .collect();
        let bound = bind_all(&new, &self.handle)?;
        Ok(Change {
            cfg: cfg.clone(),
            redirector,
            bound,
        })
    }

    /// Binds every listen address and starts the thread; requests get 503 until
    /// [`RedirectServer::update`] has given backends.
    pub fn start(cfg: &RedirectConfig) -> Result<RedirectServer, RedirectServerError> {
        Ok(Self::launch(Self::prepare(cfg)?, &[]))
    }

    /// Starts a prepared entry, its backends taken from `services` at once.
    pub fn launch(p: Prepared, services: &[Service]) -> RedirectServer {
        let Prepared {
            cfg,
            mut redirector,
            runtime,
            bound,
        } = p;
        redirector.set_backends(&crate::balance::available_backends(services, &cfg.service));
        let shared = Arc::new(Shared {
            state: Mutex::new(Redirecting { cfg, redirector }),
            connection_errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            internal_errors: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            started: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let handle = runtime.handle().clone();
        let listeners = bound
            .into_iter()
            .map(|(addr, l)| Listener::start(&shared, &handle, addr, l))
            .collect();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                while !s.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(POLL).await;
                }
            });
            // Dropping the runtime cancels the accept and connection tasks.
            drop(runtime);
        });
        RedirectServer {
            shared,
            handle,
            listeners,
            thread: Some(thread),
        }
    }

    /// Makes a change (from [`RedirectServer::prepare_change`] on this server) this entry's.
    /// Requests from then on, on new connections and on open keep-alive connections of the
    /// addresses kept alike, are answered from the new configuration, with the backends of its
    /// service taken from `services` before the first of them. The listeners of addresses
    /// kept keep their sockets and connections; those of addresses no longer listed stop
    /// (their connections are closed); the newly bound ones start. The counters carry on; the
    /// persistence table is kept while the service and the persistence timeout are unchanged,
    /// the scheduler's state while the scheduler is (see [`Redirector::continue_from`]).
    pub fn apply(&mut self, c: Change, services: &[Service]) -> Relisten {
        let Change {
            cfg,
            mut redirector,
            bound,
        } = c;
        {
            let mut st = self.shared.lock();
            let st = &mut *st;
            redirector.continue_from(&mut st.redirector, st.cfg.service == cfg.service);
            redirector.set_backends(&crate::balance::available_backends(services, &cfg.service));
            st.redirector = redirector;
            st.cfg = cfg;
        }
        let listen: HashSet<SocketAddr> = self.shared.lock().cfg.listen.iter().copied().collect();
        let (keep, gone): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|l| listen.contains(&l.addr));
        let r = Relisten {
            kept: keep.len(),
            closed: gone.len(),
            bound: bound.len(),
        };
        for l in gone {
            let addr = l.addr;
            if !l.stop() {
                tracing::warn!("redirect listener on {addr}: not closed within {CLOSE_WAIT:?}");
            }
        }
        self.listeners = keep;
        for (addr, l) in bound {
            self.listeners
                .push(Listener::start(&self.shared, &self.handle, addr, l));
        }
        r
    }

    /// Takes the targets from `services` (the effective state: backends that failed their
    /// check are absent or at weight 0, weights as the L4 schedulers use them). A service no
    /// longer configured leaves no backend (503).
    pub fn update(&self, services: &[Service]) {
        let mut st = self.shared.lock();
        let backends = crate::balance::available_backends(services, &st.cfg.service);
        st.redirector.set_backends(&backends);
    }

    /// The entry's counters and current backends.
    pub fn status(&self) -> RedirectStatus {
        let s = &self.shared;
        let st = s.lock();
        let (cfg, r) = (&st.cfg, &st.redirector);
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
            name: cfg.name.clone(),
            listen: cfg.listen.clone(),
            service: crate::control::state::service_name(&cfg.service),
            scheduler: cfg.scheduler.clone(),
            code: cfg.rules.code,
            persistence: cfg.rules.persistence,
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

/// How a reload changes the running `[[redirect]]` entries: each wanted entry takes over the
/// first running entry of the same name not taken yet (its kept listen addresses keep their
/// sockets and connections), or starts anew; running entries nobody takes stop. Built by
/// [`plan_reload`] with every new listen address already bound, so a reload either binds all
/// it needs or changes nothing.
pub struct ReloadPlan {
    steps: Vec<Step>,
}

enum Step {
    /// The running entry at this index takes the change.
    Change(usize, Change),
    Start(Prepared),
}

/// Checks `wanted` against `running` and binds what is new (see [`ReloadPlan`]); on an error
/// nothing running has changed and the sockets bound so far are closed.
pub fn plan_reload(
    running: &[RedirectServer],
    wanted: &[RedirectConfig],
) -> Result<ReloadPlan, RedirectServerError> {
    let names: Vec<String> = running
        .iter()
        .map(|r| r.shared.lock().cfg.name.clone())
        .collect();
    let mut taken = vec![false; running.len()];
    let mut steps = Vec::new();
    for cfg in wanted {
        let j = (0..running.len()).find(|&j| !taken[j] && names[j] == cfg.name);
        steps.push(match j {
            Some(j) => {
                taken[j] = true;
                Step::Change(j, running[j].prepare_change(cfg)?)
            }
            None => Step::Start(RedirectServer::prepare(cfg)?),
        });
    }
    Ok(ReloadPlan { steps })
}

impl ReloadPlan {
    /// Carries the plan out on `running` (the entries [`plan_reload`] saw, in the same order),
    /// backends taken from `services`; returns the running entries and one line per entry
    /// saying what happened.
    pub fn apply(
        self,
        running: Vec<RedirectServer>,
        services: &[Service],
    ) -> (Vec<RedirectServer>, Vec<String>) {
        let mut old: Vec<Option<RedirectServer>> = running.into_iter().map(Some).collect();
        let mut lines = Vec::new();
        // Entries nobody takes stop first: their addresses may be another entry's now.
        let taken: HashSet<usize> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Change(j, _) => Some(*j),
                Step::Start(_) => None,
            })
            .collect();
        for (j, slot) in old.iter_mut().enumerate() {
            if !taken.contains(&j) {
                if let Some(server) = slot.take() {
                    lines.push(format!(
                        "redirect {} stopped",
                        server.shared.lock().cfg.name
                    ));
                    server.stop();
                }
            }
        }
        let mut out = Vec::new();
        for step in self.steps {
            match step {
                Step::Change(j, change) => {
                    let name = change.cfg.name.clone();
                    // plan_reload gives each running entry at most one change: always there.
                    let Some(mut server) = old.get_mut(j).and_then(Option::take) else {
                        continue;
                    };
                    let r = server.apply(change, services);
                    lines.push(format!(
                        "redirect {name} reconfigured: {} listener(s) kept, {} bound, {} closed",
                        r.kept, r.bound, r.closed
                    ));
                    out.push(server);
                }
                Step::Start(prepared) => {
                    let name = prepared.cfg.name.clone();
                    out.push(RedirectServer::launch(prepared, services));
                    lines.push(format!("redirect {name} started"));
                }
            }
        }
        (out, lines)
    }
}

/// Listening sockets on `addrs`, registered with the runtime of `handle`; on an error the ones
/// bound so far are closed.
fn bind_all(
    addrs: &[SocketAddr],
    handle: &tokio::runtime::Handle,
) -> Result<Vec<(SocketAddr, tokio::net::TcpListener)>, RedirectServerError> {
    let _guard = handle.enter();
    let mut bound = Vec::new();
    for &addr in addrs {
        let listen = |source| RedirectServerError::Listen { addr, source };
        let l: std::net::TcpListener = bind(addr).map_err(listen)?.into();
        l.set_nonblocking(true).map_err(listen)?;
        let l = tokio::net::TcpListener::from_std(l).map_err(listen)?;
        bound.push((addr, l));
    }
    Ok(bound)
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

/// Accepts connections on `listener` and serves each in a task of its own, owned by this one:
/// when this task is cancelled (the address is no longer listened on), its connections are
/// too. Every task holds a clone of `alive` until it ends.
async fn accept_loop(s: Arc<Shared>, listener: tokio::net::TcpListener, alive: mpsc::Sender<()>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        // Finished connections leave the set at the next accept.
        while conns.try_join_next().is_some() {}
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
        let alive = alive.clone();
        conns.spawn(async move {
            let _alive = alive;
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
                    s.lock().redirector.count_malformed();
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

#[cfg(test)]
mod tests {
    //! Reload on loopback: addresses 127.N.M.k from the process id (tests of other processes
    //! on this machine use other ones) and a port the kernel just gave out, raw HTTP/1.1 over
    //! a std `TcpStream`.
    use super::*;
    use crate::redirect::decide::{Rules, Scheme};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};
    use xvs_forwarding::service::{Backend, ServiceKey};
    use xvs_forwarding::Method;

    /// Listener `k` of these tests, apart from the DNS tests' addresses in the same process.
    fn addr(k: u8) -> SocketAddr {
        crate::test_support::loopback_addr(100 + k)
    }

    fn key(last: u8) -> ServiceKey {
        ServiceKey::Addr {
            proto: 6,
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 10, last)),
            port: 80,
        }
    }

    fn services() -> Vec<Service> {
        [(1, 11), (2, 21)]
            .into_iter()
            .map(|(svc, backend)| Service {
                key: key(svc),
                scheduler: "rr".into(),
                sched_flags: Default::default(),
                persistence: None,
                one_packet: false,
                synproxy: false,
                conn_rate: 0,
                backends: vec![Backend {
                    addr: IpAddr::V4(Ipv4Addr::new(198, 18, 3, backend)),
                    port: 80,
                    weight: 1,
                    method: Method::Nat,
                    u_threshold: 0,
                    l_threshold: 0,
                    conn_rate: 0,
                }],
            })
            .collect()
    }

    fn cfg(listen: Vec<SocketAddr>, code: u16, service: u8, persistence: u32) -> RedirectConfig {
        RedirectConfig {
            name: "web".into(),
            listen,
            service: key(service),
            scheduler: "rr".into(),
            rules: Rules {
                code,
                scheme: Scheme::Http,
                port: None,
                hosts: Vec::new(),
                persistence,
            },
        }
    }

    /// One GET on an open connection: (status, Location).
    fn get(c: &mut TcpStream, path: &str) -> (u16, String) {
        write!(c, "GET {path} HTTP/1.1\r\nHost: lb.test\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert!(head.len() < 4096, "no end of head");
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or("")
                .to_string()
        };
        let mut body = vec![0u8; header("content-length").parse().unwrap()];
        c.read_exact(&mut body).unwrap();
        (head[9..12].parse().unwrap(), header("location"))
    }

    fn connect(to: SocketAddr) -> TcpStream {
        let c = TcpStream::connect(to).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c
    }

    #[test]
    fn reload_keeps_unchanged_listeners_binds_new_ones_and_refuses_what_cannot_bind() {
        let (a1, a2) = (addr(1), addr(2));
        let svc = services();
        let mut running = vec![RedirectServer::start(&cfg(vec![a1], 302, 1, 30)).unwrap()];
        running[0].update(&svc);
        let mut keep_alive = connect(a1);
        let want = (302, "http://198.18.3.11/a".to_string());
        assert_eq!(get(&mut keep_alive, "/a"), want);

        // 302 → 307 and a second address: the open connection keeps going and gets 307 from
        // its next request; the persistence table is kept (same service and timeout).
        let second = cfg(vec![a1, a2], 307, 1, 30);
        let plan = plan_reload(&running, std::slice::from_ref(&second)).unwrap();
        let (r, lines) = plan.apply(running, &svc);
        running = r;
        assert_eq!(
            lines,
            ["redirect web reconfigured: 1 listener(s) kept, 1 bound, 0 closed"]
        );
        let want = (307, "http://198.18.3.11/b".to_string());
        assert_eq!(get(&mut keep_alive, "/b"), want);
        assert_eq!(get(&mut connect(a2), "/b"), want);
        let st = running[0].status();
        assert_eq!((st.requests, st.redirects, st.code), (3, 3, 307));
        assert_eq!(st.persistent_clients, 1);
        assert_eq!(st.listen, vec![a1, a2]);

        // An address that cannot be bound (not on this host): refused, nothing changed.
        let unbindable = SocketAddr::from(([198, 18, 255, 254], a1.port()));
        let third = cfg(vec![a2, unbindable], 302, 2, 30);
        match plan_reload(&running, std::slice::from_ref(&third)) {
            Err(RedirectServerError::Listen { addr, .. }) => assert_eq!(addr, unbindable),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("{unbindable} bound"),
        }
        assert_eq!(get(&mut keep_alive, "/c").0, 307);

        // a1 dropped and another service: a1's listener closes with its connection, a2 stays
        // and redirects to the new service's backend; the table is emptied, counters go on.
        let fourth = cfg(vec![a2], 302, 2, 30);
        let plan = plan_reload(&running, std::slice::from_ref(&fourth)).unwrap();
        let (r, lines) = plan.apply(running, &svc);
        running = r;
        assert_eq!(
            lines,
            ["redirect web reconfigured: 1 listener(s) kept, 0 bound, 1 closed"]
        );
        let mut rest = Vec::new();
        assert_eq!(
            keep_alive.read_to_end(&mut rest).ok(),
            Some(0),
            "closed by xvs"
        );
        assert!(TcpStream::connect(a1).is_err(), "{a1} still listens");
        assert_eq!(
            get(&mut connect(a2), "/d"),
            (302, "http://198.18.3.21/d".to_string())
        );
        let st = running[0].status();
        assert_eq!((st.requests, st.persistent_clients), (5, 1));

        // Another name in its place: the old entry stops, the new one starts on the address.
        let mut other = cfg(vec![a2], 307, 1, 0);
        other.name = "other".into();
        let plan = plan_reload(&running, std::slice::from_ref(&other)).unwrap();
        let (r, lines) = plan.apply(running, &svc);
        assert_eq!(lines, ["redirect web stopped", "redirect other started"]);
        assert_eq!(
            get(&mut connect(a2), "/e"),
            (307, "http://198.18.3.11/e".to_string())
        );
        assert_eq!(r[0].status().requests, 1);
        for s in r {
            s.stop();
        }
    }
}
