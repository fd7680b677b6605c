//! The connection index: open addressing with linear probing over compact 4-byte slots.
//!
//! Each slot holds a value (entry number << 1 | direction) in its low `value_bits` bits and, in
//! the bits above, a short fingerprint of the key's 32-bit hash (its low bits). The home slot is
//! the hash's range reduction to the slot count (`hash × n >> 32`, Lemire's "fast alternative to
//! the modulo reduction", 2016), which depends on the hash's high bits, so the fingerprint and
//! the home are nearly independent and the slot count need not be a power of two. A probe reads
//! slots from the home until an empty one; only slots whose fingerprint matches cost an entry
//! comparison, done by the caller's closure (1 in 2^fingerprint_bits of the others: 1 in 1024
//! at 1 Mi connections, 1 in 128 at 16 Mi). Deletion shifts later slots of the run backwards
//! (Knuth's Algorithm R, TAOCP vol. 3 §6.4), so there are no tombstones and churn does not
//! lengthen probes; the slots keep no home, so the deletion asks the caller for the hash of each
//! value it considers moving (the table rehashes that entry's key).
//! The slots are not stored here: they live where the owner keeps them ([`Slots`]; the
//! connection table keeps three in the spare bytes of each entry's cache line), and the owner
//! sizes them for ≤ 80 % load even when every connection has both keys (at least 2.5 slots per
//! connection of capacity), so a probe always finds an empty slot.

/// A slot with no value (its value bits are all ones, which no entry number reaches).
pub(crate) const EMPTY: u32 = u32::MAX;

/// Where the slots of an [`Index`] are stored: slot `i` for `i` below the index's slot count.
pub(crate) trait Slots {
    fn slot(&self, i: usize) -> u32;
    fn set_slot(&mut self, i: usize, v: u32);
}

impl Slots for [u32] {
    #[inline]
    fn slot(&self, i: usize) -> u32 {
        self.get(i).copied().unwrap_or(EMPTY)
    }
    #[inline]
    fn set_slot(&mut self, i: usize, v: u32) {
        if let Some(s) = self.get_mut(i) {
            *s = v;
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Index {
    /// Number of slots.
    n: usize,
    /// Bits of a value; the fingerprint takes the rest.
    value_bits: u32,
    value_mask: u32,
}

impl Index {
    /// An index of `slots` slots (at least 1) for values below `2 × entries` (entry numbers
    /// below `entries`, < 2^29). The slots must start out [`EMPTY`].
    pub(crate) fn new(entries: usize, slots: usize) -> Self {
        let values = 2 * entries.max(1) as u64;
        // Smallest width whose all-ones value (EMPTY's) is above every value.
        let value_bits = (64 - values.leading_zeros()).min(31);
        Index {
            n: slots.max(1),
            value_bits,
            value_mask: (1u32 << value_bits) - 1,
        }
    }

    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.n
    }

    #[inline]
    pub(crate) fn home(&self, tag: u32) -> usize {
        ((tag as u64 * self.n as u64) >> 32) as usize
    }

    #[inline]
    fn fingerprint(&self, tag: u32) -> u32 {
        tag << self.value_bits
    }

    /// The slot after `i`, wrapping.
    #[inline]
    fn after(&self, i: usize) -> usize {
        if i + 1 >= self.n {
            0
        } else {
            i + 1
        }
    }

    /// Touch the home slot of `tag` so that a later probe finds it in cache; returns it.
    #[inline]
    pub(crate) fn touch<S: Slots + ?Sized>(&self, slots: &S, tag: u32) -> u32 {
        slots.slot(self.home(tag))
    }

    /// The value of `slot` (as returned by [`Self::touch`]) if it may hold `tag`'s key.
    #[inline]
    pub(crate) fn candidate(&self, tag: u32, slot: u32) -> Option<u32> {
        (slot != EMPTY && (slot ^ self.fingerprint(tag)) & !self.value_mask == 0)
            .then_some(slot & self.value_mask)
    }

    /// The first value whose fingerprint matches `tag` among the slots of `tag`'s run from its
    /// home slot (which holds `home`, as [`Self::touch`] returned it), looking at no more
    /// than `limit` slots: the value a probe most likely compares first. For prefetching: a
    /// key that was displaced from its home (one in two at the index's 80 % load) is found
    /// too, and the slots after the home mostly share its cache line.
    #[inline]
    pub(crate) fn first_candidate<S: Slots + ?Sized>(
        &self,
        slots: &S,
        tag: u32,
        home: u32,
        limit: usize,
    ) -> Option<u32> {
        if home == EMPTY {
            return None;
        }
        if let Some(v) = self.candidate(tag, home) {
            return Some(v);
        }
        let mut i = self.home(tag);
        for _ in 1..limit.min(self.n) {
            i = self.after(i);
            let s = slots.slot(i);
            if s == EMPTY {
                return None;
            }
            if let Some(v) = self.candidate(tag, s) {
                return Some(v);
            }
        }
        None
    }

    /// Call `f` with each value of the slots after the one holding exactly (`tag`, `value`)
    /// up to the end of its run: the values whose keys a [`Self::remove`] of it may rehash.
    /// Looks at no more than `limit` slots from the home; for prefetching.
    #[inline]
    pub(crate) fn run_after<S: Slots + ?Sized>(
        &self,
        slots: &S,
        tag: u32,
        value: u32,
        limit: usize,
        mut f: impl FnMut(u32),
    ) {
        let want = self.fingerprint(tag) | (value & self.value_mask);
        let mut i = self.home(tag);
        let mut found = false;
        for _ in 0..limit.min(self.n) {
            let s = slots.slot(i);
            if s == EMPTY {
                return;
            }
            if found {
                f(s & self.value_mask);
            }
            found |= s == want;
            i = self.after(i);
        }
    }

    /// The first value under `tag` accepted by `eq`.
    #[inline(always)]
    pub(crate) fn find<S: Slots + ?Sized>(
        &self,
        slots: &S,
        tag: u32,
        mut eq: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        let fp = self.fingerprint(tag);
        let high = !self.value_mask;
        let mut i = self.home(tag);
        for _ in 0..self.n {
            let s = slots.slot(i);
            if s == EMPTY {
                return None;
            }
            if (s ^ fp) & high == 0 && eq(s & self.value_mask) {
                return Some(s & self.value_mask);
            }
            i = self.after(i);
        }
        None
    }

    /// Add `value` under `tag`. False only if the index is full, which the sizing prevents.
    #[inline]
    pub(crate) fn insert<S: Slots + ?Sized>(&self, slots: &mut S, tag: u32, value: u32) -> bool {
        let s = self.fingerprint(tag) | (value & self.value_mask);
        let mut i = self.home(tag);
        for _ in 0..self.n {
            if slots.slot(i) == EMPTY {
                slots.set_slot(i, s);
                return true;
            }
            i = self.after(i);
        }
        false
    }

    /// Remove the slot holding exactly (`tag`, `value`). False if absent. `tag_of(slots, v)`
    /// must give the tag value `v` was inserted under (asked only when later slots of the run
    /// may move back into the freed one).
    #[inline]
    pub(crate) fn remove<S: Slots + ?Sized>(
        &self,
        slots: &mut S,
        tag: u32,
        value: u32,
        tag_of: impl Fn(&S, u32) -> u32,
    ) -> bool {
        let want = self.fingerprint(tag) | (value & self.value_mask);
        let mut i = self.home(tag);
        let mut found = false;
        for _ in 0..self.n {
            let s = slots.slot(i);
            if s == EMPTY {
                return false;
            }
            if s == want {
                found = true;
                break;
            }
            i = self.after(i);
        }
        if !found {
            return false;
        }
        // The end of the run: nothing can move back.
        if slots.slot(self.after(i)) == EMPTY {
            slots.set_slot(i, EMPTY);
        } else {
            self.shift_back(slots, i, tag_of);
        }
        true
    }

    /// Backward-shift deletion of the value in slot `i` (Knuth's Algorithm R): the later slots
    /// of its run that may fill the hole move back, and the last hole becomes empty.
    #[inline(never)]
    fn shift_back<S: Slots + ?Sized>(
        &self,
        slots: &mut S,
        i: usize,
        tag_of: impl Fn(&S, u32) -> u32,
    ) {
        let mut i = i;
        let mut j = i;
        for _ in 0..self.n {
            j = self.after(j);
            let s = slots.slot(j);
            if s == EMPTY {
                break;
            }
            let k = self.home(tag_of(slots, s & self.value_mask));
            // The value at j may fill the hole unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                slots.set_slot(i, s);
                i = j;
            }
        }
        slots.set_slot(i, EMPTY);
    }

    /// Number of occupied slots (test and diagnostics; O(slots)).
    pub(crate) fn occupied<S: Slots + ?Sized>(&self, slots: &S) -> usize {
        (0..self.n).filter(|&i| slots.slot(i) != EMPTY).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index with its slots, sized as the connection table sizes it (2.5 slots per entry).
    struct Ix {
        ix: Index,
        s: Vec<u32>,
    }

    impl Ix {
        fn new(entries: usize) -> Ix {
            let n = (2 * entries + 2 * entries / 4 + 1).max(16);
            Ix {
                ix: Index::new(entries, n),
                s: vec![EMPTY; n],
            }
        }
        fn slot_count(&self) -> usize {
            self.ix.slot_count()
        }
        fn home(&self, tag: u32) -> usize {
            self.ix.home(tag)
        }
        fn insert(&mut self, tag: u32, v: u32) -> bool {
            self.ix.insert(self.s.as_mut_slice(), tag, v)
        }
        fn find(&self, tag: u32, eq: impl FnMut(u32) -> bool) -> Option<u32> {
            self.ix.find(self.s.as_slice(), tag, eq)
        }
        fn remove(&mut self, tag: u32, v: u32, tag_of: impl Fn(u32) -> u32) -> bool {
            self.ix
                .remove(self.s.as_mut_slice(), tag, v, |_: &[u32], w| tag_of(w))
        }
        fn touch(&self, tag: u32) -> u32 {
            self.ix.touch(self.s.as_slice(), tag)
        }
        fn candidate(&self, tag: u32, slot: u32) -> Option<u32> {
            self.ix.candidate(tag, slot)
        }
        fn first_candidate(&self, tag: u32, limit: usize) -> Option<u32> {
            self.ix
                .first_candidate(self.s.as_slice(), tag, self.touch(tag), limit)
        }
        fn occupied(&self) -> usize {
            self.ix.occupied(self.s.as_slice())
        }
    }

    /// Tags of the values in these tests: the value's tag is stored beside it.
    fn tags(pairs: &[(u32, u32)]) -> impl Fn(u32) -> u32 + '_ {
        move |v| pairs.iter().find(|p| p.1 == v).map_or(0, |p| p.0)
    }

    #[test]
    fn insert_find_remove_with_collisions() {
        let mut ix = Ix::new(16);
        // Same tag for many values: one long run.
        let pairs: Vec<(u32, u32)> = (0..10).map(|v| (0xABCD_0000, v)).collect();
        for &(t, v) in &pairs {
            assert!(ix.insert(t, v));
        }
        for v in 0..10u32 {
            assert_eq!(ix.find(0xABCD_0000, |x| x == v), Some(v));
        }
        assert!(ix.remove(0xABCD_0000, 3, tags(&pairs)));
        assert!(!ix.remove(0xABCD_0000, 3, tags(&pairs)));
        for v in 0..10u32 {
            let want = if v == 3 { None } else { Some(v) };
            assert_eq!(ix.find(0xABCD_0000, |x| x == v), want);
        }
        assert_eq!(ix.occupied(), 9);
        // After value 5's slot, its run holds 6..10 (3 was removed, the run shifted back).
        let mut after = Vec::new();
        ix.ix
            .run_after(ix.s.as_slice(), 0xABCD_0000, 5, 64, |v| after.push(v));
        assert_eq!(after, vec![6, 7, 8, 9]);
        let mut after = Vec::new();
        ix.ix
            .run_after(ix.s.as_slice(), 0xABCD_0000, 5, 6, |v| after.push(v));
        // Six slots from the home: 0, 1, 2, 4, 5, 6.
        assert_eq!(after, vec![6]);
    }

    #[test]
    fn wraparound_runs_survive_deletes() {
        let mut ix = Ix::new(8); // 21 slots
        let n = ix.slot_count() as u64;
        let last = u32::MAX; // home n - 1
        let zero = 0u32; // home 0
        assert_eq!(ix.home(last) as u64, n - 1);
        let pairs = [(last, 1), (last, 2), (zero, 3)];
        ix.insert(last, 1);
        ix.insert(last, 2); // wraps to 0
        ix.insert(zero, 3); // home 0 taken → 1
        assert!(ix.remove(last, 1, tags(&pairs)));
        assert_eq!(ix.find(last, |v| v == 2), Some(2));
        assert_eq!(ix.find(zero, |v| v == 3), Some(3));
        assert!(ix.remove(last, 2, tags(&pairs)));
        assert_eq!(ix.find(zero, |v| v == 3), Some(3));
        assert_eq!(ix.occupied(), 1);
    }

    #[test]
    fn fingerprints_filter_other_keys() {
        let mut ix = Ix::new(1 << 10);
        // Same home, different fingerprints: the closure is asked only about the matching one.
        let a = 0x8000_0001u32;
        let b = 0x8000_0002u32;
        assert_eq!(ix.home(a), ix.home(b));
        ix.insert(a, 5);
        ix.insert(b, 6);
        let mut asked = Vec::new();
        assert_eq!(
            ix.find(b, |v| {
                asked.push(v);
                v == 6
            }),
            Some(6)
        );
        assert_eq!(asked, vec![6]);
        assert_eq!(ix.candidate(a, ix.touch(a)), Some(5));
        assert_eq!(ix.candidate(b, ix.touch(a)), None);
        // `b` was displaced from its home: the prefetch's scan finds it within 2 slots.
        assert_eq!(ix.first_candidate(b, 1), None);
        assert_eq!(ix.first_candidate(b, 2), Some(6));
        assert_eq!(ix.first_candidate(a, 1), Some(5));
        // An absent key's run ends at an empty slot.
        assert_eq!(ix.first_candidate(0x8000_0003, 16), None);
    }

    #[test]
    fn random_churn_keeps_every_value_findable() {
        // Deterministic xorshift churn at high load against a model.
        let mut ix = Ix::new(64);
        let mut live: Vec<(u32, u32)> = Vec::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..5000u32 {
            let r = next();
            if live.len() < 100 && (r & 1 == 0 || live.is_empty()) {
                let v = round % 128;
                if live.iter().any(|p| p.1 == v) {
                    continue;
                }
                let t = (r >> 32) as u32;
                assert!(ix.insert(t, v));
                live.push((t, v));
            } else {
                let k = (r >> 8) as usize % live.len();
                let (t, v) = live.swap_remove(k);
                let all: Vec<(u32, u32)> = live.iter().copied().chain([(t, v)]).collect();
                assert!(ix.remove(t, v, tags(&all)));
            }
            for &(t, v) in &live {
                assert_eq!(ix.find(t, |x| x == v), Some(v), "round {round}");
            }
            assert_eq!(ix.occupied(), live.len());
        }
    }
}
