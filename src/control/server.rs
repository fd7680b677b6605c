//! The control socket: `xvs run` serves ipvsadm commands on a Unix stream socket, `xvs ctl`
//! sends them.
//!
//! Protocol: one request per connection. The client writes a JSON object
//! `{"args": ["-Ln"], "stdin": ""}` and shuts its write side; the server answers
//! `{"status": 0, "stdout": "...", "stderr": ""}` and closes. `stdin` carries `-R`'s rules.
//! A connection that starts with `crate::takeover::MAGIC` instead is a successor taking the
//! director over (`xvs run --takeover`, see `crate::takeover`), handed to
//! [`Director::takeover`].
//! Exit status as ipvsadm's: 0 success, 2 a command line ipvsadm refuses, 255 an operation the
//! kernel would refuse (no such service, already exists, …; here also `apply` refusing) or an
//! option popt does not know, 1 `-L` of a service that does not exist. xvs's own failures
//! (`reload`, the socket) exit with 1.
//!
//! The socket is created with mode 0600 (its parent directory, if created, 0700); a socket file
//! left by a dead director is replaced, one that still answers is not. Each client is served on
//! its own thread, so a client that is slow to send its request (or never does) delays no
//! other; at most [`Limits::max_clients`] are served at once (one more is answered "busy" and
//! closed), and each has [`Limits::request_timeout`] to send its whole request. Commands then
//! execute one at a time under a lock, so two `xvs ctl` commands never interleave their
//! read-modify-apply of the desired state; answers are written outside it.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xvs_forwarding::conn::ConnListing;
use xvs_forwarding::service::ServiceKey;

use super::format;
use super::ipvsadm::{self, Command};
use super::model::Listing;
use super::state::{service_name, DesiredState, StateError};
use crate::sync::DaemonConfig;

/// Where `xvs run` listens and `xvs ctl` connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvs.sock";

/// Largest request accepted (a `-R` of some hundred thousand rules).
const MAX_REQUEST: usize = 64 << 20;

/// How often a client thread waiting for its request looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Bounds on the clients served at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Clients served at the same time (each on its own thread).
    pub max_clients: usize,
    /// Time a client has from connecting until its request is complete (its write side shut);
    /// also the bound on writing the answer.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 32,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the control socket needs from the running director. The runtime implements it.
///
/// Mutating commands call [`Director::desired`], apply the ipvsadm operation to the copy and
/// hand the result to [`Director::apply`]: one atomic publish per command (`-R`: one for all its
/// lines). Calls come from the clients' threads, one request at a time (the server serialises
/// them).
pub trait Director: Send + Sync {
    /// The running desired state (what `-S` saves).
    fn desired(&self) -> DesiredState;
    /// Make `new` the running state (validate, build the snapshot, publish). An error leaves
    /// the running state as it was; its text is shown to the operator.
    fn apply(&self, new: DesiredState) -> Result<(), String>;
    /// The running state with its counters (`-L`).
    fn listing(&self) -> Listing;
    /// The connection entries of every worker (`-Lc`).
    fn connections(&self) -> Vec<ConnListing>;
    /// `-Z`: zero the counters of one service or of all.
    fn zero(&self, service: Option<ServiceKey>);
    /// The desired state as last read from the configuration file (start or last reload).
    fn file_state(&self) -> DesiredState;
    /// `reload`: re-read and validate the configuration file and publish it as the running
    /// state, replacing runtime changes. Returns the new state. An error leaves everything as
    /// it was.
    fn reload(&self) -> Result<DesiredState, String>;
    /// `status`: a short human summary (workers, packets, drops, uptime).
    fn status(&self) -> String;
    /// `-L --daemon`: the running sync daemons, master first, each with the message length
    /// in force.
    fn daemons(&self) -> Vec<(DaemonConfig, u16)>;
    /// `-L --stateless`: the DNS responders and HTTP redirect listeners. Without an
    /// implementation: none.
    fn stateless(&self) -> super::model::Stateless {
        super::model::Stateless::default()
    }
    /// A successor (`xvs run --takeover`) connected and sent [`crate::takeover::MAGIC`]: hand
    /// the data plane over on `conn`, or refuse there. Without an implementation: refused.
    fn takeover(&self, mut conn: UnixStream) {
        let a = crate::takeover::Answer::Refused("this director cannot hand over".into());
        if let Ok(text) = serde_json::to_vec(&a) {
            let _ = crate::takeover::write_frame(&mut conn, &text);
        }
    }
}

/// One request on the socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub args: Vec<String>,
    #[serde(default)]
    pub stdin: String,
}

/// One answer on the socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Response {
    fn ok(stdout: String) -> Response {
        Response {
            status: 0,
            stdout,
            stderr: String::new(),
        }
    }

    fn fail(status: i32, msg: impl std::fmt::Display) -> Response {
        let mut stderr = msg.to_string();
        if !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        Response {
            status,
            stdout: String::new(),
            stderr,
        }
    }
}

/// Run one ipvsadm command line against the director.
pub fn execute(d: &dyn Director, args: &[String], stdin: &str) -> Response {
    let cmd = match ipvsadm::parse(args) {
        Ok(c) => c,
        Err(e) => return Response::fail(e.status, e),
    };
    match cmd {
        Command::Help => Response::ok(ipvsadm::HELP.into()),
        Command::Version => Response::ok(version()),
        Command::Status => Response::ok(ensure_newline(d.status())),
        Command::List(l) => {
            if l.daemon {
                return Response::ok(format::daemons(&d.daemons()));
            }
            if l.stateless {
                let st = d.stateless();
                return Response::ok(if l.json {
                    format!("{:#}\n", serde_json::json!(st))
                } else {
                    format::stateless(&st)
                });
            }
            if l.connections {
                let conns = d.connections();
                return Response::ok(if l.json {
                    format::connections_json(&conns)
                } else {
                    format::connections(&conns)
                });
            }
            let st = d.desired();
            if l.timeout {
                return Response::ok(if l.json {
                    format!(
                        "{{\"tcp\": {}, \"tcpfin\": {}, \"udp\": {}}}\n",
                        st.timeouts.tcp, st.timeouts.tcpfin, st.timeouts.udp
                    )
                } else {
                    format::timeouts(&st)
                });
            }
            let listing = d.listing();
            if l.limits {
                return Response::ok(if l.json {
                    format::limits_json(&listing, &st, l.format.nosort)
                } else {
                    format::limits(&listing, &st, l.format.nosort)
                });
            }
            match l.service {
                Some(key) => match listing.service(&key) {
                    Some(s) if l.json => {
                        Response::ok(format!("{:#}\n", format::service_json(s, l.format.nosort)))
                    }
                    Some(s) => Response::ok(format::list_service(s, &l.format)),
                    None => Response::fail(1, StateError::NoService(service_name(&key))),
                },
                None if l.json => {
                    Response::ok(format::listing_json(&listing, &st, l.format.nosort))
                }
                None => Response::ok(format::list_all(&listing, &l.format)),
            }
        }
        Command::Save { toml: false } => Response::ok(format::save(&d.desired())),
        Command::Save { toml: true } => Response::ok(format::save_toml(&d.desired())),
        Command::Zero(key) => {
            if let Some(k) = key {
                if d.desired().service(&k).is_none() {
                    return Response::fail(255, StateError::NoService(service_name(&k)));
                }
            }
            d.zero(key);
            Response::ok(String::new())
        }
        Command::Restore => {
            let mut st = d.desired();
            if let Err(e) = ipvsadm::restore(&mut st, stdin) {
                return Response::fail(255, format!("restore: nothing applied: {e}"));
            }
            publish(d, st)
        }
        Command::Reload => reload(d),
        rule => {
            let mut st = d.desired();
            if let Err(e) = rule.apply(&mut st) {
                return Response::fail(255, e);
            }
            publish(d, st)
        }
    }
}

fn version() -> String {
    format!(
        "xvs {} (ipvsadm-compatible control, IPVS v1.2.1)\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn ensure_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn publish(d: &dyn Director, st: DesiredState) -> Response {
    match d.apply(st) {
        Ok(()) => Response::ok(String::new()),
        Err(e) => Response::fail(255, format!("not applied: {e}")),
    }
}

/// `reload`: what changed, and which runtime changes the file did not keep.
fn reload(d: &dyn Director) -> Response {
    let before = d.desired();
    let file_before = d.file_state();
    let new = match d.reload() {
        Ok(n) => n,
        Err(e) => return Response::fail(1, format!("reload failed, nothing changed: {e}")),
    };
    let rules = |a: &DesiredState, b: &DesiredState| -> Vec<String> {
        a.diff(b).iter().map(format::change_rule).collect()
    };
    let runtime = rules(&file_before, &before);
    let from_file = rules(&file_before, &new);
    let discarded: Vec<&String> = runtime.iter().filter(|l| !from_file.contains(l)).collect();
    let changes = rules(&before, &new);
    let mut out = format!(
        "reloaded: {} service(s), {} backend(s)\nchanges to the running state: {}\n",
        new.services.len(),
        new.services.iter().map(|s| s.backends.len()).sum::<usize>(),
        changes.len()
    );
    for l in &changes {
        out.push_str(&format!("  {l}\n"));
    }
    out.push_str(&format!(
        "runtime changes not in the file are discarded: {}\n",
        discarded.len()
    ));
    for l in discarded {
        out.push_str(&format!("  {l}\n"));
    }
    Response::ok(out)
}

/// A control socket failure at start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("control socket {0}: another xvs answers there")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The serving thread; stops (and removes the socket file) on [`Server::stop`] or drop.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `path` and serve `director` with the default [`Limits`].
    pub fn start(path: &Path, director: Arc<dyn Director>) -> Result<Server, ServerError> {
        Server::start_with(path, director, Limits::default())
    }

    /// Bind `path` and serve `director` on a new accept thread, each client on its own thread.
    pub fn start_with(
        path: &Path,
        director: Arc<dyn Director>,
        limits: Limits,
    ) -> Result<Server, ServerError> {
        let io = |source| ServerError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xvs-ctl".into())
            .spawn(move || accept_loop(listener, director, flag, limits))
            .map_err(io)?;
        Ok(Server {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop serving, join the thread and remove the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            // Wake the accept.
            let _ = UnixStream::connect(&self.path);
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Accept until `stop`; then wait for the client threads (each ends within one [`POLL`] of the
/// stop flag, or its write timeout).
fn accept_loop(
    listener: UnixListener,
    director: Arc<dyn Director>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) {
    let exec = Arc::new(Mutex::new(()));
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(c) = conn else { continue };
        clients.retain(|h| !h.is_finished());
        if clients.len() >= limits.max_clients {
            refuse(c, limits.max_clients);
            continue;
        }
        let (d, e, f) = (director.clone(), exec.clone(), stop.clone());
        match std::thread::Builder::new()
            .name("xvs-ctl-client".into())
            .spawn(move || serve_one(c, d.as_ref(), &e, &f, limits.request_timeout))
        {
            Ok(h) => clients.push(h),
            Err(e) => tracing::warn!(error = %e, "control socket: no thread for a client"),
        }
    }
    for h in clients {
        let _ = h.join();
    }
}

/// Answer a client beyond the limit without serving its request. What it sent meanwhile is
/// read and discarded (at most 64 KiB, for one poll period) before the socket closes: closing a
/// Unix socket with unread data resets the peer, which could then lose the answer.
fn refuse(mut c: UnixStream, max: usize) {
    let _ = c.set_write_timeout(Some(POLL));
    let resp = Response::fail(
        1,
        format!("xvs: control socket busy ({max} clients being served), try again"),
    );
    if let Ok(text) = serde_json::to_vec(&resp) {
        let _ = c.write_all(&text);
    }
    let _ = c.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + POLL;
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || c.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match c.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Read one request (until the client shuts its write side, within `timeout`), execute it
/// under `exec`, write the answer.
fn serve_one(
    mut c: UnixStream,
    d: &dyn Director,
    exec: &Mutex<()>,
    stop: &AtomicBool,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    // A takeover starts with its magic line instead of a JSON request: until that is ruled
    // out, read no further than the magic's length.
    let magic = crate::takeover::MAGIC;
    let failed = loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Some(format!(
                "bad request: not complete within {} ms",
                timeout.as_millis()
            ));
        }
        if c.set_read_timeout(Some(left.min(POLL))).is_err() {
            return;
        }
        let maybe_magic = buf.len() < magic.len() && magic.starts_with(&buf);
        let want = if maybe_magic {
            magic.len() - buf.len()
        } else {
            chunk.len()
        };
        match c.read(&mut chunk[..want]) {
            Ok(0) => break None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf == magic {
                    // The handover runs alone, as any command.
                    let _serial = exec.lock().unwrap_or_else(|p| p.into_inner());
                    d.takeover(c);
                    return;
                }
                if buf.len() > MAX_REQUEST {
                    break Some(format!("bad request: larger than {MAX_REQUEST} bytes"));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => break Some(format!("bad request: {e}")),
        }
    };
    let resp = match failed {
        Some(msg) => Response::fail(2, msg),
        None if buf.is_empty() => return,
        None => match serde_json::from_slice::<Request>(&buf) {
            Ok(r) => {
                let _serial = exec.lock().unwrap_or_else(|p| p.into_inner());
                execute(d, &r.args, &r.stdin)
            }
            Err(e) => Response::fail(2, format!("bad request: {e}")),
        },
    };
    let _ = c.set_write_timeout(Some(timeout));
    if let Ok(text) = serde_json::to_vec(&resp) {
        let _ = c.write_all(&text);
    }
}

/// Send one command to the director at `socket`.
pub fn request(socket: &Path, args: &[String], stdin: &str) -> std::io::Result<Response> {
    let mut c = UnixStream::connect(socket)?;
    let req = Request {
        args: args.to_vec(),
        stdin: stdin.to_string(),
    };
    // A busy server answers without reading the request and closes: the write then fails with
    // EPIPE, and the answer is still there to read.
    match c.write_all(&serde_json::to_vec(&req)?) {
        Ok(()) => c.shutdown(std::net::Shutdown::Write)?,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e),
    }
    let mut buf = Vec::new();
    match c.read_to_end(&mut buf) {
        Ok(_) => {}
        // A director that closed without reading all of the request resets the connection
        // after its whole answer: the answer read is complete.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    serde_json::from_slice(&buf).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad answer from the director: {e}"),
        )
    })
}

/// `xvs ctl ARGS…`: send, print the answer, return the exit status. `-h`, `-v` and command
/// lines that are not valid ipvsadm are answered here, without the director; a `--socket PATH`
/// among the ipvsadm arguments (after them on the command line) is taken as the socket.
pub fn client(socket: &Path, args: &[String]) -> i32 {
    let mut socket = socket.to_path_buf();
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            match it.next() {
                Some(p) => socket = PathBuf::from(p),
                None => {
                    eprintln!("xvs ctl: --socket needs a path");
                    return 2;
                }
            }
        } else if let Some(p) = a.strip_prefix("--socket=") {
            socket = PathBuf::from(p);
        } else {
            rest.push(a.clone());
        }
    }
    let args = &rest[..];
    // Written with write_all, errors ignored: `xvs ctl -Ln | head` must not panic on EPIPE.
    let out = |text: &str| {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    };
    let err = |text: &str| {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    };
    let restore = match ipvsadm::parse(args) {
        Err(e) => {
            err(&format!("{e}\n"));
            return e.status;
        }
        Ok(Command::Help) => {
            out(ipvsadm::HELP);
            return 0;
        }
        Ok(Command::Version) => {
            out(&version());
            return 0;
        }
        Ok(c) => c == Command::Restore,
    };
    let socket = socket.as_path();
    let stdin = if restore {
        match std::io::read_to_string(std::io::stdin()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("xvs ctl: reading the rules from standard input: {e}");
                return 1;
            }
        }
    } else {
        String::new()
    };
    match request(socket, args, &stdin) {
        Ok(r) => {
            out(&r.stdout);
            err(&r.stderr);
            r.status
        }
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is `xvs run` running? "
                }
                std::io::ErrorKind::PermissionDenied => {
                    "(the socket is mode 0600: run as its owner) "
                }
                _ => "",
            };
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or_default();
            err(&format!(
                "xvs ctl: {hint}socket {}: {text}\n",
                socket.display()
            ));
            1
        }
    }
}
