//! Fuzz the SYN proxy's state paths: the input is a sequence of operations (client SYN, ACK
//! echoing the last cookie, backend SYN-ACK to the director's last SYN, fuzzed segments both
//! ways, raw frames, time steps) on a pipeline with SYN-proxied NAT and FullNAT services. The
//! harness and its invariants: `tests/synproxy_ops/mod.rs`.
#![no_main]

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

#[path = "../../tests/synproxy_ops/mod.rs"]
mod synproxy_ops;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    synproxy_ops::run(data);
});
