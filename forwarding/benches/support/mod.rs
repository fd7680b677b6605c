//! Shared by the forwarding benches: thread CPU time as criterion's measurement, because wall
//! time on a shared, loaded VM swings about 2x between identical runs. `XVS_BENCH_WALL=1`
//! switches back to wall time.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::Criterion;
use nix::time::{clock_gettime, ClockId};

/// Thread CPU time as a criterion measurement (values are durations, shown like wall time).
pub struct ThreadCpu {
    wall: bool,
}

impl ThreadCpu {
    fn now(&self) -> Duration {
        if self.wall {
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
        }
        let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
        Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        self.now()
    }
    fn end(&self, start: Duration) -> Duration {
        self.now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

pub fn config() -> Criterion<ThreadCpu> {
    let wall = std::env::var_os("XVS_BENCH_WALL").is_some();
    Criterion::default().with_measurement(ThreadCpu { wall })
}
