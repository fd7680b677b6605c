//! The connection index: open addressing with linear probing over compact 4-byte slots.
//!
//! Each slot holds a value (entry number << 1 | direction) in its low `value_bits` bits, above
//! them its displacement (its distance from its home slot, 0, 1, 2 or 3 for "3 or more"), and in
//! the bits above, a short fingerprint of the key's 32-bit hash (its low bits). The home slot is
//! the hash's range reduction to the slot count (`hash × n >> 32`, Lemire's "fast alternative to
//! the modulo reduction", 2016), which depends on the hash's high bits, so the fingerprint and
//! the home are nearly independent and the slot count need not be a power of two. A probe reads
//! slots from the home until an empty one; only slots whose fingerprint matches cost an entry
//! comparison, done by the caller's closure (1 in 2^fingerprint_bits of the others: 1 in 256
//! at 1 Mi connections, 1 in 16 at 16 Mi). Deletion shifts later slots of the run backwards
//! (Knuth's Algorithm R, TAOCP vol. 3 §6.4), so there are no tombstones and churn does not
//! lengthen probes; it needs the home of each later slot of the run, which the displacement
//! gives, so only for a slot displaced by 3 or more does the deletion ask the caller for the
//! hash (the table rehashes that entry's key: a read of a random entry, which in a large table
//! is a cache miss).
//! Sized at start for ≤ 80 % load even when every connection has both keys (2.5 slots, 10 bytes,
//! per connection of capacity), so a probe always finds an empty slot.

/// A slot with no value (its value bits are all ones, which no entry number reaches).
pub(crate) const EMPTY: u32 = u32::MAX;

/// Bits of a slot's displacement.
const DISP_BITS: u32 = 2;
/// The largest displacement stored, standing for itself and every larger one.
const DISP_MAX: u32 = (1 << DISP_BITS) - 1;

#[derive(Clone, Debug)]
pub(crate) struct Index {
    slots: Vec<u32>,
    /// Bits of a value; the displacement takes the next `DISP_BITS`, the fingerprint the rest.
    value_bits: u32,
    value_mask: u32,
    /// The fingerprint's bits.
    fp_mask: u32,
}

impl Index {
    /// An index for values below `2 × entries` (entry numbers below `entries`, < 2^29), able to
    /// hold two keys per entry at ≤ 80 % load.
    pub(crate) fn new(entries: usize) -> Self {
        let values = 2 * entries.max(1) as u64;
        // Smallest width whose all-ones value (EMPTY's) is above every value.
        let value_bits = (64 - values.leading_zeros()).min(32 - DISP_BITS - 1);
        let n = (values as usize + values as usize / 4 + 1).max(16);
        let value_mask = (1u32 << value_bits) - 1;
        Index {
            slots: vec![EMPTY; n],
            value_bits,
            value_mask,
            fp_mask: !(value_mask | DISP_MAX << value_bits),
        }
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Address and length in bytes of the slot array.
    pub(crate) fn region(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.slots.len() * 4)
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((tag as u64 * self.slots.len() as u64) >> 32) as usize
    }

    #[inline]
    fn fingerprint(&self, tag: u32) -> u32 {
        tag << (self.value_bits + DISP_BITS)
    }

    /// A slot's displacement field (`DISP_MAX`: that or more).
    #[inline]
    fn disp(&self, s: u32) -> u32 {
        (s >> self.value_bits) & DISP_MAX
    }

    /// Slot `s` with its displacement field set for a distance of `d` slots from its home.
    #[inline]
    fn with_disp(&self, s: u32, d: usize) -> u32 {
        let d = d.min(DISP_MAX as usize) as u32;
        (s & !(DISP_MAX << self.value_bits)) | d << self.value_bits
    }

    /// Slots from `from` forward to `to`, wrapping.
    #[inline]
    fn dist(&self, from: usize, to: usize) -> usize {
        if to >= from {
            to - from
        } else {
            to + self.slots.len() - from
        }
    }

    /// The slot after `i`, wrapping.
    #[inline]
    fn after(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Touch the home slot of `tag` so that a later probe finds it in cache; returns it.
    #[inline]
    pub(crate) fn touch(&self, tag: u32) -> u32 {
        let i = self.home(tag);
        self.slots.get(i).copied().unwrap_or(EMPTY)
    }

    /// The value of `slot` (as returned by [`Self::touch`]) if it may hold `tag`'s key.
    #[inline]
    pub(crate) fn candidate(&self, tag: u32, slot: u32) -> Option<u32> {
        (slot != EMPTY && (slot ^ self.fingerprint(tag)) & self.fp_mask == 0)
            .then_some(slot & self.value_mask)
    }

    /// The first value whose fingerprint matches `tag` among the slots of `tag`'s run from its
    /// home slot (which holds `home`, as [`Self::touch`] returned it), looking at no more
    /// than `limit` slots: the value a probe most likely compares first. For prefetching: a
    /// key that was displaced from its home (one in two at the index's 80 % load) is found
    /// too, and the slots after the home mostly share its cache line.
    #[inline]
    pub(crate) fn first_candidate(&self, tag: u32, home: u32, limit: usize) -> Option<u32> {
        if home == EMPTY {
            return None;
        }
        if let Some(v) = self.candidate(tag, home) {
            return Some(v);
        }
        let mut i = self.home(tag);
        for _ in 1..limit.min(self.slots.len()) {
            i = self.after(i);
            let s = self.slots[i];
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
    /// up to the end of its run that are displaced by 3 or more: the values whose keys a
    /// [`Self::remove`] of it may rehash. Looks at no more than `limit` slots from the home;
    /// for prefetching.
    #[inline]
    pub(crate) fn run_after(&self, tag: u32, value: u32, limit: usize, mut f: impl FnMut(u32)) {
        let want = self.fingerprint(tag) | (value & self.value_mask);
        let keep = self.fp_mask | self.value_mask;
        let mut i = self.home(tag);
        let mut found = false;
        for _ in 0..limit.min(self.slots.len()) {
            let s = self.slots[i];
            if s == EMPTY {
                return;
            }
            if found && self.disp(s) == DISP_MAX {
                f(s & self.value_mask);
            }
            found |= s & keep == want;
            i = self.after(i);
        }
    }

    /// The first value under `tag` accepted by `eq`.
    #[inline(always)]
    pub(crate) fn find(&self, tag: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let fp = self.fingerprint(tag);
        let high = self.fp_mask;
        let mut i = self.home(tag);
        for _ in 0..self.slots.len() {
            let s = self.slots[i];
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
    pub(crate) fn insert(&mut self, tag: u32, value: u32) -> bool {
        let s = self.fingerprint(tag) | (value & self.value_mask);
        let mut i = self.home(tag);
        // Mostly the home slot is free (displacement 0).
        if let Some(h) = self.slots.get_mut(i).filter(|h| **h == EMPTY) {
            *h = s;
            return true;
        }
        for d in 0..self.slots.len() {
            if self.slots[i] == EMPTY {
                self.slots[i] = self.with_disp(s, d);
                return true;
            }
            i = self.after(i);
        }
        false
    }

    /// Remove the slot holding exactly (`tag`, `value`). False if absent. `tag_of(v)` must give
    /// the tag value `v` was inserted under (asked only for a later slot of the run displaced
    /// by 3 or more).
    #[inline]
    pub(crate) fn remove(&mut self, tag: u32, value: u32, tag_of: impl Fn(u32) -> u32) -> bool {
        let want = self.fingerprint(tag) | (value & self.value_mask);
        let keep = self.fp_mask | self.value_mask;
        let mut i = self.home(tag);
        let mut found = false;
        for _ in 0..self.slots.len() {
            let s = self.slots[i];
            if s == EMPTY {
                return false;
            }
            if s & keep == want {
                found = true;
                break;
            }
            i = self.after(i);
        }
        if !found {
            return false;
        }
        // The end of the run: nothing can move back.
        if self.slots[self.after(i)] == EMPTY {
            self.slots[i] = EMPTY;
        } else {
            self.shift_back(i, tag_of);
        }
        true
    }

    /// Backward-shift deletion of the value in slot `i` (Knuth's Algorithm R): the later slots
    /// of its run that may fill the hole move back (their displacement shrinks by as much), and
    /// the last hole becomes empty. A slot's home is its position less its displacement, or,
    /// displaced by 3 or more, that of its key's tag (`tag_of`).
    #[inline(never)]
    fn shift_back(&mut self, i: usize, tag_of: impl Fn(u32) -> u32) {
        let n = self.slots.len();
        let mut i = i;
        let mut j = i;
        for _ in 0..n {
            j = self.after(j);
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let d = self.disp(s);
            let k = if d < DISP_MAX {
                (j + n - d as usize) % n
            } else {
                self.home(tag_of(s & self.value_mask))
            };
            // The value at j may fill the hole unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.slots[i] = self.with_disp(s, self.dist(k, i));
                i = j;
            }
        }
        self.slots[i] = EMPTY;
    }

    /// Check that every occupied slot lies in the run of its home (no empty slot between) and
    /// that its displacement field is right; `tag_of` as for [`Self::remove`] (tests and
    /// debugging; O(slots × run length)).
    pub(crate) fn check(&self, tag_of: impl Fn(u32) -> u32) -> Result<(), String> {
        for (j, &s) in self.slots.iter().enumerate() {
            if s == EMPTY {
                continue;
            }
            let k = self.home(tag_of(s & self.value_mask));
            let d = self.dist(k, j);
            if self.disp(s) as usize != d.min(DISP_MAX as usize) {
                return Err(format!(
                    "index slot {j}: displacement field {} but {d} slots from its home",
                    self.disp(s)
                ));
            }
            let mut i = k;
            while i != j {
                if self.slots[i] == EMPTY {
                    return Err(format!("index slot {j}: empty slot {i} after its home {k}"));
                }
                i = self.after(i);
            }
        }
        Ok(())
    }

    /// Number of occupied slots (test and diagnostics; O(slots)).
    pub(crate) fn occupied(&self) -> usize {
        self.slots.iter().filter(|&&s| s != EMPTY).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags of the values in these tests: the value's tag is stored beside it.
    fn tags(pairs: &[(u32, u32)]) -> impl Fn(u32) -> u32 + '_ {
        move |v| pairs.iter().find(|p| p.1 == v).map_or(0, |p| p.0)
    }

    #[test]
    fn insert_find_remove_with_collisions() {
        let mut ix = Index::new(16);
        // Same tag for many values: one long run.
        let pairs: Vec<(u32, u32)> = (0..10).map(|v| (0xABCD_0000, v)).collect();
        for &(t, v) in &pairs {
            assert!(ix.insert(t, v));
        }
        for v in 0..10u32 {
            assert_eq!(ix.find(0xABCD_0000, |x| x == v), Some(v));
        }
        assert_eq!(ix.check(tags(&pairs)), Ok(()));
        assert!(ix.remove(0xABCD_0000, 3, tags(&pairs)));
        assert!(!ix.remove(0xABCD_0000, 3, tags(&pairs)));
        let rest: Vec<(u32, u32)> = pairs.iter().copied().filter(|p| p.1 != 3).collect();
        assert_eq!(ix.check(tags(&rest)), Ok(()));
        for v in 0..10u32 {
            let want = if v == 3 { None } else { Some(v) };
            assert_eq!(ix.find(0xABCD_0000, |x| x == v), want);
        }
        assert_eq!(ix.occupied(), 9);
        // After value 5's slot, its run holds 6..10 (3 was removed, the run shifted back).
        let mut after = Vec::new();
        ix.run_after(0xABCD_0000, 5, 64, |v| after.push(v));
        assert_eq!(after, vec![6, 7, 8, 9]);
        // Six slots from the home: 0, 1, 2, 4, 5, 6.
        let mut after = Vec::new();
        ix.run_after(0xABCD_0000, 5, 6, |v| after.push(v));
        assert_eq!(after, vec![6]);
    }

    #[test]
    fn wraparound_runs_survive_deletes() {
        let mut ix = Index::new(8); // 21 slots
        let n = ix.slot_count() as u64;
        let last = u32::MAX; // home n - 1
        let zero = 0u32; // home 0
        assert_eq!(ix.home(last) as u64, n - 1);
        let pairs = [(last, 1), (last, 2), (zero, 3)];
        ix.insert(last, 1);
        ix.insert(last, 2); // wraps to 0
        ix.insert(zero, 3); // home 0 taken → 1
        assert_eq!(ix.check(tags(&pairs)), Ok(()));
        assert!(ix.remove(last, 1, tags(&pairs)));
        // 2 moved back into its home n - 1, and 3 into its home 0.
        assert_eq!(ix.check(tags(&pairs[1..])), Ok(()));
        assert_eq!(ix.find(last, |v| v == 2), Some(2));
        assert_eq!(ix.find(zero, |v| v == 3), Some(3));
        assert!(ix.remove(last, 2, tags(&pairs)));
        assert_eq!(ix.find(zero, |v| v == 3), Some(3));
        assert_eq!(ix.occupied(), 1);
    }

    #[test]
    fn fingerprints_filter_other_keys() {
        let mut ix = Index::new(1 << 10);
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
        assert_eq!(ix.first_candidate(b, ix.touch(b), 1), None);
        assert_eq!(ix.first_candidate(b, ix.touch(b), 2), Some(6));
        assert_eq!(ix.first_candidate(a, ix.touch(a), 1), Some(5));
        // An absent key's run ends at an empty slot.
        let c = 0x8000_0003u32;
        assert_eq!(ix.first_candidate(c, ix.touch(c), 16), None);
    }

    #[test]
    fn random_churn_keeps_every_value_findable() {
        // Deterministic xorshift churn at high load against a model.
        let mut ix = Index::new(64);
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
            assert_eq!(ix.check(tags(&live)), Ok(()), "round {round}");
        }
    }
}
