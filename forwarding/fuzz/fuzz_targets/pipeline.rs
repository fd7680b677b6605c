//! Fuzz the whole pipeline: the input is a sequence of frames, each `[port, len_hi, len_lo,
//! bytes…]`, processed in order through one pipeline (so later frames can hit connections the
//! earlier ones created) with time advancing. Invariants: no panic; a transmitted frame fits the
//! buffer and leaves by a configured port; every frame is counted exactly once.
#![no_main]

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use libfuzzer_sys::fuzz_target;
use xvs_forwarding::{Frame, PortId, Time, Verdict};

const HEADROOM: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut pipe = common::pipeline_with(&common::services(), 256);
    let mut rest = data;
    let mut now = Time::from_secs(1);
    let mut buf = vec![0u8; HEADROOM + 2048];
    let mut frames = 0u64;
    while rest.len() >= 3 {
        let port = PortId(u16::from(rest[0] & 1));
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3).min(2048);
        let frame = &rest[3..3 + len];
        rest = &rest[3 + len..];
        buf[HEADROOM..HEADROOM + len].copy_from_slice(frame);
        let mut f = Frame::new(&mut buf, HEADROOM, len);
        now.0 += 500_000_000;
        pipe.housekeeping(now, 64);
        let v = pipe.process(now, port, &mut f);
        frames += 1;
        if let Verdict::Tx(p) = v {
            assert!(p.0 < 2);
            assert!(f.len() <= len + HEADROOM);
        }
    }
    let c = pipe.counters();
    assert_eq!(c.rx, frames);
    assert_eq!(c.tx + c.pass + c.drops.total(), c.rx);
});
