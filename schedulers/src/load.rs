//! Shared arithmetic of the connection-count schedulers (`include/net/ip_vs.h`).
//!
//! `ip_vs_dest_conn_overhead(dest) = (activeconns << 8) + inactconns`, computed in C `int`
//! ([`BackendLoad::overhead`], wrapping like the kernel, which builds with
//! `-fno-strict-overflow`). Weighted comparisons are cross products, widened to signed 64 bits
//! where the kernel widens (`(__s64)loh * weight`); both factors fit in 32 bits, so the products
//! cannot overflow.

use crate::{BackendLoad, BackendView, Load};

/// The weight as the kernel's `atomic_read(&dest->weight)` sees it (an `int`).
#[inline]
pub(crate) fn weight(b: &BackendView) -> i64 {
    i64::from(b.weight as i32)
}

/// Weight > 0 and not OVERLOAD: the common test for a backend that may take a new connection.
#[inline]
pub(crate) fn usable(load: &dyn Load, b: &BackendView) -> bool {
    weight(b) > 0 && !load.overloaded(b.id)
}

/// Weighted least-connection over the whole list, the loop shared by wlc, lblc and lblcr
/// (`__ip_vs_lblc_schedule` is wlc verbatim): the first usable backend, replaced by any later
/// non-OVERLOAD backend `d` with `oh(least) * w(d) > oh(d) * w(least)` (signed 64-bit).
#[inline]
pub(crate) fn wlc_pick(backends: &[BackendView], load: &dyn Load) -> Option<usize> {
    weighted_least(backends, load, |l| i64::from(l.overhead()))
}

/// The two-stage loop of wlc / sed with a given overhead function.
#[inline]
pub(crate) fn weighted_least(
    backends: &[BackendView],
    load: &dyn Load,
    oh: impl Fn(&BackendLoad) -> i64,
) -> Option<usize> {
    let mut it = backends.iter().enumerate();
    let (mut least, mut loh, mut lw) = loop {
        let (i, b) = it.next()?;
        let l = load.backend_load(b.id);
        if !l.overloaded && weight(b) > 0 {
            break (i, oh(&l), weight(b));
        }
    };
    for (i, d) in it {
        let l = load.backend_load(d.id);
        if l.overloaded {
            continue;
        }
        let doh = oh(&l);
        let dw = weight(d);
        if loh * dw > doh * lw {
            least = i;
            loh = doh;
            lw = dw;
        }
    }
    Some(least)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A table-driven [`Load`] and backend builders for the unit tests.
    use crate::{BackendId, BackendView, Flow, Load};
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    #[derive(Debug, Default, Clone)]
    pub struct TestLoad {
        pub counts: HashMap<BackendId, (u32, u32, bool)>,
    }

    impl TestLoad {
        pub fn set(&mut self, id: u32, active: u32, inactive: u32) -> &mut Self {
            let e = self.counts.entry(BackendId(id)).or_default();
            e.0 = active;
            e.1 = inactive;
            self
        }
        pub fn overload(&mut self, id: u32, on: bool) -> &mut Self {
            self.counts.entry(BackendId(id)).or_default().2 = on;
            self
        }
    }

    impl Load for TestLoad {
        fn active(&self, id: BackendId) -> u32 {
            self.counts.get(&id).map_or(0, |c| c.0)
        }
        fn inactive(&self, id: BackendId) -> u32 {
            self.counts.get(&id).map_or(0, |c| c.1)
        }
        fn overloaded(&self, id: BackendId) -> bool {
            self.counts.get(&id).is_some_and(|c| c.2)
        }
    }

    /// Backend `id` at 10.0.0.`id`:80 with the given weight (last_weight the same, or 1 for 0).
    pub fn be(id: u32, weight: u32) -> BackendView {
        BackendView {
            id: BackendId(id),
            addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + id)),
            port: 80,
            weight,
            last_weight: if weight == 0 { 1 } else { weight },
        }
    }

    pub fn flow(src: [u8; 4], sport: u16) -> Flow {
        Flow {
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::from(src)),
            sport,
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
            dport: 80,
        }
    }
}
