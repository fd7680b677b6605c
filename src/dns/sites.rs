//! Sites as DNS records (`[[dns.site]]`, "a site per region"): a `[[dns]]` name whose records
//! are whole VIPs — of xvs's own services, or of other sites (another director's VIP, given by
//! address) — rather than one service's backends. Sans I/O: the sites, the effective services
//! and the states of the sites' checks in, the records (address, weight) out; the responder
//! (`crate::dns::answer`) then chooses among them with the entry's scheduler, weights and client
//! networks as it does among backends.
//!
//! When a site is answered:
//! - a local service's site (`service = 0` or `service = "TCP 198.18.0.100:80"`): while that
//!   service has a backend with weight > 0 in the effective state (health checks, dynamic
//!   weights and the quorum's sorry server applied, as `crate::announce` decides which VIPs to
//!   announce);
//! - a local VIP given by address (an address that is the VIP of a configured service): while
//!   one service of that VIP has such a backend;
//! - a remote site (any other address): while its `check` passes, checked by xvs's health
//!   checker (`crate::control::health`) under the name [`check_name`]; always without a check.
//!
//! A site of weight 0 is never answered.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use xvs_forwarding::service::{Service, ServiceKey};

use crate::control::health::CheckSpec;

/// One site of a `[[dns]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSite {
    /// The site's name (`name`, else the address as text); client networks may prefer it by name.
    pub name: String,
    /// The record: the site's VIP.
    pub address: IpAddr,
    pub weight: u32,
    pub kind: SiteKind,
}

/// What decides whether a site is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum SiteKind {
    /// This local service: while it has a backend with weight > 0.
    Service(ServiceKey),
    /// A local VIP: while one of its services has a backend with weight > 0.
    Vip,
    /// Another site: while its check passes (probing `target`, unless the check's
    /// `connect_ip` / `connect_port` say otherwise); always when `None`.
    Remote(Option<Box<SiteCheck>>),
}

/// A remote site's health check.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteCheck {
    pub target: SocketAddr,
    pub spec: CheckSpec,
}

/// The health checker's service name for the checks of `zone`'s site `site` (targets are keyed
/// by this name and the site's check target).
pub fn check_name(zone: &str, site: &str) -> String {
    format!("dns {zone} site {site}")
}

/// The states of checked targets, keyed as the health checker keys them (service name, target):
/// true when up.
pub type CheckStates = HashMap<(String, SocketAddr), bool>;

/// One site as answered now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteStatus {
    pub name: String,
    pub address: IpAddr,
    pub weight: u32,
    /// Answered now.
    pub up: bool,
    /// What decides it: `service TCP 198.18.0.100:80`, `vip`, `check tcp` or `unchecked`.
    pub basis: String,
}

/// Whether `services` (the effective state) has a backend with weight > 0 in a service `f`
/// selects.
fn available(services: &[Service], f: impl Fn(&Service) -> bool) -> bool {
    services
        .iter()
        .filter(|s| f(s))
        .any(|s| s.backends.iter().any(|b| b.weight > 0))
}

/// Each site of `zone` with whether it is answered now, given the effective `services` and the
/// states of the health checks. A checked remote site whose check has no state yet (not
/// started) counts as up, as the health checker treats an unchecked backend.
pub fn site_states(
    zone: &str,
    sites: &[DnsSite],
    services: &[Service],
    checks: &CheckStates,
) -> Vec<SiteStatus> {
    sites
        .iter()
        .map(|site| {
            let (up, basis) = match &site.kind {
                SiteKind::Service(key) => (
                    available(services, |s| s.key == *key),
                    format!("service {}", crate::control::state::service_name(key)),
                ),
                SiteKind::Vip => (
                    available(
                        services,
                        |s| matches!(s.key, ServiceKey::Addr { addr, .. } if addr == site.address),
                    ),
                    "vip".to_string(),
                ),
                SiteKind::Remote(None) => (true, "unchecked".to_string()),
                SiteKind::Remote(Some(c)) => (
                    checks
                        .get(&(check_name(zone, &site.name), c.target))
                        .copied()
                        .unwrap_or(true),
                    format!("check {}", c.spec.kind.as_str()),
                ),
            };
            SiteStatus {
                name: site.name.clone(),
                address: site.address,
                weight: site.weight,
                up: up && site.weight > 0,
                basis,
            }
        })
        .collect()
}

/// The records of the sites answered now: (address, weight), in configuration order.
pub fn records(states: &[SiteStatus]) -> Vec<(IpAddr, u32)> {
    states
        .iter()
        .filter(|s| s.up)
        .map(|s| (s.address, s.weight))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::health::{CheckConfig, CheckKind};
    use crate::dns::answer::{ClientNetwork, Responder, Transport};
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::net::Ipv4Addr;
    use xvs_forwarding::service::{Backend, PROTO_TCP};
    use xvs_forwarding::Method;
    use xvs_schedulers::Time;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

    fn v4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 10, d))
    }

    fn key(d: u8) -> ServiceKey {
        ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: v4(d),
            port: 80,
        }
    }

    /// A service on VIP 198.18.10.`d` whose backends have these weights.
    fn service(d: u8, weights: &[u32]) -> Service {
        Service {
            key: key(d),
            scheduler: "rr".into(),
            sched_flags: Default::default(),
            persistence: None,
            one_packet: false,
            synproxy: false,
            conn_rate: 0,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| Backend {
                    addr: IpAddr::V4(Ipv4Addr::new(198, 18, 3, 11 + i as u8)),
                    port: 80,
                    weight,
                    method: Method::Nat,
                    u_threshold: 0,
                    l_threshold: 0,
                    conn_rate: 0,
                })
                .collect(),
        }
    }

    fn tcp_check() -> SiteCheck {
        let spec = CheckConfig {
            kind: Some(CheckKind::Tcp),
            ..CheckConfig::default()
        }
        .validate("check")
        .unwrap()
        .unwrap();
        SiteCheck {
            target: SocketAddr::new(v4(40), 80),
            spec,
        }
    }

    /// eu: local service .1 (weight 3); us: local service .2 (weight 1); vip: .3 given by
    /// address (weight 1); ap: remote .40, checked (weight 1); far: remote .50, unchecked
    /// (weight 1).
    fn sites() -> Vec<DnsSite> {
        vec![
            DnsSite {
                name: "eu".into(),
                address: v4(1),
                weight: 3,
                kind: SiteKind::Service(key(1)),
            },
            DnsSite {
                name: "us".into(),
                address: v4(2),
                weight: 1,
                kind: SiteKind::Service(key(2)),
            },
            DnsSite {
                name: "198.18.10.3".into(),
                address: v4(3),
                weight: 1,
                kind: SiteKind::Vip,
            },
            DnsSite {
                name: "ap".into(),
                address: v4(40),
                weight: 1,
                kind: SiteKind::Remote(Some(Box::new(tcp_check()))),
            },
            DnsSite {
                name: "far".into(),
                address: v4(50),
                weight: 1,
                kind: SiteKind::Remote(None),
            },
        ]
    }

    fn ap_check(up: bool) -> CheckStates {
        let mut c = CheckStates::new();
        c.insert(
            (check_name("lb.example", "ap"), SocketAddr::new(v4(40), 80)),
            up,
        );
        c
    }

    fn addrs(services: &[Service], checks: &CheckStates) -> Vec<IpAddr> {
        records(&site_states("lb.example", &sites(), services, checks))
            .into_iter()
            .map(|(a, _)| a)
            .collect()
    }

    #[test]
    fn a_site_is_answered_while_its_service_has_an_available_backend() {
        let up = [
            service(1, &[1, 1]),
            service(2, &[1]),
            service(3, &[2]),
            // A second service on .3: either keeps the VIP answered.
            service(3, &[0]),
        ];
        assert_eq!(
            addrs(&up, &ap_check(true)),
            [v4(1), v4(2), v4(3), v4(40), v4(50)]
        );
        // us's only backend at weight 0 (quiescent check failed), .3's backend removed, eu with
        // one backend left, ap's check down: eu and far remain.
        let down = [service(1, &[0, 1]), service(2, &[0]), service(3, &[])];
        assert_eq!(addrs(&down, &ap_check(false)), [v4(1), v4(50)]);
        // A service no longer running (deleted at runtime) leaves its site out.
        assert_eq!(addrs(&[], &ap_check(true)), [v4(40), v4(50)]);
    }

    #[test]
    fn a_remote_check_without_a_state_yet_counts_as_up_and_weight_zero_is_never_answered() {
        let mut s = sites();
        s[4].weight = 0;
        let st = site_states("lb.example", &s, &[], &CheckStates::new());
        assert!(st[3].up, "{st:?}");
        assert_eq!(st[3].basis, "check tcp");
        assert!(!st[4].up);
        assert_eq!(st[0].basis, "service TCP 198.18.10.1:80");
        assert_eq!(st[2].basis, "vip");
        assert_eq!(st[4].basis, "unchecked");
        // Another zone's check of the same name is another check.
        let mut other = CheckStates::new();
        other.insert(
            (
                check_name("other.example", "ap"),
                SocketAddr::new(v4(40), 80),
            ),
            false,
        );
        assert!(site_states("lb.example", &s, &[], &other)[3].up);
    }

    fn query(edns_subnet: Option<(IpAddr, u8)>) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("www.lb.example.").unwrap(),
            RecordType::A,
        ));
        if let Some((a, len)) = edns_subnet {
            let mut e = Edns::new();
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(a, len, 0)));
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn first(r: &mut Responder, q: &[u8]) -> Option<RData> {
        let (b, _) = r.respond(q, CLIENT, LOCAL, Transport::Udp, Time(0));
        let m = Message::from_vec(&b.unwrap()).unwrap();
        m.answers.first().map(|a| a.data.clone())
    }

    fn a(d: u8) -> RData {
        RData::A(A(Ipv4Addr::new(198, 18, 10, d)))
    }

    #[test]
    fn site_weights_hold_over_many_queries_and_a_dead_site_leaves() {
        let mut r = Responder::new("lb.example", "ns.lb.example", 30).unwrap();
        r.add_name("www.lb.example", 20, 1, "wrr").unwrap();
        let services = [service(1, &[1]), service(2, &[1]), service(3, &[0])];
        let st = site_states("lb.example", &sites(), &services, &ap_check(false));
        r.set_backends(0, &records(&st));
        // eu 3, us 1, far 1 (the VIP .3 and ap are down).
        let q = query(None);
        let mut n = HashMap::new();
        for _ in 0..500 {
            *n.entry(format!("{:?}", first(&mut r, &q).unwrap()))
                .or_insert(0) += 1;
        }
        assert_eq!(n.get(&format!("{:?}", a(1))), Some(&300), "{n:?}");
        assert_eq!(n.get(&format!("{:?}", a(2))), Some(&100), "{n:?}");
        assert_eq!(n.get(&format!("{:?}", a(50))), Some(&100), "{n:?}");
        // eu's last backend fails: eu is no longer answered at all.
        let services = [service(1, &[0]), service(2, &[1]), service(3, &[0])];
        let st = site_states("lb.example", &sites(), &services, &ap_check(false));
        r.set_backends(0, &records(&st));
        for _ in 0..20 {
            assert_ne!(first(&mut r, &q), Some(a(1)));
        }
    }

    #[test]
    fn a_client_network_prefers_its_site_while_it_is_up() {
        // Clients in 203.0.113.0/24 (by address or EDNS Client Subnet) prefer ap.
        let mut r = Responder::new("lb.example", "ns.lb.example", 30).unwrap();
        r.set_client_networks(vec![ClientNetwork {
            prefix: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)),
            len: 24,
            prefer: vec![v4(40)],
        }]);
        r.add_name("www.lb.example", 20, 1, "rr").unwrap();
        let services = [service(1, &[1]), service(2, &[1])];
        let near = query(Some((IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 24)));
        let st = site_states("lb.example", &sites(), &services, &ap_check(true));
        r.set_backends(0, &records(&st));
        for _ in 0..5 {
            assert_eq!(first(&mut r, &near), Some(a(40)));
        }
        // Others are spread over every site up.
        let mut seen: Vec<String> = (0..8)
            .map(|_| format!("{:?}", first(&mut r, &query(None))))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4, "{seen:?}");
        // ap's check fails: its clients get the other sites.
        let st = site_states("lb.example", &sites(), &services, &ap_check(false));
        r.set_backends(0, &records(&st));
        for _ in 0..5 {
            let got = first(&mut r, &near);
            assert!(got.is_some() && got != Some(a(40)), "{got:?}");
        }
        // No site up at all: SERVFAIL, no record.
        let st = site_states("lb.example", &sites(), &[], &ap_check(false));
        let mut none = st.clone();
        none.retain(|s| s.name != "far");
        r.set_backends(0, &records(&none));
        assert_eq!(first(&mut r, &near), None);
    }
}
