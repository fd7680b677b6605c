//! Round robin (`ip_vs_rr.c`).
//!
//! The cursor starts at the list head. A pick walks the list circularly starting with the element
//! after the cursor and ending with the cursor itself; the first backend that is not overloaded
//! and has a positive weight wins and becomes the cursor. When a backend is deleted and it was the
//! cursor, the cursor moves to its predecessor (or the head). Adding a backend leaves the cursor
//! alone (the new backend sits at the head).

use crate::{BackendView, Change, Flow, Load, Scheduler, Time};

/// The cursor: `None` is the list head (before the first element), `Some(i)` a list position.
#[derive(Debug, Default, Clone)]
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
