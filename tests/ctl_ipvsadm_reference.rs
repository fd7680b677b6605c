//! `xvs ctl`'s output against real ipvsadm: the rules below were run by ipvsadm 1.31 (Debian 12,
//! `ipvsadm_1.31-1+b1`) on Linux 6.1.0-56 inside the QEMU guest of scripts/ipvs-guest, with no
//! traffic, and each listing it printed is kept here verbatim (trailing spaces included). The
//! same rules go through xvs's parser into a desired state, and xvs's formats must print the same
//! bytes. Differences kept on purpose are spelled out where they apply (`-S` saves thresholds).
//! `--nosort` is not compared: IPVS prints services in its hash-table order.
//!
//! To regenerate: a scenario for scripts/ipvs-guest whose `rules.sh` is [`RULES`] followed by
//! `{ ipvsadm -Ln; ipvsadm -Ln --stats; ipvsadm -Ln --stats --exact; ipvsadm -Ln --rate;
//! ipvsadm -Ln --thresholds; ipvsadm -Ln --persistent-conn; ipvsadm -Ln --tun-info;
//! ipvsadm -Ln -t 198.18.0.100:80; ipvsadm -L --timeout; ipvsadm -Lnc; ipvsadm -S -n; }
//! > /dev/console` (with a marker line between them), and an empty `flows.txt`.

use xvs::control::format::{self, ListFormat};
use xvs::control::{DesiredState, Listing};
use xvs_forwarding::service::{ServiceKey, PROTO_TCP};

/// The guest's `rules.sh`, run with `sh -e`.
const RULES: &str = "\
ipvsadm -A -t 198.18.0.100:80 -s wrr
ipvsadm -a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 3
ipvsadm -a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m -w 2
ipvsadm -a -t 198.18.0.100:80 -r 198.19.0.2:8080 -m -w 1
ipvsadm -a -t 198.18.0.100:80 -r 10.0.0.1:8080 -m -w 1 -x 100 -y 50
ipvsadm -A -f 8 -6 -s rr -p 60 -M 64
ipvsadm -a -f 8 -6 -r 2001:db8:1::31 -g -w 2
ipvsadm -A -u 198.18.0.100:53 -s rr -o
ipvsadm -a -u 198.18.0.100:53 -r 198.19.0.11 -g
ipvsadm -A -f 7
ipvsadm -a -f 7 -r 198.19.0.31
ipvsadm -A -t [2001:db8::100]:80 -s mh -b mh-port
ipvsadm -a -t [2001:db8::100]:80 -r [2001:db8:1::11]:80 -m -w 5
ipvsadm -a -t [2001:db8::100]:80 -r [2001:db8:1::9]:80 -m -w 0
ipvsadm -A -t 198.18.0.101:443 -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0
ipvsadm -a -t 198.18.0.101:443 -r 198.19.0.21 -i
ipvsadm -A -t 10.1.0.1:80 -s rr
ipvsadm -a -t 10.1.0.1:80 -r 198.19.0.11:80 -m
ipvsadm -A -u 250.1.0.1:0 -s lc -p
ipvsadm -a -u 250.1.0.1:0 -r 1.2.3.4 -m
ipvsadm --set 0 30 60
";

const LN: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  198.18.0.100:80 wrr",
    "  -> 198.19.0.2:8080              Masq    1      0          0         ",
    "  -> 198.19.0.11:8080             Masq    3      0          0         ",
    "  -> 198.19.0.12:8080             Masq    2      0          0         ",
    "  -> 10.0.0.1:8080                Masq    1      0          0         ",
    "TCP  198.18.0.101:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0",
    "  -> 198.19.0.21:443              Tunnel  1      0          0         ",
    "TCP  10.1.0.1:80 rr",
    "  -> 198.19.0.11:80               Masq    1      0          0         ",
    "UDP  198.18.0.100:53 rr ops",
    "  -> 198.19.0.11:53               Route   1      0          0         ",
    "UDP  250.1.0.1:0 lc persistent 360",
    "  -> 1.2.3.4:0                    Masq    1      0          0         ",
    "TCP  [2001:db8::100]:80 mh (mh-port)",
    "  -> [2001:db8:1::9]:80           Masq    0      0          0         ",
    "  -> [2001:db8:1::11]:80          Masq    5      0          0         ",
    "FWM  7 wlc",
    "  -> 198.19.0.31:0                Route   1      0          0         ",
    "FWM  8 IPv6 rr persistent 60 mask 64",
    "  -> [2001:db8:1::31]:0           Route   2      0          0         ",
];

const STATS: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
    "  -> RemoteAddress:Port",
    "TCP  198.18.0.100:80                     0        0        0        0        0",
    "  -> 198.19.0.2:8080                     0        0        0        0        0",
    "  -> 198.19.0.11:8080                    0        0        0        0        0",
    "  -> 198.19.0.12:8080                    0        0        0        0        0",
    "  -> 10.0.0.1:8080                       0        0        0        0        0",
    "TCP  198.18.0.101:443                    0        0        0        0        0",
    "  -> 198.19.0.21:443                     0        0        0        0        0",
    "TCP  10.1.0.1:80                         0        0        0        0        0",
    "  -> 198.19.0.11:80                      0        0        0        0        0",
    "UDP  198.18.0.100:53                     0        0        0        0        0",
    "  -> 198.19.0.11:53                      0        0        0        0        0",
    "UDP  250.1.0.1:0                         0        0        0        0        0",
    "  -> 1.2.3.4:0                           0        0        0        0        0",
    "TCP  [2001:db8::100]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::9]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::11]:80                 0        0        0        0        0",
    "FWM  7                                   0        0        0        0        0",
    "  -> 198.19.0.31:0                       0        0        0        0        0",
    "FWM  8 IPv6                              0        0        0        0        0",
    "  -> [2001:db8:1::31]:0                  0        0        0        0        0",
];

const STATS_EXACT: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
    "  -> RemoteAddress:Port",
    "TCP  198.18.0.100:80                     0        0        0        0        0",
    "  -> 198.19.0.2:8080                     0        0        0        0        0",
    "  -> 198.19.0.11:8080                    0        0        0        0        0",
    "  -> 198.19.0.12:8080                    0        0        0        0        0",
    "  -> 10.0.0.1:8080                       0        0        0        0        0",
    "TCP  198.18.0.101:443                    0        0        0        0        0",
    "  -> 198.19.0.21:443                     0        0        0        0        0",
    "TCP  10.1.0.1:80                         0        0        0        0        0",
    "  -> 198.19.0.11:80                      0        0        0        0        0",
    "UDP  198.18.0.100:53                     0        0        0        0        0",
    "  -> 198.19.0.11:53                      0        0        0        0        0",
    "UDP  250.1.0.1:0                         0        0        0        0        0",
    "  -> 1.2.3.4:0                           0        0        0        0        0",
    "TCP  [2001:db8::100]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::9]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::11]:80                 0        0        0        0        0",
    "FWM  7                                   0        0        0        0        0",
    "  -> 198.19.0.31:0                       0        0        0        0        0",
    "FWM  8 IPv6                              0        0        0        0        0",
    "  -> [2001:db8:1::31]:0                  0        0        0        0        0",
];

const RATE: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
    "  -> RemoteAddress:Port",
    "TCP  198.18.0.100:80                     0        0        0        0        0",
    "  -> 198.19.0.2:8080                     0        0        0        0        0",
    "  -> 198.19.0.11:8080                    0        0        0        0        0",
    "  -> 198.19.0.12:8080                    0        0        0        0        0",
    "  -> 10.0.0.1:8080                       0        0        0        0        0",
    "TCP  198.18.0.101:443                    0        0        0        0        0",
    "  -> 198.19.0.21:443                     0        0        0        0        0",
    "TCP  10.1.0.1:80                         0        0        0        0        0",
    "  -> 198.19.0.11:80                      0        0        0        0        0",
    "UDP  198.18.0.100:53                     0        0        0        0        0",
    "  -> 198.19.0.11:53                      0        0        0        0        0",
    "UDP  250.1.0.1:0                         0        0        0        0        0",
    "  -> 1.2.3.4:0                           0        0        0        0        0",
    "TCP  [2001:db8::100]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::9]:80                  0        0        0        0        0",
    "  -> [2001:db8:1::11]:80                 0        0        0        0        0",
    "FWM  7                                   0        0        0        0        0",
    "  -> 198.19.0.31:0                       0        0        0        0        0",
    "FWM  8 IPv6                              0        0        0        0        0",
    "  -> [2001:db8:1::31]:0                  0        0        0        0        0",
];

const THRESHOLDS: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
    "  -> RemoteAddress:Port",
    "TCP  198.18.0.100:80 wrr",
    "  -> 198.19.0.2:8080              0          0          0          0         ",
    "  -> 198.19.0.11:8080             0          0          0          0         ",
    "  -> 198.19.0.12:8080             0          0          0          0         ",
    "  -> 10.0.0.1:8080                100        50         0          0         ",
    "TCP  198.18.0.101:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0",
    "  -> 198.19.0.21:443              0          0          0          0         ",
    "TCP  10.1.0.1:80 rr",
    "  -> 198.19.0.11:80               0          0          0          0         ",
    "UDP  198.18.0.100:53 rr ops",
    "  -> 198.19.0.11:53               0          0          0          0         ",
    "UDP  250.1.0.1:0 lc persistent 360",
    "  -> 1.2.3.4:0                    0          0          0          0         ",
    "TCP  [2001:db8::100]:80 mh (mh-port)",
    "  -> [2001:db8:1::9]:80           0          0          0          0         ",
    "  -> [2001:db8:1::11]:80          0          0          0          0         ",
    "FWM  7 wlc",
    "  -> 198.19.0.31:0                0          0          0          0         ",
    "FWM  8 IPv6 rr persistent 60 mask 64",
    "  -> [2001:db8:1::31]:0           0          0          0          0         ",
];

const PERSISTENT_CONN: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
    "  -> RemoteAddress:Port",
    "TCP  198.18.0.100:80 wrr",
    "  -> 198.19.0.2:8080              1         0           0          0         ",
    "  -> 198.19.0.11:8080             3         0           0          0         ",
    "  -> 198.19.0.12:8080             2         0           0          0         ",
    "  -> 10.0.0.1:8080                1         0           0          0         ",
    "TCP  198.18.0.101:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0",
    "  -> 198.19.0.21:443              1         0           0          0         ",
    "TCP  10.1.0.1:80 rr",
    "  -> 198.19.0.11:80               1         0           0          0         ",
    "UDP  198.18.0.100:53 rr ops",
    "  -> 198.19.0.11:53               1         0           0          0         ",
    "UDP  250.1.0.1:0 lc persistent 360",
    "  -> 1.2.3.4:0                    1         0           0          0         ",
    "TCP  [2001:db8::100]:80 mh (mh-port)",
    "  -> [2001:db8:1::9]:80           0         0           0          0         ",
    "  -> [2001:db8:1::11]:80          5         0           0          0         ",
    "FWM  7 wlc",
    "  -> 198.19.0.31:0                1         0           0          0         ",
    "FWM  8 IPv6 rr persistent 60 mask 64",
    "  -> [2001:db8:1::31]:0           2         0           0          0         ",
];

const TUN_INFO: &[&str] = &[
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn",
    "TCP  198.18.0.100:80 wrr",
    "  -> 198.19.0.2:8080              Masq    n/a           1      0          0         ",
    "  -> 198.19.0.11:8080             Masq    n/a           3      0          0         ",
    "  -> 198.19.0.12:8080             Masq    n/a           2      0          0         ",
    "  -> 10.0.0.1:8080                Masq    n/a           1      0          0         ",
    "TCP  198.18.0.101:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0",
    "  -> 198.19.0.21:443              Tunnel  ipip          1      0          0         ",
    "TCP  10.1.0.1:80 rr",
    "  -> 198.19.0.11:80               Masq    n/a           1      0          0         ",
    "UDP  198.18.0.100:53 rr ops",
    "  -> 198.19.0.11:53               Route   n/a           1      0          0         ",
    "UDP  250.1.0.1:0 lc persistent 360",
    "  -> 1.2.3.4:0                    Masq    n/a           1      0          0         ",
    "TCP  [2001:db8::100]:80 mh (mh-port)",
    "  -> [2001:db8:1::9]:80           Masq    n/a           0      0          0         ",
    "  -> [2001:db8:1::11]:80          Masq    n/a           5      0          0         ",
    "FWM  7 wlc",
    "  -> 198.19.0.31:0                Route   n/a           1      0          0         ",
    "FWM  8 IPv6 rr persistent 60 mask 64",
    "  -> [2001:db8:1::31]:0           Route   n/a           2      0          0         ",
];

const ONE_SERVICE: &[&str] = &[
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  198.18.0.100:80 wrr",
    "  -> 198.19.0.2:8080              Masq    1      0          0         ",
    "  -> 198.19.0.11:8080             Masq    3      0          0         ",
    "  -> 198.19.0.12:8080             Masq    2      0          0         ",
    "  -> 10.0.0.1:8080                Masq    1      0          0         ",
];

const TIMEOUT: &[&str] = &["Timeout (tcp tcpfin udp): 900 30 60"];

const CONNECTIONS: &[&str] = &[
    "IPVS connection entries",
    "pro expire state       source             virtual            destination",
];

const SAVE: &[&str] = &[
    "-A -t 198.18.0.100:80 -s wrr",
    "-a -t 198.18.0.100:80 -r 198.19.0.2:8080 -m -w 1",
    "-a -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 3",
    "-a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m -w 2",
    "-a -t 198.18.0.100:80 -r 10.0.0.1:8080 -m -w 1",
    "-A -t 198.18.0.101:443 -s sh -p 600 -M 255.255.255.0 -b sh-fallback,sh-port",
    "-a -t 198.18.0.101:443 -r 198.19.0.21:443 -i -w 1 --tun-type ipip",
    "-A -t 10.1.0.1:80 -s rr",
    "-a -t 10.1.0.1:80 -r 198.19.0.11:80 -m -w 1",
    "-A -u 198.18.0.100:53 -s rr -o",
    "-a -u 198.18.0.100:53 -r 198.19.0.11:53 -g -w 1",
    "-A -u 250.1.0.1:0 -s lc -p 360",
    "-a -u 250.1.0.1:0 -r 1.2.3.4:0 -m -w 1",
    "-A -t [2001:db8::100]:80 -s mh -b mh-port",
    "-a -t [2001:db8::100]:80 -r [2001:db8:1::9]:80 -m -w 0",
    "-a -t [2001:db8::100]:80 -r [2001:db8:1::11]:80 -m -w 5",
    "-A -f 7 -s wlc",
    "-a -f 7 -r 198.19.0.31:0 -g -w 1",
    "-A -f 8 -6 -s rr -p 60 -M 64",
    "-a -f 8 -6 -r [2001:db8:1::31]:0 -g -w 2",
];
fn state() -> DesiredState {
    xvs::control::ipvsadm::parse_rules(RULES).unwrap()
}

fn text(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Line by line (a failure names the line), then the whole text.
fn same(got: &str, want: &[&str]) {
    let g: Vec<&str> = got.split_terminator('\n').collect();
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert_eq!(a, b, "line {}", i + 1);
    }
    assert_eq!(g.len(), want.len(), "line count\n{got}");
    assert_eq!(got, text(want));
}

fn list(f: ListFormat) -> String {
    format::list_all(&Listing::from_state(&state()), &f)
}

#[test]
fn list_numeric() {
    same(&list(ListFormat::default()), LN);
}

#[test]
fn list_stats_rate_exact() {
    same(
        &list(ListFormat {
            stats: true,
            ..Default::default()
        }),
        STATS,
    );
    same(
        &list(ListFormat {
            stats: true,
            exact: true,
            ..Default::default()
        }),
        STATS_EXACT,
    );
    same(
        &list(ListFormat {
            rate: true,
            ..Default::default()
        }),
        RATE,
    );
}

#[test]
fn list_thresholds_persistent_conn_tun_info() {
    same(
        &list(ListFormat {
            thresholds: true,
            ..Default::default()
        }),
        THRESHOLDS,
    );
    same(
        &list(ListFormat {
            persistent_conn: true,
            ..Default::default()
        }),
        PERSISTENT_CONN,
    );
    same(
        &list(ListFormat {
            tun_info: true,
            ..Default::default()
        }),
        TUN_INFO,
    );
}

#[test]
fn one_service_timeout_connections() {
    let l = Listing::from_state(&state());
    let key = ServiceKey::Addr {
        proto: PROTO_TCP,
        addr: "198.18.0.100".parse().unwrap(),
        port: 80,
    };
    same(
        &format::list_service(l.service(&key).unwrap(), &ListFormat::default()),
        ONE_SERVICE,
    );
    same(&format::timeouts(&state()), TIMEOUT);
    same(&format::connections(&[]), CONNECTIONS);
}

#[test]
fn save() {
    // xvs keeps the thresholds that ipvsadm's -S drops (-R reads them back).
    let want: Vec<&str> = SAVE
        .iter()
        .map(|l| {
            if *l == "-a -t 198.18.0.100:80 -r 10.0.0.1:8080 -m -w 1" {
                "-a -t 198.18.0.100:80 -r 10.0.0.1:8080 -m -w 1 -x 100 -y 50"
            } else {
                l
            }
        })
        .collect();
    same(&format::save(&state()), &want);
    // And the saved rules restore the same state.
    let again = xvs::control::ipvsadm::parse_rules(&format::save(&state())).unwrap();
    assert_eq!(format::save(&again), format::save(&state()));
}
