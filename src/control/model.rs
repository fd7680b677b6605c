//! The listing model behind `xvs ctl -L`: plain data that the runtime fills from the running
//! pipelines and that `format` lays out as ipvsadm does.
//!
//! Counters follow IPVS (`struct ip_vs_stats`, `ip_vs_est.c`): per service and per backend the
//! totals (connections, packets and bytes in each direction) and the rate estimates. The rate
//! estimator is the kernel's: every 2 s, `avg += (sample - avg) >> 2` with samples scaled by
//! 2^9 (connections, packets) or 2^4 (bytes), read back as `(avg + 0x1FF) >> 10` and
//! `(avg + 0xF) >> 5` per second ([`RateEstimator`]).

use std::net::IpAddr;

use xvs_forwarding::service::{Persistence, Service, ServiceKey};
use xvs_forwarding::Method;
use xvs_schedulers::SchedFlags;

use super::state::DesiredState;

/// The connection hash size ipvsadm prints in its banner (`IP_VS_CONN_TAB_SIZE` default).
pub const IPVS_TABLE_SIZE: u32 = 4096;

/// Totals since start or the last `-Z` (`ipvsadm --stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl Stats {
    /// Field-wise sum (service totals from backend totals, or per-worker slots).
    pub fn add(&mut self, o: &Stats) {
        self.conns = self.conns.wrapping_add(o.conns);
        self.in_pkts = self.in_pkts.wrapping_add(o.in_pkts);
        self.out_pkts = self.out_pkts.wrapping_add(o.out_pkts);
        self.in_bytes = self.in_bytes.wrapping_add(o.in_bytes);
        self.out_bytes = self.out_bytes.wrapping_add(o.out_bytes);
    }
}

/// Per-second rate estimates (`ipvsadm --rate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

/// IPVS's rate estimator (`ip_vs_est.c`): call [`RateEstimator::update`] every 2 seconds with
/// the current totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEstimator {
    last: Stats,
    cps: i64,
    in_pps: i64,
    out_pps: i64,
    in_bps: i64,
    out_bps: i64,
}

impl RateEstimator {
    /// Starts from `totals` with zero rates.
    pub fn new(totals: Stats) -> Self {
        RateEstimator {
            last: totals,
            ..Default::default()
        }
    }

    /// One 2-second estimation step. A counter that went down (zeroed, or its service
    /// re-created) counts as no traffic in this step rather than a huge negative one.
    pub fn update(&mut self, now: &Stats) {
        fn step(avg: &mut i64, now: u64, last: u64, shift: u32) {
            let delta = now.saturating_sub(last).min(i64::MAX as u64 >> 9) as i64;
            let sample = delta.wrapping_shl(shift);
            *avg = avg.wrapping_add(sample.wrapping_sub(*avg) >> 2);
        }
        step(&mut self.cps, now.conns, self.last.conns, 9);
        step(&mut self.in_pps, now.in_pkts, self.last.in_pkts, 9);
        step(&mut self.out_pps, now.out_pkts, self.last.out_pkts, 9);
        step(&mut self.in_bps, now.in_bytes, self.last.in_bytes, 4);
        step(&mut self.out_bps, now.out_bytes, self.last.out_bytes, 4);
        self.last = *now;
    }

    /// The estimates as ipvsadm reads them.
    pub fn rates(&self) -> Rates {
        let small = |v: i64| (v.max(0) as u64).saturating_add(0x1FF) >> 10;
        let bytes = |v: i64| (v.max(0) as u64).saturating_add(0xF) >> 5;
        Rates {
            cps: small(self.cps),
            in_pps: small(self.in_pps),
            out_pps: small(self.out_pps),
            in_bps: bytes(self.in_bps),
            out_bps: bytes(self.out_bps),
        }
    }
}

/// One backend row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendListing {
    pub addr: IpAddr,
    pub port: u16,
    pub method: Method,
    /// The weight the workers run (after health, dynamic and adaptive weights).
    pub weight: u32,
    /// The weight of the running configuration (the file or `xvs ctl -e -w`).
    pub configured_weight: u32,
    /// The health check's smoothed response time (`None`: unchecked or not measured yet).
    pub response: Option<std::time::Duration>,
    /// The load figure the backend reports (percent), if its check reads one.
    pub load: Option<u8>,
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// New connections per second (0: no limit).
    pub conn_rate: u32,
    /// New connections `conn_rate` refused (since start or `-Z`).
    pub rate_limited: u64,
    /// Connections in ESTABLISHED (IPVS `activeconns`).
    pub active: u32,
    /// Other connections (IPVS `inactconns`).
    pub inactive: u32,
    /// Persistence templates pointing at this backend (IPVS `persistconns`).
    pub persist: u32,
    pub stats: Stats,
    pub rates: Rates,
}

/// One service with its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceListing {
    pub key: ServiceKey,
    pub scheduler: String,
    pub sched_flags: SchedFlags,
    pub persistence: Option<Persistence>,
    pub one_packet: bool,
    /// SYN proxy on (`--synproxy`).
    pub synproxy: bool,
    /// New connections per second (0: no limit).
    pub conn_rate: u32,
    /// New connections `conn_rate` refused (since start or `-Z`).
    pub rate_limited: u64,
    pub stats: Stats,
    pub rates: Rates,
    /// In IPVS list order: the newest backend first (`--nosort` prints this order).
    pub backends: Vec<BackendListing>,
}

/// Everything `ipvsadm -L` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The `size=` of the banner.
    pub table_size: u32,
    /// In creation order.
    pub services: Vec<ServiceListing>,
    /// New connections the per-source-prefix limit refused (every worker, since start).
    pub source_rate_limited: u64,
}

impl Listing {
    /// The listing of a desired state with every counter at zero: the runtime builds this and
    /// fills the counters in with [`Listing::backend_mut`] / [`Listing::service_mut`].
    pub fn from_state(state: &DesiredState) -> Listing {
        Listing {
            table_size: IPVS_TABLE_SIZE,
            services: state
                .services
                .iter()
                .map(ServiceListing::from_service)
                .collect(),
            source_rate_limited: 0,
        }
    }

    /// Add one pipeline's counters (a worker's report) to the listing's services and backends.
    /// Add a worker's traffic counters (packets, bytes, connections) from its report.
    pub fn add_report(&mut self, services: &[xvs_forwarding::pipeline::ServiceReport]) {
        fn stats(t: &xvs_forwarding::Traffic) -> Stats {
            Stats {
                conns: t.conns,
                in_pkts: t.in_pkts,
                out_pkts: t.out_pkts,
                in_bytes: t.in_bytes,
                out_bytes: t.out_bytes,
            }
        }
        for s in services {
            if let Some(sl) = self.service_mut(&s.key) {
                sl.stats.add(&stats(&s.traffic));
                sl.rate_limited = sl.rate_limited.wrapping_add(s.traffic.rate_limited);
            }
            for b in &s.backends {
                if let Some(bl) = self.backend_mut(&s.key, b.addr, b.port) {
                    bl.stats.add(&stats(&b.traffic));
                    bl.rate_limited = bl.rate_limited.wrapping_add(b.traffic.rate_limited);
                }
            }
        }
    }

    /// Take the backends' connection counts (ActiveConn, InActConn, PersistConn) from a
    /// report: the director's counts, shared by every worker, so taken once, not summed.
    pub fn set_counts(&mut self, services: &[xvs_forwarding::pipeline::ServiceReport]) {
        for s in services {
            for b in &s.backends {
                if let Some(bl) = self.backend_mut(&s.key, b.addr, b.port) {
                    bl.active = b.active;
                    bl.inactive = b.inactive;
                    bl.persist = b.persistent;
                }
            }
        }
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceListing> {
        self.services.iter().find(|s| s.key == *key)
    }

    pub fn service_mut(&mut self, key: &ServiceKey) -> Option<&mut ServiceListing> {
        self.services.iter_mut().find(|s| s.key == *key)
    }

    pub fn backend_mut(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Option<&mut BackendListing> {
        self.service_mut(key)?
            .backends
            .iter_mut()
            .find(|b| b.addr == addr && b.port == port)
    }
}

impl ServiceListing {
    /// A service's configuration with zero counters; backends in IPVS list order.
    pub fn from_service(s: &Service) -> ServiceListing {
        ServiceListing {
            key: s.key,
            scheduler: s.scheduler.clone(),
            sched_flags: s.sched_flags,
            persistence: s.persistence,
            one_packet: s.one_packet,
            synproxy: s.synproxy,
            conn_rate: s.conn_rate,
            rate_limited: 0,
            stats: Stats::default(),
            rates: Rates::default(),
            backends: s
                .backends
                .iter()
                .rev()
                .map(|b| BackendListing {
                    addr: b.addr,
                    port: b.port,
                    method: b.method,
                    weight: b.weight,
                    configured_weight: b.weight,
                    response: None,
                    load: None,
                    u_threshold: b.u_threshold,
                    l_threshold: b.l_threshold,
                    conn_rate: b.conn_rate,
                    rate_limited: 0,
                    active: 0,
                    inactive: 0,
                    persist: 0,
                    stats: Stats::default(),
                    rates: Rates::default(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_converges_to_the_per_second_rate() {
        let mut e = RateEstimator::new(Stats::default());
        let mut t = Stats::default();
        // 1000 conns/s, 50 000 pkts/s in, 6 MB/s in, every 2 s.
        for _ in 0..100 {
            t.conns += 2000;
            t.in_pkts += 100_000;
            t.in_bytes += 12_000_000;
            e.update(&t);
        }
        let r = e.rates();
        assert_eq!(r.cps, 1000);
        assert_eq!(r.in_pps, 50_000);
        assert_eq!(r.in_bps, 6_000_000);
        assert_eq!(r.out_pps, 0);
        // One step after the traffic stops: a quarter of the way down.
        e.update(&t);
        assert_eq!(e.rates().cps, 750);
        // Counters zeroed under the estimator: no negative spike, just no traffic.
        e.update(&Stats::default());
        assert_eq!(e.rates().cps, 562);
        assert_eq!(e.rates().in_bps, 3_375_000);
    }

    #[test]
    fn listing_from_state_puts_the_newest_backend_first() {
        let st = crate::control::ipvsadm::parse_rules(
            "-A -t 198.18.0.100:80 -s rr\n\
             -a -t 198.18.0.100:80 -r 198.19.0.1:80 -m\n\
             -a -t 198.18.0.100:80 -r 198.19.0.2:80 -m\n",
        )
        .unwrap();
        let l = Listing::from_state(&st);
        let b: Vec<String> = l.services[0]
            .backends
            .iter()
            .map(|b| b.addr.to_string())
            .collect();
        assert_eq!(b, ["198.19.0.2", "198.19.0.1"]);
    }
}

/// `-L --stateless`: the stateless balancers of the running director.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stateless {
    /// The DNS responders (`[[dns]]`).
    pub dns: Vec<crate::dns::server::DnsStatus>,
    /// The HTTP redirect listeners (`[[redirect]]`).
    pub redirect: Vec<crate::redirect::server::RedirectStatus>,
}
