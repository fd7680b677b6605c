//! The `xvs` director: I/O backends, workers, control plane and CLI around the sans-I/O core in
//! `xvs-forwarding` and the schedulers in `xvs-schedulers`.

#![deny(unsafe_code)]

pub mod announce;
pub mod balance;
pub mod capture;
pub mod config;
pub mod control;
pub mod dataplane_config;
pub mod director;
pub mod dns;
pub mod import;
// The only module allowed `unsafe` (syscalls, ring mappings); every block with a `// SAFETY:`.
#[allow(unsafe_code)]
pub mod io;
pub mod neigh;
pub mod redirect;
pub mod replay;
pub mod runtime;
pub mod simulate;
pub mod sync;
pub mod systemd;
pub mod takeover;
#[cfg(test)]
mod test_support;
pub mod worker;
