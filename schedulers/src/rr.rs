//! Round robin (`ip_vs_rr.c`).
//!
//! The cursor starts at the list head. A pick walks the list circularly starting with the element
//! after the cursor and ending with the cursor itself; the first backend that is not overloaded
//! and has a positive weight wins and becomes the cursor. When a backend is deleted and it was the
//! cursor, the cursor moves to its predecessor (or the head). Adding a backend leaves the cursor
//! alone (the new backend sits at the head).
//!
//! Shared by several workers ([`Scheduler::lock_free`]), the cursor is one atomic word: a pick
//! reads it, walks the list as above and moves it with a compare-and-swap from the value it
//! read, starting over from the new value when another worker moved it first. Each pick that
//! takes effect is then one step of the sequence a single kernel would produce, in the order
//! of the swaps.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::{BackendView, Change, Flow, Load, Scheduler, TablePick, Time};

/// The cursor: `None` is the list head (before the first element), `Some(i)` a list position.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundRobin {
    cursor: Option<usize>,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn update(&mut self, _backends: &[BackendView], change: Change) {
        match change {
            Change::Init => self.cursor = None,
            // Inserting (IPVS prepends, position 0) shifts the later positions by one; the cursor
            // keeps its element.
            Change::Add(pos) => self.cursor = self.cursor.map(|c| if c >= pos { c + 1 } else { c }),
            Change::Remove(pos) => {
                self.cursor = match self.cursor {
                    Some(c) if c == pos => c.checked_sub(1),
                    Some(c) if c > pos => Some(c - 1),
                    other => other,
                }
            }
            Change::Edit(_) => {}
        }
    }

    fn lock_free(&self) -> Option<Arc<dyn TablePick>> {
        Some(Arc::new(SharedRoundRobin {
            cursor: AtomicUsize::new(encode(self.cursor)),
        }))
    }

    fn pick(
        &mut self,
        _flow: &Flow,
        backends: &[BackendView],
        load: &dyn Load,
        _now: Time,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        // Start after the cursor; from the head that is position 0. The walk ends with the cursor.
        let mut i = match self.cursor {
            None => 0,
            Some(c) => {
                let c = if c < n { c } else { c % n };
                if c + 1 == n {
                    0
                } else {
                    c + 1
                }
            }
        };
        for _ in 0..n {
            if let Some(b) = backends.get(i) {
                if b.weight > 0 && !load.overloaded(b.id) {
                    self.cursor = Some(i);
                    return Some(i);
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        None
    }
}

/// The cursor as one word: `usize::MAX` is the list head.
fn encode(c: Option<usize>) -> usize {
    c.unwrap_or(usize::MAX)
}

fn decode(c: usize) -> Option<usize> {
    (c != usize::MAX).then_some(c)
}

/// rr with its cursor in an atomic word, picked through `&self` (see the module header).
#[derive(Debug)]
struct SharedRoundRobin {
    cursor: AtomicUsize,
}

impl TablePick for SharedRoundRobin {
    fn pick_table(&self, flow: &Flow, backends: &[BackendView], load: &dyn Load) -> Option<usize> {
        let mut seen = self.cursor.load(Relaxed);
        loop {
            let mut rr = RoundRobin {
                cursor: decode(seen),
            };
            // No eligible backend: the cursor stays, as the kernel's does.
            let i = rr.pick(flow, backends, load, Time(0))?;
            match self
                .cursor
                .compare_exchange_weak(seen, encode(rr.cursor), Relaxed, Relaxed)
            {
                Ok(_) => return Some(i),
                Err(now) => seen = now,
            }
        }
    }

    fn to_scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(RoundRobin {
            cursor: decode(self.cursor.load(Relaxed)),
        })
    }
}
