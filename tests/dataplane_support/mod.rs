//! Shared helpers of the data-plane integration tests: the namespace testbed as an RAII guard
//! (scripts/testbed.sh, unique prefix, torn down on drop even when the test fails), root check,
//! and small clients run inside the client namespace.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Say loudly that a test did not run.
pub fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("!!!!! SKIPPED {what}: needs root (network namespaces, XDP, AF_XDP) !!!!!");
    true
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh")
}

/// The testbed under a unique prefix; torn down on drop.
pub struct Testbed {
    pub prefix: String,
}

impl Testbed {
    /// `tag`: two letters unique per test (the prefix adds the pid).
    pub fn up(tag: &str) -> Testbed {
        Testbed::up_with(tag, &[])
    }

    /// [`Testbed::up`] with testbed.sh's environment settings (e.g. `("DIRECTORS", "2")`).
    pub fn up_with(tag: &str, env: &[(&str, &str)]) -> Testbed {
        let prefix = format!("{tag}{:x}", std::process::id() % 0xfff);
        let _ = Command::new(script()).args(["down", &prefix]).status();
        let tb = Testbed { prefix };
        let st = Command::new(script())
            .envs(env.iter().copied())
            .args(["up", &tb.prefix])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run testbed.sh");
        assert!(st.success(), "testbed.sh up {} failed", tb.prefix);
        tb
    }

    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Run a command in namespace `n`: (success, stdout).
    pub fn exec(&self, n: &str, args: &[&str]) -> (bool, String) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns(n)])
            .args(args)
            .output()
            .expect("ip netns exec");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    /// Every frame towards the director leaves the router's bridge ports on tx queue 0, so it
    /// arrives on the director's rx queue 0 (veth native XDP: rx queue = peer's tx queue).
    pub fn single_queue_towards_director(&self) {
        for dev in ["df", "db"] {
            let (ok, _) = self.exec("rt", &["ethtool", "-L", dev, "tx", "1"]);
            assert!(ok, "ethtool -L {dev} tx 1");
        }
    }

    pub fn xdp_attached(&self, dev: &str) -> bool {
        self.xdp_attached_in("dir", dev)
    }

    pub fn xdp_attached_in(&self, ns: &str, dev: &str) -> bool {
        self.exec(ns, &["ip", "link", "show", dev])
            .1
            .contains("xdp")
    }

    /// Wait (bounded) until the director's kernel has resolved these addresses, then one more
    /// refresh period for the workers to hear about them.
    pub fn wait_neighbours(&self, addrs: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let n = self.exec("dir", &["ip", "neigh"]).1;
            if addrs.iter().all(|a| {
                n.lines()
                    .any(|l| l.starts_with(&format!("{a} ")) && l.contains("lladdr"))
            }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Pids of the python processes in namespace `n` (the testbed's servers, started by
    /// scripts/testbed.sh; the decap helper excluded), for a test that kills a backend's server.
    pub fn server_pids(&self, n: &str) -> Vec<String> {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.ns(n)])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("python3") && !c.contains("decap-helper"))
            })
            .map(str::to_string)
            .collect()
    }

    /// One HTTP GET from client 1: the body (the backend's name) or None.
    pub fn http_get(&self, url: &str) -> Option<String> {
        let (ok, out) = self.exec("c1", &["curl", "-s", "-m", "3", url]);
        ok.then(|| out.trim().to_string())
    }

    /// UDP request/response from client 1 to addr:5000, retried up to 5 times:
    /// "<backend> <msg> <reply source address>" or "".
    pub fn udp_ask(&self, addr: &str, msg: &str) -> String {
        let code = "import socket,sys\n\
             a=sys.argv[1]; f=socket.AF_INET6 if ':' in a else socket.AF_INET\n\
             s=socket.socket(f,socket.SOCK_DGRAM); s.settimeout(1.0)\n\
             for i in range(5):\n\
             \x20 s.sendto(sys.argv[2].encode(),(a,5000))\n\
             \x20 try:\n\
             \x20   d,src=s.recvfrom(200); print(d.decode(), src[0]); break\n\
             \x20 except socket.timeout: pass\n";
        self.exec("c1", &["python3", "-c", code, addr, msg]).1
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["down", &self.prefix]).status();
    }
}

/// A child process killed (and reaped) on drop if it is still running.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The head of a director configuration for the testbed with one unpinned worker on queue 0
/// (call [`Testbed::single_queue_towards_director`]): interfaces, routes, IPv4 only. Services
/// follow.
pub const ONE_WORKER_V4: &str = r#"log_interval_secs = 0
neighbour_refresh_ms = 200

[[worker]]
queue = 0

[[interface]]
name = "front"
ipv4 = "198.18.1.2"

[[interface]]
name = "back"
ipv4 = "198.18.3.2"

[[route]]
dst = "0.0.0.0/0"
via = "198.18.1.1"
interface = "front"

[[route]]
dst = "198.18.3.0/24"
interface = "back"
"#;

/// The director's interfaces and routes in the testbed, IPv4 and IPv6 (front 198.18.1.2 /
/// 2001:2:0:1::2 with the router as default gateway, back 198.18.3.2 / 2001:2:0:3::2).
pub const DUAL_STACK_NETWORK: &str = r#"[[interface]]
name = "front"
ipv4 = "198.18.1.2"
ipv6 = "2001:2:0:1::2"

[[interface]]
name = "back"
ipv4 = "198.18.3.2"
ipv6 = "2001:2:0:3::2"

[[route]]
dst = "0.0.0.0/0"
via = "198.18.1.1"
interface = "front"

[[route]]
dst = "::/0"
via = "2001:2:0:1::1"
interface = "front"

[[route]]
dst = "198.18.3.0/24"
interface = "back"

[[route]]
dst = "2001:2:0:3::/64"
interface = "back"
"#;

impl Testbed {
    /// Start `xvs run` in the director namespace on `config` with its control socket at
    /// `socket`, stderr to `log`, and wait (bounded) until the XDP program is attached and the
    /// socket answers.
    pub fn start_xvs(
        &self,
        config: &std::path::Path,
        socket: &std::path::Path,
        log: &std::path::Path,
    ) -> ChildGuard {
        self.start_xvs_in("dir", config, socket, log)
    }

    /// [`Testbed::start_xvs`] in director namespace `ns` (`dir`, `dir2`, …).
    pub fn start_xvs_in(
        &self,
        ns: &str,
        config: &std::path::Path,
        socket: &std::path::Path,
        log: &std::path::Path,
    ) -> ChildGuard {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(ns),
                env!("CARGO_BIN_EXE_xvs"),
                "run",
            ])
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start xvs");
        let mut g = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.xdp_attached_in(ns, "back") && socket.exists()) {
            assert!(
                g.0.try_wait().expect("wait").is_none(),
                "xvs exited early (see {})",
                log.display()
            );
            assert!(
                Instant::now() < deadline,
                "xvs did not come up (see {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }
}

pub mod pair;
