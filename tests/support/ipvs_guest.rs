//! The kernel-IPVS guest with a network path into a host namespace, for integration tests.
//!
//! [`Guest::boot`] creates a network namespace ([`Netns`], unique name, deleted on drop) holding a
//! bridge with a tap device on it, builds the guest (scripts/ipvs-guest/build.sh, packages cached in
//! target/ipvs-guest) and boots it with scripts/ipvs-guest/run.sh --agent inside that namespace:
//! the guest's eth0 is a virtio-net NIC on the tap. The test then drives the guest through the
//! agent on its second serial port (agent.c, `agent ctl`): [`Guest::run`] runs one program
//! there without a shell and returns its exit status and output; [`Guest::ipvsadm`],
//! [`Guest::conns`] (`ipvsadm -Lnc` parsed), [`Guest::services`] (`ipvsadm -Ln` parsed) and
//! [`Guest::dmesg`] build on it. Sockets the test opens inside the namespace
//! ([`Netns::enter`]) talk to the guest over the tap; [`Guest::attach`] adds further namespaces
//! on the same segment (another director, say).
//!
//! Addresses (RFC 2544 range): the bridge [`HOST`] (/24), guest eth0 [`GUEST`];
//! IPv6 (RFC 5180 range) [`HOST6`] and [`GUEST6`] (/64), no duplicate address detection.
//! [`VIP_NET`] and [`VIP6_NET`] are routed from the namespace to the guest for the test's
//! virtual addresses; the
//! guest's backends (`agent serve 8080`, TCP and UDP, answering "backend ADDR:PORT") sit in its own
//! namespace at [`backend`]`(11..=19)`, behind the guest (which forwards), and are routed from
//! the host namespace through the guest too. Multicast (224.0.0.0/4) leaves the host namespace
//! on the bridge.
//!
//! Dropping the [`Guest`] kills QEMU by its pid and then deletes the namespace.
#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Host end of the tap, inside the test's namespace.
pub const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 240, 2);
/// The guest's eth0.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(198, 18, 240, 1);
/// Prefix length of the tap's subnet.
pub const PREFIX: u8 = 24;
/// Routed from the host namespace to the guest: put VIPs here (on the guest's lo).
pub const VIP_NET: &str = "198.18.241.0/24";
/// The guest's backend subnet (its `be` namespace), routed from the host namespace via the guest.
pub const BACKEND_NET: &str = "198.19.0.0/24";
/// The port every guest backend listens on (TCP and UDP).
pub const BACKEND_PORT: u16 = 8080;
/// IPv6 host end of the tap (/64).
pub const HOST6: &str = "2001:2:0:f0::2";
/// IPv6 address of the guest's eth0.
pub const GUEST6: &str = "2001:2:0:f0::1";
/// Routed from the host namespace to the guest: IPv6 VIPs.
pub const VIP6_NET: &str = "2001:2:0:f1::/64";
/// The guest's IPv6 backend subnet (backend n is 2001:2:1::n, n in 11..=19).
pub const BACKEND6_NET: &str = "2001:2:1::/64";
/// Name of the tap inside the guest's namespace.
pub const TAP: &str = "xg0";
/// The bridge of the guest's namespace: the tap and [`Guest::attach`]ed namespaces are its
/// ports; the host addresses sit on it. Multicast snooping is off (every port gets every group).
pub const BRIDGE: &str = "xgbr";
/// The interface of an [`Guest::attach`]ed namespace.
pub const ATTACHED_DEV: &str = "xg1";

/// A guest backend address, `n` in 11..=19.
pub fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, n)
}

/// A VIP in [`VIP_NET`].
pub fn vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 241, n)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, Err with its output unless it succeeds.
fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the test runs as root (namespaces and taps need it).
pub fn is_root() -> bool {
    cmd("id", &["-u"]).map(|o| o.trim() == "0").unwrap_or(false)
}

const NS_PREFIX: &str = "xvsg";

/// A network namespace named `xvsg<pid>x<n>` (unique per process and call), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace with lo up and IPv6 duplicate address detection off. Deletes
    /// namespaces of this prefix left by test processes that no longer run, after killing the
    /// processes still inside them (a QEMU whose test was killed).
    pub fn new() -> Result<Netns, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        Self::sweep_stale();
        let name = format!(
            "{NS_PREFIX}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        cmd("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0"])?;
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn sweep_stale() {
        let Ok(list) = cmd("ip", &["netns", "list"]) else {
            return;
        };
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let Some((pid, _)) = rest.split_once('x') else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                // A test process that was killed leaves its QEMU running in the namespace.
                let pids = cmd("ip", &["netns", "pids", name]).unwrap_or_default();
                for p in pids.split_whitespace() {
                    let _ = cmd("kill", &["-9", p]);
                }
                let _ = cmd("ip", &["netns", "del", name]);
            }
        }
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        cmd("ip", &all)
    }

    /// `ip netns exec NAME ARGS...`.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        cmd("ip", &all)
    }

    /// Runs `f` on a thread that has entered the namespace and returns its result. Sockets made
    /// there stay in the namespace and can be used from any thread afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {path}: {e}"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| "the thread in the namespace panicked".to_string())?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd("ip", &["netns", "del", &self.name]);
    }
}

/// Puts `addr`/[`PREFIX`] and `addr6`/64 on `dev` (in `ns`) and routes multicast out of it and
/// the VIP and backend subnets (IPv4 and IPv6) via the guest.
fn segment_addresses(ns: &str, dev: &str, addr: Ipv4Addr, addr6: &str) -> Result<(), String> {
    let ip = |args: &[&str]| {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        cmd("ip", &all)
    };
    ip(&["addr", "add", &format!("{addr}/{PREFIX}"), "dev", dev])?;
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr6}/64"),
        "dev",
        dev,
        "nodad",
    ])?;
    ip(&["route", "add", "224.0.0.0/4", "dev", dev])?;
    for net in [VIP_NET, BACKEND_NET] {
        ip(&["route", "add", net, "via", &GUEST.to_string()])?;
    }
    for net in [VIP6_NET, BACKEND6_NET] {
        ip(&["-6", "route", "add", net, "via", GUEST6])?;
    }
    Ok(())
}

/// What [`Guest::run`] returns: the program's exit status ("0", "1", ..., "sigN") and its
/// output (stdout and stderr together).
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub status: String,
    pub output: String,
}

impl RunOutput {
    pub fn ok(&self) -> bool {
        self.status == "0"
    }
}

/// One row of `ipvsadm -Lnc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnRow {
    /// "TCP", "UDP", "SCTP".
    pub proto: String,
    /// Seconds left (the `mm:ss` column).
    pub expire: u32,
    /// ipvsadm's state name: ESTABLISHED, SYN_RECV, UDP, NONE, ASSURED, ...
    pub state: String,
    pub client: SocketAddr,
    pub virtual_: SocketAddr,
    pub dest: SocketAddr,
}

impl ConnRow {
    /// (protocol, client, virtual, destination): what identifies an entry across listings.
    pub fn key(&self) -> (String, SocketAddr, SocketAddr, SocketAddr) {
        (self.proto.clone(), self.client, self.virtual_, self.dest)
    }
}

impl fmt::Display for ConnRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} (expires in {} s)",
            self.proto, self.state, self.client, self.virtual_, self.dest, self.expire
        )
    }
}

/// A real server line of `ipvsadm -Ln`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestRow {
    pub addr: SocketAddr,
    /// Masq, Route, Tunnel, Local.
    pub forward: String,
    pub weight: i64,
    pub active: u64,
    pub inactive: u64,
}

/// A virtual service of `ipvsadm -Ln` with its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRow {
    pub proto: String,
    pub addr: SocketAddr,
    pub scheduler: String,
    /// The rest of the service line (e.g. "persistent 300").
    pub flags: String,
    pub dests: Vec<DestRow>,
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("bad address {text:?} in ipvsadm output: {e}"))
}

/// Parses `ipvsadm -Lnc` (with or without `--persistent-conn`).
pub fn parse_conns(text: &str) -> Result<Vec<ConnRow>, String> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 6 || !matches!(w[0], "TCP" | "UDP" | "SCTP") {
            continue;
        }
        let (m, s) = w[1]
            .split_once(':')
            .ok_or_else(|| format!("bad expire column in {line:?}"))?;
        let num = |t: &str| {
            t.parse::<u32>()
                .map_err(|_| format!("bad expire column in {line:?}"))
        };
        rows.push(ConnRow {
            proto: w[0].to_string(),
            expire: num(m)? * 60 + num(s)?,
            state: w[2].to_string(),
            client: parse_addr(w[3])?,
            virtual_: parse_addr(w[4])?,
            dest: parse_addr(w[5])?,
        });
    }
    Ok(rows)
}

/// Parses `ipvsadm -Ln` (services and their real servers; fwmark services are skipped).
pub fn parse_services(text: &str) -> Result<Vec<ServiceRow>, String> {
    let mut out: Vec<ServiceRow> = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() >= 3 && matches!(w[0], "TCP" | "UDP" | "SCTP") {
            out.push(ServiceRow {
                proto: w[0].to_string(),
                addr: parse_addr(w[1])?,
                scheduler: w[2].to_string(),
                flags: w[3..].join(" "),
                dests: Vec::new(),
            });
        } else if w.len() == 6 && w[0] == "->" && w[1] != "RemoteAddress:Port" {
            let num = |t: &str| {
                t.parse::<i64>()
                    .map_err(|_| format!("bad number in real server line {line:?}"))
            };
            let svc = out
                .last_mut()
                .ok_or_else(|| format!("real server line before any service: {line:?}"))?;
            svc.dests.push(DestRow {
                addr: parse_addr(w[1])?,
                forward: w[2].to_string(),
                weight: num(w[3])?,
                active: num(w[4])? as u64,
                inactive: num(w[5])? as u64,
            });
        }
    }
    Ok(out)
}

/// Percent-encodes one request word for the agent (agent.c, `agent ctl`).
fn escape(word: &str) -> String {
    let mut out = String::new();
    for b in word.bytes() {
        if b.is_ascii_alphanumeric() || b"._/:=,+@-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where and how to boot.
#[derive(Clone, Debug)]
pub struct GuestOptions {
    /// Console log, QEMU's log and the control socket go here (created, emptied first).
    pub work: PathBuf,
    /// Bound on the boot until the agent answers.
    pub boot_timeout: Duration,
    /// Bound on each request (the agent itself stops a program after 30 s).
    pub request_timeout: Duration,
}

impl GuestOptions {
    pub fn new(work: impl Into<PathBuf>) -> GuestOptions {
        GuestOptions {
            work: work.into(),
            boot_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A booted guest (QEMU killed by pid on drop) with its namespace (deleted after QEMU is gone).
pub struct Guest {
    child: Child,
    ctl: BufReader<UnixStream>,
    pub work: PathBuf,
    /// Why the control channel is unusable, once a request failed on it.
    broken: Option<String>,
    /// The guest's `uname -r` and `ipvsadm --version`, from its console banner.
    pub banner: String,
    pub ns: Netns,
}

impl Guest {
    /// Creates the namespace and tap, builds and boots the guest, waits for its agent.
    pub fn boot(opts: &GuestOptions) -> Result<Guest, String> {
        let build = Command::new(repo().join("scripts/ipvs-guest/build.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/ipvs-guest/build.sh: {e}"))?;
        if !build.status.success() {
            return Err(format!(
                "scripts/ipvs-guest/build.sh failed ({}): {}{}",
                build.status,
                String::from_utf8_lossy(&build.stdout),
                String::from_utf8_lossy(&build.stderr)
            ));
        }
        let ns = Netns::new()?;
        ns.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ns.ip(&["link", "set", TAP, "master", BRIDGE])?;
        ns.ip(&["link", "set", TAP, "up"])?;
        segment_addresses(&ns.name, BRIDGE, HOST, HOST6)?;

        let _ = fs::remove_dir_all(&opts.work);
        fs::create_dir_all(&opts.work)
            .map_err(|e| format!("cannot create {}: {e}", opts.work.display()))?;
        let log = fs::File::create(opts.work.join("qemu.log"))
            .map_err(|e| format!("cannot create qemu.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let work = opts.work.to_str().ok_or("work path is not UTF-8")?;
        let addr = format!("{GUEST}/{PREFIX}");
        let script = repo().join("scripts/ipvs-guest/run.sh");
        let script = script.to_str().ok_or("repo path is not UTF-8")?;
        // `ip netns exec` and run.sh both exec: the child's pid ends up QEMU's.
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, script, "--agent", work, TAP, &addr,
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start run.sh --agent: {e}"))?;
        let mut pending = PendingGuest {
            child: Some(child),
            work: opts.work.clone(),
        };

        let sock = opts.work.join("ctl.sock");
        // sockaddr_un holds 108 bytes with the terminating NUL.
        if sock.as_os_str().len() > 107 {
            return Err(format!(
                "{} is too long for a unix socket path: choose a shorter work directory",
                sock.display()
            ));
        }
        let deadline = Instant::now() + opts.boot_timeout;
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                break s;
            }
            pending.check_alive()?;
            if Instant::now() > deadline {
                return Err(pending.failure("QEMU never opened its control socket"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut ctl = BufReader::new(stream);
        let left = deadline.saturating_duration_since(Instant::now());
        ctl.get_ref()
            .set_read_timeout(Some(left.max(Duration::from_secs(1))))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        loop {
            line.clear();
            match ctl.read_line(&mut line) {
                Ok(0) => return Err(pending.failure("the guest closed its control channel")),
                Ok(_) if line.trim_end() == "@@ ready" => break,
                Ok(_) => continue,
                Err(e) => {
                    return Err(pending.failure(&format!("no answer from the guest's agent: {e}")))
                }
            }
        }
        ctl.get_ref()
            .set_read_timeout(Some(opts.request_timeout))
            .map_err(|e| e.to_string())?;
        let banner = fs::read_to_string(opts.work.join("console.log"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("=== XVS-PARITY AGENT "))
            .unwrap_or("")
            .to_string();
        let mut guest = Guest {
            child: pending.child.take().expect("child"),
            ctl,
            work: opts.work.clone(),
            broken: None,
            banner,
            ns,
        };
        guest.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{GUEST6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        Ok(guest)
    }

    /// Runs `argv[0]` (a path in the guest: /sbin/ipvsadm, /sbin/ip, /bin/<busybox applet>) with
    /// `argv` in the guest, no shell.
    /// After a failed exchange the channel's state is unknown: every later request fails.
    pub fn run(&mut self, argv: &[&str]) -> Result<RunOutput, String> {
        if let Some(why) = &self.broken {
            return Err(format!("the guest's control channel failed earlier: {why}"));
        }
        let res = self.exchange(argv);
        if let Err(e) = &res {
            self.broken = Some(e.clone());
        }
        let out = res?;
        if out.status == "err" {
            return Err(format!("the agent refused {argv:?}: {}", out.output));
        }
        Ok(out)
    }

    fn exchange(&mut self, argv: &[&str]) -> Result<RunOutput, String> {
        let mut req = String::from("run");
        for w in argv {
            req.push(' ');
            req.push_str(&escape(w));
        }
        req.push('\n');
        self.ctl
            .get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| format!("cannot send to the guest's agent: {e}"))?;
        let mut head = String::new();
        loop {
            head.clear();
            let n = self
                .ctl
                .read_line(&mut head)
                .map_err(|e| format!("no answer from the guest's agent to {argv:?}: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the guest's agent closed its channel during {argv:?}"
                ));
            }
            if head.starts_with("@@ ") {
                break;
            }
        }
        let w: Vec<&str> = head.split_whitespace().collect();
        let len: usize = w
            .get(2)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad answer header {head:?}"))?;
        let mut body = vec![0u8; len];
        self.ctl
            .read_exact(&mut body)
            .map_err(|e| format!("short answer from the guest's agent: {e}"))?;
        Ok(RunOutput {
            status: w[1].to_string(),
            output: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Runs a program; Err with its output unless it exits 0.
    pub fn run_ok(&mut self, argv: &[&str]) -> Result<String, String> {
        let out = self.run(argv)?;
        if !out.ok() {
            return Err(format!(
                "{} in the guest: exit {}: {}",
                argv.join(" "),
                out.status,
                out.output
            ));
        }
        Ok(out.output)
    }

    /// `ipvsadm ARGS...` in the guest; Err unless it exits 0.
    pub fn ipvsadm(&mut self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["/sbin/ipvsadm"];
        argv.extend_from_slice(args);
        self.run_ok(&argv)
    }

    /// `ip ARGS...` in the guest; Err unless it exits 0.
    pub fn ip(&mut self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["/sbin/ip"];
        argv.extend_from_slice(args);
        self.run_ok(&argv)
    }

    /// `sysctl -w KEY=VALUE` in the guest (e.g. net.ipv4.vs.sync_threshold).
    pub fn sysctl(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.run_ok(&["/bin/sysctl", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// A file of the guest (/proc/net/ip_vs_conn_sync, say).
    pub fn read(&mut self, path: &str) -> Result<String, String> {
        self.run_ok(&["/bin/cat", path])
    }

    /// `ipvsadm -Lnc`, parsed.
    pub fn conns(&mut self) -> Result<Vec<ConnRow>, String> {
        parse_conns(&self.ipvsadm(&["-Lnc"])?)
    }

    /// `ipvsadm -Ln`, parsed.
    pub fn services(&mut self) -> Result<Vec<ServiceRow>, String> {
        parse_services(&self.ipvsadm(&["-Ln"])?)
    }

    /// The kernel log, one line each.
    pub fn dmesg(&mut self) -> Result<Vec<String>, String> {
        Ok(self
            .run_ok(&["/bin/dmesg"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Polls `ipvsadm -Lnc` until `pred` holds (Ok with the rows) or `within` passes (Err with
    /// the last rows).
    pub fn wait_conns(
        &mut self,
        within: Duration,
        pred: impl Fn(&[ConnRow]) -> bool,
    ) -> Result<Vec<ConnRow>, String> {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.conns()?;
            if pred(&rows) {
                return Ok(rows);
            }
            if Instant::now() > deadline {
                let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
                return Err(format!(
                    "condition not met within {within:?}; ipvsadm -Lnc:\n{}",
                    text.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Another namespace on the guest's Ethernet segment (a veth into the bridge of the guest's
    /// namespace; the interface is [`ATTACHED_DEV`] there) with `addr`/[`PREFIX`] and
    /// `addr6`/64, multicast routed out of it and the VIP and backend subnets routed via the
    /// guest, as in the guest's own namespace. Deleted when dropped (or with the guest's).
    pub fn attach(&self, addr: Ipv4Addr, addr6: &str) -> Result<Netns, String> {
        let ns = Netns::new()?;
        self.attach_ns(&ns.name, addr, addr6)?;
        Ok(ns)
    }

    /// [`Guest::attach`] for a namespace the caller made (a testbed's director, say): the veth
    /// ([`ATTACHED_DEV`] there) goes when either namespace is deleted.
    pub fn attach_ns(&self, ns: &str, addr: Ipv4Addr, addr6: &str) -> Result<(), String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let port = format!("xgp{}", SEQ.fetch_add(1, Ordering::Relaxed));
        self.ns.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            ATTACHED_DEV,
            "netns",
            ns,
        ])?;
        self.ns.ip(&["link", "set", &port, "master", BRIDGE])?;
        self.ns.ip(&["link", "set", &port, "up"])?;
        cmd("ip", &["-n", ns, "link", "set", ATTACHED_DEV, "up"])?;
        segment_addresses(ns, ATTACHED_DEV, addr, addr6)
    }

    /// The guest's serial console so far.
    pub fn console(&self) -> String {
        fs::read_to_string(self.work.join("console.log")).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // self.ns drops after this: the namespace goes once QEMU no longer holds the tap.
    }
}

/// QEMU while the boot is in progress: killed by pid if the boot fails.
struct PendingGuest {
    child: Option<Child>,
    work: PathBuf,
}

impl PendingGuest {
    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                return Err(self.failure(&format!("QEMU exited ({st})")));
            }
        }
        Ok(())
    }

    fn failure(&self, what: &str) -> String {
        let tail = |name: &str| {
            let text = fs::read_to_string(self.work.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "the IPVS guest did not come up: {what}\n--- qemu.log:\n{}\n--- console.log:\n{}",
            tail("qemu.log"),
            tail("console.log")
        )
    }
}

impl Drop for PendingGuest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
