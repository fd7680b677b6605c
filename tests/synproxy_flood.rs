//! The SYN proxy end to end (issue 16): the real `xvs run` binary in the namespace testbed with
//! two SYN-proxied services — NAT on 198.18.10.1:80 and FullNAT on 198.18.10.4:80, backends
//! serving a 300 kB file on port 8081 — and a connection table of 2000 entries per worker. A
//! spoofed-source SYN flood (a raw socket in the client namespace, 2000 random sources in
//! 198.18.64.0/18, both VIPs) runs while the real client fetches the file 20 times per service
//! with curl: every transfer must be whole (same SHA-256 as the file), the flood must have been
//! answered with cookies (status counters), and the table must stay nearly empty. Then the
//! listing shows the proxied connections. Needs root; skipped loudly otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::{skip_unless_root, ChildGuard, Testbed, ONE_WORKER_V4};

const FLOOD: &str = r#"
import random, signal, socket, struct, sys, time
signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
vips = sys.argv[1].split(',')
end = time.time() + float(sys.argv[2])
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
rnd = random.Random(16)
pkts = []
for i in range(2000):
    src = socket.inet_aton('198.18.%d.%d' % (rnd.randint(64, 127), rnd.randint(1, 254)))
    dst = vips[i % len(vips)]
    d = socket.inet_aton(dst)
    tcp = struct.pack('!HHIIBBHHH', rnd.randint(1024, 65535), 80, rnd.getrandbits(32), 0, 5 << 4, 2, 64240, 0, 0)
    c = csum(src + d + struct.pack('!BBH', 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack('!H', c) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, d)
    pkts.append((ip + tcp, dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
n = 0
try:
    while time.time() < end:
        for p, dst in pkts:
            try:
                s.sendto(p, (dst, 0))
                n += 1
            except OSError:
                pass
except KeyboardInterrupt:
    pass
print(n, flush=True)
"#;

fn config() -> String {
    let mut c = ONE_WORKER_V4.replace(
        "[[worker]]\nqueue = 0\n",
        "[director]\nconnections = 2000\n\n[[worker]]\nqueue = 0\n",
    );
    c.push_str("\n[fullnat]\nlocal_addresses = [\"198.18.3.100\"]\n");
    for (vip, method) in [("198.18.10.1", "nat"), ("198.18.10.4", "fullnat")] {
        c.push_str(&format!(
            "\n[[service]]\nprotocol = \"tcp\"\nvip = \"{vip}\"\nport = 80\nscheduler = \"rr\"\nsynproxy = true\n"
        ));
        for i in 1..=3 {
            c.push_str(&format!(
                "\n[[service.backend]]\naddress = \"198.18.3.1{i}\"\nport = 8081\nmethod = \"{method}\"\n"
            ));
        }
    }
    c
}

fn sha256(tb: &Testbed, ns: &str, args: &[&str]) -> Option<String> {
    let (ok, out) = tb.exec(ns, args);
    ok.then(|| out.split_whitespace().next().unwrap_or("").to_string())
}

#[test]
fn legitimate_clients_fetch_whole_bodies_through_synproxied_nat_and_fullnat_during_a_flood() {
    if skip_unless_root("SYN proxy flood test") {
        return;
    }
    let tb = Testbed::up("sp");
    tb.single_queue_towards_director();
    let dir = std::env::temp_dir().join(format!("xvs-synproxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    // 300 kB of varied bytes.
    let body: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("www/big.bin"), &body).unwrap();
    let www = dir.join("www");
    let mut servers = Vec::new();
    for i in 1..=3 {
        let child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(&format!("b{i}"))])
            .args(["python3", "-m", "http.server", "8081", "--bind", "0.0.0.0"])
            .arg("--directory")
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server");
        servers.push(ChildGuard(child));
    }
    let want = sha256(
        &tb,
        "c1",
        &["sha256sum", dir.join("www/big.bin").to_str().unwrap()],
    )
    .unwrap();
    // Wait (bounded) for the file servers.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 1..=3 {
        let url = "http://127.0.0.1:8081/big.bin";
        while tb
            .exec(
                &format!("b{i}"),
                &["curl", "-s", "-o", "/dev/null", "-m", "1", url],
            )
            .0
            .eq(&false)
        {
            assert!(
                Instant::now() < deadline,
                "file server b{i} did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::fs::write(dir.join("x.toml"), config()).unwrap();
    let sock = dir.join("x.sock");
    let _xvs = tb.start_xvs(&dir.join("x.toml"), &sock, &dir.join("x.log"));
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13", "198.18.1.1"]);

    // The flood, for longer than the transfers take.
    let flood = Command::new("ip")
        .args(["netns", "exec", &tb.ns("c1"), "python3", "-c", FLOOD])
        .args(["198.18.10.1,198.18.10.4", "25"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flood");
    let mut flood = ChildGuard(flood);
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let mut failed = Vec::new();
    let mut times = Vec::new();
    for vip in ["198.18.10.1", "198.18.10.4"] {
        for k in 0..20 {
            let url = format!("http://{vip}/big.bin");
            let t0 = Instant::now();
            let got = sha256(
                &tb,
                "c1",
                &["sh", "-c", &format!("curl -s -m 5 {url} | sha256sum")],
            );
            times.push(t0.elapsed());
            if got.as_deref() != Some(want.as_str()) {
                failed.push(format!("{vip} #{k}: {got:?}"));
            }
        }
    }
    let transfers = started.elapsed();
    let status = |sock: &std::path::Path| {
        let o = Command::new("ip")
            .args(["netns", "exec", &tb.ns("dir"), env!("CARGO_BIN_EXE_xvs")])
            .args(["ctl", "--socket"])
            .arg(sock)
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Counters are published twice a second.
    std::thread::sleep(Duration::from_millis(700));
    let st = status(&sock);
    let listing = {
        let o = Command::new("ip")
            .args(["netns", "exec", &tb.ns("dir"), env!("CARGO_BIN_EXE_xvs")])
            .args(["ctl", "--socket"])
            .arg(&sock)
            .arg("-Lnc")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let _ = Command::new("kill")
        .args(["-TERM", &flood.0.id().to_string()])
        .status();
    let out = flood.0.wait_with_output_bounded();
    eprintln!("{st}");
    eprintln!(
        "{}",
        listing.lines().take(12).collect::<Vec<_>>().join("\n")
    );
    times.sort();
    eprintln!(
        "40 transfers of 300 kB in {transfers:?} during the flood; per transfer p50 {:?} max {:?}; flood sender: {out}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    let field = |name: &str| -> u64 {
        st.lines()
            .filter_map(|l| l.split(name).nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    let syn_acks = field("syn-acks ");
    let established = field("established ");
    let connections = field("connections ");
    assert!(
        syn_acks >= 2000,
        "the flood was answered with cookies: {syn_acks} SYN-ACKs"
    );
    assert!(established >= 40, "{established} proxied connections");
    assert!(
        connections <= 200,
        "the flood left no entries: {connections} in the table"
    );
    assert!(!st.contains("table_full"), "{st}");
    assert!(
        listing.contains("TIME_WAIT") || listing.contains("ESTABLISHED"),
        "{listing}"
    );
    assert!(!listing.contains("SYN_RECV"), "{listing}");
}

trait WaitBounded {
    fn wait_with_output_bounded(&mut self) -> String;
}

impl WaitBounded for std::process::Child {
    /// The flood sender's count of frames sent, after it was killed.
    fn wait_with_output_bounded(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(o) = self.stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s.trim().to_string()
    }
}
