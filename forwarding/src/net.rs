//! The director's view of its links: ports (interfaces), routes and neighbours.
//!
//! The core never resolves anything itself: the control plane fills the neighbour table (from the
//! kernel's, via netlink, or from configuration) and the routes; the pipeline asks for the next hop
//! of an address and gets the egress port with both MAC addresses, or `None` (a counted drop —
//! never a silent blackhole).
//!
//! Route lookup is a longest-prefix scan over a short list sorted by prefix length (a director has
//! a handful of routes); routes through a gateway keep their resolved hop, so only on-link
//! destinations cost a neighbour lookup per packet. IPv4 routes are also kept as (network,
//! mask) words so the per-packet scan compares integers.
//!
//! Every change of the neighbour table gives the network a new [`Network::generation`] (unique
//! across all `Network` values of the process), so a caller may cache hops and drop its cache
//! when the generation moves: the pipeline caches each backend's hop that way.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::service::prefix_match;
use crate::PortId;

pub type Mac = [u8; 6];

/// One interface the director transmits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub mac: Mac,
    /// IP MTU of the link (1500 on plain Ethernet).
    pub mtu: u16,
    /// The director's addresses on this link (TUN outer source, ICMP answers).
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// A route: destinations in `dst/prefix_len` leave by `port`, through `via` or on-link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub via: Option<IpAddr>,
    pub port: PortId,
}

/// Where a frame goes next: egress port and the Ethernet addresses to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub port: PortId,
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub mtu: u16,
    /// 802.1Q tag to put on frames leaving by this hop (the port's [`PortVlans::egress`]).
    pub vlan: Option<u16>,
}

/// An untagged [`Hop`] as the established-flow path writes it: the port, the MTU and the
/// Ethernet header's two addresses (destination, then source) in one array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkV4 {
    pub port: PortId,
    pub mtu: u16,
    pub macs: [u8; 12],
}

impl LinkV4 {
    /// `hop`, unless it is tagged.
    #[inline(always)]
    pub fn of(hop: &Hop) -> Option<LinkV4> {
        if hop.vlan.is_some() {
            return None;
        }
        let mut macs = [0; 12];
        macs[..6].copy_from_slice(&hop.dst_mac);
        macs[6..].copy_from_slice(&hop.src_mac);
        Some(LinkV4 {
            port: hop.port,
            mtu: hop.mtu,
            macs,
        })
    }
}

/// The VLANs of one port: which tagged frames it accepts, and the tag it transmits with.
/// Untagged frames (and priority-tagged ones, VLAN id 0) are always accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortVlans {
    /// VLAN ids (1–4094) whose tagged frames are accepted on this port.
    pub ingress: Vec<u16>,
    /// Tag frames sent on this port with this VLAN id; `None` sends them untagged.
    pub egress: Option<u16>,
}

/// A MAC address as one integer (its six bytes, little-endian): compared in one instruction.
#[inline(always)]
pub fn mac_word(mac: &Mac) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// A multiplicative hasher for address keys (std's SipHash is needlessly slow for them).
#[derive(Default, Clone, Copy)]
pub(crate) struct MulHasher(u64);

impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, x: u64) {
        // `write` of the eight little-endian bytes, in one step.
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MulHasher>>;

/// Source of [`Network::generation`] values: every value handed out once per process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// Ports, routes and neighbours of one worker's pipeline.
#[derive(Clone, Debug, Default)]
pub struct Network {
    ports: Vec<Port>,
    /// Each port's MAC address as a word ([`mac_word`]), 0 when it is all zeros (unknown).
    port_macs: Vec<u64>,
    /// Sorted by prefix length, longest first, each with its resolved gateway hop.
    routes: Vec<(Route, Option<Hop>)>,
    /// The IPv4 routes of `routes`, in the same order: (network, mask, index into `routes`).
    v4_routes: Vec<(u32, u32, usize)>,
    /// `v4_routes` but the default routes (prefix 0) with, instead of the index, a gateway
    /// route's resolved hop as a [`LinkV4`]: `Some(None)` when it is unresolved or tagged,
    /// `None` for an on-link route (one scan finds the route and its link).
    v4_links: Vec<(u32, u32, Option<Option<LinkV4>>)>,
    /// The same for the first IPv4 default route (what matches when none of `v4_links`
    /// does); `None` also when there is none.
    v4_default: Option<Option<LinkV4>>,
    neighbours: FastMap<IpAddr, Mac>,
    generation: u64,
    /// VLANs by port index (missing: untagged only).
    vlans: Vec<PortVlans>,
}

impl Network {
    pub fn new(ports: Vec<Port>, routes: Vec<Route>) -> Self {
        let mut routes: Vec<_> = routes.into_iter().map(|r| (r, None)).collect();
        routes.sort_by_key(|(r, _)| std::cmp::Reverse(r.prefix_len));
        let v4_routes = routes
            .iter()
            .enumerate()
            .filter_map(|(i, (r, _))| match r.dst {
                IpAddr::V4(net) => {
                    let len = u32::from(r.prefix_len.min(32));
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    Some((net.to_bits() & mask, mask, i))
                }
                IpAddr::V6(_) => None,
            })
            .collect();
        let port_macs = ports.iter().map(|p| mac_word(&p.mac)).collect();
        let mut n = Network {
            port_macs,
            ports,
            routes,
            v4_routes,
            v4_links: Vec::new(),
            v4_default: None,
            neighbours: FastMap::default(),
            generation: next_generation(),
            vlans: Vec::new(),
        };
        n.resolve_routes();
        n
    }

    /// Changes whenever a next hop may have changed (neighbour learnt, changed or forgotten);
    /// never the same for two different states, even across `Network` values.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(usize::from(id.0))
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(|(r, _)| r)
    }

    /// Set the VLANs of a port (ignored for a port that does not exist).
    pub fn set_vlans(&mut self, port: PortId, vlans: PortVlans) {
        let i = usize::from(port.0);
        if i >= self.ports.len() {
            return;
        }
        if self.vlans.len() <= i {
            self.vlans.resize(i + 1, PortVlans::default());
        }
        self.vlans[i] = vlans;
        self.resolve_routes();
    }

    /// The VLANs of a port (none configured: untagged only).
    pub fn vlans(&self, port: PortId) -> Option<&PortVlans> {
        self.vlans.get(usize::from(port.0))
    }

    /// Learn or refresh a neighbour's MAC address.
    pub fn set_neighbour(&mut self, addr: IpAddr, mac: Mac) {
        if self.neighbours.insert(addr, mac) != Some(mac) {
            self.resolve_routes();
        }
    }

    /// Forget a neighbour (it failed resolution or went away).
    pub fn remove_neighbour(&mut self, addr: IpAddr) {
        if self.neighbours.remove(&addr).is_some() {
            self.resolve_routes();
        }
    }

    pub fn neighbour(&self, addr: IpAddr) -> Option<Mac> {
        self.neighbours.get(&addr).copied()
    }

    fn resolve_routes(&mut self) {
        self.generation = next_generation();
        for i in 0..self.routes.len() {
            let (route, _) = self.routes[i];
            self.routes[i].1 = route.via.and_then(|gw| self.hop_via(route.port, gw));
        }
        let links: Vec<_> = self
            .v4_routes
            .iter()
            .map(|&(net, mask, i)| {
                let (route, hop) = &self.routes[i];
                (
                    net,
                    mask,
                    route.via.map(|_| hop.as_ref().and_then(LinkV4::of)),
                )
            })
            .collect();
        // Longest prefix first: the default routes are last.
        self.v4_default = links.iter().find(|(_, m, _)| *m == 0).and_then(|l| l.2);
        self.v4_links = links.into_iter().filter(|(_, m, _)| *m != 0).collect();
    }

    fn hop_via(&self, port: PortId, next: IpAddr) -> Option<Hop> {
        let p = self.port(port)?;
        let dst_mac = self.neighbours.get(&next).copied()?;
        Some(Hop {
            port,
            src_mac: p.mac,
            dst_mac,
            mtu: p.mtu,
            vlan: self.vlans.get(usize::from(port.0)).and_then(|v| v.egress),
        })
    }

    /// The next hop towards `dst`: longest matching route, then its gateway's or `dst`'s own MAC.
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> Option<Hop> {
        let (route, hop) = match dst {
            IpAddr::V4(a) => {
                let a = a.to_bits();
                let &(_, _, i) = self.v4_routes.iter().find(|(n, m, _)| a & m == *n)?;
                self.routes.get(i)?
            }
            IpAddr::V6(_) => self
                .routes
                .iter()
                .find(|(r, _)| prefix_match(r.dst, r.prefix_len, dst))?,
        };
        match route.via {
            Some(_) => *hop,
            None => self.hop_via(route.port, dst),
        }
    }

    /// [`Self::next_hop`] toward an IPv4 address (host order) whose longest matching route
    /// goes through a gateway: that route's resolved hop, without a call. `None` when the
    /// route is on-link (the neighbour lookup is [`Self::next_hop`]'s) or there is no route.
    #[inline(always)]
    pub fn gateway_hop_v4(&self, dst: u32) -> Option<Option<Hop>> {
        let &(_, _, i) = self.v4_routes.iter().find(|(n, m, _)| dst & m == *n)?;
        let (route, hop) = self.routes.get(i)?;
        route.via.map(|_| *hop)
    }

    /// [`Self::gateway_hop_v4`] as a [`LinkV4`]: `Some(None)` also for a tagged hop.
    #[inline(always)]
    pub fn gateway_link_v4(&self, dst: u32) -> Option<Option<&LinkV4>> {
        match self.v4_links.iter().find(|(n, m, _)| dst & m == *n) {
            Some(route) => route.2.as_ref().map(Option::as_ref),
            None => self.v4_default.as_ref().map(Option::as_ref),
        }
    }

    /// A port's MAC address as [`mac_word`] gives it (0: all zeros, i.e. not known), or `None`
    /// for a port that does not exist.
    #[inline(always)]
    pub fn port_mac_word(&self, id: PortId) -> Option<u64> {
        self.port_macs.get(usize::from(id.0)).copied()
    }

    /// The address a given port's packets should carry as source for this family.
    pub fn port_addr(&self, port: PortId, ipv6: bool) -> Option<IpAddr> {
        let p = self.port(port)?;
        if ipv6 {
            p.v6.map(IpAddr::V6)
        } else {
            p.v4.map(IpAddr::V4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        let ports = vec![
            Port {
                name: "front".into(),
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
                v4: Some(Ipv4Addr::new(198, 18, 0, 2)),
                v6: None,
            },
            Port {
                name: "back".into(),
                mac: [2, 0, 0, 0, 1, 1],
                mtu: 1400,
                v4: Some(Ipv4Addr::new(198, 19, 0, 1)),
                v6: None,
            },
        ];
        let routes = vec![
            Route {
                dst: "0.0.0.0".parse().unwrap(),
                prefix_len: 0,
                via: Some("198.18.0.1".parse().unwrap()),
                port: PortId(0),
            },
            Route {
                dst: "198.19.0.0".parse().unwrap(),
                prefix_len: 24,
                via: None,
                port: PortId(1),
            },
        ];
        Network::new(ports, routes)
    }

    #[test]
    fn longest_prefix_then_neighbour() {
        let mut n = net();
        let backend: IpAddr = "198.19.0.10".parse().unwrap();
        let client: IpAddr = "198.18.7.7".parse().unwrap();
        assert_eq!(n.next_hop(backend), None, "unresolved neighbour");
        assert_eq!(n.next_hop(client), None, "unresolved gateway");
        n.set_neighbour(backend, [2, 0, 0, 0, 1, 10]);
        n.set_neighbour("198.18.0.1".parse().unwrap(), [2, 0, 0, 0, 0, 9]);
        let h = n.next_hop(backend).unwrap();
        assert_eq!(
            (h.port, h.dst_mac, h.src_mac, h.mtu),
            (PortId(1), [2, 0, 0, 0, 1, 10], [2, 0, 0, 0, 1, 1], 1400)
        );
        let h = n.next_hop(client).unwrap();
        assert_eq!((h.port, h.dst_mac), (PortId(0), [2, 0, 0, 0, 0, 9]));
        let g = n.generation();
        n.set_neighbour(backend, [2, 0, 0, 0, 1, 10]);
        assert_eq!(n.generation(), g, "same MAC: nothing changed");
        n.remove_neighbour("198.18.0.1".parse().unwrap());
        assert_ne!(n.generation(), g);
        assert_ne!(
            net().generation(),
            net().generation(),
            "unique across values"
        );
        assert_eq!(n.next_hop(client), None);
        assert_eq!(
            n.next_hop("2001:2::1".parse().unwrap()),
            None,
            "no v6 route"
        );
    }

    /// `gateway_link_v4` is `next_hop` through a gateway route (`None` for on-link routes and
    /// no route, `Some(None)` for an unresolved gateway), default routes included: none, one,
    /// two (the first wins), an on-link one, specific routes before and among them.
    #[test]
    fn gateway_link_v4_agrees_with_next_hop() {
        let route = |dst: &str, prefix_len: u8, via: Option<&str>, port: u16| Route {
            dst: dst.parse().unwrap(),
            prefix_len,
            via: via.map(|v| v.parse().unwrap()),
            port: PortId(port),
        };
        let sets = [
            vec![],
            vec![route("198.19.0.0", 24, None, 1)],
            vec![
                route("0.0.0.0", 0, Some("198.18.0.1"), 0),
                route("198.19.0.0", 24, None, 1),
            ],
            vec![
                route("198.19.0.0", 16, Some("198.19.0.9"), 1),
                route("0.0.0.0", 0, None, 0),
                route("0.0.0.0", 0, Some("198.18.0.1"), 0),
                route("198.19.7.0", 24, None, 1),
            ],
            vec![
                route("0.0.0.0", 0, Some("198.18.0.5"), 0),
                route("0.0.0.0", 0, Some("198.18.0.1"), 0),
                route("198.18.0.0", 15, Some("198.19.0.9"), 1),
            ],
        ];
        let ports = net().ports;
        for routes in sets {
            let mut n = Network::new(ports.clone(), routes.clone());
            let dsts = [
                "198.18.7.7",
                "198.19.0.10",
                "198.19.7.1",
                "203.0.113.1",
                "0.0.0.0",
            ];
            for resolved in [false, true] {
                if resolved {
                    for gw in ["198.18.0.1", "198.18.0.5", "198.19.0.9"] {
                        n.set_neighbour(gw.parse().unwrap(), [2, 0, 0, 0, 9, 9]);
                    }
                }
                for d in dsts {
                    let a: Ipv4Addr = d.parse().unwrap();
                    // The first of the longest matching routes (the sort is stable).
                    let best = routes
                        .iter()
                        .filter(|r| prefix_match(r.dst, r.prefix_len, IpAddr::V4(a)))
                        .fold(None::<&Route>, |best, r| match best {
                            Some(b) if b.prefix_len >= r.prefix_len => Some(b),
                            _ => Some(r),
                        });
                    let want = match best {
                        Some(r) if r.via.is_some() => {
                            Some(n.next_hop(IpAddr::V4(a)).as_ref().and_then(LinkV4::of))
                        }
                        _ => None,
                    };
                    let got = n.gateway_link_v4(a.to_bits());
                    assert_eq!(got.is_some(), want.is_some(), "{d} in {routes:?}");
                    assert_eq!(
                        got.flatten().map(|l| (l.port, l.macs)),
                        want.flatten().map(|l| (l.port, l.macs)),
                        "{d} in {routes:?}"
                    );
                }
            }
        }
    }
}
