//! Choosing a backend for the stateless methods (DNS answers, HTTP redirects), shared by
//! `crate::dns` and `crate::redirect` so both decide the same way from the same state.
//!
//! The backends are those of one configured `[[service]]` as the director runs it: the
//! effective service list (`Director::effective`), where a backend that failed its health check
//! is absent or at weight 0 and the weights are the ones the L4 schedulers use, so whatever
//! changes those weights (checks, `xvs ctl -e`, adaptive weights) changes these picks too.
//! A [`Pool`] keeps one scheduler of the xvs suite (`xvs_schedulers`, the kernel's algorithms)
//! over such a list and re-initialises it only when the list changed, as IPVS's
//! `update_service` does. Only the schedulers that need no connection counts are accepted
//! ([`STATELESS_SCHEDULERS`]): a DNS answer or a redirect leaves no connection to count.

use std::net::IpAddr;

use xvs_forwarding::service::{Service, ServiceKey};
use xvs_schedulers::{
    new_scheduler, BackendView, Change, Flow, NoLoad, SchedFlags, Scheduler, Time,
};

/// The schedulers the stateless methods may use: those that pick without connection counts.
pub const STATELESS_SCHEDULERS: &[&str] = &["rr", "wrr", "sh", "mh"];

/// The scheduler was not one of [`STATELESS_SCHEDULERS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scheduler {0:?} cannot choose without connection counts (use one of rr, wrr, sh, mh)")]
pub struct NotStateless(pub String);

/// Backends with their own scheduler.
#[derive(Debug)]
pub struct Pool {
    /// The backends with their weights (weight 0 = never picked).
    view: Vec<BackendView>,
    sched: Box<dyn Scheduler>,
}

impl Pool {
    /// An empty pool picking with `scheduler` (one of [`STATELESS_SCHEDULERS`]).
    pub fn new(scheduler: &str) -> Result<Pool, NotStateless> {
        if !STATELESS_SCHEDULERS.contains(&scheduler) {
            return Err(NotStateless(scheduler.to_string()));
        }
        let mut sched = new_scheduler(scheduler, &SchedFlags::default())
            .map_err(|_| NotStateless(scheduler.to_string()))?;
        sched.update(&[], Change::Init);
        Ok(Pool {
            view: Vec::new(),
            sched,
        })
    }

    /// Sets the backends; the scheduler is re-initialised only when they changed.
    pub fn set(&mut self, view: Vec<BackendView>) {
        if view != self.view {
            self.view = view;
            xvs_schedulers::init_by_adds(self.sched.as_mut(), &self.view);
        }
    }

    /// The backends, in the order given to [`Pool::set`].
    pub fn view(&self) -> &[BackendView] {
        &self.view
    }

    /// Whether a backend has a weight above 0.
    pub fn live(&self) -> bool {
        self.view.iter().any(|b| b.weight > 0)
    }

    /// The scheduler's pick for `flow`: an index into [`Pool::view`].
    pub fn pick(&mut self, flow: &Flow, now: Time) -> Option<usize> {
        self.sched.pick(flow, &self.view, &NoLoad, now)
    }
}

/// The backends of service `key` in `services` that may be picked (weight > 0), as
/// (address, port, weight) in configuration order, a port of 0 (keep the destination port)
/// given as the service's port; none when the service is not there.
pub fn available_backends(services: &[Service], key: &ServiceKey) -> Vec<(IpAddr, u16, u32)> {
    services
        .iter()
        .find(|s| s.key == *key)
        .map(|s| {
            s.backends
                .iter()
                .filter(|b| b.weight > 0)
                .map(|b| {
                    let port = if b.port == 0 { key.port() } else { b.port };
                    (b.addr, port, b.weight)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use xvs_schedulers::BackendId;

    fn view(weights: &[u32]) -> Vec<BackendView> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| BackendView {
                id: BackendId(i as u32),
                addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, i as u8 + 1)),
                port: 80,
                weight: w,
                last_weight: w,
            })
            .collect()
    }

    fn flow() -> Flow {
        Flow {
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)),
            sport: 0,
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            dport: 80,
        }
    }

    #[test]
    fn refuses_connection_counting_schedulers() {
        assert_eq!(
            Pool::new("wlc").unwrap_err(),
            NotStateless("wlc".to_string())
        );
        for s in STATELESS_SCHEDULERS {
            assert!(Pool::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn wrr_follows_weights_and_skips_weight_zero() {
        let mut p = Pool::new("wrr").unwrap();
        p.set(view(&[3, 1, 0]));
        let mut n = [0usize; 3];
        for _ in 0..40 {
            n[p.pick(&flow(), Time(0)).unwrap()] += 1;
        }
        assert_eq!(n, [30, 10, 0]);
        p.set(view(&[0, 0]));
        assert!(!p.live());
        assert_eq!(p.pick(&flow(), Time(0)), None);
    }

    #[test]
    fn unchanged_set_keeps_the_cursor() {
        let mut p = Pool::new("rr").unwrap();
        p.set(view(&[1, 1]));
        let a = p.pick(&flow(), Time(0));
        p.set(view(&[1, 1]));
        let b = p.pick(&flow(), Time(0));
        assert_ne!(a, b);
    }
}
