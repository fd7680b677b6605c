//! Maglev consistent hashing as Katran builds it (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4; `katran/lib/MaglevBase.cpp`,
//! `katran/lib/MaglevHashV2.cpp`, `katran/lib/bpf/balancer_kern.c`).
//!
//! The ring has 65537 slots (Katran's `RING_SIZE`, a prime). Each backend has an endpoint hash
//! `e`, its permutation starts at `offset = murmur3(e, 42, seed 0) % M` and steps by
//! `skip = murmur3(e, 2718281828, seed 2307) % (M - 1) + 1` (Katran's `MurmurHash3_x64_64` and
//! seeds). Weights follow **Katran's `MaglevHashV2`**: in every round each backend adds its
//! weight to a credit; when the credit reaches the largest weight, the backend pays that amount
//! and claims the next free slot of its permutation. A backend's share of the ring is thus
//! `weight / sum(weights)`, unlike Katran's original `MaglevHash` (V1), which hands out `weight`
//! slots in the first round only and one per round afterwards.
//!
//! Differences from a Katran deployment, by design:
//! * Katran's endpoint hash is folly's `IPAddress::hash()`; here
//!   `e = murmur3(addr_hi, addr_lo ^ port << 32 ^ family, 0)`, so rings have Katran's shape and
//!   statistics but are not bit-identical to a running Katran.
//! * The ring is built from the backends with **current weight > 0** (Katran removes unhealthy
//!   reals by weight 0 too). With no such backend the ring is empty and every pick fails (Katran
//!   would spread all-zero weights evenly).
//!
//! Lookup as Katran's data plane: IPv4 `jhash_2words(saddr, ports, seed)`, IPv6
//! `jhash_2words(jhash(saddr, 16, 512), ports, seed)` with `ports` the two L4 ports as they lie
//! in the packet and `seed = 512 * 65537` (Katran's default `INIT_JHASH_SEED`), modulo M. The
//! backend found is used unless it is OVERLOAD or quiesced since the last rebuild; there is no
//! fallback (Katran has none either: the control plane rebuilds the ring).

use crate::hash::{jhash_2words, jhash_bytes, murmur3_x64_64};
use crate::load::usable;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};
use std::net::IpAddr;
use std::sync::Arc;

/// Katran's ring size.
pub const MAGLEV_RING_SIZE: u32 = 65_537;
/// Katran's `MAX_VIPS` (its IPv6 source hash seed).
pub const KATRAN_MAX_VIPS: u32 = 512;
/// Katran's `INIT_JHASH_SEED` = `CH_RINGS_SIZE` = `MAX_VIPS * RING_SIZE`.
pub const KATRAN_JHASH_SEED: u32 = KATRAN_MAX_VIPS * MAGLEV_RING_SIZE;

const SEED0: u32 = 0;
const SEED1: u32 = 2307;
const SEED2: u64 = 42;
const SEED3: u64 = 2_718_281_828;
const EMPTY: u32 = u32::MAX;

/// The endpoint hash xvs uses in place of folly's `IPAddress::hash()`.
pub fn endpoint_hash(addr: &IpAddr, port: u16) -> u64 {
    let (hi, lo, family) = match addr {
        IpAddr::V4(a) => (0, u64::from(u32::from_be_bytes(a.octets())), 4u64),
        IpAddr::V6(a) => {
            let v = u128::from_be_bytes(a.octets());
            ((v >> 64) as u64, v as u64, 6u64)
        }
    };
    murmur3_x64_64(hi, lo ^ (u64::from(port) << 32) ^ (family << 48), 0)
}

/// Katran's `get_packet_hash` for a flow (source address and both ports, not the destination).
pub fn flow_hash(flow: &Flow) -> u32 {
    let mut p = [0u8; 4];
    p[..2].copy_from_slice(&flow.sport.to_be_bytes());
    p[2..].copy_from_slice(&flow.dport.to_be_bytes());
    let ports = u32::from_le_bytes(p);
    match flow.src {
        IpAddr::V4(a) => jhash_2words(u32::from_le_bytes(a.octets()), ports, KATRAN_JHASH_SEED),
        IpAddr::V6(a) => {
            let s = jhash_bytes(&a.octets(), KATRAN_MAX_VIPS);
            jhash_2words(s, ports, KATRAN_JHASH_SEED)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Maglev {
    m: u32,
    slots: Vec<u32>,
    // Scratch reused across rebuilds.
    perm: Vec<(u32, u32)>, // (next position in the permutation, skip)
    credit: Vec<u64>,
    members: Vec<u32>,
    /// One bit per slot: a claimed-slot bitmap small enough for L1 while probing.
    taken: Vec<u64>,
}

impl Default for Maglev {
    fn default() -> Self {
        Self::new()
    }
}

impl Maglev {
    /// A 65537-slot ring.
    pub fn new() -> Self {
        Self::with_ring_size(MAGLEV_RING_SIZE)
    }

    /// A ring of `m` slots. `m` should be a prime (Maglev's permutations cover the ring only
    /// then); sizes below 2 are raised to 2 so that no input can divide by zero.
    pub fn with_ring_size(m: u32) -> Self {
        let m = m.max(2);
        Maglev {
            m,
            slots: vec![EMPTY; m as usize],
            perm: Vec::new(),
            credit: Vec::new(),
            members: Vec::new(),
            taken: vec![0; (m as usize).div_ceil(64)],
        }
    }

    pub fn ring_size(&self) -> usize {
        self.m as usize
    }

    /// The backend position in each slot (`None` = empty).
    pub fn slots(&self) -> impl ExactSizeIterator<Item = Option<usize>> + '_ {
        self.slots
            .iter()
            .map(|&p| (p != EMPTY).then_some(p as usize))
    }

    fn build(&mut self, backends: &[BackendView]) {
        let m = u64::from(self.m);
        self.slots.fill(EMPTY);
        self.members.clear();
        self.members.extend(
            backends
                .iter()
                .enumerate()
                .filter(|(_, b)| crate::load::weight(b) > 0)
                .map(|(i, _)| i as u32),
        );
        if self.members.is_empty() {
            return;
        }
        let wt = |i: u32| crate::load::weight(&backends[i as usize]) as u64;
        let max_weight = self.members.iter().map(|&i| wt(i)).max().unwrap_or(1);
        self.perm.clear();
        self.perm.extend(self.members.iter().map(|&i| {
            let b = &backends[i as usize];
            let e = endpoint_hash(&b.addr, b.port);
            let offset = murmur3_x64_64(e, SEED2, SEED0) % m;
            let skip = murmur3_x64_64(e, SEED3, SEED1) % (m - 1) + 1;
            // Katran computes `(offset + next * skip) % M` for next = 0, 1, ...; stepping by
            // `skip` modulo M visits the same sequence without a division per probe.
            (offset as u32, skip as u32)
        }));
        self.credit.clear();
        self.credit.resize(self.members.len(), 0);

        let m32 = self.m;
        self.taken.fill(0);
        let taken = &mut self.taken;
        let is_taken = |t: &[u64], c: u32| t[(c / 64) as usize] & (1u64 << (c % 64)) != 0;
        let mut runs = 0u64;
        loop {
            for k in 0..self.members.len() {
                self.credit[k] += wt(self.members[k]);
                if self.credit[k] < max_weight {
                    continue;
                }
                self.credit[k] -= max_weight;
                let (cur, skip) = &mut self.perm[k];
                let mut probes = 0u32;
                while is_taken(taken, *cur) {
                    *cur = step(*cur, *skip, m32);
                    probes += 1;
                    if probes >= m32 {
                        // Only with a non-prime size can a permutation miss a free slot: take
                        // the next free one instead of looping forever.
                        while is_taken(taken, *cur) {
                            *cur = step(*cur, 1, m32);
                        }
                    }
                }
                taken[(*cur / 64) as usize] |= 1u64 << (*cur % 64);
                self.slots[*cur as usize] = self.members[k];
                *cur = step(*cur, *skip, m32);
                runs += 1;
                if runs == m {
                    return;
                }
            }
        }
    }
}

/// `(cur + skip) % m` for `cur, skip < m`.
#[inline(always)]
fn step(cur: u32, skip: u32, m: u32) -> u32 {
    let next = u64::from(cur) + u64::from(skip);
    if next >= u64::from(m) {
        (next - u64::from(m)) as u32
    } else {
        next as u32
    }
}

impl Scheduler for Maglev {
    fn name(&self) -> &'static str {
        "maglev"
    }

    fn update(&mut self, backends: &[BackendView], _change: Change) {
        self.build(backends);
    }

    fn pick(
        &mut self,
        flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        _now: Time,
    ) -> Option<usize> {
        self.pick_table(flow, backends, load)
    }

    fn table(&self) -> Option<Arc<dyn TablePick>> {
        Some(Arc::new(self.clone()))
    }

    fn table_only(&self) -> bool {
        true
    }
}

impl TablePick for Maglev {
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        let slot = flow_hash(flow) % self.m;
        let pos = *self.slots.get(slot as usize)?;
        let b = backends.get(pos as usize)?;
        usable(load, b).then_some(pos as usize)
    }

    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::testutil::{be, flow, TestLoad};
    use crate::NoLoad;

    fn counts(s: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for p in s.slots() {
            c[p.unwrap()] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_fill_evenly() {
        let list: Vec<_> = (1..=7).map(|i| be(i, 1)).collect();
        let mut s = Maglev::new();
        s.update(&list, Change::Init);
        let c = counts(&s, 7);
        // Round robin over claims: every backend gets floor or ceil of M / N.
        let lo = 65_537 / 7;
        assert!(c.iter().all(|&x| x == lo || x == lo + 1), "{c:?}");
        assert_eq!(c.iter().sum::<usize>(), 65_537);
    }

    #[test]
    fn v2_weights_are_proportional() {
        let list = vec![be(1, 1), be(2, 2), be(3, 4), be(4, 0)];
        let mut s = Maglev::new();
        s.update(&list, Change::Init);
        let c = counts(&s, 4);
        assert_eq!(c[3], 0);
        // Per round of 4 credit units: 1 + 2 + 4 claims out of every 7.
        let unit = 65_537.0 / 7.0;
        for (k, w) in [(0usize, 1.0), (1, 2.0), (2, 4.0)] {
            let want: f64 = unit * w;
            assert!((c[k] as f64 - want).abs() <= 4.0, "{c:?}");
        }
    }

    #[test]
    fn pick_uses_katran_flow_hash_and_respects_overload() {
        let list: Vec<_> = (1..=3).map(|i| be(i, 1)).collect();
        let mut s = Maglev::new();
        s.update(&list, Change::Init);
        let f = flow([192, 168, 0, 1], 40_000);
        let want = s.slots().nth((flow_hash(&f) % 65_537) as usize).unwrap();
        assert_eq!(s.pick(&f, &list, &NoLoad, Time(0)), want);
        let mut load = TestLoad::default();
        load.overload(list[want.unwrap()].id.0, true);
        assert_eq!(s.pick(&f, &list, &load, Time(0)), None);
        // The destination address does not take part in the hash (one ring per service).
        let mut g = f;
        g.dst = "10.9.9.9".parse().unwrap();
        assert_eq!(flow_hash(&f), flow_hash(&g));
        g.sport += 1;
        assert_ne!(flow_hash(&f), flow_hash(&g));
    }

    #[test]
    fn all_quiesced_or_empty_fails() {
        let mut s = Maglev::new();
        s.update(&[], Change::Init);
        assert_eq!(s.pick(&flow([1, 1, 1, 1], 1), &[], &NoLoad, Time(0)), None);
        let list = vec![be(1, 0), be(2, 0)];
        s.update(&list, Change::Init);
        assert!(s.slots().all(|p| p.is_none()));
        assert_eq!(
            s.pick(&flow([1, 1, 1, 1], 1), &list, &NoLoad, Time(0)),
            None
        );
    }

    /// Katran's `MaglevHashV2::generateHashRing`, transcribed literally (division per probe),
    /// for endpoints with positive weights.
    fn katran_v2(endpoints: &[(u64, u32, u32)], m: u64) -> Vec<u32> {
        let mut result = vec![u32::MAX; m as usize];
        let max_weight = endpoints.iter().map(|e| e.2).max().unwrap();
        let perm: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                (
                    murmur3_x64_64(e.0, SEED2, SEED0) % m,
                    murmur3_x64_64(e.0, SEED3, SEED1) % (m - 1) + 1,
                )
            })
            .collect();
        let mut next = vec![0u64; endpoints.len()];
        let mut cum = vec![0u32; endpoints.len()];
        let mut runs = 0;
        loop {
            for i in 0..endpoints.len() {
                cum[i] += endpoints[i].2;
                if cum[i] >= max_weight {
                    cum[i] -= max_weight;
                    let (offset, skip) = perm[i];
                    let mut cur = (offset + next[i] * skip) % m;
                    while result[cur as usize] != u32::MAX {
                        next[i] += 1;
                        cur = (offset + next[i] * skip) % m;
                    }
                    result[cur as usize] = endpoints[i].1;
                    next[i] += 1;
                    runs += 1;
                    if runs == m {
                        return result;
                    }
                }
            }
        }
    }

    #[test]
    fn ring_equals_katran_v2_transcription() {
        for (n, m) in [(2u32, 65_537u32), (7, 65_537), (50, 65_537), (13, 251)] {
            let list: Vec<_> = (1..=n).map(|i| be(i, 1 + i % 5)).collect();
            let mut s = Maglev::with_ring_size(m);
            s.update(&list, Change::Init);
            let eps: Vec<_> = list
                .iter()
                .enumerate()
                .map(|(k, b)| (endpoint_hash(&b.addr, b.port), k as u32, b.weight))
                .collect();
            let want = katran_v2(&eps, u64::from(m));
            let got: Vec<u32> = s
                .slots()
                .map(|p| p.map_or(u32::MAX, |p| p as u32))
                .collect();
            assert_eq!(got, want, "n = {n}, m = {m}");
        }
    }

    #[test]
    fn tiny_ring_sizes_do_not_panic() {
        for m in [0, 1, 2, 3, 4, 6, 100] {
            let list: Vec<_> = (1..=5).map(|i| be(i, 1)).collect();
            let mut s = Maglev::with_ring_size(m);
            s.update(&list, Change::Init);
            let _ = s.pick(&flow([1, 1, 1, 1], 1), &list, &NoLoad, Time(0));
        }
    }
}
