//! Properties of `xvs ctl`'s state, parser and formats over random desired states and command
//! lines: `-S` → `-R` rebuilds the same services and backends, `-S --toml` → configuration file
//! rebuilds the exact state, listings have one row per service and backend, and no command line
//! makes the parser or the server panic.

use std::net::IpAddr;
use std::path::Path;

use proptest::prelude::*;
use xvs::config::Config;
use xvs::control::format::{self, ListFormat};
use xvs::control::ipvsadm;
use xvs::control::{DesiredState, Listing};
use xvs_forwarding::service::{Backend, Persistence, Service, ServiceKey, PROTO_TCP, PROTO_UDP};
use xvs_forwarding::Method;
use xvs_schedulers::SchedFlags;

#[derive(Debug, Clone)]
struct SvcSpec {
    kind: u8,
    vip: u8,
    port: u16,
    sched: usize,
    flags: u32,
    persist: Option<(u32, u8)>,
    ops: bool,
    backends: Vec<(u8, u16, u8, u32, u32, u32, bool)>,
}

const SCHEDS: [&str; 8] = ["rr", "wrr", "wlc", "lc", "sh", "mh", "maglev", "fo"];

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        0u8..5,
        0u8..3,
        prop::sample::select(vec![0u16, 53, 80, 443, 8080]),
        0usize..SCHEDS.len(),
        0u32..8,
        prop::option::of((1u32..100_000, 1u8..=32)),
        any::<bool>(),
        prop::collection::vec(
            (
                0u8..6,
                prop::sample::select(vec![0u16, 80, 8080]),
                0u8..4,
                0u32..70_000,
                0u32..50,
                0u32..50,
                any::<bool>(),
            ),
            0..5,
        ),
    )
        .prop_map(
            |(kind, vip, port, sched, flags, persist, ops, backends)| SvcSpec {
                kind,
                vip,
                port,
                sched,
                flags,
                persist,
                ops,
                backends,
            },
        )
}

/// A valid desired state built by ipvsadm operations (invalid ones are skipped).
fn build(specs: &[SvcSpec], timeouts: (u32, u32, u32)) -> DesiredState {
    let mut st = DesiredState::default();
    st.set_timeouts(timeouts.0, timeouts.1, timeouts.2);
    for s in specs {
        let v6 = s.kind >= 3;
        let key = match s.kind {
            0 | 3 => ServiceKey::Addr {
                proto: PROTO_TCP,
                addr: vip(v6, s.vip),
                port: s.port,
            },
            1 | 4 => ServiceKey::Addr {
                proto: PROTO_UDP,
                addr: vip(v6, s.vip),
                port: s.port,
            },
            _ => ServiceKey::Fwmark {
                mark: u32::from(s.vip) + 1,
                ipv6: s.port == 80,
            },
        };
        let v6 = match key {
            ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => ipv6,
        };
        let scheduler = SCHEDS[s.sched].to_string();
        let sched_flags = match scheduler.as_str() {
            "sh" | "mh" => SchedFlags::from_bits((s.flags & 3) << 3),
            _ => SchedFlags::from_bits(s.flags << 3),
        };
        let persistence = s.persist.map(|(t, m)| Persistence {
            timeout: t,
            prefix_len: if v6 { m * 4 } else { m },
        });
        if key.port() == 0 && persistence.is_none() && key.fwmark() == 0 {
            continue; // ipvsadm refuses a non-persistent port-0 service
        }
        let svc = Service {
            key,
            scheduler,
            sched_flags,
            persistence,
            one_packet: s.ops
                && !matches!(
                    key,
                    ServiceKey::Addr {
                        proto: PROTO_TCP,
                        ..
                    }
                ),
            synproxy: false,
            conn_rate: 0,
            backends: vec![],
        };
        if st.add_service(svc).is_err() {
            continue;
        }
        for &(host, port, m, w, u, l, cross) in &s.backends {
            let method = [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat][m as usize];
            let bv6 = if method == Method::Tunnel && cross {
                !v6
            } else {
                v6
            };
            let port = match (method, key) {
                (Method::Dr | Method::Tunnel, ServiceKey::Addr { port, .. }) => port,
                _ => port,
            };
            let (u, l) = if u == 0 { (0, 0) } else { (u.max(l), l.min(u)) };
            let _ = st.add_backend(
                &key,
                Backend {
                    addr: backend_addr(bv6, host),
                    port,
                    weight: w,
                    method,
                    u_threshold: u,
                    l_threshold: l,
                    conn_rate: 0,
                },
            );
        }
    }
    st
}

fn vip(v6: bool, i: u8) -> IpAddr {
    if v6 {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100 + u16::from(i)])
    } else {
        IpAddr::from([198, 18, 0, 100 + i])
    }
}

fn backend_addr(v6: bool, i: u8) -> IpAddr {
    if v6 {
        IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10 + u16::from(i)])
    } else {
        // Spread over the address space so the wrapping C comparator matters.
        [
            [10, 0, 0, 1],
            [198, 19, 0, 2],
            [198, 19, 0, 11],
            [250, 1, 2, 3],
            [1, 2, 3, 4],
            [198, 19, 0, 12],
        ][i as usize % 6]
            .into()
    }
}

fn sorted(mut v: Vec<Backend>) -> Vec<Backend> {
    v.sort_by_key(|b| (b.addr, b.port));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn save_restore_rebuilds_the_services(specs in prop::collection::vec(svc_spec(), 0..6)) {
        let st = build(&specs, (0, 0, 0));
        let saved = format::save(&st);
        let back = xvs::control::ipvsadm::parse_rules(&saved).map_err(|e| TestCaseError::fail(format!("{e}\n{saved}")))?;
        prop_assert_eq!(back.services.len(), st.services.len());
        for s in &st.services {
            let r = back.service(&s.key).unwrap();
            prop_assert_eq!(&r.scheduler, &s.scheduler);
            prop_assert_eq!(r.sched_flags, s.sched_flags);
            prop_assert_eq!(r.persistence, s.persistence);
            prop_assert_eq!(r.one_packet, s.one_packet);
            prop_assert_eq!(sorted(r.backends.clone()), sorted(s.backends.clone()));
        }
        prop_assert_eq!(format::save(&back), saved);
    }

    #[test]
    fn save_toml_rebuilds_the_exact_state(
        specs in prop::collection::vec(svc_spec(), 0..6),
        t in (0u32..2000, 0u32..2000, 0u32..2000),
    ) {
        let st = build(&specs, t);
        let file = format!(
            "[fullnat]\nlocal_addresses = [\"198.18.0.250\"]\n\n{}",
            format::save_toml(&st)
        );
        let cfg = Config::parse(Path::new("saved.toml"), &file)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{file}")))?;
        prop_assert_eq!(DesiredState::from_config(&cfg), st);
    }

    #[test]
    fn listings_have_a_row_per_service_and_backend(
        specs in prop::collection::vec(svc_spec(), 0..6),
        stats in any::<bool>(),
        nosort in any::<bool>(),
        exact in any::<bool>(),
        big in any::<u64>(),
    ) {
        let st = build(&specs, (0, 0, 0));
        let mut l = Listing::from_state(&st);
        for s in &mut l.services {
            s.stats.in_bytes = big;
            for b in &mut s.backends {
                b.stats.out_bytes = big / 3;
                b.rates.in_bps = big / 7;
            }
        }
        let f = ListFormat { stats, nosort, exact, rate: !stats && exact, ..Default::default() };
        let out = format::list_all(&l, &f);
        let backends: usize = st.services.iter().map(|s| s.backends.len()).sum();
        prop_assert_eq!(out.lines().count(), 3 + st.services.len() + backends);
        prop_assert_eq!(out.lines().filter(|r| r.starts_with("  -> ")).count(), backends + 1);
    }

    #[test]
    fn no_command_line_panics(words in prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "-A", "-E", "-D", "-a", "-e", "-d", "-C", "-L", "-l", "-Z", "-S", "-R", "--set",
                "-t", "-u", "-f", "-s", "-p", "-M", "-b", "-r", "-g", "-i", "-m", "--fullnat",
                "-w", "-x", "-y", "-n", "-c", "--stats", "--rate", "--exact", "--timeout",
                "--thresholds", "--persistent-conn", "--nosort", "--json", "--toml", "-6", "-o",
                "-Ln", "-Lnc", "-At", "198.18.0.100:80", "[2001:db8::1]:80", "2001:db8::1",
                "198.19.0.1", "rr", "sh", "sh-port,sh-fallback", "300", "0", "65536",
                "255.255.255.0", "64", "reload", "status", "--", "-", "--weight=3", "-w3",
                "-p300", "[::1", "1.2.3.4:99999", "-pt",
            ]).prop_map(String::from),
            ".{0,12}",
        ],
        0..10,
    )) {
        if let Ok(cmd) = ipvsadm::parse(&words) {
            let mut st = DesiredState::default();
            let _ = cmd.apply(&mut st);
        }
    }
}
