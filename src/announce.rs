//! VIP announcement for a BGP speaker on the director (`[announce]`): while `xvs run` lives it
//! owns a TUN device (`io::tun`) and keeps on it, as a host address (/32, /128), every VIP that
//! has at least one available backend (a backend of one of its services with weight > 0 after
//! health checks). The speaker announces the prefixes of that device's addresses — BIRD:
//! `protocol direct { interface "xvs-vips"; }` exported into BGP, see examples/bird/ — so
//!
//! * the last backend of a VIP failing its check (or set to weight 0, or removed) removes the
//!   address within one update period ([`PERIOD`]), and the speaker withdraws it;
//! * `xvs run` stopping, crashing or being killed closes the device's descriptor, the kernel
//!   deletes the device with its addresses, and the speaker withdraws them all, with no
//!   cooperation from the dead process;
//! * the whole node dying takes the speaker with it: its BGP session drops (TCP reset, or BFD /
//!   hold timer when the node goes silent) and the router withdraws its routes.
//!
//! With a backup sync daemon running, nothing is announced until its bulk resync has been
//! answered or [`WARM_UP`] has passed since the device was created (nobody may be there to
//! answer, e.g. the first director of a cluster): a director that (re)starts then holds its
//! peers' connections before the router sends it their flows.
//!
//! This is how anycast fleets commonly couple health to BGP (a health checker adding and removing
//! service addresses on a dummy or loopback interface that the speaker's direct protocol
//! exports, e.g. `anycast-healthchecker`, ExaBGP's healthcheck); the TUN device adds the
//! withdrawal on process death, which a dummy interface would not give.
//! xvs itself speaks no BGP.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use xvs_forwarding::service::{Service, ServiceKey};

use crate::io::tun::TunDevice;
use crate::io::IoError;

/// How often `xvs run` re-computes the announced set.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Longest wait for the backup daemon's bulk resync before announcing anyway: the backup asks
/// `BULK_TRIES` times one second apart, and the last ask gets a second to be answered.
pub const WARM_UP: Duration = Duration::from_secs(crate::sync::daemon::BULK_TRIES as u64);

/// The VIPs of `services` (address services; fwmark services have none) that have at least one
/// backend with weight > 0. `services` is the effective state: health-failed backends are
/// absent or at weight 0.
pub fn available_vips(services: &[Service]) -> BTreeSet<IpAddr> {
    services
        .iter()
        .filter_map(|s| match s.key {
            ServiceKey::Addr { addr, .. } if s.backends.iter().any(|b| b.weight > 0) => Some(addr),
            _ => None,
        })
        .collect()
}

/// The announce device and the addresses put on it.
#[derive(Debug)]
pub struct Announcer {
    dev: TunDevice,
    announced: BTreeSet<IpAddr>,
    /// An add or remove failed since the last full success (logged once per streak).
    failing: bool,
    started: Instant,
    /// Announcing has begun (the warm-up is over).
    warm: bool,
}

impl Announcer {
    /// Create the device (no address on it yet).
    pub fn start(interface: &str) -> Result<Announcer, IoError> {
        let dev = TunDevice::create(interface)?;
        tracing::info!(
            "announce: device {} (ifindex {}) up",
            dev.name(),
            dev.ifindex()
        );
        Ok(Announcer {
            dev,
            announced: BTreeSet::new(),
            failing: false,
            started: Instant::now(),
            warm: false,
        })
    }

    /// Continue a predecessor's announcer (`xvs run --takeover`) on its device, which holds
    /// `announced` (so nothing is withdrawn in between); `warm`: whether it had begun
    /// announcing.
    pub fn adopt(dev: TunDevice, announced: Vec<IpAddr>, warm: bool) -> Announcer {
        tracing::info!(
            "announce: device {} (ifindex {}) taken over with {} address(es)",
            dev.name(),
            dev.ifindex(),
            announced.len()
        );
        Announcer {
            dev,
            announced: announced.into_iter().collect(),
            failing: false,
            started: Instant::now(),
            warm,
        }
    }

    /// What a successor needs to continue: the device's descriptor and name, the addresses on
    /// it, whether announcing had begun.
    pub fn handover(&self) -> (std::os::fd::RawFd, String, Vec<IpAddr>, bool) {
        (
            self.dev.raw_fd(),
            self.dev.name().to_string(),
            self.announced.iter().copied().collect(),
            self.warm,
        )
    }

    /// The addresses on the device.
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }

    /// One line for `xvs ctl status`: `announce DEVICE: 198.18.10.1 2001:2:0:10::1`, `announce
    /// DEVICE: nothing`, or `announce DEVICE: waiting for the bulk resync` during the warm-up.
    pub fn describe(&self) -> String {
        let what = if !self.warm {
            "waiting for the bulk resync".to_string()
        } else if self.announced.is_empty() {
            "nothing".to_string()
        } else {
            self.announced
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!("announce {}: {what}", self.dev.name())
    }

    /// [`Announcer::update`] once warm: `bulk_done` is `None` without a backup daemon (warm at
    /// once), else whether its bulk resync was answered; after [`WARM_UP`] it is warm anyway.
    pub fn update_when_warm(&mut self, want: &BTreeSet<IpAddr>, bulk_done: Option<bool>) {
        if !self.warm {
            let waited = self.started.elapsed();
            match bulk_done {
                None | Some(true) => {}
                Some(false) if waited >= WARM_UP => {
                    tracing::warn!(
                        "announce: no bulk resync answer after {:?}; announcing without it",
                        waited
                    );
                }
                Some(false) => return,
            }
            self.warm = true;
            if bulk_done.is_some() {
                tracing::info!("announce: warm after {:?}", waited);
            }
        }
        self.update(want);
    }

    /// Make the device hold exactly `want`: remove first, then add; each change logged. A
    /// failed change is retried at the next update.
    pub fn update(&mut self, want: &BTreeSet<IpAddr>) {
        let mut errors = Vec::new();
        let gone: Vec<IpAddr> = self.announced.difference(want).copied().collect();
        for ip in gone {
            match self.dev.remove(ip) {
                Ok(()) => {
                    self.announced.remove(&ip);
                    tracing::info!("announce: {ip} withdrawn (no available backend)");
                }
                Err(e) => errors.push(e),
            }
        }
        let new: Vec<IpAddr> = want.difference(&self.announced).copied().collect();
        for ip in new {
            match self.dev.add(ip) {
                Ok(()) => {
                    self.announced.insert(ip);
                    tracing::info!("announce: {ip} announced");
                }
                Err(e) => errors.push(e),
            }
        }
        match errors.first() {
            Some(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    "announce: {} change(s) on {} failed, retrying: {e}",
                    errors.len(),
                    self.dev.name()
                );
            }
            Some(_) => {}
            None => self.failing = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_forwarding::service::Backend;
    use xvs_forwarding::Method;

    fn svc(key: ServiceKey, weights: &[u32]) -> Service {
        Service {
            key,
            scheduler: "mh".into(),
            sched_flags: Default::default(),
            persistence: None,
            one_packet: false,
            synproxy: false,
            conn_rate: 0,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Backend {
                    addr: format!("198.18.3.{}", 11 + i).parse().unwrap(),
                    port: 80,
                    weight: w,
                    method: Method::Dr,
                    u_threshold: 0,
                    l_threshold: 0,
                    conn_rate: 0,
                })
                .collect(),
        }
    }

    fn addr(a: &str, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            proto: 6,
            addr: a.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn a_vip_is_available_while_one_of_its_services_has_a_weighted_backend() {
        let services = vec![
            svc(addr("198.18.10.1", 80), &[0, 1]),
            svc(addr("198.18.10.2", 80), &[0, 0]),
            svc(addr("198.18.10.3", 80), &[]),
            svc(addr("198.18.10.3", 443), &[2]),
            svc(addr("2001:2:0:10::1", 80), &[1]),
            svc(addr("198.18.10.4", 80), &[0]),
            svc(
                ServiceKey::Fwmark {
                    mark: 1,
                    ipv6: false,
                },
                &[1],
            ),
        ];
        let got: Vec<String> = available_vips(&services)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["198.18.10.1", "198.18.10.3", "2001:2:0:10::1"]);
        assert!(available_vips(&[]).is_empty());
    }
}
