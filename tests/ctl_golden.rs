//! Golden tests of `xvs ctl`'s ipvsadm layouts on a reference configuration: `-Ln`, `-Ln --stats`
//! and `-S` compared line for line (trailing spaces included) with text written out from
//! ipvsadm's printf formats (../shared/IPVS.md §7), then the `-S` → `-R` round trip.

use std::path::Path;

use xvs::config::Config;
use xvs::control::format::{self, ListFormat};
use xvs::control::{DesiredState, Listing, Stats};
use xvs_forwarding::service::{ServiceKey, PROTO_TCP};

/// Services and backends in add order; ipvsadm's sorted output differs from both add order and
/// list order (198.19.0.2 sorts before 198.19.0.11 numerically).
const REFERENCE: &str = r#"
[fullnat]
local_addresses = ["198.18.0.250", "2001:db8::250"]

[[service]]
protocol = "tcp"
vip = "198.18.0.100"
port = 80
scheduler = "wrr"
[[service.backend]]
address = "198.19.0.11"
port = 8080
weight = 3
method = "nat"
[[service.backend]]
address = "198.19.0.12"
port = 8080
weight = 2
method = "nat"
[[service.backend]]
address = "198.19.0.2"
port = 8080
method = "nat"

[[service]]
fwmark = 8
ipv6 = true
scheduler = "rr"
persistence = 60
netmask = 64
[[service.backend]]
address = "2001:db8:1::31"
weight = 2

[[service]]
protocol = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "rr"
one_packet = true
[[service.backend]]
address = "198.19.0.11"

[[service]]
fwmark = 7
[[service.backend]]
address = "198.19.0.31"

[[service]]
protocol = "tcp"
vip = "2001:db8::100"
port = 80
scheduler = "mh"
flags = "mh-port"
[[service.backend]]
address = "2001:db8:1::11"
port = 80
weight = 5
method = "fullnat"

[[service]]
protocol = "tcp"
vip = "198.18.0.101"
port = 443
scheduler = "sh"
flags = "sh-fallback,sh-port"
persistence = 600
netmask = 24
[[service.backend]]
address = "198.19.0.21"
method = "tun"
"#;

const LN: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  198.18.0.100:80 wrr",
    "  -> 198.19.0.2:8080              Masq    1      0          0         ",
    "  -> 198.19.0.11:8080             Masq    3      12         345       ",
    "  -> 198.19.0.12:8080             Masq    2      0          0         ",
    "TCP  198.18.0.101:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0",
    "  -> 198.19.0.21:443              Tunnel  1      0          0         ",
    "UDP  198.18.0.100:53 rr ops",
    "  -> 198.19.0.11:53               Route   1      0          0         ",
    "TCP  [2001:db8::100]:80 mh (mh-port)",
    "  -> [2001:db8:1::11]:80          FullNat 5      3          4         ",
    "FWM  7 wlc",
    "  -> 198.19.0.31:0                Route   1      0          0         ",
    "FWM  8 IPv6 rr persistent 60 mask 64",
    "  -> [2001:db8:1::31]:0           Route   2      0          0         ",
];

const STATS: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
    "  -> RemoteAddress:Port",
    "TCP  198.18.0.100:80                  1000    1000M        5     100G        7",
    "  -> 198.19.0.2:8080                     0        0        0        0        0",
    "  -> 198.19.0.11:8080                  357  123456K 99999999   98765M     123T",
    "  -> 198.19.0.12:8080                    0        0        0        0        0",
    "TCP  198.18.0.101:443                    0        0        0        0        0",
    "  -> 198.19.0.21:443                     0        0        0        0        0",
    "UDP  198.18.0.100:53                     0        0        0        0        0",
    "  -> 198.19.0.11:53                      0        0        0        0        0",
    "TCP  [2001:db8::100]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::11]:80                 0        0        0        0        0",
    "FWM  7                                   0        0        0        0        0",
    "  -> 198.19.0.31:0                       0        0        0        0        0",
    "FWM  8 IPv6                              0        0        0        0        0",
    "  -> [2001:db8:1::31]:0                  0        0        0        0        0",
];

const SAVE: &[&str] = &[
    "-A -t 198.18.0.100:80 -s wrr",
    "-a -t 198.18.0.100:80 -r 198.19.0.2:8080 -m -w 1",
    "-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 3",
    "-a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m -w 2",
    "-A -t 198.18.0.101:443 -s sh -p 600 -M 255.255.255.0 -b sh-fallback,sh-port",
    "-a -t 198.18.0.101:443 -r 198.19.0.21:443 -i -w 1 --tun-type ipip",
    "-A -u 198.18.0.100:53 -s rr -o",
    "-a -u 198.18.0.100:53 -r 198.19.0.11:53 -g -w 1",
    "-A -t [2001:db8::100]:80 -s mh -b mh-port",
    "-a -t [2001:db8::100]:80 -r [2001:db8:1::11]:80 --fullnat -w 5",
    "-A -f 7 -s wlc",
    "-a -f 7 -r 198.19.0.31:0 -g -w 1",
    "-A -f 8 -6 -s rr -p 60 -M 64",
    "-a -f 8 -6 -r [2001:db8:1::31]:0 -g -w 2",
];

fn text(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn reference() -> DesiredState {
    let cfg = Config::parse(Path::new("reference.toml"), REFERENCE).unwrap();
    DesiredState::from_config(&cfg)
}

fn http() -> ServiceKey {
    ServiceKey::Addr {
        proto: PROTO_TCP,
        addr: "198.18.0.100".parse().unwrap(),
        port: 80,
    }
}

fn listing(st: &DesiredState) -> Listing {
    let mut l = Listing::from_state(st);
    l.service_mut(&http()).unwrap().stats = Stats {
        conns: 1000,
        in_pkts: 1_000_000_000,
        out_pkts: 5,
        in_bytes: 100_000_000_000,
        out_bytes: 7,
    };
    let b = l
        .backend_mut(&http(), "198.19.0.11".parse().unwrap(), 8080)
        .unwrap();
    b.active = 12;
    b.inactive = 345;
    b.stats = Stats {
        conns: 357,
        in_pkts: 123_456_789,
        out_pkts: 99_999_999,
        in_bytes: 98_765_432_101,
        out_bytes: 123_456_789_012_345,
    };
    let v6 = ServiceKey::Addr {
        proto: PROTO_TCP,
        addr: "2001:db8::100".parse().unwrap(),
        port: 80,
    };
    let b = l
        .backend_mut(&v6, "2001:db8:1::11".parse().unwrap(), 80)
        .unwrap();
    b.active = 3;
    b.inactive = 4;
    l
}

/// Line by line, so a failure names the line.
fn assert_lines(got: &str, want: &[&str]) {
    let got: Vec<&str> = got.split_terminator('\n').collect();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got.len(), want.len(), "line count");
}

#[test]
fn list_numeric_matches_ipvsadm() {
    let st = reference();
    let out = format::list_all(&listing(&st), &ListFormat::default());
    assert_lines(&out, LN);
    assert_eq!(out, text(LN));
}

#[test]
fn list_stats_matches_ipvsadm() {
    let st = reference();
    let f = ListFormat {
        stats: true,
        ..Default::default()
    };
    let out = format::list_all(&listing(&st), &f);
    assert_lines(&out, STATS);
    assert_eq!(out, text(STATS));
}

#[test]
fn save_matches_ipvsadm_and_restores() {
    let st = reference();
    let saved = format::save(&st);
    assert_lines(&saved, SAVE);
    // -S → -R rebuilds the same services and backends (backend add order follows the sorted
    // save order, as with ipvsadm).
    let restored = xvs::control::ipvsadm::parse_rules(&saved).unwrap();
    assert_eq!(format::save(&restored), saved);
    assert_eq!(restored.services.len(), st.services.len());
    for s in &st.services {
        let r = restored.service(&s.key).unwrap();
        assert_eq!(r.scheduler, s.scheduler);
        assert_eq!(r.sched_flags, s.sched_flags);
        assert_eq!(r.persistence, s.persistence);
        assert_eq!(r.one_packet, s.one_packet);
        let mut a = s.backends.clone();
        let mut b = r.backends.clone();
        a.sort_by_key(|x| (x.addr, x.port));
        b.sort_by_key(|x| (x.addr, x.port));
        assert_eq!(a, b);
    }
}

#[test]
fn nosort_prints_list_order() {
    let st = reference();
    let f = ListFormat {
        nosort: true,
        ..Default::default()
    };
    let out = format::list_all(&listing(&st), &f);
    let rows: Vec<&str> = out.lines().skip(3).take(4).collect();
    // Newest backend first.
    assert_eq!(rows[0], "TCP  198.18.0.100:80 wrr");
    assert!(rows[1].starts_with("  -> 198.19.0.2:8080 "), "{}", rows[1]);
    assert!(rows[2].starts_with("  -> 198.19.0.12:8080 "), "{}", rows[2]);
    assert!(rows[3].starts_with("  -> 198.19.0.11:8080 "), "{}", rows[3]);
}

#[test]
fn other_layouts() {
    let st = reference();
    let l = listing(&st);
    let one = l.service(&http()).unwrap();
    let t = format::list_service(
        one,
        &ListFormat {
            thresholds: true,
            ..Default::default()
        },
    );
    assert_eq!(
        t,
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n\
         \x20 -> RemoteAddress:Port\n\
         TCP  198.18.0.100:80 wrr\n\
         \x20 -> 198.19.0.2:8080              0          0          0          0         \n\
         \x20 -> 198.19.0.11:8080             0          0          12         345       \n\
         \x20 -> 198.19.0.12:8080             0          0          0          0         \n"
    );
    let p = format::list_service(
        one,
        &ListFormat {
            persistent_conn: true,
            ..Default::default()
        },
    );
    assert_eq!(
        p.lines().next().unwrap(),
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn "
    );
    assert_eq!(
        p.lines().nth(4).unwrap(),
        "  -> 198.19.0.11:8080             3         0           12         345       "
    );
    let r = format::list_service(
        one,
        &ListFormat {
            rate: true,
            ..Default::default()
        },
    );
    assert_eq!(
        r.lines().next().unwrap(),
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
    );
    assert_eq!(
        r.lines().nth(3).unwrap(),
        "  -> 198.19.0.2:8080                     0        0        0        0        0"
    );
    let ti = format::list_all(
        &l,
        &ListFormat {
            tun_info: true,
            ..Default::default()
        },
    );
    let ti: Vec<&str> = ti.lines().collect();
    assert_eq!(
        ti[2],
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn"
    );
    assert_eq!(
        ti[4],
        "  -> 198.19.0.2:8080              Masq    n/a           1      0          0         "
    );
    assert_eq!(
        ti[8],
        "  -> 198.19.0.21:443              Tunnel  ipip          1      0          0         "
    );
    assert_eq!(
        format::timeouts(&st),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
}

#[test]
fn save_toml_reloads_to_the_same_state() {
    let mut st = reference();
    st.set_timeouts(600, 0, 60);
    let mut b = st.services[0].backends[0].clone();
    b.addr = "198.19.0.13".parse().unwrap();
    b.u_threshold = 100;
    b.l_threshold = 50;
    st.services[0].backends.push(b);
    let toml = format::save_toml(&st);
    let file =
        format!("[fullnat]\nlocal_addresses = [\"198.18.0.250\", \"2001:db8::250\"]\n\n{toml}");
    let cfg = Config::parse(Path::new("saved.toml"), &file).unwrap();
    assert_eq!(DesiredState::from_config(&cfg), st, "{toml}");
}

#[test]
fn limits_listing_and_their_save_round_trips() {
    let mut st = reference();
    st.services[0].conn_rate = 1000;
    st.services[0].backends[0].conn_rate = 300;
    st.set_source_limit(50, Some(16), None).unwrap();
    let mut l = Listing::from_state(&st);
    l.service_mut(&http()).unwrap().rate_limited = 1234;
    l.backend_mut(&http(), "198.19.0.11".parse().unwrap(), 8080)
        .unwrap()
        .rate_limited = 56;
    l.source_rate_limited = 789;
    let out = format::limits(&l, &st, false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..6],
        &[
            "Prot LocalAddress:Port              ConnRate    Refused",
            "  -> RemoteAddress:Port",
            "TCP  198.18.0.100:80                  1000/s       1234",
            "  -> 198.19.0.2:8080                       -          0",
            "  -> 198.19.0.11:8080                  300/s         56",
            "  -> 198.19.0.12:8080                      -          0",
        ]
    );
    assert_eq!(
        lines.last().unwrap(),
        &"Source prefixes: 50/s per /16 (IPv4) and /64 (IPv6), refused 789"
    );
    let json: serde_json::Value =
        serde_json::from_str(&format::limits_json(&l, &st, false)).unwrap();
    assert_eq!(json["services"][0]["conn_rate"], 1000);
    assert_eq!(json["services"][0]["refused"], 1234);
    assert_eq!(json["services"][0]["backends"][1]["refused"], 56);
    assert_eq!(json["source"]["rate"], 50);
    assert_eq!(json["source"]["prefix_v4"], 16);
    assert_eq!(json["source"]["refused"], 789);
    // -S → -R, and -S --toml → the configuration file, keep every limit.
    let saved = format::save(&st);
    let restored = xvs::control::ipvsadm::parse_rules(&saved).unwrap();
    assert_eq!(format::save(&restored), saved);
    assert_eq!(restored.source_limit, st.source_limit);
    let r = restored.service(&http()).unwrap();
    assert_eq!(r.conn_rate, 1000);
    let b = r.backends.iter().find(|b| b.port == 8080 && b.weight == 3);
    assert_eq!(b.map(|b| b.conn_rate), Some(300));
    let toml = format::save_toml(&st);
    let file =
        format!("[fullnat]\nlocal_addresses = [\"198.18.0.250\", \"2001:db8::250\"]\n\n{toml}");
    let cfg = Config::parse(Path::new("saved.toml"), &file).unwrap();
    assert_eq!(DesiredState::from_config(&cfg), st, "{toml}");
    assert_eq!(cfg.defense.source_rate, 50);
}
