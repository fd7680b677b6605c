//! Transparent huge pages for the big arrays (the connection tables' entries, index and rings):
//! a global allocator that wraps the system's and, for every allocation of at least
//! [`THRESHOLD`] bytes, asks the kernel with `madvise(MADV_HUGEPAGE)` (madvise(2)) to back the
//! 2 MiB-aligned part of it with transparent huge pages, before the caller first writes it.
//! Allocations this big usually come from a fresh `mmap` (glibc's mmap threshold is 128 KiB,
//! adapting up to 32 MiB), so their first touch faults in 2 MiB pages where the kernel has them
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise` or `always`); memory reused from
//! the heap keeps the pages it has until khugepaged collapses them.
//! With 4 KiB pages a random lookup in a table of millions of connections pays TLB misses
//! besides its cache misses (TESTBED.md: ~29 ns → ~24 ns per lookup at 1 M flows here).
//! The forwarding crate stays free of `unsafe`: it only allocates.
//!
//! The allocator cannot log (logging allocates), so it counts: [`stats`] reports how many
//! regions and bytes were advised and how many `madvise` calls failed (e.g. a kernel without
//! THP), and [`anon_huge_pages_kib`] reads what the kernel actually gave
//! (`AnonHugePages` of `/proc/self/smaps_rollup`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations at least this big are advised (the big arrays; far above any per-packet buffer).
pub const THRESHOLD: usize = 4 << 20;
const HUGE: usize = 2 << 20;

static ADVISED: AtomicU64 = AtomicU64::new(0);
static ADVISED_BYTES: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// The system allocator, with big allocations advised for huge pages (see the module).
pub struct HugePageAlloc;

/// What the allocator did so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Regions advised with `MADV_HUGEPAGE`.
    pub advised: u64,
    /// Bytes in those regions (their 2 MiB-aligned parts).
    pub advised_bytes: u64,
    /// `madvise` calls that failed (the region keeps 4 KiB pages).
    pub failed: u64,
}

/// What [`HugePageAlloc`] did so far in this process.
pub fn stats() -> Stats {
    Stats {
        advised: ADVISED.load(Ordering::Relaxed),
        advised_bytes: ADVISED_BYTES.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
    }
}

/// `AnonHugePages` of this process (`/proc/self/smaps_rollup`), in KiB; `None` if unreadable.
pub fn anon_huge_pages_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Advise the 2 MiB-aligned interior of `[p, p + len)`.
fn advise(p: *mut u8, len: usize) {
    let start = (p as usize).next_multiple_of(HUGE);
    let end = (p as usize).saturating_add(len) & !(HUGE - 1);
    if end <= start {
        return;
    }
    // SAFETY: [start, end) lies inside the live allocation just returned by the system
    // allocator (start is rounded up and end down within it); MADV_HUGEPAGE only changes how
    // the kernel backs those pages, never their contents or the mapping's validity.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    if r == 0 {
        ADVISED.fetch_add(1, Ordering::Relaxed);
        ADVISED_BYTES.fetch_add((end - start) as u64, Ordering::Relaxed);
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// GlobalAlloc contract (layout, pointer validity, alignment) is System's; the advice on the
// returned memory does not change its contents or validity.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && layout.size() >= THRESHOLD {
            advise(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && layout.size() >= THRESHOLD {
            advise(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && new_size >= THRESHOLD {
            advise(p, new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_allocations_are_advised_and_usable() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(THRESHOLD + HUGE, 64).unwrap();
        let before = stats();
        // SAFETY: a non-zero size; freed below with the same layout.
        let p = unsafe { a.alloc_zeroed(layout) };
        assert!(!p.is_null());
        let after = stats();
        assert_eq!(
            after.advised + after.failed,
            before.advised + before.failed + 1
        );
        // SAFETY: p is valid for layout.size() bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(p, layout.size()) };
        assert!(s.iter().all(|&b| b == 0));
        s.fill(7);
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(p, layout) };
        // Small allocations are not advised.
        let small = Layout::from_size_align(4096, 8).unwrap();
        let n = stats();
        // SAFETY: a non-zero size; freed right away with the same layout.
        let q = unsafe { a.alloc(small) };
        assert!(!q.is_null());
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(q, small) };
        let m = stats();
        assert_eq!(m.advised + m.failed, n.advised + n.failed);
    }
}
