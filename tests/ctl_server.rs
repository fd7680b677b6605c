//! `xvs ctl` end to end: the real binary talks to a control socket served (in this process) by
//! `Server` over a fake `Director`; commands change the fake's running state, listings come
//! back in ipvsadm's layout, errors come back with their exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use xvs::control::{DesiredState, Director, Limits, Listing, Server};
use xvs_forwarding::conn::{ConnId, ConnListing};
use xvs_forwarding::service::ServiceKey;

/// A director that keeps its running state in memory and refuses states with a service on
/// port 666 (to test `apply` errors).
struct Fake {
    running: Mutex<DesiredState>,
    file: Mutex<DesiredState>,
    /// What the next reload reads from "the file".
    next_file: Mutex<DesiredState>,
    zeroed: Mutex<Vec<Option<ServiceKey>>>,
    applies: Mutex<usize>,
}

impl Fake {
    fn new(file: DesiredState) -> Arc<Fake> {
        Arc::new(Fake {
            running: Mutex::new(file.clone()),
            file: Mutex::new(file.clone()),
            next_file: Mutex::new(file),
            zeroed: Mutex::new(Vec::new()),
            applies: Mutex::new(0),
        })
    }
}

impl Director for Fake {
    fn desired(&self) -> DesiredState {
        self.running.lock().unwrap().clone()
    }
    fn apply(&self, new: DesiredState) -> Result<(), String> {
        if new.services.iter().any(|s| s.key.port() == 666) {
            return Err("port 666 is reserved".into());
        }
        *self.applies.lock().unwrap() += 1;
        *self.running.lock().unwrap() = new;
        Ok(())
    }
    fn listing(&self) -> Listing {
        let mut l = Listing::from_state(&self.desired());
        for s in &mut l.services {
            for b in &mut s.backends {
                b.active = b.weight * 10;
                b.inactive = 1;
            }
        }
        l
    }
    fn connections(&self) -> Vec<ConnListing> {
        vec![ConnListing {
            id: ConnId(0),
            proto: 6,
            template: false,
            expires_secs: 898,
            state: "ESTABLISHED",
            client: "198.18.1.7:51000".parse().unwrap(),
            virt: "198.18.0.100:80".parse().unwrap(),
            backend: "198.19.0.11:8080".parse().unwrap(),
        }]
    }
    fn zero(&self, service: Option<ServiceKey>) {
        self.zeroed.lock().unwrap().push(service);
    }
    fn file_state(&self) -> DesiredState {
        self.file.lock().unwrap().clone()
    }
    fn reload(&self) -> Result<DesiredState, String> {
        let f = self.next_file.lock().unwrap().clone();
        *self.file.lock().unwrap() = f.clone();
        *self.running.lock().unwrap() = f.clone();
        Ok(f)
    }
    fn status(&self) -> String {
        "fake director: 0 workers".into()
    }
    fn daemons(&self) -> Vec<(xvs::sync::DaemonConfig, u16)> {
        self.desired()
            .daemons
            .iter()
            .map(|d| (d.clone(), d.effective_maxlen(1500)))
            .collect()
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xvs-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

fn ctl(socket: &Path, args: &str, stdin: &str) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args.split_whitespace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Out {
        status: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

fn ok(socket: &Path, args: &str) -> String {
    let o = ctl(socket, args, "");
    assert_eq!(o.status, 0, "{args}: {}", o.stderr);
    assert_eq!(o.stderr, "", "{args}");
    o.stdout
}

#[test]
fn commands_change_the_running_state_and_list_as_ipvsadm() {
    let dir = TempDir::new("cmds");
    let sock = dir.0.join("run/xvs.sock");
    let fake = Fake::new(DesiredState::default());
    let server = Server::start(&sock, fake.clone()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode");
    }

    ok(&sock, "-A -t 198.18.0.100:80 -s rr");
    ok(&sock, "-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 3");
    ok(&sock, "-a -t 198.18.0.100:80 -r 198.19.0.2:8080 -m");
    ok(&sock, "-At [2001:db8::100]:443 -s sh -b sh-port -p 120");
    ok(
        &sock,
        "-a -t [2001:db8::100]:443 -r [2001:db8:1::5] -g -w 0",
    );
    assert_eq!(*fake.applies.lock().unwrap(), 5, "one apply per command");
    let st = fake.desired();
    assert_eq!(st.services.len(), 2);
    assert_eq!(st.services[0].backends[0].weight, 3);
    assert_eq!(
        st.services[1].backends[0].port, 443,
        "DR takes the service port"
    );

    assert_eq!(
        ok(&sock, "-Ln"),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n\
         \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  198.18.0.100:80 rr\n\
         \x20 -> 198.19.0.2:8080              Masq    1      10         1         \n\
         \x20 -> 198.19.0.11:8080             Masq    3      30         1         \n\
         TCP  [2001:db8::100]:443 sh (sh-port) persistent 120\n\
         \x20 -> [2001:db8:1::5]:443          Route   0      0          1         \n"
    );
    // One service: no banner.
    let one = ok(&sock, "-L -n -t 198.18.0.100:80");
    assert!(
        one.starts_with("Prot LocalAddress:Port Scheduler Flags\n"),
        "{one}"
    );
    assert_eq!(one.lines().count(), 5);
    assert_eq!(
        ok(&sock, "-Lnc"),
        "IPVS connection entries\n\
         pro expire state       source             virtual            destination\n\
         TCP 14:58  ESTABLISHED 198.18.1.7:51000   198.18.0.100:80    198.19.0.11:8080\n"
    );
    let conns: serde_json::Value = serde_json::from_str(&ok(&sock, "-Lnc --json")).unwrap();
    assert_eq!(conns[0]["protocol"], "TCP");
    assert_eq!(conns[0]["expires"], 898);
    assert_eq!(conns[0]["backend"], "198.19.0.11:8080");
    assert_eq!(
        ok(&sock, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    ok(&sock, "--set 0 30 0");
    assert_eq!(
        ok(&sock, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 900 30 300\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&sock, "-Ln --json")).unwrap();
    assert_eq!(json["services"][0]["backends"][1]["active_conns"], 30);
    assert_eq!(json["services"][1]["address"], "2001:db8::100");

    // Edit and delete.
    ok(&sock, "-e -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 7");
    ok(&sock, "-d -t 198.18.0.100:80 -r 198.19.0.2:8080");
    ok(&sock, "-E -t 198.18.0.100:80 -s wrr");
    let st = fake.desired();
    assert_eq!(st.services[0].scheduler, "wrr");
    assert_eq!(st.services[0].backends.len(), 1);
    assert_eq!(st.services[0].backends[0].weight, 7);

    // -Z reaches the director.
    ok(&sock, "-Z -t 198.18.0.100:80");
    ok(&sock, "-Z");
    assert_eq!(fake.zeroed.lock().unwrap().len(), 2);

    // -S → -C → -R gives back the same state, as one apply.
    let saved = ok(&sock, "-S -n");
    assert_eq!(
        saved,
        "-A -t 198.18.0.100:80 -s wrr\n\
         -a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 7\n\
         -A -t [2001:db8::100]:443 -s sh -p 120 -b sh-port\n\
         -a -t [2001:db8::100]:443 -r [2001:db8:1::5]:443 -g -w 0\n"
    );
    let before = fake.desired();
    ok(&sock, "-C");
    assert!(fake.desired().services.is_empty());
    let applies = *fake.applies.lock().unwrap();
    let o = ctl(&sock, "-R", &saved);
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert_eq!(
        *fake.applies.lock().unwrap(),
        applies + 1,
        "-R is one apply"
    );
    assert_eq!(fake.desired().services, before.services);

    server.stop();
    assert!(!sock.exists(), "socket removed on stop");
}

#[test]
fn errors_and_exit_status() {
    let dir = TempDir::new("errors");
    let sock = dir.0.join("xvs.sock");
    let fake = Fake::new(DesiredState::default());
    let _server = Server::start(&sock, fake.clone()).unwrap();
    ok(&sock, "-A -t 198.18.0.100:80 -s rr");

    // Exit statuses as ipvsadm 1.31's (seen in the QEMU guest): 255 where the kernel refuses,
    // 2 for ipvsadm's own checks, 255 for an option popt does not know, 1 for -L of a missing
    // service.
    let o = ctl(&sock, "-A -t 198.18.0.100:80 -s rr", "");
    assert_eq!(o.status, 255);
    assert_eq!(o.stderr, "service TCP 198.18.0.100:80 already exists\n");
    assert_eq!(o.stdout, "");

    let o = ctl(&sock, "-a -t 198.18.0.100:81 -r 198.19.0.1", "");
    assert_eq!(
        (o.status, o.stderr.as_str()),
        (255, "service TCP 198.18.0.100:81 does not exist\n")
    );
    let o = ctl(&sock, "-A -t 198.18.0.100:80 -w 2", "");
    assert_eq!(
        (o.status, o.stderr.as_str()),
        (
            2,
            "Illegal 'weight' option with the 'add-service' command\n"
        )
    );
    let o = ctl(&sock, "-L --bogus", "");
    assert_eq!(
        (o.status, o.stderr.as_str()),
        (255, "--bogus: unknown option\n")
    );
    let o = ctl(&sock, "-A -t 198.18.0.100:81 -s nosuch", "");
    assert_eq!(o.status, 255);
    assert!(
        o.stderr.contains("unknown scheduler `nosuch`"),
        "{}",
        o.stderr
    );
    // The director refuses: nothing changes.
    let o = ctl(&sock, "-A -t 198.18.0.100:666", "");
    assert_eq!(o.status, 255);
    assert_eq!(o.stderr, "not applied: port 666 is reserved\n");
    assert_eq!(fake.desired().services.len(), 1);
    // -R stops at the bad line and applies nothing.
    let o = ctl(
        &sock,
        "-R",
        "-A -t 198.18.0.100:81 -s rr\n-a -t 198.18.0.100:82 -r 198.19.0.1\n",
    );
    assert_eq!(o.status, 255);
    assert_eq!(
        o.stderr,
        "restore: nothing applied: line 2: service TCP 198.18.0.100:82 does not exist\n"
    );
    assert_eq!(fake.desired().services.len(), 1);
    let o = ctl(&sock, "-L -t 198.18.0.100:99", "");
    assert_eq!(o.status, 1);
    // Help and status answer on stdout.
    assert!(ok(&sock, "-h").contains("Usage:"));
    assert_eq!(ok(&sock, "status"), "fake director: 0 workers\n");
}

#[test]
fn reload_reports_discarded_runtime_changes() {
    let dir = TempDir::new("reload");
    let sock = dir.0.join("xvs.sock");
    let file = xvs::control::ipvsadm::parse_rules(
        "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m\n",
    )
    .unwrap();
    let fake = Fake::new(file.clone());
    let _server = Server::start(&sock, fake.clone()).unwrap();
    // Two runtime changes; the file is then edited to contain one of them plus a new service.
    ok(&sock, "-a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m");
    ok(&sock, "-e -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 5");
    let next = xvs::control::ipvsadm::parse_rules(
        "-A -t 198.18.0.100:80 -s rr\n\
         -a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m\n\
         -a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m\n\
         -A -u 198.18.0.100:53 -s rr\n",
    )
    .unwrap();
    *fake.next_file.lock().unwrap() = next.clone();
    let out = ok(&sock, "reload");
    assert_eq!(
        out,
        "reloaded: 2 service(s), 2 backend(s)\n\
         changes to the running state: 2\n\
         \x20 -e -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 1\n\
         \x20 -A -u 198.18.0.100:53 -s rr\n\
         runtime changes not in the file are discarded: 1\n\
         \x20 -e -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 5\n"
    );
    assert_eq!(fake.desired(), next);
}

#[test]
fn missing_socket_and_stale_socket() {
    let dir = TempDir::new("missing");
    let sock = dir.0.join("nobody.sock");
    let o = ctl(&sock, "-Ln", "");
    assert_eq!(o.status, 1);
    assert_eq!(
        o.stderr,
        format!(
            "xvs ctl: is `xvs run` running? socket {}: No such file or directory\n",
            sock.display()
        )
    );
    // Help, version and bad command lines need no director; --socket may follow the args.
    let o = ctl(&sock, "-h", "");
    assert_eq!(o.status, 0);
    assert!(o.stdout.contains("Usage:"));
    let o = ctl(&sock, "-A -t 198.18.0.100:80 -w 1", "");
    assert_eq!(o.status, 2);
    assert_eq!(
        o.stderr,
        "Illegal 'weight' option with the 'add-service' command\n"
    );
    // A stale socket file (no one listening) is replaced; a live one is not.
    std::fs::create_dir_all(&dir.0).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    // Other tests spawn processes in parallel: a child forked while the listener was open holds
    // it until its exec closes it (CLOEXEC). Give that a moment so the socket is truly stale.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let fake = Fake::new(DesiredState::default());
    let server = Server::start(&sock, fake.clone()).unwrap();
    assert!(
        Server::start(&sock, fake.clone()).is_err(),
        "second server refused"
    );
    assert_eq!(ok(&sock, "-S"), "");
    let o = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["ctl", "-A", "-t", "198.18.0.100:80", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fake.desired().services.len(), 1);
    server.stop();
}

/// Scale: 1000 services x 10 backends through the real binary (`-R` of 11 000 rules, `-Ln`,
/// `-S`, one `-a` on the big state). Prints timings; run with
/// `cargo test -p xvs --test ctl_server -- --ignored --nocapture scale`.
#[test]
#[ignore]
fn scale_thousand_services() {
    use std::fmt::Write as _;
    use std::time::Instant;
    let dir = TempDir::new("scale");
    let sock = dir.0.join("xvs.sock");
    let fake = Fake::new(DesiredState::default());
    let _server = Server::start(&sock, fake.clone()).unwrap();
    let mut rules = String::new();
    for s in 0..1000u32 {
        let vip = format!("198.18.{}.{}:80", s / 250, s % 250 + 1);
        let _ = writeln!(rules, "-A -t {vip} -s wrr");
        for b in 0..10u32 {
            let _ = writeln!(
                rules,
                "-a -t {vip} -r 198.19.{}.{}:8080 -m -w {}",
                s % 200,
                b + 1,
                b + 1
            );
        }
    }
    let t = Instant::now();
    let o = ctl(&sock, "-R", &rules);
    assert_eq!(o.status, 0, "{}", o.stderr);
    let restore = t.elapsed();
    let t = Instant::now();
    let ln = ok(&sock, "-Ln");
    let list = t.elapsed();
    assert_eq!(ln.lines().count(), 3 + 1000 + 10_000);
    let t = Instant::now();
    let saved = ok(&sock, "-S -n");
    let save = t.elapsed();
    assert_eq!(saved.lines().count(), 11_000);
    let t = Instant::now();
    ok(&sock, "-a -t 198.18.0.1:80 -r 198.19.250.1:8080 -m");
    let add = t.elapsed();
    eprintln!(
        "1000 services x 10 backends: -R {restore:?}, -Ln {list:?} ({} bytes), -S {save:?}, one -a {add:?}",
        ln.len()
    );
}

#[test]
fn sync_daemons_start_list_save_and_stop_as_ipvsadm() {
    let dir = TempDir::new("daemons");
    let sock = dir.0.join("run/xvs.sock");
    let fake = Fake::new(DesiredState::default());
    let server = Server::start(&sock, fake.clone()).unwrap();
    assert_eq!(ok(&sock, "-L --daemon"), "");
    ok(
        &sock,
        "--start-daemon master --mcast-interface xvs0 --syncid 7",
    );
    ok(
        &sock,
        "--start-daemon backup --mcast-interface xvs1 --syncid 9 --mcast-group 239.1.2.3 --mcast-port 9000",
    );
    assert_eq!(
        ok(&sock, "-L --daemon"),
        "master sync daemon (mcast=xvs0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
         backup sync daemon (mcast=xvs1, syncid=9, maxlen=1472, group=239.1.2.3, port=9000, ttl=1)\n"
    );
    let again = ctl(&sock, "--start-daemon master --mcast-interface xvs0", "");
    assert_ne!(again.status, 0);
    assert!(
        again
            .stderr
            .contains("a master sync daemon is already running"),
        "{}",
        again.stderr
    );
    let saved = ok(&sock, "-S");
    assert!(
        saved.ends_with(
            "--start-daemon master --mcast-interface xvs0 --syncid 7\n\
             --start-daemon backup --mcast-interface xvs1 --syncid 9 --mcast-group 239.1.2.3 --mcast-port 9000\n"
        ),
        "{saved}"
    );
    let toml = ok(&sock, "-S --toml");
    assert!(
        toml.contains("\n[sync.master]\ninterface = \"xvs0\"\nsyncid = 7\n"),
        "{toml}"
    );
    ok(&sock, "--stop-daemon master");
    assert!(ok(&sock, "-L --daemon").starts_with("backup sync daemon"));
    let none = ctl(&sock, "--stop-daemon master", "");
    assert_ne!(none.status, 0);
    // -S output restores the same daemons.
    ok(&sock, "--stop-daemon backup");
    let o = ctl(&sock, "-R", &saved);
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert_eq!(fake.desired().daemons.len(), 2);
    server.stop();
}

#[test]
fn rate_limits_set_list_save_and_restore() {
    let dir = TempDir::new("limits");
    let sock = dir.0.join("run/xvs.sock");
    let fake = Fake::new(DesiredState::default());
    let server = Server::start(&sock, fake.clone()).unwrap();
    ok(&sock, "-A -t 198.18.0.100:80 -s rr --conn-rate 1000");
    ok(
        &sock,
        "-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m --conn-rate 300",
    );
    ok(&sock, "-a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m");
    ok(&sock, "--source-rate 50/16");
    let st = fake.desired();
    assert_eq!(st.services[0].conn_rate, 1000);
    assert_eq!(st.services[0].backends[0].conn_rate, 300);
    assert_eq!(
        (
            st.source_limit.rate,
            st.source_limit.prefix_v4,
            st.source_limit.prefix_v6
        ),
        (50, 16, 64)
    );
    assert_eq!(
        ok(&sock, "-L --limits"),
        "Prot LocalAddress:Port              ConnRate    Refused\n\
         \x20 -> RemoteAddress:Port\n\
         TCP  198.18.0.100:80                  1000/s          0\n\
         \x20 -> 198.19.0.11:8080                  300/s          0\n\
         \x20 -> 198.19.0.12:8080                      -          0\n\
         Source prefixes: 50/s per /16 (IPv4) and /64 (IPv6), refused 0\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&sock, "-L --limits --json")).unwrap();
    assert_eq!(json["source"]["prefix_v4"], 16);
    assert!(ok(&sock, "-Ln").contains(
        "TCP  198.18.0.100:80 rr conn_rate 1000/s
"
    ));
    let bad = ctl(&sock, "--source-rate 50/40", "");
    assert_eq!(bad.status, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("source-rate"), "{}", bad.stderr);
    let saved = ok(&sock, "-S");
    assert!(
        saved.contains(
            "-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 1 --conn-rate 300
"
        ),
        "{saved}"
    );
    assert!(
        saved.ends_with(
            "--source-rate 50/16/64
"
        ),
        "{saved}"
    );
    // Restore onto an empty director gives the same limits back.
    ok(&sock, "-C");
    ok(&sock, "--source-rate 0");
    assert_eq!(fake.desired().source_limit.rate, 0);
    let o = ctl(&sock, "-R", &saved);
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert_eq!(ok(&sock, "-S"), saved);
    server.stop();
}

/// A client that sends nothing and one that sends half a request hold their own threads only:
/// `xvs ctl status` from a third answers at once; clients beyond the limit are told "busy";
/// silent clients are answered and closed after the request timeout; stopping the server does
/// not wait for them.
#[test]
fn slow_clients_do_not_block_others() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    let dir = TempDir::new("slow");
    std::fs::create_dir_all(&dir.0).unwrap();
    let sock = dir.0.join("xvs.sock");
    let limits = Limits {
        max_clients: 3,
        request_timeout: Duration::from_millis(1500),
    };
    let server = Server::start_with(&sock, Fake::new(DesiredState::default()), limits).unwrap();
    let opened = Instant::now();
    let silent = UnixStream::connect(&sock).unwrap();
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(br#"{"args": ["-L"#).unwrap();
    // Let the server take both before the next client.
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let o = ctl(&sock, "status", "");
    let took = t.elapsed();
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "fake director: 0 workers\n");
    // The binary's own start-up is most of this; one request at a time would wait 1.5 s.
    assert!(took < Duration::from_millis(1000), "status took {took:?}");
    eprintln!("xvs ctl status beside two stalled clients: {took:?}");

    // Limit: two stalled + one more stalled = 3; the fourth is refused with a clear message.
    let third = UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let o = ctl(&sock, "status", "");
    assert_eq!(o.status, 1);
    assert!(
        o.stderr.contains("busy (3 clients being served)"),
        "{}",
        o.stderr
    );

    // Timeout: each stalled client gets a "not complete" answer and EOF, then status works.
    for mut c in [silent, half, third] {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("not complete within 1500 ms"), "{answer}");
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(4000),
        "{waited:?}"
    );
    // The answer is sent just before the thread ends; let the server see it finished.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ok(&sock, "status"), "fake director: 0 workers\n");

    // Stopping with a silent client connected takes about one poll period, not the timeout.
    let _idle = UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    server.stop();
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "stop took {:?}",
        t.elapsed()
    );
}
