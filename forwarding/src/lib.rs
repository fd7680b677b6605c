//! The sans-I/O forwarding core of xvs: one Ethernet frame in, one [`Verdict`] out.
//!
//! `parse → service lookup → connection table → schedule → rewrite → verdict`, with no sockets,
//! threads or clocks: time is an argument, so the whole pipeline is testable with byte arrays and
//! replayable from captures (`xvs replay`). See `../shared/DESIGN.md` for the map.
#![forbid(unsafe_code)]

pub mod conn;
pub mod defense;
pub mod frame;
pub mod hygiene;
pub mod limits;
pub mod net;
pub mod pipeline;
pub mod ratelimit;
pub mod service;
pub mod sync;
pub mod synproxy;
pub mod verdict;
pub mod wire;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use conn::Method;
pub use frame::Frame;
pub use pipeline::{Counters, Decision, Pipeline, PipelineConfig, Traffic};
pub use verdict::{DropCounters, DropReason, PortId, Verdict};
pub use xvs_schedulers::{BackendId, Time};
