//! Fragments without reassembly, as Maglev does it (Eisenbud et al., NSDI 2016, §4.3): every
//! fragment of a datagram goes where its first fragment went. The first fragment carries the
//! ports, so it finds (or makes) its connection as any packet does; the pipeline remembers the
//! decision under the datagram's key (source, destination, protocol, IP identification — the
//! key the kernel's `ip_defrag` uses). A later fragment with a remembered key is rewritten for
//! the same connection (addresses only: it has no transport header; the first fragment's
//! transport checksum, which covers the whole datagram, was updated for the address change).
//! A later fragment that arrives before its first is held briefly (bounded) and sent when the
//! first one comes, or dropped and counted when it does not within [`HOLD_MS`].
//!
//! Checks: a later fragment that overlaps another of its datagram (an exact duplicate is
//! forwarded) is dropped, and the rest of that datagram with it, as the kernel discards the whole
//! datagram (RFC 5722); so are fragments ending past 65535 bytes and TCP fragments at offset 8
//! (RFC 1858). Only the first eight fragments of a datagram are remembered for the overlap check.
//!
//! Bounds: [`SLOTS`] remembered datagrams (a new key takes its slot over, as in a direct-mapped
//! cache), kept [`KEEP_MS`] (the kernel's `ipfrag_time`, 30 s); at most [`HOLD`] held frames.
//! Kernel IPVS reassembles instead (`ip_vs_gather_frags`) and re-fragments on the way out;
//! xvs's choice keeps no buffers for datagrams whose first fragment came first, and the backend
//! reassembles the datagram as sent.

use std::net::IpAddr;

use crate::conn::Direction;
use crate::wire::Packet;

/// Datagrams remembered.
pub(super) const SLOTS: usize = 4096;
/// How long a datagram's decision is kept (ms).
pub(super) const KEEP_MS: u32 = 30_000;
/// Later fragments held while their first is missing.
pub(super) const HOLD: usize = 64;
/// How long a fragment is held (ms).
pub(super) const HOLD_MS: u32 = 1_000;

/// A datagram's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub id: u32,
}

impl FragKey {
    /// The key of a fragment (IPv4: the header's identification; IPv6: the fragment header's).
    pub fn of(data: &[u8], p: &Packet) -> Option<FragKey> {
        Some(FragKey {
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            id: crate::wire::frag_id(data, p)?,
        })
    }

    fn slot(&self) -> usize {
        let fold = |a: &IpAddr| match a {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let x = a.to_bits();
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        let h = (fold(&self.src).rotate_left(17) ^ fold(&self.dst) ^ u64::from(self.id) << 8
            | u64::from(self.proto))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 32) as usize % SLOTS
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot<T> {
    key: FragKey,
    target: T,
    dir: Direction,
    expires: u32,
    /// The byte ranges of the fragments seen so far (the first [`RANGES`]).
    ranges: [(u32, u32); RANGES],
    n: u8,
    /// An overlap was seen: the datagram's fragments are dropped.
    poisoned: bool,
}

/// Fragment ranges remembered per datagram for the overlap check (later ones go unchecked).
const RANGES: usize = 8;

/// What [`Frags::note`] found about a later fragment's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Range {
    /// New, or an exact duplicate of one seen (the backend's reassembly drops duplicates).
    Fine,
    /// Overlaps another fragment of the datagram without being its duplicate (or the datagram
    /// already had such an overlap).
    Overlap,
}

/// A held later fragment.
#[derive(Debug)]
pub(super) struct Held {
    pub key: FragKey,
    pub ingress: crate::PortId,
    pub until: u32,
    pub bytes: Vec<u8>,
}

/// The remembered decisions and the held fragments of one pipeline.
#[derive(Debug)]
pub(super) struct Frags<T> {
    slots: Vec<Option<Slot<T>>>,
    held: Vec<Held>,
}

fn due(at: u32, now: u32) -> bool {
    (now.wrapping_sub(at) as i32) >= 0
}

impl<T: Copy> Frags<T> {
    pub fn new() -> Self {
        Frags {
            slots: vec![None; SLOTS],
            held: Vec::new(),
        }
    }

    /// Remember where the datagram of a first fragment went (its range is the first seen).
    pub fn remember(
        &mut self,
        key: FragKey,
        range: (u32, u32),
        target: T,
        dir: Direction,
        now_ms: u32,
    ) {
        let i = key.slot();
        let mut ranges = [(0, 0); RANGES];
        ranges[0] = range;
        self.slots[i] = Some(Slot {
            key,
            target,
            dir,
            expires: now_ms.wrapping_add(KEEP_MS),
            ranges,
            n: 1,
            poisoned: false,
        });
    }

    /// Record a later fragment's range for a remembered datagram and say whether it overlaps.
    pub fn note(&mut self, key: &FragKey, range: (u32, u32)) -> Range {
        let Some(s) = self.slots[key.slot()].as_mut().filter(|s| s.key == *key) else {
            return Range::Fine;
        };
        if s.poisoned {
            return Range::Overlap;
        }
        let seen = &s.ranges[..usize::from(s.n)];
        if seen.contains(&range) {
            return Range::Fine;
        }
        if seen.iter().any(|&(a, b)| range.0 < b && a < range.1) {
            s.poisoned = true;
            return Range::Overlap;
        }
        if usize::from(s.n) < RANGES {
            s.ranges[usize::from(s.n)] = range;
            s.n += 1;
        }
        Range::Fine
    }

    /// Where a later fragment's datagram went, if its first fragment was seen.
    pub fn find(&self, key: &FragKey, now_ms: u32) -> Option<(T, Direction)> {
        match &self.slots[key.slot()] {
            Some(s) if s.key == *key && !due(s.expires, now_ms) => Some((s.target, s.dir)),
            _ => None,
        }
    }

    /// Hold a later fragment; false when the hold is full.
    pub fn hold(&mut self, h: Held) -> bool {
        if self.held.len() >= HOLD {
            return false;
        }
        self.held.push(h);
        true
    }

    /// Take the held fragments of `key`.
    pub fn release(&mut self, key: &FragKey) -> Vec<Held> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let (out, keep): (Vec<Held>, Vec<Held>) = self.held.drain(..).partition(|h| h.key == *key);
        self.held = keep;
        out
    }

    /// Drop held fragments whose time is up; how many.
    pub fn expire(&mut self, now_ms: u32) -> usize {
        let before = self.held.len();
        self.held.retain(|h| !due(h.until, now_ms));
        before - self.held.len()
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}
