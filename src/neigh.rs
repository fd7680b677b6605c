//! Next-hop MACs for the workers, from the kernel's neighbour table (the director's namespace
//! keeps resolving ARP/ND itself: the XDP program passes ARP and ND to the kernel).
//!
//! A refresher thread dumps the table over NETLINK_ROUTE (`io::netlink`) every
//! `neighbour_refresh_ms`, keeps the usable entries (REACHABLE, STALE, DELAY, PROBE, PERMANENT)
//! on the director's ports, and sends each worker only the changes ([`NeighbourUpdate`]) through a
//! channel the worker drains once per loop — no lock on the packet path. Watched next hops
//! (backends, gateways) without a usable entry get a resolution nudge: an ICMP echo request from
//! a raw socket, which makes the kernel send an ARP request / neighbour solicitation (the echo
//! reply is passed to the kernel by the XDP program, it never reaches the pipeline). Until an
//! entry appears, the pipeline counts such frames as `DropReason::NoNeighbour`.
//!
//! Kept fresh: the kernel itself never sends to the backends (xvs does, from user space), so
//! their entries age to STALE and would stay there, unverified, even if a backend's MAC changed.
//! Watched next hops in STALE are nudged every [`REVALIDATE`], which makes the kernel probe them
//! (STALE → DELAY → PROBE → REACHABLE, or FAILED and then removed from the workers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xvs_forwarding::PortId;

use crate::io::netlink::{dump_neighbours, nud, NeighEntry};
use crate::io::sys::InterfaceInfo;

/// A change in the neighbour set, as sent to the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighbourUpdate {
    Set {
        ip: IpAddr,
        port: PortId,
        mac: [u8; 6],
    },
    Gone {
        ip: IpAddr,
    },
}

/// How often watched next hops in STALE state are re-validated.
pub const REVALIDATE: Duration = Duration::from_secs(30);

/// Diffs successive neighbour dumps and nudges resolution of watched next hops.
#[derive(Debug)]
pub struct NeighbourRefresher {
    /// ifindex → port.
    ports: Vec<(u32, PortId)>,
    known: HashMap<IpAddr, (PortId, [u8; 6])>,
    watch: Vec<IpAddr>,
    /// Watched next hops seen in STALE state in the last dump.
    stale: Vec<IpAddr>,
    last_revalidate: Instant,
    /// Dump failures so far (logged once per streak).
    failing: bool,
}

impl NeighbourRefresher {
    pub fn new(ports: &[InterfaceInfo], watch: Vec<IpAddr>) -> Self {
        NeighbourRefresher {
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, p)| (p.ifindex, PortId(i as u16)))
                .collect(),
            known: HashMap::new(),
            watch,
            stale: Vec::new(),
            last_revalidate: Instant::now(),
            failing: false,
        }
    }

    /// Compute the updates that turn the previous set into `entries`.
    pub fn diff(&mut self, entries: &[NeighEntry]) -> Vec<NeighbourUpdate> {
        let mut now: HashMap<IpAddr, (PortId, [u8; 6])> = HashMap::new();
        self.stale.clear();
        for e in entries {
            let Some(&(_, port)) = self.ports.iter().find(|(i, _)| *i == e.ifindex) else {
                continue;
            };
            if e.state & nud::STALE != 0 && self.watch.contains(&e.ip) {
                self.stale.push(e.ip);
            }
            if let (true, Some(mac)) = (e.usable(), e.mac) {
                now.insert(e.ip, (port, mac));
            }
        }
        let mut out = Vec::new();
        for (ip, v) in &now {
            if self.known.get(ip) != Some(v) {
                out.push(NeighbourUpdate::Set {
                    ip: *ip,
                    port: v.0,
                    mac: v.1,
                });
            }
        }
        for ip in self.known.keys() {
            if !now.contains_key(ip) {
                out.push(NeighbourUpdate::Gone { ip: *ip });
            }
        }
        self.known = now;
        out
    }

    /// Dump the table, return the changes, and nudge watched next hops that are unresolved.
    pub fn refresh(&mut self) -> Vec<NeighbourUpdate> {
        let updates = match dump_neighbours() {
            Ok(entries) => {
                self.failing = false;
                self.diff(&entries)
            }
            Err(e) => {
                if !self.failing {
                    eprintln!(
                        "{}xvs: neighbour dump failed (keeping the last table): {e}",
                        crate::systemd::prefix(tracing::Level::WARN)
                    );
                }
                self.failing = true;
                Vec::new()
            }
        };
        for ip in self.unresolved() {
            nudge(ip);
        }
        if self.last_revalidate.elapsed() >= REVALIDATE {
            self.last_revalidate = Instant::now();
            for &ip in &self.stale {
                nudge(ip);
            }
        }
        updates
    }

    /// Watched next hops without a usable entry.
    pub fn unresolved(&self) -> Vec<IpAddr> {
        self.watch
            .iter()
            .filter(|ip| !self.known.contains_key(ip))
            .copied()
            .collect()
    }

    /// Replace the next hops to keep resolved.
    pub fn set_watch(&mut self, watch: Vec<IpAddr>) {
        self.watch = watch;
    }

    /// Refresh every `every` until `stop`, handing each change to `send` (which forwards it to
    /// every worker). `watch` is re-read every period (the control plane may change it).
    pub fn run(
        &mut self,
        every: Duration,
        stop: &AtomicBool,
        watch: &Mutex<Vec<IpAddr>>,
        mut send: impl FnMut(NeighbourUpdate),
    ) {
        let mut next = Instant::now() + every;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_millis(50)));
                continue;
            }
            next = now + every;
            if let Ok(w) = watch.lock() {
                if *w != self.watch {
                    self.watch = w.clone();
                }
            }
            for u in self.refresh() {
                send(u);
            }
        }
    }
}

/// Make the kernel resolve (or re-validate) `ip`: an echo request needs its MAC.
fn nudge(ip: IpAddr) {
    let _ = crate::io::sys::icmp_echo(ip, std::process::id() as u16);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ifindex: u32) -> InterfaceInfo {
        InterfaceInfo {
            name: format!("if{ifindex}"),
            ifindex,
            mac: [0; 6],
            mtu: 1500,
            queues: None,
        }
    }

    fn e(ifindex: u32, ip: &str, mac: u8, state: u16) -> NeighEntry {
        NeighEntry {
            ifindex,
            ip: ip.parse().unwrap(),
            mac: Some([2, 0, 0, 0, 0, mac]),
            state,
        }
    }

    #[test]
    fn diff_sends_only_changes() {
        let a: IpAddr = "198.18.3.11".parse().unwrap();
        let b: IpAddr = "198.18.3.12".parse().unwrap();
        let mut r = NeighbourRefresher::new(&[port(7), port(9)], vec![a, b]);
        let u = r.diff(&[
            e(9, "198.18.3.11", 1, nud::REACHABLE),
            e(5, "198.18.3.12", 2, nud::REACHABLE), // not one of our ports
            e(9, "198.18.3.13", 3, nud::FAILED),
        ]);
        assert_eq!(
            u,
            vec![NeighbourUpdate::Set {
                ip: a,
                port: PortId(1),
                mac: [2, 0, 0, 0, 0, 1]
            }]
        );
        assert_eq!(r.unresolved(), vec![b]);
        assert!(r.stale.is_empty());
        // Same again: nothing. STALE is still usable.
        assert!(r.diff(&[e(9, "198.18.3.11", 1, nud::STALE)]).is_empty());
        assert_eq!(r.stale, vec![a]);
        // MAC changes, b appears on port 0.
        let mut u = r.diff(&[
            e(9, "198.18.3.11", 4, nud::REACHABLE),
            e(7, "198.18.3.12", 2, nud::PERMANENT),
        ]);
        u.sort_by_key(|x| format!("{x:?}"));
        assert_eq!(u.len(), 2);
        assert!(r.unresolved().is_empty());
        // a disappears.
        let u = r.diff(&[e(7, "198.18.3.12", 2, nud::PERMANENT)]);
        assert_eq!(u, vec![NeighbourUpdate::Gone { ip: a }]);
    }
}
