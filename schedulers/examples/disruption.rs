//! Balance and disruption figures for the table schedulers (mh and maglev).
//!
//! `cargo run --release -p xvs-schedulers --example disruption`
//!
//! For N equal-weight backends: entries per backend (min / max against the ideal M / N), and
//! the share of table slots that change owner when one backend is removed or one is added,
//! against the ideal 1 / N (resp. 1 / (N + 1)). A slot is a hash bucket of client flows, so the
//! moved share of slots is the moved share of flows. Also the time of one full rebuild.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use xvs_schedulers::{BackendId, BackendView, Change, Maglev, MaglevHashing, Scheduler};

fn backend(id: u32) -> BackendView {
    BackendView {
        id: BackendId(id),
        addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + id)),
        port: 80,
        weight: 1,
        last_weight: 1,
    }
}

trait Table: Scheduler {
    fn ids(&self, list: &[BackendView]) -> Vec<u32>;
}

impl Table for MaglevHashing {
    fn ids(&self, list: &[BackendView]) -> Vec<u32> {
        self.slots()
            .map(|p| p.map_or(u32::MAX, |p| list[p].id.0))
            .collect()
    }
}

impl Table for Maglev {
    fn ids(&self, list: &[BackendView]) -> Vec<u32> {
        self.slots()
            .map(|p| p.map_or(u32::MAX, |p| list[p].id.0))
            .collect()
    }
}

fn moved(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

fn report(label: &str, mut make: impl FnMut() -> Box<dyn TableBox>, n: u32) {
    let list: Vec<_> = (1..=n).map(backend).collect();
    let mut t = make();
    let start = Instant::now();
    t.update(&list, Change::Init);
    let build = start.elapsed();
    let base = t.ids(&list);
    let m = base.len();
    let mut per = vec![0usize; n as usize + 1];
    for &id in &base {
        per[id as usize] += 1;
    }
    let (lo, hi) = per[1..]
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));

    // Remove the middle backend.
    let victim = (n / 2) as usize;
    let mut fewer = list.clone();
    fewer.remove(victim);
    t.update(&fewer, Change::Remove(victim));
    let removed = moved(&base, &t.ids(&fewer));

    // Add a new one at the head.
    let mut more = list.clone();
    more.insert(0, backend(n + 1));
    t.update(&list, Change::Init);
    t.update(&more, Change::Add(0));
    let added = moved(&base, &t.ids(&more));

    println!(
        "{label:<14} N={n:<5} M={m:<6} entries/backend min {lo:>5} max {hi:>5} (ideal {:>8.1}) \
         remove 1: moved {:>6.3}% (ideal {:>6.3}%)  add 1: moved {:>6.3}% (ideal {:>6.3}%)  \
         rebuild {:>8.1?}",
        m as f64 / f64::from(n),
        removed * 100.0,
        100.0 / f64::from(n),
        added * 100.0,
        100.0 / f64::from(n + 1),
        build,
    );
}

trait TableBox: Table {}
impl<T: Table> TableBox for T {}

fn main() {
    for n in [3u32, 10, 100, 1000] {
        report(
            "mh M=4093",
            || Box::new(MaglevHashing::new(false, false)),
            n,
        );
        report(
            "mh M=65521",
            || Box::new(MaglevHashing::with_table_index(16, false, false).unwrap()),
            n,
        );
        report("maglev", || Box::new(Maglev::new()), n);
    }
}
