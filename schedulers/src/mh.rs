//! Maglev hashing as IPVS does it (`net/netfilter/ipvs/ip_vs_mh.c`; Eisenbud et al., "Maglev: A
//! Fast and Reliable Software Network Load Balancer", NSDI 2016, §3.4).
//!
//! Table size `M` = `MH_PRIMES[index - 8]` for the kernel's `CONFIG_IP_VS_MH_TAB_INDEX` (8..=17,
//! default 12: M = 4093). Every backend gets `offset = h1 % M` and `skip = h2 % (M - 1) + 1`
//! with `h = hsiphash(off + port + fold(addr))` under two fixed keys, and a number of `turns`
//! from its **last non-zero weight**: `(last_weight / gcd) >> rshift`, at least 1 when
//! `last_weight != 0`, with `rshift = max(fls(max / gcd) - index / 2, 0)`. Population walks the
//! list round after round; in each round every backend with `turns >= 1` claims `turns` free
//! slots in a row from its permutation `offset, offset + skip, ...`. Rebuilt in full on every
//! add, delete and edit; because it uses `last_weight`, a quiesced backend keeps its slots.
//!
//! Lookup: `ih = hsiphash(port + fold(saddr), key1) % M` (`port` = L4 source port with `mh-port`,
//! else 0). A backend with weight <= 0 or OVERLOAD is unusable; without `mh-fallback` the pick
//! then fails; with it, slots `hsiphash(off + port + fold(saddr)) % M` for
//! `off = (o + ih) % M, o = 0..M-1` are tried, stopping at the first usable backend.

use crate::hash::{fls, fold, gcd, hsiphash_u32, SipKey};
use crate::load::usable;
use crate::sh::l4_source_port;
use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};
use std::net::IpAddr;
use std::sync::Arc;

/// `primes[]` of `ip_vs_mh.c`, indexed by `CONFIG_IP_VS_MH_TAB_INDEX - 8`.
pub const MH_PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];
/// The kernel's default `CONFIG_IP_VS_MH_TAB_INDEX`.
pub const MH_DEFAULT_TAB_INDEX: u8 = 12;

/// `generate_hash_secret`: both words of each key are the same constant.
pub const MH_HASH1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
pub const MH_HASH2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct MaglevHashing {
    m: u32,
    bits: u32,
    slots: Vec<u32>,
    fallback: bool,
    port: bool,
    // Scratch reused across rebuilds (cold path, kept to avoid re-allocating).
    setup: Vec<DestSetup>,
    taken: Vec<bool>,
}

#[derive(Debug, Clone, Copy, Default)]
struct DestSetup {
    skip: u32,
    perm: u32,
    turns: u64,
}

/// `ip_vs_mh_hashkey`: hsiphash of `offset + port + fold(addr)` (wrapping u32, 4 LE bytes).
#[inline]
pub fn mh_hashkey(addr: &IpAddr, port: u16, key: SipKey, offset: u32) -> u32 {
    let v = offset
        .wrapping_add(u32::from(port))
        .wrapping_add(fold(addr));
    hsiphash_u32(v, key)
}

impl MaglevHashing {
    /// mh with the default table (M = 4093). `fallback` = `mh-fallback` (SCHED1), `port` =
    /// `mh-port` (SCHED2).
    pub fn new(fallback: bool, port: bool) -> Self {
        Self::with_table_index(MH_DEFAULT_TAB_INDEX, fallback, port)
            .unwrap_or_else(|| unreachable!("the default index is valid"))
    }

    /// mh with the table of `CONFIG_IP_VS_MH_TAB_INDEX = index` (8..=17), or `None` if out of
    /// range.
    pub fn with_table_index(index: u8, fallback: bool, port: bool) -> Option<Self> {
        let m = *MH_PRIMES.get(usize::from(index).checked_sub(8)?)?;
        Some(MaglevHashing {
            m,
            bits: u32::from(index) / 2,
            slots: vec![EMPTY; m as usize],
            fallback,
            port,
            setup: Vec::new(),
            taken: vec![false; m as usize],
        })
    }

    /// The table size M.
    pub fn table_size(&self) -> usize {
        self.m as usize
    }

    /// The backend position in each slot (`None` = empty).
    pub fn slots(&self) -> impl ExactSizeIterator<Item = Option<usize>> + '_ {
        self.slots
            .iter()
            .map(|&p| (p != EMPTY).then_some(p as usize))
    }

    fn populate(&mut self, backends: &[BackendView]) {
        let m = self.m;
        self.slots.fill(EMPTY);
        if backends.len() > m as usize {
            return;
        }
        // `last_weight` is a C `int`: a value above i32::MAX would be negative there and take no
        // turns, exactly like 0.
        let lw = |b: &BackendView| (b.last_weight as i32).max(0) as u64;
        let g = backends.iter().map(lw).filter(|&w| w > 0).fold(0u64, gcd);
        if g == 0 {
            return;
        }
        let max = backends.iter().map(lw).max().unwrap_or(0);
        let rshift = fls(max / g).saturating_sub(self.bits);

        self.setup.clear();
        self.setup.extend(backends.iter().map(|b| {
            let offset = mh_hashkey(&b.addr, b.port, MH_HASH1, 0) % m;
            let skip = mh_hashkey(&b.addr, b.port, MH_HASH2, 0) % (m - 1) + 1;
            let w = lw(b);
            let t = (w / g) >> rshift;
            DestSetup {
                skip,
                perm: offset,
                turns: if t > 0 { t } else { u64::from(w != 0) },
            }
        }));

        self.taken.fill(false);
        let mut n = 0u32;
        let mut dt_count = 0u64;
        'rounds: loop {
            let mut i = 0;
            while i < self.setup.len() {
                let ds = &mut self.setup[i];
                if ds.turns < 1 {
                    i += 1;
                    continue;
                }
                let mut c = ds.perm;
                while self.taken[c as usize] {
                    ds.perm += ds.skip;
                    if ds.perm >= m {
                        ds.perm -= m;
                    }
                    c = ds.perm;
                }
                self.taken[c as usize] = true;
                self.slots[c as usize] = i as u32;
                n += 1;
                if n == m {
                    break 'rounds;
                }
                dt_count += 1;
                if dt_count >= ds.turns {
                    dt_count = 0;
                    i += 1;
                }
            }
        }
    }

    #[inline]
    fn slot_state(&self, slot: u32, backends: &[BackendView], load: &dyn Load) -> Slot {
        match self.slots.get(slot as usize) {
            None | Some(&EMPTY) => Slot::Empty,
            Some(&p) => match backends.get(p as usize) {
                Some(b) if usable(load, b) => Slot::Usable(p as usize),
                _ => Slot::Unusable,
            },
        }
    }
}

enum Slot {
    Empty,
    Unusable,
    Usable(usize),
}

impl Scheduler for MaglevHashing {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn update(&mut self, backends: &[BackendView], _change: Change) {
        self.populate(backends);
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

impl TablePick for MaglevHashing {
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        let port = if self.port { l4_source_port(flow) } else { 0 };
        let ih = mh_hashkey(&flow.src, port, MH_HASH1, 0) % self.m;
        match self.slot_state(ih, backends, load) {
            Slot::Usable(p) => return Some(p),
            Slot::Empty => return None,
            Slot::Unusable if !self.fallback => return None,
            Slot::Unusable => {}
        }
        for o in 0..self.m {
            let roffset = (o + ih) % self.m;
            let h = mh_hashkey(&flow.src, port, MH_HASH1, roffset) % self.m;
            match self.slot_state(h, backends, load) {
                Slot::Usable(p) => return Some(p),
                Slot::Empty => return None,
                Slot::Unusable => {}
            }
        }
        None
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

    #[test]
    fn offsets_and_skips_from_ipvs_md() {
        let b = be(1, 1); // 10.0.0.1:80
        assert_eq!(mh_hashkey(&b.addr, b.port, MH_HASH1, 0), 0x439c_0cbe);
        assert_eq!(mh_hashkey(&b.addr, b.port, MH_HASH2, 0), 0x97b3_dc47);
        assert_eq!(0x439c_0cbeu32 % 4093, 3167);
        assert_eq!(0x97b3_dc47u32 % 4092 + 1, 700);
        let f = flow([192, 168, 0, 1], 0);
        assert_eq!(mh_hashkey(&f.src, 0, MH_HASH1, 0) % 4093, 1278);
    }

    fn three() -> Vec<BackendView> {
        // Added 10.0.0.1, .2, .3 -> list order .3, .2, .1.
        vec![be(3, 1), be(2, 1), be(1, 1)]
    }

    #[test]
    fn population_three_equal_backends() {
        let list = three();
        let mut s = MaglevHashing::new(false, false);
        s.update(&list, Change::Init);
        let ids: Vec<u32> = s.slots().map(|p| list[p.unwrap()].id.0).collect();
        assert_eq!(&ids[..5], &[1, 2, 2, 3, 3]);
        let count = |id| ids.iter().filter(|&&x| x == id).count();
        assert_eq!((count(1), count(2), count(3)), (1364, 1364, 1365));
        let f = flow([192, 168, 0, 1], 0);
        let p = s.pick(&f, &list, &NoLoad, Time(0)).unwrap();
        assert_eq!(list[p].id.0, 2);
    }

    #[test]
    fn quiesced_keeps_slots_fallback_moves_only_its_flows() {
        let mut list = three();
        let mut plain = MaglevHashing::new(false, false);
        let mut fb = MaglevHashing::new(true, false);
        plain.update(&list, Change::Init);
        fb.update(&list, Change::Init);
        let before: Vec<_> = plain.slots().collect();
        // Quiesce 10.0.0.2 (position 1): last_weight stays 1, the table does not change.
        list[1].weight = 0;
        plain.update(&list, Change::Edit(1));
        fb.update(&list, Change::Edit(1));
        assert_eq!(before, plain.slots().collect::<Vec<_>>());
        let f = flow([192, 168, 0, 1], 0);
        assert_eq!(plain.pick(&f, &list, &NoLoad, Time(0)), None);
        let p = fb.pick(&f, &list, &NoLoad, Time(0)).unwrap();
        assert_ne!(list[p].id.0, 2);
        // OVERLOAD is unusable too.
        list[1].weight = 1;
        let mut load = TestLoad::default();
        load.overload(2, true);
        assert_eq!(plain.pick(&f, &list, &load, Time(0)), None);
        assert!(fb.pick(&f, &list, &load, Time(0)).is_some());
    }

    #[test]
    fn weights_give_turns_and_table_index_selects_size() {
        let list = vec![be(1, 3), be(2, 1)];
        let mut s = MaglevHashing::new(false, false);
        s.update(&list, Change::Init);
        let c0 = s.slots().filter(|p| *p == Some(0)).count();
        // 3 turns against 1 per round: 1023 full rounds of 4 slots, and the one slot left over
        // goes to the first backend of the next round.
        assert_eq!(c0, 3 * 1023 + 1);

        assert!(MaglevHashing::with_table_index(7, false, false).is_none());
        assert!(MaglevHashing::with_table_index(18, false, false).is_none());
        let small = MaglevHashing::with_table_index(8, false, false).unwrap();
        assert_eq!(small.table_size(), 251);
        let big = MaglevHashing::with_table_index(17, false, false).unwrap();
        assert_eq!(big.table_size(), 131_071);
    }

    #[test]
    fn empty_and_all_zero_last_weight_fail() {
        let mut s = MaglevHashing::new(true, true);
        s.update(&[], Change::Init);
        let f = flow([1, 2, 3, 4], 9);
        assert_eq!(s.pick(&f, &[], &NoLoad, Time(0)), None);
        let mut b = be(1, 0);
        b.last_weight = 0; // added with weight 0
        s.update(std::slice::from_ref(&b), Change::Init);
        assert!(s.slots().all(|p| p.is_none()));
        assert_eq!(s.pick(&f, &[b], &NoLoad, Time(0)), None);
    }

    #[test]
    fn more_backends_than_slots_empties_the_table() {
        let list: Vec<_> = (1..=300).map(|i| be(i, 1)).collect();
        let mut s = MaglevHashing::with_table_index(8, false, false).unwrap();
        s.update(&list, Change::Init);
        assert!(s.slots().all(|p| p.is_none()));
        assert_eq!(
            s.pick(&flow([1, 2, 3, 4], 9), &list, &NoLoad, Time(0)),
            None
        );
    }
}
