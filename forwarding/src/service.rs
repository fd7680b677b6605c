//! Virtual services and their backends, and the lookup that maps a packet to a service.
//!
//! A service is keyed by (protocol, VIP, port) — port 0 meaning every port, as in IPVS — or by a
//! firewall mark. The kernel gets marks from netfilter; xvs has no netfilter in its path, so the
//! snapshot carries mark rules (protocol, destination prefix, port range → mark) that play the
//! part of `iptables -t mangle … -j MARK` for the first packet of a flow.
//!
//! Lookup order follows `ip_vs_service_find` (`ip_vs_ctl.c`, see ../shared/IPVS.md §1.1): the mark
//! service first, then the exact (proto, addr, port), then — TCP only — the FTP control service on
//! port 21 for data connections (port 20 or unprivileged), then the port-0 service of that address.

use crate::net::FastMap;
use std::net::IpAddr;

use xvs_schedulers::{BackendId, BackendView, SchedFlags};

use crate::Method;

/// Index of a service in the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceId(pub u32);

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// How a service is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// `-t/-u vip:port`; port 0 matches every port.
    Addr { proto: u8, addr: IpAddr, port: u16 },
    /// `-f mark` (`ipv6` selects the IPv6 family, ipvsadm's `-6`).
    Fwmark { mark: u32, ipv6: bool },
}

impl ServiceKey {
    /// The service port (0 for fwmark and all-port services).
    pub fn port(&self) -> u16 {
        match *self {
            ServiceKey::Addr { port, .. } => port,
            ServiceKey::Fwmark { .. } => 0,
        }
    }

    pub fn fwmark(&self) -> u32 {
        match *self {
            ServiceKey::Fwmark { mark, .. } => mark,
            ServiceKey::Addr { .. } => 0,
        }
    }
}

/// Persistence (`-p timeout -M netmask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// Template timeout in seconds (ipvsadm's default for `-p` is 300).
    pub timeout: u32,
    /// Client netmask as a prefix length (32 / 128 = per client address).
    pub prefix_len: u8,
}

/// One backend of a service, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddr,
    /// Backend port; 0 keeps the packet's destination port.
    pub port: u16,
    pub weight: u32,
    pub method: Method,
    /// Upper connection threshold (`-x`); 0 = none.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = none.
    pub l_threshold: u32,
    /// New connections per second the backend accepts, director-wide (0: no limit).
    pub conn_rate: u32,
}

/// One virtual service, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// ipvsadm scheduler name (`wlc` is ipvsadm's default).
    pub scheduler: String,
    /// Scheduler flags (ipvsadm's `-b`).
    pub sched_flags: SchedFlags,
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`): UDP datagrams are scheduled one by one, no entry kept.
    pub one_packet: bool,
    /// SYN proxy (TCP services with NAT / FullNAT backends): the director answers SYNs with
    /// SYN cookies and opens to the backend only for clients that complete the handshake
    /// (`crate::synproxy`).
    pub synproxy: bool,
    /// New connections per second the service accepts, director-wide (0: no limit;
    /// `crate::limits`).
    pub conn_rate: u32,
    /// Backends in the order they were added (IPVS list order is the reverse: newest first).
    pub backends: Vec<Backend>,
}

/// A mark rule: the first packet of a flow matching it carries `mark` into the service lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkRule {
    /// Protocol to match; `None` matches any.
    pub proto: Option<u8>,
    pub dst: IpAddr,
    pub dst_prefix_len: u8,
    pub ports: (u16, u16),
    pub mark: u32,
}

impl MarkRule {
    fn matches(&self, proto: u8, dst: IpAddr, dport: u16) -> bool {
        self.proto.is_none_or(|p| p == proto)
            && prefix_match(self.dst, self.dst_prefix_len, dst)
            && (self.ports.0..=self.ports.1).contains(&dport)
    }
}

/// True when `addr` lies in `net/len` (families must match).
pub fn prefix_match(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The client network of `addr` under a prefix length (persistence `-M`).
pub fn mask_addr(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// The service lookup structure of a snapshot.
#[derive(Debug, Default, Clone)]
pub struct ServiceTable {
    // A multiplicative hasher: std's SipHash cost ~370 instructions per new connection here.
    by_addr: FastMap<(u8, IpAddr, u16), ServiceId>,
    /// The IPv4 entries of `by_addr` again, keyed by one word ([`v4_key`]).
    by_v4: V4Keys,
    by_mark: FastMap<(u32, bool), ServiceId>,
    mark_rules: Vec<MarkRule>,
    /// Whether any port-0 / port-21 service exists (skips lookups that cannot hit).
    any_port_zero: bool,
    any_ftp: bool,
}

/// An IPv4 service key as one word: protocol, address, port.
#[inline]
fn v4_key(proto: u8, addr: u32, port: u16) -> u64 {
    u64::from(proto) << 48 | u64::from(addr) << 16 | u64::from(port)
}

/// IPv4 service keys ([`v4_key`]) to services: open addressing with linear probing over a
/// power-of-two array at most half full, the home slot from a multiplicative hash of the key.
/// A lookup is one multiply and, mostly, one compare.
#[derive(Debug, Clone)]
struct V4Keys {
    /// (key, service); [`V4Keys::EMPTY`] as the key of a free slot.
    slots: Vec<(u64, ServiceId)>,
    /// 64 − log2(slots).
    shift: u32,
    len: usize,
}

impl Default for V4Keys {
    fn default() -> Self {
        V4Keys {
            slots: vec![(Self::EMPTY, ServiceId(0)); 4],
            shift: 62,
            len: 0,
        }
    }
}

impl V4Keys {
    /// No key has bits above 56 set.
    const EMPTY: u64 = u64::MAX;

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The service of `key`. The array is never more than half full, so the probe ends at a
    /// free slot.
    #[inline]
    fn get(&self, key: u64) -> Option<ServiceId> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let (k, id) = *self.slots.get(i)?;
            if k == key {
                return Some(id);
            }
            if k == Self::EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Add `key` unless present (the first insert wins).
    fn insert(&mut self, key: u64, id: ServiceId) {
        if self.get(key).is_some() {
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            let n = old.len() * 2;
            self.slots = vec![(Self::EMPTY, ServiceId(0)); n];
            self.shift = 64 - n.trailing_zeros();
            self.len = 0;
            for (k, v) in old {
                if k != Self::EMPTY {
                    self.insert(k, v);
                }
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i].0 != Self::EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = (key, id);
        self.len += 1;
    }
}

/// `ip_unprivileged_port_start`'s default.
const UNPRIVILEGED_PORT_START: u16 = 1024;

impl ServiceTable {
    /// Builds the table; `services[i]` gets `ServiceId(i)`. Duplicate keys keep the first.
    pub fn new(services: &[Service], mark_rules: Vec<MarkRule>) -> Self {
        let ids: Vec<(ServiceId, ServiceKey)> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (ServiceId(i as u32), s.key))
            .collect();
        Self::with_ids(&ids, mark_rules)
    }

    /// Builds the table from services with the ids they already have.
    pub fn with_ids(services: &[(ServiceId, ServiceKey)], mark_rules: Vec<MarkRule>) -> Self {
        let mut t = ServiceTable {
            mark_rules,
            ..Default::default()
        };
        for &(id, key) in services {
            match key {
                ServiceKey::Addr { proto, addr, port } => {
                    t.by_addr.entry((proto, addr, port)).or_insert(id);
                    if let IpAddr::V4(a) = addr {
                        t.by_v4.insert(v4_key(proto, a.to_bits(), port), id);
                    }
                    t.any_port_zero |= port == 0;
                    t.any_ftp |= proto == PROTO_TCP && port == 21;
                }
                ServiceKey::Fwmark { mark, ipv6 } => {
                    t.by_mark.entry((mark, ipv6)).or_insert(id);
                }
            }
        }
        t
    }

    /// The firewall mark the mark rules give this packet (0 = none).
    pub fn mark(&self, proto: u8, dst: IpAddr, dport: u16) -> u32 {
        self.mark_rules
            .iter()
            .find(|r| r.matches(proto, dst, dport))
            .map_or(0, |r| r.mark)
    }

    /// `ip_vs_service_find`: the service for a packet's (mark, protocol, destination).
    pub fn find(&self, mark: u32, proto: u8, dst: IpAddr, dport: u16) -> Option<ServiceId> {
        if mark != 0 {
            if let Some(&id) = self.by_mark.get(&(mark, dst.is_ipv6())) {
                return Some(id);
            }
        }
        if let Some(id) = self.by_key(proto, dst, dport) {
            return Some(id);
        }
        if self.any_ftp && proto == PROTO_TCP && (dport == 20 || dport >= UNPRIVILEGED_PORT_START) {
            if let Some(id) = self.by_key(proto, dst, 21) {
                return Some(id);
            }
        }
        if self.any_port_zero {
            return self.by_key(proto, dst, 0);
        }
        None
    }

    /// The service with key (proto, dst, port).
    #[inline(always)]
    fn by_key(&self, proto: u8, dst: IpAddr, port: u16) -> Option<ServiceId> {
        match dst {
            IpAddr::V4(a) => self.by_v4.get(v4_key(proto, a.to_bits(), port)),
            IpAddr::V6(_) => self.by_addr.get(&(proto, dst, port)).copied(),
        }
    }

    /// Whether any service or mark rule could claim this destination address (cheap pre-check
    /// that lets non-service traffic pass quickly).
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty() && self.by_mark.is_empty()
    }
}

/// The scheduler's view of a service's backends, in IPVS list order (newest first).
/// Backend `i` of the service (in configuration order) gets `BackendId(first_id + i)`.
pub fn backend_views(first_id: u32, service: &Service) -> Vec<BackendView> {
    let n = service.backends.len();
    (0..n)
        .rev()
        .map(|i| {
            let b = &service.backends[i];
            BackendView {
                id: BackendId(first_id + i as u32),
                addr: b.addr,
                port: b.port,
                weight: b.weight,
                last_weight: b.weight,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_keys_grow_and_keep_the_first() {
        let mut t = V4Keys::default();
        for k in 0..1000u64 {
            t.insert(
                v4_key(6, k as u32 * 7919, (k % 3) as u16),
                ServiceId(k as u32),
            );
        }
        t.insert(v4_key(6, 0, 0), ServiceId(5000));
        for k in 0..1000u64 {
            let key = v4_key(6, k as u32 * 7919, (k % 3) as u16);
            assert_eq!(t.get(key), Some(ServiceId(k as u32)));
            assert_eq!(t.get(v4_key(17, k as u32 * 7919, (k % 3) as u16)), None);
        }
        assert_eq!(t.len, 1000);
        assert!(t.slots.len() >= 2000);
    }
    use std::net::Ipv4Addr;

    fn svc(proto: u8, addr: [u8; 4], port: u16) -> Service {
        Service {
            key: ServiceKey::Addr {
                proto,
                addr: IpAddr::V4(Ipv4Addr::from(addr)),
                port,
            },
            scheduler: "rr".into(),
            sched_flags: SchedFlags::NONE,
            persistence: None,
            one_packet: false,
            synproxy: false,
            conn_rate: 0,
            backends: vec![],
        }
    }

    #[test]
    fn lookup_order_follows_ipvs() {
        let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut services = vec![
            svc(PROTO_TCP, [198, 18, 0, 1], 80),
            svc(PROTO_TCP, [198, 18, 0, 1], 0),
            svc(PROTO_TCP, [198, 18, 0, 1], 21),
        ];
        services.push(Service {
            key: ServiceKey::Fwmark {
                mark: 7,
                ipv6: false,
            },
            ..svc(0, [0; 4], 0)
        });
        let rules = vec![MarkRule {
            proto: Some(PROTO_TCP),
            dst: vip,
            dst_prefix_len: 32,
            ports: (8000, 8999),
            mark: 7,
        }];
        let t = ServiceTable::new(&services, rules);
        assert_eq!(t.find(0, PROTO_TCP, vip, 80), Some(ServiceId(0)));
        // Unprivileged port: FTP data goes to the port-21 service before the port-0 one.
        assert_eq!(t.find(0, PROTO_TCP, vip, 5000), Some(ServiceId(2)));
        assert_eq!(t.find(0, PROTO_TCP, vip, 20), Some(ServiceId(2)));
        assert_eq!(t.find(0, PROTO_TCP, vip, 443), Some(ServiceId(1)));
        assert_eq!(t.find(0, PROTO_UDP, vip, 443), None);
        let mark = t.mark(PROTO_TCP, vip, 8080);
        assert_eq!(mark, 7);
        assert_eq!(t.find(mark, PROTO_TCP, vip, 8080), Some(ServiceId(3)));
        assert_eq!(t.mark(PROTO_UDP, vip, 8080), 0);
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(t.find(0, PROTO_TCP, other, 80), None);
    }

    #[test]
    fn masks() {
        let a: IpAddr = "198.18.5.77".parse().unwrap();
        assert_eq!(mask_addr(a, 24), "198.18.5.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask_addr(a, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        let b: IpAddr = "2001:2::1:2".parse().unwrap();
        assert_eq!(mask_addr(b, 64), "2001:2::".parse::<IpAddr>().unwrap());
        assert!(prefix_match("2001:2::".parse().unwrap(), 48, b));
        assert!(!prefix_match("2001:3::".parse().unwrap(), 48, b));
        assert!(!prefix_match(a, 0, b));
    }
}
