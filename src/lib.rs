//! The `xvs` director: I/O backends, workers, control plane and CLI around the sans-I/O core in
//! `xvs-forwarding` and the schedulers in `xvs-schedulers`.

pub mod capture;
pub mod config;
pub mod control;
pub mod dataplane_config;
pub mod director;
pub mod import;
pub mod io;
pub mod neigh;
pub mod replay;
pub mod runtime;
pub mod simulate;
pub mod sync;
pub mod worker;
